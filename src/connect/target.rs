//! A `ws://` or `wss://` URL, parsed once and checked with an error that
//! says what is wrong (secrets redacted). Below config and transport, so
//! both use it without importing each other.

use tungstenite::http::Uri;

use crate::error::ConnectionError;
use crate::redact;

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, ConnectionError> {
        let bad = |reason: &str| ConnectionError::Url {
            url: redact::url(url),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(&format!("cannot parse: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            Some(other) => return Err(bad(&format!("scheme `{other}` is not ws or wss"))),
            None => return Err(bad("no scheme (expected ws:// or wss://)")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Target { tls, host, port })
    }

    pub(crate) fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A byte of an HTTP token (RFC 9110 §5.6.2): header names, subprotocols.
pub(crate) fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_and_wss_with_default_ports() {
        let t = Target::parse("ws://example.com/path?x=1").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "example.com", 80));
        let t = Target::parse("wss://example.com").unwrap();
        assert_eq!((t.tls, t.port), (true, 443));
        let t = Target::parse("ws://[::1]:9000/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.addr()),
            ("::1", "[::1]:9000".to_owned())
        );
    }

    #[test]
    fn bad_urls_say_why_and_hide_tokens() {
        for (url, why) in [
            ("http://h/", "scheme `http`"),
            ("h/ws", "cannot parse"),
            ("/ws", "no scheme"),
            ("ws://", "cannot parse"),
            ("ws://h:0/", "port 0"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
        let e = Target::parse("ftp://h/?token=SECRET")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRET"), "{e}");
    }
}
