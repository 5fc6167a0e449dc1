//! The main job, on the embedded defaults, against the built-in server.
//!
//! Starts the loopback test server in this process with its sequenced feed
//! (it keeps what it published and redelivers every message the client has
//! not acknowledged, as the delivery guide's server rules ask). It publishes a burst
//! of one to three notices every 300 ms, drops every connection at 30 % of
//! the run and makes the link half-open (TCP up, server silent) at 60 %, and
//! prints each batch and each state change. Then it checks the promise:
//! every notice from 1 to N arrived exactly once, in order, or it names the
//! ones that did not (and exits 1). Then it restarts the application: a
//! new client on the same `state_dir`, after the server has forgotten
//! every ack (as if they died with the power), must resume from its cursor,
//! drop every notice it had finished, and deliver only the new ones. Ends
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

use heartline::testkit::{FeedConfig, TestServer};
use heartline::{Client, Heartbeat, Persistence, State, Update};
use serde_json::json;

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
    let mut server = TestServer::start()?;
    // Messages {"title":…,"id":"m-N","seq":N}; the client acks with
    // {"type":"ack","ack":"m-N"}; unacked ones go to every new connection.
    server.enable_feed(FeedConfig::default())?;
    println!("{} test server on {}", stamp(), server.url());

    // What survives a restart or a power cut: the cursor, the ids of the
    // notices the application finished, frames not yet sent.
    let state = std::env::temp_dir().join(format!("heartline-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let builder = || {
        Client::builder(server.url())
            .protocol(FeedConfig::default().client_rules())
            .heartbeat(Heartbeat {
                interval: Duration::from_secs(2),
                server_timeout: Duration::from_secs(1),
                ..Heartbeat::default()
            })
            .persistence(Persistence::in_dir(&state))
            .hello(|ctx| {
                vec![
                    json!({"type": "hello", "device": "kiosk-7", "reconnects": ctx.reconnects,
                        "resume_after": ctx.cursor.as_ref().map(|c| c.to_json())})
                    .into(),
                ]
            })
    };
    let client = builder().build()?;

    // One receiver, one thread: state changes and batches in the order
    // they happened on the connection.
    let updates = client.updates();
    let show = |ev: heartline::Event| {
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
    };

    // This loop plays the server (notices every 300 ms, the faults) and the
    // application (printing batches) in turn.
    let run_for = Duration::from_secs(seconds);
    let end = start + run_for;
    let drop_at = start + run_for.mul_f64(0.3);
    let silence_at = start + run_for.mul_f64(0.6);
    let big_at = start + run_for.mul_f64(0.45);
    let mut published = 0u64;
    let mut got: Vec<u64> = Vec::new();
    let mut dropped = false;
    let mut silenced = false;
    let mut big_sent = false;
    let mut next_push = Instant::now();
    let receive = |until: Instant, got: &mut Vec<u64>| {
        while let Ok(update) = updates.recv_deadline(until) {
            let batch = match update {
                Update::Event(ev) => {
                    show(ev);
                    continue;
                }
                Update::Batch(batch) => batch,
            };
            let seqs: Vec<u64> = batch
                .iter()
                .filter_map(|m| m.json().and_then(|v| v["seq"].as_u64()))
                .collect();
            let shown: Vec<String> = seqs.iter().map(u64::to_string).collect();
            println!(
                "{} batch of {}: notices {}",
                stamp(),
                batch.len(),
                shown.join(" ")
            );
            got.extend(seqs);
        }
    };
    while Instant::now() < end {
        let now = Instant::now();
        if !dropped && now >= drop_at {
            dropped = true;
            println!("{} server: dropping every connection", stamp());
            server.drop_all();
        }
        if !big_sent && now >= big_at {
            big_sent = true;
            // Bad input: over the 1 MiB max_frame_size. Dropped as it
            // arrives; the connection and the notices behind it carry on.
            let n = server.push(heartline::Frame::Binary(vec![0; 2 << 20]));
            println!(
                "{} server: a 2 MiB message (over max_frame_size) to {n} connection(s)",
                stamp()
            );
        }
        if !silenced && now >= silence_at {
            silenced = true;
            println!("{} server: going silent with TCP open (half-open)", stamp());
            server.silence_all();
        }
        if now >= next_push {
            // Bursts of 1 to 3 notices: a burst lands in one batch.
            for _ in 0..published % 3 + 1 {
                published = server.publish(json!({ "title": format!("notice {}", published + 1) }));
            }
            next_push += Duration::from_millis(300);
        }
        receive(next_push.min(end), &mut got);
    }
    // The server stops publishing; give what it still redelivers a moment
    // to arrive, then check.
    let grace = Instant::now() + Duration::from_secs(5);
    while !got.contains(&published) && Instant::now() < grace {
        receive(
            grace.min(Instant::now() + Duration::from_millis(200)),
            &mut got,
        );
    }
    let stats = client.stats();
    client.close();
    // The last state changes (up to Closed).
    for update in updates.clone() {
        if let Update::Event(ev) = update {
            show(ev);
        }
    }
    println!(
        "{} done: {} connects, {} heartbeats, rtt {:?}, {} messages in, {} redelivered copies dropped, {} dropped, {} too large dropped",
        stamp(),
        stats.connects,
        stats.heartbeats,
        stats.rtt,
        stats.frames_in,
        stats.duplicates,
        stats.dropped,
        stats.too_large
    );
    let verdict = check(published, &got);
    println!("{} {verdict}", stamp());
    if verdict.starts_with("BROKEN") {
        return Err("the delivery guarantee did not hold".into());
    }

    // The application restarts. The server lost every ack (as acks lost
    // with the power would be) and redelivers everything; the state file
    // says what was finished.
    println!(
        "{} app: restarting on the same state_dir; the server forgets every ack and publishes 3 more",
        stamp()
    );
    server.forget_acks();
    let before = published;
    for _ in 0..3 {
        published = server.publish(json!({ "title": format!("notice {}", published + 1) }));
    }
    let restarted = builder().build()?;
    let mut again: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !again.contains(&published) && Instant::now() < deadline {
        if let Ok(batch) = restarted.recv_timeout(Duration::from_millis(200)) {
            again.extend(
                batch
                    .iter()
                    .filter_map(|m| m.json().and_then(|v| v["seq"].as_u64())),
            );
        }
    }
    let dups = restarted.stats().duplicates;
    restarted.close();
    let _ = std::fs::remove_dir_all(&state);
    let want: Vec<u64> = (before + 1..=published).collect();
    println!(
        "{} after the restart: notices {again:?} delivered, {dups} finished before dropped as duplicates",
        stamp()
    );
    if again != want || dups < before {
        println!(
            "{} BROKEN: after the restart expected exactly {want:?} and {before} duplicates",
            stamp()
        );
        return Err("the restart guarantee did not hold".into());
    }
    println!(
        "{} guarantee held across the restart: nothing finished came back, nothing new was lost",
        stamp()
    );
    Ok(())
}

/// "every notice from 1 to N arrived exactly once, in order", or what did
/// not.
fn check(published: u64, got: &[u64]) -> String {
    let mut count = vec![0u32; published as usize + 1];
    let mut strays = Vec::new();
    for &s in got {
        match count.get_mut(s as usize) {
            Some(c) if s > 0 => *c += 1,
            _ => strays.push(s),
        }
    }
    let missing: Vec<u64> = (1..=published)
        .filter(|&s| count[s as usize] == 0)
        .collect();
    let twice: Vec<u64> = (1..=published).filter(|&s| count[s as usize] > 1).collect();
    let in_order = got.windows(2).all(|w| w[0] < w[1]);
    if missing.is_empty() && twice.is_empty() && strays.is_empty() && in_order {
        return format!(
            "guarantee held: every notice from 1 to {published} arrived exactly once, in order"
        );
    }
    format!(
        "BROKEN: of {published} notices, missing {missing:?}, delivered twice {twice:?}, \
         unexpected {strays:?}, in order: {in_order}"
    )
}
