//! A smoke run for a cross-compiled build (under qemu-user in CI): starts the
//! test server on 127.0.0.1, connects, receives a batch, survives one dropped
//! connection, and closes cleanly. Exits 0 on success, 1 with the reason
//! otherwise.
//!
//! ```text
//! cargo run --release --features vendored --target aarch64-unknown-linux-gnu --example smoke
//! ```

use std::time::{Duration, Instant};

use heartline::testkit::TestServer;
use heartline::{Backoff, Client, Delivery, Reconnect, State};

fn main() {
    let start = Instant::now();
    match run() {
        Ok(()) => println!(
            "smoke: ok in {:?} ({})",
            start.elapsed(),
            std::env::consts::ARCH
        ),
        Err(e) => {
            eprintln!("smoke: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<(), String> {
    // Generous limits: an emulated CPU is slow.
    let wait = Duration::from_secs(30);
    let server = TestServer::start().map_err(|e| format!("test server: {e}"))?;
    let client = Client::builder(server.url())
        .reconnect(Reconnect {
            backoff: Backoff::Fixed(Duration::from_millis(50)),
            min_uptime: Duration::ZERO,
            ..Reconnect::default()
        })
        .delivery(Delivery {
            batch_window: Duration::from_millis(20),
            ..Delivery::default()
        })
        .build()
        .map_err(|e| e.to_string())?;
    let events = client.events();
    let open = |what: &str| -> Result<(), String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(ev) if ev.state == State::Open => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("no open state {what}: {e}")),
            }
        }
    };
    open("at start")?;
    if !server.wait_connections(1, wait) {
        return Err("the server saw no connection".into());
    }
    server.push("one");
    server.push("two");
    let mut got = Vec::new();
    while got.len() < 2 {
        let batch = client
            .recv_timeout(wait)
            .map_err(|e| format!("first batch: {e}"))?;
        got.extend(batch.iter().filter_map(|m| m.text().map(str::to_owned)));
    }
    if got != ["one", "two"] {
        return Err(format!("wrong messages: {got:?}"));
    }
    server.drop_all();
    open("after the dropped connection")?;
    if !server.wait_connections(2, wait) {
        return Err("no second connection".into());
    }
    server.push("three");
    let batch = client
        .recv_timeout(wait)
        .map_err(|e| format!("batch after reconnect: {e}"))?;
    if batch.messages()[0].text() != Some("three") {
        return Err(format!("wrong message after reconnect: {batch:?}"));
    }
    batch.done();
    client.close();
    if client.state() != State::Closed(heartline::CloseReason::Requested) {
        return Err(format!("not closed: {:?}", client.state()));
    }
    if client.batches().next().is_some() {
        return Err("receiver did not end".into());
    }
    Ok(())
}
