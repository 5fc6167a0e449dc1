//! The reconnect supervisor: one thread per client. It connects, applies the
//! reconnect policy, starts the poller when the socket keeps failing and
//! stops it once a new socket has proved itself.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, Receiver, RecvTimeoutError, Sender};
use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::connect::transport;
use crate::connect::watch::{Uses, Watcher};
use crate::error::guarded;
use crate::error::{ConnectionError, Error, Result};
use crate::frame::Frame;
use crate::machine::backoff::Jitter;
use crate::machine::connection::{Command, Exit};
use crate::machine::hints;
use crate::machine::reconnect::{Decision, Ended, RetryPolicy};
use crate::message::{CloseReason, State};
use crate::protocol::HelloContext;
use crate::redact;
use crate::threads::poll_http::{self, Agent};
use crate::threads::{io, poller, Control, Setup};

pub(crate) fn spawn(setup: Setup) -> Result<JoinHandle<()>> {
    let agent = match setup.cfg.polls() {
        true => Some(poll_http::agent(&setup.cfg, &setup.shared)?),
        false => None,
    };
    crate::threads::spawn("heartline-supervisor", move || run(setup, agent)).map_err(|source| {
        Error::Thread {
            name: "heartline-supervisor",
            source,
        }
    })
}

/// The running poller thread, and the HTTP agent it alone uses.
struct Poller {
    handle: JoinHandle<()>,
    stop: Sender<()>,
    agent: Agent,
}

impl Poller {
    /// Tells the poller to stop, ends the request it has in flight (a hung
    /// endpoint, or a long poll the server holds, would otherwise keep the
    /// caller waiting up to `Polling::timeout`), and joins it. The agent is
    /// shut down for good: the next poller gets a new one.
    fn stop(self) {
        drop(self.stop);
        crate::threads::poll_http::shutdown(self.agent);
        if self.handle.join().is_err() {
            error!("the poller thread panicked");
        }
    }
}

