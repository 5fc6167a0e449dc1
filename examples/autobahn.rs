//! The Autobahn test suite's client driver: runs every case of a fuzzing
//! server (`wstest -m fuzzingserver`) with heartline, echoing every message
//! back as it came (text as text, binary as binary), one connection per
//! case and no reconnect, then asks the server to write its reports.
//!
//! ```text
//! cargo run --release --example autobahn -- [ws://127.0.0.1:9001] [--agent NAME] [--cases N] [--plain]
//! ```
//!
//! `--plain` runs the same echo on tungstenite alone (the library heartline
//! builds on), for the side-by-side table in the conformance guide.
//!
//! `.ci/autobahn` starts the server, runs this, and fails on any case whose
//! behaviour (or close behaviour) the suite marks FAILED. Limits are raised
//! to 64 MiB: the 9.* cases send messages up to 16 MiB.

use std::time::Duration;

use heartline::{Backoff, Client, Delivery, Limits, Reconnect, State, Timeouts, Update};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut base = "ws://127.0.0.1:9001".to_owned();
    let mut agent = "heartline".to_owned();
    let mut only: Option<u32> = None;
    let mut plain = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--plain" => plain = true,
            "--agent" => agent = args.next().unwrap_or(agent),
            "--cases" => only = args.next().and_then(|n| n.parse().ok()),
            _ => base = a,
        }
    }
    let count = case_count(&base).unwrap_or_else(|e| {
        eprintln!("autobahn: cannot read the case count from {base}: {e}");
        std::process::exit(1);
    });
    let count = only.map_or(count, |n| n.min(count));
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        let run = if plain { echo_plain(&url) } else { echo(&url) };
        if let Err(e) = run {
            eprintln!("autobahn: case {case}: {e}");
        }
        if case % 50 == 0 {
            eprintln!("autobahn: {case} of {count} cases run");
        }
    }
    if let Err(e) = echo(&format!("{base}/updateReports?agent={agent}")) {
        eprintln!("autobahn: updating the reports: {e}");
        std::process::exit(1);
    }
    eprintln!("autobahn: {count} cases run, reports written");
}

/// A client for one connection: limits raised to 64 MiB, batches at once,
/// and a reconnect so far away that the driver closes first.
fn client(url: &str) -> Result<Client, String> {
    Client::builder(url)
        .limits(Limits {
            max_message_size: 64 << 20,
            max_frame_size: 64 << 20,
            inbound_bytes: 64 << 20,
            outbound_bytes: 64 << 20,
            ..Limits::default()
        })
        .delivery(Delivery {
            batch_window: Duration::ZERO,
            ..Delivery::default()
        })
        // With the `compression` feature the driver offers
        // permessage-deflate (the 12.* and 13.* cases).
        .compression(cfg!(feature = "compression"))
        .reconnect(Reconnect {
            backoff: Backoff::Fixed(Duration::from_secs(3600)),
            min_uptime: Duration::ZERO,
            max_attempts: 1,
            ..Reconnect::default()
        })
        .timeouts(Timeouts {
            send: Duration::from_secs(60),
            close: Duration::from_secs(2),
            ..Timeouts::default()
        })
        .build()
        .map_err(|e| e.to_string())
}

/// Echoes every message of one connection until it ends.
fn echo(url: &str) -> Result<(), String> {
    let client = client(url)?;
    let mut result = Ok(());
    for update in client.updates() {
        match update {
            Update::Batch(mut batch) => {
                // The payloads are taken without a copy (the 9.* cases
                // send up to 16 MiB), and the batch is held until their
                // echoes are queued: a connection failing on a bad frame
                // behind them waits for that (Autobahn's cases 3.*, 4.*,
                // 5.15 check the echo is written before the close).
                for f in batch.take_frames() {
                    if let Err(e) = client.send(f) {
                        result = Err(format!("echo not sent: {e}"));
                    }
                }
                drop(batch);
            }
            Update::Event(e) => match e.state {
                State::Connecting { .. } | State::Open => {}
                _ => break,
            },
        }
    }
    client.close();
    result
}

/// The same echo on tungstenite alone: read, echo data messages, until the
/// connection ends (tungstenite answers pings and closes itself).
fn echo_plain(url: &str) -> Result<(), String> {
    use tungstenite::protocol::WebSocketConfig;
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut ws, _) = tungstenite::client::connect_with_config(url, Some(config), 3)
        .map_err(|e| e.to_string())?;
    loop {
        match ws.read() {
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).is_err() {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
}

/// The number of cases the server has.
fn case_count(base: &str) -> Result<u32, String> {
    let client = client(&format!("{base}/getCaseCount"))?;
    let mut count = None;
    for update in client.updates() {
        match update {
            Update::Batch(batch) => {
                for m in &batch {
                    count = m.text().and_then(|t| t.trim().parse().ok());
                }
            }
            Update::Event(e) => match e.state {
                State::Connecting { .. } | State::Open => {}
                _ => break,
            },
        }
    }
    client.close();
    count.ok_or_else(|| "no count received".to_owned())
}
