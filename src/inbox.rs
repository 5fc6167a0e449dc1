//! The inbound queue's front door, shared by the io thread and the poller:
//! dedupe by id over a bounded window, the highest cursor seen over both
//! transports, and the overflow policy. Every message reaches the
//! application through [`Inbox::offer`], under one lock, so two transports
//! delivering the same message at once still deliver it once.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::Overflow;
use crate::message::Message;
use crate::protocol::Cursor;
use crate::shared::{lock, Shared};

/// What became of an offered message.
#[derive(Debug)]
pub(crate) enum Offer {
    /// In the queue.
    Queued,
    /// Seen before (or older than the cursor, for polls): not delivered.
    Duplicate,
    /// The queue is full and the policy is to wait: try again later.
    Full(Message),
    /// The application is gone.
    Closed,
}

struct Seen {
    ids: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    window: usize,
    cursor: Option<Cursor>,
}

impl Seen {
    fn remember(&mut self, id: Arc<str>) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > self.window {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

pub(crate) struct Inbox {
    tx: Sender<Message>,
    rx: Receiver<Message>,
    seen: Mutex<Seen>,
    overflow: Overflow,
    shared: Arc<Shared>,
}

impl Inbox {
    pub(crate) fn new(
        tx: Sender<Message>,
        rx: Receiver<Message>,
        window: usize,
        overflow: Overflow,
        shared: Arc<Shared>,
    ) -> Self {
        Inbox {
            tx,
            rx,
            seen: Mutex::new(Seen {
                ids: HashSet::new(),
                order: VecDeque::new(),
                window,
                cursor: None,
            }),
            overflow,
            shared,
        }
    }

    /// The highest cursor of any message queued so far.
    pub(crate) fn cursor(&self) -> Option<Cursor> {
        lock(&self.seen).cursor.clone()
    }

    /// Messages waiting for the application.
    pub(crate) fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Queues a message unless it is a duplicate. With `stale`, a message
    /// whose cursor is not above the highest seen also counts as a
    /// duplicate (poll responses that repeat old items).
    pub(crate) fn offer(&self, m: Message, stale: bool) -> Offer {
        let mut seen = lock(&self.seen);
        let id = m.id_arc();
        if id.as_ref().is_some_and(|id| seen.ids.contains(id))
            || (stale && matches!((m.cursor(), &seen.cursor), (Some(c), Some(top)) if c <= top))
        {
            self.shared.counters.duplicates.fetch_add(1, Relaxed);
            return Offer::Duplicate;
        }
        let cursor = m.cursor().cloned();
        let mut m = m;
        loop {
            match self.tx.try_send(m) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Offer::Closed,
                Err(TrySendError::Full(back)) => match self.overflow {
                    Overflow::Backpressure => return Offer::Full(back),
                    Overflow::DropOldest => {
                        if self.rx.try_recv().is_ok() {
                            self.shared.counters.dropped.fetch_add(1, Relaxed);
                        }
                        m = back;
                    }
                },
            }
        }
        if let Some(id) = id {
            seen.remember(id);
        }
        if let Some(c) = cursor {
            if seen.cursor.as_ref().is_none_or(|top| c > *top) {
                seen.cursor = Some(c);
            }
        }
        Offer::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Frame, Meta, Via};
    use std::time::Instant;

    fn msg(id: &str, cursor: i64) -> Message {
        Message::with_meta(
            Frame::from(id),
            Via::Ws,
            Instant::now(),
            Meta {
                id: Some(id.into()),
                cursor: Some(Cursor::Int(cursor)),
                ..Meta::default()
            },
        )
    }

    fn inbox(cap: usize, window: usize, overflow: Overflow) -> (Inbox, Receiver<Message>) {
        let (shared, _events) = Shared::new(4, cap);
        let (tx, rx) = crossbeam_channel::bounded(cap);
        (Inbox::new(tx, rx.clone(), window, overflow, shared), rx)
    }

    #[test]
    fn a_repeated_id_is_a_duplicate_and_the_cursor_only_rises() {
        let (i, rx) = inbox(10, 100, Overflow::Backpressure);
        assert!(matches!(i.offer(msg("a", 5), false), Offer::Queued));
        assert!(matches!(i.offer(msg("a", 5), false), Offer::Duplicate));
        assert!(matches!(i.offer(msg("b", 3), false), Offer::Queued));
        assert_eq!(i.cursor(), Some(Cursor::Int(5)));
        assert_eq!(rx.len(), 2);
    }

    #[test]
    fn old_poll_items_are_stale() {
        let (i, _rx) = inbox(10, 100, Overflow::Backpressure);
        i.offer(msg("a", 5), false);
        assert!(matches!(i.offer(msg("z", 4), true), Offer::Duplicate));
        assert!(matches!(i.offer(msg("y", 6), true), Offer::Queued));
    }

    #[test]
    fn the_dedupe_window_is_bounded() {
        let (i, rx) = inbox(100, 2, Overflow::Backpressure);
        for id in ["a", "b", "c"] {
            i.offer(msg(id, 1), false);
        }
        // "a" fell out of the two-id window
        assert!(matches!(i.offer(msg("a", 1), false), Offer::Queued));
        assert!(matches!(i.offer(msg("c", 1), false), Offer::Duplicate));
        assert_eq!(rx.len(), 4);
    }

    #[test]
    fn a_full_queue_hands_the_message_back_and_does_not_remember_it() {
        let (i, rx) = inbox(1, 100, Overflow::Backpressure);
        i.offer(msg("a", 1), false);
        let Offer::Full(back) = i.offer(msg("b", 2), false) else {
            panic!("expected Full")
        };
        rx.recv().unwrap();
        assert!(matches!(i.offer(back, false), Offer::Queued));
        assert_eq!(i.cursor(), Some(Cursor::Int(2)));
    }
}