fn run(s: Setup, agent: Option<Agent>) {
    let cfg = &s.cfg;
    let polls = agent.is_some();
    // The agent made (and so checked) at build serves the first poller.
    let mut spare = agent;
    let mut policy = RetryPolicy::new(
        cfg.reconnect.backoff.clone(),
        Jitter::from_entropy(),
        cfg.reconnect.min_uptime,
        cfg.reconnect.max_attempts,
        cfg.reconnect.terminal_close_codes.clone(),
        polls.then_some(cfg.polling.after),
        cfg.reconnect.restart_spread,
    );
    let mut poller: Option<Poller> = None;
    let mut reconnects = 0u64;
    let watcher = watch(cfg.watch_network);
    let mut jitter = Jitter::from_entropy();
    // Made at the first wss:// attempt: loading OpenSSL's roots costs a few
    // MB of memory that a ws:// client never needs.
    let mut tls = crate::connect::tls::TlsCache::default();
    s.shared.set_state(State::Connecting { attempt: 1 }, None);
    // Why the previous attempt failed (or its connection ended), for the
    // endpoint provider.
    let mut last_error: Option<ConnectionError> = None;
    // Why the client stops, and the error that made it (none when the
    // application asked): the Closed event carries both, because with
    // `max_attempts: 1` no Reconnecting event came before it to tell.
    let (reason, cause) = loop {
        if close_requested(&s.control) {
            break (CloseReason::Requested, None);
        }
        // The endpoint closure and the hello frames are the application's
        // code: a panic in either fails this attempt, like a refused
        // connection, instead of stopping the client.
        let ectx = crate::config::EndpointContext {
            last_error: last_error.take(),
            for_poll: false,
        };
        let endpoint = guarded("endpoint", || (cfg.endpoint)(&ectx));
        let shown = match &endpoint {
            Ok(e) => redact::url(&e.url),
            Err(_) => "(no endpoint)".to_owned(),
        };
        info!("connecting to {shown} (attempt {})", policy.attempt());
        let ctx = HelloContext {
            reconnects,
            cursor: s.inbox.cursor(),
        };
        let connected = endpoint
            .and_then(|e| transport::connect(&e, cfg, &mut tls, &s.shared.abort, &s.shared.wires))
            .and_then(|(socket, opened)| {
                let hello = match &cfg.hello {
                    Some(h) => guarded("hello", || h(&ctx))?,
                    None => Vec::new(),
                };
                let local = opened.local_addr;
                s.shared.set_opened(opened);
                Ok((socket, hello, local))
            });
        let (decision, error) = match connected {
            // close() ended the attempt: not a failure to tell about.
            Err(_) if s.shared.abort.requested() => break (CloseReason::Requested, None),
            Err(e) => {
                warn!("attempt {} to {shown} failed: {e}", policy.attempt());
                s.shared.counters.failed_attempts.fetch_add(1, Relaxed);
                (policy.connect_failed(), Some(e))
            }
            Ok((socket, hello, local)) => {
                policy.opened(Instant::now());
                s.shared.counters.connects.fetch_add(1, Relaxed);
                info!("open: {shown}");
                reconnects += 1;
                // The link and address this connection goes out from, so
                // that their loss ends it at once; from what the kernel
                // has said so far (an address added a moment ago included).
                let watching = watcher.as_ref().and_then(|w| {
                    w.read();
                    Some((w.clone(), w.uses(local?.ip())?))
                });
                let (ended, error) = match serve(&s, socket, hello, watching, &mut poller) {
                    // The application closed: no error to tell.
                    Exit::Requested => (Ended::Requested, None),
                    Exit::ServerClosed { code, reason } => (
                        Ended::ServerClose(code),
                        Some(ConnectionError::ServerClosed { code, reason }),
                    ),
                    Exit::Lost(e) => (Ended::Lost, Some(e)),
                };
                let decision = policy.ended(Instant::now(), ended);
                if matches!(decision, Decision::Retry { .. }) && policy.failures() > 0 {
                    s.shared.counters.failed_attempts.fetch_add(1, Relaxed);
                }
                (decision, error)
            }
        };
        // A 429 or 503 with Retry-After: not before the server asked.
        let decision = match (decision, &error) {
            (Decision::Retry { attempt, delay }, Some(error)) => Decision::Retry {
                attempt,
                delay: hints::hinted(
                    delay,
                    error.status(),
                    error.header("retry-after"),
                    crate::clock::unix_now(),
                    cfg.reconnect.max_retry_after,
                ),
            },
            (other, _) => other,
        };
        // The network changed under the connection: what is there now is
        // tried at once, not after the backoff.
        let decision = match (decision, &error) {
            (Decision::Retry { attempt, .. }, Some(ConnectionError::NetworkChanged { .. })) => {
                Decision::Retry {
                    attempt,
                    delay: soon(&mut jitter),
                }
            }
            (other, _) => other,
        };
        if error.is_some() {
            last_error.clone_from(&error);
        }
        match decision {
            Decision::Retry { attempt, delay } => {
                let msg = error.as_ref().map(ToString::to_string).unwrap_or_default();
                if polls && poller.is_none() && policy.degraded() {
                    warn!(
                        "{} WebSocket attempts failed; polling over HTTP while retrying",
                        policy.failures()
                    );
                    poller = start_poller(&s, spare.take());
                }
                if poller.is_some() {
                    let state = State::Polling { attempt, delay };
                    if matches!(s.shared.state(), State::Polling { .. }) {
                        // Still polling: one event per change of transport,
                        // not one per WebSocket attempt; stats() has this.
                        debug!(
                            "still polling; next WebSocket attempt {attempt} in {delay:?}: {msg}"
                        );
                        s.shared.note_state(state, error);
                    } else {
                        info!("polling; next WebSocket attempt {attempt} in {delay:?}: {msg}");
                        s.shared.set_state(state, error);
                    }
                } else {
                    info!("reconnecting in {delay:?} (attempt {attempt}): {msg}");
                    s.shared
                        .set_state(State::Reconnecting { attempt, delay }, error);
                }
                match wait_real_time(&s, delay, watcher.as_deref()) {
                    Waited::Close => break (CloseReason::Requested, None),
                    Waited::Elapsed => {}
                    Waited::Changed => {
                        let soon = soon(&mut jitter);
                        info!("the network changed (a link, address or default route appeared); next attempt in {soon:?}");
                        if wait_real_time(&s, soon, None) == Waited::Close {
                            break (CloseReason::Requested, None);
                        }
                    }
                }
                if poller.is_none() {
                    s.shared.set_state(State::Connecting { attempt }, None);
                }
            }
            Decision::StopRequested => break (CloseReason::Requested, None),
            Decision::GiveUp { attempts } => {
                let reason = CloseReason::GaveUp { attempts };
                match &error {
                    Some(e) => error!("{reason}; last error: {e}"),
                    None => error!("{reason}"),
                }
                break (reason, error);
            }
            Decision::StopTerminal(code) => {
                let reason = match &error {
                    Some(ConnectionError::ServerClosed { reason, .. }) => reason.clone(),
                    _ => String::new(),
                };
                warn!("server closed with terminal code {code}; not reconnecting");
                break (CloseReason::Terminal { code, reason }, error);
            }
        }
    };
    if let Some(p) = poller.take() {
        p.stop();
    }
    info!("closed: {reason}");
    s.shared.set_state(State::Closed(reason), cause);
    s.shared.close_events();
    // Returning drops the inbox: the batch receiver ends once the
    // application has taken what is queued.
}

