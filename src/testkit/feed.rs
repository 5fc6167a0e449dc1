//! A message log with sequence numbers, for no-loss tests: every connection
//! first gets the unacked messages, then new ones as they are published;
//! clients ack by id; the HTTP poll endpoint serves messages by cursor.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{record, Inner};
use crate::error::lock;

/// How the feed's messages, acks and poll responses look.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Key of the message id added to each published object (`id`).
    pub id_key: String,
    /// Key of the sequence number added to each published object (`seq`);
    /// also the cursor.
    pub seq_key: String,
    /// JSON pointer, in a client frame, of the id it acknowledges (`/ack`).
    pub ack_pointer: String,
    /// Query parameter of the poll cursor (`since`): a poll returns the
    /// messages after it and counts everything up to it as acknowledged.
    /// `None`: a poll returns the last `poll_limit` messages.
    pub since_param: Option<String>,
    /// Most messages in one poll response.
    pub poll_limit: usize,
    /// The poll response around the array: the array replaces the value at
    /// `pointer` in this template. `None`: the body is the array.
    pub envelope: Option<(Value, String)>,
    /// Cursors that tie, as timestamps do: `Some((key, n))` adds `key` to
    /// every message holding a cursor that `n` consecutive messages share
    /// (1, 1, 2, 2, … for n = 2), and polls then read `since` as that
    /// cursor, inclusively (every message with a cursor ≥ since), as the
    /// [delivery guide](crate::guide::delivery) asks of a server whose cursors can tie. `None` (the default):
    /// the cursor is the sequence number, and `since` is exclusive.
    pub ties: Option<(String, u64)>,
    /// A second array in the poll response, of strings: `Some((pointer,
    /// key))` puts at `pointer` in the envelope the `key` string of every
    /// returned message that has one and is not acknowledged (a list of
    /// media URLs). Needs `envelope`.
    pub strings: Option<(String, String)>,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            id_key: "id".into(),
            seq_key: "seq".into(),
            ack_pointer: "/ack".into(),
            since_param: Some("since".into()),
            poll_limit: 500,
            envelope: None,
            ties: None,
            strings: None,
        }
    }
}

impl FeedConfig {
    /// The client rules that fit this feed: its id, its sequence number as
    /// the cursor, and the ack it reads (`{"type":"ack","ack":<id>}` by
    /// default).
    pub fn client_rules(&self) -> crate::JsonRules {
        let ack_key = self.ack_pointer.trim_start_matches('/');
        crate::JsonRules::new()
            .id(&self.id_key)
            .cursor(&self.seq_key)
            .ack(
                serde_json::json!({"type": "ack"}),
                [(self.id_key.as_str(), ack_key)],
            )
    }
}

/// A fault of the poll endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PollFault {
    /// Answer normally.
    #[default]
    None,
    /// Answer with this HTTP status and a short text body.
    Status(u16),
    /// Answer with this HTTP status and a `Retry-After` header of this
    /// value (seconds or an HTTP date).
    RetryAfter(u16, String),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer 200 with a JSON array where every other item is not an
    /// object.
    BadItems,
    /// Answer normally, but only after this long (a stalled endpoint).
    Stall(Duration),
}

/// One poll request the server received.
#[derive(Clone, Debug)]
pub struct PollSeen {
    /// `GET` or `POST`.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The request body.
    pub body: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: Instant,
}

pub(crate) struct Feed {
    pub cfg: FeedConfig,
    items: Vec<(String, Value)>,
    by_id: HashMap<String, usize>,
    acked: Vec<bool>,
    /// Index of the first unacked message.
    low: usize,
    pub fault: PollFault,
}

impl Feed {
    pub(crate) fn new(cfg: FeedConfig) -> Self {
        Feed {
            cfg,
            items: Vec::new(),
            by_id: HashMap::new(),
            acked: Vec::new(),
            low: 0,
            fault: PollFault::None,
        }
    }

