//! A byte budget: what a queue holds in bytes, against its limit. The
//! inbound queue ([`crate::delivery::inbox::Inflow`]) and the outbound queue
//! each have one; the outbound queue counts its frames with a second one
//! (`Shared::outbound_frames`, one unit a frame), since its channel is
//! unbounded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::error::lock;

/// A byte budget: what a queue holds, against its limit. A queue holding
/// nothing takes a payload of any size, so one message larger than the
/// whole budget still passes and nothing deadlocks.
///
/// Lock-free on every path but a sender that has to wait: taking and giving
/// back are atomic, and the mutex and condvar are touched only when
/// someone waits for room (a syscall per release, and the io thread and the
/// application contending on one mutex, cost the echo's tail latency).
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    room: Condvar,
    /// Set once the client is closed: nobody waits for room any more.
    shut: AtomicBool,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            room: Condvar::new(),
            shut: AtomicBool::new(false),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// `true` when `n` bytes would fit now.
    pub(crate) fn would_fit(&self, n: usize) -> bool {
        let used = self.used.load(SeqCst);
        used == 0 || used.saturating_add(n) <= self.limit
    }

    /// Takes `n` bytes if they fit.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.load(SeqCst);
        if n == 0 {
            // Nothing to take (a message whose read's storage is already
            // held): a look, no write to the line the other side uses.
            return used <= self.limit || used == 0;
        }
        loop {
            if used != 0 && used.saturating_add(n) > self.limit {
                return false;
            }
            let next = used.saturating_add(n);
            match self.used.compare_exchange_weak(used, next, SeqCst, SeqCst) {
                Ok(_) => {
                    // A read first: the common case (below the peak) writes
                    // nothing to a line other threads read.
                    if next > self.peak.load(Relaxed) {
                        self.peak.fetch_max(next, Relaxed);
                    }
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Takes `n` bytes, waiting until `deadline` for them to fit.
    pub(crate) fn take_until(&self, n: usize, deadline: Instant) -> bool {
        if self.try_take(n) {
            return true;
        }
        let mut guard = lock(&self.lock);
        // Registered before looking again: a release after this sees us.
        self.waiters.fetch_add(1, SeqCst);
        let taken = loop {
            if self.try_take(n) {
                break true;
            }
            if self.shut.load(SeqCst) {
                break false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            guard = match self.room.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        };
        self.waiters.fetch_sub(1, SeqCst);
        taken
    }

    /// Ends every wait for room, now and later (the client is closed).
    pub(crate) fn shut(&self) {
        self.shut.store(true, SeqCst);
        let _guard = lock(&self.lock);
        self.room.notify_all();
    }

    /// Takes `n` bytes whether they fit or not.
    pub(crate) fn force(&self, n: usize) {
        let next = self.used.fetch_add(n, SeqCst).saturating_add(n);
        self.peak.fetch_max(next, Relaxed);
    }

    /// Gives `n` bytes back, and wakes whoever waits for room.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(SeqCst, SeqCst, |u| Some(u.saturating_sub(n)));
        if self.waiters.load(SeqCst) > 0 {
            let _guard = lock(&self.lock);
            self.room.notify_all();
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(SeqCst)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }
}
