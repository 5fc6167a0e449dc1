//! The hand-written parsers under random and mutated input (proptest):
//! the upgrade answer, a proxy's answer, `Retry-After`, poll bodies through
//! the protocol rules, the state file, and the server's frames (the frame
//! reader). Each must never panic, take time
//! linear in its input, and on bad input return an error that says what
//! was wrong. A failing case is saved by proptest in
//! `src/parsers_proptest.proptest-regressions` (committed) and replayed
//! first on every run, so it stays fixed.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;

use crate::durable::format;
use crate::frame::{Cursor, Frame};
use crate::machine::frames::{server_frame, FrameEvent, Reader, Rules};
use crate::machine::hints::retry_after;
use crate::protocol::json::JsonRules;
use crate::protocol::Protocol;

const GOOD_UPGRADE: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// Random edits of a good input: flip, insert, delete, truncate.
fn mutated(base: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8).prop_map(move |edits| {
        let mut v = base.to_vec();
        for (at, byte, op) in edits {
            if v.is_empty() {
                v.push(byte);
                continue;
            }
            let i = at % v.len();
            match op {
                0 => v[i] ^= byte | 1,
                1 => v.insert(i, byte),
                2 => {
                    v.remove(i);
                }
                _ => v.truncate(i),
            }
        }
        v
    })
}

fn rules() -> JsonRules {
    JsonRules::new()
        .id("/id")
        .cursor("/seq")
        .poll_success("/code", json!("0000"))
        .poll_items("/data/items")
        .poll_strings("/data/urls", &["audio"])
}

const GOOD_POLL: &[u8] =
    br#"{"code":"0000","data":{"items":[{"id":"a","seq":1},{"id":"b","seq":2}],"urls":["x.mp3"]}}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn upgrade_answers_never_panic(bytes in prop_oneof![
        mutated(GOOD_UPGRADE.as_bytes()),
        proptest::collection::vec(any::<u8>(), 0..2048),
    ]) {
        match crate::connect::upgrade::upgrade_head(&bytes, "h:1") {
            Ok(Some(h)) => prop_assert!(h.len <= bytes.len()),
            Ok(None) => prop_assert!(bytes.len() < 16 * 1024),
            Err(e) => prop_assert!(e.to_string().contains("h:1"), "names the server: {e}"),
        }
    }

    #[test]
    fn proxy_answers_never_panic(bytes in prop_oneof![
        mutated(b"HTTP/1.1 200 Connection established\r\n\r\n"),
        proptest::collection::vec(any::<u8>(), 0..512),
    ]) {
        if let Err(e) = crate::connect::proxy::answer(&bytes) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn retry_after_never_panics_and_says_what_is_wrong(v in prop_oneof![
        "[ -~]{0,80}",
        mutated(b"Sun, 06 Nov 1994 08:49:37 GMT").prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        mutated(b"120").prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        if let Err(e) = retry_after(&v, 784_111_777) {
            prop_assert!(
                e.contains("date") || e.contains("empty") || e.contains("time") || e.contains("month")
                    || e.contains("day") || e.contains("year") || e.contains('"'),
                "{e}"
            );
        }
    }

    #[test]
    fn poll_bodies_never_panic_and_bad_items_are_skipped_not_fatal(body in prop_oneof![
        mutated(GOOD_POLL),
        proptest::collection::vec(any::<u8>(), 0..1024),
    ]) {
        match rules().parse_poll(&body) {
            Ok(items) => for item in items {
                if let Err(why) = item { prop_assert!(!why.is_empty()); }
            },
            Err(e) => prop_assert!(
                e.contains("JSON") || e.contains("success rule") || e.contains("/data"),
                "{e}"
            ),
        }
    }

    #[test]
    fn state_files_never_panic(bytes in prop_oneof![
        mutated(Box::leak(format::encode(&format::Snapshot {
            generation: 3,
            cursor: Some(Cursor::Int(7)),
            finished: vec![crate::durable::ids::of_id("m-1"), 2],
            outbound: vec![format::Stored { seq: 4, id: Some("r".into()), frame: std::sync::Arc::new(Frame::from("x")) }],
        }).into_boxed_slice())),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]) {
        if let Err(e) = format::decode(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
        // The same bytes as a journal (with and without a good header):
        // records up to the first bad one, never a panic.
        let _ = format::decode_journal(&bytes, 0);
        let mut j = format::journal_header(0);
        j.extend_from_slice(&bytes);
        let _ = format::decode_journal(&j, 0);
    }
}

/// Everything the frame reader makes of `wire`, read in pieces of
/// `sizes` (cycled); it stops at the first failure, as the connection does.
fn through_reader(wire: &[u8], rules: Rules, sizes: &[usize]) -> Vec<Result<FrameEvent, String>> {
    let mut r = Reader::new(rules);
    let (mut out, mut at, mut n) = (Vec::new(), 0, 0);
    loop {
        match r.next() {
            Some(Ok(FrameEvent::Run(g))) => {
                out.extend(g.bodies().map(|b| Ok(FrameEvent::Message(b))));
            }
            Some(Ok(e)) => out.push(Ok(e)),
            Some(Err(e)) => {
                out.push(Err(format!("{e:?}")));
                return out;
            }
            None if at == wire.len() => return out,
            None => {
                let space = r.space();
                let k = sizes[n % sizes.len()].min(space.len()).min(wire.len() - at);
                n += 1;
                space[..k].copy_from_slice(&wire[at..at + k]);
                r.filled(k);
                at += k;
            }
        }
    }
}

fn reader_rules(lenient: bool, share: bool) -> Rules {
    Rules {
        max_frame: 150,
        max_message: 300,
        close_on_too_large: false,
        lenient,
        share,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes, in any pieces: no panic, and the same events as when
    /// they come at once.
    #[test]
    fn the_frame_reader_never_panics_and_ignores_read_boundaries(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..40, 1..6),
        lenient in any::<bool>(),
    ) {
        // With shared storage or without, the same events.
        let whole = || through_reader(&bytes, reader_rules(lenient, false), &[usize::MAX]);
        prop_assert_eq!(through_reader(&bytes, reader_rules(lenient, false), &sizes), whole());
        prop_assert_eq!(through_reader(&bytes, reader_rules(lenient, true), &sizes), whole());
        prop_assert_eq!(through_reader(&bytes, reader_rules(lenient, true), &[usize::MAX]), whole());
    }

    /// Well-formed messages in fragments, pings between them: every one
    /// within the limits comes whole, every other is reported too large,
    /// in order, at any read boundaries.
    #[test]
    fn the_frame_reader_drops_exactly_the_oversized_messages(
        messages in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec((0usize..200, any::<bool>()), 1..4)),
            0..10,
        ),
        sizes in proptest::collection::vec(1usize..300, 1..6),
        share in any::<bool>(),
    ) {
        let rules = reader_rules(false, share);
        let (mut wire, mut expected) = (Vec::new(), Vec::new());
        for (i, (text, parts)) in messages.iter().enumerate() {
            let mut payload = Vec::new();
            let mut total = 0u64;
            let mut dropped = None;
            for (j, (len, ping)) in parts.iter().enumerate() {
                let fin = j + 1 == parts.len();
                let opcode = match (j, text) {
                    (0, true) => 1,
                    (0, false) => 2,
                    _ => 0,
                };
                let bytes = vec![b'a' + (i % 26) as u8; *len];
                wire.extend(server_frame(fin, opcode, &bytes));
                total += *len as u64;
                if dropped.is_none() && (*len as u64 > rules.max_frame || total > rules.max_message) {
                    dropped = Some(total);
                    expected.push(Ok(FrameEvent::TooLarge { len: total, fragmented: parts.len() > 1 }));
                }
                payload.extend(bytes);
                if *ping && !fin {
                    wire.extend(server_frame(true, 9, b"p"));
                    expected.push(Ok(FrameEvent::Ping(b"p".to_vec())));
                }
            }
            if dropped.is_none() {
                let f = if *text {
                    crate::Frame::Text(String::from_utf8(payload).unwrap())
                } else {
                    crate::Frame::Binary(payload)
                };
                expected.push(Ok(FrameEvent::Message(f.into())));
            }
        }
        prop_assert_eq!(through_reader(&wire, rules, &sizes), expected);
    }
}

