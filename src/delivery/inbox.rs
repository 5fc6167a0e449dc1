//! The inbound queue's front door, shared by the io thread and the poller:
//! dedupe by id over a bounded window, the highest cursor seen over both
//! transports, and the overflow policy. Every message reaches the
//! application through [`Inbox::offer`], under one lock, so two transports
//! delivering the same message at once still deliver it once.
//!
//! Cursors may tie (two messages created in the same millisecond share a
//! `createTime`), so a cursor never makes a message with an id old: only its
//! id does. A poll item without an id is old when its cursor is below the
//! highest seen, or when its content was seen (within the dedupe window).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::sections::{AckMode, Overflow};
use crate::durable::ids::{self, Digest, Ids};
use crate::durable::{Ledger, Restored};
use crate::error::lock;
use crate::frame::Cursor;
use crate::message::{Message, Offer};
use crate::shared::Shared;

/// What identifies a message for dedupe: its id's digest, or for a
/// message without one, its payload's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Id(Digest),
    Content(Digest),
}

impl Key {
    fn of(m: &Message) -> Key {
        match m.id() {
            Some(id) => Key::Id(ids::of_id(id)),
            None => Key::Content(ids::of_content(m.frame().as_bytes())),
        }
    }

    fn digest(self) -> Digest {
        match self {
            Key::Id(d) | Key::Content(d) => d,
        }
    }
}

struct Seen {
    /// Shared with the ledger (which marks what was finished) once
    /// attached: each id is remembered once.
    ids: Arc<Mutex<Ids>>,
    cursor: Option<Cursor>,
}

impl Seen {
    /// `true` when `m` was delivered before. `polled`: `m` comes from a poll
    /// response, which repeats old items.
    fn has(&self, ids: &Ids, m: &Message, key: Key, polled: bool) -> bool {
        match key {
            Key::Id(d) => ids.contains(d),
            // A pushed message without an id is new every time: the same
            // text twice is two messages.
            Key::Content(_) if !polled => false,
            Key::Content(d) => match (m.cursor(), &self.cursor) {
                (Some(c), Some(top)) if c < top => true,
                (Some(c), Some(top)) if c > top => false,
                // Cursor equal to the highest (ties) or no cursor at all:
                // old only if this very content was delivered.
                _ => ids.contains(d),
            },
        }
    }
}

pub(crate) struct Inbox {
    tx: Sender<Message>,
    rx: Receiver<Message>,
    seen: Mutex<Seen>,
    overflow: Overflow,
    ack_mode: AckMode,
    shared: Arc<Shared>,
    /// Remember the content of pushed messages without an id, so a poll
    /// repeating one is known. Off when there is no polling: hashing every
    /// payload would cost the hot path for nothing.
    polling: bool,
}

impl Inbox {
    pub(crate) fn new(
        tx: Sender<Message>,
        rx: Receiver<Message>,
        window: usize,
        overflow: Overflow,
        ack_mode: AckMode,
        shared: Arc<Shared>,
        polling: bool,
    ) -> Self {
        Inbox {
            tx,
            rx,
            seen: Mutex::new(Seen {
                ids: Arc::new(Mutex::new(Ids::new(window))),
                cursor: None,
            }),
            overflow,
            ack_mode,
            shared,
            polling,
        }
    }

    /// Starts from what the ledger remembers: its finished ids are
    /// duplicates, and its cursor is where hello frames and polls resume.
    pub(crate) fn attach(&mut self, ledger: &Ledger, restored: &Restored) {
        let mut seen = lock(&self.seen);
        seen.ids = ledger.ids();
        seen.cursor.clone_from(&restored.cursor);
        drop(seen);
    }

    /// The highest cursor of any message queued so far.
    pub(crate) fn cursor(&self) -> Option<Cursor> {
        lock(&self.seen).cursor.clone()
    }

    /// `true` when a message of `len` bytes would be queued now.
    pub(crate) fn fits(&self, len: usize) -> bool {
        !self.rx.is_full() && self.shared.inflow.bytes.would_fit(len)
    }

    /// Queues a message unless it is a duplicate: its id was seen, or (for
    /// a `polled` item without an id) its cursor is below the highest seen
    /// or its content was seen. Rings the consumer's doorbell when it waits
    /// for what is queued now.
    pub(crate) fn offer(&self, m: Message, polled: bool) -> Offer {
        let answer = self.offer_unrung(m, polled);
        self.ring();
        answer
    }

