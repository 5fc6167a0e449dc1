//! A `wss://` server that asks for a client certificate (mutual TLS), on
//! OpenSSL directly: native-tls, which the main test server uses, cannot
//! ask for one. It greets each connection that presented a good
//! certificate with `hello <CN>` and echoes text; how it refuses is chosen
//! ([`Refusal`]).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod, SslStream, SslVerifyMode, SslVersion};
use openssl::x509::{X509VerifyResult, X509};

use crate::error::lock;

/// How a [`MutualTlsServer`] refuses a connection without a good client
/// certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A TLS alert, as most servers do (over TLS 1.3 the client sees it
    /// after its handshake, at its first read).
    Alert,
    /// The same, with TLS 1.2 at most: the handshake itself fails.
    AlertTls12,
    /// The handshake completes and the upgrade is answered with nginx's
    /// 400 page (`ssl_verify_client on`).
    Nginx400,
}

/// What one connection presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// A certificate the server accepted, by its CN.
    Accepted(String),
    /// Refused: no certificate, or one the server does not trust.
    Refused,
}

struct Inner {
    stop: AtomicBool,
    /// Bumped by [`MutualTlsServer::drop_all`]: open connections end.
    kicks: AtomicU64,
    seen: Mutex<Vec<Presented>>,
    changed: Condvar,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

/// The mutual-TLS test server. Stops (and joins its threads) when dropped.
pub struct MutualTlsServer {
    addr: SocketAddr,
    ca_pem: Vec<u8>,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

impl MutualTlsServer {
    /// Starts on `127.0.0.1:0`, trusting client certificates issued by
    /// `client_ca_pem`, with a server certificate from a fresh CA
    /// ([`MutualTlsServer::ca_pem`]).
    ///
    /// # Errors
    /// When the listener cannot be bound or OpenSSL set up.
    pub fn start(client_ca_pem: &[u8], refusal: Refusal) -> io::Result<MutualTlsServer> {
        let m = super::tls::generate(super::CertProblem::None).map_err(io::Error::other)?;
        let acceptor = (|| -> Result<SslAcceptor, openssl::error::ErrorStack> {
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
            let chain = X509::stack_from_pem(&m.chain_pem)?;
            let mut chain = chain.into_iter();
            if let Some(leaf) = chain.next() {
                b.set_certificate(&leaf)?;
            }
            for c in chain {
                b.add_extra_chain_cert(c)?;
            }
            let key = PKey::private_key_from_pem(&m.key_pem)?;
            b.set_private_key(&key)?;
            for ca in X509::stack_from_pem(client_ca_pem)? {
                b.cert_store_mut().add_cert(ca)?;
            }
            match refusal {
                Refusal::Alert | Refusal::AlertTls12 => {
                    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
                }
                // nginx finishes the handshake and judges afterwards.
                Refusal::Nginx400 => b.set_verify_callback(SslVerifyMode::PEER, |_, _| true),
            }
            if refusal == Refusal::AlertTls12 {
                b.set_max_proto_version(Some(SslVersion::TLS1_2))?;
            }
            Ok(b.build())
        })()
        .map_err(io::Error::other)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            stop: AtomicBool::new(false),
            kicks: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            conns: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        let accept = std::thread::Builder::new()
            .name("testkit-mtls".into())
            .spawn(move || {
                for tcp in listener.incoming() {
                    if i.stop.load(SeqCst) {
                        return;
                    }
                    let Ok(tcp) = tcp else { continue };
                    let (i2, a) = (i.clone(), acceptor.clone());
                    if let Ok(h) = std::thread::Builder::new()
                        .name("testkit-mtls-conn".into())
                        .spawn(move || serve(&i2, &a, tcp, refusal))
                    {
                        lock(&i.conns).push(h);
                    }
                }
            })?;
        Ok(MutualTlsServer {
            addr,
            ca_pem: m.ca_pem,
            inner,
            accept: Some(accept),
        })
    }

    /// `wss://localhost:PORT/`.
    pub fn url(&self) -> String {
        format!("wss://localhost:{}/", self.addr.port())
    }

