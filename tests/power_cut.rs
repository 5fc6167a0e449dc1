//! Power cuts: a child process consumes a sequenced feed with `state_dir`,
//! records every message it finished in its own file and reports each one
//! to the server with a reliable frame; it is killed with SIGKILL at seeded
//! random moments and restarted. Every message must be recorded at least
//! once, a duplicate only within the documented window before a kill (the
//! last state write interval, plus the batch in hand), and every report
//! must reach the server.
//!
//! `HEARTLINE_POWER_CUT_SEED=N cargo test --test power_cut -- --nocapture`
//! replays one schedule.

mod common;
use common::*;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heartline::testkit::{FeedConfig, TestServer};
use heartline::{Client, Delivery, JsonRules, Persistence, Reconnect};
use serde_json::json;

const CHILD: &str = "HEARTLINE_POWER_CUT_CHILD";
const MESSAGES: u64 = 1500;
const KILLS: usize = 4;
const SYNC: Duration = Duration::from_millis(50);
/// How long the child works on each message.
const WORK: Duration = Duration::from_millis(2);

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Its own harness (`harness = false`): the same binary is the test and,
/// with the environment variable set, the child it kills. `cargo test`'s
/// arguments are taken as a libtest harness would: `--list` lists the
/// test, a name filter that does not match skips it.
fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let name = "sigkill_at_random_moments_loses_nothing_and_duplicates_only_within_the_window";
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        println!("power_cut: filtered out");
        return;
    }
    sigkill_at_random_moments_loses_nothing_and_duplicates_only_within_the_window();
    println!("test {name} ... ok");
}

