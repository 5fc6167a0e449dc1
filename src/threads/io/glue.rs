//! The glue between the socket and the connection machine, without the
//! waiting: one turn reads until `WouldBlock` (or the budget), hands the
//! frame reader's events to the machine, carries out its actions and writes
//! the application's frames through the frame writer. Generic over the stream,
//! so it is tested with a scripted `Read + Write` that returns `WouldBlock`
//! on chosen calls. Logs under the io thread's target.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, trace, warn};

use crate::connect::stream::Stream;
use crate::connect::transport::WRITE_BUFFER;
use crate::delivery::inbox::{Intake, Taken};
use crate::durable::Ledger;
use crate::durable::Outgoing;
use crate::error::ConnectionError;
use crate::frame::Frame;
use crate::machine::connection::{Action, Incoming, ReadFailure, Session};
use crate::machine::connection::{Command, Exit, Wait};
use crate::machine::frames::{FrameEvent, Reader, Skip};
use crate::machine::writer::{Kind, Refused, Writer};
use crate::shared::Shared;
use crate::threads::Link;

/// Messages read per turn before writes get a chance.
const READ_BUDGET: usize = 256;
/// Frames written per turn before reads get a chance.
const WRITE_BUDGET: usize = 256;

/// What the driver reaches besides the socket.
pub(super) struct Ctx {
    pub shared: Arc<Shared>,
    pub outbound: Receiver<Outgoing>,
    pub ledger: Arc<Ledger>,
    pub link: Link,
    /// Told once, at the first inbound frame (the socket proved itself).
    pub proven: Sender<()>,
}

/// One connection's socket work without the waiting: reads, writes and the
/// machine's actions. Generic over the stream so the glue is tested with a
/// scripted `Read + Write`.
pub(super) struct Driver<S> {
    /// The socket.
    io: S,
    /// The client's frames, encoded and waiting for the socket.
    wr: Writer,
    /// The server's frames, read from `ws`'s stream.
    rd: Reader,
    m: Session,
    /// Where delivered messages go: the inbound queue's io end.
    intake: Intake,
    ctx: Ctx,
    /// This turn moved data (read or wrote a frame).
    active: bool,
    /// The read budget ran out, or a pause ended: bytes may wait in the
    /// socket that will raise no new edge, so read without one.
    read_again: bool,
    /// When this turn's reads began: the arrival time of every message
    /// they take (one clock read per turn, not two per message).
    at: Instant,
    /// Bytes arrived in this read turn: the link is alive, whether or not
    /// they finish a frame (a large message, a dropped one).
    heard: bool,
    /// Messages dropped or skipped and not yet logged (one warning per
    /// read turn, however many).
    skipped: Skipped,
}

/// Messages the frame reader dropped or skipped since the last warning.
#[derive(Default)]
struct Skipped {
    /// Over a limit: how many, and the last one's size and whether it came
    /// in fragments.
    too_large: Option<(u64, u64, bool)>,
    /// Skipped (lenient): how many, and the last one's reason.
    broken: Option<(u64, Skip)>,
}

impl<S: Read + Write> Driver<S> {
    /// A connection's driver, before its first turn.
    pub(super) fn new(
        io: S,
        (rd, wr): (Reader, Writer),
        m: Session,
        intake: Intake,
        ctx: Ctx,
    ) -> Self {
        Driver {
            io,
            wr,
            rd,
            m,
            intake,
            ctx,
            active: false,
            read_again: false,
            at: Instant::now(),
            heard: false,
            skipped: Skipped::default(),
        }
    }

    /// The connection as the other threads hold it.
    pub(super) fn link(&self) -> &Link {
        &self.ctx.link
    }

    /// `true` when data moved since the last call.
    pub(super) fn take_active(&mut self) -> bool {
        std::mem::take(&mut self.active)
    }

    /// Carries out the machine's actions; the exit once it has one.
    /// Closes the connection cleanly to connect again elsewhere
    /// ([`Session::leave`]).
    pub(super) fn leave(&mut self, why: crate::error::ConnectionError) -> Option<Exit> {
        self.m.leave(why, Instant::now());
        self.act()
    }

