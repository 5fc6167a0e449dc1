//! What goes over the wire and what the application receives.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire};
use std::sync::{Arc, OnceLock};
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

/// The payloads of one read turn's small messages, side by side: the
/// storage those messages share, so a turn makes one allocation for its
/// text and one for its binary payloads, not one per message.
///
/// The inbound byte budget holds a turn whole while any of its messages
/// is in heartline's hands (queued, or in a batch being assembled), since
/// that is what is really held; see [`Message::enter`].
pub(crate) struct Turn {
    text: String,
    binary: Vec<u8>,
    /// How many of its messages are queued or being batched.
    custody: AtomicUsize,
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads can carry secrets: sizes only.
        write!(f, "Turn({} bytes)", self.size())
    }
}

impl Turn {
    /// A turn's storage, its payloads already in place.
    pub(crate) fn new(text: String, binary: Vec<u8>) -> Arc<Turn> {
        Arc::new(Turn {
            text,
            binary,
            custody: AtomicUsize::new(0),
        })
    }

    /// The bytes it holds (allocated, not just used).
    pub(crate) fn size(&self) -> usize {
        self.text.capacity() + self.binary.capacity()
    }

    /// `n` of its messages come into heartline's hands: its size when none
    /// was in hand (the first pays for the turn), else 0.
    fn enter(&self, n: usize) -> usize {
        if n > 0 && self.custody.fetch_add(n, AcqRel) == 0 {
            self.size()
        } else {
            0
        }
    }

    /// `n` of its messages leave heartline's hands: its size when they
    /// were the last in hand (the last gives the turn back), else 0.
    fn leave(&self, n: usize) -> usize {
        if n > 0 && self.custody.fetch_sub(n, AcqRel) == n {
            self.size()
        } else {
            0
        }
    }

    /// What [`Turn::enter`] would answer now, without entering.
    fn entry_cost(&self) -> usize {
        if self.custody.load(Acquire) == 0 {
            self.size()
        } else {
            0
        }
    }
}

/// A message of a read's shared storage: where its payload is, and
/// whether it is text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub at: u32,
    pub len: u32,
    pub text: bool,
}

/// The whole small messages of one read, in the storage they share: what
/// the frame reader hands over in one piece when the connection delivers
/// every frame as it came (the plain protocol), so the io thread's work per
/// message is reading it and nothing more.
#[derive(Debug)]
pub(crate) struct Gathered {
    pub turn: Arc<Turn>,
    pub spans: Vec<Span>,
}

impl PartialEq for Gathered {
    /// The same messages, wherever they live.
    fn eq(&self, other: &Gathered) -> bool {
        self.bodies().eq(other.bodies())
    }
}

impl Eq for Gathered {}

