//! Errors, shaped like crossbeam's and rumqttc's: what `build()` refuses
//! ([`Error`]), why a connection failed or ended ([`ConnectionError`],
//! carried by [`crate::Event`] and [`crate::Stats`] as a value), and one
//! error type per send and receive method, each handing back what it could
//! not deliver.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::Frame;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why [`crate::ClientBuilder::build`] refused to start a client. Fatal:
/// nothing was started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid.
    #[error("invalid config `{field}`: {reason}")]
    Config {
        /// The name of the builder option that is wrong.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL given to [`crate::Client::builder`] cannot be used.
    #[error("bad URL {url}: {reason}")]
    Url {
        /// The URL, with secrets redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `state_dir` cannot be used safely, or is in use. Nothing was
    /// read from it or written to it.
    #[error("state_dir {}: {problem}", dir.display())]
    StateDir {
        /// The directory, as configured.
        dir: std::path::PathBuf,
        /// What is wrong, with advice.
        problem: StateDirProblem,
    },
    /// A heartline thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread name.
        name: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }
}

/// Why a state directory was refused at `build()` (see
/// [`crate::Persistence`]). Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDirProblem {
    /// Another client holds the directory's lock (`heartline.lock`): in
    /// this process or in another one that is still running. Two clients
    /// writing one state file would each lose the other's record.
    #[error("is in use by another heartline client (in this process or another; it holds heartline.lock): give each client its own state_dir, or close() the other client first")]
    InUse,
    /// Users other than its owner can create files in it (group or
    /// world writable), so one of them could plant a link for heartline
    /// to follow.
    #[error("can be written by users other than its owner (mode {mode:04o}), who could plant files in it; use a directory of the service's own user with mode 0700 (heartline creates a missing one so), or accept this one with Persistence::allow_shared")]
    Writable {
        /// The directory's permission bits.
        mode: u32,
    },
    /// The directory belongs to another user than the one this process
    /// runs as (its effective user).
    #[error("is owned by uid {owner}, not by this process's user (uid {user}); use a directory of the service's own user, or accept this one with Persistence::allow_shared")]
    Owner {
        /// The directory's owner.
        owner: u32,
        /// This process's effective user.
        user: u32,
    },
    /// A file heartline keeps there is a symbolic link, or not a regular
    /// file; it is neither read nor written, so the file it points to is
    /// never touched.
    #[error("{name} is a symbolic link or not a regular file, and is not followed; remove it (and find out who put it there)")]
    NotAFile {
        /// The file's name in the directory.
        name: &'static str,
    },
    /// The directory could not be created or opened, or its lock file
    /// could not be made.
    #[error("cannot {action}: {source}; check that the path is a directory this process may write to (a read-only or unmounted file system, a file in the way)")]
    Io {
        /// What heartline tried.
        action: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Why a socket could not be bound to an interface or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindProblem {
    /// Binding to an interface needs `CAP_NET_RAW`, which the process does
    /// not have.
    NotPermitted,
    /// No interface of that name exists on the device.
    NoSuchInterface,
    /// None of the interfaces is up with an address now (a cable out, a
    /// modem not registered yet); the next attempt looks again.
    NoneUp,
    /// The address is not one of the device's.
    AddressNotLocal,
    /// Anything else (the message says what).
    Other,
}

/// Which step of opening a connection timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The host name lookup (`Timeouts::connect`, which it shares with the
    /// TCP connect): the DNS server did not answer in time.
    Resolve,
    /// The TCP connect (`Timeouts::connect`).
    Connect,
    /// The TLS handshake (`Timeouts::handshake`).
    TlsHandshake,
    /// The HTTP upgrade to WebSocket (`Timeouts::handshake`).
    WebSocketHandshake,
    /// The proxy's answer to `CONNECT` (`Timeouts::handshake`).
    Proxy,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Resolve => "DNS lookup",
            Phase::Connect => "connect",
            Phase::TlsHandshake => "TLS handshake",
            Phase::WebSocketHandshake => "WebSocket handshake",
            Phase::Proxy => "proxy CONNECT",
        })
    }
}