    pub(super) fn act(&mut self) -> Option<Exit> {
        while let Some(a) = self.m.next_action() {
            match a {
                Action::Write(f) => self.write(f),
                Action::Resend(seq, f) => {
                    let len = f.len();
                    self.write(f);
                    if !self.ctx.ledger.written(seq) {
                        self.ctx.shared.outbound.release(len);
                    }
                }
                Action::ServerAck(id) => {
                    let bytes = self.ctx.ledger.acked(&id);
                    self.ctx.shared.outbound.release(bytes);
                }
                Action::Beat(f) => {
                    let n = self.ctx.shared.counters.heartbeats.fetch_add(1, Relaxed) + 1;
                    debug!(target: "heartline::threads::io", "sending heartbeat");
                    match f {
                        Some(f) => self.write(f),
                        None => {
                            self.send(Kind::Ping, &n.to_be_bytes());
                        }
                    }
                }
                Action::DrainQueue => self.take_queued(usize::MAX),
                Action::Pong(payload) => {
                    self.send(Kind::Pong, &payload);
                }
                Action::Close(code, reason) => {
                    debug!(target: "heartline::threads::io", "sending close {code}");
                    let mut payload = Vec::new();
                    if code != 1005 {
                        payload.extend(code.to_be_bytes());
                        payload.extend(reason.as_bytes());
                    }
                    self.send(Kind::Close, &payload);
                }
                Action::Flush => self.flush(),
                Action::Deliver(msg) => {
                    let taken = self.intake.offer(msg, self.m.closing());
                    self.taken_in(taken);
                }
                Action::DeliverRun(run) => {
                    let taken = self.intake.offer_run(run, self.m.closing());
                    self.taken_in(taken);
                }
                Action::Alive(at) => {
                    self.active = true;
                    self.ctx.link.touch(at);
                }
                Action::Proven => {
                    let _ = self.ctx.proven.try_send(());
                }
                Action::Rtt(d) => {
                    trace!(target: "heartline::threads::io", "heartbeat answered in {d:?}");
                    self.ctx.shared.set_rtt(d);
                }
                Action::Skipped => {
                    self.ctx.shared.counters.malformed.fetch_add(1, Relaxed);
                }
                Action::Exit(e) => return Some(e),
            }
        }
        None
    }

    /// After a turn, at `now`: how long the thread may sleep, or the exit
    /// (the close handshake's deadline passed). Rings the doorbell first:
    /// nothing queued waits for a bell while the thread sleeps.
    pub(super) fn wait(&mut self, now: Instant) -> Result<Wait, Exit> {
        // A held message the consumer has made room for: retry at once.
        let wait = if self.intake.has_room() {
            Wait::Again
        } else {
            self.m.wait(now)
        };
        if let Some(e) = self.act() {
            return Err(e);
        }
        self.ring();
        Ok(wait)
    }

    /// The socket became writable at `now`.
    pub(super) fn writable(&mut self, now: Instant) {
        self.m.writable(now);
    }

    /// One turn: the commands, the held message, reads, queued writes; then
    /// the consumer's doorbell, if what it waits for is queued.
    pub(super) fn turn(&mut self, commands: &Receiver<Command>, read: bool) -> Option<Exit> {
        let exit = self.turn_unrung(commands, read);
        self.ring();
        exit
    }

    /// Rings the consumer's doorbell for what this thread queued (see
    /// [`Intake::ring`]).
    pub(super) fn ring(&mut self) {
        self.intake.ring();
    }

    /// Carries out what delivery made of a message.
    fn taken_in(&mut self, taken: Taken) {
        match taken {
            Taken::Queued { ack, rang } => {
                // The ack (`AckMode::Queued`) goes once the queue has the
                // message; a duplicate's again, so the server stops
                // resending it.
                if let Some(a) = ack {
                    self.write_ack(a);
                }
                if rang {
                    // The consumer was woken, often onto this core: let it
                    // run now, not after the rest of this turn (an echo's
                    // round trip).
                    std::thread::yield_now();
                }
            }
            Taken::Held => {
                debug!(target: "heartline::threads::io", "inbound queue full; reading paused");
            }
            Taken::Dropped => {
                warn!(target: "heartline::threads::io", "inbound queue full while closing; message not taken (not acked)");
            }
            Taken::Closed => {}
        }
    }

    /// Writes an acknowledgement, counted first: whoever sees the server
    /// holding the ack sees it counted.
    fn write_ack(&mut self, ack: Frame) {
        self.ctx.shared.counters.acks.fetch_add(1, Relaxed);
        self.write(ack);
    }

    fn turn_unrung(&mut self, commands: &Receiver<Command>, read: bool) -> Option<Exit> {
        // Acks the application's hand-outs released: first, and not subject
        // to congestion (they are small and must not wait behind frames).
        let mut acks = self.ctx.ledger.take_acks();
        if !acks.is_empty() {
            let mut freed = 0;
            while !self.m.is_done() {
                let Some(a) = acks.pop_front() else { break };
                freed += crate::message::ack_cost(&a);
                self.write_ack(a);
            }
            self.ctx.ledger.unsent_acks(acks);
            // Out of the ledger: room for reading, if acks had filled it.
            self.intake.acks_written(freed);
        }
        for c in commands.try_iter() {
            self.m.command(c, Instant::now());
            if let Some(e) = self.act() {
                return Some(e);
            }
        }
        if let Some(taken) = self.intake.retry(self.m.closing()) {
            self.taken_in(taken);
            if !self.intake.holding() {
                debug!(target: "heartline::threads::io", "inbound queue has room again; reading resumes");
                // A reader that was paused heard nothing, which proves
                // nothing: the link counts as alive from now.
                self.ctx.link.touch(Instant::now());
                // The bytes it left in the socket raise no new edge.
                self.read_again = true;
            }
            if let Some(e) = self.act() {
                return Some(e);
            }
        }
        let read = read || std::mem::take(&mut self.read_again) || self.m.closing();
        if !self.intake.holding() && !self.m.failing() && read {
            if let Some(e) = self.read() {
                return Some(e);
            }
        }
        if self.m.takes_frames() {
            self.take_queued(WRITE_BUDGET);
        }
        if self.m.failing() {
            // Settled: nothing waits for the application and it holds no
            // batch, so what it sent in answer is in the queue.
            let settled = self.intake.settled() && self.ctx.shared.batches_out.load(SeqCst) == 0;
            self.m.fail_when_settled(settled, Instant::now());
        }
        self.flush();
        self.act()
    }

