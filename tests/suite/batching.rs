use crate::common;
use common::*;

use std::time::Duration;

use heartline::{Delivery, Frame, RecvTimeoutError, State, TryRecvError, Via};

#[test]
fn a_window_gathers_a_burst_into_one_batch_in_order() {
    let server = server();
    let client = fast(server.url())
        .delivery(Delivery {
            batch_window: Duration::from_millis(300),
            ..common::delivery()
        })
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
        .delivery(Delivery {
            batch_window: Duration::from_millis(300),
            batch_max: 3,
            ..common::delivery()
        })
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
        .delivery(Delivery {
            batch_window: Duration::from_millis(100),
            ..common::delivery()
        })
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
        .delivery(Delivery {
            batch_window: Duration::from_millis(200),
            ..common::delivery()
        })
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

/// One thread, one loop: the state changes and the batches in the order
/// they happened on the connection, though the server greets at once (a
/// batch used to come before its `Open`).
#[test]
fn one_loop_sees_open_its_batches_and_closed_in_order() {
    use heartline::Update;
    let server = server();
    server.set_greeting(vec!["hello".into()]);
    let client = fast(server.url()).build().unwrap();
    let updates = client.updates();
    let deadline = std::time::Instant::now() + WAIT;
    let mut log: Vec<String> = Vec::new();
    let mut opens = 0;
    loop {
        let update = match updates.recv_deadline(deadline) {
            Ok(u) => u,
            Err(heartline::RecvTimeoutError::Closed) => break,
            Err(e) => panic!("{e}; saw {log:?}"),
        };
        match update {
            Update::Event(e) => {
                log.push(e.state.name().to_owned());
                if e.state == State::Open {
                    opens += 1;
                }
            }
            Update::Batch(batch) => {
                for m in &batch {
                    let t = m.text().unwrap_or_default().to_owned();
                    log.push(t.clone());
                    match (opens, t.as_str()) {
                        (1, "hello") => {
                            server.push("a");
                            server.push("b");
                        }
                        (1, "b") => {
                            server.drop_all();
                        }
                        (2, "hello") => client.close(),
                        _ => {}
                    }
                }
            }
        }
    }
    let kept: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "connecting")
        .collect();
    assert_eq!(
        kept,
        [
            "open",
            "hello",
            "a",
            "b",
            "reconnecting",
            "open",
            "hello",
            "closed"
        ],
        "{log:?}"
    );
}
