//! The HTTP upgrade, written here rather than by tungstenite (whose client
//! handshake logs the raw request, token and `Authorization` included), and
//! the checks of its 101 answer (RFC 6455 §4.1). The answer's head parser is
//! pure, and property-tested.

use std::io::{self, Read, Write};

use tungstenite::http::Uri;

use crate::config::{Config, Endpoint};
use crate::connect::stream::{timed_out, Socket, Stream};
use crate::connect::target::Target;
use crate::connect::tls::{client_cert_advice, nginx_cert_refusal};
use crate::error::{ConnectionError, Phase, TlsProblem};
use crate::machine::deflate::Params;
use crate::redact;

type Result<T, E = ConnectionError> = std::result::Result<T, E>;

/// Largest upgrade response we read; a real one is a few hundred bytes.
const MAX_RESPONSE: usize = 16 * 1024;

/// The HTTP upgrade, written here rather than by tungstenite, whose client
/// handshake logs the raw request (token and `Authorization` included) at
/// trace level. Nothing here logs the request.
pub(crate) fn upgrade(
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
    let key = crate::connect::proxy::base64(&rand::random::<[u8; 16]>());
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
        if name.is_empty() || !name.bytes().all(crate::connect::target::token_byte) {
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
    let expected = accept_key(&key);
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
            ..Default::default()
        },
    ))
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

/// The `Sec-WebSocket-Accept` a server must answer `key` with (RFC 6455
/// §4.2.2): the key and the protocol's GUID, hashed with SHA-1, in base64.
fn accept_key(key: &str) -> String {
    let mut both = Vec::with_capacity(key.len() + 36);
    both.extend(key.as_bytes());
    both.extend(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    crate::connect::proxy::base64(&crate::connect::sha1::sha1(&both))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_gives() {
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let key = crate::connect::proxy::base64(&rand::random::<[u8; 16]>());
        assert_eq!(key.len(), 24, "16 bytes in base64");
    }

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
}
