//! The `tail` example is a contract for scripts: its flags and JSON lines.
mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use heartline::ReplyRule;
use serde_json::Value;

/// The `tail` example binary, built once per run: `cargo test` builds the
/// examples, but `cargo test --test tail` alone does not, and a stale binary
/// would test old code.
fn tail_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap();
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_owned(),
                Some(other) => other.to_owned(),
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "--example",
                    "tail",
                    "--profile",
                    &profile,
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the tail example failed");
            profile_dir.join("examples").join("tail")
        })
        .clone()
}

#[test]
fn tail_prints_states_and_batches_as_json_lines_and_exits_after_count() {
    init();
    let server = server();
    server.reply(ReplyRule::Text("hb".into()), "hb-ok");
    server.set_greeting(vec!["one".into(), "hb-ok".into(), r#"{"n":2}"#.into()]);
    let mut child = Command::new(tail_bin())
        .args([
            server.url().as_str(),
            "--header",
            "X-Device: kiosk-7",
            "--heartbeat",
            "hb",
            "--reply",
            "hb-ok",
            "--every",
            "20",
            "--timeout",
            "1000",
            "--hello",
            "h1",
            "--hello=h2",
            "--send",
            "s1",
            "--batch",
            "0",
            "--backoff",
            "10:50",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tail runs (built by cargo test)");
    let lines: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("each line is JSON"))
        .collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let states: Vec<&str> = lines.iter().filter_map(|l| l["state"].as_str()).collect();
    assert_eq!(states.first(), Some(&"connecting"));
    assert!(states.contains(&"open"));
    assert_eq!(states.last(), Some(&"closed"));
    let messages: Vec<Value> = lines
        .iter()
        .filter_map(|l| l["batch"].as_array())
        .flatten()
        .cloned()
        .collect();
    assert_eq!(
        messages,
        vec![
            serde_json::json!({"via":"ws","text":"one"}),
            serde_json::json!({"via":"ws","text":"{\"n\":2}"})
        ]
    );
    let log = server.log();
    assert_eq!(log.upgrades[0].header("x-device"), Some("kiosk-7"));
    assert_eq!(&log.texts_of(1)[..3], &["h1", "h2", "s1"]);
}

#[test]
fn tail_rejects_a_bad_flag_with_exit_2() {
    let out = Command::new(tail_bin())
        .args(["ws://127.0.0.1:9/", "--every", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--every: `soon` is not a valid number"),
        "{err}"
    );
}

#[test]
fn tail_exits_0_after_for_ms() {
    let server = server();
    let out = Command::new(tail_bin())
        .args([server.url().as_str(), "--for", "200"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == r#"{"state":"open"}"#), "{text}");
}

#[test]
fn tail_falls_back_to_polling_and_marks_each_message_with_its_transport() {
    init();
    let mut server = server();
    server
        .enable_feed(heartline::testkit::FeedConfig::default())
        .unwrap();
    server.refuse(Some(503));
    server.publish(serde_json::json!({"n": 1}));
    server.publish(serde_json::json!({"n": 2}));
    let poll = server.poll_url().unwrap();
    let out = Command::new(tail_bin())
        .args([
            server.url().as_str(),
            "--poll",
            poll.as_str(),
            "--poll-method",
            "GET",
            "--poll-after",
            "1",
            "--poll-every",
            "20",
            "--since",
            "since",
            "--id",
            "/id",
            "--cursor",
            "/seq",
            "--backoff",
            "10:20",
            "--count",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["state"] == "polling" && l["attempt"] == 2),
        "{lines:?}"
    );
    let vias: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["batch"].as_array())
        .flatten()
        .filter_map(|m| m["via"].as_str())
        .collect();
    assert_eq!(vias, vec!["poll", "poll"]);
    assert!(server.log().polls.iter().all(|p| p.method == "GET"));
}

#[test]
fn tail_rejects_a_bad_poll_method() {
    let out = Command::new(tail_bin())
        .args([
            "ws://127.0.0.1:9/",
            "--poll",
            "http://127.0.0.1:9/",
            "--poll-method",
            "PUT",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`PUT` is not GET or POST"));
}
