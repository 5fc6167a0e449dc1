//! State shared between the client handle and the threads: the current
//! state, counters, and the io thread's waker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::message::{Event, State};

/// A snapshot of the client's counters, from [`crate::Client::stats`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// The current state.
    pub state: State,
    /// Connections opened (handshake completed).
    pub connects: u64,
    /// Connection attempts that failed, including connections that dropped
    /// before `min_uptime`.
    pub failed_attempts: u64,
    /// The last error of the WebSocket side (a failed attempt, a lost
    /// connection), secrets redacted. Poll failures have their own slot,
    /// [`Stats::last_poll_error`], so one transport never hides the other's.
    pub last_error: Option<String>,
    /// The last failed poll of the HTTP fallback, secrets redacted. Set
    /// before [`Stats::poll_failures`] counts it.
    pub last_poll_error: Option<String>,
    /// The last heartbeat round trip (heartbeat sent to Pong or reply rule
    /// match).
    pub rtt: Option<Duration>,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Frames received (data, ping, pong, close).
    pub frames_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Data frames sent (hello, application, heartbeat frames).
    pub frames_out: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Frames waiting in the outbound queue.
    pub outbound_queued: usize,
    /// Messages waiting in the inbound queue.
    pub inbound_queued: usize,
    /// Inbound messages dropped: by [`crate::Overflow::DropOldest`], or
    /// arriving after `close()` with the queue full. Zero with the default
    /// policy while open.
    pub dropped: u64,
    /// State changes dropped because nobody read [`crate::Events`].
    pub events_dropped: u64,
    /// Messages not delivered because they were seen before.
    pub duplicates: u64,
    /// Acknowledgements sent.
    pub acks: u64,
    /// Successful polls.
    pub polls: u64,
    /// Failed polls (connect, timeout, status, body, success rule).
    pub poll_failures: u64,
    /// Poll items skipped as malformed.
    pub malformed: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub connects: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub heartbeats: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped: AtomicU64,
    pub events_dropped: AtomicU64,
    pub duplicates: AtomicU64,
    pub acks: AtomicU64,
    pub polls: AtomicU64,
    pub poll_failures: AtomicU64,
    pub malformed: AtomicU64,
    /// Microseconds; `u64::MAX` while unmeasured.
    pub rtt_us: AtomicU64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    last_error: Mutex<Option<String>>,
    last_poll_error: Mutex<Option<String>>,
    pub counters: Counters,
    /// The io thread has stopped reading because the inbound queue is full.
    pub reading_paused: AtomicBool,
    closed: AtomicBool,
    waker: Mutex<Option<Arc<mio::Waker>>>,
    /// Taken by the supervisor when it stops, which ends [`crate::Events`].
    events_tx: Mutex<Option<Sender<Event>>>,
    events_rx: Receiver<Event>,
    pub inbound_capacity: usize,
    /// Signalled when the consumer takes messages (for the poller).
    room_tx: Sender<()>,
    room_rx: Receiver<()>,
}

/// Locks a mutex whose data stays valid even if a holder panicked (all our
/// critical sections are single assignments).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn new(
        event_capacity: usize,
        inbound_capacity: usize,
    ) -> (Arc<Shared>, Receiver<Event>) {
        let (events_tx, events_rx) = crossbeam_channel::bounded(event_capacity);
        let counters = Counters::default();
        let (room_tx, room_rx) = crossbeam_channel::bounded(1);
        counters.rtt_us.store(u64::MAX, Relaxed);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Connecting { attempt: 1 }),
            last_error: Mutex::new(None),
            last_poll_error: Mutex::new(None),
            counters,
            reading_paused: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waker: Mutex::new(None),
            events_tx: Mutex::new(Some(events_tx)),
            events_rx: events_rx.clone(),
            inbound_capacity,
            room_tx,
            room_rx,
        });
        (shared, events_rx)
    }

    pub(crate) fn state(&self) -> State {
        lock(&self.state).clone()
    }

    /// `true` once the client has stopped for good (cheap: no lock).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Records a state change and publishes it. When nobody reads the event
    /// receiver, the oldest event is dropped (and counted) so the threads
    /// never block on it.
    pub(crate) fn set_state(&self, state: State, error: Option<String>) {
        if state.is_closed() {
            self.closed.store(true, SeqCst);
        }
        *lock(&self.state) = state.clone();
        if let Some(e) = &error {
            *lock(&self.last_error) = Some(e.clone());
        }
        let mut event = Event { state, error };
        let tx = lock(&self.events_tx);
        let Some(tx) = tx.as_ref() else { return };
        loop {
            match tx.try_send(event) {
                Ok(()) => break,
                Err(TrySendError::Full(e)) => {
                    event = e;
                    if self.events_rx.try_recv().is_ok() {
                        self.counters.events_dropped.fetch_add(1, Relaxed);
                    }
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }

    /// Ends the event stream (after the final `Closed` event).
    pub(crate) fn close_events(&self) {
        lock(&self.events_tx).take();
    }

    pub(crate) fn set_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    /// Records a failed poll: the error first, then the count, so whoever
    /// sees the count sees this error (or a later one).
    pub(crate) fn poll_failed(&self, error: String) {
        *lock(&self.last_poll_error) = Some(error);
        self.counters.poll_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX - 1);
        self.counters.rtt_us.store(us, Relaxed);
    }

    pub(crate) fn set_waker(&self, waker: Option<Arc<mio::Waker>>) {
        *lock(&self.waker) = waker;
    }

    /// Wakes the io thread, if a connection is open.
    pub(crate) fn wake_io(&self) {
        if let Some(w) = lock(&self.waker).as_ref() {
            if let Err(e) = w.wake() {
                log::warn!(target: "heartline::threads::io", "cannot wake the io thread: {e}");
            }
        }
    }

    /// Called by the consumer after taking messages: resumes a paused io
    /// thread once the queue is at most half full (hysteresis, so a slow
    /// consumer does not cause a wake-up per message).
    pub(crate) fn taken(&self, queued: usize) {
        if self.reading_paused.load(SeqCst) && queued <= self.inbound_capacity / 2 {
            self.wake_io();
        }
        let _ = self.room_tx.try_send(());
    }

    pub(crate) fn room_signal(&self) -> &Receiver<()> {
        &self.room_rx
    }

    pub(crate) fn snapshot(&self, outbound_queued: usize, inbound_queued: usize) -> Stats {
        let c = &self.counters;
        let rtt = c.rtt_us.load(Relaxed);
        Stats {
            state: self.state(),
            connects: c.connects.load(Relaxed),
            failed_attempts: c.failed_attempts.load(Relaxed),
            last_error: lock(&self.last_error).clone(),
            last_poll_error: lock(&self.last_poll_error).clone(),
            rtt: (rtt != u64::MAX).then(|| Duration::from_micros(rtt)),
            heartbeats: c.heartbeats.load(Relaxed),
            frames_in: c.frames_in.load(Relaxed),
            bytes_in: c.bytes_in.load(Relaxed),
            frames_out: c.frames_out.load(Relaxed),
            bytes_out: c.bytes_out.load(Relaxed),
            outbound_queued,
            inbound_queued,
            dropped: c.dropped.load(Relaxed),
            events_dropped: c.events_dropped.load(Relaxed),
            duplicates: c.duplicates.load(Relaxed),
            acks: c.acks.load(Relaxed),
            polls: c.polls.load(Relaxed),
            poll_failures: c.poll_failures.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
        }
    }
}