/// Quadratic behaviour shows on big inputs as seconds, linear as
/// milliseconds: a generous bound tells them apart even on a loaded
/// machine, in a debug build.
fn linear(what: &str, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "{what} took {took:?}");
}

#[test]
fn big_inputs_take_linear_time() {
    let mb = 1 << 20;
    let mut garbage_head = b"HTTP/1.1 101 OK\r\n".to_vec();
    garbage_head.extend(std::iter::repeat_n(b'a', 16 * 1024));
    linear("upgrade head", || {
        assert!(crate::connect::upgrade::upgrade_head(&garbage_head, "h:1").is_err());
    });
    let nested = "[".repeat(mb);
    linear("deep JSON", || {
        assert!(rules().parse_poll(nested.as_bytes()).is_err())
    });
    let many = format!(
        r#"{{"code":"0000","data":{{"items":[{}]}}}}"#,
        vec![r#"{"id":"a","seq":1}"#; 50_000].join(",")
    );
    linear("50,000 items", || {
        assert_eq!(rules().parse_poll(many.as_bytes()).unwrap().len(), 50_000);
    });
    let long = "x".repeat(mb);
    linear("long Retry-After", || {
        assert!(retry_after(&long, 0).is_err())
    });
    let snapshot = format::Snapshot {
        finished: (0..100_000).collect(),
        ..format::Snapshot::default()
    };
    let bytes = format::encode(&snapshot);
    linear("a state file of 100,000 ids", || {
        assert_eq!(format::decode(&bytes).unwrap().finished.len(), 100_000);
    });
}
