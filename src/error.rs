//! Errors returned by heartline.

use std::fmt;
use std::time::Duration;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in heartline.
///
/// Each variant documents whether it is *fatal* (the client stops) or
/// *transient* (the client logs it, reports it in [`crate::Stats::last_error`]
/// and tries again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid. Returned at once by
    /// [`crate::ClientBuilder::build`]; fatal.
    #[error("invalid config `{field}`: {reason}")]
    Config {
        /// The name of the builder option that is wrong.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL (from the builder or the URL provider) cannot be used.
    /// Transient when it comes from a provider (the next attempt calls it
    /// again).
    #[error("bad URL {url}: {reason}")]
    Url {
        /// The URL, with secrets redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection could not be made. Transient.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port` that was tried.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A step of the connection did not finish in time. Transient.
    #[error("{what} to {addr} timed out after {after:?}")]
    Timeout {
        /// Which step: "connect", "TLS handshake", "WebSocket handshake".
        what: &'static str,
        /// `host:port`.
        addr: String,
        /// The configured limit.
        after: Duration,
    },
    /// The TLS handshake failed. Transient (the server or the clock may be
    /// fixed), but usually needs an operator: `problem` says what is wrong
    /// and the message what to do about it.
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
    /// than 101. Transient.
    #[error("server refused the WebSocket upgrade with HTTP {status}")]
    Refused {
        /// The HTTP status code.
        status: u16,
    },
    /// The WebSocket protocol failed (handshake or frames). Transient.
    #[error("WebSocket error: {0}")]
    Protocol(String),
    /// An inbound message or frame was larger than the configured limit (the
    /// connection was closed with code 1009; transient), or a frame given
    /// to `send` is larger than the whole outbound budget (not queued).
    #[error("message too large: {0}")]
    TooLarge(String),
    /// No frame arrived within the server timeout after a heartbeat: the link
    /// is dead even though TCP did not say so. Transient.
    #[error("no frame from the server within {timeout:?} after a heartbeat (half-open link)")]
    HeartbeatTimeout {
        /// The configured server timeout.
        timeout: Duration,
    },
    /// The server closed the connection. Transient unless the code is in the
    /// terminal set.
    #[error("server closed the connection with code {code}{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    ServerClosed {
        /// The close code (1005 when the server sent none).
        code: u16,
        /// The close reason the server gave.
        reason: String,
    },
    /// The connection failed with an I/O error while open. Transient.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// An application closure (endpoint provider, hello) panicked. That
    /// attempt fails and is retried with backoff. Transient.
    #[error("the {what} closure panicked: {reason}")]
    Callback {
        /// Which closure.
        what: &'static str,
        /// The panic message (its start).
        reason: String,
    },
    /// The outbound queue is full (in frames or in bytes); the frame was not
    /// queued.
    #[error("outbound queue is full ({capacity} frames or {bytes} bytes)")]
    QueueFull {
        /// The configured capacity in frames (`outbound_capacity`).
        capacity: usize,
        /// The configured budget in bytes (`outbound_bytes`).
        bytes: usize,
    },
    /// The client was closed (or gave up); nothing more can be sent.
    #[error("client is closed")]
    Closed,
    /// A heartline thread could not be started. Fatal.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread name.
        name: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
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
    /// that CA with [`crate::ClientBuilder::root_certificate_pem`].
    UnknownIssuer,
    /// The certificate is self-signed: trust it with
    /// [`crate::ClientBuilder::root_certificate_pem`].
    SelfSigned,
    /// The server did not speak TLS (a plain `ws://` port, or something
    /// else entirely).
    NotTls,
    /// The TLS context could not be set up from the configuration.
    Setup,
    /// Anything else; the message carries OpenSSL's text.
    Other,
}

impl Error {
    /// `true` when the client stops because of this error; `false` when it
    /// retries.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Config { .. } | Error::Thread { .. } | Error::Closed
        )
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }
}

/// Returned by [`crate::Client::try_send`]: the frame was not queued and is
/// handed back.
#[derive(Debug)]
pub struct TrySendError {
    frame: crate::Frame,
    why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Full,
    Closed,
    TooLarge,
}

impl TrySendError {
    pub(crate) fn full(frame: crate::Frame) -> Self {
        TrySendError {
            frame,
            why: Why::Full,
        }
    }
    pub(crate) fn closed(frame: crate::Frame) -> Self {
        TrySendError {
            frame,
            why: Why::Closed,
        }
    }
    pub(crate) fn too_large(frame: crate::Frame) -> Self {
        TrySendError {
            frame,
            why: Why::TooLarge,
        }
    }
    /// The frame that was not sent.
    pub fn into_frame(self) -> crate::Frame {
        self.frame
    }
    /// `true` when the queue was full, in frames or in bytes (try again
    /// later).
    pub fn is_full(&self) -> bool {
        self.why == Why::Full
    }
    /// `true` when the client is closed.
    pub fn is_closed(&self) -> bool {
        self.why == Why::Closed
    }
    /// `true` when the frame is larger than the whole outbound byte budget:
    /// it can never be queued (raise `outbound_bytes`).
    pub fn is_too_large(&self) -> bool {
        self.why == Why::TooLarge
    }
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.why {
            Why::Closed => "client is closed; frame not sent",
            Why::Full => "outbound queue is full; frame not sent",
            Why::TooLarge => "frame is larger than the outbound byte budget; frame not sent",
        })
    }
}

impl std::error::Error for TrySendError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_give_advice_that_fits_the_cause() {
        let e = Error::Tls {
            host: "h".into(),
            problem: TlsProblem::Expired,
            reason: "x".into(),
        };
        assert!(!e.is_fatal());
    }

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<Error>() <= 64);
    }

    #[test]
    fn config_error_names_the_field() {
        let e = Error::config("heartbeat_interval", "must be greater than zero");
        assert_eq!(
            e.to_string(),
            "invalid config `heartbeat_interval`: must be greater than zero"
        );
        assert!(e.is_fatal());
    }

    #[test]
    fn server_close_without_reason_has_no_trailing_colon() {
        let e = Error::ServerClosed {
            code: 1001,
            reason: String::new(),
        };
        assert_eq!(e.to_string(), "server closed the connection with code 1001");
    }
}
