//! The inbound queue, in one place: its front door, its flow control, and
//! the io thread's end of it.
//!
//! - **The door, [`Inbox::offer`].** Shared by the io thread and the
//!   poller: dedupe by id over a bounded window, the highest cursor seen
//!   over both transports, the overflow policy, and the ack to send once a
//!   message is queued. Every message reaches the application through it,
//!   under one lock, so two transports delivering the same message at once
//!   still deliver it once. A read's small messages from the plain
//!   protocol, with nothing to dedupe, come in one piece
//!   ([`Inbox::offer_run_unrung`]) and are one item of the queue.
//! - **Flow control, [`Inflow`], with one wake protocol:**
//!   - *Bounds.* The queue holds at most `capacity` messages and `bytes`
//!     (a [`Budget`]); the door refuses (backpressure) or drops (the
//!     overflow policy) past them. Both bounds are counts kept here, so
//!     the channel beneath is crossbeam's list, which takes memory as
//!     items come and gives it back as they go: an idle client does not
//!     hold `capacity` slots (an array channel of the default 4,096 would
//!     be 356 KiB, every page touched when it is made).
//!   - *The paused reader.* A producer the full queue refused holds the
//!     message and stops ([`Intake`] for the io thread, which stops
//!     reading; the poller waits in [`Inflow::wait_for_room`]). The
//!     consumer's every take signals room; a paused reader is woken once
//!     the queue is at most half full in messages and in bytes
//!     ([`Inflow::taken`] answers `true`), so a slow consumer does not
//!     cause a wake-up per message. The heartbeat thread reads
//!     [`Inflow::is_paused`]: silence proves nothing while reading is
//!     paused.
//!   - *The doorbell.* A consumer about to wait says how many queued
//!     messages would finish its batch ([`Inflow::want`]); a producer rings
//!     once the queue holds that many ([`Inflow::arrived`]), or when no
//!     more can come ([`Inflow::ring`]): one wake-up per batch, not per
//!     message. `want` and the producer's check are ordered by `SeqCst`
//!     fences, so a ring is never lost between a consumer's last look and
//!     its wait.
//! - **The io thread's end, [`Intake`]:** offers what the connection
//!   delivers, holds what a full queue refused with reading paused, and
//!   rings the doorbell once per read turn rather than per message.
//!
//! Cursors may tie (two messages created in the same millisecond share a
//! `createTime`), so a cursor never makes a message with an id old: only its
//! id does. A poll item without an id is old when its cursor is below the
//! highest seen, or when its content was seen (within the dedupe window).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use crate::config::delivery::{AckMode, Overflow};
use crate::delivery::budget::Budget;
use crate::durable::ids::{self, Digest, Ids};
use crate::durable::{Ledger, Restored};
use crate::error::lock;
use crate::frame::{Cursor, Frame};
use crate::message::{Message, Offer, Run};
use crate::shared::Shared;

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
    /// Messages queued: in the channel (a read's messages are one item
    /// there) or in a read the consumer has begun making into messages.
    queued: AtomicUsize,
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
            queued: AtomicUsize::new(0),
        }
    }

    /// Messages queued (see the field).
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(SeqCst)
    }

    /// Room for up to `n` messages within the bound: how many were
    /// reserved (0 when the queue is full).
    fn reserve(&self, n: usize) -> usize {
        let mut now = self.queued.load(SeqCst);
        loop {
            let k = n.min(self.capacity.saturating_sub(now));
            if k == 0 {
                return 0;
            }
            match self
                .queued
                .compare_exchange_weak(now, now + k, SeqCst, SeqCst)
            {
                Ok(_) => return k,
                Err(seen) => now = seen,
            }
        }
    }

    /// Room for `n` messages whether the bound allows or not.
    fn force(&self, n: usize) {
        self.queued.fetch_add(n, SeqCst);
    }

    /// `n` messages left the queue (or a reservation was not used).
    pub(crate) fn out(&self, n: usize) {
        if n > 0 {
            let _ = self
                .queued
                .fetch_update(SeqCst, SeqCst, |q| Some(q.saturating_sub(n)));
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

    /// Waits until the consumer has taken messages since the last wait;
    /// `true` when told to `stop` instead. The consumer leaves a token
    /// after every take (a bounded(1) channel keeps it until read), so a
    /// take between a refused offer and this wait is never missed.
    pub(crate) fn wait_for_room(&self, stop: &Receiver<()>) -> bool {
        crossbeam_channel::select! {
            recv(stop) -> _ => true,
            recv(self.room_rx) -> _ => false,
        }
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
            None => Key::Content(ids::of_content(m.bytes())),
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

/// What the inbound queue holds: a message, or a read's small messages in
/// one piece (see [`crate::message::Run`]), made into messages by the
/// consumer as it fills batches: one channel operation per read, not per
/// message.
#[derive(Debug)]
pub(crate) enum Item {
    One(Message),
    Run(Run),
}

impl Item {
    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Item::One(_) => 1,
            Item::Run(r) => r.len(),
        }
    }

    /// Leaves heartline's hands (dropped): the budget's bytes to give back.
    fn leave(&self) -> usize {
        match self {
            Item::One(m) => m.leave(),
            Item::Run(r) => r.leave(),
        }
    }
}

/// The queue's receiving end for tests: messages one by one, reads queued
/// in one piece made into messages, counted out as the receiver counts.
#[cfg(test)]
pub(crate) struct TestRx {
    rx: Receiver<Item>,
    flow: Arc<Inflow>,
    made: std::cell::RefCell<std::collections::VecDeque<Message>>,
}

#[cfg(test)]
impl TestRx {
    pub(crate) fn of(inbox: &Inbox) -> TestRx {
        TestRx {
            rx: inbox.rx.clone(),
            flow: inbox.flow.clone(),
            made: Default::default(),
        }
    }

    pub(crate) fn try_recv(&self) -> Result<Message, crossbeam_channel::TryRecvError> {
        if let Some(m) = self.made.borrow_mut().pop_front() {
            self.flow.out(1);
            return Ok(m);
        }
        match self.rx.try_recv()? {
            Item::One(m) => {
                self.flow.out(1);
                Ok(m)
            }
            Item::Run(mut r) => {
                self.made
                    .borrow_mut()
                    .extend(std::iter::from_fn(|| r.take()));
                self.try_recv()
            }
        }
    }

    pub(crate) fn recv(&self) -> Result<Message, crossbeam_channel::RecvError> {
        loop {
            if let Ok(m) = self.try_recv() {
                return Ok(m);
            }
            let item = self.rx.recv()?;
            match item {
                Item::One(m) => {
                    self.flow.out(1);
                    return Ok(m);
                }
                Item::Run(mut r) => {
                    self.made
                        .borrow_mut()
                        .extend(std::iter::from_fn(|| r.take()));
                }
            }
        }
    }

    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.flow.queued()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn try_iter(&self) -> impl Iterator<Item = Message> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }
}

