//! The socket io thread: the only owner of the socket, a thin mio driver of
//! [`crate::machine::connection`] and [`crate::machine::frames`] (the glue
//! is in [`glue`]).
//!
//! It waits in epoll (mio) on the socket and a waker. Other threads hand it
//! work through channels and wake it; nothing wakes it on a timer, so an
//! idle connection sleeps and a queued frame reaches the wire at once. mio is
//! edge-triggered, so every wake-up reads until `WouldBlock`, which also
//! drains bytes OpenSSL has already decrypted and epoll cannot see.

mod glue;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::debug;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::connect::bind::MoveBack;
use crate::connect::stream::Socket;
use crate::connect::watch::{Uses, Watcher};
use crate::delivery::inbox::Intake;
use crate::error::ConnectionError;
use crate::frame::Frame;
use crate::machine::connection::{Command, Exit, Session, SessionSettings, Wait};
use crate::machine::frames::{Reader, Rules};
use crate::machine::writer::Writer;
use crate::threads::{Link, Setup};
use glue::{Ctx, Driver};

/// The frame reader's rules, from the configuration.
pub(crate) fn rules(cfg: &crate::config::Config) -> Rules {
    Rules {
        max_frame: cfg.limits.max_frame_size as u64,
        max_message: cfg.limits.max_message_size as u64,
        close_on_too_large: cfg.limits.on_too_large == crate::OverLimit::Close,
        lenient: cfg.lenient,
        // Whole reads in one piece, unless polling is configured: then
        // each pushed message is remembered for the polls' dedupe.
        share: cfg.frames_are_messages && !cfg.polls(),
    }
}

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// The routing netlink subscription ([`crate::connect::watch`]).
const NETWORK: Token = Token(2);
/// How long the io thread keeps looking for the next event without sleeping
/// after a turn that moved data (see the poll loop).
const SPIN: Duration = Duration::from_micros(50);

/// One open connection, before its thread runs it.
pub(crate) struct Connection {
    driver: Driver<crate::connect::stream::Stream>,
    /// The io thread's side of the wake protocol (see the poll loop).
    shared: Arc<crate::shared::Shared>,
    poll: Poll,
    commands: Receiver<Command>,
    /// Over TLS every wake-up reads: OpenSSL may hold bytes epoll cannot see.
    always_read: bool,
    /// The network's changes, and the link and address this connection
    /// goes out from.
    watching: Option<(Arc<Watcher>, Uses)>,
    /// Over a less preferred interface of `bind_interface`'s list: when to
    /// move back to a better one.
    move_back: Option<MoveBack>,
}

impl Connection {
    pub(crate) fn new(
        socket: Socket,
        hello: Vec<Frame>,
        s: &Setup,
        proven: Sender<()>,
        watching: Option<(Arc<Watcher>, Uses)>,
    ) -> Result<Self, ConnectionError> {
        let Socket {
            stream,
            leftover,
            deflate,
        } = socket;
        let tcp = stream.tcp();
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
        let mut move_back = None;
        if let Some((w, uses)) = &watching {
            poll.registry()
                .register(&mut SourceFd(&w.fd()), NETWORK, Interest::READABLE)?;
            move_back = MoveBack::new(
                &s.cfg.binding.interfaces,
                uses.interface(),
                s.cfg.reconnect.min_uptime,
            );
            if let Some(m) = &mut move_back {
                m.seen(&w.links(), Instant::now());
            }
        }
        let (commands_tx, commands) = crossbeam_channel::bounded(8);
        let always_read = matches!(stream, crate::connect::stream::Stream::Tls(_));
        let mut rd = Reader::new(rules(&s.cfg));
        rd.push(&leftover);
        let mut wr = Writer::new(crate::connect::transport::write_limit(&s.cfg));
        if let Some(p) = deflate {
            rd.inflate_with(p);
            wr.deflate_with(p);
        }
        Ok(Connection {
            driver: Driver::new(
                stream,
                (rd, wr),
                Session::new(SessionSettings::from(&*s.cfg), hello, s.ledger.resend()),
                Intake::new(s.inbox.clone()),
                Ctx {
                    shared: s.shared.clone(),
                    outbound: s.outbound.clone(),
                    ledger: s.ledger.clone(),
                    link: Link::new(waker, commands_tx),
                    proven,
                },
            ),
            poll,
            commands,
            always_read,
            shared: s.shared.clone(),
            watching,
            move_back,
        })
    }

    pub(crate) fn link(&self) -> Link {
        self.driver.link().clone()
    }

