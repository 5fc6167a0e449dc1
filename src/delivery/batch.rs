//! A batch: messages handed to the application together, and what
//! finishing them records (the ledger's ids and cursor, the acks).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::frame::{Cursor, Frame};
use crate::message::Message;

/// Where the unfinished messages of a dropped batch go: back to the front
/// of the receiver's queue, to be handed out again first.
#[derive(Clone)]
pub(crate) struct Back {
    /// Puts the messages back.
    pub put: std::sync::Arc<dyn Fn(Vec<Message>) + Send + Sync>,
    /// Batches handed out and not yet let go (see [`Holding`]).
    pub out: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One batch (or its iterator) in the application's hands: counted in
/// [`Back::out`] from hand-out until it is dropped, so the io thread can
/// tell when the application is done with everything it was given.
pub(crate) struct Holding(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Holding {
    fn new(out: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        out.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Holding(out.clone())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Messages handed to the application together, in the order the server
/// sent them. Never empty, until [`Batch::take_frames`] takes them.
///
/// **A message is finished when the loop over its batch moves past it, or
/// when the application says so; dropping a batch abandons what is not
/// finished.** Moving past: `for m in &batch` (or `batch.iter()`, or
/// `for m in batch`) asks for the next message, or ends. Saying so:
/// [`Batch::done`], [`Batch::finish_first`], [`Batch::into_messages`].
/// So an early `return`, `?`, `break` or a panic in the loop leaves the
/// message being processed, and those after it, unfinished.
///
/// A finished message is recorded (its id and cursor; with `state_dir`, on
/// disk) and, with [`crate::AckMode::Finished`] (the default), acked, when
/// the batch (or its iterator) is dropped. An abandoned message is neither:
/// it goes back to the front of the queue and the receiver hands it out
/// again, before newer ones (after [`crate::Client::close`], it is simply
/// let go: the server delivers it again next time). A process that dies holding a batch never
/// acked it, so the server redelivers its messages. A clone of a batch
/// carries no acks and finishes nothing.
///
/// `for m in &batch` costs nothing; `for m in batch` keeps a copy of the
/// message in hand until the loop moves on, so that it can be handed out
/// again if the loop ends early.
pub struct Batch {
    messages: Vec<Message>,
    acks: Option<Finish>,
    /// How many messages, from the first, are finished.
    finished: AtomicUsize,
    /// `None` for a clone.
    back: Option<Back>,
    /// Dropped after the batch settled (fields drop after `Drop::drop`).
    holding: Option<Holding>,
}

/// What finishing a batch records, one entry per message: its id and
/// cursor (the ledger's dedupe and resume point) and, with
/// [`crate::AckMode::Finished`], its ack, sent in order once recorded.
pub(crate) struct Finish {
    pub entries: Vec<Finished>,
    pub ledger: std::sync::Arc<crate::durable::Ledger>,
}

/// One message's part of a [`Finish`].
pub(crate) struct Finished {
    pub id: Option<std::sync::Arc<str>>,
    pub cursor: Option<Cursor>,
    pub ack: Option<Frame>,
}

impl Finish {
    fn is_empty(&self) -> bool {
        self.entries
            .iter()
            .all(|e| e.id.is_none() && e.cursor.is_none() && e.ack.is_none())
    }

    /// Records the batch as finished; its acks go when the ledger says.
    pub(crate) fn send(self) {
        let mut ids = Vec::with_capacity(self.entries.len());
        let mut acks = Vec::new();
        let mut cursor: Option<Cursor> = None;
        for e in self.entries {
            ids.extend(e.id);
            acks.extend(e.ack);
            if let Some(c) = e.cursor {
                crate::frame::raise(&mut cursor, c);
            }
        }
        self.ledger.finished(ids, cursor, acks);
    }
}

impl fmt::Debug for Finish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} messages to record on finish", self.entries.len())
    }
}

/// Records (and acks) a batch whose messages were all taken: every one of
/// the `n` is finished.
fn settle_all(acks: Option<Finish>, n: usize) {
    if let Some(mut f) = acks {
        f.entries.truncate(n);
        if !f.entries.is_empty() {
            f.send();
        }
    }
}

/// Finishes the first `n` of `messages` (records them, sends their acks)
/// and hands the rest back, their acks with them, through `back`.
fn settle(mut messages: Vec<Message>, acks: Option<Finish>, n: usize, back: Option<&Back>) {
    let n = n.min(messages.len());
    let mut rest_acks = Vec::new();
    if let Some(mut f) = acks {
        if n < f.entries.len() {
            rest_acks = f.entries.split_off(n);
        }
        if !f.entries.is_empty() {
            f.send();
        }
    }
    if n < messages.len() {
        let Some(back) = back else { return };
        let mut rest = messages.split_off(n);
        log::debug!(target: "heartline::delivery",
            "{} of {} messages dropped unfinished: handed out again", rest.len(), rest.len() + n);
        for (m, e) in rest.iter_mut().zip(rest_acks) {
            if let Some(a) = e.ack {
                m.set_ack(a);
            }
        }
        (back.put)(rest);
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("messages", &self.messages)
            .field("finished", &self.finished.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Clone for Batch {
    fn clone(&self) -> Self {
        // The acks stay with the original: one finish, one ack each; and
        // the original alone hands back what it did not finish.
        Batch {
            messages: self.messages.clone(),
            acks: None,
            finished: AtomicUsize::new(0),
            back: None,
            holding: None,
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let n = *self.finished.get_mut();
        let messages = std::mem::take(&mut self.messages);
        settle(messages, self.acks.take(), n, self.back.as_ref());
    }
}

impl Batch {
    pub(crate) fn new(messages: Vec<Message>, acks: Option<Finish>, back: Option<Back>) -> Self {
        debug_assert!(!messages.is_empty());
        // Nothing to record or send: no work on finish.
        let acks = acks.filter(|r| !r.is_empty());
        let holding = back.as_ref().map(|b| Holding::new(&b.out));
        Batch {
            messages,
            acks,
            finished: AtomicUsize::new(0),
            back,
            holding,
        }
    }

    /// Splits the batch in two at `at`: this batch keeps the first `at`
    /// messages, the returned one the rest, and each is finished (or
    /// abandoned) on its own. `None` (and no change) when `at` is 0 or not
    /// below `len()`: a batch is never empty.
    pub fn split_off(&mut self, at: usize) -> Option<Batch> {
        if at == 0 || at >= self.messages.len() {
            return None;
        }
        let messages = self.messages.split_off(at);
        let acks = self.acks.as_mut().map(|f| Finish {
            entries: f.entries.split_off(at.min(f.entries.len())),
            ledger: f.ledger.clone(),
        });
        let done = self.finished.get_mut();
        let rest = Batch::new(messages, acks, self.back.clone());
        rest.finished.store(done.saturating_sub(at), Relaxed);
        *done = (*done).min(at);
        Some(rest)
    }

    /// The number of messages (at least one, until [`Batch::take_frames`]).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Always `false`: heartline never hands out an empty batch. Present
    /// because `len` is.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages, oldest first. Reading them finishes nothing: see
    /// [`Batch::iter`] and [`Batch::done`].
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The messages of one kind, oldest first (a text pool:
    /// `batch.of_kind("text")`). A message of several kinds is in each.
    /// Reading them finishes nothing.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Message> + 'a {
        self.messages.iter().filter(move |m| m.is_kind(kind))
    }

    /// Iterates over the messages, oldest first. Each is finished when the
    /// iterator is asked for the next one, or has ended: a loop left early
    /// leaves the message in hand and those after it unfinished.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            batch: self,
            next: 0,
            ended: false,
        }
    }

    /// Says the first `n` messages are finished (as a loop that moved past
    /// them would). Never takes back what was finished.
    pub fn finish_first(&self, n: usize) {
        self.finished.fetch_max(n.min(self.messages.len()), Relaxed);
    }

    /// Says the application has finished with all of these messages: they
    /// are recorded, and with [`crate::AckMode::Finished`] their acks go
    /// out now.
    pub fn done(self) {
        self.finish_first(self.messages.len());
    }

    /// Takes the payloads out and finishes every message (as
    /// [`Batch::done`]): a message with storage of its own gives it up
    /// without a copy (the small messages of a read, which share theirs,
    /// are copied out). The batch stays in hand, empty, until it is
    /// dropped: for relaying or answering large messages. The connection
    /// failing on a bad frame behind them waits for that (at most
    /// `timeouts.close`), so what the application sends before dropping
    /// the batch goes out ahead of the close.
    pub fn take_frames(&mut self) -> Vec<Frame> {
        let all = std::mem::take(&mut self.messages);
        *self.finished.get_mut() = 0;
        settle_all(self.acks.take(), all.len());
        all.into_iter().map(Message::into_frame).collect()
    }

    /// Takes the messages. This finishes them all, as [`Batch::done`].
    pub fn into_messages(mut self) -> Vec<Message> {
        let all = std::mem::take(&mut self.messages);
        *self.finished.get_mut() = all.len();
        settle_all(self.acks.take(), all.len());
        all
    }
}

/// The iterator of `for m in &batch` and [`Batch::iter`]: a message is
/// finished once the iterator is asked for the next one, or has ended.
#[derive(Debug)]
pub struct Iter<'a> {
    batch: &'a Batch,
    next: usize,
    ended: bool,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Message;
    fn next(&mut self) -> Option<&'a Message> {
        match self.batch.messages.get(self.next) {
            Some(m) => {
                self.next += 1;
                Some(m)
            }
            None => {
                self.ended = true;
                None
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.batch.messages.len().saturating_sub(self.next);
        (n, Some(n))
    }
}

impl Drop for Iter<'_> {
    fn drop(&mut self) {
        // Recorded once, when the loop is left: every message it moved
        // past; the one in hand too only if it asked for more and got
        // none.
        let passed = if self.ended {
            self.next
        } else {
            self.next.saturating_sub(1)
        };
        self.batch.finish_first(passed);
    }
}

/// The iterator of `for m in batch`: owns the messages. A message is
/// finished once the iterator is asked for the next one, or has ended; when
/// it is dropped, what is finished is recorded (and acked, with
/// [`crate::AckMode::Finished`]) and the rest handed out again.
pub struct IntoIter {
    messages: std::vec::IntoIter<Message>,
    acks: Option<Finish>,
    /// Messages handed to the loop so far.
    yielded: usize,
    /// A copy of the message in hand, until the loop asks for the next one.
    current: Option<Message>,
    back: Option<Back>,
    /// Dropped after the iterator settled.
    _holding: Option<Holding>,
}

impl fmt::Debug for IntoIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter")
            .field("left", &self.messages.len())
            .finish_non_exhaustive()
    }
}