/// The routing netlink subscription, when asked for and possible.
fn watch(on: bool) -> Option<Arc<Watcher>> {
    if !on {
        return None;
    }
    match Watcher::new() {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            warn!(
                "cannot watch the network for changes ({e}); a lost link is found by the heartbeat"
            );
            None
        }
    }
}

/// How long after a network change the next attempt goes: a random 50 to
/// 300 ms, so a fleet behind one switch does not arrive together.
fn soon(jitter: &mut Jitter) -> Duration {
    Duration::from_millis(50 + (jitter.next_f64() * 250.0) as u64)
}

/// The longest sleep of a wait between attempts: a suspend is noticed
/// within one (the boot-time clock counts it).
const SLICE: Duration = Duration::from_secs(5);

/// How a wait between attempts ended.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    Elapsed,
    /// A link, address or default route appeared.
    Changed,
    Close,
}

/// Waits `delay` of real time (the boot-time clock, which counts a
/// suspend: after a device sleeps through a backoff, the next attempt comes
/// at once, not a whole delay after waking), in slices so a suspend is
/// noticed within one, unless a close is requested or, with a `watcher`,
/// the network changes first.
fn wait_real_time(s: &Setup, delay: Duration, watcher: Option<&Watcher>) -> Waited {
    let start = crate::clock::boot_now();
    let left = || delay.saturating_sub(crate::clock::boot_now().saturating_sub(start));
    if let Some(w) = watcher {
        match Waiting::new(s, w) {
            Ok(mut waiting) => return waiting.wait(s, w, left),
            Err(e) => warn!("cannot wait on the network's changes ({e}); waiting the whole delay"),
        }
    }
    loop {
        let left = left();
        if left.is_zero() {
            return Waited::Elapsed;
        }
        match s.control.recv_timeout(left.min(SLICE)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Control::Close) | Err(RecvTimeoutError::Disconnected) => return Waited::Close,
        }
    }
}

/// A wait on the routing netlink socket and on `close()` (which wakes
/// [`crate::connect::dial::Abort`]'s waker).
struct Waiting<'a> {
    poll: Poll,
    abort: &'a crate::connect::dial::Abort,
}

const NETWORK: Token = Token(0);
const CLOSE: Token = Token(1);

impl<'a> Waiting<'a> {
    fn new(s: &'a Setup, w: &Watcher) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&w.fd()), NETWORK, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), CLOSE)?);
        s.shared.abort.wake_on_abort(Some(waker));
        Ok(Waiting {
            poll,
            abort: &s.shared.abort,
        })
    }

    fn wait(&mut self, s: &Setup, w: &Watcher, left: impl Fn() -> Duration) -> Waited {
        let mut events = Events::with_capacity(4);
        // What changed while the last attempt ran counts too.
        let mut changed = w.read();
        loop {
            if close_requested(&s.control) || self.abort.requested() {
                return Waited::Close;
            }
            if changed {
                return Waited::Changed;
            }
            let left = left();
            if left.is_zero() {
                return Waited::Elapsed;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(left.min(SLICE))) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    warn!("waiting on the network's changes failed ({e}); waiting the rest");
                    return match wait_real_time(s, left, None) {
                        Waited::Close => Waited::Close,
                        _ => Waited::Elapsed,
                    };
                }
            }
            if events.iter().any(|e| e.token() == NETWORK) {
                changed = w.read();
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.abort.wake_on_abort(None);
    }
}

