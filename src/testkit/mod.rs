//! A real WebSocket server on 127.0.0.1 for tests, examples and benchmarks
//! (feature `testkit`).
//!
//! It binds `127.0.0.1:0`, speaks `ws://` or `wss://` (with a CA and
//! certificate made at run time), records every frame a client sends, and
//! has switches for the faults a real network produces: drop every
//! connection, go silent while keeping TCP open (half-open), refuse
//! upgrades with an HTTP status, close with a given code.
//!
//! ```
//! use std::time::Duration;
//! let server = heartline::testkit::TestServer::start()?;
//! let client = heartline::Client::builder(server.url()).build()?;
//! assert!(server.wait_connections(1, Duration::from_secs(5)));
//! server.push("hello");
//! let batch = client.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert_eq!(batch.messages()[0].text(), Some("hello"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Unlike the client, this server services each connection with a 1 ms read
//! timeout loop: it is test equipment, and simplicity wins here.

#[cfg(feature = "compression")]
mod deflate;
mod feed;
mod mtls;
mod proxy;
mod server;
mod tls;

#[cfg(feature = "compression")]
pub use deflate::{Agree, DeflateServer, Received};
pub use feed::{FeedConfig, PollFault, PollSeen};
pub use mtls::{MutualTlsServer, Presented, Refusal};
pub use proxy::{ConnectProxy, ProxyMode, ProxyRequest};
pub use tls::{CertProblem, ClientCa, ClientCert};

use std::io::{self};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tungstenite::protocol::WebSocketConfig;

use crate::error::lock;
use crate::frame::Frame;
use crate::protocol::ReplyRule;

/// What a client sent, as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A Ping control frame.
    Ping,
    /// A Pong control frame.
    Pong,
    /// A close frame with its code (`None` when it had none).
    Close(Option<u16>),
}

/// One recorded client frame.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Which connection (1 for the first accepted upgrade).
    pub conn: u64,
    /// What was sent.
    pub sent: Sent,
    /// When the server read it.
    pub at: Instant,
}

