//! What goes over the wire and what the application receives.

use std::fmt;
use std::time::{Duration, Instant};

use crate::frame::{Cursor, Frame};

/// How a message reached the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// Pushed over the WebSocket.
    Ws,
    /// Fetched by the HTTP polling fallback.
    Poll,
}

impl Via {
    /// `"ws"` or `"poll"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Ws => "ws",
            Via::Poll => "poll",
        }
    }
}

/// What the protocol said about a message.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meta {
    pub id: Option<std::sync::Arc<str>>,
    pub cursor: Option<Cursor>,
    pub kinds: Vec<String>,
    /// The ack frame, when it is sent on hand-out rather than on queueing.
    pub ack: Option<Frame>,
}

/// One message the server pushed (or the poller fetched).
#[derive(Clone, Debug)]
pub struct Message {
    /// Shared, so the copy `for m in batch` keeps of the message in hand
    /// (to hand it out again if the loop ends there) costs no copy of the
    /// payload.
    frame: std::sync::Arc<Frame>,
    via: Via,
    received: Instant,
    /// `None` when the protocol found nothing: a plain message stays small
    /// (72 bytes), and it is moved several times on its way to the
    /// application.
    meta: Option<Box<Meta>>,
    /// Its number in the inbound queue (see `Shared::take_seq`).
    seq: u64,
}

impl Message {
    /// A message the protocol found nothing in.
    pub(crate) fn plain(frame: Frame, via: Via, received: Instant) -> Self {
        Message {
            frame: std::sync::Arc::new(frame),
            via,
            received,
            meta: None,
            seq: 0,
        }
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    pub(crate) fn with_meta(frame: Frame, via: Via, received: Instant, meta: Meta) -> Self {
        let empty = meta.id.is_none()
            && meta.cursor.is_none()
            && meta.kinds.is_empty()
            && meta.ack.is_none();
        Message {
            frame: std::sync::Arc::new(frame),
            via,
            received,
            meta: (!empty).then(|| Box::new(meta)),
            seq: 0,
        }
    }

    /// The id the protocol found (used for dedupe).
    pub fn id(&self) -> Option<&str> {
        self.meta.as_ref()?.id.as_deref()
    }

    pub(crate) fn id_arc(&self) -> Option<std::sync::Arc<str>> {
        self.meta.as_ref()?.id.clone()
    }

    /// The cursor the protocol found.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.meta.as_ref()?.cursor.as_ref()
    }

    /// The kinds (pools) the protocol put it in; empty when it has none.
    pub fn kinds(&self) -> &[String] {
        self.meta.as_ref().map_or(&[], |m| &m.kinds)
    }

    /// `true` when the message is of this kind.
    pub fn is_kind(&self, kind: &str) -> bool {
        self.kinds().iter().any(|k| k == kind)
    }

    /// `true` when finishing it records or sends something.
    pub(crate) fn to_record(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|m| m.id.is_some() || m.cursor.is_some() || m.ack.is_some())
    }

    /// What it holds of the inbound byte budget while queued: its payload,
    /// or what its ack will hold once it is handed out if that is more
    /// (the ack keeps its share until written), so handing it out never
    /// takes the budget over its limit.
    pub(crate) fn budget_cost(&self) -> usize {
        let ack = self.meta.as_ref().and_then(|m| m.ack.as_ref());
        let len = self.frame.len();
        ack.map_or(len, |a| len.max(ack_cost(a)))
    }

    /// What its ack holds of the budget (0 without one).
    pub(crate) fn ack_cost(&self) -> usize {
        self.meta
            .as_ref()
            .and_then(|m| m.ack.as_ref())
            .map_or(0, ack_cost)
    }

    pub(crate) fn take_ack(&mut self) -> Option<Frame> {
        self.meta.as_mut()?.ack.take()
    }

    pub(crate) fn set_ack(&mut self, ack: Frame) {
        self.meta.get_or_insert_with(Box::default).ack = Some(ack);
    }

    /// The payload.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// Takes the payload. Inside `for m in batch`, the loop keeps a share
    /// of the message in hand until it moves on (to hand it out again if
    /// the loop ends there), so the payload is copied then; [`Message::frame`]
    /// and `for m in &batch` never copy it.
    pub fn into_frame(self) -> Frame {
        std::sync::Arc::try_unwrap(self.frame).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The text, if the server sent a text frame.
    pub fn text(&self) -> Option<&str> {
        self.frame.as_text()
    }

    /// The payload bytes.
    pub fn bytes(&self) -> &[u8] {
        self.frame.as_bytes()
    }

    /// The payload parsed as JSON (`None` when it is not JSON).
    pub fn json(&self) -> Option<serde_json::Value> {
        self.frame.json()
    }

    /// Which transport delivered it.
    pub fn via(&self) -> Via {
        self.via
    }

    /// When heartline read it from the network.
    pub fn received_at(&self) -> Instant {
        self.received
    }
}

/// What became of an offered message, with the ack to send now (in
/// [`crate::AckMode::Queued`]; in the other modes it travels with the message and
/// the receiver releases it).
#[derive(Debug)]
pub(crate) enum Offer {
    /// In the queue.
    Queued { ack: Option<Frame> },
    /// Seen before (or old, for a poll item): not delivered. Acked again
    /// so the server stops redelivering it.
    Duplicate { ack: Option<Frame> },
    /// The queue is full and the policy is to wait: try again later.
    Full(Message),
    /// The application is gone.
    Closed,
}