fn start_poller(s: &Setup, spare: Option<Agent>) -> Option<Poller> {
    let agent = match spare.map_or_else(|| poll_http::agent(&s.cfg, &s.shared), Ok) {
        Ok(agent) => agent,
        Err(e) => {
            // The same configuration made one at build: not expected.
            error!("polling not started: {e}");
            return None;
        }
    };
    let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let settings = poller::PollSettings::from(&*s.cfg);
    let shared = s.shared.clone();
    let inbox = s.inbox.clone();
    let ours = agent.clone();
    match crate::threads::spawn("heartline-poller", move || {
        poller::run(&settings, &shared, &inbox, &ours, &stop_rx)
    }) {
        Ok(handle) => Some(Poller {
            handle,
            stop,
            agent,
        }),
        Err(e) => {
            error!("{e}");
            None
        }
    }
}

fn close_requested(control: &Receiver<Control>) -> bool {
    matches!(
        control.try_recv(),
        Ok(Control::Close) | Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

/// Runs one open connection until it ends: spawns the io and heartbeat
/// threads, stops the poller once the socket has proved itself (a frame
/// arrived, or it stayed up `Reconnect::min_uptime`), forwards a close request, and
/// joins both threads.
fn serve(
    s: &Setup,
    socket: crate::connect::stream::Socket,
    hello: Vec<Frame>,
    watching: Option<(Arc<Watcher>, Uses)>,
    poller: &mut Option<Poller>,
) -> Exit {
    let (proven_tx, proven_rx) = crossbeam_channel::bounded(1);
    let conn = match io::Connection::new(socket, hello, s, proven_tx, watching) {
        Ok(c) => c,
        Err(e) => return Exit::Lost(e),
    };
    let link = conn.link();
    s.shared.set_waker(Some(link.waker.clone()));
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    // Open goes out before the io thread can queue this connection's
    // first message: the one-loop receiver hands it out first.
    if poller.is_none() {
        s.shared.set_state(State::Open, None);
    }
    let io_handle = match crate::threads::spawn("heartline-io", move || {
        let exit = conn.run();
        let _ = done_tx.send(());
        exit
    }) {
        Ok(h) => h,
        Err(e) => {
            s.shared.set_waker(None);
            return Exit::Lost(ConnectionError::Thread {
                name: "heartline-io",
                reason: e.to_string(),
            });
        }
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let hb = {
        let link = link.clone();
        let hb = s.cfg.heartbeat.clone();
        let inflow = s.inbox.flow().clone();
        crate::threads::spawn("heartline-heartbeat", move || {
            crate::threads::heartbeat::run(&hb, &link, &inflow, &stop_rx)
        })
    };
    if let Err(e) = &hb {
        // Without a heartbeat a half-open link would go unnoticed: drop the
        // connection and let the policy retry.
        error!("{e}");
        link.command(Command::Dead);
    }

    let proof_due = link.opened() + s.cfg.reconnect.min_uptime;
    let mut proven = false;
    // Listening for the io thread's "a frame arrived"; off once heard, or
    // once the io thread has gone (a closed channel proves nothing).
    let mut listening = true;
    let mut close_sent = false;
    loop {
        // The uptime proof only matters while a poller waits to be stopped
        // (the reconnect policy measures uptime itself at the end); not
        // arming it otherwise spares an idle connection a wake-up.
        let timer = if proven || poller.is_none() {
            never()
        } else {
            crossbeam_channel::at(proof_due)
        };
        let proof = if proven || !listening {
            never()
        } else {
            proven_rx.clone()
        };
        select! {
            recv(done_rx) -> _ => break,
            recv(proof) -> r => match r {
                Ok(()) => proven = true,
                Err(_) => listening = false,
            },
            recv(timer) -> _ => proven = true,
            recv(s.control) -> c => {
                if !close_sent && matches!(c, Ok(Control::Close) | Err(_)) {
                    debug!("close requested; closing the socket");
                    link.command(Command::Close);
                    close_sent = true;
                }
                if c.is_err() {
                    // Every Client handle is gone; only wait for io now.
                    let _ = done_rx.recv();
                    break;
                }
            }
        }
        if proven {
            if let Some(p) = poller.take() {
                p.stop();
                info!("the WebSocket is back and proved itself; polling stopped");
                s.shared.set_state(State::Open, None);
            }
        }
    }
    drop(stop_tx);
    if let Ok(h) = hb {
        let _ = h.join();
    }
    s.shared.set_waker(None);
    match io_handle.join() {
        Ok(exit) if close_sent && !matches!(exit, Exit::Requested) => {
            debug!("connection ended while closing: {exit:?}");
            Exit::Requested
        }
        Ok(exit) => exit,
        Err(_) => Exit::Lost(ConnectionError::Protocol("the io thread panicked".into())),
    }
}
