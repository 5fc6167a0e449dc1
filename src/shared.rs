//! State shared between the client handle and the threads: the current
//! state, counters, and the io thread's waker.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::delivery::budget::Budget;
use crate::error::lock;
use crate::error::ConnectionError;
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
    /// before `Reconnect::min_uptime`.
    pub failed_attempts: u64,
    /// The last error of the WebSocket side (a failed attempt, a lost
    /// connection), secrets redacted. Poll failures have their own slot,
    /// [`Stats::last_poll_error`], so one transport never hides the other's.
    pub last_error: Option<ConnectionError>,
    /// The last failed poll of the HTTP fallback, secrets redacted. Set
    /// before [`Stats::poll_failures`] counts it.
    pub last_poll_error: Option<ConnectionError>,
    /// The subprotocol the server chose for the last connection opened
    /// (see [`crate::ClientBuilder::subprotocols`]).
    pub subprotocol: Option<String>,
    /// The interface the last connection opened goes out on (see
    /// [`crate::Opened::interface`]).
    pub interface: Option<String>,
    /// The local address of the last connection opened.
    pub local_addr: Option<std::net::SocketAddr>,
    /// How long each step of opening the last connection took.
    pub phases: Option<crate::message::Phases>,
    /// The bytes each uplink carried since the client started, in the
    /// order first used.
    pub uplinks: Vec<crate::message::Uplink>,
    /// The last heartbeat round trip (heartbeat sent to Pong or reply rule
    /// match).
    pub rtt: Option<Duration>,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Frames received (data, ping, pong, close). Added at the end of each
    /// read turn, so for a moment it can trail a message already handed out.
    pub frames_in: u64,
    /// Payload bytes received (added with `frames_in`).
    pub bytes_in: u64,
    /// Data frames sent (hello, application, heartbeat frames).
    pub frames_out: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Frames waiting in the outbound queue.
    pub outbound_queued: usize,
    /// Payload bytes waiting in the outbound queue (bounded by
    /// `Limits::outbound_bytes`).
    pub outbound_bytes: usize,
    /// Messages waiting in the inbound queue.
    pub inbound_queued: usize,
    /// Payload bytes held for the application: the inbound queue, the
    /// batch being assembled, and the acks of finished messages not yet
    /// written (each its length plus 32; bounded by `Limits::inbound_bytes`, and
    /// reading pauses while they fill it). The small messages of one read
    /// share their storage (see [`crate::Message`]): it counts whole while
    /// any of them is queued or being assembled.
    pub inbound_bytes: usize,
    /// The most inbound bytes ever held at once.
    pub inbound_bytes_peak: usize,
    /// Inbound messages dropped: by [`crate::Overflow::DropOldest`], or
    /// arriving after `close()` with the queue full. Zero with the default
    /// policy while open.
    pub dropped: u64,
    /// State changes dropped because nobody read [`crate::Events`].
    pub events_dropped: u64,
    /// Messages not delivered because they were seen before.
    pub duplicates: u64,
    /// Acknowledgements sent (counted as the io thread writes them).
    pub acks: u64,
    /// Successful polls.
    pub polls: u64,
    /// Failed polls (connect, timeout, status, body, success rule).
    pub poll_failures: u64,
    /// Messages skipped, each logged as a warning: poll items that were
    /// malformed, messages a `Protocol` method panicked on, and, with
    /// `lenient(true)`, text messages that were not valid UTF-8 and frames
    /// of a type RFC 6455 reserves for extensions. The connection carries
    /// on.
    pub malformed: u64,
    /// Messages dropped because they were larger than
    /// `Limits::max_frame_size` or `Limits::max_message_size` (announced,
    /// or grown through fragments): read and thrown away as they arrived,
    /// never held, with the connection kept (logged as a warning).
    pub too_large: u64,
    /// Reliable frames sent (or waiting to be) and not yet acknowledged by
    /// the server.
    pub reliable_pending: usize,
    /// Writes of the state file (`state_dir`).
    pub state_writes: u64,
    /// Writes of the state file that failed (each logged as a warning).
    pub state_write_errors: u64,
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
    pub too_large: AtomicU64,
    pub state_writes: AtomicU64,
    pub state_write_errors: AtomicU64,
    /// Microseconds; `u64::MAX` while unmeasured.
    pub rtt_us: AtomicU64,
}

/// An event with the number of the first message queued after it.
#[derive(Clone, Debug)]
pub(crate) struct Stamped {
    pub event: Event,
    pub at: u64,
}

