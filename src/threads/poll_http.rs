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
    use crate::connect::bind::Binding;
    use crate::connect::stream::Wire;
    use crate::error::ConnectionError;
    use crate::error::Error;
    use crate::protocol::Method;
    use crate::shared::Shared;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::sync::{Arc, Weak};
    use std::time::{Duration, Instant};
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::{
        Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers,
        NativeTlsConnector, NextTimeout, ShutdownHandle, Transport,
    };

    /// The HTTP agent, and the client certificate it presents (for advice).
    #[derive(Clone)]
    pub(crate) struct Agent {
        http: ureq::Agent,
        sent: Option<std::sync::Arc<str>>,
    }

    /// The HTTP agent: native-tls with the system roots (or the configured
    /// extra roots, which then replace them), and a finite timeout.
    pub(crate) fn agent(cfg: &Config, shared: &Arc<Shared>) -> Result<Agent> {
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
        let config = ureq::Agent::config_builder()
            .proxy(proxy)
            .tls_config(tls)
            .timeout_global(Some(cfg.polling.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("heartline/", env!("CARGO_PKG_VERSION")))
            .build();
        // ureq's own chain, with its TCP step replaced by one bound like
        // the WebSocket's (see `Bound`); the proxy's connection too, as
        // the tunnel runs the chain for it.
        let connector = ()
            .chain(ConnectProxyConnector::default())
            .chain(BoundTcp {
                binding: cfg.binding.clone(),
                shared: shared.clone(),
            })
            .chain(NativeTlsConnector::default());
        let http = ureq::Agent::with_parts(config, connector, DefaultResolver::default());
        Ok(Agent {
            http,
            sent: identity.map(|i| i.shown.into()),
        })
    }

    /// The polls' TCP connections: bound as the WebSocket's
    /// (`bind_interface`, `bind_address`) and raced the same way (RFC 8305),
    /// to the addresses ureq resolved, their bytes counted on the uplink's
    /// counter ([`crate::Stats::uplinks`]). Each socket is registered with
    /// the agent, so [`shutdown`] ends a request in flight on it.
    struct BoundTcp {
        binding: Binding,
        shared: Arc<Shared>,
    }

    impl std::fmt::Debug for BoundTcp {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("BoundTcp").field(&self.binding).finish()
        }
    }

    /// A poll's TCP connection, as ureq's transport.
    #[derive(Debug)]
    struct Held {
        /// Shared (weakly) with the agent's shutdown.
        tcp: Arc<TcpStream>,
        buffers: LazyBuffers,
        wire: Arc<Wire>,
    }

    impl<In: Transport> Connector<In> for BoundTcp {
        type Out = Either<In, Held>;

        fn connect(
            &self,
            details: &ConnectionDetails,
            chained: Option<In>,
        ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
            if chained.is_some() {
                return Ok(chained.map(Either::A));
            }
            let failed = |e: ConnectionError| match e {
                ConnectionError::Timeout { .. } => ureq::Error::Timeout(ureq::Timeout::Connect),
                e => ureq::Error::Io(std::io::Error::other(e.to_string())),
            };
            let bound = self.binding.choose().map_err(failed)?;
            let timeout = details
                .timeout
                .not_zero()
                .map_or(Duration::from_secs(24 * 3600), |d| *d);
            let addr = details
                .uri
                .authority()
                .map_or_else(String::new, ToString::to_string);
            let tcp = crate::connect::dial::connect_resolved(
                details.addrs.to_vec(),
                &addr,
                Instant::now() + timeout,
                timeout,
                &crate::connect::dial::Abort::default(),
                &bound,
            )
            .map_err(failed)?;
            let _ = tcp.set_nodelay(true);
            let (_, wire) = crate::connect::transport::uplink_of(&bound, &tcp, &self.shared.wires);
            let tcp = Arc::new(tcp);
            (details.register_shutdown)(Arc::downgrade(&tcp) as Weak<dyn ShutdownHandle>)?;
            let c = details.config;
            Ok(Some(Either::B(Held {
                tcp,
                buffers: LazyBuffers::new(c.input_buffer_size(), c.output_buffer_size()),
                wire,
            })))
        }
    }

    /// The socket's timeout for one read or write: what is left of ureq's
    /// budget (`None`: no limit).
    fn left(t: NextTimeout) -> std::result::Result<Option<Duration>, ureq::Error> {
        if t.after.is_zero() {
            return Err(ureq::Error::Timeout(t.reason));
        }
        Ok(t.not_zero().map(|d| *d))
    }

    fn io_failed(e: std::io::Error, reason: ureq::Timeout) -> ureq::Error {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ureq::Error::Timeout(reason),
            _ => ureq::Error::Io(e),
        }
    }

    impl Transport for Held {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(
            &mut self,
            amount: usize,
            timeout: NextTimeout,
        ) -> std::result::Result<(), ureq::Error> {
            let t = timeout.for_write();
            self.tcp.set_write_timeout(left(t)?)?;
            let out = &self.buffers.output()[..amount];
            (&*self.tcp)
                .write_all(out)
                .map_err(|e| io_failed(e, t.reason))?;
            self.wire.add(0, amount);
            Ok(())
        }

        fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
            let t = timeout.for_read();
            self.tcp.set_read_timeout(left(t)?)?;
            let n = loop {
                match (&*self.tcp).read(self.buffers.input_append_buf()) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    r => break r.map_err(|e| io_failed(e, t.reason))?,
                }
            };
            self.buffers.input_appended(n);
            self.wire.add(n, 0);
            Ok(n > 0)
        }

        /// Fit for another request (ureq pools connections): nothing to
        /// read yet. Bytes, or the end, mean the server closed or sent what
        /// nobody asked for.
        fn is_open(&mut self) -> bool {
            if self.tcp.set_nonblocking(true).is_err() {
                return false;
            }
            let idle =
                matches!(self.tcp.peek(&mut [0u8]), Err(e) if e.kind() == ErrorKind::WouldBlock);
            self.tcp.set_nonblocking(false).is_ok() && idle
        }
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
    pub(crate) fn agent(_: &Config, _: &std::sync::Arc<crate::shared::Shared>) -> Result<Agent> {
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
