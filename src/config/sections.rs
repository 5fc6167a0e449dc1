//! The connection's configuration sections: heartbeat and keepalive,
//! reconnect, timeouts, limits, polling. Each concern is one
//! `Default`-able struct with public fields, its defaults in one place and
//! its own checks (as are [`super::delivery`]'s and [`super::tls`]'s).
//!
//! Set only what differs and take the rest from `Default`:
//!
//! ```
//! use std::time::Duration;
//! use heartline::{Heartbeat, Timeouts};
//! let heartbeat = Heartbeat {
//!     interval: Duration::from_secs(30),
//!     server_timeout: Duration::from_secs(60),
//!     ..Heartbeat::default()
//! };
//! let timeouts = Timeouts { connect: Duration::from_secs(5), ..Timeouts::default() };
//! # let _ = (heartbeat, timeouts);
//! ```
//!
//! Fields may be added in a minor release, so build a section with
//! `..Default::default()` as above, never with every field spelled out.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::machine::backoff::Backoff;
use crate::protocol::ReplyRule;

/// Largest server timeout accepted: beyond this a dead link goes unnoticed
/// for so long that it is almost certainly a unit mistake.
const MAX_SERVER_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest value of any other duration option: a larger value is a unit
/// mistake, and would overflow the clock arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

pub(super) fn positive(field: &'static str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(Error::config(field, "must be greater than zero"));
    }
    within_a_day(field, d)
}

pub(super) fn within_a_day(field: &'static str, d: Duration) -> Result<()> {
    if d > MAX_DURATION {
        return Err(Error::config(
            field,
            format!("{d:?} is longer than one day; a unit mistake?"),
        ));
    }
    Ok(())
}

pub(super) fn at_least_one(field: &'static str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::config(field, "must be at least 1"));
    }
    Ok(())
}

/// Liveness: what the heartbeat sends, how often, what answers it, and
/// when the link is declared dead.
///
/// Defaults: a WebSocket Ping after 25 s without any inbound frame, the
/// link dead when nothing at all arrives within 20 s of it, TCP keepalive
/// derived from those two.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    /// What is sent: `None` (the default) sends a WebSocket Ping, which
    /// every server answers with a Pong; an application frame such as
    /// `ping`, `{"type":"ping"}` for a server that
    /// expects one (then set [`Heartbeat::replies`] to what it answers).
    pub frame: Option<Frame>,
    /// Frames that answer the heartbeat: they are consumed, not delivered,
    /// and time the round trip. Pong frames always count. Default: none.
    pub replies: Vec<ReplyRule>,
    /// A heartbeat is sent when nothing has arrived for this long (any
    /// inbound frame restarts the count). Default: 25 s.
    pub interval: Duration,
    /// After a heartbeat, the link is declared dead (half-open) when no
    /// frame at all arrives within this time: the socket is dropped and
    /// the client reconnects. At most 10 minutes. Default: 20 s.
    pub server_timeout: Duration,
    /// Send a heartbeat every `interval` even while frames keep arriving,
    /// and while reading is paused for a slow application. Default: off,
    /// so a busy stream never needs one. Turn it on for a server that
    /// drops a client that has sent nothing for a while however much it
    /// sends itself (a read-idle timeout on the server's side, such as
    /// Netty's `IdleStateHandler`), unless the protocol's acks already go
    /// up that often.
    pub even_when_busy: bool,
    /// TCP keepalive on every socket. Default: [`TcpKeepalive::Derived`].
    pub tcp_keepalive: TcpKeepalive,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            frame: None,
            replies: Vec::new(),
            interval: Duration::from_secs(25),
            server_timeout: Duration::from_secs(20),
            even_when_busy: false,
            tcp_keepalive: TcpKeepalive::Derived,
        }
    }
}

