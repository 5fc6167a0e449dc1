//! The outbound byte budget is what queued frames cost in memory, also with
//! `state_dir`: the ledger that keeps a frame for the state file must not
//! hold a second copy of what waits in the outbound channel.
//!
//! Its own test binary: the heap is counted for the whole process, so no
//! other test may run beside it.
mod common;
use common::*;

use heartline::{Limits, Persistence};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[global_allocator]
static HEAP: Counting = Counting;

fn frame(i: usize, size: usize) -> String {
    let mut s = format!("{i:06}:");
    s.push_str(&"x".repeat(size - s.len()));
    s
}

#[test]
fn with_state_dir_a_queued_frame_is_held_once() {
    let dir = std::env::temp_dir().join(format!("heartline-heap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = server();
    server.refuse(Some(503)); // offline: everything stays queued
    let size = 64 * 1024;
    let budget = 64 * size;
    let client = fast(server.url())
        // The first change is written at once, the next only an hour
        // later: no write (and its encoded copy) is under way while the
        // heap is counted below.
        .persistence(Persistence {
            sync_every: Duration::from_secs(3600),
            ..Persistence::in_dir(&dir)
        })
        .limits(Limits {
            outbound_bytes: budget,
            ..Limits::default()
        })
        .build()
        .unwrap();
    client.send(frame(0, size)).unwrap();
    wait_until("the first state write", || client.stats().state_writes == 1);

    let before = LIVE.load(Relaxed);
    let mut n = 1;
    loop {
        match client.try_send(frame(n, size)) {
            Ok(()) => n += 1,
            Err(e) => {
                assert!(e.is_full(), "{e}");
                break;
            }
        }
    }
    let held = LIVE.load(Relaxed).saturating_sub(before);
    let queued = (n - 1) * size;
    assert!(n > 32, "the budget holds about 64 frames, took {n}");
    // Each queued frame once, plus bookkeeping (and whatever the
    // reconnect attempts have in flight): well under two copies.
    assert!(
        held <= queued + queued / 4,
        "{held} bytes live for {queued} bytes of queued frames: held twice?"
    );

    // Nothing is lost by keeping it once: all arrive, once, in order.
    server.refuse(None);
    assert!(
        server.wait_for(WAIT, |l| l.frames.len() >= n),
        "{} of {n} frames arrived",
        server.log().frames.len()
    );
    let log = server.log();
    let texts: Vec<&str> = log.frames.iter().filter_map(|r| r.text()).collect();
    assert_eq!(texts.len(), n);
    for (i, t) in texts.iter().enumerate() {
        assert!(t.starts_with(&format!("{i:06}:")), "frame {i} out of order");
    }
    client.close();
    let _ = std::fs::remove_dir_all(&dir);
}