impl Gathered {
    /// Its messages, one by one (for the paths that take them so).
    pub(crate) fn bodies(&self) -> impl Iterator<Item = Body> + '_ {
        self.spans.iter().map(|s| Body::Shared {
            turn: self.turn.clone(),
            at: s.at,
            len: s.len,
            text: s.text,
        })
    }

    /// Its payload bytes.
    pub(crate) fn payload_bytes(&self) -> u64 {
        self.spans.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// A [`Gathered`] read on its way to the application: queued as one item,
/// made into [`Message`]s by the receiver as it fills batches. Its
/// messages not yet made count in its turn's custody (see
/// [`Message::enter`]).
#[derive(Debug)]
pub(crate) struct Run {
    turn: Arc<Turn>,
    spans: Vec<Span>,
    /// The first span not yet made into a message.
    next: usize,
    received: Instant,
    /// The queue number of the first span (see `Shared::take_seq`).
    seq: u64,
}

impl Run {
    pub(crate) fn new(g: Gathered, received: Instant) -> Run {
        Run {
            turn: g.turn,
            spans: g.spans,
            next: 0,
            received,
            seq: 0,
        }
    }

    /// Messages left in it.
    pub(crate) fn len(&self) -> usize {
        self.spans.len() - self.next
    }

    /// Numbers its messages from `first` on.
    pub(crate) fn set_seq(&mut self, first: u64) {
        self.seq = first;
    }

    /// Comes into heartline's hands, all its messages at once: the bytes
    /// the budget is to take (its turn's, if none of the turn's messages
    /// was in hand). See [`Message::enter`].
    pub(crate) fn enter(&self) -> usize {
        self.turn.enter(self.len())
    }

    /// Leaves heartline's hands, all its messages at once (dropped): the
    /// bytes to give back.
    pub(crate) fn leave(&self) -> usize {
        self.turn.leave(self.len())
    }

    /// What [`Run::enter`] would take now, without entering.
    pub(crate) fn entry_cost(&self) -> usize {
        self.turn.entry_cost()
    }

    /// Splits off its messages from the `k`th on (they stay out of
    /// custody until they enter themselves).
    pub(crate) fn split_off(&mut self, k: usize) -> Run {
        let at = (self.next + k).min(self.spans.len());
        Run {
            turn: self.turn.clone(),
            spans: self.spans.split_off(at),
            next: 0,
            received: self.received,
            seq: self.seq + k as u64,
        }
    }

    /// Takes back what [`Run::split_off`] split off it.
    pub(crate) fn join(&mut self, rest: Run) {
        self.spans.extend_from_slice(&rest.spans[rest.next..]);
    }

    /// Its next message, in custody as the run was.
    pub(crate) fn take(&mut self) -> Option<Message> {
        let s = *self.spans.get(self.next)?;
        let seq = self.seq;
        self.next += 1;
        self.seq += 1;
        let mut m = Message::plain(
            Body::Shared {
                turn: self.turn.clone(),
                at: s.at,
                len: s.len,
                text: s.text,
            },
            Via::Ws,
            self.received,
        );
        m.seq = seq;
        Some(m)
    }
}

/// Where a message's payload lives.
#[derive(Clone)]
pub(crate) enum Body {
    /// Its own allocation (a large, fragmented or compressed message, a
    /// poll item, or one a protocol inspects).
    Own(Arc<Frame>),
    /// `len` bytes at `at` in its read turn's storage.
    Shared {
        turn: Arc<Turn>,
        at: u32,
        len: u32,
        text: bool,
    },
}

impl Body {
    /// The text, for a text payload.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Body::Own(f) => f.as_text(),
            Body::Shared {
                turn,
                at,
                len,
                text: true,
            } => turn.text.get(*at as usize..(*at + *len) as usize),
            Body::Shared { .. } => None,
        }
    }

    /// The payload bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Body::Own(f) => f.as_bytes(),
            Body::Shared {
                turn,
                at,
                len,
                text,
            } => {
                let all = if *text {
                    turn.text.as_bytes()
                } else {
                    &turn.binary
                };
                all.get(*at as usize..(*at + *len) as usize).unwrap_or(&[])
            }
        }
    }

    /// The payload length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Body::Own(f) => f.len(),
            Body::Shared { len, .. } => *len as usize,
        }
    }

    /// The payload as a frame of its own (a copy for a shared one).
    pub(crate) fn to_frame(&self) -> Frame {
        match (self, self.text()) {
            (Body::Own(f), _) => (**f).clone(),
            (_, Some(t)) => Frame::Text(t.to_owned()),
            (_, None) => Frame::Binary(self.bytes().to_vec()),
        }
    }

    /// The frame, without a copy when it has its own.
    pub(crate) fn into_frame(self) -> Frame {
        match self {
            Body::Own(f) => Arc::try_unwrap(f).unwrap_or_else(|shared| (*shared).clone()),
            shared => shared.to_frame(),
        }
    }

    /// Its frame, when it has one of its own.
    pub(crate) fn own(&self) -> Option<&Frame> {
        match self {
            Body::Own(f) => Some(f),
            Body::Shared { .. } => None,
        }
    }
}

impl From<Frame> for Body {
    fn from(f: Frame) -> Body {
        Body::Own(Arc::new(f))
    }
}

impl PartialEq for Body {
    /// The same kind of payload with the same bytes, wherever they live.
    fn eq(&self, other: &Body) -> bool {
        self.text().is_some() == other.text().is_some() && self.bytes() == other.bytes()
    }
}

impl Eq for Body {}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Own(frame) => frame.fmt(f),
            Body::Shared { .. } => crate::frame::fmt_payload(f, self.text(), self.bytes()),
        }
    }
}

/// One message the server pushed (or the poller fetched).
///
/// The small messages (up to 8 KiB) that one read of the socket brings
/// whole share one allocation for their payloads, so receiving them costs
/// one allocation per read, not one per message. Keeping such a message
/// keeps that storage (at most the read buffer, 64 KiB) until it is
/// dropped; to keep one for long on its own, take it with
/// [`Message::into_frame`], which copies it out. While any message of a
/// read is queued, the inbound byte budget (`Limits::inbound_bytes`)
/// counts the read's storage whole.
#[derive(Clone, Debug)]
pub struct Message {
    /// Shared, so the copy `for m in batch` keeps of the message in hand
    /// (to hand it out again if the loop ends there) costs no copy of the
    /// payload.
    body: Body,
    /// [`Message::frame`] of a message in shared storage: made on the
    /// first call.
    made: OnceLock<Box<Frame>>,
    via: Via,
    received: Instant,
    /// `None` when the protocol found nothing: a plain message stays small,
    /// and it is moved several times on its way to the application.
    meta: Option<Box<Meta>>,
    /// Its number in the inbound queue (see `Shared::take_seq`).
    seq: u64,
}

