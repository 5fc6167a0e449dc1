//! One open connection as a pure state machine ([`Session`]), in the way
//! ureq's `run.rs`
//! drives `ureq-proto`: the io thread feeds it what happened (a frame read,
//! a command, the socket blocking) and executes the [`Action`]s it queues
//! (write this, deliver that, exit). It never touches a socket, a channel
//! or a clock: `now` is passed in, so the connection's decisions (what a
//! frame is, the close handshake both ways, failing on a violation,
//! heartbeats, a stalled write) are unit-tested without sockets or sleeps.
//!
//! What happens to a message once delivered (queued, held while the queue
//! is full, acked) is delivery's: [`crate::delivery::inbox::Intake`]. The
//! machine hands each message out once and hears nothing back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{guarded, ConnectionError};
use crate::frame::Frame;
use crate::message::{Body, Gathered, Message, Run, Via};
use crate::protocol::ReplyRule;

/// What the frame reader ([`crate::machine::frames`]) made of the
/// server's bytes, reduced to what this machine decides on.
#[derive(Debug)]
pub(crate) enum Incoming {
    Data(Body),
    /// A read's whole small messages, in one piece (the plain protocol).
    Run(Gathered),
    /// A Ping and its payload, which the Pong carries back.
    Ping(Vec<u8>),
    Pong,
    /// A close frame: code and reason (1005 and "" when it had none).
    Close(u16, String),
}

/// Requests from the heartbeat ticker and the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Send a heartbeat now.
    Beat,
    /// The link is dead: drop it without a close handshake.
    Dead,
    /// The application closes: send close 1000 and wait briefly.
    Close,
}

/// How the connection ended.
#[derive(Debug)]
pub(crate) enum Exit {
    Requested,
    ServerClosed { code: u16, reason: String },
    Lost(ConnectionError),
}

/// What the io thread must do, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write a data frame (hello, the application's, a heartbeat frame).
    Write(Frame),
    /// Write a frame the ledger kept (restored at start, or reliable and
    /// not yet acknowledged), with its ledger number.
    Resend(u64, Frame),
    /// The server acknowledged the reliable frame with this id.
    ServerAck(String),
    /// Send a heartbeat: a Ping, or the protocol's frame (counted as one).
    Beat(Option<Frame>),
    /// Move the application's queued frames to the socket now (before a
    /// close frame, so nothing queued before `close()` is lost).
    DrainQueue,
    /// Answer a Ping with a Pong carrying its payload.
    Pong(Vec<u8>),
    /// Send a close frame with this code and reason (1005: a close frame
    /// without a code, the answer to one).
    Close(u16, &'static str),
    /// Flush what was written.
    Flush,
    /// Hand a message to delivery.
    Deliver(Message),
    /// Hand the application a read's small messages, in one piece.
    DeliverRun(Run),
    /// A frame arrived at this moment: the link is alive.
    Alive(Instant),
    /// The first frame of this connection arrived (the socket proved
    /// itself).
    Proven,
    /// A heartbeat was answered after this long.
    Rtt(Duration),
    /// A `Protocol` method panicked on a message: it is skipped (counted
    /// as malformed).
    Skipped,
    /// The connection is over.
    Exit(Exit),
}

/// What the io thread does before its next look at the machine.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Come back without sleeping: the read or write budget ran out with
    /// work left.
    Again,
    /// Sleep until the socket or the waker needs attention, or until this
    /// moment (the close handshake's deadline).
    Until(Option<Instant>),
}

/// What one connection needs from the configuration, and nothing more.
#[derive(Clone)]
pub(crate) struct SessionSettings {
    /// The heartbeat's frame: `None` sends a Ping.
    pub heartbeat: Option<Frame>,
    /// Frames that answer the heartbeat.
    pub replies: Vec<ReplyRule>,
    pub heartbeat_timeout: Duration,
    pub close_timeout: Duration,
    pub write_timeout: Duration,
    pub max_message_size: usize,
    pub protocol: Arc<dyn crate::protocol::Protocol>,
    /// Every data frame is a message as it is: the protocol is not asked.
    pub frames_are_messages: bool,
}

