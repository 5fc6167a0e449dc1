//! The application protocol: what the server's frames mean.
//!
//! heartline moves frames; the [`Protocol`] says which frame is a message
//! with which id (dedupe), cursor (resume, polling) and kinds (pools), which
//! frame acknowledges it, which outbound frames must reach the server, and
//! how to poll over HTTP when the socket cannot be had. (What to send on
//! every connect and as a heartbeat is the builder's: `hello` and
//! [`crate::Heartbeat`].) [`JsonRules`](json::JsonRules) covers the common JSON
//! server without writing the trait by hand.

use serde_json::Value;

use crate::frame::Cursor;
use crate::frame::Frame;
use crate::message::Meta;

pub(crate) mod json;

use json::{items_at, Place};

/// A rule that recognises the server's answer to an application heartbeat
/// (see [`crate::Heartbeat::replies`]). Matching frames prove the link
/// alive and are consumed, not delivered.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ReplyRule {
    /// A text frame exactly equal to this.
    Text(String),
    /// A JSON object holding all of these fields with equal values.
    JsonFields(serde_json::Map<String, serde_json::Value>),
}

impl ReplyRule {
    /// The rule `--reply TEXT` means: when `text` is a JSON object, any JSON
    /// object holding all of its fields; otherwise the exact text.
    pub fn parse(text: &str) -> ReplyRule {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => ReplyRule::JsonFields(map),
            _ => ReplyRule::Text(text.to_owned()),
        }
    }

    /// `true` when `frame` matches.
    pub fn matches(&self, frame: &Frame) -> bool {
        let Some(text) = frame.as_text() else {
            return false;
        };
        match self {
            ReplyRule::Text(t) => t == text,
            ReplyRule::JsonFields(fields) => {
                // Cheap filter before parsing: every key must appear in the
                // text. Keeps JSON parsing off the hot path of a busy stream.
                if !fields.keys().all(|k| text.contains(k.as_str())) {
                    return false;
                }
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Object(obj)) => {
                        fields.iter().all(|(k, v)| obj.get(k) == Some(v))
                    }
                    _ => false,
                }
            }
        }
    }
}

/// What the hello closure ([`crate::ClientBuilder::hello`]) is told about
/// the connection it greets.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HelloContext {
    /// How many connections were opened before this one (0 for the first).
    pub reconnects: u64,
    /// The highest cursor seen so far over both transports, to resume from.
    pub cursor: Option<crate::frame::Cursor>,
}

/// What the protocol found in one inbound frame.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Inspected {
    /// Identity for dedupe.
    pub id: Option<String>,
    /// Position for resume and polling.
    pub cursor: Option<Cursor>,
    /// Pools the message belongs to (for example `text`, `audio`, or both).
    pub kinds: Vec<String>,
    /// The frame that acknowledges it (sent once it is safely queued).
    pub ack: Option<Frame>,
    /// The frame is the server's acknowledgement of the reliable frame
    /// with this id: it is consumed (not delivered) and the frame is
    /// forgotten.
    pub acknowledges: Option<String>,
}

/// What a delivered message carries of what the protocol found in it.
impl From<Inspected> for Meta {
    fn from(i: Inspected) -> Self {
        Meta {
            id: i.id.map(std::sync::Arc::from),
            cursor: i.cursor,
            kinds: i.kinds,
            ack: i.ack,
        }
    }
}

/// HTTP method of a poll request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    /// `GET`.
    #[default]
    Get,
    /// `POST` with the body.
    Post,
}

/// One poll request. Headers come from the endpoint provider (fresh per
/// request, like the socket's).
#[derive(Clone, Debug, PartialEq)]
pub struct PollRequest {
    /// `http://` or `https://`.
    pub url: String,
    /// GET or POST.
    pub method: Method,
    /// The body for POST (sent as `application/json` when it parses as JSON).
    pub body: Option<String>,
}

/// One message found in a poll response.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Polled {
    /// The message.
    pub frame: Frame,
    /// The kinds (pools) the place it came from gives it. When empty, the
    /// kinds [`Protocol::inspect`] finds in the frame apply.
    pub kinds: Vec<String>,
}

impl Polled {
    /// A message with the kinds of the place it was found in.
    pub fn new(frame: Frame, kinds: Vec<String>) -> Self {
        Polled { frame, kinds }
    }
}

impl From<Frame> for Polled {
    fn from(frame: Frame) -> Self {
        Polled {
            frame,
            kinds: Vec::new(),
        }
    }
}

/// One item of a poll response: a message, or why it was skipped.
pub type PollItem = Result<Polled, String>;

/// The application protocol. Every method has a default that fits a plain
/// server: no ids, no acks, no polling.
pub trait Protocol: Send + Sync + 'static {
    /// Inspects one inbound data frame (already known not to be a heartbeat
    /// reply, see [`crate::Heartbeat::replies`]). Called once per message,
    /// on the thread that received it.
    fn inspect(&self, frame: &Frame) -> Inspected {
        let _ = frame;
        Inspected::default()
    }

    /// The id of an outbound frame that must reach the server: such a frame
    /// is kept until the server acknowledges it (see
    /// [`Inspected::acknowledges`]) and sent again after every reconnect,
    /// as [`crate::Client::send_reliable`] does. `None` (the default): an
    /// ordinary frame.
    fn reliable_id(&self, frame: &Frame) -> Option<String> {
        let _ = frame;
        None
    }

    /// The poll request for the HTTP fallback, given the highest cursor
    /// seen. `None` (the default) disables polling.
    fn poll_request(&self, cursor: Option<&Cursor>) -> Option<PollRequest> {
        let _ = cursor;
        None
    }

    /// Reads a 2xx poll response body into items. An `Err` rejects the whole
    /// response (logged with what and where); an `Err` item skips just that
    /// item.
    ///
    /// # Errors
    /// A message that says what is wrong with the body.
    fn parse_poll(&self, body: &[u8]) -> Result<Vec<PollItem>, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        items_at(v, &[Place::default()])
    }

    /// Checked once, at `build()`: an `Err` refuses the configuration with
    /// this reason (as `Error::Config` for the field `protocol`). The
    /// default accepts.
    ///
    /// # Errors
    /// What is wrong with the protocol's own settings.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A protocol that does nothing: frames are messages, no ids, no polling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Protocol for Plain {}
