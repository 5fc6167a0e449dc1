//! The application's side of delivery: [`Batches`], and the pure rule for
//! when the batch being assembled is ready ([`Batcher`]): it holds messages
//! and answers for a given `now`, so every receive method (`recv`,
//! `try_recv`, `recv_timeout`, `recv_deadline`, the one-loop receiver)
//! shares one rule, tested without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError as ChannelTimeout, TryRecvError as ChannelEmpty,
};

use crate::delivery::batch::{Back, Batch, Finish, Finished};
use crate::delivery::inbox::{Inflow, Item};
use crate::durable::Ledger;
use crate::error::lock;
use crate::error::{RecvError, RecvTimeoutError, TryRecvError};
use crate::message::{Message, Run};
use crate::shared::Shared;

/// How long a receiver with a zero batch window looks for the reply to
/// what the application sent since its last batch, before it sleeps. The
/// reply often comes within tens of microseconds, and a sleeping thread
/// takes longer than that to wake: this takes about a fifth off an echo
/// round trip. Bounded, once per send at most, and never for messages the
/// server pushes unasked (nor with a batch window, which waits anyway).
const LOOK: Duration = Duration::from_micros(50);

/// The look for a reply (see [`LOOK`]): a heuristic for request/reply
/// latency (the benchmark's echo row measures it), kept in the receiving
/// loop rather than in the pure batcher.
#[derive(Default)]
struct ReplyLook {
    /// The application's sends counted when the last batch was taken.
    sends_at_take: AtomicU64,
}

impl ReplyLook {
    /// A batch was taken; the application had sent `sends` frames so far.
    fn taken(&self, sends: u64) {
        self.sends_at_take.store(sends, Relaxed);
    }

    /// `true` when a receiver about to wait most likely waits for the
    /// reply to what the application sent since it took its last batch:
    /// the batcher would hand the next message out at once, and the
    /// application has sent since.
    fn awaits_reply(&self, b: &Batcher, sends: u64) -> bool {
        b.empty_with_zero_window() && sends != self.sends_at_take.load(Relaxed)
    }
}

/// What [`Batches::poll`] found.
pub(crate) enum Poll {
    Batch(Batch),
    Wait {
        /// When the batch being assembled is due (`None`: nothing pending
        /// that is not waiting for an event).
        due: Option<Instant>,
        /// No more messages can come.
        closed: bool,
    },
}

/// Receives [`Batch`]es. Also a blocking iterator:
/// `for batch in client.batches() { … }` ends after the client is closed and
/// everything received has been handed out.
///
/// A batch is handed out `Delivery::batch_window` after its first message arrived (the
/// window counts from arrival, so messages that waited in the queue for a
/// slow consumer do not wait again), or as soon as it holds `Delivery::batch_max`
/// messages.
///
/// Clones share the queue and the batch being assembled: each batch goes to
/// exactly one of them, and a batch one clone started can be finished by
/// another. No lock is held while a receive method waits.
#[derive(Clone)]
pub struct Batches {
    rx: Receiver<Item>,
    /// The inbound queue's flow control: its byte budget, the doorbell.
    flow: Arc<Inflow>,
    shared: Arc<Shared>,
    batcher: Arc<Mutex<Batcher>>,
    /// Where finished batches are recorded, and where acks released on
    /// hand-out or on finish wait for the io thread (which takes them
    /// before anything else).
    ledger: Arc<Ledger>,
    /// `true`: acks travel with the batch and go when it is finished
    /// ([`crate::AckMode::Finished`]); `false`: they go on hand-out.
    on_finish: bool,
    /// Keeps the client running while this receiver exists (set by the
    /// client: delivery does not know what it holds).
    keep: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// Where a dropped batch puts what it did not finish: the front of
    /// the batch being assembled.
    back: Back,
    /// Shared by clones, as the batcher is.
    look: Arc<ReplyLook>,
}

impl Batches {
    pub(crate) fn new(
        rx: Receiver<Item>,
        flow: Arc<Inflow>,
        shared: Arc<Shared>,
        window: Duration,
        max: usize,
        ledger: Arc<Ledger>,
        on_finish: bool,
    ) -> Self {
        let batcher = Arc::new(Mutex::new(Batcher::new(window, max)));
        let back: Back = {
            let (batcher, shared, flow) = (batcher.clone(), shared.clone(), flow.clone());
            let out = shared.batches_out.clone();
            let put = Arc::new(move |messages: Vec<Message>| {
                if shared.is_closed() {
                    // After close(): nothing more is handed out again (or
                    // acked); the server delivers them next time.
                    return;
                }
                // Queued again: they hold the budget as queued messages
                // do (their acks kept their own share since hand-out).
                let owed: usize = messages
                    .iter()
                    .map(|m| m.enter().saturating_sub(m.ack_cost()))
                    .sum();
                flow.bytes.force(owed);
                lock(&batcher).put_back(messages);
                flow.ring();
            });
            Back { put, out }
        };
        Batches {
            rx,
            flow,
            shared,
            batcher,
            ledger,
            on_finish,
            keep: None,
            back,
            look: Arc::default(),
        }
    }