/// What an ack holds of the inbound budget from its message's hand-out
/// until the io thread wrote it: its bytes, and the queue's bookkeeping
/// (which also bounds their number). However many messages are finished
/// between two state writes, none of their acks is dropped, and a pile of
/// them pauses reading like a full queue.
pub(crate) fn ack_cost(ack: &Frame) -> usize {
    ack.len() + ACK_OVERHEAD
}

/// See [`ack_cost`].
const ACK_OVERHEAD: usize = 32;

/// The connection state, as reported by [`crate::Client::state`] and the
/// [`crate::Events`] receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// A connection attempt is under way (`attempt` counts consecutive
    /// failures plus one).
    Connecting {
        /// 1 for the first try after a success (or at start).
        attempt: u32,
    },
    /// The WebSocket is open.
    Open,
    /// Waiting `delay` before connection attempt number `attempt`.
    Reconnecting {
        /// The attempt that will be made after the delay.
        attempt: u32,
        /// How long the client waits first.
        delay: Duration,
    },
    /// The WebSocket failed `Polling::after` times in a row: messages come by
    /// HTTP polling while WebSocket attempts go on in the background (the
    /// next is `attempt`, after `delay`). Left for [`State::Open`] once a
    /// new socket has proved itself. One event when polling starts; the
    /// attempts while it goes on update [`crate::Client::state`] and
    /// [`crate::Stats`] (`state`, `last_error`) without an event each.
    Polling {
        /// The next WebSocket attempt.
        attempt: u32,
        /// How long until it.
        delay: Duration,
    },
    /// The client has stopped for good; the batch receiver ends once the
    /// messages already received are handed out.
    Closed(CloseReason),
}

impl State {
    /// A short lowercase name: `connecting`, `open`, `reconnecting`,
    /// `polling`, `closed`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Connecting { .. } => "connecting",
            State::Open => "open",
            State::Reconnecting { .. } => "reconnecting",
            State::Polling { .. } => "polling",
            State::Closed(_) => "closed",
        }
    }

    /// `true` for [`State::Open`].
    pub fn is_open(&self) -> bool {
        matches!(self, State::Open)
    }

    /// `true` for [`State::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, State::Closed(_))
    }
}

/// Why the client stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application called [`crate::Client::close`] or dropped the last
    /// `Client`.
    Requested,
    /// `Reconnect::max_attempts` consecutive attempts failed.
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
    },
    /// The server closed with a code from the terminal set.
    Terminal {
        /// The close code.
        code: u16,
        /// The reason the server gave.
        reason: String,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Requested => f.write_str("closed by the application"),
            CloseReason::GaveUp { attempts: 1 } => f.write_str("gave up after 1 attempt"),
            CloseReason::GaveUp { attempts } => write!(f, "gave up after {attempts} attempts"),
            CloseReason::Terminal { code, reason } => {
                write!(f, "server closed with terminal code {code}")?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
        }
    }
}

/// A state change, as delivered by [`crate::Events`].
#[derive(Clone, Debug)]
pub struct Event {
    /// The new state.
    pub state: State,
    /// Why the state changed, when an error caused it (secrets redacted):
    /// a value, so an application tells a 401 from a 503 without parsing
    /// text. The final [`State::Closed`] carries the last attempt's error
    /// when the client gave up ([`CloseReason::GaveUp`]) and the server's
    /// close when it was terminal; `None` when the application closed.
    pub error: Option<crate::error::ConnectionError>,
    /// With [`State::Open`]: what the connection agreed with the server.
    pub opened: Option<Opened>,
}

/// What a connection agreed with the server in its handshake, told with
/// its [`State::Open`] event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Opened {
    /// The subprotocol the server chose from those offered
    /// ([`crate::ClientBuilder::subprotocols`]); `None` when none was
    /// offered or the server chose none.
    pub subprotocol: Option<String>,
    /// permessage-deflate was agreed ([`crate::ClientBuilder::compression`]).
    pub compression: bool,
    /// The interface the connection goes out on: the one it was bound to
    /// ([`crate::ClientBuilder::bind_interface`]), or else the one the
    /// kernel lists with its local address; `None` when the kernel did not
    /// say.
    pub interface: Option<String>,
    /// The connection's local address and port (of the TCP connection to
    /// the server, or to the proxy).
    pub local_addr: Option<std::net::SocketAddr>,
    /// How long each step of opening it took.
    pub phases: Phases,
}

/// How long each step of opening a connection took ([`Opened::phases`],
/// [`crate::Stats::phases`]): where a slow or failing uplink loses its
/// time. With a proxy, the lookup and the TCP connect are the proxy's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Phases {
    /// The name lookup (zero for an IP address).
    pub dns: std::time::Duration,
    /// The TCP connect, the addresses' race (RFC 8305) included.
    pub tcp: std::time::Duration,
    /// The proxy's `CONNECT` tunnel; `None` without a proxy.
    pub proxy: Option<std::time::Duration>,
    /// The TLS handshake; `None` for `ws://`.
    pub tls: Option<std::time::Duration>,
    /// The HTTP upgrade, from its request to the server's 101.
    pub upgrade: std::time::Duration,
}

/// The bytes one uplink carried since the client started
/// ([`crate::Stats::uplinks`]), counted at the socket: TLS records and
/// WebSocket framing included, handshakes and failed attempts too, but not
/// the IP and TCP headers the kernel adds (about 52 to 66 bytes a
/// packet), so the kernel's interface counters are a little higher. What
/// a SIM's data plan is charged for is closest to the kernel's figure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uplink {
    /// The interface's name (`eth0`, `wwan0`); `"?"` when the kernel did
    /// not say which interface has the connection's local address.
    pub interface: String,
    /// Bytes received from the server (or the proxy).
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}
