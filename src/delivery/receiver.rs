//! The application's side of delivery: [`Batches`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError as ChannelTimeout, TryRecvError as ChannelEmpty,
};

use super::batcher::{Batcher, Next};
use crate::delivery::batch::{Back, Batch, Finish, Finished};
use crate::durable::Ledger;
use crate::error::lock;
use crate::error::{RecvError, RecvTimeoutError, TryRecvError};
use crate::message::Message;
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
    rx: Receiver<Message>,
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
        rx: Receiver<Message>,
        shared: Arc<Shared>,
        window: Duration,
        max: usize,
        ledger: Arc<Ledger>,
        on_finish: bool,
    ) -> Self {
        let batcher = Arc::new(Mutex::new(Batcher::new(window, max)));
        let back: Back = {
            let (batcher, shared) = (batcher.clone(), shared.clone());
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
                    .map(|m| m.budget_cost() - m.ack_cost())
                    .sum();
                shared.inflow.bytes.force(owed);
                lock(&batcher).put_back(messages);
                shared.inflow.ring();
            });
            Back { put, out }
        };
        Batches {
            rx,
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
        self.rx.len()
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
            self.shared.inflow.want(need);
            if self.rx.len() >= need {
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
            let bell = self.shared.inflow.doorbell();
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
            if self.rx.len() >= need {
                return true;
            }
        }
        false
    }

    /// Adds what is already queued, up to the batch limit; `true` when the
    /// queue is closed and empty (nothing more can come).
    fn fill(&self, b: &mut Batcher) -> bool {
        let mut closed = false;
        while b.wants_more() {
            match self.rx.try_recv() {
                Ok(m) => b.push(m),
                Err(ChannelEmpty::Empty) => break,
                Err(ChannelEmpty::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        self.shared.taken(self.rx.len());
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
                self.shared.inflow.want(need);
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
        self.shared.inflow.doorbell()
    }

    fn hand_out(&self, b: &mut Batcher) -> Batch {
        self.look.taken(self.shared.sends());
        let messages = b.take();
        self.hand_out_messages(messages)
    }

    fn hand_out_messages(&self, mut messages: Vec<Message>) -> Batch {
        // Handed out: these bytes are the application's now.
        let bytes: usize = messages.iter().map(Message::budget_cost).sum();
        if !messages.iter().any(Message::to_record) {
            // Nothing to record or ack (a plain protocol): no work on finish.
            self.shared.inflow.bytes.release(bytes);
            self.shared.taken(self.rx.len());
            return Batch::new(messages, None, Some(self.back.clone()));
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
        // The acks keep their own bytes of the budget until written: part
        // of what their messages held (never less: see
        // `Message::budget_cost`), so the budget holds through finishing.
        self.shared
            .inflow
            .bytes
            .release(bytes.saturating_sub(acks_cost));
        self.shared.taken(self.rx.len());
        self.ledger.release(now);
        let finish = Finish {
            entries,
            ledger: self.ledger.clone(),
        };
        Batch::new(messages, Some(finish), Some(self.back.clone()))
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
            .field("queued", &self.rx.len())
            .finish_non_exhaustive()
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
}