    fn read(&mut self) -> Option<Exit> {
        self.at = Instant::now();
        self.intake.turn();
        self.heard = false;
        // Counted once per turn, not per message (two shared counters
        // fewer on every message's path).
        let mut tally = (0, 0);
        let exit = self.read_messages(&mut tally);
        self.report_skipped();
        let c = &self.ctx.shared.counters;
        c.frames_in.fetch_add(tally.0, Relaxed);
        c.bytes_in.fetch_add(tally.1, Relaxed);
        // What this read queued goes to the consumer now, not after this
        // turn's writes.
        self.ring();
        exit
    }

    /// Logs the messages dropped or skipped in this read turn (they were
    /// counted as they came).
    fn report_skipped(&mut self) {
        let Skipped { too_large, broken } = std::mem::take(&mut self.skipped);
        if let Some((n, skip)) = broken {
            let what = match skip {
                Skip::Reserved(opcode) => format!(
                    "the last a frame with opcode {opcode}, which RFC 6455 reserves and no extension was agreed for"
                ),
                Skip::NotUtf8 => "the last a text message that is not valid UTF-8".to_owned(),
            };
            warn!(target: "heartline::threads::io", "skipped {n} message(s) that break RFC 6455 ({what}); lenient: the connection carries on");
        }
        if let Some((n, len, fragmented)) = too_large {
            let rules = self.rd.rules();
            warn!(
                target: "heartline::threads::io",
                "dropped {n} message(s) over limits.max_frame_size ({} bytes) or \
                 limits.max_message_size ({} bytes), the last of {}{len} bytes{}, as they \
                 arrived; the connection carries on. To receive such messages, raise \
                 limits.max_frame_size and limits.max_message_size",
                rules.max_frame,
                rules.max_message,
                if fragmented { "at least " } else { "" },
                if fragmented { ", in fragments" } else { "" },
            );
        }
    }

    /// Reads until `WouldBlock`, a pause or the budget; `tally` counts the
    /// frames read and their payload bytes.
    fn read_messages(&mut self, tally: &mut (u64, u64)) -> Option<Exit> {
        let mut taken = 0;
        loop {
            let event = match self.rd.next() {
                Some(Ok(e)) => e,
                Some(Err(failure)) => {
                    self.m.read_failed(failure);
                    return self.act();
                }
                None => match self.fill() {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(failure) => {
                        self.m.read_failed(failure);
                        return self.act();
                    }
                },
            };
            let mut frames = 1;
            let incoming = match event {
                FrameEvent::Message(f) => {
                    tally.1 += f.len() as u64;
                    Incoming::Data(f)
                }
                FrameEvent::Run(g) => {
                    frames = g.spans.len();
                    tally.1 += g.payload_bytes();
                    Incoming::Run(g)
                }
                FrameEvent::Ping(p) => Incoming::Ping(p),
                FrameEvent::Pong => Incoming::Pong,
                FrameEvent::Close(c) => {
                    let (code, reason) = c.unwrap_or((1005, String::new()));
                    debug!(target: "heartline::threads::io", "server closed with {code} {reason:?}");
                    Incoming::Close(code, reason)
                }
                FrameEvent::TooLarge { len, fragmented } => {
                    // Counted before anything behind it is handed out.
                    self.ctx.shared.counters.too_large.fetch_add(1, Relaxed);
                    let n = self.skipped.too_large.map_or(0, |t| t.0) + 1;
                    self.skipped.too_large = Some((n, len, fragmented));
                    tally.0 += 1;
                    continue;
                }
                FrameEvent::Skipped(why) => {
                    self.ctx.shared.counters.malformed.fetch_add(1, Relaxed);
                    let n = self.skipped.broken.map_or(0, |t| t.0) + 1;
                    self.skipped.broken = Some((n, why));
                    tally.0 += 1;
                    continue;
                }
            };
            tally.0 += frames as u64;
            self.m.frame(incoming, self.at);
            if let Some(e) = self.act() {
                return Some(e);
            }
            if self.intake.holding() {
                return None;
            }
            taken += frames;
            if taken >= READ_BUDGET {
                self.m.read_budget_spent();
                self.read_again = true;
                return None;
            }
        }
    }