/// Why a TLS handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server's certificate has expired (or the device's clock is
    /// ahead). Renewing the certificate fixes it; adding a CA does not.
    Expired,
    /// The server's certificate is not valid yet: almost always the device's
    /// clock is behind (no RTC, NTP not synced yet).
    NotYetValid,
    /// The certificate was issued for other names than the host connected
    /// to. Connect by a name it holds, or reissue it.
    WrongHost,
    /// The certificate was issued by a CA the device does not trust: add
    /// that CA with [`crate::Tls::root_certificates`].
    UnknownIssuer,
    /// The certificate is self-signed: trust it with
    /// [`crate::Tls::root_certificates`].
    SelfSigned,
    /// The server did not speak TLS (a plain `ws://` port, or something
    /// else entirely).
    NotTls,
    /// The TLS context could not be set up from the configuration.
    Setup,
    /// The server asked for a client certificate and refused the one sent
    /// (an issuer it does not trust, expired, revoked), or none is
    /// configured ([`crate::Tls::client_identity`]). Also a 400 page from
    /// nginx saying so. The advice names the certificate sent.
    ClientCertificate,
    /// The configured client certificate or key cannot be used at this
    /// attempt: a file that cannot be read, a key that does not match the
    /// certificate (a renewal half done on disk).
    ClientIdentity,
    /// Anything else; the message carries OpenSSL's text.
    Other,
}

/// Why a connection attempt failed, an open connection ended, or a poll
/// failed. All are transient: the client logs them, reports them in
/// [`crate::Event::error`] and [`crate::Stats`], and tries again. Cheap to
/// clone; secrets are redacted from every field.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The URL from the endpoint provider cannot be used.
    #[error("bad URL {url}: {reason}")]
    Url {
        /// The URL, with secrets redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port` that was tried.
        addr: String,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The socket could not be bound to the interface or address the
    /// configuration names ([`crate::ClientBuilder::bind_interface`],
    /// [`crate::ClientBuilder::bind_address`]); `problem` says why, the
    /// message what to do.
    #[error("cannot bind to {to}: {reason}")]
    Bind {
        /// The interface(s) or the address.
        to: String,
        /// What is wrong, as a value an application can act on.
        problem: BindProblem,
        /// What is wrong and what to do, in words.
        reason: String,
    },
    /// A step of opening the connection did not finish in time.
    #[error("{phase} to {addr} timed out after {after:?}")]
    Timeout {
        /// Which step.
        phase: Phase,
        /// `host:port`.
        addr: String,
        /// The configured limit.
        after: Duration,
    },
    /// The TLS handshake failed; `problem` says why, the message what to do.
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls {
        /// The host name the certificate was checked against.
        host: String,
        /// What is wrong, as a value an application can act on.
        problem: TlsProblem,
        /// What is wrong and what to do, in words, with OpenSSL's own text.
        reason: String,
    },
    /// The server answered the WebSocket upgrade with an HTTP status other
    /// than 101: 401/403 (credentials), 429/503 (load), …
    #[error("server refused the WebSocket upgrade with HTTP {status}{}", refused_advice(*status, headers))]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The answer's headers that matter to a client (`Retry-After`,
        /// `WWW-Authenticate`, `Location`), names lowercase. A `Location`
        /// has its secrets masked, as every URL heartline shows.
        headers: Arc<[(String, String)]>,
    },
    /// The WebSocket protocol failed (handshake or frames).
    #[error("WebSocket error: {0}")]
    Protocol(String),
    /// With `Limits::on_too_large` set to [`crate::OverLimit::Close`]: an
    /// inbound message was over `Limits::max_frame_size` or
    /// `Limits::max_message_size`, and the connection was closed with code
    /// 1009. (By default such a message is dropped without closing:
    /// [`crate::Stats::too_large`].)
    #[error("message too large: {0}")]
    TooLarge(String),
    /// No frame arrived within the server timeout after a heartbeat: the link
    /// is dead even though TCP did not say so.
    #[error("no frame from the server within {timeout:?} after a heartbeat (half-open link)")]
    HeartbeatTimeout {
        /// The configured server timeout.
        timeout: Duration,
    },
    /// The HTTP proxy did not open the tunnel: it refused (`status`: 407
    /// credentials, 403 destination not allowed, 502 cannot reach the
    /// server), answered something that is not HTTP, or could not be
    /// reached. The proxy's URL has its credentials masked.
    #[error("proxy {proxy} did not open a tunnel{}: {reason}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Proxy {
        /// The proxy URL, credentials masked.
        proxy: String,
        /// The proxy's HTTP status, when it answered one.
        status: Option<u16>,
        /// What went wrong and what to do.
        reason: String,
    },
    /// The link or the address the connection went out from went away (a
    /// cable pulled, a modem gone, a DHCP lease lost), as the kernel said
    /// ([`crate::ClientBuilder::watch_network`]): the connection was closed
    /// without waiting for the heartbeat to find it dead, and the next
    /// attempt goes out over what is there now.
    #[error("network change: {reason}; connecting again over what is there now")]
    NetworkChanged {
        /// What went away.
        reason: String,
    },
    /// Nothing could be written for this long: the server stopped reading,
    /// or the link died while data was waiting to go out (see
    /// `Timeouts::write`).
    #[error("no data could be written for {after:?}: the link is dead or the server stopped reading; dropping the connection")]
    WriteStalled {
        /// The configured write timeout.
        after: Duration,
    },
    /// The server closed the connection.
    #[error("server closed the connection with code {code}{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    ServerClosed {
        /// The close code (1005 when the server sent none).
        code: u16,
        /// The close reason the server gave.
        reason: String,
    },
    /// The connection failed with an I/O error while open.
    #[error("connection lost: {0}")]
    Io(Arc<std::io::Error>),
    /// Application code (the endpoint provider, hello, a `Protocol` method)
    /// panicked. That attempt, poll or message fails; the client carries on.
    /// This needs `panic = "unwind"` (Rust's default): built with
    /// `panic = "abort"`, a panic ends the process before it can be caught.
    #[error("the {what} callback panicked: {reason}")]
    Callback {
        /// Which callback.
        what: &'static str,
        /// The panic message (its start).
        reason: String,
    },
    /// A poll of the HTTP fallback failed.
    #[error("poll {url} failed: {reason}")]
    Poll {
        /// The poll URL, with secrets redacted.
        url: String,
        /// The HTTP status, when one was answered.
        status: Option<u16>,
        /// What went wrong (connect, timeout, status with the body's start,
        /// body over the limit, body not as the protocol expects).
        reason: String,
    },
    /// A thread for the connection could not be started.
    #[error("cannot start thread {name}: {reason}")]
    Thread {
        /// The thread name.
        name: &'static str,
        /// The operating system's error.
        reason: String,
    },
}