/// The child's work: the environment variable names the server, the
/// state directory and the record file.
fn child(spec: &str) {
    let mut parts = spec.split('|');
    let (url, dir, record) = match (parts.next(), parts.next(), parts.next()) {
        (Some(u), Some(d), Some(r)) => (u.to_owned(), d.to_owned(), r.to_owned()),
        _ => panic!("bad {CHILD}: {spec}"),
    };
    let client = Client::builder(url)
        .protocol(
            JsonRules::new()
                .id("/id")
                .cursor("/seq")
                .ack(json!({"type": "ack"}), [("/id", "ack")])
                .acked_by("/type", json!("ack"), "/id"),
        )
        .persistence(Persistence {
            sync_every: SYNC,
            ..Persistence::in_dir(dir)
        })
        .reconnect(Reconnect {
            backoff: heartline::Backoff::Fixed(Duration::from_millis(10)),
            ..Reconnect::default()
        })
        .delivery(Delivery {
            batch_max: 8,
            batch_window: Duration::ZERO,
            ..Delivery::default()
        })
        .build()
        .expect("child client");
    let mut rec = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record)
        .expect("record file");
    // Note each state write as it happens, on a thread of its own: the
    // parent bounds the duplicate window by the writes, not by a guess at
    // how long one takes, and a child starved of CPU or of messages (the
    // server gone) still notes them.
    let watcher = client.clone();
    let mut wrec = std::fs::OpenOptions::new()
        .append(true)
        .open(record)
        .expect("record file");
    std::thread::spawn(move || {
        let mut writes = 0;
        loop {
            let w = watcher.stats().state_writes;
            if w > writes {
                writes = w;
                // One write per line, appended: whole lines between the
                // two threads' writes.
                wrec.write_all(format!("w {}\n", now_ms()).as_bytes())
                    .expect("record");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    for batch in client.batches() {
        for m in &batch {
            let seq = m.json().and_then(|v| v["seq"].as_u64()).expect("seq");
            std::thread::sleep(WORK); // the application's work
            let id = format!("r-{seq}");
            client
                .send_reliable(id.clone(), json!({"type": "report", "id": id}))
                .expect("report queued");
            // One write per line: in the page cache at once, so it survives
            // SIGKILL (the process dies, not the machine).
            rec.write_all(format!("{seq} {}\n", now_ms()).as_bytes())
                .expect("record");
        }
        // Dropping the batch finishes it: recorded, then acked.
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The child, killed if the test fails first: a child left running would
/// hold the test's stderr open and the whole `cargo test` with it.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(server: &TestServer, dir: &Path, record: &Path) -> Killed {
    Killed(
        Command::new(std::env::current_exe().expect("test binary"))
            .env(
                CHILD,
                format!("{}|{}|{}", server.url(), dir.display(), record.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child starts"),
    )
}

/// When the child saw each state write completed.
fn writes_seen(path: &Path) -> Vec<u128> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("w ")?.parse().ok())
        .collect()
}

/// `(seq, ms)` lines; a torn last line is left out (not finished).
fn records(path: &Path) -> Vec<(u64, u128)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (s, t) = l.split_once(' ')?;
            Some((s.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

fn sigkill_at_random_moments_loses_nothing_and_duplicates_only_within_the_window() {
    init();
    let seed = std::env::var("HEARTLINE_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    eprintln!("power cut seed {seed} (HEARTLINE_POWER_CUT_SEED)");
    let mut rng = Rng(seed | 1);
    let base: PathBuf =
        std::env::temp_dir().join(format!("heartline-power-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let (dir, record) = (base.join("state"), base.join("record"));

    let mut server = server();
    server.enable_feed(FeedConfig::default()).unwrap();
    server.ack_frames(Some("/id"));
    for n in 1..=MESSAGES {
        server.publish(json!({"n": n}));
    }

    // Each run: wait until the child is working, let it work a random while,
    // then pull the plug.
    let all_recorded = || {
        let seen: HashSet<u64> = records(&record).iter().map(|r| r.0).collect();
        (1..=MESSAGES).all(|s| seen.contains(&s))
    };
    let mut kills = Vec::new();
    for run in 0..KILLS {
        // A fast child can finish the feed before the last cut: a child
        // started then would have nothing to work on.
        if all_recorded() {
            eprintln!("run {run}: the feed is done; no more cuts");
            break;
        }
        let before = records(&record).len();
        let started = now_ms();
        let mut child = spawn(&server, &dir, &record);
        wait_until("the child working", || {
            records(&record).len() > before || all_recorded()
        });
        let work = 300 + rng.below(500);
        let until = Instant::now() + Duration::from_millis(work);
        // Every other run loses the server half-way: the child keeps
        // working through what it has queued, and its acks and reports
        // cannot go out until the next run.
        let offline = (run % 2 == 1).then(|| Instant::now() + Duration::from_millis(work / 3));
        while Instant::now() < until {
            if offline.is_some_and(|t| Instant::now() >= t) && server.log().open > 0 {
                server.refuse(Some(503));
                server.drop_all();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The duplicate window below is bounded by the state writes of the
        // run: pull the plug only once it has seen two (a slow disk under
        // load can take longer than the random work time).
        // Offline, a child that has finished its queue makes no more: the
        // server comes back after ten state-write intervals.
        let since = Instant::now();
        wait_until("two state writes in this run", || {
            if offline.is_some() && since.elapsed() > 10 * SYNC {
                server.refuse(None);
            }
            writes_seen(&record)
                .iter()
                .filter(|w| **w > started)
                .count()
                >= 2
        });
        let at = now_ms();
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reaped");
        server.refuse(None);
        let lines = records(&record).len();
        eprintln!(
            "run {run}: killed after {work} ms{}, {} lines recorded",
            if offline.is_some() {
                " (offline from a third in)"
            } else {
                ""
            },
            lines - before
        );
        kills.push((started, at, lines));
    }

    // The last run finishes the feed and every report.
    let mut child = spawn(&server, &dir, &record);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_recorded() {
        assert!(Instant::now() < deadline, "not every message was recorded");
        std::thread::sleep(Duration::from_millis(10));
    }
    let reported = || -> HashSet<String> {
        server
            .log()
            .frames
            .iter()
            .filter_map(|f| {
                f.text()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            })
            .filter(|v| v["type"] == "report")
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect()
    };
    let every_report = server.wait_for(Duration::from_secs(30), |_| true) && {
        let want: HashSet<String> = (1..=MESSAGES).map(|s| format!("r-{s}")).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = reported();
            if want.is_subset(&got) {
                break true;
            }
            if Instant::now() > deadline {
                let missing: Vec<_> = want.difference(&got).take(10).collect();
                panic!("reports never reached the server: {missing:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    assert!(every_report);

    // Duplicates: only of messages finished after the snapshot of the last
    // write completed before the kill that ended their run. That snapshot
    // was taken after the write before it completed; so a message recorded
    // before the second-to-last write the child saw (less the batch it was
    // in and the child's lag in noticing) was on disk, and must not come
    // back.
    let margin = 100 + WORK.as_millis() * 8;
    let seen = writes_seen(&record);
    let recs = records(&record);
    let mut first: BTreeMap<u64, (usize, u128)> = BTreeMap::new();
    let mut dups = 0;
    for (i, (seq, t)) in recs.iter().enumerate() {
        if let Some((line, t1)) = first.get(seq).copied() {
            dups += 1;
            let run = kills.iter().position(|(_, _, end)| line < *end);
            let Some(run) = run else {
                panic!(
                    "message {seq} recorded twice (lines {line} and {i}) with no power cut between"
                );
            };
            let (started, killed, _) = kills[run];
            let mut w: Vec<u128> = seen
                .iter()
                .copied()
                .filter(|w| *w > started && *w <= killed)
                .collect();
            w.sort_unstable();
            let durable_before = match w.len() {
                0 | 1 => started,
                n => w[n - 2].saturating_sub(margin),
            };
            assert!(
                t1 >= durable_before,
                "message {seq} was finished {} ms before the kill, before a state write \
                 that completed ({} ms before the kill), and still redelivered; second record at {t}",
                killed.saturating_sub(t1),
                killed.saturating_sub(durable_before)
            );
        } else {
            first.insert(*seq, (i, *t));
        }
    }
    eprintln!(
        "{} records, {dups} duplicates over {} power cuts",
        recs.len(),
        kills.len()
    );
    // The window check above means something only if the state was
    // written during the runs (every 50 ms while the child works).
    assert!(!kills.is_empty(), "at least one power cut");
    let per_run: Vec<usize> = kills
        .iter()
        .map(|(started, killed, _)| seen.iter().filter(|w| *w > started && *w <= killed).count())
        .collect();
    assert!(
        per_run.iter().all(|&n| n >= 2),
        "every run saw two state writes before its power cut: {per_run:?}, kills {kills:?}, writes {seen:?}"
    );
    let _ = std::fs::remove_dir_all(&base);
}
