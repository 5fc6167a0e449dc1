//! The receivers of state changes: [`Events`], and [`Updates`], which
//! hands out batches and state changes in one loop, in the order they
//! happened on the connection.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError as ChannelTimeout};

use crate::delivery::batch::Batch;
use crate::delivery::receiver::Batches;
use crate::error::{lock, RecvError, RecvTimeoutError, TryRecvError};
use crate::message::Event;
use crate::shared::Stamped;

use super::Lifeline;

/// Receives state changes ([`Event`]s), in order. Also a blocking iterator
/// that ends after the client is closed and every event was read. Holds the
/// last `Limits::event_capacity` events when nobody reads it. Clones share one
/// queue: each event goes to one of them.
#[derive(Clone)]
pub struct Events {
    pub(crate) rx: Receiver<Stamped>,
    /// Keeps the client running while this receiver exists.
    pub(crate) _life: Arc<Lifeline>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("queued", &self.rx.len())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Blocks until the next state change.
    ///
    /// # Errors
    /// [`RecvError`] after the final `Closed` event was read.
    pub fn recv(&self) -> std::result::Result<Event, RecvError> {
        self.rx.recv().map(|s| s.event).map_err(|_| RecvError)
    }

    /// The next state change, if one is waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> std::result::Result<Event, TryRecvError> {
        self.rx.try_recv().map(|s| s.event).map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => TryRecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => TryRecvError::Closed,
        })
    }

    /// Waits up to `timeout` for the next state change.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<Event, RecvTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.recv_deadline(d),
            None => self.recv().map_err(|_| RecvTimeoutError::Closed),
        }
    }

    /// Waits until `deadline` for the next state change.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_deadline(&self, deadline: Instant) -> std::result::Result<Event, RecvTimeoutError> {
        self.rx
            .recv_deadline(deadline)
            .map(|s| s.event)
            .map_err(|e| match e {
                ChannelTimeout::Timeout => RecvTimeoutError::Timeout,
                ChannelTimeout::Disconnected => RecvTimeoutError::Closed,
            })
    }
}

impl Iterator for Events {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv().ok()
    }
}

/// One thing that happened on the connection: a state change or a batch.
#[derive(Debug)]
pub enum Update {
    /// The state changed.
    Event(Event),
    /// Messages arrived.
    Batch(Batch),
}

/// Receives state changes and batches together, in the order they
/// happened on the connection: an `Open` before the first batch it
/// carried, a `Reconnecting` or `Closed` after the last batch of the
/// connection that ended. (After polling, `Open` comes once the new socket
/// has proved itself with its first message, so that message may come
/// just before it.) One thread, one loop:
///
/// ```no_run
/// use heartline::{Client, Update};
/// let client = Client::builder("wss://push.example.com/ws").build()?;
/// for update in client.updates() {
///     match update {
///         Update::Event(e) => println!("state: {}", e.state.name()),
///         Update::Batch(batch) => {
///             for m in &batch {
///                 println!("{}", m.text().unwrap_or("<binary>"));
///             }
///         }
///     }
/// }
/// # Ok::<(), heartline::Error>(())
/// ```
///
/// It shares its queues with [`crate::Client::batches`] and [`crate::Client::events`]:
/// each batch and each event goes to one receiver, so use this one alone.
/// A blocking iterator that ends after the client is closed, the final
/// `Closed` event was read and every message was handed out. Keeps the
/// client running while it exists, as the other receivers do.
#[derive(Clone, Debug)]
pub struct Updates {
    pub(crate) batches: Batches,
    pub(crate) events: Events,
    /// An event taken from the channel that waits for the messages queued
    /// before it.
    pub(crate) held: Arc<Mutex<Option<Stamped>>>,
}

impl Updates {
    /// Blocks until the next update.
    ///
    /// # Errors
    /// [`RecvError`] once the client is closed and everything was handed
    /// out.
    pub fn recv(&self) -> std::result::Result<Update, RecvError> {
        self.next_until(None).map_err(|_| RecvError)
    }

    /// The next update, if one is ready now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> std::result::Result<Update, TryRecvError> {
        match self.next_until(Some(Instant::now())) {
            Ok(u) => Ok(u),
            Err(RecvTimeoutError::Timeout) => Err(TryRecvError::Empty),
            Err(RecvTimeoutError::Closed) => Err(TryRecvError::Closed),
        }
    }

    /// Waits up to `timeout` for the next update.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<Update, RecvTimeoutError> {
        self.next_until(Instant::now().checked_add(timeout))
    }

    /// Waits until `deadline` for the next update.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_deadline(
        &self,
        deadline: Instant,
    ) -> std::result::Result<Update, RecvTimeoutError> {
        self.next_until(Some(deadline))
    }

    fn next_until(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<Update, RecvTimeoutError> {
        loop {
            let mut held = lock(&self.held);
            let mut events_done = false;
            if held.is_none() {
                match self.events.rx.try_recv() {
                    Ok(s) => *held = Some(s),
                    Err(crossbeam_channel::TryRecvError::Empty) => {}
                    Err(crossbeam_channel::TryRecvError::Disconnected) => events_done = true,
                }
            }
            let limit = held.as_ref().map(|s| s.at);
            match self.batches.poll(limit) {
                crate::delivery::receiver::Poll::Batch(b) => return Ok(Update::Batch(b)),
                crate::delivery::receiver::Poll::Wait { due, closed } => {
                    if let Some(s) = held.take() {
                        // Nothing queued before it is left: its turn.
                        return Ok(Update::Event(s.event));
                    }
                    if events_done && closed && due.is_none() {
                        return Err(RecvTimeoutError::Closed);
                    }
                    drop(held);
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    let until = match (due, deadline) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    // Wait for the doorbell (messages) or an event, holding
                    // nothing (clones may receive meanwhile); an event is
                    // taken from its channel only under `held`, in order.
                    let mut sel = crossbeam_channel::Select::new();
                    let bell = self.batches.doorbell();
                    let bell_at = sel.recv(bell);
                    if !events_done {
                        sel.recv(&self.events.rx);
                    }
                    let ready = match until {
                        Some(t) => sel.ready_deadline(t).ok(),
                        None => Some(sel.ready()),
                    };
                    if ready == Some(bell_at) {
                        let _ = bell.try_recv();
                    }
                }
            }
        }
    }
}

impl Iterator for Updates {
    type Item = Update;
    fn next(&mut self) -> Option<Update> {
        self.recv().ok()
    }
}