    /// This receiver (and its clones) keeps `life` alive.
    pub(crate) fn keeping(mut self, life: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.keep = Some(life);
        self
    }

    /// Messages waiting in the queue (not yet in a batch being assembled).
    pub(crate) fn queued(&self) -> usize {
        self.flow.queued()
    }

    /// Bytes the inbound budget holds now, and the most it ever held.
    pub(crate) fn bytes_held(&self) -> (usize, usize) {
        (self.flow.bytes.used(), self.flow.bytes.peak())
    }

    /// Blocks until a batch is ready.
    ///
    /// # Errors
    /// [`RecvError`] once the client is closed and drained.
    pub fn recv(&self) -> Result<Batch, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// Waits until `deadline` for a batch.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Batch, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    /// Waits up to `timeout` for a batch.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Batch, RecvTimeoutError> {
        // A timeout too large for the clock means no timeout.
        self.recv_until(Instant::now().checked_add(timeout))
    }

    /// Returns a batch only if one is ready now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> Result<Batch, TryRecvError> {
        let mut b = lock(&self.batcher);
        let closed = self.fill(&mut b);
        match b.next(Instant::now(), closed) {
            Next::Ready => Ok(self.hand_out(&mut b)),
            Next::Wait(None) if closed => Err(TryRecvError::Closed),
            Next::Wait(_) => Err(TryRecvError::Empty),
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Batch, RecvTimeoutError> {
        loop {
            let mut b = lock(&self.batcher);
            let closed = self.fill(&mut b);
            let now = Instant::now();
            let due = match b.next(now, closed) {
                Next::Ready => return Ok(self.hand_out(&mut b)),
                Next::Wait(None) if closed => return Err(RecvTimeoutError::Closed),
                Next::Wait(due) => due,
            };
            if deadline.is_some_and(|d| now >= d) {
                return Err(RecvTimeoutError::Timeout);
            }
            // Ask the producers to ring when enough is queued to finish this
            // batch (one message to start one), then wait for that or for
            // the batch's window, without holding the lock (clones may
            // receive meanwhile). One wake-up per batch, not per message.
            let need = b.room();
            let reply = self.look.awaits_reply(&b, self.shared.sends());
            drop(b);
            self.flow.want(need);
            if self.flow.queued() >= need {
                continue;
            }
            let look_until = deadline.map_or(now + LOOK, |d| d.min(now + LOOK));
            if reply && self.look_for(need, look_until) {
                continue;
            }
            let until = match (due, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let bell = self.flow.doorbell();
            let _ = match until {
                None => bell.recv().map_err(|_| ChannelTimeout::Disconnected),
                Some(t) => bell.recv_deadline(t),
            };
            // Rung, timed out or closed: the next pass decides.
        }
    }

    /// Looks for `need` queued messages until `until` without sleeping,
    /// yielding the core between looks; `true` when they are there.
    fn look_for(&self, need: usize, until: Instant) -> bool {
        while Instant::now() < until {
            std::thread::yield_now();
            if self.flow.queued() >= need {
                return true;
            }
        }
        false
    }

    /// After taking messages or handing out a batch: signals room to a
    /// poller, and wakes a paused io thread once below the resume mark.
    fn taken(&self) {
        if self.flow.taken(self.flow.queued()) {
            self.shared.wake_io();
        }
    }

    /// Adds what is already queued, up to the batch limit; `true` when the
    /// queue is closed and empty (nothing more can come).
    fn fill(&self, b: &mut Batcher) -> bool {
        let mut closed = false;
        let mut n = 0;
        while b.wants_more() {
            // A read queued in one piece is made into messages as they fit.
            if let Some(m) = b.rest.as_mut().and_then(Run::take) {
                b.push(m);
                n += 1;
                continue;
            }
            b.rest = None;
            match self.rx.try_recv() {
                Ok(Item::One(m)) => {
                    b.push(m);
                    n += 1;
                }
                Ok(Item::Run(r)) => b.rest = Some(r),
                Err(ChannelEmpty::Empty) => break,
                Err(ChannelEmpty::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        self.flow.out(n);
        self.taken();
        closed
    }

    /// For the one-loop receiver ([`crate::Updates`]): a batch if one is
    /// ready now (with `limit`, the messages numbered below it, at once:
    /// an event waits behind them), else when one will be and whether the
    /// queue is closed. Asks the producers to ring the doorbell when it
    /// waits.
    pub(crate) fn poll(&self, limit: Option<u64>) -> Poll {
        let mut b = lock(&self.batcher);
        let closed = self.fill(&mut b);
        if let Some(l) = limit {
            if b.has_before(l) {
                self.look.taken(self.shared.sends());
                let messages = b.take_before(l);
                return Poll::Batch(self.hand_out_messages(messages));
            }
            // Nothing queued before the event is left (the queue is in
            // order, and what is pending is older than the queue): its turn.
            return Poll::Wait { due: None, closed };
        }
        match b.next(Instant::now(), closed) {
            Next::Ready => Poll::Batch(self.hand_out(&mut b)),
            Next::Wait(due) => {
                let need = b.room();
                let reply = self.look.awaits_reply(&b, self.shared.sends());
                drop(b);
                self.flow.want(need);
                if reply && self.look_for(need, Instant::now() + LOOK) {
                    // The reply to what the application just sent came
                    // within the look: no sleep and wake-up (as `recv`).
                    return self.poll(limit);
                }
                Poll::Wait { due, closed }
            }
        }
    }

    /// The doorbell producers ring (see [`Batches::poll`]).
    pub(crate) fn doorbell(&self) -> &Receiver<()> {
        self.flow.doorbell()
    }

    fn hand_out(&self, b: &mut Batcher) -> Batch {
        self.look.taken(self.shared.sends());
        let messages = b.take();
        self.hand_out_messages(messages)
    }

    fn hand_out_messages(&self, mut messages: Vec<Message>) -> Batch {
        // Handed out: these bytes are the application's now.
        let bytes: usize = messages.iter().map(Message::leave).sum();
        if !messages.iter().any(Message::to_record) {
            // Nothing to record or ack (a plain protocol): no work on finish.
            // Counted as held before its bytes leave the budget: the io
            // thread, failing a connection once nothing is held (budget
            // empty, no batch out), must never see neither, or it could
            // close before the application's answer to these is queued.
            let batch = Batch::new(messages, None, Some(self.back.clone()));
            self.flow.bytes.release(bytes);
            self.taken();
            return batch;
        }
        let mut entries = Vec::with_capacity(messages.len());
        let mut now = Vec::new();
        let mut acks_cost = 0;
        for m in &mut messages {
            let mut ack = m.take_ack();
            acks_cost += ack.as_ref().map_or(0, crate::message::ack_cost);
            if !self.on_finish {
                // Delivered: the acks go now, on hand-out.
                now.extend(ack.take());
            }
            entries.push(Finished {
                id: m.id_arc(),
                cursor: m.cursor().cloned(),
                ack,
            });
        }
        let finish = Finish {
            entries,
            ledger: self.ledger.clone(),
        };
        // Held first, as above.
        let batch = Batch::new(messages, Some(finish), Some(self.back.clone()));
        // The acks keep their own bytes of the budget until written: part
        // of what their messages held (never less: see
        // `Message::budget_cost`), so the budget holds through finishing.
        self.flow.bytes.release(bytes.saturating_sub(acks_cost));
        self.taken();
        self.ledger.release(now);
        batch
    }
}

impl Iterator for Batches {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.recv().ok()
    }
}

impl fmt::Debug for Batches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batches")
            .field("queued", &self.flow.queued())
            .finish_non_exhaustive()
    }
}

/// What the receiver does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A batch is ready: take it with [`Batcher::take`].
    Ready,
    /// Nothing to hand out yet; a batch will be ready at this moment unless
    /// it fills up first (`None`: nothing is pending).
    Wait(Option<Instant>),
}

