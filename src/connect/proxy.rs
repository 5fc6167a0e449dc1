//! HTTP `CONNECT` proxies: which one applies to a host (the builder's, or
//! the environment's as curl reads it), and the tunnel through it. TLS to
//! the server then runs inside the tunnel, with the server's name.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use crate::error::{ConnectionError, Phase};
use crate::redact;

/// One proxy, from an `http://[user:password@]host:port` URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Basic …` credentials for `Proxy-Authorization`.
    auth: Option<String>,
    /// The URL with the credentials masked: what logs and errors show.
    pub shown: String,
    /// The URL as given, for ureq (never shown).
    #[cfg_attr(not(feature = "poll"), allow(dead_code))]
    raw: String,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Proxy {
    /// Parses a proxy URL.
    ///
    /// # Errors
    /// What is wrong with it (credentials masked).
    pub(crate) fn parse(url: &str) -> Result<Proxy, String> {
        let shown = redact::url(url);
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "proxy {shown}: only http:// (CONNECT) proxies are supported, not {scheme}://"
                ))
            }
            // curl's habit: a bare host:port means http://.
            None => url,
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("proxy {shown}: bad port `{p}`"))?,
            ),
            _ => (hostport, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("proxy {shown}: no host"));
        }
        let auth = userinfo.map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let plain = format!("{}:{}", percent_decode(user), percent_decode(pass));
            format!("Basic {}", base64(plain.as_bytes()))
        });
        Ok(Proxy {
            host: host.to_owned(),
            port,
            auth,
            shown,
            raw: if url.contains("://") {
                url.to_owned()
            } else {
                format!("http://{url}")
            },
        })
    }

    /// The same proxy for ureq (the poller).
    #[cfg(feature = "poll")]
    pub(crate) fn for_ureq(&self) -> Option<ureq::Proxy> {
        ureq::Proxy::new(&self.raw).ok()
    }

    pub(crate) fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens the tunnel to `host:port` on a socket connected to the proxy.
    /// The stream's deadline bounds the wait.
    pub(crate) fn tunnel(
        &self,
        tcp: &mut (impl Read + Write),
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(), ConnectionError> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(a) = &self.auth {
            req.push_str("Proxy-Authorization: ");
            req.push_str(a);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let io = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                ConnectionError::Timeout {
                    phase: Phase::Proxy,
                    addr: self.addr(),
                    after: timeout,
                }
            } else {
                self.error(None, format!("connection to the proxy failed: {e}"))
            }
        };
        tcp.write_all(req.as_bytes()).map_err(io)?;
        // Read the answer's head byte by byte: nothing after it may be
        // taken from the socket (it is the server's, inside the tunnel).
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(self.error(None, format!("answer head over {MAX_HEAD} bytes")));
            }
            match tcp.read(&mut byte).map_err(io)? {
                0 => {
                    return Err(self.error(
                        None,
                        "closed the connection without answering CONNECT".into(),
                    ))
                }
                _ => head.push(byte[0]),
            }
        }
        match answer(&head) {
            Ok(200..=299) => Ok(()),
            Ok(status) => Err(self.error(Some(status), advice(status).into())),
            Err(why) => Err(self.error(None, why)),
        }
    }

    fn error(&self, status: Option<u16>, reason: String) -> ConnectionError {
        ConnectionError::Proxy {
            proxy: self.shown.clone(),
            status,
            reason,
        }
    }
}

const MAX_HEAD: usize = 16 * 1024;

/// The status of a proxy's answer head.
///
/// # Errors
/// Says why it is not an HTTP answer.
pub(crate) fn answer(head: &[u8]) -> Result<u16, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => resp
            .code
            .ok_or_else(|| "answer without a status".to_owned()),
        Ok(httparse::Status::Partial) => Err("answer head incomplete".into()),
        Err(e) => Err(format!(
            "not an HTTP proxy ({e}): {:?}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        )),
    }
}

fn advice(status: u16) -> &'static str {
    match status {
        // 407 is the standard answer; tinyproxy (among others) says 401.
        401 | 407 => {
            "the proxy asks for credentials: put user:password in the proxy URL, or check them"
        }
        403 => "the proxy refuses this destination (its access list, or the ports it allows CONNECT to)",
        502..=504 => "the proxy cannot reach the server (name, route or the server down)",
        405 | 501 => "the proxy does not support CONNECT",
        _ => "the proxy refused the tunnel",
    }
}

/// Which proxy applies to a host.
#[derive(Clone, Debug, Default)]
pub(crate) enum Choice {
    /// From the environment, read once at build.
    #[default]
    Env,
    /// Never.
    Off,
    /// This one, for every host.
    Fixed(Proxy),
}

/// The proxy variables, as curl and ureq read them: `HTTPS_PROXY` for
/// wss:// (and https:// polls), `HTTP_PROXY` for ws:// (and http://),
/// `ALL_PROXY` for both; lower case wins over upper case; `NO_PROXY`
/// lists hosts, domain suffixes, IP addresses, or `*`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Env {
    https: Option<Proxy>,
    http: Option<Proxy>,
    all: Option<Proxy>,
    no_proxy: Vec<String>,
}