pub(crate) struct Session {
    cfg: SessionSettings,
    actions: VecDeque<Action>,
    /// Close frame sent; give up waiting for the server's at this moment.
    closing: Option<Instant>,
    /// The server broke the protocol: the close code, what it did, and the
    /// latest moment to send the close (set at the first look).
    failing: Option<(u16, String, Option<Instant>)>,
    /// When the unanswered heartbeat went out (for the round trip).
    beat_sent: Option<Instant>,
    proven: bool,
    /// The last time reported alive: frames read in the same turn share
    /// one time, and one report.
    alive_at: Option<Instant>,
    /// The kernel send buffer is full: take no more frames until writable.
    congested: bool,
    /// Since when writing has made no progress.
    stalled_since: Option<Instant>,
    /// A budget ran out with work left.
    more: bool,
    done: bool,
    /// The close under way is to connect again elsewhere
    /// ([`Session::leave`]): how the connection ends once it is done.
    leaving: Option<ConnectionError>,
}

impl Session {
    /// A connection that has just opened: the hello frames go out first,
    /// then the frames the ledger kept (`resend`), then the queue.
    pub(crate) fn new(cfg: SessionSettings, hello: Vec<Frame>, resend: Vec<(u64, Frame)>) -> Self {
        let mut c = Session {
            cfg,
            actions: VecDeque::new(),
            closing: None,
            failing: None,
            beat_sent: None,
            proven: false,
            alive_at: None,
            congested: false,
            stalled_since: None,
            more: false,
            done: false,
            leaving: None,
        };
        if !hello.is_empty() || !resend.is_empty() {
            c.actions.extend(hello.into_iter().map(Action::Write));
            c.actions
                .extend(resend.into_iter().map(|(seq, f)| Action::Resend(seq, f)));
            c.actions.push_back(Action::Flush);
        }
        c
    }

    /// The next action to carry out, in order.
    pub(crate) fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn exit(&mut self, exit: Exit) {
        if !self.done {
            self.done = true;
            self.actions.push_back(Action::Exit(exit));
        }
    }

    /// An ending that is the requested close when one is under way.
    fn lost(&mut self, e: ConnectionError) {
        if self.closing.is_some() {
            self.close_done();
        } else {
            self.exit(Exit::Lost(e));
        }
    }

    /// The close handshake is over (or given up): the application's close,
    /// or the one [`Session::leave`] started.
    fn close_done(&mut self) {
        let exit = match self.leaving.take() {
            Some(why) => Exit::Lost(why),
            None => Exit::Requested,
        };
        self.exit(exit);
    }

    /// Closes the connection cleanly (1001, going away) to connect again
    /// elsewhere: it ends as lost with `why`, so the reconnect policy
    /// applies and the client does not stop. Nothing while a close is
    /// under way.
    pub(crate) fn leave(&mut self, why: ConnectionError, now: Instant) {
        if self.closing.is_some() || self.done || self.failing.is_some() {
            return;
        }
        self.leaving = Some(why);
        self.closing = Some(now + self.cfg.close_timeout);
        self.actions.push_back(Action::DrainQueue);
        self.actions.push_back(Action::Close(1001, ""));
        self.actions.push_back(Action::Flush);
    }

    /// The server broke the protocol and the connection is being failed:
    /// nothing more is read, and the close goes out once the application
    /// is done with what it was given (see [`Session::fail_when_settled`]).
    pub(crate) fn failing(&self) -> bool {
        self.failing.is_some()
    }

    /// While failing: `settled` when the application has taken every
    /// message delivered and let go of every batch, so whatever it sent in
    /// answer is queued. Then, or once `close_timeout` has passed, what
    /// was queued is written, then the close frame, and the connection
    /// ends.
    pub(crate) fn fail_when_settled(&mut self, settled: bool, now: Instant) {
        let Some((_, _, deadline)) = &mut self.failing else {
            return;
        };
        let deadline = *deadline.get_or_insert(now + self.cfg.close_timeout);
        if !settled && now < deadline {
            return;
        }
        let Some((code, what, _)) = self.failing.take() else {
            return;
        };
        self.actions.push_back(Action::DrainQueue);
        self.actions.push_back(Action::Close(code, ""));
        self.actions.push_back(Action::Flush);
        self.exit(Exit::Lost(ConnectionError::Protocol(what)));
    }

    /// `true` once the close handshake has started (the server's reply is
    /// awaited).
    pub(crate) fn closing(&self) -> bool {
        self.closing.is_some()
    }