impl Heartbeat {
    pub(crate) fn validate(&self, max_frame_size: usize) -> Result<()> {
        positive("heartbeat.interval", self.interval)?;
        if self.server_timeout.is_zero() {
            return Err(Error::config(
                "heartbeat.server_timeout",
                "must be greater than zero",
            ));
        }
        if self.server_timeout > MAX_SERVER_TIMEOUT {
            return Err(Error::config(
                "heartbeat.server_timeout",
                format!(
                    "{:?} is longer than the {:?} limit; a dead link would go unnoticed",
                    self.server_timeout, MAX_SERVER_TIMEOUT
                ),
            ));
        }
        if self
            .frame
            .as_ref()
            .is_some_and(|f| f.len() > max_frame_size)
        {
            return Err(Error::config(
                "heartbeat.frame",
                "is larger than limits.max_frame_size",
            ));
        }
        if let TcpKeepalive::Probes(k) = self.tcp_keepalive {
            positive("heartbeat.tcp_keepalive", k.idle)?;
            positive("heartbeat.tcp_keepalive", k.interval)?;
            if k.count == 0 {
                return Err(Error::config(
                    "heartbeat.tcp_keepalive",
                    "count must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The keepalive the sockets get.
    pub(crate) fn keepalive(&self) -> Option<Keepalive> {
        match self.tcp_keepalive {
            TcpKeepalive::Derived => Some(Keepalive::derived(self.interval, self.server_timeout)),
            TcpKeepalive::Off => None,
            TcpKeepalive::Probes(k) => Some(k),
        }
    }
}

/// TCP keepalive on the socket. It notices a dead link even while the
/// application has paused reading (and with it the heartbeat timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TcpKeepalive {
    /// [`Keepalive::derived`] from the heartbeat's interval and server
    /// timeout (the default).
    #[default]
    Derived,
    /// No keepalive probes.
    Off,
    /// These probes.
    Probes(Keepalive),
}

/// TCP keepalive probes: after `idle` without any segment from the server,
/// the kernel sends a probe every `interval`, and after `count` unanswered
/// probes it reports the peer dead (the connection is then dropped and
/// retried). The kernel counts in whole seconds (at least 1).
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
    /// heartbeat interval after the last segment, then three probes
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

/// The reconnect policy.
///
/// Defaults: exponential backoff from 500 ms to 30 s with full jitter,
/// never giving up.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconnect {
    /// The delay before each new attempt (see [`Backoff`]).
    pub backoff: Backoff,
    /// A connection that closes before it has been open this long counts
    /// as a failed attempt, so a server that accepts and drops at once is
    /// not hammered at full speed. Also the hysteresis of the uplinks: a
    /// preferred interface of [`crate::ClientBuilder::bind_interface`]'s
    /// list that came back must stay up this long before the connection
    /// moves back to it. Default: 5 s.
    pub min_uptime: Duration,
    /// Stop after this many consecutive failed attempts (the client
    /// reports [`crate::CloseReason::GaveUp`] and the receivers end).
    /// Default: `u32::MAX`, which at any backoff is for ever: a device
    /// should keep trying.
    pub max_attempts: u32,
    /// Close codes from the server after which the client stops instead of
    /// reconnecting. Default: none.
    pub terminal_close_codes: Vec<u16>,
    /// The longest wait a server's `Retry-After` (on a 429 or 503 answer to
    /// the upgrade or a poll) can impose on the next attempt; the backoff's
    /// own delay applies when it is longer. Default: 5 minutes.
    pub max_retry_after: Duration,
    /// After a server closes with 1012 (Service Restart) or 1013 (Try
    /// Again Later), the next attempt waits the backoff's delay plus a
    /// random share of this, uniformly spread, so a fleet comes back to the
    /// restarted server over this long instead of all at once. Default:
    /// 10 s (with `Backoff::Fixed(4 s)`, 4 to 14 s); zero: the backoff
    /// alone.
    pub restart_spread: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            backoff: Backoff::default(),
            min_uptime: Duration::from_secs(5),
            max_attempts: u32::MAX,
            terminal_close_codes: Vec::new(),
            max_retry_after: Duration::from_secs(300),
            restart_spread: Duration::from_secs(10),
        }
    }
}

impl Reconnect {
    pub(crate) fn validate(&self) -> Result<()> {
        within_a_day("reconnect.min_uptime", self.min_uptime)?;
        within_a_day("reconnect.max_retry_after", self.max_retry_after)?;
        within_a_day("reconnect.restart_spread", self.restart_spread)?;
        let steps = match self.backoff {
            Backoff::Fixed(d) => [d, d, d],
            Backoff::Linear { initial, step, max } => [initial, step, max],
            Backoff::Exponential { initial, max } => [initial, max, max],
        };
        within_a_day(
            "reconnect.backoff",
            steps.into_iter().max().unwrap_or_default(),
        )?;
        self.backoff.validate()?;
        if self.max_attempts == 0 {
            return Err(Error::config(
                "reconnect.max_attempts",
                "must be at least 1 (u32::MAX: for ever)",
            ));
        }
        for code in &self.terminal_close_codes {
            if !(1000..5000).contains(code) {
                return Err(Error::config(
                    "reconnect.terminal_close_codes",
                    format!("{code} is not a WebSocket close code (1000-4999)"),
                ));
            }
        }
        Ok(())
    }
}

/// How long each step may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The host name lookup and the TCP connect together. Default: 10 s.
    /// A DNS server that does not answer (the uplink is gone) fails the
    /// attempt with [`crate::Phase::Resolve`] when it runs out, instead of
    /// holding it for the resolver's own timeouts. A name with several
    /// addresses has them raced (RFC 8305: 250 ms each before the next
    /// starts beside it), so an address whose packets go nowhere does not
    /// use it all up.
    pub connect: Duration,
    /// The TLS and WebSocket handshakes together. Default: 10 s.
    pub handshake: Duration,
    /// How long written data may stay unacknowledged by the server, or a
    /// write make no progress, before the connection is dropped with
    /// [`crate::ConnectionError::WriteStalled`] (also set as the socket's
    /// `TCP_USER_TIMEOUT`, so the kernel gives up on a dead link as fast
    /// instead of after its 15 to 30 minutes of retransmissions). Default
    /// (`None`): the heartbeat's interval plus its server timeout.
    pub write: Option<Duration>,
    /// How long [`crate::Client::close`] waits for the server's close
    /// frame. Default: 500 ms.
    pub close: Duration,
    /// How long [`crate::Client::send`] waits for room in a full outbound
    /// queue before it returns [`crate::SendError::Timeout`] (the frame
    /// handed back). Default: 1 s.
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            write: None,
            close: Duration::from_millis(500),
            send: Duration::from_secs(1),
        }
    }
}

