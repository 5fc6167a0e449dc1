//! `state_dir`: what a restarted client remembers.
use crate::common;
use common::*;

use std::path::PathBuf;

use heartline::testkit::{FeedConfig, TestServer};
use heartline::{Delivery, Frame, HelloContext, JsonRules, Limits, Persistence, State};
use serde_json::json;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("heartline-restart-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn feed_server() -> TestServer {
    let mut s = server();
    s.enable_feed(FeedConfig::default()).unwrap();
    s
}

/// No ack rule: the server redelivers everything to a new connection, as it
/// would after acks lost in a power cut.
fn rules() -> JsonRules {
    JsonRules::new().id("/id").cursor("/seq")
}

/// The hello: resumes from the cursor when there is one.
fn hello(ctx: &HelloContext) -> Vec<Frame> {
    let mut h = json!({"type": "hello"});
    if let Some(c) = &ctx.cursor {
        h["since"] = c.to_json();
    }
    vec![Frame::from(h)]
}

#[test]
fn a_restarted_client_resumes_from_its_cursor_drops_what_it_finished_and_sends_what_was_unsent() {
    let dir = scratch("resume");
    let server = feed_server();
    for i in 1..=3 {
        server.publish(json!({"n": i}));
    }
    let first = fast(server.url())
        .protocol(rules())
        .hello(hello)
        .persistence(Persistence {
            sync_every: 5 * MS,
            ..Persistence::in_dir(&dir)
        })
        .build()
        .unwrap();
    let got = collect(&first, 3); // batches finished as they are dropped
    assert_eq!(got.len(), 3);
    drop(got);
    // Offline: a frame accepted now is not yet on any socket.
    server.refuse(Some(503));
    server.drop_all();
    let events = first.events();
    wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    first.send("unsent while offline").unwrap();
    first.close(); // the last write holds it
    drop(first);

    server.refuse(None);
    server.publish(json!({"n": 4}));
    let second = fast(server.url())
        .protocol(rules())
        .hello(hello)
        .persistence(Persistence::in_dir(&dir))
        .build()
        .unwrap();
    let got = collect(&second, 1);
    assert_eq!(got[0].id(), Some("m-4"), "m-1..m-3 were finished before");
    assert_eq!(second.stats().duplicates, 3);
    let log = server.log();
    let conn = log.upgrades.iter().rfind(|u| u.accepted).unwrap().conn;
    assert!(server.wait_for(WAIT, |l| l.texts_of(conn).len() >= 2));
    assert_eq!(
        server.log().texts_of(conn)[..2],
        [r#"{"since":3,"type":"hello"}"#, "unsent while offline"],
        "the hello resumes from the finished cursor; the unsent frame follows it"
    );
    second.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_state_file_is_a_fresh_start_not_a_refusal() {
    let dir = scratch("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("heartline.state"),
        b"heartln\n\x01\x00\x00\x00garbage",
    )
    .unwrap();
    let server = feed_server();
    server.publish(json!({"n": 1}));
    let client = fast(server.url())
        .protocol(rules())
        .hello(hello)
        .persistence(Persistence {
            sync_every: 5 * MS,
            ..Persistence::in_dir(&dir)
        })
        .build()
        .expect("a device must always boot");
    assert_eq!(collect(&client, 1)[0].id(), Some("m-1"));
    // The next write replaces the bad file with a good one.
    wait_until("the state written", || client.stats().state_writes >= 1);
    client.close();
    let again = fast(server.url())
        .protocol(rules())
        .hello(hello)
        .persistence(Persistence::in_dir(&dir))
        .build()
        .unwrap();
    server.publish(json!({"n": 2}));
    assert_eq!(collect(&again, 1)[0].id(), Some("m-2"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_idle_client_writes_nothing() {
    let dir = scratch("idle");
    let server = server();
    let client = fast(server.url())
        .persistence(Persistence {
            sync_every: MS,
            ..Persistence::in_dir(&dir)
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    // Heartbeats and the connection coming and going change no state.
    server.drop_all();
    wait_open(&events);
    client.close();
    assert_eq!(client.stats().state_writes, 0);
    assert!(!dir.join("heartline.state").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Builds a client on `dir`, has it finish one message (so the state is
/// written), and closes it.
fn finish_one(b: heartline::ClientBuilder, persistence: Persistence) {
    let client = b
        .protocol(rules())
        .hello(hello)
        .persistence(Persistence {
            sync_every: MS,
            ..persistence
        })
        .build()
        .expect("client builds");
    drop(collect(&client, 1));
    wait_until("the state written", || client.stats().state_writes >= 1);
    client.close();
}

#[test]
fn the_state_is_private_to_the_user_under_the_usual_umask() {
    // The usual service umask (it is the process's, and 022 is what this
    // test binary runs with anyway).
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let dir = scratch("private").join("state");
    let server = feed_server();
    server.publish(json!({"n": 1}));
    finish_one(fast(server.url()), Persistence::in_dir(&dir));
    rustix::process::umask(old);
    assert_eq!(mode(&dir), 0o700, "the directory");
    assert_eq!(mode(&dir.join("heartline.state")), 0o600, "the state file");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn links_planted_in_a_shared_directory_never_touch_another_file() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let base = scratch("planted");
    let dir = base.join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = base.join("victim");
    std::fs::write(&victim, b"precious data").unwrap();
    let server = feed_server();
    server.publish(json!({"n": 1}));

    // Refused as it is: anyone can plant files there.
    let refused = fast(server.url())
        .persistence(Persistence::in_dir(&dir))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            refused,
            heartline::Error::StateDir {
                problem: heartline::StateDirProblem::Writable { mode: 0o1777 },
                ..
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("allow_shared"));

    // Accepted explicitly, with a link planted for the temporary file.
    symlink(&victim, dir.join("heartline.state.tmp")).unwrap();
    let shared = || Persistence {
        allow_shared: true,
        ..Persistence::in_dir(&dir)
    };
    finish_one(fast(server.url()), shared());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious data");
    assert!(std::fs::symlink_metadata(dir.join("heartline.state"))
        .unwrap()
        .is_file());

    // A link planted for the state file: refused at build, not read.
    std::fs::remove_file(dir.join("heartline.state")).unwrap();
    symlink(&victim, dir.join("heartline.state")).unwrap();
    let refused = fast(server.url())
        .persistence(shared())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            refused,
            heartline::Error::StateDir {
                problem: heartline::StateDirProblem::NotAFile {
                    name: "heartline.state"
                },
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious data");
    let _ = std::fs::remove_dir_all(&base);
}

fn in_use(r: heartline::Result<heartline::Client>) -> bool {
    matches!(
        r,
        Err(heartline::Error::StateDir {
            problem: heartline::StateDirProblem::InUse,
            ..
        })
    )
}

#[test]
fn one_client_per_state_dir_in_this_process_until_close() {
    let dir = scratch("one-here");
    let server = server();
    let first = fast(server.url())
        .persistence(Persistence::in_dir(&dir))
        .build()
        .unwrap();
    let second = fast(server.url())
        .persistence(Persistence::in_dir(&dir))
        .build();
    assert!(
        in_use(second),
        "a second client on the directory is refused"
    );
    let other_dir = scratch("one-here-other");
    let elsewhere = fast(server.url())
        .persistence(Persistence::in_dir(&other_dir))
        .build();
    assert!(elsewhere.is_ok(), "another directory is its own");
    first.close();
    // Released at the end of close(), though `first` still exists.
    let third = fast(server.url())
        .persistence(Persistence::in_dir(&dir))
        .build();
    assert!(third.is_ok(), "{:?}", third.err());
    drop(first);
    drop(elsewhere);
    drop(third);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

#[test]
fn one_client_per_state_dir_across_processes_and_a_killed_holder_leaves_no_lock() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = scratch("one-there");
    let server = server();
    let tail = |dir: &std::path::Path| {
        Command::new(tail_bin())
            .args([server.url().as_str(), "--state-dir", dir.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tail runs")
    };
    // This process holds it: another process is refused.
    let here = fast(server.url())
        .persistence(Persistence::in_dir(&dir))
        .build()
        .unwrap();
    let out = tail(&dir).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    here.close();

    // Another process holds it (connected, so past build): refused here.
    let mut holder = tail(&dir);
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let open = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains(r#""open""#)));
    assert!(open.is_some(), "tail connected");
    assert!(in_use(
        fast(server.url())
            .persistence(Persistence::in_dir(&dir))
            .build()
    ));
    // kill -9: the kernel releases the lock with the process.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let after = fast(server.url())
        .persistence(Persistence::in_dir(&dir))
        .build();
    assert!(after.is_ok(), "{:?}", after.err());
    drop(after);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A burst far larger than the queues (`inbound_capacity + batch_max`)
/// finished between two state writes: every message is acked on the live
/// connection, none left for a redelivery. The small byte budget makes the
/// acks waiting for the write pause reading on the way.
#[test]
fn a_burst_larger_than_the_queues_is_acked_in_full_on_the_live_connection() {
    const N: usize = 2000;
    let dir = scratch("burst");
    let server = feed_server();
    let client = fast(server.url())
        .protocol(FeedConfig::default().client_rules())
        .persistence(Persistence {
            sync_every: 50 * MS,
            ..Persistence::in_dir(&dir)
        })
        .limits(Limits {
            inbound_capacity: 64,
            inbound_bytes: 16 * 1024,
            ..Limits::default()
        })
        .delivery(Delivery {
            batch_max: 16,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    for n in 0..N {
        server.publish(json!({ "n": n }));
    }
    assert_eq!(collect(&client, N).len(), N);
    wait_until("every message acked", || server.feed_counts().1 == N);
    let stats = client.stats();
    assert_eq!(stats.acks, N as u64);
    assert_eq!(stats.connects, 1, "acked on the live connection");
    assert!(
        stats.inbound_bytes_peak <= 16 * 1024,
        "acks stay within the budget: peak {}",
        stats.inbound_bytes_peak
    );
    client.close();
    let _ = std::fs::remove_dir_all(&dir);
}
