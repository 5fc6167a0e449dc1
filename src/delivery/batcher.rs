//! The batch being assembled, and when it is ready. Pure: it holds
//! messages and answers for a given `now`, so every receive method (`recv`,
//! `try_recv`, `recv_timeout`, `recv_deadline`) shares one rule.

use std::time::{Duration, Instant};

use crate::message::Message;

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
}

impl Batcher {
    pub(crate) fn new(window: Duration, max: usize) -> Self {
        Batcher {
            window,
            max,
            pending: Vec::new(),
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
