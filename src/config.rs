//! [`ClientBuilder`]: every option, its default, and validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::machine::backoff::Backoff;
use crate::message::Frame;
pub use crate::protocol::{Heartbeat, HelloContext, ReplyRule};
use crate::redact;

/// Where to connect: a URL and the headers for the upgrade request.
///
/// Returned by the endpoint provider before **every** connection attempt, so
/// a token can be refreshed between attempts.
#[derive(Clone, Default)]
pub struct Endpoint {
    /// `ws://…` or `wss://…`.
    pub url: String,
    /// Extra headers for the HTTP upgrade request, in order.
    pub headers: Vec<(String, String)>,
}

impl Endpoint {
    /// An endpoint with no extra headers.
    pub fn new(url: impl Into<String>) -> Self {
        Endpoint {
            url: url.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), redact::header_value(n, v)))
            .collect();
        f.debug_struct("Endpoint")
            .field("url", &redact::url(&self.url))
            .field("headers", &headers)
            .finish()
    }
}

/// What happens when the inbound queue is full because the application is
/// slower than the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Stop reading the socket until the application catches up; TCP flow
    /// control then slows the server. Nothing is dropped, and the heartbeat
    /// timeout is suspended while reading is paused (a slow consumer is not a
    /// dead link). The default.
    #[default]
    Backpressure,
    /// Drop the oldest queued message to make room, counting it in
    /// [`crate::Stats::dropped`]. For feeds where only the latest matters.
    DropOldest,
}

/// When the acknowledgement of a pushed message is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AckMode {
    /// When the application has finished with it: the loop over its batch
    /// moved past it, or `done()` / `finish_first()` said so (see
    /// [`crate::Batch`]); sent when the batch is dropped (the default). A process that dies while holding a batch never acked it,
    /// so the server redelivers it: nothing acked is lost unprocessed.
    #[default]
    Finished,
    /// As soon as the message is safely in the inbound queue. Cheapest, but
    /// a message acked this way is lost if the process dies before the
    /// application processed it. Refused with [`Overflow::DropOldest`].
    Queued,
    /// When the batch holding it is handed to the application. A message
    /// lost with the process while still queued is redelivered by the
    /// server; one handed out but not yet processed is not.
    Delivered,
}

pub(crate) type EndpointFn = dyn Fn(&EndpointContext) -> Endpoint + Send + Sync;

/// What an endpoint provider is told before each connection attempt or
/// poll (see [`crate::Client::with_endpoint_context`]).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EndpointContext {
    /// Why the previous attempt of this kind (WebSocket, or poll) failed or
    /// its connection ended; `None` at the first. A 401 or 403
    /// (`last_error.status()`) says the server rejected the credentials:
    /// the time to refresh a token, rather than on every reconnect.
    pub last_error: Option<crate::error::ConnectionError>,
    /// `true` when the endpoint is for a poll of the HTTP fallback.
    pub for_poll: bool,
}
pub(crate) type HelloFn = dyn Fn(&HelloContext) -> Vec<Frame> + Send + Sync;

/// The one protocol the threads consult: the application's, with the
/// builder's conveniences layered on top: its reply rules (a frame matching
/// either side is a heartbeat reply) and its hello closure (its frames go
/// after the protocol's). The heartbeat is resolved at build, where a
/// heartbeat set in both places is refused.
pub(crate) struct Layered {
    pub inner: Arc<dyn crate::protocol::Protocol>,
    pub replies: Vec<ReplyRule>,
    pub hello: Option<std::sync::Arc<HelloFn>>,
}

impl crate::protocol::Protocol for Layered {
    fn inspect(&self, frame: &Frame) -> crate::protocol::Inspected {
        self.inner.inspect(frame)
    }

    fn is_heartbeat_reply(&self, frame: &Frame) -> bool {
        self.replies.iter().any(|r| r.matches(frame)) || self.inner.is_heartbeat_reply(frame)
    }

    fn heartbeat(&self) -> Option<Frame> {
        self.inner.heartbeat()
    }

    fn reliable_id(&self, frame: &Frame) -> Option<String> {
        self.inner.reliable_id(frame)
    }

    fn hello(&self, ctx: &HelloContext) -> Vec<Frame> {
        let mut frames = self.inner.hello(ctx);
        if let Some(h) = &self.hello {
            frames.extend(h(ctx));
        }
        frames
    }

    fn poll_request(
        &self,
        cursor: Option<&crate::protocol::Cursor>,
    ) -> Option<crate::protocol::PollRequest> {
        self.inner.poll_request(cursor)
    }

    fn parse_poll(
        &self,
        body: &[u8],
    ) -> std::result::Result<Vec<crate::protocol::PollItem>, String> {
        self.inner.parse_poll(body)
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.inner.check()
    }
}

/// The validated configuration, in sections: each has its defaults in one
/// `impl Default` and its own `validate`, and each thread reads the
/// sections it needs.
#[derive(Clone)]
pub(crate) struct Config {
    pub endpoint: Arc<EndpointFn>,
    /// The one protocol the threads consult: the application's, with the
    /// builder's reply rules and hello closure layered on (see
    /// [`Layered`]).
    pub protocol: Arc<dyn crate::protocol::Protocol>,
    /// The protocol is the built-in [`crate::Plain`] with no reply rules:
    /// every data frame is a message as it is, with nothing to inspect
    /// (the io thread then skips the protocol).
    pub frames_are_messages: bool,
    pub heartbeat: HeartbeatSection,
    pub reconnect: ReconnectSection,
    pub queues: QueueSection,
    pub link: LinkSection,
    pub tls: TlsSection,
    pub poll: PollSection,
    pub state: StateSection,
    pub proxy: ProxySection,
}