/// What became of a read offered in one piece.
#[derive(Debug)]
pub(crate) enum RunOffer {
    /// `queued` of its messages are queued; the rest (if any) found the
    /// queue full (backpressure).
    Queued { queued: usize, rest: Option<Run> },
    /// The application is gone.
    Closed,
}

pub(crate) struct Inbox {
    /// The queue's flow control, shared with the consumer and the
    /// heartbeat thread.
    flow: Arc<Inflow>,
    tx: Sender<Item>,
    rx: Receiver<Item>,
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
    /// A queue of at most `capacity` messages and `bytes`, remembering
    /// `window` ids.
    pub(crate) fn new(
        (capacity, bytes): (usize, usize),
        window: usize,
        overflow: Overflow,
        ack_mode: AckMode,
        shared: Arc<Shared>,
        polling: bool,
    ) -> Self {
        // Bounded by `flow` (see the module's doc), not by the channel.
        let (tx, rx) = crossbeam_channel::unbounded();
        Inbox {
            flow: Arc::new(Inflow::new(capacity, bytes)),
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
    pub(crate) fn attach(&self, ledger: &Ledger, restored: &Restored) {
        let mut seen = lock(&self.seen);
        seen.ids = ledger.ids();
        seen.cursor.clone_from(&restored.cursor);
        drop(seen);
    }

    /// The consumer's end of the queue.
    pub(crate) fn receiver(&self) -> &Receiver<Item> {
        &self.rx
    }

    /// The queue's flow control.
    pub(crate) fn flow(&self) -> &Arc<Inflow> {
        &self.flow
    }

    /// The highest cursor of any message queued so far.
    pub(crate) fn cursor(&self) -> Option<Cursor> {
        lock(&self.seen).cursor.clone()
    }

    /// `true` when a message of `len` bytes would be queued now.
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.flow.queued() < self.flow.capacity && self.flow.bytes.would_fit(len)
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
        let budget = &self.flow.bytes;
        loop {
            let len = m.enter();
            // Full in bytes or in messages, whichever comes first.
            let refused = if self.flow.reserve(1) == 0 {
                not_taken(budget, &m, len);
                m
            } else if budget.try_take(len) {
                // The channel refuses only when the consumer is gone.
                if let Err(e) = self.tx.try_send(Item::One(m)) {
                    self.flow.out(1);
                    budget.release(e.into_inner().leave());
                    return Offer::Closed;
                }
                break;
            } else {
                self.flow.out(1);
                not_taken(budget, &m, len);
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
                Overflow::DropOldest => {
                    if self.drop_oldest() {
                        m = refused;
                        continue;
                    }
                    // Nothing left to drop: the bytes are in the batch
                    // the application is being handed. Queue anyway.
                    self.flow.force(1);
                    budget.force(refused.enter());
                    if let Err(e) = self.tx.try_send(Item::One(refused)) {
                        self.flow.out(1);
                        budget.release(e.into_inner().leave());
                        return Offer::Closed;
                    }
                    break;
                }
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
        self.flow.arrived(self.flow.queued());
    }

    /// Drops the oldest queued item (the overflow policy): `false` when
    /// the queue is empty. A read queued in one piece is dropped whole.
    fn drop_oldest(&self) -> bool {
        let Ok(old) = self.rx.try_recv() else {
            return false;
        };
        let n = old.len();
        self.flow.out(n);
        self.flow.bytes.release(old.leave());
        self.shared.counters.dropped.fetch_add(n as u64, Relaxed);
        true
    }

    /// Offers a read's small messages in one piece (the plain protocol,
    /// no polling: nothing to dedupe, no cursor, no ack), without the
    /// doorbell. As many as fit are queued, as one item; with
    /// backpressure the rest is handed back.
    pub(crate) fn offer_run_unrung(&self, mut run: Run) -> RunOffer {
        let budget = &self.flow.bytes;
        run.set_seq(self.shared.take_seqs(run.len()));
        let mut queued = 0;
        loop {
            let n = run.len();
            if n == 0 {
                return RunOffer::Queued { queued, rest: None };
            }
            let k = self.flow.reserve(n);
            if k > 0 {
                let rest = (k < n).then(|| run.split_off(k));
                let len = run.enter();
                if budget.try_take(len) {
                    match self.tx.try_send(Item::Run(run)) {
                        Ok(()) => {
                            queued += k;
                            match rest {
                                Some(r) => {
                                    run = r;
                                    continue;
                                }
                                None => return RunOffer::Queued { queued, rest: None },
                            }
                        }
                        Err(e) => {
                            // The consumer is gone (the channel's only
                            // refusal: it is unbounded).
                            self.flow.out(k);
                            budget.release(e.into_inner().leave());
                            return RunOffer::Closed;
                        }
                    }
                }
                let back = run.leave();
                settle(budget, len, back);
                self.flow.out(k);
                if let Some(r) = rest {
                    run.join(r);
                }
            }
            match self.overflow {
                Overflow::Backpressure => {
                    return RunOffer::Queued {
                        queued,
                        rest: Some(run),
                    }
                }
                Overflow::DropOldest => {
                    if self.drop_oldest() {
                        continue;
                    }
                    // Nothing left to drop: queue anyway (as above).
                    self.flow.force(n);
                    budget.force(run.enter());
                    if let Err(e) = self.tx.try_send(Item::Run(run)) {
                        self.flow.out(n);
                        budget.release(e.into_inner().leave());
                        return RunOffer::Closed;
                    }
                    return RunOffer::Queued {
                        queued: queued + n,
                        rest: None,
                    };
                }
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // No more messages can come: let go of the only sender first, so
        // the consumer the doorbell wakes sees the queue closed.
        let (gone, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.tx, gone));
        self.flow.ring();
    }
}

/// Settles a [`Message::enter`] whose bytes the budget did not take: the
/// message never came in. For a message in shared storage the entry
/// counted it in its turn's custody, and the leave that undoes it may find
/// another message of the turn entered meanwhile, believing the turn
/// paid for: the difference is forced or given back, so the budget holds a
/// turn exactly while any of its messages is in custody.
fn not_taken(budget: &Budget, m: &Message, entered: usize) {
    settle(budget, entered, m.leave());
}

/// See [`not_taken`] (also for a read offered in one piece): `entered`
/// bytes were meant to be taken and were not; the leave answered `back`.
fn settle(budget: &Budget, entered: usize, back: usize) {
    if entered > back {
        budget.force(entered - back);
    } else {
        budget.release(back - entered);
    }
}

/// What became of a message the io thread offered (see [`Intake`]).
#[derive(Debug)]
pub(crate) enum Taken {
    /// Queued, or a duplicate: the ack to write now, if any. `rang`: this
    /// message made as many as the consumer waits for, and its doorbell
    /// was rung.
    Queued { ack: Option<Frame>, rang: bool },
    /// The queue is full: the message is held and reading is paused until
    /// the consumer makes room ([`Intake::retry`]).
    Held,
    /// The queue was full while the connection closes: the message is left
    /// to the server (not acked) and counted as dropped, so `close()` is
    /// not held up by a consumer that takes nothing.
    Dropped,
    /// The consumer is gone.
    Closed,
}

/// The io thread's end of the inbox: offers what the connection delivers,
/// holds the message a full queue refused (reading stays paused until the
/// queue takes it), and rings the consumer's doorbell once per read turn
/// rather than once per message.
pub(crate) struct Intake {
    inbox: Arc<Inbox>,
    /// What waits for room; reading is paused while there is something.
    held: Option<Item>,
    /// Messages were queued since the doorbell was last considered.
    unrung: bool,
    /// Messages queued by this read turn.
    in_turn: usize,
}

impl Intake {
    /// A connection's intake: reading starts unpaused.
    pub(crate) fn new(inbox: Arc<Inbox>) -> Self {
        inbox.flow.pause(false);
        Intake {
            inbox,
            held: None,
            unrung: false,
            in_turn: 0,
        }
    }

    /// `true` while a message waits for room (reading is paused).
    pub(crate) fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// `true` when a held message should be offered again now: the
    /// consumer has made room since it was refused.
    pub(crate) fn has_room(&self) -> bool {
        self.held.is_some() && !self.inbox.flow.is_paused()
    }

    /// A read turn begins.
    pub(crate) fn turn(&mut self) {
        self.in_turn = 0;
    }

    /// Offers a message the connection delivered. `closing`: the close
    /// handshake is under way, so a full queue drops it rather than hold.
    pub(crate) fn offer(&mut self, m: Message, closing: bool) -> Taken {
        debug_assert!(
            self.held.is_none(),
            "nothing is read while a message is held"
        );
        let len = m.entry_cost();
        match self.inbox.offer_unrung(m, false) {
            Offer::Queued { ack } => {
                let rang = self.queued(1);
                Taken::Queued { ack, rang }
            }
            // A duplicate is acked again, so the server stops sending it.
            Offer::Duplicate { ack } => Taken::Queued { ack, rang: false },
            Offer::Closed => Taken::Closed,
            Offer::Full(_) if closing => {
                self.inbox.shared.counters.dropped.fetch_add(1, Relaxed);
                Taken::Dropped
            }
            Offer::Full(m) => self.hold(Item::One(m), len),
        }
    }

    /// Offers a read's small messages in one piece (the plain protocol);
    /// as [`Intake::offer`], what does not fit is held.
    pub(crate) fn offer_run(&mut self, run: Run, closing: bool) -> Taken {
        debug_assert!(
            self.held.is_none(),
            "nothing is read while a message is held"
        );
        match self.inbox.offer_run_unrung(run) {
            RunOffer::Closed => Taken::Closed,
            RunOffer::Queued { queued, rest } => {
                let rang = self.queued(queued);
                match rest {
                    None => Taken::Queued { ack: None, rang },
                    Some(rest) if closing => {
                        let n = rest.len() as u64;
                        self.inbox.shared.counters.dropped.fetch_add(n, Relaxed);
                        Taken::Dropped
                    }
                    Some(rest) => {
                        let len = rest.entry_cost();
                        self.hold(Item::Run(rest), len)
                    }
                }
            }
        }
    }

    /// `n` messages were queued: `true` when that rang the doorbell.
    fn queued(&mut self, n: usize) -> bool {
        if n == 0 {
            return false;
        }
        self.unrung = true;
        let before = self.in_turn;
        self.in_turn += n;
        // Once per turn at most: when the count passes what the consumer
        // waits for. The check at the turn's end is the one that counts.
        let want = self.inbox.flow.wanted();
        let rang = before < want && self.in_turn >= want;
        if rang {
            self.ring();
        }
        rang
    }

    /// Holds what the full queue refused and pauses reading.
    fn hold(&mut self, item: Item, len: usize) -> Taken {
        self.held = Some(item);
        // Sleep until the consumer makes room (it wakes the io thread past
        // the half-way mark). It may have made room before it could see
        // the flag: if the message fits now, the flag goes down again and
        // the io thread retries at once, or it could sleep for ever; if it
        // does not, sleeping is right (no spinning on a message larger
        // than the room a half-empty queue has).
        self.inbox.flow.pause(true);
        if self.inbox.fits(len) {
            self.inbox.flow.pause(false);
        }
        Taken::Held
    }

    /// Offers what is held again; `None` when nothing is. Reading resumes
    /// unless the answer is [`Taken::Held`].
    pub(crate) fn retry(&mut self, closing: bool) -> Option<Taken> {
        let taken = match self.held.take()? {
            Item::One(m) => self.offer(m, closing),
            Item::Run(r) => self.offer_run(r, closing),
        };
        if self.held.is_none() {
            self.inbox.flow.pause(false);
        }
        Some(taken)
    }

    /// Rings the consumer's doorbell if messages were queued since the last
    /// call and it waits for no more than are queued. Called as soon as a
    /// read turn has queued what the consumer waits for, when the read
    /// ends, at the end of every turn and before the thread sleeps: a
    /// message queued is never left waiting for a doorbell that is not rung.
    pub(crate) fn ring(&mut self) {
        if std::mem::take(&mut self.unrung) {
            self.inbox.ring();
        }
    }

    /// `true` when nothing waits for the application: no byte of the
    /// budget is held (queue, batches being assembled, acks not written).
    pub(crate) fn settled(&self) -> bool {
        self.inbox.flow.bytes.used() == 0
    }

    /// Gives back the budget's share of acks that were written.
    pub(crate) fn acks_written(&self, bytes: usize) {
        self.inbox.flow.bytes.release(bytes);
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        // The connection is over: a held message stays with the server
        // (not acked), and nobody is reading to pause.
        self.ring();
        self.inbox.flow.pause(false);
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
        // Without a cursor (media URLs): by content alone.
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

    fn inbox(cap: usize, window: usize, overflow: Overflow) -> (Inbox, TestRx) {
        let (i, rx, _) = built(cap, window, overflow, AckMode::Queued, true);
        (i, rx)
    }

    /// An inbox of `cap` messages (no byte bound), its queue's receiving
    /// end, and the counters it keeps.
    fn built(
        cap: usize,
        window: usize,
        overflow: Overflow,
        ack_mode: AckMode,
        polling: bool,
    ) -> (Inbox, TestRx, Arc<Shared>) {
        let (shared, _events) = Shared::new(4, (usize::MAX, usize::MAX));
        let i = Inbox::new(
            (cap, usize::MAX),
            window,
            overflow,
            ack_mode,
            shared.clone(),
            polling,
        );
        let rx = TestRx::of(&i);
        (i, rx, shared)
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
        let (i, rx, _) = built(1, 10, Overflow::Backpressure, AckMode::Queued, false);
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
        let (i, rx, _) = built(4, 10, Overflow::Backpressure, AckMode::Delivered, false);
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

    /// A one-message queue in `AckMode::Queued`, and its io end.
    fn intake() -> (Intake, TestRx, Arc<Shared>) {
        let (i, rx, shared) = built(1, 10, Overflow::Backpressure, AckMode::Queued, false);
        (Intake::new(Arc::new(i)), rx, shared)
    }

    #[test]
    fn the_ack_comes_back_for_a_new_message_and_again_for_a_repeated_one() {
        let (mut i, rx, _) = intake();
        let Taken::Queued { ack: Some(a), .. } = i.offer(with_ack("a"), false) else {
            panic!("queued with its ack")
        };
        assert_eq!(a.as_text(), Some("ack a"));
        rx.recv().unwrap();
        // A duplicate is acked again, so the server stops resending it.
        assert!(matches!(
            i.offer(with_ack("a"), false),
            Taken::Queued { ack: Some(_), .. }
        ));
    }

    #[test]
    fn a_full_queue_holds_the_message_and_pauses_until_room_then_acks_it() {
        let (mut i, rx, _) = intake();
        let flow = i.inbox.flow().clone();
        assert!(matches!(i.offer(msg("a", 1), false), Taken::Queued { .. }));
        assert!(matches!(i.offer(with_ack("b"), false), Taken::Held));
        assert!(i.holding() && flow.is_paused() && !i.has_room());
        // Still full at the next look: held again, still paused.
        assert!(matches!(i.retry(false), Some(Taken::Held)));
        assert!(i.holding() && flow.is_paused());
        // The consumer takes one: below the resume mark, the io thread is
        // to be woken, and the held message goes in with its ack.
        rx.recv().unwrap();
        assert!(flow.taken(rx.len()), "a paused reader is woken");
        let Some(Taken::Queued { ack: Some(a), .. }) = i.retry(false) else {
            panic!("queued at last")
        };
        assert_eq!(a.as_text(), Some("ack b"));
        assert!(!i.holding() && !flow.is_paused());
        assert_eq!(i.retry(false).map(|_| ()), None, "nothing held");
    }

    #[test]
    fn a_message_that_finds_the_queue_full_while_closing_is_dropped_unacked() {
        let (mut i, rx, shared) = intake();
        i.offer(msg("a", 1), false);
        assert!(matches!(i.offer(with_ack("b"), true), Taken::Dropped));
        assert!(!i.holding(), "close() is not held up");
        assert!(!i.inbox.flow().is_paused());
        assert_eq!(shared.counters.dropped.load(Relaxed), 1);
        assert_eq!(rx.len(), 1);
    }

    /// A read of `n` small text messages `"0"`, `"1"`… in one piece.
    fn run(n: usize) -> Run {
        let mut text = String::with_capacity(n);
        for k in 0..n {
            text.push(char::from(b'0' + (k % 10) as u8));
        }
        let spans = (0..n as u32)
            .map(|at| crate::message::Span {
                at,
                len: 1,
                text: true,
            })
            .collect();
        let g = crate::message::Gathered {
            turn: crate::message::Turn::new(text, Vec::new()),
            spans,
        };
        Run::new(g, Instant::now())
    }

    fn texts(rx: &TestRx) -> Vec<String> {
        rx.try_iter()
            .map(|m| m.text().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_read_in_one_piece_is_one_item_its_messages_in_order_and_paid_for_once() {
        let (shared, _events) = Shared::new(4, (usize::MAX, usize::MAX));
        let i = Inbox::new(
            (10, 1000),
            10,
            Overflow::Backpressure,
            AckMode::Finished,
            shared.clone(),
            false,
        );
        let rx = TestRx::of(&i);
        assert!(matches!(
            i.offer(anon("x", None), false),
            Offer::Queued { .. }
        ));
        let RunOffer::Queued {
            queued: 4,
            rest: None,
        } = i.offer_run_unrung(run(4))
        else {
            panic!("all queued")
        };
        assert_eq!(
            (rx.len(), i.receiver().len()),
            (5, 2),
            "5 messages, 2 items"
        );
        // The read's storage (4 bytes) is held once, beside the message.
        assert_eq!(i.flow().bytes.used(), 1 + 4);
        let got: Vec<Message> = rx.try_iter().collect();
        let seqs: Vec<u64> = got.iter().map(Message::seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4], "numbered in a row");
        let t: Vec<&str> = got.iter().map(|m| m.text().unwrap()).collect();
        assert_eq!(t, ["x", "0", "1", "2", "3"]);
        // Handed out one by one: the storage goes with the last.
        let mut given = got.iter().map(Message::leave).collect::<Vec<_>>();
        given.remove(0);
        assert_eq!(given, [0, 0, 0, 4]);
    }

    #[test]
    fn a_read_larger_than_the_room_is_split_and_the_rest_held_until_room() {
        let (shared, _events) = Shared::new(4, (usize::MAX, usize::MAX));
        let i = Arc::new(Inbox::new(
            (3, usize::MAX),
            10,
            Overflow::Backpressure,
            AckMode::Finished,
            shared,
            false,
        ));
        let rx = TestRx::of(&i);
        let mut intake = Intake::new(i.clone());
        assert!(matches!(intake.offer_run(run(5), false), Taken::Held));
        assert!(intake.holding() && i.flow().is_paused());
        assert_eq!(texts(&rx), ["0", "1", "2"]);
        let Some(Taken::Queued { .. }) = intake.retry(false) else {
            panic!("the rest queued once there is room")
        };
        assert!(!intake.holding());
        assert_eq!(texts(&rx), ["3", "4"]);
    }

    #[test]
    fn with_drop_oldest_a_read_queued_in_one_piece_is_dropped_whole() {
        let (i, rx, shared) = built(3, 10, Overflow::DropOldest, AckMode::Finished, false);
        let RunOffer::Queued { queued: 3, .. } = i.offer_run_unrung(run(3)) else {
            panic!("queued")
        };
        assert!(matches!(
            i.offer(anon("new", None), false),
            Offer::Queued { .. }
        ));
        assert_eq!(shared.counters.dropped.load(Relaxed), 3);
        assert_eq!(texts(&rx), ["new"]);
        assert_eq!(i.flow().bytes.used(), 3, "only the new message's bytes");
    }

    #[test]
    fn a_read_that_finds_the_queue_full_while_closing_is_dropped_and_counted() {
        let (i, rx, shared) = built(2, 10, Overflow::Backpressure, AckMode::Finished, false);
        let mut intake = Intake::new(Arc::new(i));
        assert!(matches!(intake.offer_run(run(5), true), Taken::Dropped));
        assert!(!intake.holding());
        assert_eq!(shared.counters.dropped.load(Relaxed), 3);
        assert_eq!(texts(&rx), ["0", "1"]);
    }
}
