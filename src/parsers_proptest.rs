//! The hand-written parsers under random and mutated input (proptest):
//! the upgrade answer, a proxy's answer, `Retry-After`, poll bodies through
//! the protocol rules, the state file, and the inbound gate's frame
//! headers. Each must never panic, take time
//! linear in its input, and on bad input return an error that says what
//! was wrong. A failing case is saved by proptest in
//! `src/parsers_proptest.proptest-regressions` (committed) and replayed
//! first on every run, so it stays fixed.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;

use crate::durable::file;
use crate::frame::{Cursor, Frame};
use crate::machine::hints::retry_after;
use crate::protocol::{JsonRules, Protocol};

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
        match crate::transport::upgrade_head(&bytes, "h:1") {
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
        if let Err(e) = crate::proxy::answer(&bytes) {
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
        mutated(Box::leak(file::encode(&file::Snapshot {
            generation: 3,
            cursor: Some(Cursor::Int(7)),
            finished: vec![crate::durable::ids::of_id("m-1"), 2],
            outbound: vec![file::Stored { seq: 4, id: Some("r".into()), frame: std::sync::Arc::new(Frame::from("x")) }],
        }).into_boxed_slice())),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]) {
        if let Err(e) = file::decode(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
        // The same bytes as a journal (with and without a good header):
        // records up to the first bad one, never a panic.
        let _ = file::decode_journal(&bytes, 0);
        let mut j = file::journal_header(0);
        j.extend_from_slice(&bytes);
        let _ = file::decode_journal(&j, 0);
    }
}

/// Quadratic behaviour shows on big inputs as seconds, linear as
/// milliseconds: a generous bound tells them apart even on a loaded
/// machine, in a debug build.
/// Reads of the given sizes (at least 1 byte each, cycled).
struct Reads<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    n: usize,
}

impl std::io::Read for Reads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.n % self.sizes.len()].max(1);
        self.n += 1;
        let k = size.min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

/// Everything a client reads from `wire` through the gate (`limit`), in
/// reads of `sizes` into buffers of `buf` bytes.
fn through_gate(wire: &[u8], limit: usize, sizes: Vec<usize>, buf: usize) -> Vec<u8> {
    use std::io::Read;
    let mut g = crate::gate::Gated::new(
        Reads {
            data: wire,
            sizes,
            n: 0,
        },
        limit,
        true,
        &mut Vec::new(),
    );
    let (mut out, mut b) = (Vec::new(), vec![0u8; buf]);
    loop {
        match g.read(&mut b) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&b[..n]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_gate_never_panics_on_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..40, 1..6),
        buf in 1usize..100,
    ) {
        let out = through_gate(&bytes, 128, sizes, buf);
        prop_assert!(out.len() <= bytes.len());
    }

    /// At any read boundaries, the gate passes exactly the frames a
    /// frame-by-frame reading keeps: every frame but a data frame over the
    /// limit or of a reserved type with the continuations of its message,
    /// and a control frame of a reserved type.
    #[test]
    fn the_gate_drops_exactly_the_oversized_messages(
        frames in proptest::collection::vec((0u8..6, any::<bool>(), 0usize..400), 0..12),
        sizes in proptest::collection::vec(1usize..300, 1..6),
        buf in 1usize..200,
    ) {
        const LIMIT: usize = 150;
        let (mut wire, mut kept) = (Vec::new(), Vec::new());
        let mut dropping = false;
        for (kind, fin, len) in frames {
            // Continuation, text, binary, ping (a control frame is short
            // and whole), a reserved data type, a reserved control type.
            let (opcode, fin, len) = match kind {
                0 => (0, fin, len),
                1 => (1, fin, len),
                2 => (2, fin, len),
                3 => (9, true, len % 126),
                4 => (3 + (len % 5) as u8, fin, len),
                _ => (11 + (len % 5) as u8, true, len % 126),
            };
            let f = crate::gate::server_frame(fin, opcode, &vec![opcode ^ 0x5A; len]);
            let drop = match opcode {
                1 | 2 => {
                    dropping = len > LIMIT && !fin;
                    len > LIMIT
                }
                3..=7 => {
                    dropping = !fin;
                    true
                }
                11..=15 => true,
                0 => {
                    let d = dropping;
                    if d {
                        dropping = !fin;
                    }
                    d
                }
                _ => false,
            };
            if !drop {
                kept.extend_from_slice(&f);
            }
            wire.extend(f);
        }
        prop_assert_eq!(through_gate(&wire, LIMIT, sizes, buf), kept);
    }
}

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
        assert!(crate::transport::upgrade_head(&garbage_head, "h:1").is_err());
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
    let snapshot = file::Snapshot {
        finished: (0..100_000).collect(),
        ..file::Snapshot::default()
    };
    let bytes = file::encode(&snapshot);
    linear("a state file of 100,000 ids", || {
        assert_eq!(file::decode(&bytes).unwrap().finished.len(), 100_000);
    });
}
