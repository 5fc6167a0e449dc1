//! TLS: the connector (system roots, extra roots, a client certificate),
//! kept between attempts while its inputs stay the same, and what a failed
//! handshake means for the operator (`TlsProblem` and advice that fits the
//! cause, from OpenSSL's verify result, an alert, or nginx's 400 page).

use std::io::{self, Read};
use std::time::Duration;

use crate::config::Config;
use crate::connect::stream::{timed_out, Stream};
use crate::error::{ConnectionError, Error, Phase, TlsProblem};

type Result<T, E = ConnectionError> = std::result::Result<T, E>;

/// The TLS connector, made at the first `wss://` attempt (loading
/// OpenSSL's roots costs a few MB that a `ws://` client never needs) and
/// made again when the client identity's files change on disk.
#[derive(Default)]
pub(crate) struct TlsCache {
    connector: Option<native_tls::TlsConnector>,
    stamp: crate::connect::identity::Stamp,
    /// The client certificate presented, as advice names it.
    pub sent: Option<String>,
}

impl TlsCache {
    /// The connector for this attempt; an identity file that cannot be
    /// read or used fails the attempt (the reconnect policy applies).
    pub(crate) fn get(&mut self, cfg: &Config, host: &str) -> Result<&native_tls::TlsConnector> {
        let stamp = cfg
            .tls
            .client_identity
            .as_ref()
            .map(crate::connect::identity::stamp)
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
                    crate::connect::identity::load(id)
                        .map_err(|e| setup(TlsProblem::ClientIdentity, e))?,
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
    identity: Option<&crate::connect::identity::Identity>,
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

/// nginx with `ssl_verify_client` finishes the TLS handshake without a
/// (good) client certificate and answers 400 with a page that says so:
/// the advice for that, from the page (read within the handshake's
/// deadline, at most 4 KiB).
pub(crate) fn nginx_cert_refusal(
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
pub(crate) fn client_cert_advice(text: &str, sent: Option<&str>) -> Option<String> {
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

pub(crate) fn tls_error(
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
