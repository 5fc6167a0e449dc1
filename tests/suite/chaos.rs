//! No loss, no duplicate, under faults. The server pushes 20,000 sequenced
//! messages at a steady rate while a seeded random schedule drops
//! connections, makes links half-open, refuses the WebSocket long enough to
//! force polling, and breaks the poll endpoint. The application must see
//! every sequence number exactly once.
//!
//! `HEARTLINE_CHAOS_SEED=N cargo test --test chaos -- --nocapture` replays
//! a schedule.
use crate::common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartline::testkit::{FeedConfig, PollFault, TestServer};
use heartline::{Backoff, Delivery, Heartbeat, JsonRules, Method, Polling, Reconnect, Via};
use serde_json::json;

/// Messages per publishing tick, and ticks per second: 1,000 messages/s.
const PER_TICK: usize = 10;
const TICK: Duration = Duration::from_millis(10);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Default, Debug)]
struct Faults {
    drops: u32,
    half_open: u32,
    refusals: u32,
    poll_breaks: u32,
}

#[test]
fn every_message_exactly_once_through_drops_half_open_links_refusals_and_poll_faults() {
    chaos(20_000, None, "/seq");
}

/// The same schedule with cursors that tie, as timestamps do: three
/// messages share each cursor, and the poll endpoint answers `since`
/// inclusively. Dedupe must go by id, never by cursor.
#[test]
fn every_message_exactly_once_when_cursors_tie() {
    chaos(8_000, Some(("ts".to_owned(), 3)), "/ts");
}

fn chaos(messages: usize, ties: Option<(String, u64)>, cursor: &str) {
    init();
    let seed = std::env::var("HEARTLINE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let mut server = TestServer::start().unwrap();
    server
        .enable_feed(FeedConfig {
            poll_limit: 2_000,
            ties,
            ..FeedConfig::default()
        })
        .unwrap();
    let server = Arc::new(server);
    let rules = JsonRules::new()
        .id("/id")
        .cursor(cursor)
        .ack(json!({"type": "ack"}), [("/id", "ack")])
        .poll(server.poll_url().unwrap(), Method::Get, None)
        .poll_since("since");
    let client = fast(server.url())
        .protocol(rules)
        .heartbeat(Heartbeat {
            interval: 100 * MS,
            server_timeout: 100 * MS,
            ..common::heartbeat()
        })
        .reconnect(Reconnect {
            backoff: Backoff::Exponential {
                initial: 10 * MS,
                max: 100 * MS,
            },
            min_uptime: 100 * MS,
            ..common::reconnect()
        })
        .polling(Polling {
            after: 3,
            every: 50 * MS,
            timeout: Duration::from_secs(1),
            ..Polling::default()
        })
        .delivery(Delivery {
            batch_window: 20 * MS,
            ..common::delivery()
        })
        .build()
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let server = server.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            for tick in 0..messages / PER_TICK {
                let due = start + TICK * tick as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait); // pacing the server, not waiting for the client
                }
                for _ in 0..PER_TICK {
                    server.publish(json!({"body": "x"}));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let chaos = {
        let server = server.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut f = Faults::default();
            let pause = |ms: u64| {
                // Ends early when publishing is over.
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until && !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            while !done.load(Ordering::SeqCst) {
                pause(rng.between(300, 1200));
                match rng.between(0, 3) {
                    0 => {
                        server.drop_all();
                        f.drops += 1;
                    }
                    1 => {
                        server.silence_all();
                        f.half_open += 1;
                    }
                    2 => {
                        server.refuse(Some(503));
                        server.drop_all();
                        f.refusals += 1;
                        if rng.between(0, 1) == 0 {
                            // Break the poll endpoint during the outage too.
                            pause(rng.between(200, 600));
                            server.poll_fault(if rng.between(0, 1) == 0 {
                                PollFault::Status(500)
                            } else {
                                PollFault::Garbage
                            });
                            f.poll_breaks += 1;
                            pause(rng.between(300, 800));
                            server.poll_fault(PollFault::None);
                        }
                        pause(rng.between(800, 2000));
                        server.refuse(None);
                    }
                    _ => {
                        server.poll_fault(PollFault::Status(502));
                        f.poll_breaks += 1;
                        pause(rng.between(500, 1500));
                        server.poll_fault(PollFault::None);
                    }
                }
            }
            server.refuse(None);
            server.poll_fault(PollFault::None);
            f
        })
    };

    let mut seen = vec![0u32; messages + 1];
    let mut unique = 0;
    let mut by_poll = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unique < messages {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(batch) = client.recv_timeout(left) else {
            break;
        };
        for m in batch {
            let seq = m.json().and_then(|v| v["seq"].as_u64()).unwrap_or(0) as usize;
            assert!(
                (1..=messages).contains(&seq),
                "unexpected message {:?}",
                m.text()
            );
            if seen[seq] == 0 {
                unique += 1;
            }
            seen[seq] += 1;
            if m.via() == Via::Poll {
                by_poll += 1;
            }
        }
    }
    publisher.join().unwrap();
    let faults = chaos.join().unwrap();
    let stats = client.stats();
    client.close();

    let missing: Vec<usize> = (1..=messages).filter(|&s| seen[s] == 0).collect();
    let doubled: Vec<usize> = (1..=messages).filter(|&s| seen[s] > 1).collect();
    println!(
        "chaos seed {seed:#x}: {faults:?}; {} connects, {} failed attempts, {} polls ({} failed), \
         {by_poll} messages by poll, {} duplicates suppressed, {} acks",
        stats.connects,
        stats.failed_attempts,
        stats.polls,
        stats.poll_failures,
        stats.duplicates,
        stats.acks
    );
    assert!(
        missing.is_empty(),
        "{} missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        doubled.is_empty(),
        "{} delivered twice, first {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(10)]
    );
    assert!(
        faults.refusals + faults.drops + faults.half_open > 0,
        "the schedule injected faults"
    );
}
