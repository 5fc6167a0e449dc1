//! Runs the built-in test server as a process, for trying `tail` and for
//! scripts (the footprint script uses it). Prints the URL on the first line,
//! pushes a message every `--every MS` if given, and stops after
//! `--for MS` (default: when stdin closes). `--echo` echoes every frame
//! back to its sender. `--listen IP:PORT` binds there instead of
//! `127.0.0.1:0`. `--feed` publishes to a sequenced feed instead
//! (`{"n":N,"id":"m-N","seq":N}`): a new connection first gets every message
//! not acknowledged (`{"type":"ack","ack":"m-N"}`), as a server that follows
//! the README's server rules does, and its HTTP poll endpoint's URL is
//! printed on the second line.
//!
//! ```text
//! cargo run --example serve -- --every 1000
//! ```

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use heartline::testkit::TestServer;

fn main() {
    let mut every = None;
    let mut for_ms = None;
    let mut echo = false;
    let mut feed = false;
    let mut listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |flag: &str| -> u64 {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => v,
                None => {
                    eprintln!("serve: {flag} needs a number of milliseconds");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--every" => every = Some(Duration::from_millis(num("--every"))),
            "--for" => for_ms = Some(Duration::from_millis(num("--for"))),
            "--echo" => echo = true,
            "--feed" => feed = true,
            "--listen" => match args.next().and_then(|v| v.parse().ok()) {
                Some(a) => listen = a,
                None => {
                    eprintln!("serve: --listen needs IP:PORT");
                    std::process::exit(2);
                }
            },
            other => {
                eprintln!(
                    "serve: unknown argument `{other}`\nusage: serve [--every MS] [--for MS] [--echo] [--feed] [--listen IP:PORT]"
                );
                std::process::exit(2);
            }
        }
    }
    let mut server = match TestServer::start_on(listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("serve: {e}");
            std::process::exit(1);
        }
    };
    server.echo(echo);
    if feed {
        if let Err(e) = server.enable_feed(heartline::testkit::FeedConfig::default()) {
            eprintln!("serve: {e}");
            std::process::exit(1);
        }
    }
    // A reader that stops reading (it took the first line and closed the
    // pipe) must not end the server: write errors are ignored.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", server.url());
    if let Some(poll) = server.poll_url() {
        // With --feed, the poll endpoint's URL on the second line.
        let _ = writeln!(out, "{poll}");
    }
    let _ = out.flush();
    drop(out);
    let start = Instant::now();
    let end = for_ms.map(|d| start + d);
    match (every, end) {
        (None, None) => {
            // Until stdin closes.
            for _ in std::io::stdin().lock().lines() {}
        }
        _ => {
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if end.is_some_and(|e| now >= e) {
                    break;
                }
                let next = every.map(|e| start + e * (n as u32 + 1));
                let until = match (next, end) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => break,
                };
                std::thread::sleep(until.saturating_duration_since(now));
                if next.is_some_and(|t| Instant::now() >= t) {
                    n += 1;
                    if feed {
                        server.publish(serde_json::json!({ "n": n }));
                    } else {
                        server.push(format!(r#"{{"n":{n}}}"#));
                    }
                }
            }
        }
    }
}