impl Recorded {
    /// The text, for a text frame.
    pub fn text(&self) -> Option<&str> {
        match &self.sent {
            Sent::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// One upgrade request the server received.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// Connection number (counted over accepted and refused upgrades).
    pub conn: u64,
    /// Path and query of the request.
    pub uri: String,
    /// The request headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// `true` when the server accepted it.
    pub accepted: bool,
    /// When it arrived.
    pub at: Instant,
}

impl Upgrade {
    /// The value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything the server has seen, for [`TestServer::wait_for`].
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// Every frame clients sent, in order of arrival.
    pub frames: Vec<Recorded>,
    /// Every upgrade request.
    pub upgrades: Vec<Upgrade>,
    /// Connections currently open.
    pub open: usize,
    /// Every poll request (feed servers only).
    pub polls: Vec<PollSeen>,
}

impl Log {
    /// Upgrades that were accepted.
    pub fn accepted(&self) -> usize {
        self.upgrades.iter().filter(|u| u.accepted).count()
    }

    /// The text frames of connection `conn`, in order.
    pub fn texts_of(&self, conn: u64) -> Vec<&str> {
        self.frames
            .iter()
            .filter(|r| r.conn == conn)
            .filter_map(Recorded::text)
            .collect()
    }
}

enum Cmd {
    Raw(Vec<u8>),
    Push(Frame),
    PushMany(Arc<Vec<Frame>>),
    Drop,
    Silence,
    Close(u16, String),
}

struct Conn {
    id: u64,
    tx: Sender<Cmd>,
}

pub(crate) struct Inner {
    addr: SocketAddr,
    stop: AtomicBool,
    refuse: Mutex<Option<u16>>,
    /// Headers sent with a refusal (`Retry-After`, …).
    refuse_headers: Mutex<Vec<(String, String)>>,
    replies: Mutex<Vec<(ReplyRule, Frame)>>,
    echo: AtomicBool,
    /// Ack client frames that carry an id at this pointer.
    frame_acks: Mutex<Option<String>>,
    /// Acks are withheld (forgotten) while set.
    withhold: AtomicBool,
    /// Like a proxy's idle timeout: cut a connection when the client has
    /// sent nothing for this long.
    idle_cut: Mutex<Option<Duration>>,
    greeting: Mutex<Vec<Frame>>,
    conns: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
    log: Mutex<Log>,
    changed: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    tls: Option<native_tls::TlsAcceptor>,
    ws_config: WebSocketConfig,
    feed: Mutex<Option<feed::Feed>>,
    http_addr: Mutex<Option<SocketAddr>>,
}

/// The loopback test server. Stops (and joins its threads) when dropped.
pub struct TestServer {
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
    ca_pem: Option<Vec<u8>>,
}

impl TestServer {
    /// Starts a `ws://` server on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start() -> io::Result<TestServer> {
        Self::spawn(None, None, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a `ws://` server on `addr` (port 0: any free port), for a
    /// test whose client reaches it over something other than loopback
    /// (network namespaces joined by veth pairs, say).
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start_on(addr: SocketAddr) -> io::Result<TestServer> {
        Self::spawn(None, None, addr)
    }

    /// Starts a `wss://` server with a fresh CA; trust it with
    /// [`TestServer::ca_pem`].
    ///
    /// # Errors
    /// When the listener cannot be bound or the certificate not made.
    pub fn start_tls() -> io::Result<TestServer> {
        Self::start_tls_with(CertProblem::None)
    }

    /// Starts a `wss://` server whose certificate has `problem` (expired,
    /// for another host, self-signed, …); [`TestServer::ca_pem`] is still
    /// the CA, so a client that trusts it fails only for that problem.
    ///
    /// # Errors
    /// When the listener cannot be bound or the certificate not made.
    pub fn start_tls_with(problem: CertProblem) -> io::Result<TestServer> {
        let m = tls::generate(problem).map_err(io::Error::other)?;
        let identity =
            native_tls::Identity::from_pkcs8(&m.chain_pem, &m.key_pem).map_err(io::Error::other)?;
        let acceptor = native_tls::TlsAcceptor::new(identity).map_err(io::Error::other)?;
        Self::spawn(
            Some(acceptor),
            Some(m.ca_pem),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
    }

    fn spawn(
        tls: Option<native_tls::TlsAcceptor>,
        ca_pem: Option<Vec<u8>>,
        at: SocketAddr,
    ) -> io::Result<TestServer> {
        let listener = TcpListener::bind(at)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            stop: AtomicBool::new(false),
            refuse: Mutex::new(None),
            refuse_headers: Mutex::new(Vec::new()),
            replies: Mutex::new(Vec::new()),
            echo: AtomicBool::new(false),
            frame_acks: Mutex::new(None),
            withhold: AtomicBool::new(false),
            idle_cut: Mutex::new(None),
            greeting: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            tls,
            ws_config: WebSocketConfig::default(),
            feed: Mutex::new(None),
            http_addr: Mutex::new(None),
        });
        let i = inner.clone();
        let accept = std::thread::Builder::new()
            .name("testkit-accept".into())
            .spawn(move || server::accept_loop(&i, &listener))?;
        Ok(TestServer {
            inner,
            accept: Some(accept),
            http: None,
            ca_pem,
        })
    }

    /// Turns on the message feed: published messages go to every
    /// connection (unacked ones again to each new connection), and an HTTP
    /// poll endpoint on a second port of the same address serves them by
    /// cursor.
    ///
    /// # Errors
    /// When the HTTP listener cannot be bound.
    pub fn enable_feed(&mut self, cfg: FeedConfig) -> io::Result<()> {
        *lock(&self.inner.feed) = Some(feed::Feed::new(cfg));
        if self.http.is_none() {
            // On the WebSocket's address, another port.
            let listener = TcpListener::bind((self.inner.addr.ip(), 0))?;
            *lock(&self.inner.http_addr) = Some(listener.local_addr()?);
            let i = self.inner.clone();
            self.http = Some(
                std::thread::Builder::new()
                    .name("testkit-http".into())
                    .spawn(move || feed::http_loop(&i, &listener))?,
            );
        }
        Ok(())
    }

    /// `http://IP:PORT/poll` once the feed is on.
    pub fn poll_url(&self) -> Option<String> {
        lock(&self.inner.http_addr).map(|a| format!("http://{a}/poll"))
    }

    /// Appends a message to the feed (adding its id and sequence number);
    /// returns the sequence number, or 0 when the feed is off.
    pub fn publish(&self, fields: serde_json::Value) -> u64 {
        lock(&self.inner.feed)
            .as_mut()
            .map_or(0, |f| f.publish(fields))
    }

    /// How many feed messages were published and how many acknowledged.
    pub fn feed_counts(&self) -> (usize, usize) {
        lock(&self.inner.feed)
            .as_ref()
            .map_or((0, 0), |f| (f.len(), f.acked()))
    }

    /// Forgets every acknowledgement, as a server that lost its records
    /// (or a client whose acks died with its power) would: every message
    /// goes to the next connection again.
    pub fn forget_acks(&self) {
        if let Some(f) = lock(&self.inner.feed).as_mut() {
            f.forget_acks();
        }
    }

    /// Breaks (or mends) the poll endpoint.
    pub fn poll_fault(&self, fault: PollFault) {
        if let Some(f) = lock(&self.inner.feed).as_mut() {
            f.fault = fault;
        }
    }

    /// `ws://127.0.0.1:PORT/ws` (or `wss://`).
    pub fn url(&self) -> String {
        let scheme = if self.inner.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}/ws", self.inner.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The CA certificate (PEM) of a TLS server.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    fn broadcast(&self, make: impl Fn() -> Cmd) -> usize {
        let mut conns = lock(&self.inner.conns);
        conns.retain(|c| c.tx.send(make()).is_ok());
        conns.len()
    }

    /// Sends a frame to every open connection; returns how many it reached.
    pub fn push(&self, frame: impl Into<Frame>) -> usize {
        let frame = frame.into();
        self.broadcast(|| Cmd::Push(frame.clone()))
    }

    /// Writes raw bytes to every open connection's stream, after what was
    /// queued before: for sending malformed frames.
    pub fn push_raw(&self, bytes: &[u8]) -> usize {
        self.broadcast(|| Cmd::Raw(bytes.to_vec()))
    }

    /// Sends many frames to every open connection in one go (written back
    /// to back, one flush): the bulk writes of a throughput benchmark.
    pub fn push_many(&self, frames: Vec<Frame>) -> usize {
        let frames = Arc::new(frames);
        self.broadcast(|| Cmd::PushMany(frames.clone()))
    }

    /// Frames sent to each new connection right after its upgrade.
    pub fn set_greeting(&self, frames: Vec<Frame>) {
        *lock(&self.inner.greeting) = frames;
    }

    /// Drops every open connection's TCP socket without a close frame.
    pub fn drop_all(&self) -> usize {
        let n = self.broadcast(|| Cmd::Drop);
        lock(&self.inner.conns).clear();
        n
    }

    /// Open connections stop reading and writing but keep TCP open: a
    /// half-open link as a pulled cable makes it. New connections are normal.
    pub fn silence_all(&self) -> usize {
        self.broadcast(|| Cmd::Silence)
    }

    /// Closes every open connection with a close frame.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        self.broadcast(|| Cmd::Close(code, reason.to_owned()))
    }

