//! One module per OS thread. The module path is the log target, so
//! `RUST_LOG=heartline::threads::io=trace` follows just the socket.
//!
//! - `heartline-supervisor` (one per client): connects, runs the reconnect
//!   policy, spawns and joins the per-connection threads.
//! - `heartline-io` (one per open connection): sole owner of the socket;
//!   waits in epoll on the socket and a waker.
//! - `heartline-heartbeat` (one per open connection): sleeps until the next
//!   heartbeat or timeout deadline; tells the io thread to beat or to drop a
//!   dead link.
//! - `heartline-poller` (only while degraded): polls the HTTP fallback.
//! - `heartline-state` (only with `persistence.dir`): writes the ledger's
//!   state file.
//!
//! (A name lookup runs on a short-lived `heartline-resolve` thread of
//! [`crate::connect::dial`], so that a resolver that never answers holds
//! up neither an attempt nor `close()`.)

pub(crate) mod heartbeat;
pub(crate) mod io;
pub(crate) mod poll_http;
pub(crate) mod poller;
pub(crate) mod state;
pub(crate) mod supervisor;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::Config;
use crate::delivery::inbox::Inbox;
use crate::durable::{Ledger, Outgoing};
use crate::shared::Shared;

// What crosses between threads, named in one place:
//
// - `Control`   client handle → supervisor (close), on a bounded channel;
//               dropping every handle disconnects it, which also closes.
// - `Setup`     what the supervisor holds and hands on: the config, the
//               shared state (state, counters, byte budgets, the io waker),
//               the outbound queue (`Outgoing`), the inbox (the
//               producers' door of delivery) and the ledger (finished
//               messages and their acks, kept frames).
// - the ledger's writer, `heartline-state` (only with `persistence.dir`): started
//   and stopped by the client handle, woken by the ledger on a change.
// - `Command`   heartbeat ticker / supervisor → io (beat, dead, close), with
//               `Link`: the io thread's waker, and the time of the last
//               inbound frame the ticker reads.
// - `Exit`      io → supervisor: how a connection ended (its join value).
// - the "proven" signal io → supervisor (first frame), the stop channels
//   supervisor → ticker and poller (dropping the sender stops them), and the
//   room token receiver → poller (`Inflow::wait_for_room`).
use crate::machine::connection::Command;

/// Requests from the [`crate::Client`] handle.
pub(crate) enum Control {
    Close,
}

/// What the supervisor holds and hands to the threads it starts.
pub(crate) struct Setup {
    pub cfg: Arc<Config>,
    pub shared: Arc<Shared>,
    pub control: Receiver<Control>,
    pub outbound: Receiver<Outgoing>,
    pub inbox: Arc<Inbox>,
    /// Finished messages and kept outbound frames.
    pub ledger: Arc<Ledger>,
}

/// Spawns a named thread.
pub(crate) fn spawn<F, T>(name: &'static str, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        // Small stacks: these threads hold little; devices have little RAM.
        .stack_size(256 * 1024)
        .spawn(f)
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
    pub waker: Arc<mio::Waker>,
}

impl Link {
    pub(crate) fn new(waker: Arc<mio::Waker>, commands: Sender<Command>) -> Link {
        Link {
            inner: Arc::new(LinkInner {
                commands,
                opened: Instant::now(),
                last_inbound_ns: AtomicU64::new(0),
            }),
            waker,
        }
    }

    pub(crate) fn command(&self, c: Command) {
        // The channel holds a few commands; a full one already has work
        // queued that makes the io thread act.
        let _ = self.inner.commands.try_send(c);
        if let Err(e) = self.waker.wake() {
            log::warn!(target: "heartline::threads::io", "cannot wake the io thread: {e}");
        }
    }

    pub(crate) fn opened(&self) -> Instant {
        self.inner.opened
    }

    pub(crate) fn last_inbound(&self) -> Instant {
        self.inner.opened + Duration::from_nanos(self.inner.last_inbound_ns.load(Relaxed))
    }

    pub(crate) fn touch(&self, now: Instant) {
        let ns = now.saturating_duration_since(self.inner.opened).as_nanos();
        self.inner
            .last_inbound_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Relaxed);
    }
}