    /// One read of the socket into the frame reader: `false` when it would
    /// block.
    fn fill(&mut self) -> Result<bool, ReadFailure> {
        loop {
            match self.io.read(self.rd.space()) {
                Ok(0) => return Err(ReadFailure::Ended),
                Ok(n) => {
                    self.rd.filled(n);
                    if !std::mem::replace(&mut self.heard, true) {
                        // Any byte is the server's: the link is alive, also
                        // in the middle of a large or a dropped message.
                        self.active = true;
                        self.ctx.link.touch(self.at);
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFailure::Failed(ConnectionError::from(e))),
            }
        }
    }

    /// Moves up to `max` of the application's frames to the socket.
    fn take_queued(&mut self, max: usize) {
        let (mut taken, mut frames) = (0, 0);
        for _ in 0..max {
            let Ok(out) = self.ctx.outbound.try_recv() else {
                break;
            };
            frames += 1;
            self.active = true;
            let f = match out {
                Outgoing::Frame(f) => {
                    taken += f.len();
                    f
                }
                Outgoing::Tracked(seq, share) => {
                    // Its share let go first, so the ledger's frame moves
                    // out without a copy.
                    drop(share);
                    match self.ctx.ledger.take(seq) {
                        // A reliable frame keeps its bytes until the server
                        // acks it.
                        Some((f, true)) => f,
                        Some((f, false)) => {
                            taken += f.len();
                            f
                        }
                        None => continue, // not in the ledger: nothing to send
                    }
                }
            };
            trace!(target: "heartline::threads::io", "sending {f:?}");
            self.write(f);
            if self.m.is_done() {
                break;
            }
        }
        // Out of the queue (on the wire or in the writer's buffer): room
        // for senders waiting on the byte budget.
        self.ctx.shared.outbound.release(taken);
        self.ctx.shared.outbound_frames.release(frames);
        if !self.ctx.outbound.is_empty() {
            self.m.write_budget_spent(); // come back without sleeping
        }
    }

    fn write(&mut self, frame: Frame) {
        let (kind, bytes) = match frame {
            Frame::Text(t) => (Kind::Text, t.into_bytes()),
            Frame::Binary(b) => (Kind::Binary, b),
        };
        let len = bytes.len() as u64;
        let r = self.wr.frame_owned(kind, bytes);
        if self.taken(r) {
            let c = &self.ctx.shared.counters;
            c.frames_out.fetch_add(1, Relaxed);
            c.bytes_out.fetch_add(len, Relaxed);
        }
    }

    /// Encodes a control frame behind what waits for the socket; `false`
    /// when it was not taken.
    fn send(&mut self, kind: Kind, payload: &[u8]) -> bool {
        let r = self.wr.frame(kind, payload);
        self.taken(r)
    }

    /// After a frame was encoded (or refused): writes once a buffer's worth
    /// waits; `false` when it was refused.
    fn taken(&mut self, r: Result<(), Refused>) -> bool {
        match r {
            Ok(()) => {
                if self.wr.waiting() >= WRITE_BUFFER {
                    self.flush();
                }
                true
            }
            // After our close frame nothing may go (RFC 6455 §5.5.1).
            Err(Refused::Closed) => false,
            Err(Refused::Full) => {
                self.m
                    .write_failed(ConnectionError::from(std::io::Error::other(
                        "the server has stopped reading: more than twice limits.outbound_bytes is \
                     waiting to be sent; dropping the connection",
                    )));
                false
            }
        }
    }

    /// Writes what waits until the socket would block.
    fn flush(&mut self) {
        loop {
            if self.wr.waiting() == 0 {
                return match self.io.flush() {
                    Ok(()) => self.m.congested(false, Instant::now()),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.m.congested(true, Instant::now())
                    }
                    Err(e) => self.m.write_failed(ConnectionError::from(e)),
                };
            }
            match self.io.write(self.wr.pending()) {
                Ok(0) => {
                    let e = std::io::Error::from(ErrorKind::WriteZero);
                    return self.m.write_failed(ConnectionError::from(e));
                }
                Ok(n) => self.wr.advance(n),
                // The kernel buffer is full: take no frames until the
                // socket is writable again (edge-triggered WRITABLE wakes
                // us).
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return self.m.congested(true, Instant::now())
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.m.write_failed(ConnectionError::from(e)),
            }
        }
    }
}

impl Driver<Stream> {
    /// epoll reported an error on the socket. While a message is held no
    /// read would see it: the kernel has declared the link dead
    /// (keepalive, `TCP_USER_TIMEOUT`), so the connection ends here.
    pub(super) fn socket_error(&mut self) -> Option<Exit> {
        if !self.intake.holding() {
            return None; // the next read reports it
        }
        let Ok(Some(err)) = self.io.tcp().take_error() else {
            return None;
        };
        debug!(target: "heartline::threads::io", "socket error while reading is paused: {err}");
        self.m
            .read_failed(ReadFailure::Failed(ConnectionError::from(err)));
        self.act()
    }
}

