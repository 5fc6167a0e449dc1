//! The socket io thread: the only owner of the socket.
//!
//! It waits in epoll (mio) on the socket and a waker. Other threads hand it
//! work through channels and wake it; nothing wakes it on a timer, so an
//! idle connection sleeps and a queued frame reaches the wire at once. mio is
//! edge-triggered, so every wake-up reads until `WouldBlock`, which also
//! drains bytes OpenSSL has already decrypted and epoll cannot see.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::{debug, trace, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message as WsMessage;

use crate::config::{AckMode, Config, Heartbeat};
use crate::error::Error;
use crate::inbox::{Inbox, Offer};
use crate::message::{Frame, Message, Meta, Via};
use crate::shared::Shared;
use crate::threads::supervisor::Setup;
use crate::transport::Socket;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Messages read per turn before writes get a chance.
const READ_BUDGET: usize = 256;
/// Frames written per turn before reads get a chance.
const WRITE_BUDGET: usize = 256;
/// How long the io thread keeps looking for the next event without sleeping
/// after a turn that moved data (see the poll loop).
const SPIN: Duration = Duration::from_micros(50);

/// Requests to the io thread from the heartbeat thread and the supervisor.
#[derive(Debug, Clone, Copy)]
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
    Lost(Error),
}

struct LinkInner {
    commands: Sender<Command>,
    opened: Instant,
    /// Nanoseconds after `opened` of the last inbound frame (or of the end
    /// of a reading pause).
    last_inbound_ns: AtomicU64,
}

/// What the other threads hold of one connection.
#[derive(Clone)]
pub(crate) struct Link {
    inner: Arc<LinkInner>,
    pub waker: Arc<Waker>,
}

impl Link {
    pub(crate) fn command(&self, c: Command) {
        // The channel holds a few commands; a full one already has work
        // queued that makes the io thread act.
        let _ = self.inner.commands.try_send(c);
        if let Err(e) = self.waker.wake() {
            warn!("cannot wake the io thread: {e}");
        }
    }

    pub(crate) fn opened(&self) -> Instant {
        self.inner.opened
    }

    pub(crate) fn last_inbound(&self) -> Instant {
        self.inner.opened + Duration::from_nanos(self.inner.last_inbound_ns.load(Relaxed))
    }

    fn touch(&self, now: Instant) {
        let ns = now.saturating_duration_since(self.inner.opened).as_nanos();
        self.inner
            .last_inbound_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Relaxed);
    }
}

pub(crate) struct Connection {
    socket: Socket,
    hello: Vec<Frame>,
    poll: Poll,
    link: Link,
    commands: Receiver<Command>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    outbound: Receiver<Frame>,
    inbox: Arc<Inbox>,
    /// Told once, at the first inbound frame (the socket proved itself).
    proven: Sender<()>,
}

impl Connection {
    pub(crate) fn new(
        socket: Socket,
        hello: Vec<Frame>,
        s: &Setup,
        proven: Sender<()>,
    ) -> Result<Self, Error> {
        let tcp = socket.get_ref().tcp();
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        tcp.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let fd = tcp.as_raw_fd();
        poll.registry().register(
            &mut SourceFd(&fd),
            SOCKET,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands_tx, commands) = crossbeam_channel::bounded(8);
        let link = Link {
            inner: Arc::new(LinkInner {
                commands: commands_tx,
                opened: Instant::now(),
                last_inbound_ns: AtomicU64::new(0),
            }),
            waker,
        };
        s.shared.reading_paused.store(false, SeqCst);
        Ok(Connection {
            socket,
            hello,
            poll,
            link,
            commands,
            cfg: s.cfg.clone(),
            shared: s.shared.clone(),
            outbound: s.outbound.clone(),
            inbox: s.inbox.clone(),
            proven,
        })
    }

    pub(crate) fn link(&self) -> Link {
        self.link.clone()
    }

    pub(crate) fn run(mut self) -> Exit {
        let exit = self.serve();
        self.shared.reading_paused.store(false, SeqCst);
        debug!("connection ended: {exit:?}");
        exit
    }

