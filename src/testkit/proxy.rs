//! An HTTP `CONNECT` proxy on 127.0.0.1 for tests: tunnels, with or
//! without Basic authentication, and fails the way real proxies do
//! (refuses with a status, answers something that is not HTTP, stalls).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::lock;

/// How the proxy answers `CONNECT`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProxyMode {
    /// Open the tunnel (after checking credentials, when required).
    #[default]
    Tunnel,
    /// Refuse with this status (403, 502, …).
    Refuse(u16),
    /// Answer bytes that are not HTTP.
    Garbage,
    /// Read the request and never answer.
    Stall,
}

/// One `CONNECT` the proxy received.
#[derive(Clone, Debug)]
pub struct ProxyRequest {
    /// `host:port` asked for.
    pub target: String,
    /// The `Proxy-Authorization` header was present.
    pub had_credentials: bool,
    /// The tunnel was opened.
    pub tunneled: bool,
}

struct Inner {
    stop: AtomicBool,
    mode: Mutex<ProxyMode>,
    /// `Basic …` expected, when authentication is on.
    auth: Option<String>,
    log: Mutex<Vec<ProxyRequest>>,
    /// Host names the proxy resolves itself (`route`).
    routes: Mutex<Vec<(String, SocketAddr)>>,
    /// Every socket, shut down when the proxy stops.
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The loopback `CONNECT` proxy. Stops (closing every tunnel and joining
/// its threads) when dropped.
pub struct ConnectProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

impl ConnectProxy {
    /// Starts a proxy on `127.0.0.1:0`; with `credentials`, it answers 407
    /// to a `CONNECT` without them or with others.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start(credentials: Option<(&str, &str)>) -> io::Result<ConnectProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            stop: AtomicBool::new(false),
            mode: Mutex::new(ProxyMode::Tunnel),
            auth: credentials.map(|(u, p)| {
                format!(
                    "Basic {}",
                    crate::connect::proxy::base64(format!("{u}:{p}").as_bytes())
                )
            }),
            log: Mutex::new(Vec::new()),
            routes: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        let accept = std::thread::Builder::new()
            .name("testkit-proxy".into())
            .spawn(move || {
                for s in listener.incoming() {
                    if i.stop.load(SeqCst) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    let ii = i.clone();
                    if let Ok(h) = std::thread::Builder::new()
                        .name("testkit-proxy-conn".into())
                        .spawn(move || serve(&ii, s))
                    {
                        lock(&i.threads).push(h);
                    }
                }
            })?;
        Ok(ConnectProxy {
            addr,
            inner,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// How the next `CONNECT`s are answered.
    pub fn set_mode(&self, mode: ProxyMode) {
        *lock(&self.inner.mode) = mode;
    }

    /// Tunnels to `host` (any port) go to `to` instead, as if the proxy's
    /// DNS said so: a client can then name a remote-looking host that only
    /// the proxy can reach, as a device behind a corporate proxy does.
    pub fn route(&self, host: &str, to: SocketAddr) {
        lock(&self.inner.routes).push((host.to_ascii_lowercase(), to));
    }

    /// Every `CONNECT` so far.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        lock(&self.inner.log).clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in lock(&self.inner.sockets).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.inner.threads).drain(..).collect();
        for h in threads {
            let _ = h.join();
        }
    }
}

fn keep(inner: &Inner, s: &TcpStream) {
    if let Ok(c) = s.try_clone() {
        lock(&inner.sockets).push(c);
    }
}

fn serve(inner: &Inner, mut client: TcpStream) {
    keep(inner, &client);
    if inner.stop.load(SeqCst) {
        return;
    }
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) if head.len() < 16 * 1024 => head.push(byte[0]),
            _ => return,
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut hs);
    if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        return;
    }
    let target = req.path.unwrap_or("").to_owned();
    let given = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    let mut entry = ProxyRequest {
        target: target.clone(),
        had_credentials: given.is_some(),
        tunneled: false,
    };
    let mode = lock(&inner.mode).clone();
    let refusal: Option<&[u8]> = if req.method != Some("CONNECT") {
        Some(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
    } else if inner.auth.is_some() && given != inner.auth {
        Some(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"testkit\"\r\nContent-Length: 0\r\n\r\n")
    } else {
        None
    };
    match (refusal, mode) {
        (Some(answer), _) => {
            let _ = client.write_all(answer);
        }
        (None, ProxyMode::Refuse(status)) => {
            let _ = client.write_all(
                format!("HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            );
        }
        (None, ProxyMode::Garbage) => {
            let _ = client.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        }
        (None, ProxyMode::Stall) => {
            lock(&inner.log).push(entry);
            let _ = client.set_read_timeout(Some(Duration::from_millis(10)));
            while !inner.stop.load(SeqCst) {
                match client.read(&mut byte) {
                    Ok(0) => break,
                    _ => continue,
                }
            }
            return;
        }
        (None, ProxyMode::Tunnel) => match connect(inner, &target) {
            Ok(server) => {
                keep(inner, &server);
                entry.tunneled = true;
                lock(&inner.log).push(entry);
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                let _ = client.set_read_timeout(None);
                pipe(client, server);
                return;
            }
            Err(_) => {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            }
        },
    }
    lock(&inner.log).push(entry);
}

fn connect(inner: &Inner, target: &str) -> io::Result<TcpStream> {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let routed = lock(&inner.routes)
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(host))
        .map(|(_, a)| *a);
    match routed {
        Some(a) => TcpStream::connect(a),
        None => TcpStream::connect(target),
    }
}

/// Copies both ways until either side closes, then closes both.
fn pipe(client: TcpStream, server: TcpStream) {
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let mut c = client;
        let mut s = server;
        let _ = io::copy(&mut c, &mut s);
        let _ = s.shutdown(Shutdown::Both);
        let _ = c.shutdown(Shutdown::Both);
    });
    let _ = io::copy(&mut s2, &mut c2);
    let _ = c2.shutdown(Shutdown::Both);
    let _ = s2.shutdown(Shutdown::Both);
    let _ = up.join();
}
