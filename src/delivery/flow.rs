//! Flow control between the producers (the io thread, the poller) and the
//! application: byte budgets, and the inbound queue's one wake protocol.
//!
//! The inbound side, [`Inflow`], in one place:
//!
//! - **Bounds.** The queue holds at most `capacity` messages and `bytes`
//!   (a [`Budget`]); the inbox refuses (backpressure) or drops (the
//!   overflow policy) past them.
//! - **The paused reader.** With backpressure the io thread stops reading
//!   ([`Inflow::pause`]); the consumer resumes it once the queue is at most
//!   half full in messages and in bytes ([`Inflow::taken`] answers `true`,
//!   and the caller wakes the io thread), so a slow consumer does not cause
//!   a wake-up per message. The heartbeat thread reads
//!   [`Inflow::is_paused`]: silence proves nothing while reading is paused.
//! - **The doorbell.** A consumer about to wait says how many queued
//!   messages would finish its batch ([`Inflow::want`]); a producer rings
//!   once the queue holds that many ([`Inflow::arrived`]), or when no more
//!   can come ([`Inflow::ring`]): one wake-up per batch, not per message.
//!   `want` and the producer's check are ordered by `SeqCst` fences, so a
//!   ring is never lost between a consumer's last look and its wait.
//! - **Room for the poller.** Every take signals [`Inflow::room_signal`],
//!   which a poller waiting for room in the queue waits on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

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

/// The inbound queue's flow control (see the module documentation).
pub(crate) struct Inflow {
    /// The queue's bound in messages.
    pub capacity: usize,
    /// Bytes held for the application (queue and batch being assembled,
    /// and acks not yet written).
    pub bytes: Budget,
    /// The io thread has stopped reading because the queue is full.
    reading_paused: AtomicBool,
    /// Signalled when the consumer takes messages (for the poller).
    room_tx: Sender<()>,
    room_rx: Receiver<()>,
    /// The consumer's doorbell.
    bell_tx: Sender<()>,
    bell_rx: Receiver<()>,
    /// How many queued messages the waiting consumer asked for.
    want: AtomicUsize,
}

impl Inflow {
    pub(crate) fn new(capacity: usize, bytes: usize) -> Self {
        let (room_tx, room_rx) = crossbeam_channel::bounded(1);
        let (bell_tx, bell_rx) = crossbeam_channel::bounded(1);
        Inflow {
            capacity,
            bytes: Budget::new(bytes),
            reading_paused: AtomicBool::new(false),
            room_tx,
            room_rx,
            bell_tx,
            bell_rx,
            want: AtomicUsize::new(1),
        }
    }

    /// The io thread stops (`true`) or resumes (`false`) reading.
    pub(crate) fn pause(&self, paused: bool) {
        self.reading_paused.store(paused, SeqCst);
    }

    /// Reading is paused for a full queue.
    pub(crate) fn is_paused(&self) -> bool {
        self.reading_paused.load(SeqCst)
    }

    /// `true` when a paused reader may resume: the queue is at most half
    /// full in messages and in bytes (hysteresis, so a slow consumer does
    /// not cause a wake-up per message).
    pub(crate) fn below_resume_mark(&self, queued: usize) -> bool {
        queued <= self.capacity / 2 && self.bytes.used() <= self.bytes.limit() / 2
    }

    /// The consumer took messages or handed out a batch (`queued` are left
    /// in the queue): signals room to a poller, and answers `true` when a
    /// paused reader should be woken (below the resume mark).
    pub(crate) fn taken(&self, queued: usize) -> bool {
        let _ = self.room_tx.try_send(());
        self.is_paused() && self.below_resume_mark(queued)
    }

    /// Signalled after every take, for a poller waiting for room.
    pub(crate) fn room_signal(&self) -> &Receiver<()> {
        &self.room_rx
    }

    /// A producer queued a message; `queued` is now in the queue. Rings
    /// the consumer's doorbell when that is what it waits for.
    pub(crate) fn arrived(&self, queued: usize) {
        std::sync::atomic::fence(SeqCst);
        if queued >= self.want.load(SeqCst) {
            self.ring();
        }
    }

    /// Wakes a consumer waiting on the doorbell (kept until one waits).
    pub(crate) fn ring(&self) {
        let _ = self.bell_tx.try_send(());
    }

    /// The consumer is about to wait for `n` more queued messages.
    pub(crate) fn want(&self, n: usize) {
        self.want.store(n.max(1), SeqCst);
        std::sync::atomic::fence(SeqCst);
    }

    /// How many queued messages the consumer last said it waits for (a
    /// hint: [`Inflow::arrived`] is the check that counts).
    pub(crate) fn wanted(&self) -> usize {
        self.want.load(Relaxed)
    }

    /// What a waiting consumer sleeps on.
    pub(crate) fn doorbell(&self) -> &Receiver<()> {
        &self.bell_rx
    }
}
