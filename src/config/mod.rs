//! [`ClientBuilder`]: where to connect, the protocol, and the configuration
//! sections, checked together at `build()`. The sections: the connection's
//! in [`sections`], what the application receives and what survives a
//! restart in [`delivery`], whom to trust in [`tls`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::protocol::HelloContext;
use crate::redact;

pub(crate) mod delivery;
pub(crate) mod sections;
pub(crate) mod tls;

use delivery::{Delivery, Persistence};
use sections::{Heartbeat, Keepalive, Limits, Polling, Reconnect, Timeouts};
use tls::Tls;

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

/// The validated configuration: the application's sections as given, and
/// what `build()` resolved from them. Each thread reads what it needs.
#[derive(Clone)]
pub(crate) struct Config {
    pub endpoint: Arc<EndpointFn>,
    pub protocol: Arc<dyn crate::protocol::Protocol>,
    /// The protocol is the built-in [`crate::Plain`] and there are no
    /// heartbeat replies to look for: every data frame is a message as it
    /// is (the io thread then skips the protocol).
    pub frames_are_messages: bool,
    pub hello: Option<Arc<HelloFn>>,
    /// Skip what breaks RFC 6455 and carry on, instead of failing the
    /// connection.
    pub lenient: bool,
    /// Offered in `Sec-WebSocket-Protocol`, in order of preference.
    pub subprotocols: Vec<String>,
    /// Which uplink: the interfaces in order of preference, the local
    /// address.
    pub binding: crate::connect::bind::Binding,
    /// Watch the kernel's routing netlink for network changes.
    pub watch_network: bool,
    /// Offer permessage-deflate.
    pub compression: bool,
    pub heartbeat: Heartbeat,
    pub reconnect: Reconnect,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub delivery: Delivery,
    pub polling: Polling,
    pub tls: Tls,
    pub state: Persistence,
    pub proxy: ProxySection,
    /// Resolved at build: the sockets' keepalive.
    pub keepalive: Option<Keepalive>,
    /// Resolved at build: `timeouts.write` or its default.
    pub write_timeout: Duration,
    /// Resolved at build: `tls.root_certificates`, parsed.
    pub roots: Vec<native_tls::Certificate>,
    /// Resolved at build: the poll URL the protocol gave, when it polls
    /// (for the proxy choice).
    pub poll_url: Option<String>,
}

impl Config {
    /// The protocol has a poll request: the HTTP fallback is on.
    pub(crate) fn polls(&self) -> bool {
        self.poll_url.is_some()
    }
}

/// Which HTTP proxy the WebSocket and the poller go through, resolved at
/// build.
#[derive(Clone, Default)]
pub(crate) struct ProxySection {
    pub choice: crate::connect::proxy::Choice,
    /// The environment's proxies, read once at build.
    pub env: crate::connect::proxy::Env,
}

impl fmt::Debug for ProxySection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it carries the proxy's credentials.
        f.write_str(match self.choice {
            crate::connect::proxy::Choice::Env => "from the environment",
            crate::connect::proxy::Choice::Off => "off",
            crate::connect::proxy::Choice::Fixed(_) => "fixed",
        })
    }
}

impl ProxySection {
    /// `url` as given to the builder: `None` when it was not called.
    fn choose(url: Option<Option<String>>) -> Result<Self> {
        Ok(match url {
            None => ProxySection {
                choice: crate::connect::proxy::Choice::Env,
                env: crate::connect::proxy::Env::read(|k| std::env::var(k).ok()),
            },
            Some(None) => ProxySection {
                choice: crate::connect::proxy::Choice::Off,
                env: crate::connect::proxy::Env::default(),
            },
            Some(Some(u)) => ProxySection {
                choice: crate::connect::proxy::Choice::Fixed(
                    crate::connect::proxy::Proxy::parse(&u)
                        .map_err(|e| Error::config("proxy", e))?,
                ),
                env: crate::connect::proxy::Env::default(),
            },
        })
    }
}

