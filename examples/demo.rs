//! The main job, on the embedded defaults, against the built-in server.
//!
//! Starts the loopback test server in this process, pushes a burst of one to
//! three messages every 300 ms, drops every connection at 6 s and makes the link half-open (TCP up,
//! server silent) at 12 s, and prints each batch and each state change. Ends
//! by itself after 20 s.
//!
//! ```text
//! cargo run --example demo [-- --seconds N]
//! ```
//!
//! Timers differ from the library defaults only where the schedule needs
//! it: a 2 s heartbeat with a 1 s server timeout, so the half-open link is
//! caught within the run (defaults: 25 s and 20 s).

use std::time::{Duration, Instant};

use heartline::testkit::TestServer;
use heartline::{Client, State};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("heartline=warn"))
        .init();
    let seconds = match parse_seconds() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: {e}\nusage: cargo run --example demo [-- --seconds N]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(seconds) {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn parse_seconds() -> Result<u64, String> {
    let mut args = std::env::args().skip(1);
    let mut seconds = 20;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                let v = args.next().ok_or("--seconds needs a value")?;
                seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: `{v}` is not a whole number"))?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(seconds)
}

fn run(seconds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let stamp = move || format!("[{:>6.2}s]", start.elapsed().as_secs_f64());
    let server = TestServer::start()?;
    println!("{} test server on {}", stamp(), server.url());

    let client = Client::builder(server.url())
        .heartbeat_interval(Duration::from_secs(2))
        .server_timeout(Duration::from_secs(1))
        .hello(|ctx| {
            vec![format!(
                r#"{{"type":"hello","device":"kiosk-7","reconnects":{}}}"#,
                ctx.reconnects
            )
            .into()]
        })
        .build()?;

    let events = client.events();
    // Start the show once the first connection is up (messages pushed to no
    // connection are lost: this server keeps no backlog).
    if !server.wait_connections(1, Duration::from_secs(5)) {
        return Err("the client did not connect within 5 s".into());
    }
    let printer = std::thread::spawn(move || {
        for ev in events {
            let extra = match &ev.state {
                State::Connecting { attempt } => format!(" (attempt {attempt})"),
                State::Reconnecting { attempt, delay } => {
                    format!(" (attempt {attempt} in {delay:?})")
                }
                State::Closed(reason) => format!(" ({reason})"),
                _ => String::new(),
            };
            let why = ev.error.map(|e| format!(": {e}")).unwrap_or_default();
            println!("{} state: {}{extra}{why}", stamp(), ev.state.name());
        }
    });

    // This loop plays the server (a message every 300 ms, the faults) and
    // the application (printing batches) in turn.
    let end = start + Duration::from_secs(seconds);
    let mut seq = 0u64;
    let mut dropped = false;
    let mut silenced = false;
    let mut next_push = Instant::now();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !dropped && now >= start + Duration::from_secs(6) {
            dropped = true;
            println!("{} server: dropping every connection", stamp());
            server.drop_all();
        }
        if !silenced && now >= start + Duration::from_secs(12) {
            silenced = true;
            println!("{} server: going silent with TCP open (half-open)", stamp());
            server.silence_all();
        }
        if now >= next_push {
            // Bursts of 1 to 3 messages: a burst lands in one batch.
            let burst = seq % 3 + 1;
            for _ in 0..burst {
                seq += 1;
                server.push(format!(r#"{{"seq":{seq},"title":"notice {seq}"}}"#));
            }
            next_push += Duration::from_millis(300);
        }
        // Hand out whatever batches are ready until the next server action.
        let until = next_push.min(end);
        while let Ok(batch) = client.batches().recv_deadline(until) {
            let items: Vec<&str> = batch.iter().filter_map(|m| m.text()).collect();
            println!("{} batch of {}: {}", stamp(), batch.len(), items.join(" "));
        }
    }
    let stats = client.stats();
    client.close();
    for batch in client.batches() {
        println!("{} batch of {} (after close)", stamp(), batch.len());
    }
    let _ = printer.join();
    println!(
        "{} done: {} connects, {} heartbeats, rtt {:?}, {} messages in, {} dropped",
        stamp(),
        stats.connects,
        stats.heartbeats,
        stats.rtt,
        stats.frames_in,
        stats.dropped
    );
    Ok(())
}