pub(crate) struct Shared {
    /// close()'s way into a connection attempt in flight.
    pub abort: crate::connect::dial::Abort,
    state: Mutex<State>,
    last_error: Mutex<Option<ConnectionError>>,
    last_poll_error: Mutex<Option<ConnectionError>>,
    /// What the last connection opened agreed (told with `Open`).
    opened: Mutex<crate::message::Opened>,
    /// The bytes each uplink carried.
    pub wires: crate::connect::stream::Wires,
    pub counters: Counters,
    closed: AtomicBool,
    waker: Mutex<Option<Arc<mio::Waker>>>,
    /// The io thread is looking for work without sleeping (its short look
    /// after a turn that moved data): [`Shared::wake_io`] needs no syscall.
    io_looking: AtomicBool,
    /// Work was handed to the io thread since it last looked for it.
    io_called: AtomicBool,
    /// Taken by the supervisor when it stops, which ends [`crate::Events`].
    events_tx: Mutex<Option<Sender<Stamped>>>,
    events_rx: Receiver<Stamped>,
    /// The bound of the event queue: past it the oldest is dropped.
    event_capacity: usize,
    /// Messages queued so far: each takes the next number, and each event
    /// the number of the first message after it, so one receiver can hand
    /// both out in the order they happened.
    queued: AtomicU64,
    /// Batches in the application's hands (see `delivery::batch::Holding`).
    pub batches_out: Arc<AtomicUsize>,
    /// Bytes waiting in the outbound queue.
    pub outbound: Budget,
    /// Frames waiting in the outbound queue, against
    /// `Limits::outbound_capacity` (the channel itself is unbounded, so an
    /// idle client holds no slots: an array channel of the default 1,024
    /// frames touches 40 KiB when it is made).
    pub outbound_frames: Budget,
    /// Frames the application queued to send (a receiver waiting right
    /// after a send looks for the reply before it sleeps).
    sends: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        event_capacity: usize,
        (outbound_capacity, outbound_bytes): (usize, usize),
    ) -> (Arc<Shared>, Receiver<Stamped>) {
        // Bounded by `event_capacity` in `set_state`, not by the channel:
        // crossbeam's list takes memory as events come (an array channel
        // touches every slot when it is made: 16 KiB for the default 64).
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let counters = Counters::default();
        counters.rtt_us.store(u64::MAX, Relaxed);
        let shared = Arc::new(Shared {
            abort: crate::connect::dial::Abort::default(),
            state: Mutex::new(State::Connecting { attempt: 1 }),
            last_error: Mutex::new(None),
            last_poll_error: Mutex::new(None),
            opened: Mutex::new(crate::message::Opened::default()),
            wires: Default::default(),
            counters,
            closed: AtomicBool::new(false),
            waker: Mutex::new(None),
            io_looking: AtomicBool::new(false),
            io_called: AtomicBool::new(false),
            events_tx: Mutex::new(Some(events_tx)),
            events_rx: events_rx.clone(),
            event_capacity: event_capacity.max(1),
            batches_out: Arc::new(AtomicUsize::new(0)),
            outbound: Budget::new(outbound_bytes),
            outbound_frames: Budget::new(outbound_capacity),
            sends: AtomicU64::new(0),
            queued: AtomicU64::new(0),
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
    /// The event is numbered with the next message's number: the one-loop
    /// receiver hands it out after every message queued before it.
    pub(crate) fn set_state(&self, state: State, error: Option<ConnectionError>) {
        let at = self.queued.load(Relaxed);
        if state.is_closed() {
            self.closed.store(true, SeqCst);
            // A send waiting for room gets its frame back as `Closed`.
            self.outbound.shut();
            self.outbound_frames.shut();
        }
        *lock(&self.state) = state.clone();
        if let Some(e) = &error {
            *lock(&self.last_error) = Some(e.clone());
        }
        let opened = matches!(state, State::Open).then(|| lock(&self.opened).clone());
        let event = Stamped {
            event: Event {
                state,
                error,
                opened,
            },
            at,
        };
        let tx = lock(&self.events_tx);
        let Some(tx) = tx.as_ref() else { return };
        // The bound is kept here, under the lock every sender takes.
        while tx.len() >= self.event_capacity && self.events_rx.try_recv().is_ok() {
            self.counters.events_dropped.fetch_add(1, Relaxed);
        }
        let _ = tx.try_send(event); // refused only once nobody can receive
    }

    /// Records the state (and error) for `stats()` without an event: a
    /// change within the same transport (the next WebSocket attempt while
    /// polling) is not news to the application.
    pub(crate) fn note_state(&self, state: State, error: Option<ConnectionError>) {
        *lock(&self.state) = state;
        if let Some(e) = error {
            *lock(&self.last_error) = Some(e);
        }
    }

    /// What the connection just opened agreed, for its `Open` event and
    /// `stats()`.
    pub(crate) fn set_opened(&self, opened: crate::message::Opened) {
        *lock(&self.opened) = opened;
    }

    /// Numbers a message being queued.
    pub(crate) fn take_seq(&self) -> u64 {
        self.queued.fetch_add(1, Relaxed)
    }

    /// `n` numbers in a row (a read's messages queued in one piece): the
    /// first.
    pub(crate) fn take_seqs(&self, n: usize) -> u64 {
        self.queued.fetch_add(n as u64, Relaxed)
    }

    /// Ends the event stream (after the final `Closed` event).
    pub(crate) fn close_events(&self) {
        lock(&self.events_tx).take();
    }

    /// Records a failed poll: the error first, then the count, so whoever
    /// sees the count sees this error (or a later one).
    pub(crate) fn poll_failed(&self, error: ConnectionError) {
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

    /// Wakes the io thread, if a connection is open. While it looks for
    /// work without sleeping, a flag it checks is enough: no syscall on the
    /// sender's path (an echo's round trip).
    pub(crate) fn wake_io(&self) {
        // Dekker with `io_look_end`: either the io thread sees the call or
        // this sees it sleeping (SeqCst on both sides).
        self.io_called.store(true, SeqCst);
        if self.io_looking.load(SeqCst) {
            return;
        }
        if let Some(w) = lock(&self.waker).as_ref() {
            if let Err(e) = w.wake() {
                log::warn!(target: "heartline::threads::io", "cannot wake the io thread: {e}");
            }
        }
    }

    /// The io thread starts looking for work without sleeping.
    pub(crate) fn io_look_start(&self) {
        self.io_looking.store(true, SeqCst);
    }

    /// The io thread takes the calls made so far: `true` if there were any.
    pub(crate) fn io_take_call(&self) -> bool {
        self.io_called.load(Relaxed) && self.io_called.swap(false, SeqCst)
    }

    /// The io thread stops looking and will sleep, unless this returns
    /// `true`: work was handed to it while it looked.
    pub(crate) fn io_look_end(&self) -> bool {
        self.io_looking.store(false, SeqCst);
        self.io_called.swap(false, SeqCst)
    }

    /// The application queued a frame to send.
    pub(crate) fn sent(&self) {
        self.sends.fetch_add(1, Relaxed);
    }

    /// Frames the application has queued to send so far.
    pub(crate) fn sends(&self) -> u64 {
        self.sends.load(Relaxed)
    }

    /// The counters now; the queues' figures come from their owners
    /// (`inbound_bytes`: now and the peak).
    pub(crate) fn snapshot(
        &self,
        outbound_queued: usize,
        inbound_queued: usize,
        inbound_bytes: (usize, usize),
        reliable_pending: usize,
    ) -> Stats {
        let c = &self.counters;
        let rtt = c.rtt_us.load(Relaxed);
        // Locked once: a guard in the struct expression below would live to
        // its end, and a second lock of the same mutex would deadlock.
        let opened = lock(&self.opened).clone();
        Stats {
            state: self.state(),
            connects: c.connects.load(Relaxed),
            failed_attempts: c.failed_attempts.load(Relaxed),
            last_error: lock(&self.last_error).clone(),
            last_poll_error: lock(&self.last_poll_error).clone(),
            subprotocol: opened.subprotocol,
            interface: opened.interface,
            local_addr: opened.local_addr,
            phases: opened.local_addr.map(|_| opened.phases),
            uplinks: self.wires.totals(),
            rtt: (rtt != u64::MAX).then(|| Duration::from_micros(rtt)),
            heartbeats: c.heartbeats.load(Relaxed),
            frames_in: c.frames_in.load(Relaxed),
            bytes_in: c.bytes_in.load(Relaxed),
            frames_out: c.frames_out.load(Relaxed),
            bytes_out: c.bytes_out.load(Relaxed),
            outbound_queued,
            outbound_bytes: self.outbound.used(),
            inbound_queued,
            inbound_bytes: inbound_bytes.0,
            inbound_bytes_peak: inbound_bytes.1,
            dropped: c.dropped.load(Relaxed),
            events_dropped: c.events_dropped.load(Relaxed),
            duplicates: c.duplicates.load(Relaxed),
            acks: c.acks.load(Relaxed),
            polls: c.polls.load(Relaxed),
            poll_failures: c.poll_failures.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            too_large: c.too_large.load(Relaxed),
            reliable_pending,
            state_writes: c.state_writes.load(Relaxed),
            state_write_errors: c.state_write_errors.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_bound_the_event_queue_drops_the_oldest_and_counts_it() {
        let (s, events) = Shared::new(2, (usize::MAX, 1024));
        for attempt in 1..=5 {
            s.set_state(State::Connecting { attempt }, None);
        }
        let kept: Vec<State> = events.try_iter().map(|e| e.event.state).collect();
        assert_eq!(
            kept,
            [
                State::Connecting { attempt: 4 },
                State::Connecting { attempt: 5 }
            ]
        );
        assert_eq!(s.counters.events_dropped.load(Relaxed), 3);
    }

    #[test]
    fn a_call_while_the_io_thread_looks_is_seen_before_it_sleeps() {
        let (s, _events) = Shared::new(4, (usize::MAX, 1024));
        s.io_look_start();
        s.wake_io(); // no waker: only the flag
        assert!(s.io_look_end(), "the call made while it looked");
        assert!(!s.io_look_end(), "taken once");
        s.wake_io();
        assert!(s.io_take_call(), "a turn takes a call made before it");
        assert!(!s.io_take_call());
    }
}