/// Which HTTP proxy the WebSocket and the poller go through.
#[derive(Clone, Default)]
pub(crate) struct ProxySection {
    /// As chosen: the environment (default), none, or a URL (checked at
    /// build).
    pub url: Option<Option<String>>,
    /// Resolved at build.
    pub choice: crate::proxy::Choice,
    /// The environment's proxies, read once at build.
    pub env: crate::proxy::Env,
}

impl fmt::Debug for ProxySection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL as given carries the proxy's credentials.
        let shown = match &self.url {
            None => "from the environment".to_owned(),
            Some(None) => "off".to_owned(),
            Some(Some(u)) => redact::url(u),
        };
        f.write_str(&shown)
    }
}

impl ProxySection {
    fn validate(&mut self) -> Result<()> {
        self.choice = match &self.url {
            None => {
                self.env = crate::proxy::Env::read(|k| std::env::var(k).ok());
                crate::proxy::Choice::Env
            }
            Some(None) => crate::proxy::Choice::Off,
            Some(Some(u)) => crate::proxy::Choice::Fixed(
                crate::proxy::Proxy::parse(u).map_err(|e| Error::config("proxy", e))?,
            ),
        };
        Ok(())
    }
}

/// State kept across a restart (`state_dir`).
#[derive(Clone, Debug)]
pub(crate) struct StateSection {
    /// `None`: nothing is written; the ledger lives in memory.
    pub dir: Option<std::path::PathBuf>,
    pub sync_every: Duration,
    /// Accept a directory others can write to or another user owns.
    pub allow_shared: bool,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            dir: None,
            sync_every: Duration::from_secs(1),
            allow_shared: false,
        }
    }
}

impl StateSection {
    fn validate(&self) -> Result<()> {
        within_a_day("state_sync_every", self.sync_every)?;
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(Error::config("state_dir", "is empty"));
        }
        Ok(())
    }
}

/// Largest server timeout accepted: beyond this a dead link goes unnoticed
/// for so long that it is almost certainly a unit mistake.
const MAX_SERVER_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest value of any other duration option: a larger value is a unit
/// mistake, and would overflow the clock arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

fn positive(field: &'static str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(Error::config(field, "must be greater than zero"));
    }
    within_a_day(field, d)
}

fn within_a_day(field: &'static str, d: Duration) -> Result<()> {
    if d > MAX_DURATION {
        return Err(Error::config(
            field,
            format!("{d:?} is longer than one day; a unit mistake?"),
        ));
    }
    Ok(())
}

fn at_least_one(field: &'static str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::config(field, "must be at least 1"));
    }
    Ok(())
}

/// Liveness: what the heartbeat sends, how often, and the dead-link verdict.
#[derive(Clone, Debug)]
pub(crate) struct HeartbeatSection {
    /// Resolved at build: the builder's or the protocol's, never both.
    pub kind: Heartbeat,
    pub interval: Duration,
    pub timeout: Duration,
    /// Beat every interval even while frames arrive.
    pub even_when_busy: bool,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            kind: Heartbeat::Ping,
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(20),
            even_when_busy: false,
        }
    }
}

impl HeartbeatSection {
    fn validate(&self, max_frame_size: usize) -> Result<()> {
        positive("heartbeat_interval", self.interval)?;
        if self.timeout.is_zero() {
            return Err(Error::config("server_timeout", "must be greater than zero"));
        }
        if self.timeout > MAX_SERVER_TIMEOUT {
            return Err(Error::config(
                "server_timeout",
                format!(
                    "{:?} is longer than the {:?} limit; a dead link would go unnoticed",
                    self.timeout, MAX_SERVER_TIMEOUT
                ),
            ));
        }
        if let Heartbeat::Frame(f) = &self.kind {
            if f.len() > max_frame_size {
                return Err(Error::config(
                    "heartbeat",
                    "frame is larger than max_frame_size",
                ));
            }
        }
        Ok(())
    }
}

/// The reconnect policy.
#[derive(Clone, Debug)]
pub(crate) struct ReconnectSection {
    pub backoff: Backoff,
    pub min_uptime: Duration,
    pub max_attempts: Option<u32>,
    pub terminal_codes: Vec<u16>,
    pub max_retry_after: Duration,
    pub restart_spread: Duration,
}

impl Default for ReconnectSection {
    fn default() -> Self {
        ReconnectSection {
            backoff: Backoff::default(),
            min_uptime: Duration::from_secs(5),
            max_attempts: None,
            terminal_codes: Vec::new(),
            max_retry_after: Duration::from_secs(300),
            restart_spread: Duration::from_secs(10),
        }
    }
}

impl ReconnectSection {
    fn validate(&self) -> Result<()> {
        within_a_day("min_uptime", self.min_uptime)?;
        within_a_day("max_retry_after", self.max_retry_after)?;
        within_a_day("restart_spread", self.restart_spread)?;
        let steps = match self.backoff {
            Backoff::Fixed(d) => vec![d],
            Backoff::Linear { initial, step, max } => vec![initial, step, max],
            Backoff::Exponential { initial, max } => vec![initial, max],
        };
        for d in steps {
            within_a_day("backoff", d)?;
        }
        self.backoff.validate()?;
        if self.max_attempts == Some(0) {
            return Err(Error::config(
                "max_attempts",
                "must be at least 1 (or None)",
            ));
        }
        for code in &self.terminal_codes {
            if !(1000..5000).contains(code) {
                return Err(Error::config(
                    "terminal_close_codes",
                    format!("{code} is not a WebSocket close code (1000-4999)"),
                ));
            }
        }
        Ok(())
    }
}