pub(crate) struct Batcher {
    window: Duration,
    max: usize,
    /// Oldest first; never more than `max` once the receiver fills it.
    pending: Vec<Message>,
    /// A read queued in one piece, partly made into messages: the next
    /// in line after `pending`.
    rest: Option<Run>,
}

impl Batcher {
    pub(crate) fn new(window: Duration, max: usize) -> Self {
        Batcher {
            window,
            max,
            pending: Vec::new(),
            rest: None,
        }
    }

    /// `true` while the batch being assembled can take more messages.
    pub(crate) fn wants_more(&self) -> bool {
        self.pending.len() < self.max
    }

    /// Messages that would complete the batch being assembled (its
    /// room), or 1 to start one.
    pub(crate) fn room(&self) -> usize {
        if self.pending.is_empty() {
            1
        } else {
            self.max.saturating_sub(self.pending.len()).max(1)
        }
    }

    pub(crate) fn push(&mut self, m: Message) {
        self.pending.push(m);
    }

    /// `true` when a message numbered below `limit` is pending.
    pub(crate) fn has_before(&self, limit: u64) -> bool {
        self.pending.iter().any(|m| m.seq() < limit)
    }

    /// The pending messages numbered below `limit` (at most `max`), now:
    /// an event that came after them waits for them.
    pub(crate) fn take_before(&mut self, limit: u64) -> Vec<Message> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() && out.len() < self.max {
            if self.pending[i].seq() < limit {
                out.push(self.pending.remove(i));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Messages of a batch the application dropped unfinished: first in
    /// line, before anything newer.
    pub(crate) fn put_back(&mut self, messages: Vec<Message>) {
        self.pending.splice(0..0, messages);
    }

    /// A batch is handed out `window` after its first message arrived (the
    /// window counts from arrival, so a message that waited in the queue
    /// for a slow consumer does not wait again), as soon as it holds `max`
    /// messages, or at once when no more can come (`closed`).
    pub(crate) fn next(&self, now: Instant, closed: bool) -> Next {
        let Some(first) = self.pending.first() else {
            return Next::Wait(None);
        };
        let due = first.received_at() + self.window;
        if closed || self.pending.len() >= self.max || now >= due {
            Next::Ready
        } else {
            Next::Wait(Some(due))
        }
    }

    /// `true` when the window is zero and nothing is pending: the next
    /// message to arrive is handed out at once.
    pub(crate) fn empty_with_zero_window(&self) -> bool {
        self.window.is_zero() && self.pending.is_empty()
    }

    /// The next batch: at most `max` messages, oldest first.
    pub(crate) fn take(&mut self) -> Vec<Message> {
        let n = self.pending.len().min(self.max);
        if n == self.pending.len() {
            // The usual case (the receiver fills up to `max`): the batch is
            // the pending Vec itself, no copy; the next one starts at the
            // size this one reached.
            return std::mem::replace(&mut self.pending, Vec::with_capacity(n));
        }
        self.pending.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::message::{Meta, Via};

    #[test]
    fn only_a_zero_window_receiver_with_nothing_pending_awaits_the_reply_to_a_send() {
        let look = ReplyLook::default();
        let mut b = Batcher::new(Duration::ZERO, 3);
        assert!(!look.awaits_reply(&b, 0), "nothing sent");
        assert!(look.awaits_reply(&b, 1), "sent since the last batch");
        b.push(Message::with_meta(
            Frame::from("m"),
            Via::Ws,
            Instant::now(),
            Meta::default(),
        ));
        assert!(!look.awaits_reply(&b, 1), "a batch is pending");
        look.taken(1);
        b.take();
        assert!(
            !look.awaits_reply(&b, 1),
            "the batch after that send was taken"
        );
        assert!(look.awaits_reply(&b, 2));
        let windowed = Batcher::new(Duration::from_millis(50), 3);
        assert!(!look.awaits_reply(&windowed, 3), "a window waits anyway");
    }

    const MS: Duration = Duration::from_millis(1);

    fn at(t: Instant) -> Message {
        Message::with_meta(Frame::from("m"), Via::Ws, t, Meta::default())
    }

    #[test]
    fn a_batch_waits_for_its_window_from_the_first_message() {
        let t0 = Instant::now();
        let mut b = Batcher::new(50 * MS, 10);
        assert_eq!(b.next(t0, false), Next::Wait(None));
        b.push(at(t0));
        b.push(at(t0 + 30 * MS));
        assert_eq!(b.next(t0 + 10 * MS, false), Next::Wait(Some(t0 + 50 * MS)));
        assert_eq!(b.next(t0 + 50 * MS, false), Next::Ready);
        assert_eq!(b.take().len(), 2);
        assert_eq!(b.next(t0 + 50 * MS, false), Next::Wait(None));
    }

    #[test]
    fn a_full_batch_is_ready_at_once_and_the_rest_waits_for_the_next() {
        let t0 = Instant::now();
        let mut b = Batcher::new(50 * MS, 3);
        for _ in 0..7 {
            b.push(at(t0));
        }
        assert!(!b.wants_more());
        assert_eq!(b.next(t0, false), Next::Ready);
        assert_eq!(b.take().len(), 3);
        assert_eq!(b.take().len(), 3);
        assert_eq!(b.next(t0, false), Next::Wait(Some(t0 + 50 * MS)));
        assert_eq!(b.take().len(), 1);
    }

    #[test]
    fn a_zero_window_is_always_ready() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Duration::ZERO, 3);
        b.push(at(t0));
        assert_eq!(b.next(t0, false), Next::Ready);
    }

    #[test]
    fn a_message_that_waited_in_the_queue_does_not_wait_again() {
        let t0 = Instant::now();
        let mut b = Batcher::new(50 * MS, 10);
        b.push(at(t0));
        assert_eq!(b.next(t0 + 500 * MS, false), Next::Ready);
    }

    #[test]
    fn once_closed_whatever_is_pending_goes_out_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(50 * MS, 10);
        b.push(at(t0));
        assert_eq!(b.next(t0, true), Next::Ready);
    }
}