    /// [`Inbox::offer`] without the doorbell: for a producer that queues
    /// many messages in one go and then calls [`Inbox::ring`] once (the io
    /// thread, once per read turn and always before it sleeps).
    pub(crate) fn offer_unrung(&self, mut m: Message, polled: bool) -> Offer {
        let ack = match self.ack_mode {
            AckMode::Queued => m.take_ack(),
            _ => None,
        };
        let key = (polled || self.polling || m.id().is_some()).then(|| Key::of(&m));
        // Nothing to check or record (no id, no cursor, no polling): no
        // lock. Otherwise checking and recording are one step under it, so
        // two transports offering the same message deliver it once.
        let mut seen = (key.is_some() || m.cursor().is_some()).then(|| lock(&self.seen));
        let (dup, finished) = match (&seen, key) {
            (Some(seen), Some(k)) => {
                let ids = lock(&seen.ids);
                let dup = seen.has(&ids, &m, k, polled);
                (dup, dup && matches!(k, Key::Id(d) if ids.is_finished(d)))
            }
            _ => (false, false),
        };
        if dup {
            self.shared.counters.duplicates.fetch_add(1, Relaxed);
            // Acked again if the application finished it (its ack may have
            // been lost); a duplicate of a message still queued or in a
            // batch waits for that one's ack.
            let ack = if finished {
                ack.or_else(|| m.take_ack())
            } else {
                ack
            };
            return Offer::Duplicate { ack };
        }
        let cursor = m.cursor().cloned();
        let mut m = m;
        m.set_seq(self.shared.take_seq());
        let budget = &self.shared.inflow.bytes;
        loop {
            let len = m.budget_cost();
            // Full in bytes or in messages, whichever comes first.
            let refused = if budget.try_take(len) {
                match self.tx.try_send(m) {
                    Ok(()) => break,
                    Err(TrySendError::Disconnected(_)) => {
                        budget.release(len);
                        return Offer::Closed;
                    }
                    Err(TrySendError::Full(back)) => {
                        budget.release(len);
                        back
                    }
                }
            } else {
                m
            };
            match self.overflow {
                Overflow::Backpressure => {
                    // Handed back whole: its ack goes with it.
                    let mut refused = refused;
                    if let Some(a) = ack {
                        refused.set_ack(a);
                    }
                    return Offer::Full(refused);
                }
                Overflow::DropOldest => match self.rx.try_recv() {
                    Ok(old) => {
                        budget.release(old.budget_cost());
                        self.shared.counters.dropped.fetch_add(1, Relaxed);
                        m = refused;
                    }
                    Err(_) => {
                        // Nothing left to drop: the bytes are in the batch
                        // the application is being handed. Queue anyway.
                        budget.force(len);
                        if self.tx.try_send(refused).is_err() {
                            budget.release(len);
                            return Offer::Closed;
                        }
                        break;
                    }
                },
            }
        }
        if let Some(seen) = seen.as_mut() {
            if let Some(key) = key {
                lock(&seen.ids).remember(key.digest());
            }
            if let Some(c) = cursor {
                crate::frame::raise(&mut seen.cursor, c);
            }
        }
        drop(seen);
        Offer::Queued { ack }
    }

    /// Rings the consumer's doorbell if it waits for no more than what is
    /// queued now.
    pub(crate) fn ring(&self) {
        self.shared.inflow.arrived(self.rx.len());
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // No more messages can come: let go of the only sender first, so
        // the consumer the doorbell wakes sees the queue closed.
        let (gone, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.tx, gone));
        self.shared.inflow.ring();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::message::{Meta, Via};
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

    /// A poll item without an id.
    fn anon(text: &str, cursor: Option<i64>) -> Message {
        Message::with_meta(
            Frame::from(text),
            Via::Poll,
            Instant::now(),
            Meta {
                cursor: cursor.map(Cursor::Int),
                ..Meta::default()
            },
        )
    }

    fn queued(o: Offer) -> bool {
        matches!(o, Offer::Queued { .. })
    }

    #[test]
    fn messages_whose_timestamps_tie_are_all_delivered_by_poll_and_by_push() {
        // As seen: createTime 100, 100, 200, 200 in one poll response, then
        // later 200 and 300. Every one has a new id, so every one is new.
        for polled in [true, false] {
            let (i, rx) = inbox(10, 100, Overflow::Backpressure);
            for (id, t) in [("a", 100), ("b", 100), ("c", 200), ("d", 200)] {
                assert!(queued(i.offer(msg(id, t), polled)), "{id} polled={polled}");
            }
            // The next poll repeats the top of the last one and adds two.
            for (id, t) in [("c", 200), ("d", 200), ("e", 200), ("f", 300)] {
                i.offer(msg(id, t), polled);
            }
            let got: Vec<String> = rx.try_iter().map(|m| m.id().unwrap().to_owned()).collect();
            assert_eq!(got, ["a", "b", "c", "d", "e", "f"], "polled={polled}");
            assert_eq!(i.cursor(), Some(Cursor::Int(300)));
        }
    }

    #[test]
    fn a_poll_item_without_an_id_is_old_below_the_cursor_or_when_its_content_was_seen() {
        let (i, rx) = inbox(10, 100, Overflow::Backpressure);
        assert!(queued(i.offer(anon("x", Some(5)), true)));
        assert!(
            queued(i.offer(anon("y", Some(5)), true)),
            "a tie with new content"
        );
        assert!(matches!(
            i.offer(anon("x", Some(5)), true),
            Offer::Duplicate { .. }
        ));
        assert!(matches!(
            i.offer(anon("z", Some(4)), true),
            Offer::Duplicate { .. }
        ));
        assert!(
            queued(i.offer(anon("x", Some(6)), true)),
            "same text, later"
        );
        // Without a cursor (messmonitor's voice URLs): by content alone.
        assert!(queued(i.offer(anon("a.mp3", None), true)));
        assert!(matches!(
            i.offer(anon("a.mp3", None), true),
            Offer::Duplicate { .. }
        ));
        assert!(queued(i.offer(anon("b.mp3", None), true)));
        assert_eq!(rx.len(), 5);
    }

