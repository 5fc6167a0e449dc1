//! The poller's one HTTP exchange. With the `poll` feature (on by default)
//! it is ureq, with native-tls and the WebSocket's proxy. Without the
//! feature there is no HTTP client at all: a device that needs no fallback
//! saves ureq's weight, and a configured poll is refused when the client is
//! built.

use crate::config::Config;
use crate::error::Result;
use crate::protocol::PollRequest;

/// What the server answered: status, `Retry-After`, and the body (at most
/// the configured limit).
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// Why an exchange failed: the status when there was one, and what.
pub(crate) type Failure = (Option<u16>, String);

#[cfg(feature = "poll")]
pub(crate) use with_ureq::{agent, fetch, shutdown, Agent};
#[cfg(not(feature = "poll"))]
pub(crate) use without::{agent, fetch, shutdown, Agent};

#[cfg(feature = "poll")]
mod with_ureq {
    use super::{Answer, Config, Failure, PollRequest, Result};
    use crate::error::Error;
    use crate::protocol::Method;
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

    /// The HTTP agent, and the client certificate it presents (for advice).
    #[derive(Clone)]
    pub(crate) struct Agent {
        http: ureq::Agent,
        sent: Option<std::sync::Arc<str>>,
    }

    /// The HTTP agent: native-tls with the system roots (or the configured
    /// extra roots, which then replace them), and a finite timeout.
    pub(crate) fn agent(cfg: &Config) -> Result<Agent> {
        let roots = if cfg.roots.is_empty() {
            RootCerts::PlatformVerifier
        } else {
            // Parsed once at build; ureq takes them as DER.
            let mut certs = Vec::new();
            for cert in &cfg.roots {
                let der = cert.to_der().map_err(|e| {
                    Error::config(
                        "tls.root_certificates",
                        format!("unusable certificate: {e}"),
                    )
                })?;
                certs.push(Certificate::from_der(&der).to_owned());
            }
            RootCerts::new_with_certs(&certs)
        };
        // Read at every agent (each time polling starts): a certificate
        // renewed on disk is used from then on.
        let identity = match &cfg.tls.client_identity {
            Some(id) => Some(
                crate::connect::identity::load(id)
                    .map_err(|e| Error::config("tls.client_identity", e))?,
            ),
            None => None,
        };
        let client_cert = match &identity {
            Some(id) => Some(
                id.ureq()
                    .map_err(|e| Error::config("tls.client_identity", e))?,
            ),
            None => None,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(roots)
            .disable_verification(cfg.tls.danger_accept_invalid_certs)
            .client_cert(client_cert)
            .build();
        // The same proxy as the WebSocket's, chosen for the poll URL's host.
        let proxy = cfg.poll_url.as_deref().and_then(|url| {
            cfg.proxy
                .choice
                .for_host(&cfg.proxy.env, url.starts_with("https://"), host_of(url))
                .and_then(crate::connect::proxy::Proxy::for_ureq)
        });
        let http = ureq::Agent::config_builder()
            .proxy(proxy)
            .tls_config(tls)
            .timeout_global(Some(cfg.polling.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("heartline/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Agent {
            http,
            sent: identity.map(|i| i.shown.into()),
        })
    }

    /// Ends every request the agent (and its clones) has in flight at once:
    /// a request waiting for its answer, reading its body, or in its TLS or
    /// proxy handshake fails straight away. The name lookup and the TCP
    /// connect are not interrupted; `timeout_global` bounds them. The agent
    /// refuses new requests afterwards.
    pub(crate) fn shutdown(agent: Agent) {
        agent.http.shutdown();
    }

    /// The host of an http(s) URL: no scheme, credentials, port or path.
    fn host_of(url: &str) -> &str {
        let host = url
            .split_once("://")
            .map_or(url, |(_, r)| r)
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    }

    /// One request, its answer read up to `max_body` bytes.
    pub(crate) fn fetch(
        agent: &Agent,
        req: &PollRequest,
        headers: &[(String, String)],
        max_body: usize,
    ) -> std::result::Result<Answer, Failure> {
        let result = match req.method {
            Method::Get => {
                let mut r = agent.http.get(&req.url);
                for (n, v) in headers {
                    r = r.header(n.as_str(), v.as_str());
                }
                r.call()
            }
            Method::Post => {
                let body = req.body.clone().unwrap_or_default();
                let mut r = agent.http.post(&req.url);
                for (n, v) in headers {
                    r = r.header(n.as_str(), v.as_str());
                }
                if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
                    r = r.content_type("application/json");
                }
                r.send(body.as_bytes())
            }
        };
        let mut resp = result.map_err(|e| match e {
            // A failed handshake gets the socket's advice (expired, wrong
            // name, unknown CA, not TLS), not OpenSSL's words alone.
            ureq::Error::NativeTls(t) => {
                let sent = agent.sent.as_deref();
                (
                    None,
                    crate::connect::tls::tls_reason(host_of(&req.url), &t, sent),
                )
            }
            e => (None, e.to_string()),
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .body_mut()
            .with_config()
            .limit(max_body as u64)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    (Some(status), format!("body over the {max_body} byte limit"))
                }
                e => (Some(status), format!("reading the body failed: {e}")),
            })?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

#[cfg(not(feature = "poll"))]
mod without {
    use super::{Answer, Config, Failure, PollRequest, Result};
    use crate::error::Error;

    /// No HTTP client. `agent` never makes one, so no poller runs.
    #[derive(Clone)]
    #[allow(dead_code)] // never constructed: `agent` refuses
    pub(crate) struct Agent;

    /// Refuses: a poll was configured in a build without the feature.
    pub(crate) fn agent(_: &Config) -> Result<Agent> {
        Err(Error::config(
            "poll",
            "heartline was built without its `poll` feature (on by default), so it has \
             no HTTP client for the polling fallback: enable the feature, or remove the poll \
             configuration",
        ))
    }

    pub(crate) fn shutdown(_: Agent) {}

    pub(crate) fn fetch(
        _: &Agent,
        _: &PollRequest,
        _: &[(String, String)],
        _: usize,
    ) -> std::result::Result<Answer, Failure> {
        Err((None, "built without the `poll` feature".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Client, JsonRules, Method};

    fn polling_client() -> crate::Result<Client> {
        Client::builder("ws://127.0.0.1:1/")
            .protocol(JsonRules::new().poll("http://127.0.0.1:1/poll", Method::Get, None))
            .build()
    }

    #[cfg(not(feature = "poll"))]
    #[test]
    fn without_the_feature_a_configured_poll_is_refused_at_build() {
        match polling_client() {
            Err(crate::Error::Config { field, reason }) => {
                assert_eq!(field, "poll");
                assert!(reason.contains("`poll` feature"), "{reason}");
            }
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("a poll was accepted without an HTTP client"),
        }
        // Without a poll the client builds as usual.
        let c = Client::builder("ws://127.0.0.1:1/")
            .build()
            .expect("client");
        c.close();
    }

    #[cfg(feature = "poll")]
    #[test]
    fn with_the_feature_a_configured_poll_builds() {
        polling_client().expect("client").close();
    }
}
