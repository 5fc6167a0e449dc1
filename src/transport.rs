//! Opening a connection: TCP with a connect timeout, TLS (native-tls), and
//! the WebSocket handshake, all on a blocking socket with finite timeouts.
//! The io thread then switches the socket to non-blocking and waits in epoll.
//!
//! `tungstenite::connect` is not used because it has no connect timeout.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::http::Uri;

use crate::config::{Config, Endpoint};
use crate::dial::Abort;
use crate::error::{ConnectionError, Error, Phase, TlsProblem};
use crate::machine::deflate::Params;

type Result<T, E = ConnectionError> = std::result::Result<T, E>;
use crate::redact;
use crate::target::Target;

/// A TCP stream whose reads and writes, while it has a deadline, all end
/// by that moment: each sets the socket's timeout to the time left. A
/// timeout set once would start again with every byte, so a peer sending
/// one byte at a time could hold the handshake for as long as it liked.
pub(crate) struct Timed {
    tcp: TcpStream,
    deadline: Option<Instant>,
}

impl Timed {
    /// `tcp`, bounded by `deadline` until [`Stream::no_deadline`].
    pub(crate) fn new(tcp: TcpStream, deadline: Option<Instant>) -> Timed {
        Timed { tcp, deadline }
    }

    /// Sets the socket's timeouts to the time left.
    fn left(&self) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.left()?;
        self.tcp.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.left()?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// The byte stream under the WebSocket.
pub(crate) enum Stream {
    Plain(Timed),
    Tls(Box<native_tls::TlsStream<Timed>>),
}

impl Stream {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => &s.tcp,
            Stream::Tls(s) => &s.get_ref().tcp,
        }
    }

    /// The handshake is over: reads and writes no longer end by its
    /// deadline.
    pub(crate) fn no_deadline(&mut self) {
        match self {
            Stream::Plain(s) => s.deadline = None,
            Stream::Tls(s) => s.get_mut().deadline = None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The open WebSocket: the stream, and the bytes read past the upgrade
/// answer, the start of what the frame reader ([`crate::machine::frames`])
/// reads.
pub(crate) struct Socket {
    pub stream: Stream,
    pub leftover: Vec<u8>,
    /// permessage-deflate, when the server agreed to it.
    pub deflate: Option<Params>,
}

/// The TLS connector, made at the first `wss://` attempt (loading
/// OpenSSL's roots costs a few MB that a `ws://` client never needs) and
/// made again when the client identity's files change on disk.
#[derive(Default)]
pub(crate) struct TlsCache {
    connector: Option<native_tls::TlsConnector>,
    stamp: crate::identity::Stamp,
    /// The client certificate presented, as advice names it.
    pub sent: Option<String>,
}

impl TlsCache {
    /// The connector for this attempt; an identity file that cannot be
    /// read or used fails the attempt (the reconnect policy applies).
    fn get(&mut self, cfg: &Config, host: &str) -> Result<&native_tls::TlsConnector> {
        let stamp = cfg
            .tls
            .client_identity
            .as_ref()
            .map(crate::identity::stamp)
            .unwrap_or_default();
        if self.connector.is_none() || stamp != self.stamp {
            self.connector = None;
            let setup = |problem, reason| ConnectionError::Tls {
                host: host.to_owned(),
                problem,
                reason,
            };
            let identity = match &cfg.tls.client_identity {
                Some(id) => Some(
                    crate::identity::load(id).map_err(|e| setup(TlsProblem::ClientIdentity, e))?,
                ),
                None => None,
            };
            let connector = tls_connector(cfg, identity.as_ref())
                .map_err(|e| setup(TlsProblem::Setup, e.to_string()))?;
            self.sent = identity.map(|i| i.shown);
            self.stamp = stamp;
            self.connector = Some(connector);
        }
        self.connector
            .as_ref()
            .ok_or_else(|| ConnectionError::Protocol("no TLS connector".to_owned()))
    }
}

/// Builds a TLS connector from the roots parsed at build and the client
/// identity, if any.
pub(crate) fn tls_connector(
    cfg: &Config,
    identity: Option<&crate::identity::Identity>,
) -> Result<native_tls::TlsConnector, Error> {
    let mut b = native_tls::TlsConnector::builder();
    for cert in &cfg.roots {
        b.add_root_certificate(cert.clone());
    }
    if cfg.tls.danger_accept_invalid_certs {
        b.danger_accept_invalid_certs(true);
    }
    if let Some(id) = identity {
        b.identity(
            id.native()
                .map_err(|e| Error::config("tls.client_identity", e))?,
        );
    }
    b.build().map_err(|e| {
        Error::config(
            "tls.root_certificates",
            format!("cannot build TLS context: {e}"),
        )
    })
}

/// Once this much waits for the socket, it is written before more is
/// encoded.
pub(crate) const WRITE_BUFFER: usize = 128 * 1024;

/// What may wait unwritten before the connection is given up. Data frames
/// are encoded only while the socket takes them, at most one outbound
/// budget per turn; what else piles up (acks, pongs, heartbeats) does so
/// only when the server stops reading. Past twice the budget the
/// connection is given up instead of growing.
pub(crate) fn write_limit(cfg: &Config) -> usize {
    cfg.limits
        .outbound_bytes
        .saturating_mul(2)
        .saturating_add(2 * WRITE_BUFFER)
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects, runs the TLS and WebSocket handshakes, and returns the socket
/// still in blocking mode.
pub(crate) fn connect(
    endpoint: &Endpoint,
    cfg: &Config,
    tls: &mut TlsCache,
    abort: &Abort,
) -> Result<(Socket, crate::message::Opened)> {
    // However this attempt ends, `abort` lets go of it.
    struct Over<'a>(&'a Abort);
    impl Drop for Over<'_> {
        fn drop(&mut self) {
            self.0.done();
        }
    }
    let _over = Over(abort);
    let target = Target::parse(&endpoint.url)?;
    let addr = target.addr();
    if target.tls {
        // The client identity is read before any connection is made: one
        // that cannot be used costs the server nothing.
        tls.get(cfg, &target.host)?;
    }
    let deadline;
    let tcp = match cfg
        .proxy
        .choice
        .for_host(&cfg.proxy.env, target.tls, &target.host)
    {
        None => {
            let tcp = connect_tcp(
                &target.host,
                target.port,
                &addr,
                cfg.timeouts.connect,
                abort,
            )?;
            deadline = Instant::now() + cfg.timeouts.handshake;
            tcp
        }
        Some(proxy) => {
            log::debug!("through proxy {}", proxy.shown);
            let tcp = connect_tcp(
                &proxy.host,
                proxy.port,
                &proxy.addr(),
                cfg.timeouts.connect,
                abort,
            )
            .map_err(|e| ConnectionError::Proxy {
                proxy: proxy.shown.clone(),
                status: None,
                reason: format!("cannot reach the proxy: {e}"),
            })?;
            // The tunnel counts against the handshake's time, as the
            // handshake through it does.
            deadline = Instant::now() + cfg.timeouts.handshake;
            let mut timed = Timed::new(tcp, Some(deadline));
            proxy.tunnel(
                &mut timed,
                &target.host,
                target.port,
                cfg.timeouts.handshake,
            )?;
            timed.tcp
        }
    };
    let _ = tcp.set_nodelay(true);
    tune(&tcp, cfg);
    let tcp = Timed::new(tcp, Some(deadline));
    let stream = if target.tls {
        let connector = tls.get(cfg, &target.host)?;
        match connector.connect(&target.host, tcp) {
            Ok(s) => Stream::Tls(Box::new(s)),
            Err(native_tls::HandshakeError::WouldBlock(_)) => {
                return Err(ConnectionError::Timeout {
                    phase: Phase::TlsHandshake,
                    addr,
                    after: cfg.timeouts.handshake,
                })
            }
            Err(native_tls::HandshakeError::Failure(e)) => {
                let sent = tls.sent.as_deref();
                return Err(tls_error(
                    &target.host,
                    &e,
                    &addr,
                    cfg.timeouts.handshake,
                    sent,
                ));
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    upgrade(stream, endpoint, &target, &addr, cfg, tls.sent.as_deref())
}

/// Largest upgrade response we read; a real one is a few hundred bytes.
const MAX_RESPONSE: usize = 16 * 1024;

/// The HTTP upgrade, written here rather than by tungstenite, whose client
/// handshake logs the raw request (token and `Authorization` included) at
/// trace level. Nothing here logs the request.
fn upgrade(
    mut stream: Stream,
    endpoint: &Endpoint,
    target: &Target,
    addr: &str,
    cfg: &Config,
    sent: Option<&str>,
) -> Result<(Socket, crate::message::Opened)> {
    let bad = |reason: String| ConnectionError::Url {
        url: redact::url(&endpoint.url),
        reason,
    };
    let uri: Uri = endpoint
        .url
        .parse()
        .map_err(|e| bad(format!("cannot parse: {e}")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    let default_port = if target.tls { 443 } else { 80 };
    let host = if target.port == default_port {
        uri.host().unwrap_or(&target.host).to_owned()
    } else {
        format!("{}:{}", uri.host().unwrap_or(&target.host), target.port)
    };
    let key = tungstenite::handshake::client::generate_key();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    if cfg.compression {
        req.push_str("Sec-WebSocket-Extensions: ");
        req.push_str(crate::machine::deflate::OFFER);
        req.push_str("\r\n");
    }
    if !cfg.subprotocols.is_empty() {
        req.push_str("Sec-WebSocket-Protocol: ");
        req.push_str(&cfg.subprotocols.join(", "));
        req.push_str("\r\n");
    }
    for (name, value) in &endpoint.headers {
        if name.is_empty() || !name.bytes().all(crate::target::token_byte) {
            return Err(bad(format!("header name `{name}` is not valid")));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(bad(format!(
                "value of header `{name}` contains a line break ({})",
                redact::header_value(name, value)
            )));
        }
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let io_err = |e: io::Error| {
        // Over TLS 1.3 a server refuses a client certificate after the
        // handshake: its alert comes with the first read.
        let text = e.to_string();
        if let Some(reason) = target
            .tls
            .then(|| client_cert_advice(&text, sent))
            .flatten()
        {
            ConnectionError::Tls {
                host: target.host.clone(),
                problem: TlsProblem::ClientCertificate,
                reason,
            }
        } else if timed_out(&e) {
            ConnectionError::Timeout {
                phase: Phase::WebSocketHandshake,
                addr: addr.to_owned(),
                after: cfg.timeouts.handshake,
            }
        } else {
            ConnectionError::from(e)
        }
    };
    if let Err(e) = stream
        .write_all(req.as_bytes())
        .and_then(|()| stream.flush())
    {
        // A server that refused our certificate after the handshake (TLS
        // 1.3) has sent its alert and closed: the write fails first, and
        // the alert waits to be read.
        if target.tls {
            let mut scratch = [0u8; 256];
            if let Err(read) = stream.read(&mut scratch) {
                if client_cert_advice(&read.to_string(), sent).is_some() {
                    return Err(io_err(read));
                }
            }
        }
        return Err(io_err(e));
    }

    // A TLS server reached with ws:// typically closes or resets the
    // connection on the plain-text request without a word.
    let hint = if target.tls {
        ""
    } else {
        " (if that port expects TLS, the URL needs wss://)"
    };
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let Head {
        len: head_len,
        status,
        accept,
        kept,
        agreed,
    } = loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !target.tls => {
                return Err(ConnectionError::Protocol(format!(
                    "{addr} reset the connection during the WebSocket handshake{hint}"
                )));
            }
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            return Err(ConnectionError::Protocol(format!(
                "{addr} closed the connection during the WebSocket handshake{hint}"
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS record (alert 0x15 or handshake 0x16, version 3.x) where
        // HTTP should be: the port speaks TLS.
        if !target.tls && matches!(buf[..], [0x15 | 0x16, 0x03, ..]) {
            return Err(ConnectionError::Protocol(format!(
                "{addr} answered with TLS, not HTTP: the URL needs wss://, not ws://"
            )));
        }
        if let Some(head) = upgrade_head(&buf, addr)? {
            break head;
        }
    };
    if status == 400 && target.tls {
        if let Some(reason) = nginx_cert_refusal(&mut stream, &mut buf, head_len, sent) {
            return Err(ConnectionError::Tls {
                host: target.host.clone(),
                problem: TlsProblem::ClientCertificate,
                reason,
            });
        }
    }
    if status != 101 {
        return Err(ConnectionError::Refused {
            status,
            headers: kept.into(),
        });
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if accept.as_deref() != Some(expected.as_str()) {
        return Err(ConnectionError::Protocol(format!(
            "{addr} answered the upgrade with a wrong Sec-WebSocket-Accept"
        )));
    }
    let (subprotocol, deflate) = agreed.check(&cfg.subprotocols, cfg.compression, addr)?;
    let leftover = buf.split_off(head_len);
    stream.no_deadline();
    Ok((
        Socket {
            stream,
            leftover,
            deflate,
        },
        crate::message::Opened {
            subprotocol,
            compression: deflate.is_some(),
        },
    ))
}

/// Keepalive and `TCP_USER_TIMEOUT`, so the kernel reports a dead peer
/// while reading is paused and gives up on unacknowledged data within the
/// write timeout. A refusal (an unusual kernel) is logged, not fatal.
fn tune(tcp: &TcpStream, cfg: &Config) {
    let sock = socket2::SockRef::from(tcp);
    if let Some(k) = cfg.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(k.idle)
            .with_interval(k.interval)
            .with_retries(k.count);
        if let Err(e) = sock.set_tcp_keepalive(&ka) {
            log::warn!("cannot turn on TCP keepalive: {e}");
        }
    }
    if let Err(e) = sock.set_tcp_user_timeout(Some(cfg.write_timeout)) {
        log::warn!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

/// The parts of an upgrade answer heartline acts on.
pub(crate) struct Head {
    /// Bytes of the head; what follows is the server's first frames.
    pub len: usize,
    pub status: u16,
    pub accept: Option<String>,
    /// The headers a client acts on when refused, names lowercase.
    pub kept: Vec<(String, String)>,
    /// What a 101 answer agreed to.
    pub agreed: Agreed,
}

/// The headers of a 101 answer that say what was agreed (RFC 6455 §4.1).
#[derive(Debug, Default)]
pub(crate) struct Agreed {
    upgrade: Option<String>,
    connection: Option<String>,
    protocol: Option<String>,
    extensions: Option<String>,
}

impl Agreed {
    /// Checks the answer as RFC 6455 §4.1 says a client must: `Upgrade:
    /// websocket`, `Connection: Upgrade`, no extension that was not offered
    /// (heartline offers none), and a subprotocol only from those offered.
    /// Returns the subprotocol chosen.
    fn check(
        self,
        offered: &[String],
        deflate: bool,
        addr: &str,
    ) -> Result<(Option<String>, Option<Params>)> {
        let has = |v: &Option<String>, token: &str| {
            v.as_deref()
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let protocol = self.protocol.map(|p| p.trim().to_owned());
        let extensions = self.extensions.filter(|e| !e.trim().is_empty());
        let what = if !has(&self.upgrade, "websocket") || !has(&self.connection, "upgrade") {
            "answered 101 without `Upgrade: websocket` and `Connection: Upgrade`".to_owned()
        } else if protocol.as_ref().is_some_and(|p| !offered.contains(p)) {
            format!("chose the subprotocol {protocol:?}, which was not offered")
        } else {
            match extensions {
                None => return Ok((protocol, None)),
                Some(ext) if !deflate => {
                    format!("agreed the extension {ext:?}, which heartline did not offer")
                }
                Some(ext) => match crate::machine::deflate::agreed(&ext) {
                    Ok(p) => return Ok((protocol, Some(p))),
                    Err(e) => e,
                },
            }
        };
        Err(ConnectionError::Protocol(format!("{addr} {what}")))
    }
}

/// Parses the upgrade answer read so far: `None` while incomplete.
///
/// # Errors
/// A head over the limit, or bytes that are not HTTP (their start shown).
pub(crate) fn upgrade_head(buf: &[u8], addr: &str) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let accept = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned());
            let kept = resp
                .headers
                .iter()
                .filter(|h| {
                    ["retry-after", "www-authenticate", "location"]
                        .iter()
                        .any(|k| h.name.eq_ignore_ascii_case(k))
                })
                .map(|h| {
                    let name = h.name.to_ascii_lowercase();
                    let value = String::from_utf8_lossy(h.value);
                    // A redirect's target can carry a token, like any URL.
                    let value = if name == "location" {
                        crate::redact::url(&value)
                    } else {
                        value.into_owned()
                    };
                    (name, crate::redact::head(&value))
                })
                .collect();
            let header = |name: &str| {
                let h = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))?;
                Some(String::from_utf8_lossy(h.value).into_owned())
            };
            let agreed = Agreed {
                upgrade: header("upgrade"),
                connection: header("connection"),
                protocol: header("sec-websocket-protocol"),
                extensions: header("sec-websocket-extensions"),
            };
            Ok(Some(Head {
                len,
                status: resp.code.unwrap_or(0),
                accept,
                kept,
                agreed,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE => Ok(None),
        Ok(httparse::Status::Partial) => Err(ConnectionError::Protocol(format!(
            "upgrade response from {addr} is larger than {MAX_RESPONSE} bytes"
        ))),
        Err(e) => {
            let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned();
            Err(ConnectionError::Protocol(format!(
                "upgrade response from {addr} is not HTTP ({e}): {head:?}"
            )))
        }
    }
}

/// Connects within `timeout`; from then on until the attempt is over, an
/// abort shuts the socket down (ending any blocking read or write on it).
fn connect_tcp(
    host: &str,
    port: u16,
    addr: &str,
    timeout: Duration,
    abort: &Abort,
) -> Result<TcpStream> {
    let tcp = crate::dial::connect(host, port, addr, timeout, abort)?;
    abort.watch(&tcp);
    Ok(tcp)
}

/// nginx with `ssl_verify_client` finishes the TLS handshake without a
/// (good) client certificate and answers 400 with a page that says so:
/// the advice for that, from the page (read within the handshake's
/// deadline, at most 4 KiB).
fn nginx_cert_refusal(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    head_len: usize,
    sent: Option<&str>,
) -> Option<String> {
    let mut chunk = [0u8; 1024];
    while buf.len() - head_len < 4096 && !contains(&buf[head_len..], b"</html>") {
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let body = &buf[head_len..];
    let said = if contains(body, b"No required SSL certificate was sent") {
        "No required SSL certificate was sent"
    } else if contains(body, b"The SSL certificate error") {
        "The SSL certificate error"
    } else {
        return None;
    };
    // The page says which: none sent, or one refused.
    let alert = if sent.is_none() || said.starts_with("No required") {
        "alert certificate required"
    } else {
        "alert bad certificate"
    };
    Some(format!("{} [HTTP 400: {said}]", cert_advice(alert, sent)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The advice for a TLS alert about the client certificate (OpenSSL's
/// words in `text`); `sent`: the certificate presented, if any.
fn client_cert_advice(text: &str, sent: Option<&str>) -> Option<String> {
    const ALERTS: [&str; 8] = [
        "alert certificate required",
        "alert bad certificate",
        "alert unknown ca",
        "alert certificate expired",
        "alert certificate revoked",
        "alert certificate unknown",
        "alert unsupported certificate",
        "alert access denied",
    ];
    let alert = ALERTS.iter().find(|a| text.contains(*a))?;
    Some(format!("{} [{}]", cert_advice(alert, sent), text.trim()))
}

/// A TLS 1.2 server that wanted a certificate and got none may just say
/// "handshake failure" (RFC 5246 §7.4.6): with none configured, the advice
/// names that possibility; the problem stays [`TlsProblem::Other`], since
/// the cause may as well be a version or cipher the two do not share.
fn handshake_failure_advice(text: &str, sent: Option<&str>) -> Option<String> {
    (sent.is_none() && text.contains("alert handshake failure")).then(|| {
        format!(
            "{} [{}]",
            cert_advice("alert handshake failure", None),
            text.trim()
        )
    })
}

/// What to do about a client certificate `alert` (OpenSSL's words).
fn cert_advice(alert: &str, sent: Option<&str>) -> String {
    let Some(sent) = sent else {
        if alert == "alert handshake failure" {
            return "the server ended the handshake: it may require a client certificate, \
                    and none is configured (set Tls::client_identity; tail: --cert and --key, \
                    or --pkcs12), or it shares no TLS version or cipher with this device"
                .to_owned();
        }
        return "the server requires a client certificate and none is configured: set \
                Tls::client_identity (tail: --cert and --key, or --pkcs12)"
            .to_owned();
    };
    match alert {
        "alert certificate required" => format!(
            "the server requires a client certificate and did not take the one offered, \
             {sent}: check that the server trusts its issuer"
        ),
        "alert unknown ca" => format!(
            "the server does not trust the issuer of the client certificate sent, {sent}: \
             give the server that CA, or provision a certificate from one it trusts"
        ),
        "alert certificate expired" => format!(
            "the server says the client certificate sent has expired, {sent} (or its clock \
             is off): renew it; a renewed file is read at the next attempt"
        ),
        "alert certificate revoked" => format!(
            "the server says the client certificate sent was revoked, {sent}: provision a \
             new one"
        ),
        _ => format!(
            "the server refused the client certificate sent, {sent}: check that the server \
             trusts its issuer, that it is valid now and allows client authentication \
             (extended key usage clientAuth)"
        ),
    }
}

fn tls_error(
    host: &str,
    e: &native_tls::Error,
    addr: &str,
    after: Duration,
    sent: Option<&str>,
) -> ConnectionError {
    let text = e.to_string();
    let io_timeout = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(timed_out);
    if io_timeout {
        return ConnectionError::Timeout {
            phase: Phase::TlsHandshake,
            addr: addr.to_owned(),
            after,
        };
    }
    let (problem, reason) = tls_advice(host, &text, now_utc(), sent);
    ConnectionError::Tls {
        host: host.to_owned(),
        problem,
        reason,
    }
}

/// The advice for a failed TLS handshake with `host` outside the socket
/// (the poller's): the same words as the socket's [`ConnectionError::Tls`].
#[cfg(feature = "poll")]
pub(crate) fn tls_reason(host: &str, e: &native_tls::Error, sent: Option<&str>) -> String {
    let (_, reason) = tls_advice(host, &e.to_string(), now_utc(), sent);
    format!("TLS with {host}: {reason}")
}

/// Reads OpenSSL's words (the verify result native-tls appends in
/// parentheses) into a problem and advice that fits it. Adding a CA helps
/// only for an unknown issuer or a self-signed certificate; saying so for
/// an expired certificate or a wrong name sends an operator the wrong way.
fn tls_advice(host: &str, text: &str, now: String, sent: Option<&str>) -> (TlsProblem, String) {
    if let Some(advice) = client_cert_advice(text, sent) {
        return (TlsProblem::ClientCertificate, advice);
    }
    if let Some(advice) = handshake_failure_advice(text, sent) {
        return (TlsProblem::Other, advice);
    }
    let has = |s: &str| text.contains(s);
    let (problem, advice) = if has("certificate has expired") {
        (
            TlsProblem::Expired,
            format!(
                "the server's certificate has expired (or this device's clock is ahead: it \
                 says {now}); renew the certificate on the server, adding a CA will not help"
            ),
        )
    } else if has("certificate is not yet valid") {
        (
            TlsProblem::NotYetValid,
            format!(
                "the server's certificate is not valid yet: this device's clock is probably \
                 behind (it says {now}); set the time (NTP) before connecting"
            ),
        )
    } else if has("Hostname mismatch") || has("IP address mismatch") {
        (
            TlsProblem::WrongHost,
            format!(
                "the server's certificate was issued for another name than `{host}`; connect \
                 with a name the certificate holds or reissue it to include this one, adding \
                 a CA will not help"
            ),
        )
    } else if has("self-signed certificate in certificate chain")
        || has("self signed certificate in certificate chain")
        || has("unable to get local issuer certificate")
        || has("unable to verify the first certificate")
        || has("unable to get issuer certificate")
    {
        (
            TlsProblem::UnknownIssuer,
            "the server's certificate was issued by a CA this device does not trust; add \
             that CA with tls.root_certificates"
                .to_owned(),
        )
    } else if has("self-signed certificate") || has("self signed certificate") {
        (
            TlsProblem::SelfSigned,
            "the server's certificate is self-signed; trust it with tls.root_certificates \
             (better: issue it from a private CA and add that)"
                .to_owned(),
        )
    } else if has("wrong version number")
        || has("packet length too long")
        || has("unexpected EOF")
        || has("unexpected eof")
        || has("http request")
        || has("record layer failure")
    {
        (
            TlsProblem::NotTls,
            "the server did not answer in TLS: it is probably not TLS on this port (should \
             the URL be ws:// rather than wss://, or is the port wrong?)"
                .to_owned(),
        )
    } else {
        return (TlsProblem::Other, text.to_owned());
    };
    (problem, format!("{advice} [{text}]"))
}

/// The wall-clock time as UTC, for messages about certificate dates.
fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_101_is_checked_as_rfc_6455_says() {
        let agreed = |u: &str, c: &str, p: Option<&str>, e: Option<&str>| Agreed {
            upgrade: Some(u.into()),
            connection: Some(c.into()),
            protocol: p.map(Into::into),
            extensions: e.map(Into::into),
        };
        let offered = vec!["a".to_owned(), "b".to_owned()];
        let ok = |a: Agreed| a.check(&offered, false, "h:1").map(|(p, _)| p);
        assert_eq!(
            ok(agreed("WebSocket", "keep-alive, Upgrade", None, None)).unwrap(),
            None
        );
        assert_eq!(
            ok(agreed("websocket", "upgrade", Some("b"), Some(" "))).unwrap(),
            Some("b".into())
        );
        for (a, says) in [
            (agreed("h2c", "upgrade", None, None), "Upgrade: websocket"),
            (
                agreed("websocket", "close", None, None),
                "Connection: Upgrade",
            ),
            (
                agreed("websocket", "upgrade", Some("c"), None),
                "not offered",
            ),
            (
                agreed("websocket", "upgrade", None, Some("x-ext")),
                "did not offer",
            ),
        ] {
            match ok(a) {
                Err(ConnectionError::Protocol(why)) => assert!(why.contains(says), "{why}"),
                other => panic!("expected a protocol error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_clock_is_shown_as_a_civil_date() {
        let now = now_utc();
        assert!(now.starts_with("20") && now.ends_with(" UTC"), "{now}");
        assert_eq!(now.len(), "2026-11-23 09:10 UTC".len(), "{now}");
    }

    #[test]
    fn each_verify_result_gets_its_own_advice() {
        let cases = [
            (
                "certificate verify failed (certificate has expired)",
                TlsProblem::Expired,
            ),
            (
                "certificate verify failed (certificate is not yet valid)",
                TlsProblem::NotYetValid,
            ),
            (
                "certificate verify failed (Hostname mismatch)",
                TlsProblem::WrongHost,
            ),
            (
                "certificate verify failed (IP address mismatch)",
                TlsProblem::WrongHost,
            ),
            (
                "certificate verify failed (self-signed certificate in certificate chain)",
                TlsProblem::UnknownIssuer,
            ),
            (
                "certificate verify failed (unable to get local issuer certificate)",
                TlsProblem::UnknownIssuer,
            ),
            (
                "certificate verify failed (self-signed certificate)",
                TlsProblem::SelfSigned,
            ),
            ("ssl3_get_record:wrong version number", TlsProblem::NotTls),
            ("something new", TlsProblem::Other),
        ];
        for (text, want) in cases {
            let (got, advice) = tls_advice("h", text, "2026-01-01 00:00 UTC".into(), None);
            assert_eq!(got, want, "{text}");
            assert!(advice.contains(text), "OpenSSL's words are kept: {advice}");
            let ca_helps = matches!(want, TlsProblem::UnknownIssuer | TlsProblem::SelfSigned);
            assert_eq!(
                advice.contains("tls.root_certificates"),
                ca_helps,
                "{advice}"
            );
        }
    }
}
