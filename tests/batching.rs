mod common;
use common::*;

use std::time::Duration;

use heartline::{Frame, RecvTimeoutError, TryRecvError, Via};

#[test]
fn a_window_gathers_a_burst_into_one_batch_in_order() {
    let server = server();
    let client = fast(server.url())
        .batch_window(Duration::from_millis(300))
        .build()
        .unwrap();
    wait_open(&client.events());
    for i in 0..5 {
        server.push(format!("m{i}"));
    }
    let batch = client.recv_timeout(WAIT).unwrap();
    assert_eq!(texts(batch.messages()), vec!["m0", "m1", "m2", "m3", "m4"]);
    client.close();
}

#[test]
fn batch_max_splits_a_burst_and_keeps_order() {
    let server = server();
    let client = fast(server.url())
        .batch_window(Duration::from_millis(300))
        .batch_max(3)
        .build()
        .unwrap();
    wait_open(&client.events());
    for i in 0..7 {
        server.push(format!("m{i}"));
    }
    wait_until("7 messages queued", || client.stats().inbound_queued == 7);
    let sizes: Vec<usize> = (0..3)
        .map(|_| {
            let batch = client.recv_timeout(WAIT).unwrap();
            let n = batch.len();
            batch.done();
            n
        })
        .collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    client.close();
}

#[test]
fn binary_and_non_json_frames_are_delivered_as_they_came() {
    let server = server();
    let client = fast(server.url()).build().unwrap();
    wait_open(&client.events());
    server.push("plain text, not JSON {");
    server.push(Frame::Binary(vec![0, 159, 146, 150]));
    server.push(r#"{"k":1}"#);
    let got = collect(&client, 3);
    assert_eq!(got[0].text(), Some("plain text, not JSON {"));
    assert!(got[0].json().is_none());
    assert_eq!(got[1].frame(), &Frame::Binary(vec![0, 159, 146, 150]));
    assert_eq!(got[1].text(), None);
    assert_eq!(got[2].json(), Some(serde_json::json!({"k": 1})));
    assert!(got.iter().all(|m| m.via() == Via::Ws));
    client.close();
}

#[test]
fn receivers_report_empty_and_timeout_without_a_message() {
    let server = server();
    let client = fast(server.url())
        .batch_window(Duration::from_millis(100))
        .build()
        .unwrap();
    wait_open(&client.events());
    assert_eq!(client.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(
        client.recv_timeout(5 * MS).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    server.push("x");
    // A message arrived but its window is still open: not ready yet...
    wait_until("message queued", || client.stats().inbound_queued >= 1);
    // ...and it is kept for the next call, not lost.
    let b = client.recv_timeout(WAIT).unwrap();
    assert_eq!(texts(b.messages()), vec!["x"]);
    client.close();
}

#[test]
fn a_recv_timeout_shorter_than_the_window_keeps_the_partial_batch() {
    let server = server();
    let client = fast(server.url())
        .batch_window(Duration::from_millis(200))
        .build()
        .unwrap();
    wait_open(&client.events());
    server.push("a");
    wait_until("message queued", || client.stats().inbound_queued >= 1);
    assert_eq!(
        client.recv_timeout(5 * MS).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    server.push("b");
    let all = collect(&client, 2);
    assert_eq!(texts(&all), vec!["a", "b"]);
    client.close();
}