    /// The CA of the server's certificate (for `Tls::root_certificates`).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// Drops every open connection (without a close frame): the client
    /// connects again.
    pub fn drop_all(&self) {
        self.inner.kicks.fetch_add(1, SeqCst);
    }

    /// `https://localhost:PORT/poll`: answers a poll with one item,
    /// `{"id":"poll-<CN>","text":"polled <CN>"}`.
    pub fn poll_url(&self) -> String {
        format!("https://localhost:{}/poll", self.addr.port())
    }

    /// What the connections so far presented, in order.
    pub fn presented(&self) -> Vec<Presented> {
        lock(&self.inner.seen).clone()
    }

    /// Waits until `cond` holds for what was presented, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&[Presented]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = lock(&self.inner.seen);
        loop {
            if cond(&seen) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            seen = self
                .inner
                .changed
                .wait_timeout(seen, left)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

impl Drop for MutualTlsServer {
    fn drop(&mut self) {
        self.inner.stop.store(true, SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for h in lock(&self.inner.conns).drain(..) {
            let _ = h.join();
        }
    }
}

fn seen(inner: &Inner, p: Presented) {
    lock(&inner.seen).push(p);
    inner.changed.notify_all();
}

fn serve(inner: &Inner, acceptor: &SslAcceptor, tcp: TcpStream, refusal: Refusal) {
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(50)));
    let Ok(mut tls) = acceptor.accept(tcp) else {
        seen(inner, Presented::Refused);
        return;
    };
    let good = tls.ssl().verify_result() == X509VerifyResult::OK;
    let cn = tls.ssl().peer_certificate().and_then(|c| {
        c.subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
    });
    let cn = match (refusal, cn, good) {
        (_, Some(cn), true) => cn,
        (Refusal::Nginx400, cn, _) => {
            let what = if cn.is_none() {
                "No required SSL certificate was sent"
            } else {
                "The SSL certificate error"
            };
            nginx_400(&mut tls, what);
            seen(inner, Presented::Refused);
            return;
        }
        _ => {
            seen(inner, Presented::Refused);
            return;
        }
    };
    let Some(head) = read_head(&mut tls) else {
        return;
    };
    seen(inner, Presented::Accepted(cn.clone()));
    let upgrade = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("upgrade: websocket");
    if !upgrade {
        // A poll: one item naming the certificate.
        use std::io::Write;
        let body = format!(r#"[{{"id":"poll-{cn}","text":"polled {cn}"}}]"#);
        let _ = write!(
            tls,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tls.shutdown();
        return;
    }
    let Ok(mut ws) = tungstenite::accept(Replay { head, at: 0, tls }) else {
        return;
    };
    let _ = ws.send(tungstenite::Message::text(format!("hello {cn}")));
    let kicked = inner.kicks.load(SeqCst);
    while !inner.stop.load(SeqCst) && inner.kicks.load(SeqCst) == kicked {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let _ = ws.send(tungstenite::Message::Text(t));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Reads a request's head (through its blank line), within 5 s.
fn read_head(tls: &mut SslStream<TcpStream>) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        if Instant::now() > deadline || got.len() > 16384 {
            return None;
        }
        match tls.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(got)
}

/// The TLS stream with the request head already read put back in front,
/// for tungstenite's handshake.
struct Replay {
    head: Vec<u8>,
    at: usize,
    tls: SslStream<TcpStream>,
}

impl io::Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.head.len() {
            let n = buf.len().min(self.head.len() - self.at);
            buf[..n].copy_from_slice(&self.head[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.tls.read(buf)
    }
}

impl io::Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tls.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tls.flush()
    }
}

/// nginx's answer when `ssl_verify_client on` finds no (good) certificate:
/// the request is read, then a 400 page names the problem.
fn nginx_400(tls: &mut SslStream<TcpStream>, what: &str) {
    use std::io::Write;
    if read_head(tls).is_none() {
        return;
    }
    let body = format!(
        "<html>\r\n<head><title>400 {what}</title></head>\r\n<body>\r\n<center><h1>400 Bad \
         Request</h1></center>\r\n<center>{what}</center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
    );
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(body.as_bytes());
    let _ = tls.flush();
    let _ = tls.shutdown();
}
