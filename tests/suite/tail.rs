//! The `tail` example is a contract for scripts: its flags and JSON lines.
use crate::common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use heartline::ReplyRule;
use serde_json::Value;

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
fn tail_takes_beat_when_busy_and_heartbeats_with_it() {
    // The flag reaches the builder (tests/suite/heartbeat.rs shows what it does
    // against a server that drops silent clients): every heartbeat is
    // answered with a message, and five of them arrive.
    init();
    let server = server();
    server.reply(ReplyRule::Text("hb".into()), "pushed");
    let mut child = Command::new(tail_bin())
        .args([server.url().as_str(), "--heartbeat", "hb", "--every", "30"])
        .args(["--beat-when-busy", "--count", "5", "--for", "5000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = json_lines(&mut child);
    assert!(child.wait().unwrap().success(), "{lines:?}");
    let pushed = lines
        .iter()
        .filter_map(|l| l["batch"].as_array())
        .flatten()
        .filter(|m| m["text"] == "pushed")
        .count();
    assert!(pushed >= 5, "{lines:?}");
}

#[test]
fn tail_giving_up_prints_why_on_the_closed_line_and_exits_1() {
    init();
    let server = server();
    server.refuse(Some(503));
    // One attempt: no reconnecting line comes first, so the closed line is
    // the only place a script can read the cause from.
    let out = Command::new(tail_bin())
        .args([server.url().as_str(), "--max-attempts", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let closed = lines.last().expect("a closed line");
    assert_eq!(closed["state"], "closed", "{lines:?}");
    assert_eq!(closed["reason"], "gave up after 1 attempt", "{lines:?}");
    assert_eq!(closed["status"], 503, "{lines:?}");
    assert!(
        closed["error"].as_str().unwrap_or("").contains("HTTP 503"),
        "{lines:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gave up after 1 attempt: "), "{err}");
    assert!(err.contains("HTTP 503"), "{err}");
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

fn json_lines(child: &mut std::process::Child) -> Vec<Value> {
    BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("each line is JSON"))
        .collect()
}

#[test]
fn tail_sends_standard_input_line_by_line_and_prints_stats() {
    init();
    let server = server();
    server.echo(true);
    let mut child = Command::new(tail_bin())
        .args([
            server.url().as_str(),
            "--stdin",
            "--stats",
            "20",
            "--count",
            "2",
            "--batch",
            "0",
            "--outbound-bytes",
            "64",
            "--inbound-bytes",
            "65536",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // The middle line is over the 64-byte outbound budget: refused with
        // a message, and the next line still goes out.
        let long = "z".repeat(100);
        write!(stdin, "hello\n{long}\nworld\n").unwrap();
        // EOF here does not end tail: it exits after --count 2 echoes.
    }
    let lines = json_lines(&mut child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let texts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.get("batch"))
        .flat_map(|b| b.as_array().unwrap())
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello", "world"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--stdin") && err.contains("outbound_bytes"),
        "{err}"
    );
    let stats: Vec<&Value> = lines.iter().filter_map(|l| l.get("stats")).collect();
    let last = stats.last().expect("a stats line at exit");
    assert_eq!(
        lines.last().unwrap().get("stats"),
        Some(*last),
        "printed last"
    );
    assert_eq!(last["state"], "closed");
    assert_eq!(last["connects"], 1);
    assert!(last["frames_out"].as_u64().unwrap() >= 2, "{last}");
    for key in [
        "inbound_bytes",
        "outbound_bytes",
        "last_poll_error",
        "rtt_us",
    ] {
        assert!(last.get(key).is_some(), "{key} missing: {last}");
    }
}

#[test]
fn tail_max_message_drops_a_larger_message_and_carries_on() {
    let server = server();
    let mut child = Command::new(tail_bin())
        .args([
            server.url().as_str(),
            "--max-message",
            "1000",
            "--count",
            "1",
            "--batch",
            "0",
            "--stats",
            "60000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(server.wait_open(1, WAIT));
    server.push_many(vec!["y".repeat(2000).into(), "after".into()]);
    // tail exits after --count 1: the message behind the big one.
    let lines = json_lines(&mut child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let texts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.get("batch"))
        .flat_map(|b| b.as_array().unwrap())
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["after"]);
    let last = lines
        .last()
        .and_then(|l| l.get("stats"))
        .expect("stats at exit");
    assert_eq!(
        (&last["too_large"], &last["connects"]),
        (&1.into(), &1.into()),
        "{last}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2000 bytes") && err.contains("limits.max_frame_size (1000 bytes)"),
        "the warning says what and the advice: {err}"
    );
}

#[test]
fn tail_trusts_a_ca_file_and_insecure_accepts_anything() {
    let server = heartline::testkit::TestServer::start_tls().unwrap();
    server.set_greeting(vec!["secure".into()]);
    let dir = std::env::temp_dir().join(format!("heartline-tail-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, server.ca_pem().unwrap()).unwrap();
    for extra in [vec!["--ca", ca.to_str().unwrap()], vec!["--insecure"]] {
        let mut args = vec![server.url(), "--count".into(), "1".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = Command::new(tail_bin()).args(&args).output().unwrap();
        assert!(out.status.success(), "{extra:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(r#""text":"secure""#), "{extra:?}: {text}");
    }
    let out = Command::new(tail_bin())
        .args([server.url().as_str(), "--ca", "/nonexistent/ca.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca /nonexistent/ca.pem"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tail_state_dir_acks_finished_messages_and_resumes_with_its_cursor_after_a_restart() {
    init();
    let mut server = server();
    server
        .enable_feed(heartline::testkit::FeedConfig::default())
        .unwrap();
    for n in 1..=3 {
        server.publish(serde_json::json!({ "n": n }));
    }
    let dir = std::env::temp_dir().join(format!("heartline-tail-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |count: &str| {
        let mut child = Command::new(tail_bin())
            .args([
                server.url().as_str(),
                "--id",
                "/id",
                "--cursor",
                "/seq",
                "--ack",
                r#"{"ack":$id}"#,
                "--hello",
                r#"{"hello":true,"since":$cursor}"#,
                "--state-dir",
                dir.to_str().unwrap(),
                "--batch",
                "0",
                "--backoff",
                "10:50",
                "--count",
                count,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tail runs");
        let lines = json_lines(&mut child);
        assert!(child.wait().unwrap().success());
        lines
            .iter()
            .filter_map(|l| l["batch"].as_array())
            .flatten()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let first = run("2");
    assert_eq!(first.len(), 2);
    assert!(first[0].contains(r#""id":"m-1""#) && first[1].contains(r#""id":"m-2""#));
    // Finished and acked with the template (after the state was written);
    // the third was never printed, so it is not acked.
    assert!(server.wait_for(WAIT, |l| {
        l.frames
            .iter()
            .filter_map(|f| f.text())
            .any(|t| t == r#"{"ack":"m-2"}"#)
    }));
    assert_eq!(server.feed_counts().1, 2, "m-1 and m-2 acked, m-3 not");
    let second = run("1");
    assert!(second[0].contains(r#""id":"m-3""#), "{second:?}");
    let hellos: Vec<String> = server
        .log()
        .frames
        .iter()
        .filter_map(|f| {
            f.text()
                .filter(|t| t.starts_with(r#"{"hello""#))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        hellos.first().map(String::as_str),
        Some(r#"{"hello":true,"since":null}"#)
    );
    assert_eq!(
        hellos.last().map(String::as_str),
        Some(r#"{"hello":true,"since":2}"#),
        "the restarted tail resumes from the cursor it finished"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tail_goes_through_a_proxy_and_reports_a_refusal_without_the_password() {
    init();
    let server = server();
    server.set_greeting(vec!["via proxy".into()]);
    let proxy = heartline::testkit::ConnectProxy::start(Some(("dev", "pw"))).unwrap();
    let run = |url: String| {
        let mut child = Command::new(tail_bin())
            .args([
                server.url().as_str(),
                "--proxy",
                &url,
                "--count",
                "1",
                "--for",
                "3000",
            ])
            .args(["--backoff", "10:50", "--max-attempts", "2"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tail runs");
        let lines = json_lines(&mut child);
        let _ = child.wait();
        lines
    };
    let ok = run(proxy.url_with("dev", "pw"));
    assert!(
        ok.iter().any(|l| l["batch"][0]["text"] == "via proxy"),
        "{ok:?}"
    );
    let refused = run(proxy.url_with("dev", "WRONGPW"));
    let text = serde_json::to_string(&refused).unwrap();
    assert!(text.contains("407"), "{text}");
    assert!(!text.contains("WRONGPW"), "{text}");
}

#[test]
fn tail_help_lists_every_flag_once_with_one_line_each() {
    let out = Command::new(tail_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = help
        .lines()
        .filter_map(|l| l.strip_prefix("  --"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The flags scripts use (the contract): each listed exactly once.
    for flag in [
        "header",
        "heartbeat",
        "reply",
        "every",
        "timeout",
        "connect-timeout",
        "beat-when-busy",
        "hello",
        "send",
        "batch",
        "backoff",
        "max-attempts",
        "count",
        "for",
        "poll",
        "poll-method",
        "poll-body",
        "poll-after",
        "poll-every",
        "id",
        "cursor",
        "since",
        "items",
        "ca",
        "insecure",
        "stdin",
        "stats",
        "inbound-bytes",
        "outbound-bytes",
        "max-message",
        "state-dir",
        "ack",
        "proxy",
        "help",
    ] {
        let n = names.iter().filter(|n| **n == flag).count();
        assert_eq!(n, 1, "--{flag} listed {n} times in:\n{help}");
    }
    // Every line a flag with its help, and each flag listed is accepted:
    // a switch alone, a flag with a value given one.
    for line in help.lines().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 2 && words[0].starts_with("--"), "{line}");
    }
    let bad = Command::new(tail_bin())
        .args(["ws://127.0.0.1:1/", "--insecure=yes"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a switch takes no value");
}

#[test]
fn tail_offers_subprotocols_and_its_open_line_names_the_one_chosen() {
    init();
    let (url, offered) = answering(Some("v2.push"), None);
    let out = Command::new(tail_bin())
        .args([
            url.as_str(),
            "--subprotocol",
            "v3.push",
            "--subprotocol=v2.push",
        ])
        .args(["--count", "1"])
        .output()
        .expect("tail runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        offered.recv_timeout(WAIT).unwrap().as_deref(),
        Some("v3.push, v2.push")
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l == r#"{"state":"open","subprotocol":"v2.push"}"#),
        "{text}"
    );
}

/// A `ws://` client never needs OpenSSL, and must not make it initialise
/// itself: OpenSSL 3's first digest (the upgrade's SHA-1, had it been
/// libcrypto's) loads its providers and configuration and pages in about
/// 2 MB of `libcrypto.so` (3.4 MB resident against 1.4 MB here).
#[test]
fn a_plain_ws_client_leaves_openssl_uninitialised() {
    let server = server();
    let mut child = Command::new(tail_bin())
        .args([server.url().as_str(), "--for", "20000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tail runs");
    // Kept open until the map is read: a closed pipe would end tail.
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let open = out
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains(r#""state":"open""#));
    assert!(open, "tail never opened");
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", child.id()))
        .expect("the process's memory map");
    let _ = child.kill();
    let _ = child.wait();
    drop(out);
    let mut lib = "";
    let mut resident_kb = 0u64;
    for line in smaps.lines() {
        if line
            .split_whitespace()
            .next()
            .is_some_and(|r| r.contains('-') && !r.ends_with(':'))
        {
            lib = line.split_whitespace().nth(5).unwrap_or("");
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            if lib.contains("libcrypto") {
                resident_kb += kb
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    assert!(
        resident_kb < 2500,
        "{resident_kb} kB of libcrypto resident in a ws:// client"
    );
}