impl Message {
    /// A message the protocol found nothing in.
    pub(crate) fn plain(body: impl Into<Body>, via: Via, received: Instant) -> Self {
        Message {
            body: body.into(),
            made: OnceLock::new(),
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

    pub(crate) fn with_meta(
        body: impl Into<Body>,
        via: Via,
        received: Instant,
        meta: Meta,
    ) -> Self {
        let empty = meta.id.is_none()
            && meta.cursor.is_none()
            && meta.kinds.is_empty()
            && meta.ack.is_none();
        Message {
            meta: (!empty).then(|| Box::new(meta)),
            ..Message::plain(body, via, received)
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
        let len = self.body.len();
        ack.map_or(len, |a| len.max(ack_cost(a)))
    }

    /// Comes into heartline's hands (queued, or put back to be handed
    /// out again): the bytes the inbound budget is to take for it. A
    /// message with its own storage takes [`Message::budget_cost`]; one in
    /// shared storage takes its ack's share, and its whole turn when it is
    /// the first of the turn's messages in heartline's hands, so the budget
    /// holds what is really held. Every `enter` is matched by one
    /// [`Message::leave`], whose answer is what to give back.
    pub(crate) fn enter(&self) -> usize {
        match &self.body {
            Body::Shared { turn, .. } => self.ack_cost() + turn.enter(1),
            Body::Own(_) => self.budget_cost(),
        }
    }

    /// Leaves heartline's hands (handed out, or dropped from the queue):
    /// the bytes to give back to the budget (see [`Message::enter`]).
    pub(crate) fn leave(&self) -> usize {
        match &self.body {
            Body::Shared { turn, .. } => self.ack_cost() + turn.leave(1),
            Body::Own(_) => self.budget_cost(),
        }
    }

    /// What [`Message::enter`] would take now, without entering.
    pub(crate) fn entry_cost(&self) -> usize {
        match &self.body {
            Body::Shared { turn, .. } => self.ack_cost() + turn.entry_cost(),
            Body::Own(_) => self.budget_cost(),
        }
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

    /// The payload as a [`Frame`]. The small messages of one read share
    /// their storage (see [`Message`]): for such a message the frame is
    /// made, a copy, on the first call. [`Message::text`] and
    /// [`Message::bytes`] never copy.
    pub fn frame(&self) -> &Frame {
        match self.body.own() {
            Some(f) => f,
            None => self.made.get_or_init(|| Box::new(self.body.to_frame())),
        }
    }

    /// Takes the payload. A message with storage of its own gives it up
    /// without a copy, unless it is shared: inside `for m in batch`, the
    /// loop keeps a share of the message in hand until it moves on (to
    /// hand it out again if the loop ends there). A message in shared
    /// storage is copied out: this is how to keep one for long without
    /// keeping its read's other messages' bytes.
    pub fn into_frame(self) -> Frame {
        match self.made.into_inner() {
            Some(f) => *f,
            None => self.body.into_frame(),
        }
    }

    /// The text, if the server sent a text frame.
    pub fn text(&self) -> Option<&str> {
        self.body.text()
    }

    /// The payload bytes.
    pub fn bytes(&self) -> &[u8] {
        self.body.bytes()
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// `true` when the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.body.len() == 0
    }

    /// The payload parsed as JSON (`None` when it is not JSON).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.text()?).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(turn: &Arc<Turn>, at: u32, len: u32, text: bool) -> Message {
        let body = Body::Shared {
            turn: turn.clone(),
            at,
            len,
            text,
        };
        Message::plain(body, Via::Ws, Instant::now())
    }

    #[test]
    fn a_turn_is_paid_for_by_its_first_message_in_and_given_back_by_its_last_out() {
        let turn = Turn::new("onetwo".to_owned(), vec![7, 8, 9]);
        let size = turn.size();
        assert!(size >= 9);
        let (one, two, bin) = (
            shared(&turn, 0, 3, true),
            shared(&turn, 3, 3, true),
            shared(&turn, 1, 2, false),
        );
        assert_eq!(
            (one.text(), two.text(), bin.bytes()),
            (Some("one"), Some("two"), &[8, 9][..])
        );
        assert_eq!(bin.text(), None);
        assert_eq!(one.entry_cost(), size);
        assert_eq!(one.enter(), size);
        assert_eq!(two.entry_cost(), 0);
        assert_eq!(two.enter(), 0);
        assert_eq!(one.leave(), 0, "two is still in");
        assert_eq!(bin.enter(), 0);
        assert_eq!(two.leave(), 0);
        assert_eq!(bin.leave(), size, "the last one out");
        // In again (put back after hand-out): paid for again.
        assert_eq!(two.enter(), size);
        assert_eq!(two.leave(), size);
    }

    #[test]
    fn a_shared_message_reads_like_one_with_its_own_frame() {
        let turn = Turn::new("héllo".to_owned(), Vec::new());
        let m = shared(&turn, 0, 6, true);
        let own = Message::plain(Frame::from("héllo"), Via::Ws, Instant::now());
        assert_eq!(m.frame(), own.frame());
        assert_eq!(m.len(), own.len());
        assert_eq!(format!("{:?}", m.body), format!("{:?}", own.body));
        assert_eq!(m.clone().into_frame(), Frame::from("héllo"));
        // A range that is not the turn's (it cannot happen): empty, no panic.
        let bad = shared(&turn, 2, 9, true);
        assert_eq!((bad.text(), bad.bytes()), (None, &[][..]));
    }
}
