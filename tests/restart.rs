//! `state_dir`: what a restarted client remembers.
mod common;
use common::*;

use std::path::PathBuf;

use heartline::testkit::{FeedConfig, TestServer};
use heartline::{JsonRules, State};
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
    JsonRules::new()
        .id("/id")
        .cursor("/seq")
        .hello(json!({"type": "hello"}))
        .hello_cursor("since")
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
        .state_dir(&dir)
        .state_sync_every(5 * MS)
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
        .state_dir(&dir)
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
        [r#"{"type":"hello","since":3}"#, "unsent while offline"],
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
        .state_dir(&dir)
        .state_sync_every(5 * MS)
        .build()
        .expect("a device must always boot");
    assert_eq!(collect(&client, 1)[0].id(), Some("m-1"));
    // The next write replaces the bad file with a good one.
    wait_until("the state written", || client.stats().state_writes >= 1);
    client.close();
    let again = fast(server.url())
        .protocol(rules())
        .state_dir(&dir)
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
        .state_dir(&dir)
        .state_sync_every(MS)
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