    /// `true` when the application's queued frames may be taken.
    pub(crate) fn takes_frames(&self) -> bool {
        self.closing.is_none() && !self.congested && !self.done
    }

    /// A request from another thread.
    pub(crate) fn command(&mut self, c: Command, now: Instant) {
        match c {
            Command::Beat if self.closing.is_none() => {
                self.beat_sent = Some(now);
                self.actions
                    .push_back(Action::Beat(self.cfg.heartbeat.clone()));
                self.actions.push_back(Action::Flush);
            }
            Command::Beat => {}
            Command::Dead => self.exit(Exit::Lost(ConnectionError::HeartbeatTimeout {
                timeout: self.cfg.heartbeat_timeout,
            })),
            Command::Close if self.closing.is_none() => {
                self.closing = Some(now + self.cfg.close_timeout);
                self.actions.push_back(Action::DrainQueue);
                self.actions.push_back(Action::Close(1000, ""));
                self.actions.push_back(Action::Flush);
            }
            Command::Close => {}
        }
    }

    /// A frame was read at `now`.
    pub(crate) fn frame(&mut self, f: Incoming, now: Instant) {
        if self.alive_at != Some(now) {
            self.alive_at = Some(now);
            self.actions.push_back(Action::Alive(now));
        }
        if !self.proven {
            self.proven = true;
            self.actions.push_back(Action::Proven);
        }
        let body = match f {
            Incoming::Data(body) => body,
            Incoming::Run(g) => {
                // Only the plain protocol has the reader gather reads
                // (`Rules::share`): nothing to ask of them.
                self.actions.push_back(Action::DeliverRun(Run::new(g, now)));
                return;
            }
            Incoming::Pong => return self.answered(now),
            Incoming::Ping(payload) => {
                // Once a close frame is sent, no other frame may follow it
                // (RFC 6455 §5.5.1).
                if self.closing.is_none() {
                    self.actions.push_back(Action::Pong(payload));
                }
                return;
            }
            Incoming::Close(code, reason) => {
                if self.closing.is_some() {
                    // The answer to ours: the handshake is complete.
                    return self.close_done();
                }
                // RFC 6455 §5.5.1: answered with a close frame, echoing
                // the code (or with none, as it came).
                self.actions.push_back(Action::Close(code, ""));
                self.actions.push_back(Action::Flush);
                return self.exit(Exit::ServerClosed { code, reason });
            }
        };
        if self.cfg.frames_are_messages {
            // The built-in Plain protocol, no reply rules: nothing to ask.
            return self.deliver(Message::plain(body, Via::Ws, now));
        }
        // Rules and protocols look at a frame: the reader gives every
        // message storage of its own when they do (`Rules::share`).
        let Some(frame) = body.own() else {
            return self.deliver(Message::plain(body, Via::Ws, now));
        };
        if self.cfg.replies.iter().any(|r| r.matches(frame)) {
            return self.answered(now);
        }
        // The protocol is application code: a panic in it fails this
        // message (skipped, counted, logged), not the connection.
        let protocol = &self.cfg.protocol;
        let Ok(inspected) = guarded("inspect", || protocol.inspect(frame)) else {
            self.actions.push_back(Action::Skipped);
            return;
        };
        if let Some(id) = inspected.acknowledges {
            // The server's ack of a reliable frame: consumed.
            self.actions.push_back(Action::ServerAck(id));
            return;
        }
        self.deliver(Message::with_meta(body, Via::Ws, now, inspected.into()));
    }

    fn answered(&mut self, now: Instant) {
        if let Some(sent) = self.beat_sent.take() {
            self.actions
                .push_back(Action::Rtt(now.saturating_duration_since(sent)));
        }
    }

    fn deliver(&mut self, m: Message) {
        self.actions.push_back(Action::Deliver(m));
    }

