//! Helpers shared by the integration tests. Every wait has a deadline.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

use heartline::testkit::TestServer;
use heartline::{
    Backoff, Client, ClientBuilder, ConnectionError, Delivery, Event, Events, Heartbeat, Message,
    Reconnect, State, Timeouts,
};

/// Generous upper bound for anything that should happen "soon"; tests pass
/// in milliseconds and only a broken build waits this long.
pub const WAIT: Duration = Duration::from_secs(10);
pub const MS: Duration = Duration::from_millis(1);

pub mod netns;
#[allow(unused_imports)] // each test binary uses a different subset
pub use netns::{serve_bin, tail_bin};

pub fn init() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A builder with every timer in milliseconds.
pub fn fast(url: impl Into<String>) -> ClientBuilder {
    millis(Client::builder(url))
}

/// The same, for an endpoint provider.
pub fn fast_with(
    provider: impl Fn() -> heartline::Endpoint + Send + Sync + 'static,
) -> ClientBuilder {
    millis(Client::with_endpoint(provider))
}

fn millis(b: ClientBuilder) -> ClientBuilder {
    init();
    b.heartbeat(heartbeat())
        .reconnect(reconnect())
        .delivery(delivery())
        .timeouts(timeouts())
}

/// The heartbeat of [`fast`]: long enough never to fire unless a test
/// shortens it.
pub fn heartbeat() -> Heartbeat {
    Heartbeat {
        interval: Duration::from_secs(5),
        server_timeout: Duration::from_secs(5),
        ..Heartbeat::default()
    }
}

/// The reconnect policy of [`fast`]: 10 ms between attempts.
pub fn reconnect() -> Reconnect {
    Reconnect {
        backoff: Backoff::Fixed(10 * MS),
        min_uptime: Duration::ZERO,
        ..Reconnect::default()
    }
}

/// The delivery of [`fast`]: each message handed out at once.
pub fn delivery() -> Delivery {
    Delivery {
        batch_window: Duration::ZERO,
        ..Delivery::default()
    }
}

/// The timeouts of [`fast`].
pub fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        handshake: Duration::from_secs(2),
        close: Duration::from_millis(300),
        ..Timeouts::default()
    }
}

/// Reads events until one satisfies `pred`; returns it with every event
/// read on the way. Panics (failing the test) at the deadline.
pub fn wait_event(
    events: &Events,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> (Event, Vec<Event>) {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if pred(&e) => return (e, seen),
            Ok(e) => seen.push(e),
            Err(err) => panic!("waiting for {what}: {err}; saw {seen:#?}"),
        }
    }
}

pub fn wait_open(events: &Events) -> Vec<Event> {
    wait_event(events, "open", |e| e.state == State::Open).1
}

/// Polls `cond` until it holds; for conditions no event announces.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(2 * MS);
    }
}

/// Receives batches until `n` messages arrived.
pub fn collect(client: &Client, n: usize) -> Vec<Message> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        match client.batches().recv_deadline(deadline) {
            Ok(b) => got.extend(b),
            Err(e) => panic!("got {} of {n} messages: {e}", got.len()),
        }
    }
    got
}

pub fn texts(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| m.text().unwrap_or("<binary>").to_owned())
        .collect()
}

pub fn server() -> TestServer {
    TestServer::start().expect("test server starts")
}

/// An error as text, for the tests that check its words.
pub fn why(e: &Option<ConnectionError>) -> String {
    e.as_ref().map(|e| e.to_string()).unwrap_or_default()
}

/// A port on 127.0.0.1 that refuses connections for as long as the
/// returned socket lives: bound but not listening, so no other test can
/// take it meanwhile (a port bound and let go can be, under load).
pub fn refusing_port() -> (socket2::Socket, u16) {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bound");
    let port = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a port")
        .port();
    (s, port)
}

/// Builds the client with one attempt allowed and returns its final
/// `Closed` event.
pub fn one_attempt(b: ClientBuilder) -> heartline::Event {
    let client = b
        .reconnect(Reconnect {
            max_attempts: 1,
            ..reconnect()
        })
        .build()
        .expect("client builds");
    let (ev, _) = wait_event(&client.events(), "closed", |e| e.state.is_closed());
    ev
}

/// A raw TCP peer that reads one request and answers `bytes` (not a
/// WebSocket server: what the test server cannot be made to say).
pub fn answer_once(bytes: &'static [u8]) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(bytes);
        }
    });
    (addr, peer)
}

/// A WebSocket server (tungstenite's) that answers the upgrade with these
/// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` values, tells
/// what the client offered, pushes "hi" and waits for the client to go.
pub fn answering(
    protocol: Option<&'static str>,
    extensions: Option<&'static str>,
) -> (String, crossbeam_channel::Receiver<Option<String>>) {
    use tungstenite::handshake::server::{Request, Response};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (offered_tx, offered) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(3) {
            let Ok(stream) = stream else { return };
            let tx = offered_tx.clone();
            // The callback's signature is tungstenite's; its error is large.
            #[allow(clippy::result_large_err)]
            let answer = |req: &Request, mut resp: Response| {
                let offer = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = tx.send(offer);
                if let Some(p) = protocol {
                    resp.headers_mut()
                        .insert("sec-websocket-protocol", p.parse().unwrap());
                }
                if let Some(e) = extensions {
                    resp.headers_mut()
                        .insert("sec-websocket-extensions", e.parse().unwrap());
                }
                Ok(resp)
            };
            let Ok(mut ws) = tungstenite::accept_hdr(stream, answer) else {
                continue;
            };
            let _ = ws.send(tungstenite::Message::text("hi"));
            while ws.read().is_ok() {}
        }
    });
    (url, offered)
}

/// The system allocator, counting the bytes live on the heap and the most
/// that were ([`LIVE`], [`PEAK`]). A test binary that measures the heap
/// installs it (`#[global_allocator] static HEAP: Counting = Counting;`)
/// and runs no other test beside the measurement.
pub struct Counting;

pub static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
pub static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn grew(size: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let now = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only
// the counts are added.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        let q = unsafe { std::alloc::System.realloc(p, layout, size) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
            grew(size);
        }
        q
    }
}