    /// Refuses new upgrades with this HTTP status (`None` accepts again).
    pub fn refuse(&self, status: Option<u16>) {
        self.refuse_with(status, &[]);
    }

    /// Refuses new upgrades with this HTTP status and these headers, such
    /// as `("Retry-After", "30")` (`None` accepts again).
    pub fn refuse_with(&self, status: Option<u16>, headers: &[(&str, &str)]) {
        *lock(&self.inner.refuse_headers) = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        *lock(&self.inner.refuse) = status;
    }

    /// Answers client frames matching `rule` with `answer` (application
    /// heartbeats).
    pub fn reply(&self, rule: ReplyRule, answer: impl Into<Frame>) {
        lock(&self.inner.replies).push((rule, answer.into()));
    }

    /// Behaves like a proxy with an idle timeout (nginx's
    /// `proxy_read_timeout`, a NAT table entry): a connection on which the
    /// client has sent nothing (no frame of any kind) for `after` is cut
    /// without a close frame. `None` turns it off.
    pub fn idle_timeout(&self, after: Option<Duration>) {
        *lock(&self.inner.idle_cut) = after;
    }

    /// Acknowledges every JSON text frame a client sends that has an id at
    /// `id_at` (a JSON pointer such as `/id`) with
    /// `{"type":"ack","id":<that id>}`, as a server of reliable frames does
    /// (match it with `JsonRules::acked_by("/type", json!("ack"), "/id")`).
    /// `None` turns it off.
    pub fn ack_frames(&self, id_at: Option<&str>) {
        *lock(&self.inner.frame_acks) = id_at.map(str::to_owned);
    }

    /// While `true`, the server forgets to ack client frames (see
    /// [`TestServer::ack_frames`]), as a server that lost them would: the
    /// client keeps them and sends them again after a reconnect.
    pub fn withhold_acks(&self, on: bool) {
        self.inner.withhold.store(on, SeqCst);
    }

    /// Echoes every text and binary frame back to its sender.
    pub fn echo(&self, on: bool) {
        self.inner.echo.store(on, SeqCst);
    }

    /// A copy of everything seen so far.
    pub fn log(&self) -> Log {
        lock(&self.inner.log).clone()
    }

    /// Waits until `cond` holds for the log, or `timeout` passes. Returns
    /// whether it held.
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&Log) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut log = lock(&self.inner.log);
        loop {
            if cond(&log) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            log = match self.inner.changed.wait_timeout(log, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Waits until at least `n` upgrades were accepted in total.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |l| l.accepted() >= n)
    }

    /// Waits until `n` connections are open at once.
    pub fn wait_open(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |l| l.open == n)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.inner.stop.store(true, SeqCst);
        // Unblock accept().
        let _ = TcpStream::connect_timeout(&self.inner.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        if let Some(a) = *lock(&self.inner.http_addr) {
            let _ = TcpStream::connect_timeout(&a, Duration::from_secs(1));
        }
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        lock(&self.inner.conns).clear();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

pub(crate) fn record(inner: &Inner, f: impl FnOnce(&mut Log)) {
    f(&mut lock(&inner.log));
    inner.changed.notify_all();
}