    fn serve(&mut self) -> Exit {
        let mut st = Turn::default();
        // On plain TCP, a wake-up with no socket event (edge-triggered) means
        // no new bytes: skip the read. Over TLS always read: OpenSSL may hold
        // bytes that epoll does not know about.
        let always_read = matches!(self.socket.get_ref(), crate::transport::Stream::Tls(_));
        let mut socket_event = true;
        for frame in std::mem::take(&mut self.hello) {
            if let Err(e) = self.write(frame) {
                return Exit::Lost(e);
            }
        }
        let mut events = Events::with_capacity(8);
        loop {
            // 1. Requests from the other threads.
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Beat) => {
                        if let Err(e) = self.beat(&mut st) {
                            return Exit::Lost(e);
                        }
                    }
                    Ok(Command::Dead) => {
                        return Exit::Lost(Error::HeartbeatTimeout {
                            timeout: self.cfg.server_timeout,
                        })
                    }
                    Ok(Command::Close) => {
                        if st.closing.is_none() {
                            if let Err(e) = self.start_close(&mut st) {
                                debug!("close handshake failed: {e}");
                                return Exit::Requested;
                            }
                        }
                    }
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            // 2. A message held back by a full inbound queue.
            let was_held = st.held.is_some();
            if let Some(m) = st.held.take() {
                st.held = match self.deliver(m, st.closing.is_some()) {
                    Ok(h) => h,
                    Err(e) => return Exit::Lost(e),
                };
                if st.held.is_none() {
                    debug!("inbound queue has room again; reading resumes");
                    self.shared.reading_paused.store(false, SeqCst);
                    self.link.touch(Instant::now());
                }
            }
            // 3. Read until WouldBlock (or the budget, or a full queue).
            // (A reader that was paused must read: the bytes it left in the
            // socket raise no new edge.)
            let read_now =
                always_read || socket_event || was_held || st.more_to_read || st.closing.is_some();
            st.more_to_read = false;
            if st.held.is_none() && read_now {
                if let Some(exit) = self.read(&mut st) {
                    return exit;
                }
            }
            // 4. Write queued frames and flush.
            if let Some(e) = self.write_queued(&mut st).err() {
                return if st.closing.is_some() {
                    Exit::Requested
                } else {
                    Exit::Lost(e)
                };
            }
            // 5. Sleep until the socket or the waker needs us.
            let retry_held = st.held.is_some() && !self.shared.reading_paused.load(SeqCst);
            let timeout = if st.more_to_read || retry_held {
                Some(Duration::ZERO)
            } else if let Some(deadline) = st.closing {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    debug!(
                        "no close frame from the server within {:?}",
                        self.cfg.close_timeout
                    );
                    return Exit::Requested;
                }
                Some(left)
            } else {
                None
            };
            // Right after I/O the next event (a reply, the next send) often
            // follows within microseconds: look without sleeping for a short
            // while first, which saves a thread wake-up on the round trip.
            // Bounded, and only after activity: an idle connection sleeps.
            let mut ready = false;
            if timeout.is_none() && st.active {
                let until = Instant::now() + SPIN;
                while !ready && Instant::now() < until {
                    match self.poll.poll(&mut events, Some(Duration::ZERO)) {
                        Ok(()) => ready = !events.is_empty(),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Exit::Lost(Error::Io(e)),
                    }
                    std::hint::spin_loop();
                }
            }
            st.active = false;
            if !ready {
                if let Err(e) = self.poll.poll(&mut events, timeout) {
                    if e.kind() != ErrorKind::Interrupted {
                        return Exit::Lost(Error::Io(e));
                    }
                }
            }
            socket_event = events.iter().any(|e| e.token() == SOCKET);
        }
    }

    fn read(&mut self, st: &mut Turn) -> Option<Exit> {
        for _ in 0..READ_BUDGET {
            let msg = match self.socket.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::Interrupted => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Some(self.closed_exit(st));
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    let what = format!("{e} (limit: {} bytes)", self.cfg.max_message_size);
                    warn!("inbound message too large, closing with 1009: {what}");
                    let _ = self.socket.close(Some(CloseFrame {
                        code: CloseCode::Size,
                        reason: "message too big".into(),
                    }));
                    return Some(Exit::Lost(Error::TooLarge(what)));
                }
                Err(tungstenite::Error::Io(e)) => return Some(self.lost(st, Error::Io(e))),
                Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => return Some(self.closed_exit(st)),
                Err(e) => {
                    warn!("protocol error from the server: {e}");
                    return Some(self.lost(st, Error::Protocol(e.to_string())));
                }
            };
            let now = Instant::now();
            st.active = true;
            self.link.touch(now);
            if !st.proven {
                st.proven = true;
                let _ = self.proven.try_send(());
            }
            let c = &self.shared.counters;
            c.frames_in.fetch_add(1, Relaxed);
            c.bytes_in.fetch_add(msg.len() as u64, Relaxed);
            let frame = match msg {
                WsMessage::Text(t) => Frame::Text(t.as_str().to_owned()),
                WsMessage::Binary(b) => Frame::Binary(b.to_vec()),
                WsMessage::Pong(_) => {
                    self.answered(st, now);
                    continue;
                }
                WsMessage::Ping(_) | WsMessage::Frame(_) => continue,
                WsMessage::Close(cf) => {
                    let (code, reason) = cf
                        .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                        .unwrap_or((1005, String::new()));
                    // tungstenite queued the reply; send it on the way out.
                    let _ = self.socket.flush();
                    if st.closing.is_some() {
                        return Some(Exit::Requested);
                    }
                    debug!("server closed with {code} {reason:?}");
                    return Some(Exit::ServerClosed { code, reason });
                }
            };
            if self.cfg.replies.iter().any(|r| r.matches(&frame))
                || self.cfg.protocol.is_heartbeat_reply(&frame)
            {
                trace!("heartbeat reply consumed");
                self.answered(st, now);
                continue;
            }
            trace!("received {frame:?}");
            let inspected = self.cfg.protocol.inspect(&frame);
            let meta = Meta {
                id: inspected.id.map(Arc::from),
                cursor: inspected.cursor,
                kinds: inspected.kinds,
                ack: inspected.ack,
            };
            let m = Message::with_meta(frame, Via::Ws, now, meta);
            match self.deliver(m, st.closing.is_some()) {
                Ok(None) => {}
                Ok(Some(held)) => {
                    st.held = Some(held);
                    return None;
                }
                Err(e) => return Some(Exit::Lost(e)),
            }
        }
        st.more_to_read = true;
        None
    }

    /// Offers a message to the inbox and, once it is queued (or known
    /// already), sends its ack in [`AckMode::Queued`]. Returns the message
    /// when the queue is full and reading must pause.
    fn deliver(&mut self, mut m: Message, closing: bool) -> Result<Option<Message>, Error> {
        let ack = if self.cfg.ack_mode == AckMode::Queued {
            m.take_ack()
        } else {
            None
        };
        let m = match self.inbox.offer(m, false) {
            Offer::Queued | Offer::Duplicate => {
                if let Some(a) = ack {
                    // Counted first: whoever sees the server holding the ack
                    // sees it counted.
                    self.shared.counters.acks.fetch_add(1, Relaxed);
                    self.write(a)?;
                }
                return Ok(None);
            }
            Offer::Closed => return Ok(None),
            Offer::Full(m) => m,
        };
        // Full with the Backpressure policy. Put the ack back with it.
        let mut m = m;
        if let Some(a) = ack {
            m.set_ack(a);
        }
        if closing {
            // Closing and nobody is taking messages: do not hold close() up.
            // Not acked, so the server still has it.
            self.shared.counters.dropped.fetch_add(1, Relaxed);
            warn!("inbound queue full while closing; message not taken (not acked)");
            return Ok(None);
        }
        if !self.shared.reading_paused.swap(true, SeqCst) {
            debug!("inbound queue full; reading paused");
        }
        // The consumer may have drained the queue before it could see the
        // flag: look again, or we could sleep for ever.
        if self.shared.below_resume_mark(self.inbox.queued()) {
            // Room after all: the loop retries at once instead of sleeping.
            self.shared.reading_paused.store(false, SeqCst);
        }
        Ok(Some(m))
    }

    fn answered(&self, st: &mut Turn, now: Instant) {
        if let Some(sent) = st.beat_sent.take() {
            self.shared.set_rtt(now.saturating_duration_since(sent));
        }
    }

    fn beat(&mut self, st: &mut Turn) -> Result<(), Error> {
        if st.closing.is_some() {
            return Ok(());
        }
        st.beat_sent = Some(Instant::now());
        self.shared.counters.heartbeats.fetch_add(1, Relaxed);
        match &self.cfg.heartbeat {
            Heartbeat::Ping => {
                let n = self.shared.counters.heartbeats.load(Relaxed);
                self.socket
                    .write(WsMessage::Ping(n.to_be_bytes().to_vec().into()))
                    .map_err(ws_error)?;
            }
            Heartbeat::Frame(f) => {
                let f = f.clone();
                self.write(f)?;
            }
        }
        self.flush(st)
    }

    fn start_close(&mut self, st: &mut Turn) -> Result<(), Error> {
        // Frames the application queued before close() still go out.
        self.write_queued(st)?;
        st.closing = Some(Instant::now() + self.cfg.close_timeout);
        debug!("sending close 1000");
        match self.socket.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })) {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                st.congested = true;
                Ok(())
            }
            Err(e) => Err(ws_error(e)),
        }
    }

    fn write(&mut self, frame: Frame) -> Result<(), Error> {
        let len = frame.len() as u64;
        let msg = match frame {
            Frame::Text(t) => WsMessage::Text(t.into()),
            Frame::Binary(b) => WsMessage::Binary(b.into()),
        };
        match self.socket.write(msg) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(ws_error(e)),
        }
        let c = &self.shared.counters;
        c.frames_out.fetch_add(1, Relaxed);
        c.bytes_out.fetch_add(len, Relaxed);
        Ok(())
    }

    fn write_queued(&mut self, st: &mut Turn) -> Result<(), Error> {
        if st.closing.is_none() && !st.congested {
            let mut taken = 0;
            let mut result = Ok(());
            for _ in 0..WRITE_BUDGET {
                match self.outbound.try_recv() {
                    Ok(f) => {
                        st.active = true;
                        taken += f.len();
                        trace!("sending {f:?}");
                        result = self.write(f);
                        if result.is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            // Out of the queue (on the wire or in tungstenite's buffer):
            // room for senders waiting on the byte budget.
            self.shared.outbound.release(taken);
            result?;
            if !self.outbound.is_empty() {
                st.more_to_read = true; // come back without sleeping
            }
        }
        self.flush(st)
    }

    fn flush(&mut self, st: &mut Turn) -> Result<(), Error> {
        match self.socket.flush() {
            Ok(()) => {
                st.congested = false;
                Ok(())
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                // The kernel buffer is full: stop taking frames until the
                // socket is writable again (edge-triggered WRITABLE wakes us).
                st.congested = true;
                Ok(())
            }
            Err(e) => Err(ws_error(e)),
        }
    }

    fn closed_exit(&self, st: &Turn) -> Exit {
        if st.closing.is_some() {
            Exit::Requested
        } else {
            Exit::Lost(Error::Io(std::io::Error::new(
                ErrorKind::ConnectionAborted,
                "connection closed by the server without a close frame",
            )))
        }
    }

    fn lost(&self, st: &Turn, e: Error) -> Exit {
        if st.closing.is_some() {
            Exit::Requested
        } else {
            Exit::Lost(e)
        }
    }
}

fn ws_error(e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Io(e) => Error::Io(e),
        tungstenite::Error::WriteBufferFull(_) => Error::Io(std::io::Error::other(
            "the server has stopped reading: more than twice outbound_bytes is waiting \
             to be sent; dropping the connection",
        )),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Error::Io(
            std::io::Error::new(ErrorKind::NotConnected, "connection closed"),
        ),
        e => Error::Protocol(e.to_string()),
    }
}

/// What the io loop carries from one turn to the next.
#[derive(Default)]
struct Turn {
    /// A message waiting for room in the inbound queue.
    held: Option<Message>,
    /// The read budget ran out with data possibly left.
    more_to_read: bool,
    /// The kernel send buffer is full.
    congested: bool,
    /// When the unanswered heartbeat was sent (for the round trip).
    beat_sent: Option<Instant>,
    /// Close frame sent; give up waiting for the reply at this moment.
    closing: Option<Instant>,
    /// A frame has arrived on this connection.
    proven: bool,
    /// This turn moved data (read or wrote a frame).
    active: bool,
}