impl Env {
    /// Reads the variables through `get` (the process environment, or a
    /// test's map). A bad proxy URL is reported and ignored.
    pub(crate) fn read(get: impl Fn(&str) -> Option<String>) -> Env {
        let var = |name: &str| {
            get(&name.to_ascii_lowercase())
                .or_else(|| get(&name.to_ascii_uppercase()))
                .filter(|v| !v.trim().is_empty())
        };
        let proxy = |name: &str| {
            var(name).and_then(|v| match Proxy::parse(v.trim()) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn!(target: "heartline::proxy", "ignoring {name}: {e}");
                    None
                }
            })
        };
        Env {
            https: proxy("https_proxy"),
            // curl ignores upper-case HTTP_PROXY (a CGI header can set it);
            // so do we.
            http: get("http_proxy")
                .filter(|v| !v.trim().is_empty())
                .and_then(|v| Proxy::parse(v.trim()).ok()),
            all: proxy("all_proxy"),
            no_proxy: var("no_proxy")
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_ascii_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The proxy for `host` over TLS or not. Never for a loopback host: a
    /// proxy elsewhere would reach its own loopback, not this device's.
    pub(crate) fn for_host(&self, tls: bool, host: &str) -> Option<&Proxy> {
        if loopback(host) || self.bypassed(host) {
            return None;
        }
        let specific = if tls { &self.https } else { &self.http };
        specific.as_ref().or(self.all.as_ref())
    }

    fn bypassed(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.no_proxy.iter().any(|e| {
            if e == "*" {
                return true;
            }
            // An entry may carry a port (ignored) or a leading dot.
            let e = match e.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
                _ => e.as_str(),
            };
            let e = e.trim_start_matches('.');
            host == e || host.ends_with(&format!(".{e}"))
        })
    }
}

fn loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Choice {
    pub(crate) fn for_host<'a>(&'a self, env: &'a Env, tls: bool, host: &str) -> Option<&'a Proxy> {
        match self {
            Choice::Env => env.for_host(tls, host),
            Choice::Off => None,
            Choice::Fixed(p) => Some(p),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(T[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_proxy_url_with_credentials_is_parsed_and_never_shown() {
        let p = Proxy::parse("http://us%40er:p%3Ass@proxy.lan:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.lan", 3128));
        assert_eq!(p.auth.as_deref(), Some("Basic dXNAZXI6cDpzcw=="));
        assert!(!format!("{p:?}").contains("p%3Ass"), "{p:?}");
        assert!(!p.shown.contains("us%40er"));
        assert_eq!(Proxy::parse("proxy.lan:8080").unwrap().port, 8080);
        assert_eq!(Proxy::parse("http://proxy.lan").unwrap().port, 80);
        assert!(Proxy::parse("socks5://h:1")
            .unwrap_err()
            .contains("only http://"));
        assert!(Proxy::parse("http://h:notaport")
            .unwrap_err()
            .contains("bad port"));
        assert!(Proxy::parse("http://:1").unwrap_err().contains("no host"));
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b""), "");
    }

    fn env(vars: &[(&str, &str)]) -> Env {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::read(|k| m.get(k).cloned())
    }

    #[test]
    fn the_environment_picks_by_scheme_and_no_proxy_bypasses() {
        let e = env(&[
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "http://plain:2"),
            ("ALL_PROXY", "http://all:3"),
            (
                "NO_PROXY",
                "localhost, .internal.lan,10.0.0.7,example.org:443",
            ),
        ]);
        assert_eq!(e.for_host(true, "push.example.com").unwrap().host, "secure");
        assert_eq!(e.for_host(false, "push.example.com").unwrap().host, "plain");
        assert!(e.for_host(true, "localhost").is_none());
        assert!(e.for_host(true, "a.internal.lan").is_none());
        assert!(e.for_host(true, "internal.lan").is_none());
        assert!(e.for_host(true, "10.0.0.7").is_none());
        assert!(e.for_host(true, "example.org").is_none());
        assert!(
            e.for_host(true, "notexample.org").is_some(),
            "a suffix is a whole label"
        );
        let e = env(&[
            ("HTTP_PROXY", "http://cgi:9"),
            ("all_proxy", "http://all:3"),
        ]);
        assert_eq!(
            e.for_host(false, "h").unwrap().host,
            "all",
            "upper-case HTTP_PROXY is ignored"
        );
        let e = env(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
        ]);
        assert_eq!(e.for_host(true, "h").unwrap().host, "lower");
        let e = env(&[("https_proxy", "http://p:1"), ("no_proxy", "*")]);
        assert!(e.for_host(true, "anything").is_none());
        assert!(env(&[]).for_host(true, "h").is_none());
        let e = env(&[("https_proxy", "http://p:1")]);
        for local in ["localhost", "127.0.0.1", "127.1.2.3", "[::1]"] {
            assert!(
                e.for_host(true, local).is_none(),
                "{local} is never proxied"
            );
        }
    }

    #[test]
    fn a_proxy_that_answers_401_is_also_asking_for_credentials() {
        // Seen with tinyproxy 1.11: bad Basic credentials get a 401.
        assert!(advice(401).contains("credentials"));
        assert!(advice(407).contains("credentials"));
    }

    #[test]
    fn proxy_answers_are_read_or_refused_with_the_reason() {
        assert_eq!(
            answer(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Ok(200)
        );
        assert_eq!(
            answer(
                b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
            ),
            Ok(407)
        );
        assert!(answer(b"SSH-2.0-OpenSSH\r\n\r\n")
            .unwrap_err()
            .contains("not an HTTP proxy"));
    }
}
