//! The [`Client`] handle: sending, closing, state and stats, and what
//! `build()` starts. Its receivers of state changes are in [`events`].

pub(crate) mod events;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::delivery::AckMode;
use crate::config::{ClientBuilder, Config};
use crate::delivery::batch::Batch;
use crate::delivery::inbox::Inbox;
use crate::delivery::receiver::Batches;
use crate::durable::Ledger;
use crate::durable::Outgoing;
use crate::error::lock;
use crate::error::{RecvError, RecvTimeoutError, Result, SendError, TryRecvError, TrySendError};
use crate::frame::Frame;
use crate::message::State;
use crate::shared::{Shared, Stats};
use crate::threads::{supervisor, Control, Setup};

use events::{Events, Updates};

/// A handle to one kept-alive WebSocket connection.
///
/// Cheap to clone and `Send + Sync`: clones share the connection. The
/// connection lives as long as any handle to it: a clone of the client, or
/// a receiver from [`Client::batches`] or [`Client::events`] (as a
/// crossbeam receiver keeps its channel). Dropping the last one closes the
/// client as [`Client::close`] does.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    life: Arc<Lifeline>,
    shared: Arc<Shared>,
    outbound: Sender<Outgoing>,
    ledger: Arc<Ledger>,
    protocol: Arc<dyn crate::protocol::Protocol>,
    outbound_capacity: usize,
    send_timeout: Duration,
    batches: Batches,
    events: Events,
}

/// What keeps the connection running, held by the client and by every
/// receiver: when the last of them is dropped, the client closes.
pub(crate) struct Lifeline {
    shared: Arc<Shared>,
    control: Sender<Control>,
    ledger: Arc<Ledger>,
    /// The ledger's writer (with `state_dir`): dropping the sender stops it.
    writer: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Starts building a client for a `ws://` or `wss://` URL.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Starts building a client whose URL and headers come from `provider`,
    /// called before **every** connection attempt and poll, so a token
    /// refreshed meanwhile is used.
    ///
    /// ```no_run
    /// use heartline::{Client, Endpoint};
    /// let client = Client::with_endpoint(|| {
    ///     Endpoint::new("wss://push.example.com/ws").header("Authorization", "Bearer fresh")
    /// })
    /// .build()?;
    /// # Ok::<(), heartline::Error>(())
    /// ```
    pub fn with_endpoint<F>(provider: F) -> ClientBuilder
    where
        F: Fn() -> crate::config::Endpoint + Send + Sync + 'static,
    {
        ClientBuilder::with_endpoint(move |_: &crate::config::EndpointContext| provider())
    }

    /// Like [`Client::with_endpoint`], but the provider is told why the
    /// previous attempt failed ([`EndpointContext::last_error`]), so it
    /// refreshes a token only when the server rejected it (401/403) rather
    /// than on every reconnect:
    ///
    /// ```no_run
    /// use heartline::{Client, Endpoint};
    /// # fn fetch_token() -> String { String::new() }
    /// let token = std::sync::Mutex::new(fetch_token());
    /// let client = Client::with_endpoint_context(move |ctx| {
    ///     let mut t = token.lock().unwrap();
    ///     if matches!(ctx.last_error.as_ref().and_then(|e| e.status()), Some(401 | 403)) {
    ///         *t = fetch_token(); // rejected: get a new one
    ///     }
    ///     Endpoint::new("wss://push.example.com/ws").header("Authorization", format!("Bearer {t}"))
    /// })
    /// .build()?;
    /// # Ok::<(), heartline::Error>(())
    /// ```
    ///
    /// [`EndpointContext::last_error`]: crate::EndpointContext::last_error
    pub fn with_endpoint_context<F>(provider: F) -> ClientBuilder
    where
        F: Fn(&crate::config::EndpointContext) -> crate::config::Endpoint + Send + Sync + 'static,
    {
        ClientBuilder::with_endpoint(provider)
    }