/// What a refused upgrade's status tells the operator to do, as the tail of
/// the error's message ("" when the status says nothing more).
fn refused_advice(status: u16, headers: &[(String, String)]) -> String {
    let location = headers
        .iter()
        .find(|(n, _)| n == "location")
        .map(|(_, v)| v.as_str());
    match (status, location) {
        (200..=299, _) => ": an HTTP server answered, not a WebSocket endpoint; check the \
             URL's path (on a public network, a captive portal answering every request looks \
             like this)"
            .into(),
        (300..=399, Some(to)) => format!(
            ": it redirects to {to}, and WebSocket clients do not follow redirects; \
             connect to that URL if it is the server's (a login page there means a captive \
             portal is intercepting the network)"
        ),
        (300..=399, None) => ": a redirect without a Location; check the URL's scheme \
             (ws:// or wss://), host and path"
            .into(),
        (400, _) => ": the server did not accept the upgrade request; check the URL's scheme \
             (a TLS port needs wss://), its path and any header the server requires (Origin, \
             Sec-WebSocket-Protocol)"
            .into(),
        (401 | 403, _) => ": the server rejected the credentials; check the token or \
             Authorization header (the endpoint provider is asked again before every attempt)"
            .into(),
        (404 | 410, _) => ": no WebSocket endpoint at this path; check the URL's path".into(),
        (405 | 426, _) => ": this URL is not the server's WebSocket endpoint; check its path \
             and scheme"
            .into(),
        (429, _) => ": the server limits connections; later attempts wait for its \
             Retry-After or the backoff"
            .into(),
        (500..=599, _) => ": usually temporary (the server, or a proxy or load balancer in \
             front of it, is overloaded or restarting); later attempts can succeed"
            .into(),
        _ => String::new(),
    }
}

impl ConnectionError {
    /// The HTTP status of a refused upgrade or a failed poll.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectionError::Refused { status, .. } => Some(*status),
            ConnectionError::Poll { status, .. } => *status,
            _ => None,
        }
    }

    /// A header of a refused upgrade (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        match self {
            ConnectionError::Refused { headers, .. } => headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ConnectionError {
    fn from(e: std::io::Error) -> Self {
        ConnectionError::Io(Arc::new(e))
    }
}

/// Returned by [`crate::Client::send`]: the frame was not queued and is
/// handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The outbound queue stayed full (in frames or in bytes) for
    /// `Timeouts::send`.
    #[error("outbound queue is full ({capacity} frames or {bytes} bytes); frame not sent")]
    Timeout {
        /// The frame.
        frame: Frame,
        /// The configured capacity in frames (`Limits::outbound_capacity`).
        capacity: usize,
        /// The configured budget in bytes (`Limits::outbound_bytes`).
        bytes: usize,
    },
    /// The frame is larger than the whole outbound byte budget: it can never
    /// be queued. Raise `Limits::outbound_bytes` to send frames this large.
    #[error("a frame of {} bytes is larger than the outbound budget (limits.outbound_bytes = {limit}); frame not sent", frame.len())]
    TooLarge {
        /// The frame.
        frame: Frame,
        /// The configured budget in bytes.
        limit: usize,
    },
    /// The client is closed (or gave up).
    #[error("client is closed; frame not sent")]
    Closed(Frame),
}