impl Timeouts {
    pub(crate) fn validate(&self) -> Result<()> {
        positive("timeouts.connect", self.connect)?;
        positive("timeouts.handshake", self.handshake)?;
        if let Some(w) = self.write {
            positive("timeouts.write", w)?;
        }
        within_a_day("timeouts.close", self.close)?;
        within_a_day("timeouts.send", self.send)
    }
}

/// Every bound on memory: message sizes, the queues in count and bytes,
/// events and the dedupe window. See the [limits guide](crate::guide::limits) for what each
/// costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest inbound message, all its fragments together. What
    /// happens to a larger one is [`Limits::on_too_large`]. At least 128.
    /// Default: 1 MiB.
    pub max_message_size: usize,
    /// The largest inbound frame. What happens to a message with a larger
    /// frame is [`Limits::on_too_large`]. At least 128, at most
    /// `max_message_size`. Default: 1 MiB.
    pub max_frame_size: usize,
    /// What happens to an inbound message over `max_frame_size` or
    /// `max_message_size`, whether its first frame says so or it grows
    /// through fragments. Either way it is never held: memory stays within
    /// `max_message_size` whatever size the server announces. Default:
    /// [`OverLimit::Drop`].
    pub on_too_large: OverLimit,
    /// How many received messages may wait for the application. What
    /// happens when it is full is [`Delivery::overflow`](crate::Delivery::overflow). Default: 4096.
    pub inbound_capacity: usize,
    /// How many payload bytes may wait for the application: the inbound
    /// queue plus the batch being assembled (and the acks of finished
    /// messages not yet written). Whichever bound is reached first, this
    /// or `inbound_capacity`, makes the queue full. One message larger than
    /// the whole budget is still taken when nothing else waits, so nothing
    /// deadlocks. Batches already handed out are the application's memory,
    /// not counted here. Default: 8 MiB.
    pub inbound_bytes: usize,
    /// How many frames [`crate::Client::send`] can queue while the socket
    /// is down or slow. When full, `try_send` hands the frame back and
    /// `send` waits up to [`Timeouts::send`]. Default: 1024.
    pub outbound_capacity: usize,
    /// How many payload bytes [`crate::Client::send`] can queue. When
    /// full, senders wait as for a full `outbound_capacity`; a frame larger
    /// than the whole budget is refused with [`crate::SendError::TooLarge`].
    /// Also bounds what a server that stops reading can make heartline
    /// buffer (twice this, then the connection is dropped). Default: 2 MiB.
    pub outbound_bytes: usize,
    /// How many state changes the [`crate::Events`] receiver keeps when
    /// nobody reads it; the oldest is dropped past that. Default: 64.
    pub event_capacity: usize,
    /// How many recent message ids are remembered to drop duplicates (from
    /// redelivery, or the same message by socket and by poll). Each is an
    /// 8-byte digest (SipHash-2-4), held once for the inbound queue and the
    /// state file: at most 30 bytes of memory an id, whatever its length
    /// (21 with the default). Two ids share a digest with odds of about one
    /// in 2^63, so with 10,000 remembered a new message is mistaken for a
    /// duplicate about once in 10^15 messages. Default: 10,000.
    pub dedupe_window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            on_too_large: OverLimit::Drop,
            inbound_capacity: 4096,
            inbound_bytes: 8 << 20,
            outbound_capacity: 1024,
            outbound_bytes: 2 << 20,
            event_capacity: 64,
            dedupe_window: 10_000,
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_message_size < 128 {
            return Err(Error::config(
                "limits.max_message_size",
                "must be at least 128 bytes",
            ));
        }
        if self.max_frame_size < 128 || self.max_frame_size > self.max_message_size {
            return Err(Error::config(
                "limits.max_frame_size",
                "must be at least 128 bytes and at most max_message_size",
            ));
        }
        at_least_one("limits.inbound_capacity", self.inbound_capacity)?;
        at_least_one("limits.inbound_bytes", self.inbound_bytes)?;
        at_least_one("limits.outbound_capacity", self.outbound_capacity)?;
        at_least_one("limits.outbound_bytes", self.outbound_bytes)?;
        at_least_one("limits.event_capacity", self.event_capacity)?;
        at_least_one("limits.dedupe_window", self.dedupe_window)
    }
}