impl Iterator for IntoIter {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        self.current = None; // moved past: finished
        let m = self.messages.next()?;
        self.yielded += 1;
        if self.back.is_some() {
            self.current = Some(m.clone());
        }
        Some(m)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.messages.size_hint()
    }
}

impl Drop for IntoIter {
    fn drop(&mut self) {
        let in_hand = self.current.take();
        let finished = self.yielded - usize::from(in_hand.is_some());
        let mut rest: Vec<Message> = in_hand.into_iter().collect();
        rest.extend(self.messages.by_ref());
        // The finished ones are no longer here: settle what is left
        // against the entries after them.
        let mut acks = self.acks.take();
        if let Some(f) = acks.as_mut() {
            let tail = f.entries.split_off(finished.min(f.entries.len()));
            let head = std::mem::replace(&mut f.entries, tail);
            if !head.is_empty() {
                Finish {
                    entries: head,
                    ledger: f.ledger.clone(),
                }
                .send();
            }
        }
        if !rest.is_empty() {
            settle(rest, acks, 0, self.back.as_ref());
        }
    }
}

impl IntoIterator for Batch {
    type Item = Message;
    type IntoIter = IntoIter;
    fn into_iter(mut self) -> IntoIter {
        IntoIter {
            messages: std::mem::take(&mut self.messages).into_iter(),
            acks: self.acks.take(),
            yielded: 0,
            current: None,
            back: self.back.take(),
            _holding: self.holding.take(),
        }
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Message;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}
