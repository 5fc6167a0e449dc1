use crate::common;
use common::*;

use std::time::Duration;

use heartline::{Delivery, Heartbeat, Limits, Overflow};

#[test]
fn a_slow_consumer_bounds_memory_loses_nothing_and_causes_no_reconnect() {
    let server = server();
    let capacity = 8;
    let client = fast(server.url())
        .limits(Limits {
            inbound_capacity: capacity,
            ..Limits::default()
        })
        .delivery(Delivery {
            batch_max: 4,
            ..common::delivery()
        })
        // Heartbeats and a timeout far shorter than the consumer's backlog.
        .heartbeat(Heartbeat {
            interval: 20 * MS,
            server_timeout: 30 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    let n = 300;
    for i in 0..n {
        server.push(format!("{i}"));
    }
    let mut got = Vec::new();
    let mut peak = 0;
    while got.len() < n {
        let b = client.recv_timeout(WAIT).unwrap();
        peak = peak.max(client.stats().inbound_queued);
        got.extend(b.into_messages());
        std::thread::sleep(Duration::from_millis(3)); // the application's slow work
    }
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(texts(&got), expected);
    let stats = client.stats();
    assert!(peak <= capacity, "queue grew to {peak}");
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.connects, 1, "no false heartbeat timeout: {stats:?}");
    client.close();
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_the_rest() {
    let server = server();
    let client = fast(server.url())
        .limits(Limits {
            inbound_capacity: 4,
            ..Limits::default()
        })
        .delivery(Delivery {
            overflow: Overflow::DropOldest,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    for i in 0..20 {
        server.push(format!("{i}"));
    }
    // Waits for the last drop itself (frames_in counts a frame before the
    // inbox has taken it, so it is not the event to wait for).
    wait_until("16 messages dropped", || client.stats().dropped >= 16);
    let got = collect(&client, 4);
    assert_eq!(texts(&got), vec!["16", "17", "18", "19"]);
    assert_eq!(client.stats().dropped, 16);
    client.close();
}