/// Builds a [`crate::Client`]. Every option has a default suited to a device
/// on a real network; [`ClientBuilder::build`] checks them all and names the
/// first bad one (as `section.field`).
///
/// The options come in sections, each a struct with public fields and a
/// `Default` (see [`Heartbeat`], [`Reconnect`], [`Timeouts`], [`Limits`],
/// [`Delivery`], [`Polling`], [`Tls`], [`Persistence`]); set the fields that
/// differ and take the rest from `Default`:
///
/// ```no_run
/// use std::time::Duration;
/// use heartline::{Client, Heartbeat, ReplyRule, Persistence};
/// let client = Client::builder("wss://example.com/ws")
///     .heartbeat(Heartbeat {
///         frame: Some(r#"{"type":"ping"}"#.into()),
///         replies: vec![ReplyRule::parse(r#"{"type":"pong"}"#)],
///         interval: Duration::from_secs(30),
///         ..Heartbeat::default()
///     })
///     .persistence(Persistence::in_dir("/var/lib/kiosk/heartline"))
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
    /// `cfg.protocol` was set by the application (it is not the built-in
    /// [`crate::Plain`]).
    protocol_set: bool,
    /// `proxy()` was called: `Some(None)` turns proxies off.
    proxy: Option<Option<String>>,
    cfg: Config,
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        ClientBuilder {
            url: Some(url.into()),
            provider: None,
            headers: Vec::new(),
            protocol_set: false,
            proxy: None,
            cfg: Config {
                endpoint: Arc::new(|_: &EndpointContext| Endpoint::default()),
                protocol: Arc::new(crate::protocol::Plain),
                frames_are_messages: true,
                hello: None,
                lenient: false,
                subprotocols: Vec::new(),
                binding: Default::default(),
                watch_network: true,
                compression: false,
                heartbeat: Heartbeat::default(),
                reconnect: Reconnect::default(),
                timeouts: Timeouts::default(),
                limits: Limits::default(),
                delivery: Delivery::default(),
                polling: Polling::default(),
                tls: Tls::default(),
                state: Persistence::default(),
                proxy: ProxySection::default(),
                keepalive: None,
                write_timeout: Duration::ZERO,
                roots: Vec::new(),
                poll_url: None,
            },
        }
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

    /// Adds a header to the upgrade request of the fixed URL (repeatable,
    /// order kept). With an endpoint provider the provider returns the
    /// headers, and `build()` refuses this. `Authorization` and `Cookie`
    /// values never appear in logs.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The application protocol: which frame is a message with which id,
    /// cursor and kinds, its ack, reliable frames, and the HTTP polling
    /// fallback. Defaults to [`crate::Plain`] (frames are messages; no
    /// polling). See [`crate::JsonRules`] for JSON servers.
    pub fn protocol(mut self, protocol: impl crate::protocol::Protocol) -> Self {
        self.cfg.protocol = Arc::new(protocol);
        self.protocol_set = true;
        self
    }

    /// A closure called on every (re)connect that returns the frames to send
    /// first (hello, subscriptions), given the reconnect count and the
    /// highest cursor seen, so a server can resume from it. They go out
    /// before any queued frame. Defaults to none.
    pub fn hello<F>(mut self, hello: F) -> Self
    where
        F: Fn(&HelloContext) -> Vec<Frame> + Send + Sync + 'static,
    {
        self.cfg.hello = Some(Arc::new(hello));
        self
    }

    /// Lenient framing, for a server that breaks RFC 6455 and never
    /// redelivers. Off by default: heartline is strict, as browsers are. A
    /// protocol violation (a frame type or RSV bit no extension was agreed
    /// for, text that is not UTF-8, a bad control or close frame) fails the
    /// connection as RFC 6455 §7.1.7 says: nothing more is read; once the
    /// application has taken what came before and let go of its batches
    /// (at most `timeouts.close`), what it queued is written, then a close
    /// frame with 1002 (or 1007 for bad text), and the reconnect policy
    /// applies. A server that redelivers
    /// what was not acknowledged loses nothing by this (the connection's
    /// unfinished messages come again), but one that does not loses every
    /// message it had in flight behind the bad frame.
    ///
    /// `lenient(true)` instead skips what it can skip and carries on: a
    /// message whose frame is of a reserved type, and a text message that
    /// is not UTF-8, are dropped as their bytes arrive (with the
    /// continuations of their message), counted in
    /// [`crate::Stats::malformed`] and logged. What breaks the stream
    /// itself (RSV bits, a masked frame, a bad continuation, a bad control
    /// or close frame) still fails the connection.
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.cfg.lenient = lenient;
        self
    }

    /// Offers permessage-deflate (RFC 7692) in the upgrade, with the
    /// `compression` feature; off by default. When the server agrees, its
    /// compressed messages are inflated and the client's own messages of
    /// 64 bytes or more are sent compressed when that makes them smaller.
    /// What the server agreed is in the `Open` event
    /// ([`crate::Opened::compression`]).
    ///
    /// - **Limits count inflated bytes**: `Limits::max_message_size` and
    ///   `Limits::inbound_bytes` bound what a message inflates to; inflation
    ///   stops at the limit (a few KB that inflate to gigabytes allocate no
    ///   more than the limit), and `Limits::on_too_large` applies. While
    ///   the server keeps its context between messages (the default), a
    ///   message over the limit is inflated to its end into a 16 KiB scratch
    ///   buffer, because the next messages refer to it: its CPU cost is
    ///   bounded by its size on the wire, not its memory.
    /// - **Memory per connection**: inflating keeps a 32 KiB window and
    ///   about 7 KiB of zlib state for the connection's life; compressing
    ///   takes about 256 KiB (zlib, 32 KiB window) from the first message
    ///   worth compressing, less when the server limits the client's
    ///   window (`client_max_window_bits`).
    /// - The client offers `client_no_context_takeover`: each of its
    ///   messages is compressed on its own.
    /// - Bad compressed data fails the connection with 1007.
    ///
    /// Worth it on a metered link with JSON pushes, which shrink several
    /// times; it costs CPU on every message.
    pub fn compression(mut self, on: bool) -> Self {
        self.cfg.compression = on;
        self
    }

    /// Subprotocols to offer in the upgrade's `Sec-WebSocket-Protocol`, in
    /// order of preference (each an HTTP token, such as `mqtt` or
    /// `v2.push.example.com`). The server's choice is in the `Open` event
    /// ([`crate::Opened::subprotocol`]) and in [`crate::Stats::subprotocol`];
    /// a choice that was not offered fails the attempt with an error that
    /// says so. Defaults to none (the header is not sent).
    pub fn subprotocols<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cfg.subprotocols = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sends the connection (and the proxy's, with a proxy) out over this
    /// network interface (`SO_BINDTODEVICE`), whatever the routing table
    /// prefers: for a device with more than one uplink, say ethernet and
    /// an LTE modem. Called more than once, the names are a list in order
    /// of preference: each attempt takes the first interface that is up
    /// (with a carrier) and has an address, so a reconnect after the
    /// preferred link went down goes out over the next one. When a
    /// preferred interface comes back while the connection uses another,
    /// and stays up with an address for [`Reconnect::min_uptime`] (so a
    /// flapping link does not move it back and forth), the connection is
    /// closed cleanly (1001) and the next one goes out over the preferred
    /// interface ([`ClientBuilder::watch_network`], on by default, sees
    /// it come back). The one used is in the `Open` event
    /// ([`crate::Opened::interface`]).
    ///
    /// Binding to an interface needs `CAP_NET_RAW`: `setcap cap_net_raw+ep`
    /// on the binary, or `AmbientCapabilities=CAP_NET_RAW` in its systemd
    /// unit. Without it, or when no interface of the list is up, the
    /// attempt fails with [`crate::ConnectionError::Bind`] (its
    /// [`crate::BindProblem`] says which) and the reconnect policy applies.
    /// The HTTP fallback's polls are bound the same way (a poll that
    /// cannot be bound fails, and the poller retries).
    pub fn bind_interface(mut self, name: impl Into<String>) -> Self {
        self.cfg.binding.interfaces.push(name.into());
        self
    }

    /// The connection's local address (for a device with more than one
    /// address, or to pick an uplink without `CAP_NET_RAW`). Only the
    /// server's addresses of the same family are tried. An address that is
    /// not the device's fails the attempt with
    /// [`crate::ConnectionError::Bind`]. The HTTP fallback's polls are bound
    /// the same way.
    pub fn bind_address(mut self, address: std::net::IpAddr) -> Self {
        self.cfg.binding.address = Some(address);
        self
    }

    /// Whether to watch the kernel's routing netlink for network changes
    /// (on by default). With it on:
    ///
    /// - when the link or the address the connection goes out from goes
    ///   away (a cable pulled, a modem gone, a lease lost), the connection
    ///   is closed at once with [`crate::ConnectionError::NetworkChanged`]
    ///   and the next attempt goes out within a few hundred milliseconds
    ///   over what is there now, instead of after the heartbeat's
    ///   dead-link timeout and the backoff;
    /// - while the client waits to retry, a link coming up, an address or
    ///   a default route being added makes the next attempt go out at once
    ///   (after a random 50 to 300 ms, so a fleet behind one switch does
    ///   not arrive together), instead of at the backoff's time.
    ///
    /// It costs one netlink socket and no thread: the io thread and the
    /// supervisor wait on it beside what they wait on anyway, and the
    /// kernel only speaks when the network changes, so an idle connection
    /// is never woken by it. Notifications that repeat what is known (wifi
    /// drivers send link messages all the time; router advertisements
    /// refresh addresses) do not count as changes. Where the subscription
    /// cannot be made (a sandbox without netlink), a warning is logged and
    /// the client works as with it off.
    pub fn watch_network(mut self, on: bool) -> Self {
        self.cfg.watch_network = on;
        self
    }

    /// The heartbeat: what is sent, what answers it, how often, and when
    /// the link is dead. See [`Heartbeat`] for the defaults.
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.cfg.heartbeat = heartbeat;
        self
    }

    /// The reconnect policy. See [`Reconnect`] for the defaults.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.cfg.reconnect = reconnect;
        self
    }

    /// How long each step may take. See [`Timeouts`] for the defaults.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.cfg.timeouts = timeouts;
        self
    }

    /// Message sizes and the queues' bounds in count and bytes. See
    /// [`Limits`] for the defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.cfg.limits = limits;
        self
    }

    /// Batching, acks, and what a full inbound queue does. See
    /// [`Delivery`] for the defaults.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.cfg.delivery = delivery;
        self
    }

    /// The HTTP polling fallback's timing (the protocol says where to poll).
    /// See [`Polling`] for the defaults.
    pub fn polling(mut self, polling: Polling) -> Self {
        self.cfg.polling = polling;
        self
    }

    /// Extra roots to trust. See [`Tls`].
    pub fn tls(mut self, tls: Tls) -> Self {
        self.cfg.tls = tls;
        self
    }

    /// Keeps state across restarts and power cuts, in a private directory.
    /// Off by default. See [`Persistence`].
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.cfg.state = persistence;
        self
    }

    /// The HTTP proxy for the WebSocket (through a `CONNECT` tunnel; TLS to
    /// the server runs inside it) and for polls:
    /// `http://[user:password@]host:port`, with Basic authentication when
    /// the URL carries credentials (never logged). `None` turns proxies off.
    /// Without this call the environment decides, as curl does:
    /// `HTTPS_PROXY` for wss:// (and https:// polls), `http_proxy` for ws://,
    /// `ALL_PROXY` for both, and `NO_PROXY` (host names, domain suffixes, IP
    /// addresses, `*`); lower case wins. See the
    /// [networks guide](crate::guide::networks).
    pub fn proxy(mut self, url: Option<&str>) -> Self {
        self.proxy = Some(url.map(str::to_owned));
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
            crate::connect::target::Target::parse(&url).map_err(|e| match e {
                crate::error::ConnectionError::Url { url, reason } => Error::Url { url, reason },
                other => Error::config("url", other.to_string()),
            })?;
            let endpoint = Endpoint {
                url,
                headers: std::mem::take(&mut self.headers),
            };
            self.cfg.endpoint = Arc::new(move |_: &EndpointContext| endpoint.clone());
        }
        let c = &mut self.cfg;
        crate::error::guarded("check", || c.protocol.check())
            .map_err(|e| Error::config("protocol", e.to_string()))?
            .map_err(|e| Error::config("protocol", e))?;
        c.frames_are_messages = !self.protocol_set && c.heartbeat.replies.is_empty();
        if c.compression && !cfg!(feature = "compression") {
            return Err(Error::config(
                "compression",
                "this build of heartline has no compression: turn on its `compression` feature",
            ));
        }
        for name in &c.binding.interfaces {
            let max = crate::connect::bind::Binding::MAX_NAME;
            if name.is_empty()
                || name.len() > max
                || name
                    .bytes()
                    .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
            {
                return Err(Error::config(
                    "bind_interface",
                    format!(
                        "{name:?} is not an interface name (1 to {max} bytes, no '/', \
                         no space); `ip link` lists them"
                    ),
                ));
            }
        }
        for name in &c.subprotocols {
            if name.is_empty() || !name.bytes().all(crate::connect::target::token_byte) {
                return Err(Error::config("subprotocols", "must be HTTP tokens"));
            }
        }
        // The order of the checks is the order a user reads the sections in.
        c.heartbeat.validate(c.limits.max_frame_size)?;
        c.reconnect.validate()?;
        c.timeouts.validate()?;
        c.limits.validate()?;
        c.delivery.validate()?;
        c.polling.validate()?;
        c.roots = c.tls.roots()?;
        if let Some(id) = &c.tls.client_identity {
            // Checked now (readable, the key fits); files are read again at
            // every attempt.
            crate::connect::identity::load(id)
                .map_err(|e| Error::config("tls.client_identity", e))?;
        }
        c.state.validate()?;
        c.proxy = ProxySection::choose(self.proxy.take())?;
        c.keepalive = c.heartbeat.keepalive();
        c.write_timeout = c.timeouts.write.unwrap_or(
            c.heartbeat
                .interval
                .saturating_add(c.heartbeat.server_timeout),
        );
        // Application code, asked once here (on the caller's thread) and
        // through the guard like every other call into it.
        let probe = crate::error::guarded("poll_request", || c.protocol.poll_request(None))
            .map_err(|e| Error::config("protocol", e.to_string()))?;
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
            c.poll_url = Some(req.url);
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
        let proxy = match &self.proxy {
            None => "from the environment".to_owned(),
            Some(None) => "off".to_owned(),
            Some(Some(u)) => redact::url(u),
        };
        f.debug_struct("ClientBuilder")
            .field("url", &self.url.as_deref().map(redact::url))
            .field("headers", &headers)
            .field("heartbeat", &self.cfg.heartbeat)
            .field("reconnect", &self.cfg.reconnect)
            .field("timeouts", &self.cfg.timeouts)
            .field("limits", &self.cfg.limits)
            .field("delivery", &self.cfg.delivery)
            .field("persistence", &self.cfg.state)
            .field("proxy", &proxy)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::backoff::Backoff;
    use crate::protocol::ReplyRule;
    use delivery::{AckMode, Overflow};

    fn field_of(r: Result<Config>) -> &'static str {
        match r {
            Err(Error::Config { field, .. }) => field,
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("expected a config error, got Ok"),
        }
    }

    fn builder() -> ClientBuilder {
        ClientBuilder::new("ws://h/")
    }

    #[test]
    fn defaults_are_valid() {
        assert!(ClientBuilder::new("ws://127.0.0.1:1/").validate().is_ok());
    }

    #[test]
    fn each_bad_field_is_named_by_its_section() {
        let zero = Duration::ZERO;
        let cases: Vec<(ClientBuilder, &str)> = vec![
            (
                builder().heartbeat(Heartbeat {
                    interval: zero,
                    ..Heartbeat::default()
                }),
                "heartbeat.interval",
            ),
            (
                builder().heartbeat(Heartbeat {
                    server_timeout: Duration::from_secs(3600),
                    ..Heartbeat::default()
                }),
                "heartbeat.server_timeout",
            ),
            (
                builder().timeouts(Timeouts {
                    connect: Duration::MAX,
                    ..Timeouts::default()
                }),
                "timeouts.connect",
            ),
            (
                builder().reconnect(Reconnect {
                    backoff: Backoff::Fixed(Duration::from_secs(1 << 40)),
                    ..Reconnect::default()
                }),
                "reconnect.backoff",
            ),
            (
                builder().reconnect(Reconnect {
                    max_attempts: 0,
                    ..Reconnect::default()
                }),
                "reconnect.max_attempts",
            ),
            (
                builder().limits(Limits {
                    max_message_size: 1000,
                    max_frame_size: 2000,
                    ..Limits::default()
                }),
                "limits.max_frame_size",
            ),
            (
                builder().delivery(Delivery {
                    overflow: Overflow::DropOldest,
                    ack_mode: AckMode::Queued,
                    ..Delivery::default()
                }),
                "delivery.ack_mode",
            ),
            (
                builder().polling(Polling {
                    after: 0,
                    ..Polling::default()
                }),
                "polling.after",
            ),
            (
                builder().tls(Tls {
                    root_certificates: vec![b"garbage".to_vec()],
                    ..Tls::default()
                }),
                "tls.root_certificates",
            ),
            (
                builder().persistence(Persistence::in_dir("")),
                "persistence.dir",
            ),
        ];
        for (b, field) in cases {
            assert_eq!(field_of(b.validate()), field);
        }
    }

    #[test]
    fn acks_default_to_finished_also_with_drop_oldest() {
        let c = builder()
            .delivery(Delivery {
                overflow: Overflow::DropOldest,
                ..Delivery::default()
            })
            .validate()
            .unwrap();
        assert_eq!(c.delivery.ack_mode, AckMode::Finished);
    }

    #[test]
    fn derived_values_follow_the_heartbeat_unless_set() {
        let c = builder()
            .heartbeat(Heartbeat {
                interval: Duration::from_secs(30),
                server_timeout: Duration::from_secs(60),
                ..Heartbeat::default()
            })
            .validate()
            .unwrap();
        assert_eq!(c.write_timeout, Duration::from_secs(90));
        assert_eq!(
            c.keepalive,
            Some(Keepalive::derived(
                Duration::from_secs(30),
                Duration::from_secs(60)
            ))
        );
        let c = builder()
            .heartbeat(Heartbeat {
                tcp_keepalive: sections::TcpKeepalive::Off,
                ..Heartbeat::default()
            })
            .timeouts(Timeouts {
                write: Some(Duration::from_secs(7)),
                ..Timeouts::default()
            })
            .validate()
            .unwrap();
        assert_eq!(
            (c.keepalive, c.write_timeout),
            (None, Duration::from_secs(7))
        );
    }

    #[test]
    fn heartbeat_replies_turn_off_the_plain_fast_path() {
        assert!(builder().validate().unwrap().frames_are_messages);
        let c = builder()
            .heartbeat(Heartbeat {
                frame: Some("ping".into()),
                replies: vec![ReplyRule::Text("pong".into())],
                ..Heartbeat::default()
            })
            .validate()
            .unwrap();
        assert!(!c.frames_are_messages);
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
    fn reply_rule_from_json_text_matches_objects_holding_its_fields() {
        let rule = ReplyRule::parse(r#"{"type":1}"#);
        assert!(rule.matches(&Frame::from(r#"{"type":1,"ok":true}"#)));
        assert!(!rule.matches(&Frame::from(r#"{"type":4}"#)));
        assert!(!rule.matches(&Frame::from("type")));
        let plain = ReplyRule::parse("pong");
        assert!(plain.matches(&Frame::from("pong")));
        assert!(!plain.matches(&Frame::from("pong ")));
        assert!(!plain.matches(&Frame::Binary(b"pong".to_vec())));
    }

    #[test]
    fn debug_output_hides_tokens() {
        let b = ClientBuilder::new("wss://h/ws?token=SECRET1")
            .header("Authorization", "Bearer SECRET2")
            .proxy(Some("http://user:SECRET5@proxy:3128"));
        let shown = format!("{b:?}");
        for secret in ["SECRET1", "SECRET2", "SECRET5"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let e = Endpoint::new("ws://h/?access_token=SECRET3").header("Cookie", "SECRET4");
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("SECRET3") && !shown.contains("SECRET4"),
            "{shown}"
        );
    }
}