#[cfg(test)]
mod tests {
    //! The glue, through a scripted stream that returns `WouldBlock` on
    //! chosen calls (as tungstenite's own tests do); no sockets.
    use super::*;
    use crate::config::delivery::Overflow;
    use crate::delivery::inbox::Inbox;
    use crate::protocol::json::JsonRules;
    use crate::ClientBuilder;
    use mio::{Poll, Token, Waker};
    use std::collections::VecDeque;
    use std::io::Cursor;
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::{CloseFrame, Role};
    use tungstenite::{Message as WsMessage, WebSocket};

    /// Reads come from `reads` (`None`: WouldBlock); writes fail with
    /// WouldBlock while `blocked`, else go to `written`.
    #[derive(Default)]
    struct Script {
        reads: VecDeque<Option<Vec<u8>>>,
        written: Vec<u8>,
        blocked: bool,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.reads.pop_front() {
                Some(Some(mut chunk)) => {
                    let n = chunk.len().min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.reads.push_front(Some(chunk.split_off(n)));
                    }
                    Ok(n)
                }
                Some(None) | None => Err(ErrorKind::WouldBlock.into()),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.blocked {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a server would send, as bytes on the wire.
    fn from_server(msgs: Vec<WsMessage>) -> Vec<u8> {
        let mut ws = WebSocket::from_raw_socket(Cursor::new(Vec::new()), Role::Server, None);
        for m in msgs {
            ws.send(m).unwrap();
        }
        ws.get_ref().get_ref().clone()
    }

    /// The client's bytes, read back as a server reads them.
    fn at_server(bytes: &[u8]) -> Vec<WsMessage> {
        let mut ws = WebSocket::from_raw_socket(Cursor::new(bytes.to_vec()), Role::Server, None);
        std::iter::from_fn(|| ws.read().ok()).collect()
    }

    struct Rig {
        d: Driver<Script>,
        commands_tx: Sender<Command>,
        commands: Receiver<Command>,
        outbound_tx: Sender<Outgoing>,
        inbound: crate::delivery::inbox::TestRx,
        inbox: Arc<Inbox>,
        _poll: Poll,
    }

    fn rig() -> Rig {
        rig_with(false)
    }

    fn rig_with(lenient: bool) -> Rig {
        rig_built(|b| b.lenient(lenient))
    }

    fn rig_built(f: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Rig {
        let cfg = Arc::new(
            f(ClientBuilder::new("ws://127.0.0.1:1/"))
                .protocol(
                    JsonRules::new()
                        .id("/id")
                        .ack(serde_json::json!({"type": "ack"}), [("/id", "ack")]),
                )
                .delivery(crate::Delivery {
                    ack_mode: crate::AckMode::Queued,
                    ..Default::default()
                })
                .validate()
                .unwrap(),
        );
        let (shared, _events) = Shared::new(8, (usize::MAX, 1 << 20));
        let inbox = Arc::new(Inbox::new(
            (16, 1 << 20),
            100,
            Overflow::Backpressure,
            cfg.delivery.ack_mode,
            shared.clone(),
            false,
        ));
        let inbound = crate::delivery::inbox::TestRx::of(&inbox);
        let (outbound_tx, outbound) = crossbeam_channel::bounded(16);
        let (ledger, _) = crate::durable::Ledger::open(
            None,
            false,
            std::time::Duration::ZERO,
            100,
            shared.clone(),
        )
        .unwrap();
        let (commands_tx, commands) = crossbeam_channel::bounded(8);
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (proven, _) = crossbeam_channel::bounded(1);
        let rd = Reader::new(crate::threads::io::rules(&cfg));
        let wr = Writer::new(crate::connect::transport::write_limit(&cfg));
        Rig {
            d: Driver::new(
                Script::default(),
                (rd, wr),
                Session::new(
                    crate::machine::connection::SessionSettings::from(&*cfg),
                    Vec::new(),
                    Vec::new(),
                ),
                Intake::new(inbox.clone()),
                Ctx {
                    shared,
                    outbound,
                    ledger: Arc::new(ledger),
                    link: Link::new(waker, commands_tx.clone()),
                    proven,
                },
            ),
            commands_tx,
            commands,
            outbound_tx,
            inbound,
            inbox,
            _poll: poll,
        }
    }

    impl Rig {
        fn script(&mut self) -> &mut Script {
            &mut self.d.io
        }
        fn turn(&mut self) -> Option<Exit> {
            self.d.turn(&self.commands, true)
        }
        /// Turns until the connection ends (a failing one waits for the
        /// application, here for `close_timeout`).
        fn turn_to_exit(&mut self) -> Option<Exit> {
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(e) = self.turn() {
                    return Some(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            None
        }
        fn sent(&mut self) -> Vec<WsMessage> {
            at_server(&self.script().written)
        }
    }

    fn text(t: &str) -> WsMessage {
        WsMessage::Text(t.into())
    }

    #[test]
    fn the_doorbell_rings_once_per_turn_when_what_the_consumer_waits_for_is_queued() {
        let mut r = rig();
        let bell = r.inbox.flow().doorbell().clone();
        let three = |n: usize| {
            let msgs = (0..3).map(|i| text(&format!(r#"{{"id":"{n}{i}"}}"#)));
            from_server(msgs.collect())
        };
        // Waits for 5: three queued in a turn do not ring.
        r.inbox.flow().want(5);
        r.script().reads = VecDeque::from([Some(three(0)), None]);
        assert!(r.turn().is_none());
        assert_eq!(r.inbound.len(), 3);
        assert!(bell.try_recv().is_err(), "rang before enough was queued");
        // Three more make six: rung by the end of the turn, once.
        r.script().reads = VecDeque::from([Some(three(1)), None]);
        assert!(r.turn().is_none());
        assert!(bell.try_recv().is_ok(), "not rung after the turn");
        assert!(bell.try_recv().is_err());
        // The queue fills up (16) within a turn and reading pauses: the
        // consumer is rung before the io thread sleeps.
        r.inbox.flow().want(1);
        let many = (0..20).map(|i| text(&format!(r#"{{"id":"m{i}"}}"#)));
        r.script().reads = VecDeque::from([Some(from_server(many.collect())), None]);
        assert!(r.turn().is_none());
        assert!(r.d.intake.holding(), "the queue is full");
        assert!(bell.try_recv().is_ok(), "a full queue's consumer not rung");
    }

    #[test]
    fn a_frame_split_by_would_block_is_delivered_and_acked_once_whole() {
        let mut r = rig();
        let bytes = from_server(vec![text(r#"{"id":"a"}"#)]);
        let (head, tail) = bytes.split_at(3);
        r.script().reads = VecDeque::from([Some(head.to_vec()), None, Some(tail.to_vec()), None]);
        assert!(r.turn().is_none());
        assert!(r.inbound.is_empty(), "half a frame is not a message");
        assert!(r.sent().is_empty());
        assert!(r.turn().is_none());
        let m = r.inbound.try_recv().expect("delivered once whole");
        assert_eq!(m.id(), Some("a"));
        let sent = r.sent();
        assert!(matches!(&sent[..], [WsMessage::Text(t)]
            if serde_json::from_str::<serde_json::Value>(t.as_str()).ok()
                == Some(serde_json::json!({"type":"ack","ack":"a"}))));
    }

    #[test]
    fn a_write_that_would_block_stops_taking_frames_until_the_flush_goes_through() {
        let mut r = rig();
        r.script().blocked = true;
        for t in ["1", "2", "3"] {
            r.outbound_tx.send(Outgoing::Frame(Frame::from(t))).unwrap();
        }
        assert!(r.turn().is_none());
        assert!(!r.d.m.takes_frames(), "congested");
        r.outbound_tx
            .send(Outgoing::Frame(Frame::from("4")))
            .unwrap();
        assert!(r.turn().is_none());
        assert_eq!(r.d.ctx.outbound.len(), 1, "no frame taken while congested");
        r.script().blocked = false;
        assert!(r.turn().is_none());
        assert!(r.turn().is_none());
        let sent: Vec<String> = r
            .sent()
            .into_iter()
            .filter_map(|m| m.into_text().ok().map(|t| t.as_str().to_owned()))
            .collect();
        assert_eq!(sent, ["1", "2", "3", "4"]);
        assert_eq!(r.d.ctx.shared.outbound.used(), 0);
    }

    #[test]
    fn a_close_from_the_server_is_answered_and_ends_the_connection() {
        let mut r = rig();
        let bytes = from_server(vec![WsMessage::Close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "bye".into(),
        }))]);
        r.script().reads = VecDeque::from([Some(bytes)]);
        match r.turn() {
            Some(Exit::ServerClosed { code: 4001, reason }) => assert_eq!(reason, "bye"),
            other => panic!("expected the server's close, got {other:?}"),
        }
        assert!(
            matches!(r.sent().last(), Some(WsMessage::Close(_))),
            "answered"
        );
    }

    #[test]
    fn the_application_close_sends_what_was_queued_then_1000_then_waits_for_the_reply() {
        let mut r = rig();
        r.outbound_tx
            .send(Outgoing::Frame(Frame::from("last words")))
            .unwrap();
        r.commands_tx.send(Command::Close).unwrap();
        assert!(r.turn().is_none(), "waits for the server's close");
        let sent = r.sent();
        assert!(matches!(&sent[0], WsMessage::Text(t) if t.as_str() == "last words"));
        assert!(matches!(&sent[1], WsMessage::Close(Some(f)) if u16::from(f.code) == 1000));
        let reply = from_server(vec![WsMessage::Close(None)]);
        r.script().reads = VecDeque::from([Some(reply)]);
        assert!(matches!(r.turn(), Some(Exit::Requested)));
    }

    #[test]
    fn an_oversized_message_is_dropped_and_the_connection_carries_on() {
        let mut r = rig();
        let big = "x".repeat(2 << 20); // over the 1 MiB default
        r.script().reads = VecDeque::from([Some(from_server(vec![text(&big), text("after")]))]);
        assert!(r.turn().is_none(), "the connection carries on");
        let m = r.inbound.try_recv().expect("the message behind it");
        assert_eq!(m.text(), Some("after"));
        assert_eq!(r.d.ctx.shared.counters.too_large.load(Relaxed), 1);
        assert!(r.sent().is_empty(), "no close: {:?}", r.sent());
    }

    #[test]
    fn leniently_a_text_message_that_is_not_utf8_is_skipped_and_the_connection_carries_on() {
        let mut r = rig_with(true);
        let mut wire = from_server(vec![text("a")]);
        wire.extend([0x81, 0x02, 0xff, 0xfe]); // one text frame, not UTF-8
        wire.extend([0x83, 0x01, b'?']); // a reserved data type
        wire.extend(from_server(vec![text("b")]));
        r.script().reads = VecDeque::from([Some(wire)]);
        assert!(r.turn().is_none(), "the connection carries on");
        let got: Vec<_> = r.inbound.try_iter().collect();
        let texts: Vec<_> = got.iter().filter_map(|m| m.text()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(r.d.ctx.shared.counters.malformed.load(Relaxed), 2);
        assert!(r.sent().is_empty(), "no close: {:?}", r.sent());
    }

    /// The close frame the client sent, if any.
    fn close_sent(r: &mut Rig) -> Option<u16> {
        r.sent().iter().find_map(|m| match m {
            WsMessage::Close(Some(f)) => Some(u16::from(f.code)),
            _ => None,
        })
    }

    #[test]
    fn strictly_bad_text_fails_with_1007_and_a_reserved_type_with_1002() {
        for (bad, code) in [
            (vec![0x81, 0x02, 0xff, 0xfe], 1007), // one text frame, not UTF-8
            (vec![0x83, 0x01, b'?'], 1002),       // a reserved data type
            (vec![0x8B, 0x00], 1002),             // a reserved control type
            (vec![0xC1, 0x01, b'x'], 1002),       // RSV1, nothing agreed
        ] {
            let mut r = rig();
            let mut wire = from_server(vec![text(r#"{"id":"a"}"#)]);
            wire.extend(&bad);
            wire.extend(from_server(vec![text(r#"{"id":"b"}"#)]));
            r.script().reads = VecDeque::from([Some(wire)]);
            match r.turn_to_exit() {
                Some(Exit::Lost(ConnectionError::Protocol(_))) => {}
                other => panic!("{bad:x?}: expected a protocol error, got {other:?}"),
            }
            let got: Vec<_> = r.inbound.try_iter().collect();
            let texts: Vec<_> = got.iter().filter_map(|m| m.text()).collect();
            assert_eq!(texts, [r#"{"id":"a"}"#], "{bad:x?}: only what came before");
            assert_eq!(close_sent(&mut r), Some(code), "{bad:x?}");
        }
    }

    #[test]
    fn frames_queued_before_a_violation_go_out_before_the_close() {
        let mut r = rig();
        r.outbound_tx
            .send(Outgoing::Frame(Frame::from("queued first")))
            .unwrap();
        r.script().reads = VecDeque::from([Some(vec![0x83, 0x01, b'?'])]);
        assert!(matches!(
            r.turn(),
            Some(Exit::Lost(ConnectionError::Protocol(_)))
        ));
        let sent = r.sent();
        let at = |want: &dyn Fn(&WsMessage) -> bool| sent.iter().position(want);
        let frame = at(&|m| matches!(m, WsMessage::Text(t) if t.as_str() == "queued first"));
        let close = at(&|m| matches!(m, WsMessage::Close(_)));
        assert!(
            frame.is_some() && frame < close,
            "the queued frame, then the close: {sent:?}"
        );
    }

    #[test]
    fn the_answer_to_a_message_before_a_violation_goes_out_before_the_close() {
        // Autobahn 3.2: a message, then a bad frame in the same read. The
        // application answers the message on its own thread, after the io
        // thread has read the bad frame: the close waits for it.
        let mut r = rig();
        let mut wire = from_server(vec![text(r#"{"id":"a"}"#)]);
        wire.extend([0xC1, 0x01, b'x']); // RSV1, nothing agreed
        r.script().reads = VecDeque::from([Some(wire)]);
        assert!(r.turn().is_none(), "the close waits for the application");
        assert!(close_sent(&mut r).is_none());
        let m = r.inbound.try_recv().expect("the message before it");
        r.inbox.flow().bytes.release(m.leave());
        r.outbound_tx
            .send(Outgoing::Frame(Frame::from("echo")))
            .unwrap();
        assert!(matches!(
            r.turn(),
            Some(Exit::Lost(ConnectionError::Protocol(_)))
        ));
        let sent = r.sent();
        let echo = sent
            .iter()
            .position(|m| matches!(m, WsMessage::Text(t) if t.as_str() == "echo"));
        let close = sent.iter().position(|m| matches!(m, WsMessage::Close(_)));
        assert!(
            echo.is_some() && echo < close,
            "the echo, then the close: {sent:?}"
        );
    }

    #[test]
    fn a_close_code_rfc_6455_forbids_is_reported_as_sent() {
        for code in [0u16, 999, 1004, 1005, 1015, 65535] {
            let mut r = rig();
            let mut wire = vec![0x88, 0x02];
            wire.extend(code.to_be_bytes());
            r.script().reads = VecDeque::from([Some(wire)]);
            match r.turn() {
                Some(Exit::Lost(ConnectionError::Protocol(why))) => {
                    assert!(why.contains(&format!("code {code}")), "{why}")
                }
                other => panic!("{code}: expected a protocol error, got {other:?}"),
            }
        }
        // An allowed code is the server's close, as it was sent.
        let mut r = rig();
        r.script().reads = VecDeque::from([Some(vec![0x88, 0x02, 0x0F, 0xA1])]);
        assert!(matches!(
            r.turn(),
            Some(Exit::ServerClosed { code: 4001, .. })
        ));
    }

    #[test]
    fn a_text_message_in_fragments_that_is_not_utf8_fails_the_connection() {
        let mut r = rig();
        // Cut where the bad bytes are, it would come out short.
        let mut wire = vec![0x01, 0x03, b'o', 0xff, b'k'];
        wire.extend([0x80, 0x01, b'!']);
        wire.extend(from_server(vec![text("after")]));
        r.script().reads = VecDeque::from([Some(wire)]);
        match r.turn_to_exit() {
            Some(Exit::Lost(ConnectionError::Protocol(why))) => {
                assert!(why.contains("UTF-8"), "{why}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert!(r.inbound.try_recv().is_err(), "nothing short delivered");
    }

    #[test]
    fn a_close_whose_reason_is_not_utf8_is_told_apart_from_a_bad_text_message() {
        let mut r = rig();
        let mut wire = from_server(vec![text("a")]);
        wire.extend([0x88, 0x04, 0x03, 0xE8, 0xff, 0xfe]); // close 1000, bad reason
        r.script().reads = VecDeque::from([Some(wire)]);
        match r.turn_to_exit() {
            Some(Exit::Lost(ConnectionError::Protocol(why))) => {
                assert!(why.contains("close frame"), "{why}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert_eq!(
            r.inbound
                .try_recv()
                .ok()
                .and_then(|m| m.text().map(str::to_owned))
                .as_deref(),
            Some("a")
        );
        assert_eq!(r.d.ctx.shared.counters.malformed.load(Relaxed), 0);
    }

    /// Two fragments within the 1 MiB frame limit, over the message limit
    /// together, then a message within it.
    fn grown_too_large() -> Vec<u8> {
        let mut wire = Vec::new();
        for (first, fin) in [(0x01u8, 0x00u8), (0x00, 0x80)] {
            wire.push(fin | first);
            wire.push(127);
            wire.extend(((600 << 10) as u64).to_be_bytes());
            wire.extend(std::iter::repeat_n(b'x', 600 << 10));
        }
        wire.extend(from_server(vec![WsMessage::text("after")]));
        wire
    }

    #[test]
    fn a_message_grown_too_large_over_fragments_is_dropped_and_counted() {
        let mut r = rig();
        // In pieces, as a socket gives them.
        let wire = grown_too_large();
        r.script().reads = wire.chunks(50_000).map(|c| Some(c.to_vec())).collect();
        for _ in 0..40 {
            assert!(r.turn().is_none());
        }
        let got = r.inbound.try_recv().expect("the message behind it");
        assert_eq!(got.text(), Some("after"));
        assert_eq!(r.d.ctx.shared.counters.too_large.load(Relaxed), 1);
        assert!(!r.sent().iter().any(|m| matches!(m, WsMessage::Close(_))));
    }

    #[test]
    fn with_on_too_large_close_a_message_grown_too_large_closes_with_1009() {
        let mut r = rig_built(|b| {
            b.limits(crate::Limits {
                on_too_large: crate::OverLimit::Close,
                ..Default::default()
            })
        });
        r.script().reads = VecDeque::from([Some(grown_too_large())]);
        assert!(matches!(
            r.turn(),
            Some(Exit::Lost(ConnectionError::TooLarge(_)))
        ));
        assert!(
            matches!(r.sent().last(), Some(WsMessage::Close(Some(f))) if u16::from(f.code) == 1009)
        );
    }
}