impl SendError {
    /// The frame that was not sent.
    pub fn into_frame(self) -> Frame {
        match self {
            SendError::Timeout { frame, .. }
            | SendError::TooLarge { frame, .. }
            | SendError::Closed(frame) => frame,
        }
    }
}

/// Returned by [`crate::Client::try_send`]: the frame was not queued and is
/// handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The outbound queue is full, in frames or in bytes (try again later).
    #[error("outbound queue is full; frame not sent")]
    Full(Frame),
    /// The frame is larger than the whole outbound byte budget.
    #[error("frame is larger than the outbound byte budget; frame not sent")]
    TooLarge(Frame),
    /// The client is closed.
    #[error("client is closed; frame not sent")]
    Closed(Frame),
}

impl TrySendError {
    /// The frame that was not sent.
    pub fn into_frame(self) -> Frame {
        match self {
            TrySendError::Full(f) | TrySendError::TooLarge(f) | TrySendError::Closed(f) => f,
        }
    }
    /// `true` when the queue was full (try again later).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
    /// `true` when the client is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }
    /// `true` when the frame can never be queued (raise `Limits::outbound_bytes`).
    pub fn is_too_large(&self) -> bool {
        matches!(self, TrySendError::TooLarge(_))
    }
}

/// Returned by a blocking `recv`: the client is closed and everything it
/// received was handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("client is closed")]
pub struct RecvError;

/// Returned by `try_recv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing is ready yet.
    #[error("nothing ready")]
    Empty,
    /// The client is closed and everything was handed out.
    #[error("client is closed")]
    Closed,
}

/// Returned by `recv_timeout` and `recv_deadline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// The time passed before anything was ready.
    #[error("timed out")]
    Timeout,
    /// The client is closed and everything was handed out.
    #[error("client is closed")]
    Closed,
}

/// Locks a mutex whose data stays valid even if a holder panicked (all our
/// critical sections are single assignments): a panic elsewhere is not
/// turned into another here.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls application code (the endpoint provider, hello, a `Protocol`
/// method) on a heartline thread. A panic there fails only that attempt,
/// poll or message, with a typed error that says which callback; heartline
/// carries on.
pub(crate) fn guarded<T>(
    what: &'static str,
    f: impl FnOnce() -> T,
) -> std::result::Result<T, ConnectionError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let reason = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::warn!(target: "heartline", "the {what} callback panicked: {reason}");
        ConnectionError::Callback {
            what,
            reason: crate::redact::head(&reason),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_small_and_connection_errors_are_cheap_to_clone() {
        assert!(std::mem::size_of::<Error>() <= 64);
        assert!(std::mem::size_of::<ConnectionError>() <= 64);
        fn cheap<T: Clone + Send + Sync + 'static>() {}
        cheap::<ConnectionError>();
    }

    #[test]
    fn config_error_names_the_field() {
        let e = Error::config("heartbeat.interval", "must be greater than zero");
        assert_eq!(
            e.to_string(),
            "invalid config `heartbeat.interval`: must be greater than zero"
        );
    }

    #[test]
    fn server_close_without_reason_has_no_trailing_colon() {
        let e = ConnectionError::ServerClosed {
            code: 1001,
            reason: String::new(),
        };
        assert_eq!(e.to_string(), "server closed the connection with code 1001");
    }

    #[test]
    fn an_application_tells_a_401_from_a_503_without_parsing_text() {
        let e = ConnectionError::Refused {
            status: 503,
            headers: Arc::from(vec![("retry-after".to_owned(), "7".to_owned())]),
        };
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.header("Retry-After"), Some("7"));
        assert_eq!(
            ConnectionError::from(std::io::Error::other("x")).status(),
            None
        );
    }

    #[test]
    fn send_errors_hand_the_frame_back() {
        let e = SendError::TooLarge {
            frame: Frame::from("abc"),
            limit: 2,
        };
        assert!(
            e.to_string().contains("3 bytes") && e.to_string().contains("limits.outbound_bytes")
        );
        assert_eq!(e.into_frame(), Frame::from("abc"));
        assert!(TrySendError::Full(Frame::from("x")).is_full());
    }
}