    pub(crate) fn start(cfg: Config) -> Result<Client> {
        let (shared, events_rx) = Shared::new(
            cfg.limits.event_capacity,
            (cfg.limits.outbound_capacity, cfg.limits.outbound_bytes),
        );
        // Bounded in frames and bytes by `shared`'s budgets, not by the
        // channel (see `Shared::outbound_frames`).
        let (outbound_tx, outbound_rx) = crossbeam_channel::unbounded();
        let inbox = Inbox::new(
            (cfg.limits.inbound_capacity, cfg.limits.inbound_bytes),
            cfg.limits.dedupe_window,
            cfg.delivery.overflow,
            cfg.delivery.ack_mode,
            shared.clone(),
            cfg.polls(),
        );
        let (ledger, restored) = Ledger::open(
            cfg.state.dir.as_deref(),
            cfg.state.allow_shared,
            cfg.state.sync_every,
            cfg.limits.dedupe_window,
            shared.clone(),
        )?;
        let ledger = Arc::new(ledger);
        inbox.attach(&ledger, &restored);
        shared.outbound.force(restored.outbound_bytes);
        let writer = match ledger.durable() {
            true => {
                let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
                let l = ledger.clone();
                let handle = crate::threads::spawn("heartline-state", move || {
                    crate::threads::state::run(&l, &stop_rx)
                })
                .map_err(|source| crate::Error::Thread {
                    name: "heartline-state",
                    source,
                })?;
                Some((stop_tx, handle))
            }
            false => None,
        };
        let (control_tx, control_rx) = crossbeam_channel::bounded(4);
        let batches = Batches::new(
            inbox.receiver().clone(),
            inbox.flow().clone(),
            shared.clone(),
            cfg.delivery.batch_window,
            cfg.delivery.batch_max,
            ledger.clone(),
            cfg.delivery.ack_mode == AckMode::Finished,
        );
        let outbound_capacity = cfg.limits.outbound_capacity;
        let send_timeout = cfg.timeouts.send;
        let protocol = cfg.protocol.clone();
        let handle = supervisor::spawn(Setup {
            cfg: Arc::new(cfg),
            shared: shared.clone(),
            control: control_rx,
            outbound: outbound_rx,
            inbox: Arc::new(inbox),
            ledger: ledger.clone(),
        });
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                if let Some((stop, h)) = writer {
                    drop(stop);
                    let _ = h.join();
                }
                return Err(e);
            }
        };
        let life = Arc::new(Lifeline {
            shared: shared.clone(),
            control: control_tx,
            ledger: ledger.clone(),
            writer: Mutex::new(writer),
            supervisor: Mutex::new(Some(handle)),
        });
        let keep: Arc<dyn std::any::Any + Send + Sync> = life.clone();
        Ok(Client {
            inner: Arc::new(Inner {
                life: life.clone(),
                shared: shared.clone(),
                outbound: outbound_tx,
                ledger,
                protocol,
                outbound_capacity,
                send_timeout,
                batches: batches.keeping(keep),
                events: Events {
                    rx: events_rx,
                    _life: life,
                },
            }),
        })
    }

    /// Queues a frame (text, binary, or JSON via `serde_json::Value`). It is
    /// sent at once when the socket is open, else after the next connect's
    /// hello frames, in order. Waits up to the configured `Timeouts::send` for
    /// room when the outbound queue is full (in frames or in bytes).
    ///
    /// # Errors
    /// Hands the frame back: [`SendError::Timeout`] when there is still no
    /// room after the wait, [`SendError::TooLarge`] for a frame larger than
    /// the whole `Limits::outbound_bytes` budget, [`SendError::Closed`] after
    /// [`Client::close`] or giving up (also when that happens while it
    /// waits for room: the wait ends at once).
    pub fn send(&self, frame: impl Into<Frame>) -> std::result::Result<(), SendError> {
        let frame = frame.into();
        let id = self.reliable_id(&frame);
        self.send_with(frame, id)
    }

    /// Queues a frame that must reach the server: it is kept (in memory,
    /// and with `state_dir` on disk) until the server acknowledges `id`
    /// (a frame the protocol's [`crate::Inspected::acknowledges`] names,
    /// such as [`crate::JsonRules::acked_by`]), and sent again, in order,
    /// after every reconnect: after the hello frames, before newer frames.
    /// The server should dedupe by id. While it waits for its ack it holds
    /// its bytes (plus 64 for bookkeeping) of the `Limits::outbound_bytes` budget;
    /// when that is full this waits and hands the frame back as
    /// [`Client::send`] does. [`Stats::reliable_pending`] counts the frames
    /// waiting for an ack.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub fn send_reliable(
        &self,
        id: impl Into<String>,
        frame: impl Into<Frame>,
    ) -> std::result::Result<(), SendError> {
        self.send_with(frame.into(), Some(Arc::from(id.into())))
    }

    /// The protocol's reliable id for a frame passed to `send`; a panic in
    /// it makes the frame an ordinary one (logged).
    fn reliable_id(&self, frame: &Frame) -> Option<Arc<str>> {
        crate::error::guarded("reliable_id", || self.inner.protocol.reliable_id(frame))
            .ok()
            .flatten()
            .map(Arc::from)
    }

    fn send_with(&self, frame: Frame, id: Option<Arc<str>>) -> std::result::Result<(), SendError> {
        let deadline = Instant::now()
            .checked_add(self.inner.send_timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        match self.inner.enqueue(frame, id, Some(deadline)) {
            Ok(()) => Ok(()),
            Err((Refused::Closed, frame)) => Err(SendError::Closed(frame)),
            Err((Refused::TooLarge, frame)) => Err(SendError::TooLarge {
                frame,
                limit: self.inner.shared.outbound.limit(),
            }),
            Err((Refused::Full, frame)) => Err(SendError::Timeout {
                frame,
                capacity: self.inner.outbound_capacity,
                bytes: self.inner.shared.outbound.limit(),
            }),
        }
    }

    /// Queues a frame without waiting. A frame the protocol finds a
    /// reliable id in is kept until acknowledged, as with
    /// [`Client::send_reliable`].
    ///
    /// # Errors
    /// Hands the frame back when the queue is full, the frame is larger than
    /// the outbound byte budget, or the client is closed.
    pub fn try_send(&self, frame: impl Into<Frame>) -> std::result::Result<(), TrySendError> {
        let frame = frame.into();
        let id = self.reliable_id(&frame);
        self.inner
            .enqueue(frame, id, None)
            .map_err(|(why, frame)| match why {
                Refused::Closed => TrySendError::Closed(frame),
                Refused::TooLarge => TrySendError::TooLarge(frame),
                Refused::Full => TrySendError::Full(frame),
            })
    }

    /// Closes the connection: sends a close frame (code 1000), waits up to
    /// `Timeouts::close` for the server's, and joins every heartline thread.
    /// Never reconnects afterwards. Returns promptly: a connection attempt
    /// in flight (lookup, connect, tunnel, TLS, upgrade) is ended at once,
    /// not waited out, and so is a poll request in flight, except while it
    /// looks up its host or connects (bounded by `Polling::timeout`). Calling
    /// it again does nothing. Messages already
    /// received are still handed out by the batch receiver, which then
    /// ends.
    pub fn close(&self) {
        self.inner.life.close();
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.shared.state()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.shared.snapshot(
            self.inner.outbound.len(),
            self.inner.batches.queued(),
            self.inner.batches.bytes_held(),
            self.inner.ledger.reliable_pending(),
        )
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

    /// The one-loop receiver: state changes and batches together, in the
    /// order they happened on the connection. See [`Updates`].
    pub fn updates(&self) -> Updates {
        Updates {
            batches: self.inner.batches.clone(),
            events: self.inner.events.clone(),
            held: Arc::new(Mutex::new(None)),
        }
    }

    /// Waits until `deadline` for a batch. See [`Batches::recv_deadline`].
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Closed`].
    pub fn recv_deadline(&self, deadline: Instant) -> std::result::Result<Batch, RecvTimeoutError> {
        self.inner.batches.recv_deadline(deadline)
    }

    /// The state-change receiver. Every change (connecting, open,
    /// reconnecting with attempt and delay, closed with reason) is delivered
    /// in order; blocks without polling.
    pub fn events(&self) -> Events {
        self.inner.events.clone()
    }
}

// Here rather than in config.rs: the builder starts a client, and config
// stays below the client in the module graph.
impl ClientBuilder {
    /// Checks the configuration and starts the client: connecting begins in
    /// the background and this returns at once.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the first bad option (an unreadable
    /// certificate is `Tls::root_certificates`), [`crate::Error::Url`] for a bad
    /// URL, [`crate::Error::StateDir`] for a `state_dir` that is unsafe or
    /// in use, or [`crate::Error::Thread`].
    pub fn build(self) -> Result<Client> {
        let cfg = self.validate()?;
        Client::start(cfg)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Why the outbound queue refused a frame.
enum Refused {
    Closed,
    TooLarge,
    Full,
}

impl Inner {
    /// Queues a frame, waiting until `deadline` for room (`None`: not at
    /// all). The ledger records it first when it keeps it, so the io thread
    /// never takes a frame the ledger does not know.
    fn enqueue(
        &self,
        frame: Frame,
        id: Option<Arc<str>>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), (Refused, Frame)> {
        if self.shared.is_closed() {
            return Err((Refused::Closed, frame));
        }
        let budget = &self.shared.outbound;
        let len = crate::durable::cost(&frame, id.is_some());
        if frame.len() > budget.limit() {
            return Err((Refused::TooLarge, frame));
        }
        // A place in the queue (its bound in frames), then the bytes.
        let frames = &self.shared.outbound_frames;
        let room = match deadline {
            Some(d) => frames.take_until(1, d) && (budget.take_until(len, d) || release(frames, 1)),
            None => frames.try_take(1) && (budget.try_take(len) || release(frames, 1)),
        };
        if !room {
            let why = if self.shared.is_closed() {
                Refused::Closed
            } else {
                Refused::Full
            };
            return Err((why, frame));
        }
        let out = self.ledger.track(frame, id);
        // Refused only once the io thread is gone (the bounds are above).
        match self.outbound.try_send(out) {
            Ok(()) => {
                self.shared.sent();
                self.shared.wake_io();
                Ok(())
            }
            Err(e) => {
                let out = e.into_inner();
                budget.release(len);
                frames.release(1);
                let frame = match out {
                    Outgoing::Frame(f) => f,
                    // Never in the channel, so still in the ledger (only
                    // the io thread takes tracked frames, and an ack can
                    // only remove a frame that was written).
                    Outgoing::Tracked(seq, frame) => self.ledger.untrack(seq, frame),
                };
                Err((Refused::Closed, frame))
            }
        }
    }
}

/// Gives back what was taken of a budget: `false`, for a refusal.
fn release(budget: &crate::delivery::budget::Budget, n: usize) -> bool {
    budget.release(n);
    false
}

impl Lifeline {
    fn close(&self) {
        // Acks of batches finished before close() wait for a state write:
        // write now, so they are released to the io thread before the close
        // handshake, which sends them first.
        if lock(&self.supervisor).is_some() {
            self.ledger.write_now();
        }
        self.close_supervisor();
        // After the io thread ended: the writer's last write holds what
        // is still unsent.
        if let Some((stop, handle)) = lock(&self.writer).take() {
            drop(stop);
            if handle.join().is_err() {
                log::error!(target: "heartline::client", "the state writer thread panicked");
            }
        }
        // The last write is done: the directory is free for another client.
        self.ledger.unlock();
    }

    fn close_supervisor(&self) {
        let handle = lock(&self.supervisor).take();
        let Some(handle) = handle else { return };
        // A full or disconnected control channel means a close is already
        // under way or the supervisor has stopped; either way, just join.
        let _ = self.control.try_send(Control::Close);
        // An attempt in flight ends now, not at its timeouts.
        self.shared.abort.abort();
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

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.close();
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
