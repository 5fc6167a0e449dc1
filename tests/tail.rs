//! The `tail` example is a contract for scripts: its flags and JSON lines.
mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use heartline::ReplyRule;
use serde_json::Value;

fn tail_bin() -> std::path::PathBuf {
    // cargo test builds the examples next to the test binaries' folder.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join("tail")
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