    /// Reading failed.
    pub(crate) fn read_failed(&mut self, e: ReadFailure) {
        match e {
            ReadFailure::Ended => self.lost(ConnectionError::from(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed by the server without a close frame",
            ))),
            ReadFailure::TooLarge(what) => {
                let what = format!(
                    "{what} (limits.max_message_size: {} bytes); a server that resends what \
                     was not acked sends it again after the reconnect: raise \
                     limits.max_message_size (and limits.max_frame_size) if its messages can be this large",
                    self.cfg.max_message_size
                );
                self.actions
                    .push_back(Action::Close(1009, "message too big"));
                self.actions.push_back(Action::Flush);
                self.exit(Exit::Lost(ConnectionError::TooLarge(what)));
            }
            ReadFailure::Violation { code, what } => {
                // RFC 6455 §7.1.7: fail the connection, with a close frame
                // saying why while the socket can still take one. Nothing
                // more is read; what the application sends in answer to
                // what it was given before this point goes first (see
                // `failing`).
                if self.closing.is_none() {
                    self.failing = Some((code, what, None));
                } else {
                    self.exit(Exit::Lost(ConnectionError::Protocol(what)));
                }
            }
            ReadFailure::Failed(e) => self.lost(e),
        }
    }

    /// A write or flush failed.
    pub(crate) fn write_failed(&mut self, e: ConnectionError) {
        self.lost(e);
    }

    /// The read budget ran out with bytes possibly left.
    pub(crate) fn read_budget_spent(&mut self) {
        self.more = true;
    }

    /// The write budget ran out with frames left in the queue.
    pub(crate) fn write_budget_spent(&mut self) {
        self.more = true;
    }

    /// The kernel send buffer is full (`true`) or was flushed (`false`),
    /// at `now`.
    pub(crate) fn congested(&mut self, full: bool, now: Instant) {
        self.congested = full;
        if !full {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
    }

    /// The socket became writable at `now`: the kernel took data, so
    /// writing is making progress.
    pub(crate) fn writable(&mut self, now: Instant) {
        if self.stalled_since.is_some() {
            self.stalled_since = Some(now);
        }
    }

    /// What to do after this turn, at `now`.
    pub(crate) fn wait(&mut self, now: Instant) -> Wait {
        if let Some(since) = self.stalled_since {
            let deadline = since + self.cfg.write_timeout;
            if now >= deadline {
                self.lost(ConnectionError::WriteStalled {
                    after: self.cfg.write_timeout,
                });
                return Wait::Again;
            }
        }
        if std::mem::take(&mut self.more) {
            return Wait::Again;
        }
        let stall = self.stalled_since.map(|s| s + self.cfg.write_timeout);
        if self.failing.is_some() {
            // Look again soon: the application's progress raises no event.
            return Wait::Until(Some(now + Duration::from_millis(2)));
        }
        if let Some(deadline) = self.closing {
            if now >= deadline {
                self.close_done();
                return Wait::Again;
            }
            return Wait::Until(Some(stall.map_or(deadline, |s| s.min(deadline))));
        }
        Wait::Until(stall)
    }

    /// `true` once the machine has queued its exit.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }
}