    pub(crate) fn run(mut self) -> Exit {
        let exit = self.serve();
        // Dropping the driver rings for what it queued and lets go of a
        // held message (the server still has it: not acked).
        drop(self.driver);
        debug!("connection ended: {exit:?}");
        exit
    }

    fn serve(&mut self) -> Exit {
        let d = &mut self.driver;
        if let Some(e) = d.act() {
            return e; // the hello frames could not be written
        }
        let mut events = Events::with_capacity(8);
        // On plain TCP, a wake-up with no socket event (edge-triggered)
        // means no new bytes: skip the read.
        let mut socket_event = true;
        loop {
            // This turn takes what was handed over so far.
            self.shared.io_take_call();
            if let Some(e) = d.turn(&self.commands, self.always_read || socket_event) {
                return e;
            }
            let now = Instant::now();
            let wait = match d.wait(now) {
                Ok(w) => w,
                Err(e) => return e, // the close handshake's deadline passed
            };

            let timeout = match wait {
                Wait::Again => Some(Duration::ZERO),
                Wait::Until(deadline) => {
                    let due = self.move_back.as_ref().and_then(MoveBack::due);
                    let deadline = match (deadline, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    deadline.map(|t| t.saturating_duration_since(now))
                }
            };
            // Right after I/O the next event (a reply, the next send) often
            // follows within microseconds: look without sleeping for a short
            // while first, which saves a thread wake-up on the round trip.
            // Bounded, and only after activity: an idle connection sleeps.
            // Each look yields the core: on a small board the thread that
            // produces the event (the application, a local server) may be
            // waiting for exactly this core, and a busy spin would delay it
            // (echo p99 ratio about 2 with `spin_loop`, 1.3 with a yield).
            let mut ready = false;
            let active = d.take_active();
            if timeout.is_none() && active {
                // While it looks, a sender only sets a flag (no eventfd
                // write on its path): checked here, and once more after.
                let shared = &self.shared;
                shared.io_look_start();
                let until = Instant::now() + SPIN;
                while !ready && Instant::now() < until {
                    if shared.io_take_call() {
                        events.clear();
                        ready = true;
                        break;
                    }
                    match self.poll.poll(&mut events, Some(Duration::ZERO)) {
                        Ok(()) => ready = !events.is_empty(),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            shared.io_look_end();
                            return Exit::Lost(ConnectionError::from(e));
                        }
                    }
                    std::thread::yield_now();
                }
                if shared.io_look_end() && !ready {
                    events.clear();
                    ready = true;
                }
            }
            if !ready {
                if let Err(e) = self.poll.poll(&mut events, timeout) {
                    if e.kind() != ErrorKind::Interrupted {
                        return Exit::Lost(ConnectionError::from(e));
                    }
                }
            }
            socket_event = false;
            let mut failed = false;
            if let Some((w, uses)) = &self.watching {
                if events.iter().any(|e| e.token() == NETWORK) {
                    w.read();
                    if let Some(reason) = w.lost(uses) {
                        log::info!("network change: {reason}; closing the connection");
                        return Exit::Lost(ConnectionError::NetworkChanged { reason });
                    }
                    if let Some(m) = &mut self.move_back {
                        m.seen(&w.links(), Instant::now());
                    }
                }
            }
            if let Some(reason) = self
                .move_back
                .as_ref()
                .and_then(|m| m.ready(Instant::now()))
            {
                // Once: the clean close is under way.
                self.move_back = None;
                log::info!("{reason}; closing this connection cleanly");
                if let Some(e) = d.leave(ConnectionError::NetworkChanged { reason }) {
                    return e;
                }
            }
            for e in events.iter().filter(|e| e.token() == SOCKET) {
                socket_event = true;
                if e.is_writable() {
                    d.writable(Instant::now());
                }
                failed |= e.is_error();
            }
            if failed {
                if let Some(e) = d.socket_error() {
                    return e;
                }
            }
        }
    }
}

/// What the connection machine takes of the configuration.
impl From<&Config> for SessionSettings {
    fn from(cfg: &Config) -> Self {
        SessionSettings {
            heartbeat: cfg.heartbeat.frame.clone(),
            replies: cfg.heartbeat.replies.clone(),
            heartbeat_timeout: cfg.heartbeat.server_timeout,
            close_timeout: cfg.timeouts.close,
            write_timeout: cfg.write_timeout,
            max_message_size: cfg.limits.max_message_size,
            protocol: cfg.protocol.clone(),
            frames_are_messages: cfg.frames_are_messages,
        }
    }
}