/// Both queues, the batch, dedupe and acks: everything delivery bounds.
#[derive(Clone, Debug)]
pub(crate) struct QueueSection {
    pub outbound_capacity: usize,
    pub outbound_bytes: usize,
    pub send_timeout: Duration,
    pub inbound_capacity: usize,
    pub inbound_bytes: usize,
    pub overflow: Overflow,
    pub batch_window: Duration,
    pub batch_max: usize,
    pub event_capacity: usize,
    pub dedupe_window: usize,
    /// Resolved at build from the builder's choice and the overflow policy.
    pub ack_mode: AckMode,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            outbound_capacity: 1024,
            outbound_bytes: 2 << 20,
            send_timeout: Duration::from_secs(1),
            inbound_capacity: 4096,
            inbound_bytes: 8 << 20,
            overflow: Overflow::Backpressure,
            batch_window: Duration::from_millis(100),
            batch_max: 512,
            event_capacity: 64,
            dedupe_window: 10_000,
            ack_mode: AckMode::Finished,
        }
    }
}

impl QueueSection {
    fn validate(&self) -> Result<()> {
        within_a_day("send_timeout", self.send_timeout)?;
        within_a_day("batch_window", self.batch_window)?;
        at_least_one("outbound_capacity", self.outbound_capacity)?;
        at_least_one("inbound_capacity", self.inbound_capacity)?;
        at_least_one("inbound_bytes", self.inbound_bytes)?;
        at_least_one("outbound_bytes", self.outbound_bytes)?;
        at_least_one("batch_max", self.batch_max)?;
        at_least_one("event_capacity", self.event_capacity)?;
        at_least_one("dedupe_window", self.dedupe_window)
    }
}

/// The connection itself: sizes and the timeouts of opening and closing.
#[derive(Clone, Debug)]
pub(crate) struct LinkSection {
    pub max_message_size: usize,
    pub max_frame_size: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
    /// As chosen on the builder: `None` derives it from the heartbeat.
    pub keepalive_choice: Option<Option<Keepalive>>,
    pub write_timeout_choice: Option<Duration>,
    /// Resolved at build.
    pub keepalive: Option<Keepalive>,
    pub write_timeout: Duration,
}

/// TCP keepalive on the socket: after `idle` without any segment from the
/// server, the kernel sends a probe every `interval`, and after `count`
/// unanswered probes it reports the peer dead (the connection is then
/// dropped and retried). This notices a dead link even while the
/// application has paused reading (and with it the heartbeat timeout).
/// The kernel counts in whole seconds (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the peer is dead.
    pub count: u32,
}

impl Keepalive {
    /// What heartline uses unless told otherwise: the first probe one
    /// `heartbeat_interval` after the last segment, then three probes
    /// `server_timeout / 3` apart (at least 1 s), so a dead link is
    /// reported about as fast as by the heartbeat.
    pub fn derived(heartbeat_interval: Duration, server_timeout: Duration) -> Keepalive {
        Keepalive {
            idle: heartbeat_interval.max(Duration::from_secs(1)),
            interval: (server_timeout / 3).max(Duration::from_secs(1)),
            count: 3,
        }
    }
}

impl Default for LinkSection {
    fn default() -> Self {
        LinkSection {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_millis(500),
            keepalive_choice: None,
            write_timeout_choice: None,
            keepalive: None,
            write_timeout: Duration::from_secs(90),
        }
    }
}

impl LinkSection {
    fn validate(&self) -> Result<()> {
        positive("connect_timeout", self.connect_timeout)?;
        positive("handshake_timeout", self.handshake_timeout)?;
        within_a_day("close_timeout", self.close_timeout)?;
        if let Some(w) = self.write_timeout_choice {
            positive("write_timeout", w)?;
        }
        if let Some(Some(k)) = self.keepalive_choice {
            positive("tcp_keepalive", k.idle)?;
            positive("tcp_keepalive", k.interval)?;
            if k.count == 0 {
                return Err(Error::config("tcp_keepalive", "count must be at least 1"));
            }
        }
        if self.max_message_size < 128 {
            return Err(Error::config(
                "max_message_size",
                "must be at least 128 bytes",
            ));
        }
        if self.max_frame_size < 128 || self.max_frame_size > self.max_message_size {
            return Err(Error::config(
                "max_frame_size",
                "must be at least 128 bytes and at most max_message_size",
            ));
        }
        Ok(())
    }
}

/// Trust: extra roots, parsed once at build, for the socket and the poller.
#[derive(Clone, Default)]
pub(crate) struct TlsSection {
    /// As given to the builder.
    pub roots_pem: Vec<Vec<u8>>,
    /// Parsed by `validate`.
    pub roots: Vec<native_tls::Certificate>,
    pub accept_invalid_certs: bool,
}