/// What happens to an inbound message over the size limits
/// ([`Limits::on_too_large`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverLimit {
    /// Drop it as its bytes arrive: the connection carries on with the
    /// messages behind it, [`crate::Stats::too_large`] counts it and a
    /// warning says its size. A message the server sends again on every
    /// connect (a snapshot, a redelivery) cannot hold the client in a loop
    /// of reconnects. The default.
    #[default]
    Drop,
    /// Close the connection with 1009 (RFC 6455 §7.4.1: too big to
    /// process) and reconnect, reporting a [`crate::ConnectionError::TooLarge`].
    /// For servers that must hear that a message was refused.
    Close,
}

/// The HTTP polling fallback, used when the protocol has a poll request
/// (see [`crate::Protocol::poll_request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Polling {
    /// Start polling after this many consecutive failed WebSocket
    /// attempts. Default: 3.
    pub after: u32,
    /// The interval between polls (the first is at once). While the poll
    /// endpoint fails, the interval doubles up to eight times this.
    /// Default: 30 s.
    pub every: Duration,
    /// Limit for one poll request, connect to last byte. Default: 10 s.
    pub timeout: Duration,
    /// The largest poll response body; a larger one fails that poll.
    /// Default: 4 MiB.
    pub max_body: usize,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            after: 3,
            every: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_body: 4 << 20,
        }
    }
}

impl Polling {
    pub(crate) fn validate(&self) -> Result<()> {
        positive("polling.every", self.every)?;
        positive("polling.timeout", self.timeout)?;
        at_least_one("polling.max_body", self.max_body)?;
        if self.after == 0 {
            return Err(Error::config("polling.after", "must be at least 1"));
        }
        Ok(())
    }
}
