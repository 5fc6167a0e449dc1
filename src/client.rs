//! The [`Client`] handle and its receivers.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError as ChannelTimeout, Sender};

use crate::config::{AckMode, ClientBuilder, Config};
use crate::error::{RecvError, RecvTimeoutError, Result, SendError, TryRecvError, TrySendError};
use crate::inbox::Inbox;
use crate::machine::batch::Window;
use crate::message::{Batch, Event, Frame, Message, State};
use crate::shared::{lock, Shared, Stats};
use crate::threads::supervisor::{self, Control};

/// A handle to one kept-alive WebSocket connection.
///
/// Cheap to clone and `Send + Sync`: clones share the connection. Dropping
/// the last clone closes the client as [`Client::close`] does.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    control: Sender<Control>,
    outbound: Sender<Frame>,
    outbound_capacity: usize,
    send_timeout: Duration,
    batches: Batches,
    events: Events,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Starts building a client for a `ws://` or `wss://` URL.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    pub(crate) fn start(cfg: Config) -> Result<Client> {
        let (shared, events_rx) = Shared::new(
            cfg.event_capacity,
            cfg.inbound_capacity,
            cfg.inbound_bytes,
            cfg.outbound_bytes,
        );
        let (outbound_tx, outbound_rx) = crossbeam_channel::bounded(cfg.outbound_capacity);
        let (inbound_tx, inbound_rx) = crossbeam_channel::bounded(cfg.inbound_capacity);
        let inbox = Arc::new(Inbox::new(
            inbound_tx,
            inbound_rx.clone(),
            cfg.dedupe_window,
            cfg.overflow,
            shared.clone(),
            cfg.protocol.poll_request(None).is_some(),
        ));
        let acks = (cfg.ack_mode == AckMode::Delivered).then(|| outbound_tx.clone());
        let (control_tx, control_rx) = crossbeam_channel::bounded(4);
        let window = Window {
            window: cfg.batch_window,
            max: cfg.batch_max,
        };
        let outbound_capacity = cfg.outbound_capacity;
        let send_timeout = cfg.send_timeout;
        let handle = supervisor::spawn(supervisor::Setup {
            cfg: Arc::new(cfg),
            shared: shared.clone(),
            control: control_rx,
            outbound: outbound_rx,
            inbox,
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                shared: shared.clone(),
                control: control_tx,
                outbound: outbound_tx,
                outbound_capacity,
                send_timeout,
                batches: Batches {
                    rx: inbound_rx,
                    window,
                    shared,
                    pending: Arc::new(Mutex::new(Vec::new())),
                    acks,
                },
                events: Events { rx: events_rx },
                supervisor: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Queues a frame (text, binary, or JSON via `serde_json::Value`). It is
    /// sent at once when the socket is open, else after the next connect's
    /// hello frames, in order. Waits up to the configured `send_timeout` for
    /// room when the outbound queue is full (in frames or in bytes).
    ///
    /// # Errors
    /// Hands the frame back: [`SendError::Timeout`] when there is still no
    /// room after the wait, [`SendError::TooLarge`] for a frame larger than
    /// the whole `outbound_bytes` budget, [`SendError::Closed`] after
    /// [`Client::close`] or giving up.
    pub fn send(&self, frame: impl Into<Frame>) -> std::result::Result<(), SendError> {
        let frame = frame.into();
        if self.inner.shared.is_closed() {
            return Err(SendError::Closed(frame));
        }
        let len = frame.len();
        let budget = &self.inner.shared.outbound;
        if len > budget.limit() {
            return Err(SendError::TooLarge {
                frame,
                limit: budget.limit(),
            });
        }
        let deadline = Instant::now()
            .checked_add(self.inner.send_timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        if !budget.take_until(len, deadline) {
            return Err(self.timed_out(frame));
        }
        match self.inner.outbound.send_deadline(frame, deadline) {
            Ok(()) => {
                self.inner.shared.wake_io();
                Ok(())
            }
            Err(crossbeam_channel::SendTimeoutError::Timeout(frame)) => {
                budget.release(len);
                Err(self.timed_out(frame))
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(frame)) => {
                budget.release(len);
                Err(SendError::Closed(frame))
            }
        }
    }

    fn timed_out(&self, frame: Frame) -> SendError {
        SendError::Timeout {
            frame,
            capacity: self.inner.outbound_capacity,
            bytes: self.inner.shared.outbound.limit(),
        }
    }

    /// Queues a frame without waiting.
    ///
    /// # Errors
    /// Hands the frame back when the queue is full, the frame is larger than
    /// the outbound byte budget, or the client is closed.
    pub fn try_send(&self, frame: impl Into<Frame>) -> std::result::Result<(), TrySendError> {
        let frame = frame.into();
        if self.inner.shared.is_closed() {
            return Err(TrySendError::Closed(frame));
        }
        let len = frame.len();
        let budget = &self.inner.shared.outbound;
        if len > budget.limit() {
            return Err(TrySendError::TooLarge(frame));
        }
        if !budget.try_take(len) {
            return Err(TrySendError::Full(frame));
        }
        match self.inner.outbound.try_send(frame) {
            Ok(()) => {
                self.inner.shared.wake_io();
                Ok(())
            }
            Err(crossbeam_channel::TrySendError::Full(f)) => {
                budget.release(len);
                Err(TrySendError::Full(f))
            }
            Err(crossbeam_channel::TrySendError::Disconnected(f)) => {
                budget.release(len);
                Err(TrySendError::Closed(f))
            }
        }
    }

    /// Closes the connection: sends a close frame (code 1000), waits up to
    /// `close_timeout` for the server's, and joins every heartline thread.
    /// Never reconnects afterwards. Returns promptly, or within the handshake
    /// timeout if a connection attempt is in flight (within `poll_timeout`
    /// if a poll request is). Calling it again does
    /// nothing. Messages already received are still handed out by the
    /// batch receiver, which then ends.
    pub fn close(&self) {
        self.inner.close();
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.shared.state()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner
            .shared
            .snapshot(self.inner.outbound.len(), self.inner.batches.rx.len())
    }

    /// The batch receiver. Clones share one queue: each batch goes to one
    /// of them.
    pub fn batches(&self) -> Batches {
        self.inner.batches.clone()
    }

    /// Blocks until a batch is ready. See [`Batches::recv`].
    ///
    /// # Errors
    /// [`RecvError`] once the client is closed and every received message
    /// has been handed out.
    pub fn recv(&self) -> std::result::Result<Batch, RecvError> {
        self.inner.batches.recv()
    }

    /// A ready batch, if there is one. See [`Batches::try_recv`].
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> std::result::Result<Batch, TryRecvError> {
        self.inner.batches.try_recv()
    }

    /// Waits up to `timeout` for a batch. See [`Batches::recv_timeout`].
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<Batch, RecvTimeoutError> {
        self.inner.batches.recv_timeout(timeout)
    }

    /// The state-change receiver. Every change (connecting, open,
    /// reconnecting with attempt and delay, closed with reason) is delivered
    /// in order; blocks without polling.
    pub fn events(&self) -> Events {
        self.inner.events.clone()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn close(&self) {
        let handle = lock(&self.supervisor).take();
        let Some(handle) = handle else { return };
        // A full or disconnected control channel means a close is already
        // under way or the supervisor has stopped; either way, just join.
        let _ = self.control.try_send(Control::Close);
        if handle.thread().id() == std::thread::current().id() {
            // close() called from a heartline callback: the supervisor will
            // see the request when the callback returns.
            return;
        }
        if handle.join().is_err() {
            log::error!(target: "heartline::client", "the supervisor thread panicked");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Receives [`Batch`]es. Also a blocking iterator:
/// `for batch in client.batches() { … }` ends after the client is closed and
/// everything received has been handed out.
///
/// A batch is handed out `batch_window` after its first message arrived (the
/// window counts from arrival, so messages that waited in the queue for a
/// slow consumer do not wait again), or as soon as it holds `batch_max`
/// messages.
#[derive(Clone)]
pub struct Batches {
    rx: Receiver<Message>,
    window: Window,
    shared: Arc<Shared>,
    /// Messages taken from the queue for a batch whose window has not ended
    /// when `recv_timeout` gave up; the next call continues that batch.
    pending: Arc<Mutex<Vec<Message>>>,
    /// In [`AckMode::Delivered`]: where acks go when a batch is handed out.
    acks: Option<Sender<Frame>>,
}

impl Batches {
    /// Blocks until a batch is ready.
    ///
    /// # Errors
    /// [`RecvError`] once the client is closed and drained.
    pub fn recv(&self) -> std::result::Result<Batch, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// Waits until `deadline` for a batch.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_deadline(&self, deadline: Instant) -> std::result::Result<Batch, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    /// Waits up to `timeout` for a batch.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<Batch, RecvTimeoutError> {
        // A timeout too large for the clock means no timeout.
        self.recv_until(Instant::now().checked_add(timeout))
    }

    /// Returns a batch only if one is ready now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> std::result::Result<Batch, TryRecvError> {
        let Ok(mut pending) = self.pending.try_lock() else {
            return Err(TryRecvError::Empty);
        };
        let now = Instant::now();
        let mut closed = false;
        loop {
            if let Some(first) = pending.first() {
                if self
                    .window
                    .ready(now, first.received_at(), pending.len())
                    .is_none()
                {
                    break;
                }
            }
            match self.rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        self.shared.taken(self.rx.len());
        let ready = pending.first().is_some_and(|f| {
            closed
                || self
                    .window
                    .ready(now, f.received_at(), pending.len())
                    .is_none()
        });
        if ready {
            Ok(self.take(&mut pending))
        } else if closed {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    fn recv_until(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<Batch, RecvTimeoutError> {
        let mut pending = lock(&self.pending);
        loop {
            let now = Instant::now();
            let wait_until = match pending.first() {
                Some(first) => match self.window.ready(now, first.received_at(), pending.len()) {
                    None => {
                        self.fill(&mut pending);
                        return Ok(self.take(&mut pending));
                    }
                    Some(due) => Some(deadline.map_or(due, |d| d.min(due))),
                },
                None => deadline,
            };
            let got = match wait_until {
                None => self.rx.recv().map_err(|_| ChannelTimeout::Disconnected),
                Some(t) => self.rx.recv_deadline(t),
            };
            match got {
                Ok(m) => {
                    pending.push(m);
                    // Take whatever else is ready without blocking again:
                    // one pass per burst instead of one wait per message.
                    self.fill(&mut pending);
                }
                Err(ChannelTimeout::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d)
                        && pending.first().is_none_or(|f| {
                            self.window
                                .ready(Instant::now(), f.received_at(), pending.len())
                                .is_some()
                        })
                    {
                        return Err(RecvTimeoutError::Timeout);
                    }
                }
                Err(ChannelTimeout::Disconnected) => {
                    if pending.is_empty() {
                        return Err(RecvTimeoutError::Closed);
                    }
                    // Closed: hand out what is left without waiting.
                    return Ok(self.take(&mut pending));
                }
            }
        }
    }

    /// Adds whatever is already queued, up to the batch limit.
    fn fill(&self, pending: &mut Vec<Message>) {
        while pending.len() < self.window.max {
            match self.rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(_) => break,
            }
        }
        self.shared.taken(self.rx.len());
    }

    fn take(&self, pending: &mut Vec<Message>) -> Batch {
        let n = pending.len().min(self.window.max);
        let rest = pending.split_off(n);
        let mut messages = std::mem::replace(pending, rest);
        // Handed out: these bytes are the application's now.
        let bytes = messages.iter().map(|m| m.frame().len()).sum();
        self.shared.inbound.release(bytes);
        self.shared.taken(self.rx.len());
        if let Some(acks) = &self.acks {
            let mut sent = false;
            for m in &mut messages {
                if let Some(a) = m.take_ack() {
                    // Counted in the outbound bytes before the io thread can
                    // take it. A full queue loses this ack; the server then
                    // redelivers the message, and dedupe drops the copy.
                    let len = a.len();
                    self.shared.outbound.force(len);
                    if acks.try_send(a).is_ok() {
                        self.shared
                            .counters
                            .acks
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        sent = true;
                    } else {
                        self.shared.outbound.release(len);
                        log::warn!(target: "heartline::client", "outbound queue full: an ack was not sent");
                    }
                }
            }
            if sent {
                self.shared.wake_io();
            }
        }
        Batch::new(messages)
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

/// Receives state changes ([`Event`]s), in order. Also a blocking iterator
/// that ends after the client is closed and every event was read. Holds the
/// last `event_capacity` events when nobody reads it. Clones share one
/// queue: each event goes to one of them.
#[derive(Clone, Debug)]
pub struct Events {
    rx: Receiver<Event>,
}

impl Events {
    /// Blocks until the next state change.
    ///
    /// # Errors
    /// [`RecvError`] after the final `Closed` event was read.
    pub fn recv(&self) -> std::result::Result<Event, RecvError> {
        self.rx.recv().map_err(|_| RecvError)
    }

    /// The next state change, if one is waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Closed`].
    pub fn try_recv(&self) -> std::result::Result<Event, TryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => TryRecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => TryRecvError::Closed,
        })
    }

    /// Waits up to `timeout` for the next state change.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<Event, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn send_and_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn handles_are_cheap_clones_usable_from_any_thread() {
        send_and_sync::<Client>();
        send_and_sync::<Batches>();
        send_and_sync::<Events>();
    }
}