    pub(crate) fn publish(&mut self, mut fields: Value) -> u64 {
        let seq = self.items.len() as u64 + 1;
        let id = format!("m-{seq}");
        if let Some(obj) = fields.as_object_mut() {
            obj.insert(self.cfg.id_key.clone(), Value::from(id.clone()));
            obj.insert(self.cfg.seq_key.clone(), Value::from(seq));
            if let Some((key, n)) = &self.cfg.ties {
                obj.insert(key.clone(), Value::from((seq - 1) / (*n).max(1) + 1));
            }
        }
        self.by_id.insert(id.clone(), self.items.len());
        self.items.push((fields.to_string(), fields));
        self.acked.push(false);
        seq
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Where a new connection starts: the first unacked message.
    pub(crate) fn start(&self) -> usize {
        self.low
    }

    /// The text of message `i` unless it was acked meanwhile.
    pub(crate) fn text(&self, i: usize) -> Option<&str> {
        (!self.acked[i]).then(|| self.items[i].0.as_str())
    }

    fn mark(&mut self, i: usize) {
        if i < self.acked.len() {
            self.acked[i] = true;
        }
        while self.low < self.acked.len() && self.acked[self.low] {
            self.low += 1;
        }
    }

    /// Reads an ack from a client frame.
    pub(crate) fn ack_from(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = v.pointer(&self.cfg.ack_pointer).and_then(Value::as_str) {
            if let Some(&i) = self.by_id.get(id) {
                self.mark(i);
            }
        }
    }

    pub(crate) fn forget_acks(&mut self) {
        self.acked.iter_mut().for_each(|a| *a = false);
        self.low = 0;
    }

    /// How many messages are acknowledged.
    pub(crate) fn acked(&self) -> usize {
        self.acked.iter().filter(|a| **a).count()
    }

    fn poll_body(&mut self, query: &str) -> (u16, String) {
        match &self.fault {
            PollFault::Status(s) | PollFault::RetryAfter(s, _) => {
                return (*s, "poll endpoint broken on purpose".into())
            }
            PollFault::Garbage => return (200, "<html>not json</html>".into()),
            _ => {}
        }
        let since = self.cfg.since_param.as_ref().and_then(|p| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == p)
                .and_then(|(_, v)| v.parse::<usize>().ok())
        });
        // With ties, `since` is a shared cursor: answer from the first
        // message holding it (inclusive); the client has everything below.
        let since = match (&self.cfg.ties, since) {
            (Some((_, n)), Some(c)) => Some(c.saturating_sub(1).saturating_mul(*n as usize)),
            (_, s) => s,
        };
        let from = match (&self.cfg.since_param, since) {
            (Some(_), Some(s)) => {
                // The client has everything before index `s`.
                for i in 0..s.min(self.items.len()) {
                    self.mark(i);
                }
                s
            }
            (Some(_), None) => 0,
            (None, _) => self.items.len().saturating_sub(self.cfg.poll_limit),
        };
        let start = from.min(self.items.len());
        let end = (start + self.cfg.poll_limit).min(self.items.len());
        let mut items: Vec<Value> = self.items[start..end]
            .iter()
            .map(|(_, v)| v.clone())
            .collect();
        let strings: Vec<Value> = match &self.cfg.strings {
            Some((_, key)) => (start..end)
                .filter(|&i| !self.acked[i])
                .filter_map(|i| self.items[i].1.get(key).cloned())
                .filter(Value::is_string)
                .collect(),
            None => Vec::new(),
        };
        if self.fault == PollFault::BadItems {
            let mut mixed = Vec::new();
            for it in items {
                mixed.push(it);
                mixed.push(Value::from("not an object"));
            }
            items = mixed;
        }
        let body = match &self.cfg.envelope {
            None => Value::Array(items),
            Some((template, pointer)) => {
                let mut t = template.clone();
                match t.pointer_mut(pointer) {
                    Some(slot) => *slot = Value::Array(items),
                    None => return (500, format!("bad envelope pointer {pointer}")),
                }
                if let Some((at, _)) = &self.cfg.strings {
                    match t.pointer_mut(at) {
                        Some(slot) => *slot = Value::Array(strings),
                        None => return (500, format!("bad strings pointer {at}")),
                    }
                }
                t
            }
        };
        (200, body.to_string())
    }
}

pub(crate) fn http_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if inner.stop.load(SeqCst) {
            return;
        }
        if let Ok(s) = stream {
            // One at a time: polls are rare, and order is easier to follow.
            let _ = serve_http(inner, s);
        }
    }
}

fn serve_http(inner: &Inner, mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (method, uri, headers, head_len) = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("/").to_owned(),
                    headers,
                    len,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            _ => return Ok(()),
        }
    };
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_len + length {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body =
        String::from_utf8_lossy(&buf[head_len..(head_len + length).min(buf.len())]).into_owned();
    let query = uri
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default();
    let seen = PollSeen {
        method,
        uri,
        body,
        headers,
        at: Instant::now(),
    };
    let stall = match lock(&inner.feed).as_ref().map(|f| f.fault.clone()) {
        Some(PollFault::Stall(d)) => d,
        _ => Duration::ZERO,
    };
    if !stall.is_zero() {
        std::thread::sleep(stall); // the fault being simulated
    }
    let (status, text) = match lock(&inner.feed).as_mut() {
        Some(feed) => feed.poll_body(&query),
        None => (404, "no feed".to_owned()),
    };
    record(inner, |l| l.polls.push(seen));
    let extra = match lock(&inner.feed).as_ref().map(|f| f.fault.clone()) {
        Some(PollFault::RetryAfter(_, v)) => format!("Retry-After: {v}\r\n"),
        _ => String::new(),
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    s.write_all(reply.as_bytes())?;
    s.flush()
}