/// Why reading failed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The stream ended without a close frame.
    Ended,
    /// A message or frame over the limit (tungstenite's words).
    TooLarge(String),
    /// The server broke RFC 6455 (a reserved opcode or RSV bit, text that
    /// is not UTF-8, a bad control frame, an invalid close): the connection
    /// is failed with a close frame of this code (1002 or 1007).
    Violation {
        /// The close code to send.
        code: u16,
        /// What the server did, for the error.
        what: String,
    },
    /// Anything else.
    Failed(ConnectionError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sections::Heartbeat;
    use crate::protocol::json::JsonRules;
    use crate::ClientBuilder;
    use serde_json::json;

    fn cfg(b: ClientBuilder) -> SessionSettings {
        SessionSettings::from(&b.validate().expect("valid config"))
    }

    fn plain() -> SessionSettings {
        cfg(ClientBuilder::new("ws://127.0.0.1:1/"))
    }

    fn acking() -> SessionSettings {
        cfg(ClientBuilder::new("ws://127.0.0.1:1/").protocol(
            JsonRules::new()
                .id("/id")
                .ack(json!({"type": "ack"}), [("/id", "ack")]),
        ))
    }

    fn drain(c: &mut Session) -> Vec<Action> {
        std::iter::from_fn(|| c.next_action()).collect()
    }

    fn text(t: &str) -> Incoming {
        Incoming::Data(Frame::from(t).into())
    }

    /// Feeds a frame and returns the message it asks to deliver.
    fn delivered(c: &mut Session, t: &str, now: Instant) -> Message {
        c.frame(text(t), now);
        drain(c)
            .into_iter()
            .find_map(|a| match a {
                Action::Deliver(m) => Some(m),
                _ => None,
            })
            .expect("a delivery")
    }

    #[test]
    fn hello_frames_go_out_first_then_a_flush() {
        let mut c = Session::new(plain(), vec!["h1".into(), "h2".into()], Vec::new());
        let a = drain(&mut c);
        assert!(
            matches!(&a[..], [Action::Write(f1), Action::Write(f2), Action::Flush]
            if f1.as_text() == Some("h1") && f2.as_text() == Some("h2"))
        );
    }

    #[test]
    fn a_write_that_makes_no_progress_for_the_write_timeout_drops_the_connection() {
        let mut s = plain();
        s.write_timeout = Duration::from_secs(5);
        let mut c = Session::new(s, vec![], Vec::new());
        let t0 = Instant::now();
        c.congested(true, t0);
        assert_eq!(c.wait(t0), Wait::Until(Some(t0 + Duration::from_secs(5))));
        // The kernel took some data at t0 + 3 s: the clock starts again.
        c.writable(t0 + Duration::from_secs(3));
        c.congested(true, t0 + Duration::from_secs(3));
        assert_eq!(
            c.wait(t0 + Duration::from_secs(6)),
            Wait::Until(Some(t0 + Duration::from_secs(8)))
        );
        assert_eq!(c.wait(t0 + Duration::from_secs(8)), Wait::Again);
        assert!(matches!(
            drain(&mut c).last(),
            Some(Action::Exit(Exit::Lost(
                ConnectionError::WriteStalled { .. }
            )))
        ));
        // A flush that went through clears it.
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.congested(true, t0);
        c.congested(false, t0 + Duration::from_secs(1));
        assert_eq!(c.wait(t0 + Duration::from_secs(999)), Wait::Until(None));
    }

    #[test]
    fn kept_frames_go_after_the_hello_and_before_the_queue() {
        let mut c = Session::new(
            plain(),
            vec!["hello".into()],
            vec![(3, "kept-3".into()), (5, "kept-5".into())],
        );
        let a = drain(&mut c);
        assert!(
            matches!(&a[..], [Action::Write(h), Action::Resend(3, k3), Action::Resend(5, k5), Action::Flush]
            if h.as_text() == Some("hello") && k3.as_text() == Some("kept-3") && k5.as_text() == Some("kept-5")),
            "{a:?}"
        );
    }

    #[test]
    fn the_servers_ack_of_a_reliable_frame_is_consumed_not_delivered() {
        let s = cfg(ClientBuilder::new("ws://127.0.0.1:1/").protocol(
            JsonRules::new()
                .id("/id")
                .acked_by("/type", json!("acked"), "/id"),
        ));
        let mut c = Session::new(s, vec![], Vec::new());
        let t0 = Instant::now();
        c.frame(text(r#"{"type":"acked","id":"r-1"}"#), t0);
        let a = drain(&mut c);
        assert!(
            matches!(&a[..], [Action::Alive(_), Action::Proven, Action::ServerAck(id)] if id == "r-1"),
            "{a:?}"
        );
        c.frame(text(r#"{"type":"msg","id":"m-1"}"#), t0);
        assert!(matches!(&drain(&mut c)[..], [Action::Deliver(_)]));
    }

    #[test]
    fn the_first_frame_proves_the_socket_and_every_frame_marks_it_alive() {
        let t0 = Instant::now();
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.frame(Incoming::Ping(Vec::new()), t0);
        let a = drain(&mut c);
        assert!(
            matches!(&a[..], [Action::Alive(at), Action::Proven, Action::Pong(_)] if *at == t0)
        );
        // Read in the same turn (same time): already reported.
        c.frame(Incoming::Pong, t0);
        assert!(drain(&mut c).is_empty());
        let t1 = t0 + Duration::from_millis(1);
        c.frame(Incoming::Pong, t1);
        assert!(matches!(&drain(&mut c)[..], [Action::Alive(at)] if *at == t1));
    }

    #[test]
    fn a_message_is_handed_to_delivery_once_with_the_ack_it_asks_for() {
        let t0 = Instant::now();
        let mut c = Session::new(acking(), vec![], Vec::new());
        let mut m = delivered(&mut c, r#"{"id":"a"}"#, t0);
        assert_eq!(m.id(), Some("a"));
        let ack = m.take_ack().expect("the protocol's ack travels with it");
        assert_eq!(ack.json(), Some(json!({"type":"ack","ack":"a"})));
        // Nothing comes back to the machine: what delivery does with it
        // (queue, hold, ack) is delivery's.
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn the_application_close_drains_the_queue_then_sends_1000_and_waits_for_the_reply() {
        let t0 = Instant::now();
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.command(Command::Close, t0);
        let a = drain(&mut c);
        assert!(matches!(
            &a[..],
            [Action::DrainQueue, Action::Close(1000, _), Action::Flush]
        ));
        assert!(!c.takes_frames());
        let deadline = t0 + Duration::from_millis(500);
        assert_eq!(c.wait(t0), Wait::Until(Some(deadline)));
        // A second close is nothing new.
        c.command(Command::Close, t0);
        assert!(drain(&mut c).is_empty());
        // The server's close frame ends it as requested.
        c.frame(Incoming::Close(1000, String::new()), t0);
        assert!(matches!(
            drain(&mut c).last(),
            Some(Action::Exit(Exit::Requested))
        ));
    }

    #[test]
    fn a_close_reply_that_never_comes_ends_the_connection_at_the_deadline() {
        let t0 = Instant::now();
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.command(Command::Close, t0);
        drain(&mut c);
        assert_eq!(
            c.wait(t0 + Duration::from_millis(499)),
            Wait::Until(Some(t0 + Duration::from_millis(500)))
        );
        assert_eq!(c.wait(t0 + Duration::from_millis(500)), Wait::Again);
        assert!(matches!(
            &drain(&mut c)[..],
            [Action::Exit(Exit::Requested)]
        ));
    }

    #[test]
    fn a_close_from_the_server_is_answered_and_reported_with_its_code() {
        let t0 = Instant::now();
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.frame(Incoming::Close(4001, "bye".into()), t0);
        let a = drain(&mut c);
        assert!(
            matches!(a.last(), Some(Action::Exit(Exit::ServerClosed { code: 4001, reason })) if reason == "bye")
        );
        assert!(
            matches!(&a[2..4], [Action::Close(4001, ""), Action::Flush]),
            "the reply echoes the code and goes out: {a:?}"
        );
        assert!(c.is_done());
        // The answer to our own close completes the handshake: no reply.
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.command(Command::Close, t0);
        drain(&mut c);
        c.frame(Incoming::Close(1000, String::new()), t0);
        let a = drain(&mut c);
        assert!(matches!(a.last(), Some(Action::Exit(Exit::Requested))));
        assert!(!a.iter().any(|x| matches!(x, Action::Close(..))));
    }

    #[test]
    fn a_ping_is_answered_with_its_payload_until_a_close_is_sent() {
        let t0 = Instant::now();
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.frame(Incoming::Ping(b"p1".to_vec()), t0);
        let a = drain(&mut c);
        assert!(
            matches!(a.last(), Some(Action::Pong(p)) if p == b"p1"),
            "{a:?}"
        );
        c.command(Command::Close, t0);
        drain(&mut c);
        c.frame(Incoming::Ping(b"p2".to_vec()), t0);
        assert!(!drain(&mut c).iter().any(|a| matches!(a, Action::Pong(_))));
    }

    #[test]
    fn errors_while_closing_are_the_requested_close() {
        let t0 = Instant::now();
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.command(Command::Close, t0);
        drain(&mut c);
        c.read_failed(ReadFailure::Ended);
        assert!(matches!(
            &drain(&mut c)[..],
            [Action::Exit(Exit::Requested)]
        ));
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.read_failed(ReadFailure::Ended);
        assert!(matches!(
            &drain(&mut c)[..],
            [Action::Exit(Exit::Lost(ConnectionError::Io(_)))]
        ));
    }

    #[test]
    fn leaving_closes_with_1001_and_ends_as_lost_not_requested() {
        let t0 = Instant::now();
        let why = || ConnectionError::NetworkChanged {
            reason: "back to eth0".into(),
        };
        // The server answers the close.
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.leave(why(), t0);
        let a = drain(&mut c);
        assert!(matches!(
            &a[..],
            [Action::DrainQueue, Action::Close(1001, _), Action::Flush]
        ));
        assert!(!c.takes_frames(), "nothing after the close frame");
        c.leave(why(), t0);
        assert!(drain(&mut c).is_empty(), "once");
        c.frame(Incoming::Close(1001, String::new()), t0);
        assert!(matches!(
            drain(&mut c).last(),
            Some(Action::Exit(Exit::Lost(
                ConnectionError::NetworkChanged { .. }
            )))
        ));
        // The server never answers: the same ending at the close timeout.
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.leave(why(), t0);
        drain(&mut c);
        let _ = c.wait(t0 + Duration::from_secs(3600));
        assert!(matches!(
            drain(&mut c).last(),
            Some(Action::Exit(Exit::Lost(
                ConnectionError::NetworkChanged { .. }
            )))
        ));
        // The application's close while leaving stays the application's
        // business (the supervisor maps it): no second close frame.
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.command(Command::Close, t0);
        c.leave(why(), t0);
        let a = drain(&mut c);
        assert_eq!(
            a.iter().filter(|x| matches!(x, Action::Close(..))).count(),
            1
        );
    }

    #[test]
    fn an_oversized_message_closes_with_1009_and_says_the_limit() {
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.read_failed(ReadFailure::TooLarge("message too long".into()));
        let a = drain(&mut c);
        assert!(matches!(&a[0], Action::Close(1009, _)));
        assert!(
            matches!(a.last(), Some(Action::Exit(Exit::Lost(ConnectionError::TooLarge(w)))) if w.contains("1048576"))
        );
    }

    #[test]
    fn heartbeats_go_out_unless_closing_and_a_reply_times_the_round_trip() {
        let t0 = Instant::now();
        let cfg = cfg(
            ClientBuilder::new("ws://127.0.0.1:1/").heartbeat(Heartbeat {
                frame: Some("hb".into()),
                replies: vec![ReplyRule::Text("hb-ok".into())],
                ..Heartbeat::default()
            }),
        );
        let mut c = Session::new(cfg, vec![], Vec::new());
        c.command(Command::Beat, t0);
        assert!(
            matches!(&drain(&mut c)[..], [Action::Beat(Some(f)), Action::Flush] if f.as_text() == Some("hb"))
        );
        c.frame(text("hb-ok"), t0 + Duration::from_millis(7));
        let a = drain(&mut c);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Rtt(d) if *d == Duration::from_millis(7))));
        assert!(
            !a.iter().any(|x| matches!(x, Action::Deliver(_))),
            "replies are consumed"
        );
        c.command(Command::Close, t0);
        drain(&mut c);
        c.command(Command::Beat, t0);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_protocol_that_panics_on_one_message_skips_it_and_carries_on() {
        struct Fragile;
        impl crate::protocol::Protocol for Fragile {
            fn inspect(&self, frame: &Frame) -> crate::protocol::Inspected {
                assert!(frame.as_text() != Some("poison"), "cannot parse");
                crate::protocol::Inspected::default()
            }
        }
        let t0 = Instant::now();
        let mut c = Session::new(
            cfg(ClientBuilder::new("ws://127.0.0.1:1/").protocol(Fragile)),
            vec![],
            Vec::new(),
        );
        c.frame(text("poison"), t0);
        assert!(matches!(drain(&mut c).last(), Some(Action::Skipped)));
        assert_eq!(delivered(&mut c, "fine", t0).text(), Some("fine"));
    }

    #[test]
    fn a_dead_link_exits_once_with_the_timeout() {
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.command(Command::Dead, Instant::now());
        c.command(Command::Dead, Instant::now());
        let a = drain(&mut c);
        assert_eq!(a.len(), 1);
        assert!(matches!(
            &a[0],
            Action::Exit(Exit::Lost(ConnectionError::HeartbeatTimeout { .. }))
        ));
    }

    #[test]
    fn a_spent_budget_or_congestion_shapes_the_next_wait() {
        let t0 = Instant::now();
        let mut c = Session::new(plain(), vec![], Vec::new());
        c.read_budget_spent();
        assert_eq!(c.wait(t0), Wait::Again);
        assert_eq!(c.wait(t0), Wait::Until(None), "once, then sleep");
        c.congested(true, Instant::now());
        assert!(!c.takes_frames());
        c.congested(false, Instant::now());
        assert!(c.takes_frames());
    }
}