impl TlsSection {
    fn validate(&mut self) -> Result<()> {
        self.roots = self
            .roots_pem
            .iter()
            .map(|pem| {
                native_tls::Certificate::from_pem(pem).map_err(|e| {
                    Error::config(
                        "root_certificate_pem",
                        format!("not a PEM certificate: {e}"),
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// The HTTP polling fallback.
#[derive(Clone, Debug)]
pub(crate) struct PollSection {
    /// The protocol has a poll request (asked once, at build).
    pub enabled: bool,
    pub after: u32,
    pub every: Duration,
    pub timeout: Duration,
    pub max_body: usize,
    /// The poll URL the protocol gave at build (for the proxy choice).
    pub probe_url: Option<String>,
}

impl Default for PollSection {
    fn default() -> Self {
        PollSection {
            enabled: false,
            after: 3,
            every: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_body: 4 << 20,
            probe_url: None,
        }
    }
}

impl PollSection {
    fn validate(&self) -> Result<()> {
        positive("poll_every", self.every)?;
        positive("poll_timeout", self.timeout)?;
        at_least_one("max_poll_body", self.max_body)?;
        if self.after == 0 {
            return Err(Error::config("poll_after", "must be at least 1"));
        }
        Ok(())
    }
}

/// Builds a [`crate::Client`]. Every option has a default suited to a device
/// on a real network; [`ClientBuilder::build`] checks them all and names the
/// first bad one.
///
/// ```no_run
/// use std::time::Duration;
/// let client = heartline::Client::builder("wss://example.com/ws")
///     .heartbeat_interval(Duration::from_secs(30))
///     .build()?;
/// for batch in client.batches() {
///     for msg in &batch {
///         println!("{:?}", msg.text());
///     }
/// }
/// # Ok::<(), heartline::Error>(())
/// ```
pub struct ClientBuilder {
    // Where to connect: a fixed URL (with `headers`) or a provider. Both
    // set is refused at build, so neither is silently discarded.
    url: Option<String>,
    provider: Option<Arc<EndpointFn>>,
    headers: Vec<(String, String)>,
    // The protocol and the builder's conveniences for it, combined into
    // one protocol at build; a setting made in both places is refused.
    protocol: Arc<dyn crate::protocol::Protocol>,
    /// `protocol` was set by the application (it is not the built-in
    /// [`crate::Plain`]).
    protocol_set: bool,
    heartbeat: Option<Heartbeat>,
    replies: Vec<ReplyRule>,
    hello: Option<Arc<HelloFn>>,
    ack_mode: Option<AckMode>,
    cfg: Config,
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        ClientBuilder {
            url: Some(url.into()),
            provider: None,
            headers: Vec::new(),
            protocol: Arc::new(crate::protocol::Plain),
            protocol_set: false,
            heartbeat: None,
            replies: Vec::new(),
            hello: None,
            ack_mode: None,
            cfg: Config {
                endpoint: Arc::new(|_: &EndpointContext| Endpoint::default()),
                protocol: Arc::new(crate::protocol::Plain),
                frames_are_messages: true,
                heartbeat: HeartbeatSection::default(),
                reconnect: ReconnectSection::default(),
                queues: QueueSection::default(),
                link: LinkSection::default(),
                tls: TlsSection::default(),
                poll: PollSection::default(),
                state: StateSection::default(),
                proxy: ProxySection::default(),
            },
        }
    }

    /// Adds a header to the upgrade request of the fixed URL (repeatable,
    /// order kept). With an endpoint provider the provider returns the
    /// headers, and `build()` refuses this. `Authorization` and `Cookie`
    /// values never appear in logs.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A builder whose endpoint comes from `provider`, a closure called
    /// before **every** connection attempt (and every poll) that returns the
    /// URL and headers to use, so a fresh token is used after a reconnect. A
    /// bad URL from it fails that attempt (logged, retried with backoff).
    /// See [`crate::Client::with_endpoint`].
    pub(crate) fn with_endpoint<F>(provider: F) -> Self
    where
        F: Fn(&EndpointContext) -> Endpoint + Send + Sync + 'static,
    {
        let mut b = ClientBuilder::new(String::new());
        b.url = None;
        b.provider = Some(Arc::new(provider));
        b
    }

    /// What the heartbeat sends. Defaults to the protocol's heartbeat frame
    /// if it has one, else [`Heartbeat::Ping`]. Setting it here and in the
    /// protocol is refused by `build()` (set it in one place).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// The application protocol: ids, cursors, kinds, acks, hello frames,
    /// heartbeat, and the HTTP polling fallback. Defaults to
    /// [`crate::Plain`] (frames are messages; no polling). See
    /// [`crate::JsonRules`] for JSON servers.
    pub fn protocol(mut self, protocol: impl crate::protocol::Protocol) -> Self {
        self.protocol = Arc::new(protocol);
        self.protocol_set = true;
        self
    }

    /// When acks are sent. Defaults to [`AckMode::Finished`]: once the
    /// application has finished with the batch (see [`crate::Batch`]).
    /// `Queued` with [`Overflow::DropOldest`] is refused (a message acked on
    /// queueing could then be dropped unprocessed).
    pub fn ack_mode(mut self, mode: AckMode) -> Self {
        self.ack_mode = Some(mode);
        self
    }

    /// How many recent message ids are remembered to drop duplicates (from
    /// redelivery, or the same message by socket and by poll). Defaults to
    /// 10 000. Each is an 8-byte digest (SipHash-2-4), held once for the
    /// inbound queue and the state file: at most 30 bytes of memory an id,
    /// whatever its length (21 with the default). Two ids share a digest with odds of about one
    /// in 2^63, so with 10,000 remembered a new message is mistaken for a
    /// duplicate about once in 10^15 messages.
    pub fn dedupe_window(mut self, ids: usize) -> Self {
        self.cfg.queues.dedupe_window = ids;
        self
    }

    /// Start HTTP polling after this many consecutive failed WebSocket
    /// attempts (when the protocol has a poll request). Defaults to 3, as in
    /// messmonitor.
    pub fn poll_after(mut self, failures: u32) -> Self {
        self.cfg.poll.after = failures;
        self
    }

    /// The interval between polls (the first is at once). While the poll
    /// endpoint fails, the interval doubles up to eight times this. Defaults
    /// to 30 s, as in messmonitor.
    pub fn poll_every(mut self, interval: Duration) -> Self {
        self.cfg.poll.every = interval;
        self
    }

    /// Keeps state across restarts and power cuts in a file in this
    /// directory: the highest cursor and the ids of messages the
    /// application finished, the frames accepted by `send` and not yet
    /// written to a socket, and reliable frames not yet acknowledged.
    /// Finished messages are acked only after the write that records them.
    /// See the README, "Power cuts and restarts". Off by default.
    ///
    /// What is kept there is application data, so the directory is
    /// private to the process's user:
    ///
    /// - A missing directory is created with mode 0700, and the state file
    ///   is written with mode 0600, whatever the umask.
    /// - `build()` refuses a directory that users other than its owner can
    ///   write to, or that another user owns
    ///   ([`StateDirProblem::Writable`], [`StateDirProblem::Owner`]), unless
    ///   [`ClientBuilder::state_dir_allow_shared`] accepts it.
    /// - No symbolic link in it is followed: a state or lock file that is a
    ///   link is refused ([`StateDirProblem::NotAFile`]), and the temporary
    ///   file a write goes through is created afresh (a stale one is
    ///   removed, never opened).
    /// - One client at a time: `build()` takes a lock on `heartline.lock`
    ///   there, held until the end of [`crate::Client::close`] (or until
    ///   the process ends, however it ends: the kernel releases it), and
    ///   a second client on the directory, in this process or another, is
    ///   refused with [`StateDirProblem::InUse`]. A batch finished after
    ///   `close()` returned is not recorded.
    ///
    /// Loaded at `build()`; a missing, truncated or corrupted state file is
    /// a warning and a fresh start.
    ///
    /// [`StateDirProblem::Writable`]: crate::StateDirProblem::Writable
    /// [`StateDirProblem::Owner`]: crate::StateDirProblem::Owner
    /// [`StateDirProblem::NotAFile`]: crate::StateDirProblem::NotAFile
    /// [`StateDirProblem::InUse`]: crate::StateDirProblem::InUse
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cfg.state.dir = Some(dir.into());
        self
    }

    /// Accepts a `state_dir` that users other than its owner can write to
    /// (a shared data partition, mode 1777) or that another user owns.
    /// Links are still never followed and the lock still holds, but any
    /// user who can write there can delete or replace the state, so a
    /// restart may lose its record. Off by default; prefer a directory of
    /// the service's own user.
    pub fn state_dir_allow_shared(mut self, allow: bool) -> Self {
        self.cfg.state.allow_shared = allow;
        self
    }

    /// The most often the state file is written (only when something
    /// changed; an idle client writes nothing). Shorter: fewer duplicates
    /// after a power cut, acks sent sooner; longer: less flash wear.
    /// Defaults to 1 s.
    pub fn state_sync_every(mut self, every: Duration) -> Self {
        self.cfg.state.sync_every = every;
        self
    }

    /// Limit for one poll request, connect to last byte. Defaults to 10 s.
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.poll.timeout = timeout;
        self
    }

    /// The largest poll response body; a larger one fails that poll.
    /// Defaults to 4 MiB.
    pub fn max_poll_body(mut self, bytes: usize) -> Self {
        self.cfg.poll.max_body = bytes;
        self
    }

    /// Sends an application frame as the heartbeat instead of a Ping.
    pub fn heartbeat_frame(self, frame: impl Into<Frame>) -> Self {
        self.heartbeat(Heartbeat::Frame(frame.into()))
    }

    /// A heartbeat is sent when nothing has arrived for this long (any
    /// inbound frame restarts the count). Defaults to 25 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.cfg.heartbeat.interval = interval;
        self
    }

    /// Sends a heartbeat every `heartbeat_interval` even while frames keep
    /// arriving, and while reading is paused for a slow application.
    /// Defaults to off: any inbound frame postpones the heartbeat, so a
    /// busy stream never needs one. Turn it on for a server that drops a
    /// client that has sent nothing for a while however much it sends
    /// itself (a read-idle timeout on the server's side, such as Netty's
    /// `IdleStateHandler`), unless the protocol's acks already go up that
    /// often.
    pub fn heartbeat_even_when_busy(mut self, on: bool) -> Self {
        self.cfg.heartbeat.even_when_busy = on;
        self
    }

    /// After a heartbeat, the link is declared dead (half-open) when no frame
    /// at all arrives within this time: the socket is dropped and the client
    /// reconnects. At most 10 minutes. Defaults to 20 s.
    pub fn server_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.heartbeat.timeout = timeout;
        self
    }

    /// Adds a heartbeat-reply rule (repeatable): matching frames are
    /// consumed, not delivered, and time the round trip. Defaults to none
    /// (Pong frames are always consumed).
    pub fn reply(mut self, rule: ReplyRule) -> Self {
        self.replies.push(rule);
        self
    }

    /// The reconnect delay policy. Defaults to exponential from 500 ms to
    /// 30 s with full jitter (see [`Backoff`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.cfg.reconnect.backoff = backoff;
        self
    }

    /// A connection that closes before it has been open this long counts as a
    /// failed attempt, so a server that accepts and drops at once is not
    /// hammered at full speed. Defaults to 5 s.
    pub fn min_uptime(mut self, uptime: Duration) -> Self {
        self.cfg.reconnect.min_uptime = uptime;
        self
    }

    /// Stop after this many consecutive failed attempts (the client reports
    /// [`crate::CloseReason::GaveUp`] and the batch receiver ends). `None`
    /// retries for ever. Defaults to `None`: a device should keep trying.
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.cfg.reconnect.max_attempts = attempts;
        self
    }