    #[test]
    fn a_pushed_message_without_an_id_is_never_a_duplicate() {
        let (i, rx) = inbox(10, 100, Overflow::Backpressure);
        assert!(queued(i.offer(anon("tick", Some(1)), false)));
        assert!(queued(i.offer(anon("tick", Some(1)), false)));
        assert_eq!(rx.len(), 2);
        // ...but a poll item repeating it is.
        assert!(matches!(
            i.offer(anon("tick", Some(1)), true),
            Offer::Duplicate { .. }
        ));
    }

    fn inbox(cap: usize, window: usize, overflow: Overflow) -> (Inbox, Receiver<Message>) {
        let (shared, _events) = Shared::new(4, cap, usize::MAX, usize::MAX);
        let (tx, rx) = crossbeam_channel::bounded(cap);
        (
            Inbox::new(
                tx,
                rx.clone(),
                window,
                overflow,
                AckMode::Queued,
                shared,
                true,
            ),
            rx,
        )
    }

    #[test]
    fn a_repeated_id_is_a_duplicate_and_the_cursor_only_rises() {
        let (i, rx) = inbox(10, 100, Overflow::Backpressure);
        assert!(matches!(i.offer(msg("a", 5), false), Offer::Queued { .. }));
        assert!(matches!(
            i.offer(msg("a", 5), false),
            Offer::Duplicate { .. }
        ));
        assert!(matches!(i.offer(msg("b", 3), false), Offer::Queued { .. }));
        assert_eq!(i.cursor(), Some(Cursor::Int(5)));
        assert_eq!(rx.len(), 2);
    }

    #[test]
    fn an_old_cursor_never_drops_a_message_with_a_new_id() {
        let (i, _rx) = inbox(10, 100, Overflow::Backpressure);
        i.offer(msg("a", 5), false);
        assert!(queued(i.offer(msg("z", 4), true)));
        assert!(queued(i.offer(msg("y", 5), true)));
        assert!(matches!(
            i.offer(msg("a", 6), true),
            Offer::Duplicate { .. }
        ));
    }

    fn with_ack(id: &str) -> Message {
        let mut m = msg(id, 1);
        m.set_ack(Frame::from(format!("ack {id}")));
        m
    }

    #[test]
    fn in_queued_mode_the_ack_comes_back_once_queued_and_stays_with_a_refused_message() {
        let (shared, _events) = Shared::new(4, 1, usize::MAX, usize::MAX);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let i = Inbox::new(
            tx,
            rx.clone(),
            10,
            Overflow::Backpressure,
            AckMode::Queued,
            shared,
            false,
        );
        assert!(
            matches!(i.offer(with_ack("a"), false), Offer::Queued { ack: Some(f) } if f.as_text() == Some("ack a"))
        );
        let Offer::Full(mut back) = i.offer(with_ack("b"), false) else {
            panic!("expected Full")
        };
        assert!(
            back.take_ack().is_some(),
            "the refused message keeps its ack"
        );
        assert!(matches!(
            i.offer(with_ack("a"), false),
            Offer::Duplicate { ack: Some(_) }
        ));
        // What reached the application carries no ack: it was sent.
        assert!(rx.try_recv().unwrap().take_ack().is_none());
    }

    #[test]
    fn in_delivered_mode_the_ack_stays_with_the_message_for_the_receiver() {
        let (shared, _events) = Shared::new(4, 4, usize::MAX, usize::MAX);
        let (tx, rx) = crossbeam_channel::bounded(4);
        let i = Inbox::new(
            tx,
            rx.clone(),
            10,
            Overflow::Backpressure,
            AckMode::Delivered,
            shared,
            false,
        );
        assert!(matches!(
            i.offer(with_ack("a"), false),
            Offer::Queued { ack: None }
        ));
        assert!(rx.try_recv().unwrap().take_ack().is_some());
    }

    #[test]
    fn the_dedupe_window_is_bounded() {
        let (i, rx) = inbox(100, 2, Overflow::Backpressure);
        for id in ["a", "b", "c"] {
            i.offer(msg(id, 1), false);
        }
        // "a" fell out of the two-id window
        assert!(matches!(i.offer(msg("a", 1), false), Offer::Queued { .. }));
        assert!(matches!(
            i.offer(msg("c", 1), false),
            Offer::Duplicate { .. }
        ));
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
        assert!(matches!(i.offer(back, false), Offer::Queued { .. }));
        assert_eq!(i.cursor(), Some(Cursor::Int(2)));
    }
}
