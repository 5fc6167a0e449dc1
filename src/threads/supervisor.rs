//! The reconnect supervisor: one thread per client.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use log::{debug, error, info, warn};

use crate::config::{Config, HelloContext};
use crate::error::{Error, Result};
use crate::machine::backoff::Jitter;
use crate::machine::reconnect::{Decision, Ended, Reconnect};
use crate::message::{CloseReason, Frame, Message, State};
use crate::redact;
use crate::shared::Shared;
use crate::threads::io::{self, Exit};
use crate::transport;

/// Requests from the [`crate::Client`] handle.
pub(crate) enum Control {
    Close,
}

pub(crate) struct Setup {
    pub cfg: Arc<Config>,
    pub shared: Arc<Shared>,
    pub control: Receiver<Control>,
    pub outbound: Receiver<Frame>,
    pub inbound_tx: Sender<Message>,
    pub inbound_rx: Receiver<Message>,
}

pub(crate) fn spawn(setup: Setup) -> Result<JoinHandle<()>> {
    let tls = transport::tls_connector(&setup.cfg)?;
    crate::threads::spawn("heartline-supervisor", move || run(setup, tls))
}

fn run(s: Setup, tls: native_tls::TlsConnector) {
    let cfg = &s.cfg;
    let mut policy = Reconnect::new(
        cfg.backoff.clone(),
        Jitter::from_entropy(),
        cfg.min_uptime,
        cfg.max_attempts,
        cfg.terminal_codes.clone(),
    );
    let mut reconnects = 0u64;
    s.shared.set_state(State::Connecting { attempt: 1 }, None);
    let reason = loop {
        if close_requested(&s.control) {
            break CloseReason::Requested;
        }
        let endpoint = (cfg.endpoint)();
        info!(
            "connecting to {} (attempt {})",
            redact::url(&endpoint.url),
            policy.attempt()
        );
        let (decision, error) = match transport::connect(&endpoint, cfg, &tls) {
            Err(e) => {
                warn!(
                    "attempt {} to {} failed: {e}",
                    policy.attempt(),
                    redact::url(&endpoint.url)
                );
                s.shared.counters.failed_attempts.fetch_add(1, Relaxed);
                (policy.connect_failed(), e)
            }
            Ok(socket) => {
                let opened = Instant::now();
                policy.opened(opened);
                s.shared.counters.connects.fetch_add(1, Relaxed);
                info!("open: {}", redact::url(&endpoint.url));
                let hello = cfg
                    .hello
                    .as_ref()
                    .map(|h| h(&HelloContext { reconnects }))
                    .unwrap_or_default();
                reconnects += 1;
                let exit = serve(&s, socket, hello);
                let ended = match &exit {
                    Exit::Requested => Ended::Requested,
                    Exit::ServerClosed { code, .. } => Ended::ServerClose(*code),
                    Exit::Lost(_) => Ended::Lost,
                };
                let decision = policy.ended(Instant::now(), ended);
                if matches!(decision, Decision::Retry { .. }) && policy.failures() > 0 {
                    s.shared.counters.failed_attempts.fetch_add(1, Relaxed);
                }
                let error = match exit {
                    Exit::Requested => Error::Closed,
                    Exit::ServerClosed { code, reason } => Error::ServerClosed { code, reason },
                    Exit::Lost(e) => e,
                };
                (decision, error)
            }
        };
        match decision {
            Decision::Retry { attempt, delay } => {
                let msg = error.to_string();
                info!("reconnecting in {delay:?} (attempt {attempt}): {msg}");
                s.shared
                    .set_state(State::Reconnecting { attempt, delay }, Some(msg));
                match s.control.recv_timeout(delay) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(Control::Close) | Err(RecvTimeoutError::Disconnected) => {
                        break CloseReason::Requested
                    }
                }
                s.shared.set_state(State::Connecting { attempt }, None);
            }
            Decision::StopRequested => break CloseReason::Requested,
            Decision::GiveUp { attempts } => {
                error!("giving up after {attempts} failed attempts; last error: {error}");
                s.shared.set_error(error.to_string());
                break CloseReason::GaveUp { attempts };
            }
            Decision::StopTerminal(code) => {
                let reason = match error {
                    Error::ServerClosed { reason, .. } => reason,
                    _ => String::new(),
                };
                warn!("server closed with terminal code {code}; not reconnecting");
                break CloseReason::Terminal { code, reason };
            }
        }
    };
    info!("closed: {reason}");
    s.shared.set_state(State::Closed(reason), None);
    s.shared.close_events();
    // Returning drops the inbound sender: the batch receiver ends once the
    // application has taken what is queued.
}

fn close_requested(control: &Receiver<Control>) -> bool {
    matches!(
        control.try_recv(),
        Ok(Control::Close) | Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

/// Runs one open connection until it ends: spawns the io and heartbeat
/// threads, forwards a close request, joins both.
fn serve(s: &Setup, socket: transport::Socket, hello: Vec<Frame>) -> Exit {
    let conn = match io::Connection::new(socket, hello, s) {
        Ok(c) => c,
        Err(e) => return Exit::Lost(e),
    };
    let link = conn.link();
    s.shared.set_waker(Some(link.waker.clone()));
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let io_handle = match crate::threads::spawn("heartline-io", move || {
        let exit = conn.run();
        let _ = done_tx.send(());
        exit
    }) {
        Ok(h) => h,
        Err(e) => {
            s.shared.set_waker(None);
            return Exit::Lost(e);
        }
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let hb = {
        let link = link.clone();
        let cfg = s.cfg.clone();
        let shared = s.shared.clone();
        crate::threads::spawn("heartline-heartbeat", move || {
            crate::threads::heartbeat::run(&cfg, &link, &shared, &stop_rx)
        })
    };
    if let Err(e) = &hb {
        // Without a heartbeat a half-open link would go unnoticed: drop the
        // connection and let the policy retry.
        error!("{e}");
        link.command(io::Command::Dead);
    }
    s.shared.set_state(State::Open, None);
    let mut close_sent = false;
    loop {
        select! {
            recv(done_rx) -> _ => break,
            recv(s.control) -> c => {
                if !close_sent && matches!(c, Ok(Control::Close) | Err(_)) {
                    debug!("close requested; closing the socket");
                    link.command(io::Command::Close);
                    close_sent = true;
                }
                if c.is_err() {
                    // Every Client handle is gone; only wait for io now.
                    let _ = done_rx.recv();
                    break;
                }
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
        Err(_) => Exit::Lost(Error::Protocol("the io thread panicked".into())),
    }
}