    /// Close codes from the server after which the client stops instead of
    /// reconnecting. Defaults to none.
    pub fn terminal_close_codes(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.cfg.reconnect.terminal_codes = codes.into_iter().collect();
        self
    }

    /// A closure called on every (re)connect that returns the frames to send
    /// first (hello, subscriptions). They go out before any queued frame.
    /// Defaults to none.
    pub fn hello<F>(mut self, hello: F) -> Self
    where
        F: Fn(&HelloContext) -> Vec<Frame> + Send + Sync + 'static,
    {
        self.hello = Some(Arc::new(hello));
        self
    }

    /// How many frames [`crate::Client::send`] can queue while the socket is
    /// down or slow. When full, `try_send` hands the frame back and `send`
    /// waits up to [`ClientBuilder::send_timeout`] and then returns
    /// [`crate::SendError::Timeout`] (the frame handed back). Defaults to 1024.
    pub fn outbound_capacity(mut self, frames: usize) -> Self {
        self.cfg.queues.outbound_capacity = frames;
        self
    }

    /// How long [`crate::Client::send`] waits for room in a full outbound
    /// queue. Defaults to 1 s.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.queues.send_timeout = timeout;
        self
    }

    /// How many received messages may wait for the application. What happens
    /// when it is full is set by [`ClientBuilder::overflow`]. Defaults to
    /// 4096.
    pub fn inbound_capacity(mut self, messages: usize) -> Self {
        self.cfg.queues.inbound_capacity = messages;
        self
    }

    /// How many payload bytes may wait for the application: the inbound
    /// queue plus the batch being assembled. Whichever bound is reached
    /// first, this or [`ClientBuilder::inbound_capacity`], makes the queue
    /// full, and [`ClientBuilder::overflow`] applies. One message larger
    /// than the whole budget is still taken when nothing else waits, so
    /// nothing deadlocks. Batches already handed out are the application's
    /// memory, not counted here. Defaults to 8 MiB (see the README).
    pub fn inbound_bytes(mut self, bytes: usize) -> Self {
        self.cfg.queues.inbound_bytes = bytes;
        self
    }

    /// How many payload bytes [`crate::Client::send`] can queue. When full,
    /// senders wait as for a full [`ClientBuilder::outbound_capacity`]; a
    /// frame larger than the whole budget is refused with
    /// [`crate::SendError::TooLarge`]. Also bounds what a server that stops reading
    /// can make heartline buffer (twice this, then the connection is
    /// dropped). Defaults to 2 MiB (see the README).
    pub fn outbound_bytes(mut self, bytes: usize) -> Self {
        self.cfg.queues.outbound_bytes = bytes;
        self
    }

    /// What to do when the inbound queue is full. Defaults to
    /// [`Overflow::Backpressure`] (nothing dropped).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.cfg.queues.overflow = overflow;
        self
    }

    /// A batch is handed out this long after its first message arrived, or
    /// sooner when it reaches [`ClientBuilder::batch_max`]. Zero hands out
    /// each message at once (with whatever else is already waiting); then a
    /// receiver that has sent since its last batch looks for the reply for
    /// up to 50 µs before it sleeps, which shortens a request/reply round
    /// trip. Defaults to 100 ms (see the README for why).
    pub fn batch_window(mut self, window: Duration) -> Self {
        self.cfg.queues.batch_window = window;
        self
    }

    /// The most messages in one batch. Defaults to 512.
    pub fn batch_max(mut self, messages: usize) -> Self {
        self.cfg.queues.batch_max = messages;
        self
    }

    /// The largest inbound message (all its frames together). A message
    /// that passes `max_frame_size` frame by frame and grows larger than
    /// this closes the connection with 1009 and the client reconnects.
    /// Defaults to 1 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.cfg.link.max_message_size = bytes;
        self
    }

    /// The largest inbound frame. A message whose (first) frame is larger is
    /// dropped as its bytes arrive, never held: the connection carries on
    /// with the messages behind it, [`crate::Stats::too_large`] counts it
    /// and a warning says its size. At most `max_message_size`. Defaults to
    /// 1 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.cfg.link.max_frame_size = bytes;
        self
    }

    /// Limit for the host name lookup and the TCP connect together.
    /// Defaults to 10 s. A DNS server that does not answer (the uplink is
    /// gone) fails the attempt with [`crate::Phase::Resolve`] when it runs
    /// out, instead of holding it for the resolver's own timeouts. A name
    /// with several addresses has them raced (RFC 8305: 250 ms each before
    /// the next starts beside it), so an address whose packets go nowhere
    /// does not use it all up.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.link.connect_timeout = timeout;
        self
    }

    /// Limit for the TLS and WebSocket handshakes together. Defaults to 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.link.handshake_timeout = timeout;
        self
    }

    /// How long [`crate::Client::close`] waits for the server's close frame.
    /// Defaults to 500 ms.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.link.close_timeout = timeout;
        self
    }

    /// The HTTP proxy for the WebSocket (through a `CONNECT` tunnel; TLS to
    /// the server runs inside it) and for polls:
    /// `http://[user:password@]host:port`, with Basic authentication when
    /// the URL carries credentials (never logged). `None` turns proxies off.
    /// Without this call the environment decides, as curl does:
    /// `HTTPS_PROXY` for wss:// (and https:// polls), `http_proxy` for ws://,
    /// `ALL_PROXY` for both, and `NO_PROXY` (host names, domain suffixes, IP
    /// addresses, `*`); lower case wins. See the README, "Networks".
    pub fn proxy(mut self, url: Option<&str>) -> Self {
        self.cfg.proxy.url = Some(url.map(str::to_owned));
        self
    }

    /// After a server closes with 1012 (Service Restart) or 1013 (Try
    /// Again Later), the next attempt waits the backoff's delay plus a
    /// random share of this, uniformly spread, so a fleet comes back to the
    /// restarted server over this long instead of all at once. Defaults to
    /// 10 s (with `Backoff::Fixed(4 s)`, 4 to 14 s); zero: the backoff
    /// alone.
    pub fn restart_spread(mut self, spread: Duration) -> Self {
        self.cfg.reconnect.restart_spread = spread;
        self
    }

    /// The longest wait a server's `Retry-After` (on a 429 or 503 answer to
    /// the upgrade or a poll) can impose on the next attempt; the backoff's
    /// own delay applies when it is longer. Defaults to 5 minutes.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.cfg.reconnect.max_retry_after = max;
        self
    }

    /// TCP keepalive on every socket; `None` turns it off. Defaults to
    /// [`Keepalive::derived`] from `heartbeat_interval` and `server_timeout`.
    pub fn tcp_keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.cfg.link.keepalive_choice = Some(keepalive);
        self
    }

    /// How long written data may stay unacknowledged by the server, or a
    /// write make no progress, before the connection is dropped with
    /// [`crate::ConnectionError::WriteStalled`] (also set as the socket's
    /// `TCP_USER_TIMEOUT`, so the kernel gives up on a dead link as fast
    /// instead of after its 15 to 30 minutes of retransmissions). Defaults
    /// to `heartbeat_interval + server_timeout`.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.link.write_timeout_choice = Some(timeout);
        self
    }

    /// Trusts an extra root certificate (PEM) besides the system's, for a
    /// private CA (repeatable).
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.cfg.tls.roots_pem.push(pem.into());
        self
    }

    /// **Dangerous:** accepts any server certificate, so anyone on the path
    /// can read and change the traffic. For lab use only. Defaults to
    /// `false`.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.cfg.tls.accept_invalid_certs = accept;
        self
    }

    /// How many state changes the [`crate::Events`] receiver keeps when
    /// nobody reads it; the oldest is dropped past that. Defaults to 64.
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.cfg.queues.event_capacity = events;
        self
    }

    pub(crate) fn validate(mut self) -> Result<Config> {
        if let Some(provider) = self.provider.take() {
            if !self.headers.is_empty() {
                return Err(Error::config(
                    "header",
                    "with an endpoint provider the headers come from the Endpoint it returns",
                ));
            }
            self.cfg.endpoint = provider;
        }
        if let Some(url) = self.url.take() {
            crate::target::Target::parse(&url).map_err(|e| match e {
                crate::error::ConnectionError::Url { url, reason } => Error::Url { url, reason },
                other => Error::config("url", other.to_string()),
            })?;
            let endpoint = Endpoint {
                url,
                headers: std::mem::take(&mut self.headers),
            };
            self.cfg.endpoint = Arc::new(move |_: &EndpointContext| endpoint.clone());
        }
        crate::error::guarded("check", || self.protocol.check())
            .map_err(|e| Error::config("protocol", e.to_string()))?
            .map_err(|e| Error::config("protocol", e))?;
        self.cfg.heartbeat.kind = match (self.heartbeat.take(), self.protocol.heartbeat()) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "heartbeat",
                    "set on the builder and by the protocol; set it in one place",
                ))
            }
            (Some(h), None) => h,
            (None, Some(f)) => Heartbeat::Frame(f),
            (None, None) => Heartbeat::Ping,
        };
        self.cfg.queues.ack_mode = match (self.ack_mode, self.cfg.queues.overflow) {
            // An acked message must never be dropped from the queue later.
            (Some(AckMode::Queued), Overflow::DropOldest) => {
                return Err(Error::config(
                    "ack_mode",
                    "AckMode::Queued with Overflow::DropOldest would ack messages that are \
                     then dropped unprocessed; use AckMode::Delivered",
                ))
            }
            (Some(mode), _) => mode,
            (None, _) => AckMode::Finished,
        };
        self.cfg.frames_are_messages = !self.protocol_set && self.replies.is_empty();
        self.cfg.protocol = Arc::new(Layered {
            inner: self.protocol.clone(),
            replies: std::mem::take(&mut self.replies),
            hello: self.hello.take(),
        });
        // The order of the checks is the order a user reads the options in.
        let c = &mut self.cfg;
        c.poll.validate()?;
        c.heartbeat.validate(c.link.max_frame_size)?;
        c.link.validate()?;
        c.link.keepalive = c.link.keepalive_choice.unwrap_or_else(|| {
            Some(Keepalive::derived(
                c.heartbeat.interval,
                c.heartbeat.timeout,
            ))
        });
        c.link.write_timeout = c
            .link
            .write_timeout_choice
            .unwrap_or(c.heartbeat.interval.saturating_add(c.heartbeat.timeout));
        c.reconnect.validate()?;
        c.queues.validate()?;
        c.tls.validate()?;
        c.state.validate()?;
        c.proxy.validate()?;
        // Application code, asked once here (on the caller's thread) and
        // through the guard like every other call into it.
        let probe = crate::error::guarded("poll_request", || c.protocol.poll_request(None))
            .map_err(|e| Error::config("protocol", e.to_string()))?;
        c.poll.enabled = probe.is_some();
        c.poll.probe_url = probe.as_ref().map(|r| r.url.clone());
        if let Some(req) = probe {
            if !(req.url.starts_with("http://") || req.url.starts_with("https://")) {
                return Err(Error::config(
                    "protocol",
                    format!(
                        "poll URL {} is not http:// or https://",
                        redact::url(&req.url)
                    ),
                ));
            }
        }
        Ok(self.cfg)
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), redact::header_value(n, v)))
            .collect();
        f.debug_struct("ClientBuilder")
            .field("url", &self.url.as_deref().map(redact::url))
            .field("headers", &headers)
            .field("heartbeat", &self.heartbeat)
            .field("heartbeat_interval", &self.cfg.heartbeat.interval)
            .field("server_timeout", &self.cfg.heartbeat.timeout)
            .field("backoff", &self.cfg.reconnect.backoff)
            .field("max_attempts", &self.cfg.reconnect.max_attempts)
            .field("proxy", &self.cfg.proxy)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<Config>) -> &'static str {
        match r {
            Err(Error::Config { field, .. }) => field,
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("expected a config error, got Ok"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(ClientBuilder::new("ws://127.0.0.1:1/").validate().is_ok());
    }

    #[test]
    fn zero_interval_names_the_field() {
        let b = ClientBuilder::new("ws://h/").heartbeat_interval(Duration::ZERO);
        assert_eq!(field_of(b.validate()), "heartbeat_interval");
    }

    #[test]
    fn absurd_server_timeout_is_refused() {
        let b = ClientBuilder::new("ws://h/").server_timeout(Duration::from_secs(3600));
        assert_eq!(field_of(b.validate()), "server_timeout");
    }

    #[test]
    fn a_duration_of_years_is_refused_not_overflowed() {
        let b = ClientBuilder::new("ws://h/").connect_timeout(Duration::MAX);
        assert_eq!(field_of(b.validate()), "connect_timeout");
        let b = ClientBuilder::new("ws://h/").backoff(Backoff::Fixed(Duration::from_secs(1 << 40)));
        assert_eq!(field_of(b.validate()), "backoff");
    }

    #[test]
    fn a_heartbeat_set_on_the_builder_and_by_the_protocol_is_refused() {
        let b = ClientBuilder::new("ws://h/")
            .heartbeat_frame("ping")
            .protocol(crate::JsonRules::new().heartbeat("hb"));
        assert_eq!(field_of(b.validate()), "heartbeat");
        // In one place, either place works.
        let c = ClientBuilder::new("ws://h/")
            .protocol(crate::JsonRules::new().heartbeat("hb"))
            .validate()
            .unwrap();
        assert_eq!(c.heartbeat.kind, Heartbeat::Frame(Frame::from("hb")));
        let c = ClientBuilder::new("ws://h/").validate().unwrap();
        assert_eq!(c.heartbeat.kind, Heartbeat::Ping);
    }

    #[test]
    fn acks_default_to_finished_and_queued_is_refused_with_drop_oldest() {
        let c = ClientBuilder::new("ws://h/")
            .overflow(Overflow::DropOldest)
            .validate()
            .unwrap();
        assert_eq!(c.queues.ack_mode, AckMode::Finished);
        let b = ClientBuilder::new("ws://h/")
            .overflow(Overflow::DropOldest)
            .ack_mode(AckMode::Queued);
        assert_eq!(field_of(b.validate()), "ack_mode");
    }

    #[test]
    fn builder_replies_and_hello_are_layered_onto_the_protocol() {
        let c = ClientBuilder::new("ws://h/")
            .protocol(
                crate::JsonRules::new()
                    .reply("pong-a")
                    .hello(serde_json::json!({"a": 1})),
            )
            .reply(ReplyRule::Text("pong-b".into()))
            .hello(|_| vec![Frame::from("b")])
            .validate()
            .unwrap();
        assert!(c.protocol.is_heartbeat_reply(&Frame::from("pong-a")));
        assert!(c.protocol.is_heartbeat_reply(&Frame::from("pong-b")));
        let ctx = HelloContext {
            reconnects: 0,
            cursor: None,
        };
        assert_eq!(
            c.protocol.hello(&ctx),
            vec![Frame::from(r#"{"a":1}"#), Frame::from("b")]
        );
    }

    #[test]
    fn headers_with_an_endpoint_provider_are_refused_not_ignored() {
        let b = ClientBuilder::with_endpoint(|_: &EndpointContext| Endpoint::new("ws://h/"))
            .header("X-A", "1");
        assert_eq!(field_of(b.validate()), "header");
        assert!(
            ClientBuilder::with_endpoint(|_: &EndpointContext| Endpoint::new("ws://h/"))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn frame_larger_than_message_is_refused() {
        let b = ClientBuilder::new("ws://h/")
            .max_message_size(1000)
            .max_frame_size(2000);
        assert_eq!(field_of(b.validate()), "max_frame_size");
    }

    #[test]
    fn reply_rule_from_json_text_matches_objects_holding_its_fields() {
        let rule = ReplyRule::parse(r#"{"wsType":1}"#);
        assert!(rule.matches(&Frame::from(r#"{"wsType":1,"ok":true}"#)));
        assert!(!rule.matches(&Frame::from(r#"{"wsType":4}"#)));
        assert!(!rule.matches(&Frame::from("wsType")));
        let plain = ReplyRule::parse("pong");
        assert!(plain.matches(&Frame::from("pong")));
        assert!(!plain.matches(&Frame::from("pong ")));
        assert!(!plain.matches(&Frame::Binary(b"pong".to_vec())));
    }

    #[test]
    fn debug_output_hides_tokens() {
        let b = ClientBuilder::new("wss://h/ws?token=SECRET1")
            .header("Authorization", "Bearer SECRET2");
        let shown = format!("{b:?}");
        assert!(
            !shown.contains("SECRET1") && !shown.contains("SECRET2"),
            "{shown}"
        );
        let e = Endpoint::new("ws://h/?access_token=SECRET3").header("Cookie", "SECRET4");
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("SECRET3") && !shown.contains("SECRET4"),
            "{shown}"
        );
    }
}
