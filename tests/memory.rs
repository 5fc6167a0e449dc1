//! Memory is bounded in bytes, not only in messages: big messages and a
//! stalled application, both ways.
mod common;
use common::*;

use heartline::{Delivery, Frame, Limits, Overflow, SendError, Timeouts};

const KIB: usize = 1024;

fn big(i: usize, size: usize) -> String {
    let mut s = format!("{i:06}:");
    s.push_str(&"x".repeat(size - s.len()));
    s
}

#[test]
fn big_messages_to_a_stalled_application_stay_within_the_inbound_byte_budget() {
    let server = server();
    let budget = 1024 * KIB;
    let size = 256 * KIB;
    let client = fast(server.url())
        .limits(Limits {
            inbound_bytes: budget,
            max_message_size: 512 * KIB,
            max_frame_size: 512 * KIB,
            ..Limits::default()
        })
        .delivery(Delivery {
            batch_max: 3,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    let n = 24;
    for i in 0..n {
        server.push(big(i, size));
    }
    // The application reads nothing: the queue fills to the byte budget
    // (four 256 KiB messages) long before the 4,096-message bound, and
    // reading pauses there.
    wait_until("the budget filled", || {
        client.stats().inbound_bytes == 4 * size
    });
    let stats = client.stats();
    assert_eq!(stats.inbound_queued, 4, "{stats:?}");
    assert!(stats.inbound_bytes_peak <= budget, "{stats:?}");
    // Everything still arrives, in order, and the bound held throughout.
    let got = collect(&client, n);
    for (i, m) in got.iter().enumerate() {
        assert!(m.text().unwrap().starts_with(&format!("{i:06}:")));
        assert_eq!(m.frame().len(), size);
    }
    let stats = client.stats();
    assert!(
        stats.inbound_bytes_peak <= budget,
        "peak {} over the {budget} byte budget",
        stats.inbound_bytes_peak
    );
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.connects, 1);
    client.close();
}

#[test]
fn one_message_larger_than_the_whole_budget_still_passes() {
    let server = server();
    let client = fast(server.url())
        .limits(Limits {
            inbound_bytes: 64 * KIB,
            max_message_size: 512 * KIB,
            max_frame_size: 512 * KIB,
            ..Limits::default()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    server.push(big(1, 200 * KIB));
    server.push("small");
    let got = collect(&client, 2);
    assert_eq!(got[0].frame().len(), 200 * KIB);
    assert_eq!(got[1].text(), Some("small"));
    client.close();
}

#[test]
fn drop_oldest_drops_by_bytes_too_and_counts() {
    let server = server();
    let size = 100 * KIB;
    let client = fast(server.url())
        .limits(Limits {
            inbound_bytes: 300 * KIB,
            max_message_size: 512 * KIB,
            max_frame_size: 512 * KIB,
            ..Limits::default()
        })
        .delivery(Delivery {
            overflow: Overflow::DropOldest,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    for i in 0..10 {
        server.push(big(i, size));
    }
    wait_until("7 messages dropped", || client.stats().dropped >= 7);
    let got = collect(&client, 3);
    let heads: Vec<&str> = got.iter().map(|m| &m.text().unwrap()[..6]).collect();
    assert_eq!(heads, ["000007", "000008", "000009"]);
    assert!(client.stats().inbound_bytes_peak <= 300 * KIB);
    client.close();
}

#[test]
fn the_outbound_queue_is_bounded_in_bytes_and_refuses_a_frame_it_can_never_hold() {
    let server = server();
    server.refuse(Some(503));
    let client = fast(server.url())
        .limits(Limits {
            outbound_bytes: 64 * KIB,
            ..Limits::default()
        })
        .timeouts(Timeouts {
            send: 10 * MS,
            ..common::timeouts()
        })
        .build()
        .unwrap();
    let frame = |i: usize| Frame::from(big(i, 16 * KIB));
    for i in 0..4 {
        client.try_send(frame(i)).unwrap();
    }
    let stats = client.stats();
    assert_eq!((stats.outbound_queued, stats.outbound_bytes), (4, 64 * KIB));
    let err = client.try_send(frame(4)).unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(matches!(
        client.send(frame(4)),
        Err(SendError::Timeout { bytes, .. }) if bytes == 64 * KIB
    ));
    let huge = Frame::from(big(9, 65 * KIB));
    assert!(client.try_send(huge.clone()).unwrap_err().is_too_large());
    match client.send(huge.clone()) {
        Err(e @ SendError::TooLarge { .. }) => {
            assert!(e.to_string().contains("outbound_bytes"), "{e}");
            assert_eq!(e.into_frame(), huge, "handed back");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Once connected, the queue drains in order and frees its bytes.
    server.refuse(None);
    assert!(server.wait_for(WAIT, |l| l.frames.len() >= 4));
    let log = server.log();
    let heads: Vec<&str> = log
        .frames
        .iter()
        .filter_map(|r| r.text())
        .map(|t| &t[..6])
        .collect();
    assert_eq!(heads, ["000000", "000001", "000002", "000003"]);
    wait_until("outbound bytes freed", || {
        client.stats().outbound_bytes == 0
    });
    client.send(frame(5)).unwrap();
    client.close();
}

/// CPU ticks (user + system, 1/100 s) used so far by the threads named
/// `name`, from /proc.
fn thread_ticks(name: &str) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state ..."; fields after the comm: utime is the 12th,
        // stime the 13th.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if !head.ends_with(&format!("({name}")) {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    }
    ticks
}

#[test]
fn a_held_message_larger_than_half_the_budget_waits_without_spinning() {
    // 100 KiB queued (a tenth of the budget, below the resume mark), then a
    // 950 KiB message that does not fit beside it. The application is
    // stalled: the io thread must sleep, not retry in a loop.
    let server = server();
    let client = fast(server.url())
        .limits(Limits {
            inbound_bytes: 1000 * KIB,
            max_message_size: 1024 * KIB,
            max_frame_size: 1024 * KIB,
            ..Limits::default()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    server.push(big(0, 100 * KIB));
    server.push(big(1, 950 * KIB));
    wait_until("the big message read and held", || {
        let s = client.stats();
        s.frames_in >= 2 && s.inbound_bytes == 100 * KIB
    });
    let before = thread_ticks("heartline-io");
    // A measuring window, not a wait for an event: a spinning thread burns
    // about 30 ticks here even on a loaded machine; a sleeping one none.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let spent = thread_ticks("heartline-io") - before;
    assert!(spent <= 5, "the io thread spun: {spent} ticks in 300 ms");
    // The application comes back: both arrive, in order.
    let got = collect(&client, 2);
    assert_eq!(got[1].frame().len(), 950 * KIB);
    client.close();
}

/// The small messages of one read share their storage: while any of them
/// is queued, the byte budget holds the read's storage whole, the bytes
/// of a message the application already holds included, since they stay
/// in memory as long as the others do.
#[test]
fn a_read_whose_messages_share_storage_is_held_whole_while_any_is_queued() {
    let server = server();
    let client = fast(server.url())
        .delivery(Delivery {
            batch_max: 1,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    // Thirty 100-byte text frames in one write: one read (3,060 bytes, in
    // the read buffer's first 4 KiB).
    let (n, size) = (30, 100);
    let mut wire = Vec::new();
    for i in 0..n {
        wire.extend([0x81, size as u8]);
        wire.extend(format!("{i:03}{}", "x".repeat(size - 3)).into_bytes());
    }
    server.push_raw(&wire);
    // The application takes one message and stalls with it in hand.
    let first = client.recv_timeout(WAIT).expect("the first batch");
    assert_eq!(first.len(), 1);
    let held = first.iter().next().unwrap().clone();
    assert!(held.text().unwrap().starts_with("000"));
    wait_until("all thirty read", || client.stats().frames_in >= n as u64);
    // The budget holds all thirty payloads: the 29 queued ones and the
    // held one, which shares their storage. (Counting message by message
    // would say 2,900 while 3,000 bytes are held.)
    assert_eq!(client.stats().inbound_bytes, n * size);
    // Taken one by one: the storage is held until the last queued
    // message of the read is handed out, then the budget is empty.
    first.done();
    let mut got = 1;
    while got < n {
        let b = client.recv_timeout(WAIT).expect("a batch");
        for m in b.iter() {
            assert!(m.text().unwrap().starts_with(&format!("{got:03}")));
            got += 1;
        }
        if got < n {
            assert_eq!(client.stats().inbound_bytes, n * size, "after {got}");
        }
    }
    wait_until("the budget empty", || client.stats().inbound_bytes == 0);
    // A message kept for long is copied out of the shared storage.
    assert_eq!(
        held.into_frame(),
        Frame::Text(format!("000{}", "x".repeat(size - 3)))
    );
    client.close();
}
