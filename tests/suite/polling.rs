use crate::common;
use common::*;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heartline::testkit::{FeedConfig, PollFault, TestServer};
use heartline::{
    AckMode, Backoff, ClientBuilder, ConnectionError, Delivery, Endpoint, JsonRules, Method,
    Polling, Reconnect, State, Via,
};
use serde_json::json;

fn feed_server() -> TestServer {
    let mut s = server();
    s.enable_feed(FeedConfig::default()).unwrap();
    s
}

fn rules(server: &TestServer) -> JsonRules {
    JsonRules::new()
        .id("/id")
        .cursor("/seq")
        .ack(json!({"type": "ack"}), [("/id", "ack")])
        .poll(server.poll_url().unwrap(), Method::Get, None)
        .poll_since("since")
}

fn client(server: &TestServer) -> ClientBuilder {
    polling(fast(server.url()), server)
}

fn polling(b: ClientBuilder, server: &TestServer) -> ClientBuilder {
    b.protocol(rules(server))
        .polling(poll_cfg())
        .reconnect(retry())
}

/// The polling of [`client`]: after 3 failures, every 30 ms.
fn poll_cfg() -> Polling {
    Polling {
        after: 3,
        every: 30 * MS,
        ..Polling::default()
    }
}

/// The reconnect policy of [`client`]: 20 ms between attempts.
fn retry() -> Reconnect {
    Reconnect {
        backoff: Backoff::Fixed(20 * MS),
        ..common::reconnect()
    }
}

fn seqs(msgs: &[heartline::Message]) -> Vec<i64> {
    msgs.iter()
        .map(|m| m.json().and_then(|v| v["seq"].as_i64()).unwrap_or(-1))
        .collect()
}

#[test]
fn after_three_failures_messages_come_by_polling_then_the_socket_takes_over() {
    let server = feed_server();
    for i in 1..=5 {
        server.publish(json!({ "n": i }));
    }
    server.refuse(Some(503));
    let base = server.url();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let provider = move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        Endpoint::new(base.clone()).header("X-Token", format!("t{n}"))
    };
    let client = polling(fast_with(provider), &server).build().unwrap();
    let events = client.events();
    let (ev, seen) = wait_event(&events, "polling", |e| {
        matches!(e.state, State::Polling { .. })
    });
    assert!(
        matches!(ev.state, State::Polling { attempt: 4, .. }),
        "{ev:?}"
    );
    let failures = seen
        .iter()
        .filter(|e| matches!(e.state, State::Reconnecting { .. }))
        .count();
    assert_eq!(failures, 2, "three failed attempts, then polling: {seen:?}");

    let first = collect(&client, 5);
    assert_eq!(seqs(&first), vec![1, 2, 3, 4, 5]);
    assert!(first.iter().all(|m| m.via() == Via::Poll));
    for i in 6..=8 {
        server.publish(json!({ "n": i }));
    }
    assert_eq!(seqs(&collect(&client, 3)), vec![6, 7, 8]);

    // Polls carry the cursor and fresh headers from the endpoint provider.
    let polls = server.log().polls;
    assert!(polls.iter().any(|p| p.uri.contains("since=5")), "{polls:?}");
    let tokens: Vec<String> = polls
        .iter()
        .filter_map(|p| {
            p.headers
                .iter()
                .find(|(n, _)| n == "x-token")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(tokens.len(), polls.len());
    let mut unique = tokens.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        tokens.len(),
        "a fresh header per request: {tokens:?}"
    );

    server.refuse(None);
    wait_event(&events, "open", |e| e.state == State::Open);
    // The poller was joined before Open was reported: no poll after this.
    let polls_at_open = server.log().polls.len();
    for i in 9..=10 {
        server.publish(json!({ "n": i }));
    }
    let rest = collect(&client, 2);
    assert_eq!(seqs(&rest), vec![9, 10]);
    assert!(rest.iter().all(|m| m.via() == Via::Ws));
    assert_eq!(server.log().polls.len(), polls_at_open);
    assert!(client.try_recv().is_err(), "nothing delivered twice");
    client.close();
}

#[test]
fn a_socket_that_drops_before_proving_itself_does_not_stop_polling() {
    let server = feed_server();
    server.refuse(Some(503));
    let client = client(&server)
        .reconnect(Reconnect {
            min_uptime: Duration::from_secs(30),
            ..retry()
        })
        .build()
        .unwrap();
    let events = client.events();
    let (ev, _) = wait_event(&events, "polling", |e| {
        matches!(e.state, State::Polling { .. })
    });
    let State::Polling { attempt, .. } = ev.state else {
        unreachable!()
    };
    // Let one connection through and drop it at once, before any frame.
    server.refuse(None);
    assert!(server.wait_connections(1, WAIT));
    server.refuse(Some(503));
    server.drop_all();
    // Still polling, at a later attempt: no change of transport, so no
    // event (one per change, not per attempt), and never reported open.
    wait_until(
        "a later attempt while polling",
        || matches!(client.stats().state, State::Polling { attempt: a, .. } if a > attempt),
    );
    let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(seen.is_empty(), "no event while still polling: {seen:?}");
    // Polling carried on: a message published now still arrives by poll.
    server.publish(json!({"n": 1}));
    let got = collect(&client, 1);
    assert_eq!(got[0].via(), Via::Poll);
    client.close();
}

#[test]
fn poll_failures_are_counted_retried_and_bad_items_skipped() {
    let server = feed_server();
    server.refuse(Some(503));
    server.poll_fault(PollFault::Status(500));
    server.publish(json!({"n": 1}));
    let client = client(&server).build().unwrap();
    wait_until("a failed poll", || client.stats().poll_failures >= 1);
    let error = client.stats().last_poll_error.expect("a poll error");
    assert!(
        matches!(&error, ConnectionError::Poll { status: Some(500), reason, .. }
            if reason.contains("broken on purpose")),
        "the status, and the body's start: {error}"
    );

    server.poll_fault(PollFault::Garbage);
    wait_until("a garbage poll", || {
        common::why(&client.stats().last_poll_error).contains("not JSON")
    });

    server.poll_fault(PollFault::BadItems);
    let got = collect(&client, 1);
    assert_eq!(seqs(&got), vec![1]);
    // The bad item after it is counted once the poller reaches it.
    wait_until("a malformed item counted", || client.stats().malformed >= 1);

    server.poll_fault(PollFault::None);
    server.publish(json!({"n": 2}));
    assert_eq!(seqs(&collect(&client, 1)), vec![2]);
    client.close();
}

#[test]
fn pushed_messages_are_acked_once_queued() {
    let server = feed_server();
    let client = client(&server)
        .delivery(Delivery {
            ack_mode: AckMode::Queued,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    for i in 1..=3 {
        server.publish(json!({ "n": i }));
    }
    assert_eq!(seqs(&collect(&client, 3)), vec![1, 2, 3]);
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .filter(|f| f.text().is_some_and(|t| t.contains("ack")))
        .count()
        == 3));
    assert_eq!(server.feed_counts(), (3, 3));
    assert_eq!(client.stats().acks, 3);
    client.close();
}

#[test]
fn in_delivered_mode_acks_wait_for_the_application() {
    let server = feed_server();
    let client = client(&server)
        .delivery(Delivery {
            ack_mode: AckMode::Delivered,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    for i in 1..=3 {
        server.publish(json!({ "n": i }));
    }
    wait_until("3 messages queued", || client.stats().inbound_queued == 3);
    assert_eq!(
        client.stats().acks,
        0,
        "nothing acked before the application took it"
    );
    assert_eq!(seqs(&collect(&client, 3)), vec![1, 2, 3]);
    wait_until("server saw 3 acks", || server_acked(&server) == 3);
    // Counted before written: the server holding them means they count.
    assert_eq!(client.stats().acks, 3);
    client.close();
}

fn server_acked(server: &TestServer) -> usize {
    server.feed_counts().1
}

#[test]
fn unacked_messages_redelivered_on_reconnect_are_not_delivered_twice() {
    let server = feed_server();
    // No acks at all: the server redelivers everything on each connection.
    let rules = JsonRules::new().id("/id").cursor("/seq");
    let client = fast(server.url()).protocol(rules).build().unwrap();
    let events = client.events();
    wait_open(&events);
    for i in 1..=4 {
        server.publish(json!({ "n": i }));
    }
    assert_eq!(seqs(&collect(&client, 4)), vec![1, 2, 3, 4]);
    server.drop_all();
    wait_open(&events);
    server.publish(json!({"n": 5}));
    assert_eq!(seqs(&collect(&client, 1)), vec![5]);
    wait_until("redelivered copies dropped", || {
        client.stats().duplicates >= 4
    });
    client.close();
}

#[test]
fn a_poll_body_over_the_limit_fails_that_poll_with_a_clear_error() {
    let server = feed_server();
    server.refuse(Some(503));
    for i in 0..20 {
        server.publish(json!({ "n": i, "pad": "x".repeat(50) }));
    }
    let client = client(&server)
        .polling(Polling {
            max_body: 256,
            ..poll_cfg()
        })
        .build()
        .unwrap();
    wait_until("a failed poll", || client.stats().poll_failures >= 1);
    let why = why(&client.stats().last_poll_error);
    assert!(
        why.contains("over the 256 byte limit") && why.contains("/poll"),
        "{why}"
    );
    assert_eq!(
        client.stats().inbound_queued,
        0,
        "nothing from the refused body"
    );
    client.close();
}

#[test]
fn a_stalled_poll_times_out_and_an_unreachable_endpoint_is_retried() {
    let server = feed_server();
    server.refuse(Some(503));
    server.poll_fault(PollFault::Stall(Duration::from_millis(500)));
    let client = client(&server)
        .polling(Polling {
            timeout: 50 * MS,
            ..poll_cfg()
        })
        .build()
        .unwrap();
    wait_until("a timed-out poll", || client.stats().poll_failures >= 1);
    let error = client.stats().last_poll_error.expect("a poll error");
    assert!(
        matches!(&error, ConnectionError::Poll { url, status: None, reason }
            if url.ends_with("/poll") && reason.to_lowercase().contains("timeout")),
        "{error}"
    );
    client.close();

    // A poll endpoint nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rules = JsonRules::new().poll(format!("http://127.0.0.1:{port}/poll"), Method::Get, None);
    let client = fast(server.url())
        .protocol(rules)
        .polling(Polling {
            after: 1,
            every: 10 * MS,
            ..poll_cfg()
        })
        .build()
        .unwrap();
    wait_until("two failed polls", || client.stats().poll_failures >= 2);
    let error = client.stats().last_poll_error.expect("a poll error");
    assert_eq!(error.status(), None, "nobody answered: {error}");
    let text = error.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("failed"),
        "{text}"
    );
    client.close();
}

#[test]
fn messages_whose_cursors_tie_all_arrive_by_poll() {
    // As seen with createTime: several messages share a cursor, and a later
    // poll brings one more with the same cursor as the last one seen.
    let mut server = server();
    server
        .enable_feed(FeedConfig {
            ties: Some(("ts".into(), 2)),
            ..FeedConfig::default()
        })
        .unwrap();
    server.refuse(Some(503));
    let rules = JsonRules::new()
        .id("/id")
        .cursor("/ts")
        .poll(server.poll_url().unwrap(), Method::Get, None)
        .poll_since("since");
    let client = fast(server.url())
        .protocol(rules)
        .polling(Polling {
            after: 1,
            every: 10 * MS,
            ..poll_cfg()
        })
        .build()
        .unwrap();
    // ts 1, 1, 2 in one poll response...
    for i in 1..=3 {
        server.publish(json!({ "n": i }));
    }
    assert_eq!(seqs(&collect(&client, 3)), vec![1, 2, 3]);
    // ...then, later, ts 2 again (it ties with the highest seen) and 3.
    server.publish(json!({"n": 4}));
    server.publish(json!({"n": 5}));
    assert_eq!(seqs(&collect(&client, 2)), vec![4, 5]);
    // The inclusive polls repeated messages 3 and 4: dropped by id.
    assert!(server.wait_for(WAIT, |l| l.polls.iter().any(|p| p.uri.ends_with("since=3"))));
    wait_until("repeats dropped as duplicates", || {
        client.stats().duplicates >= 1
    });
    assert!(client.try_recv().is_err(), "nothing delivered twice");
    client.close();
}

#[test]
fn a_protocol_that_panics_on_a_poll_response_fails_that_poll_only() {
    struct Fragile(String);
    impl heartline::Protocol for Fragile {
        fn poll_request(&self, _: Option<&heartline::Cursor>) -> Option<heartline::PollRequest> {
            Some(heartline::PollRequest {
                url: self.0.clone(),
                method: Method::Get,
                body: None,
            })
        }
        fn parse_poll(&self, _: &[u8]) -> Result<Vec<heartline::PollItem>, String> {
            panic!("the parser has a bug")
        }
    }
    let server = feed_server();
    server.refuse(Some(503));
    let client = fast(server.url())
        .protocol(Fragile(server.poll_url().unwrap()))
        .polling(Polling {
            after: 1,
            every: 10 * MS,
            ..poll_cfg()
        })
        .build()
        .unwrap();
    wait_until("two failed polls", || client.stats().poll_failures >= 2);
    let error = client.stats().last_poll_error.expect("the poll's error");
    assert!(
        matches!(
            &error,
            heartline::ConnectionError::Callback {
                what: "parse_poll",
                ..
            }
        ),
        "{error}"
    );
    assert!(!client.state().is_closed(), "the client carries on");
    client.close();
}

/// Sends a marker frame and waits until the server has it: whatever the
/// client would have sent before it (acks are written first) has arrived.
fn sync(client: &heartline::Client, server: &TestServer, marker: &str) {
    client.send(marker).unwrap();
    assert!(server.wait_for(WAIT, |l| l.frames.iter().any(|f| f.text() == Some(marker))));
}

/// A feed server and an open client with the default ack mode (acks when
/// the application has finished a batch).
fn open_with_default_acks() -> (TestServer, heartline::Client) {
    let server = feed_server();
    let client = fast(server.url())
        .protocol(rules(&server))
        .delivery(Delivery {
            batch_window: 50 * MS,
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    (server, client)
}

#[test]
fn taking_a_batchs_messages_or_frames_finishes_them_and_acks_them() {
    let (server, client) = open_with_default_acks();
    for i in 1..=2 {
        server.publish(json!({ "n": i }));
    }
    let batch = client.recv_timeout(WAIT).unwrap();
    assert_eq!(seqs(batch.messages()), vec![1, 2]);
    let taken = batch.into_messages();
    assert_eq!(taken.len(), 2);
    wait_until("server saw 2 acks", || server_acked(&server) == 2);
    server.publish(json!({ "n": 3 }));
    let mut batch = client.recv_timeout(WAIT).unwrap();
    let frames = batch.take_frames();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].as_text().unwrap().contains(r#""n":3"#));
    wait_until("server saw 3 acks", || server_acked(&server) == 3);
    drop(batch);
    sync(&client, &server, "marker-1");
    assert_eq!(server_acked(&server), 3, "each once");
}

#[test]
fn by_default_a_batch_is_acked_only_when_the_application_has_finished_it() {
    let (server, client) = open_with_default_acks();
    for i in 1..=3 {
        server.publish(json!({ "n": i }));
    }
    let batch = client.recv_timeout(WAIT).unwrap();
    assert_eq!(seqs(batch.messages()), vec![1, 2, 3]);
    // Handed out, being worked on: not acked (the server would redeliver
    // all three if the device lost power now).
    sync(&client, &server, "marker-1");
    assert_eq!(server_acked(&server), 0, "acked before the work was done");
    assert_eq!(client.stats().acks, 0);
    batch.done();
    wait_until("server saw 3 acks", || server_acked(&server) == 3);
    let acks: Vec<serde_json::Value> = server
        .log()
        .frames
        .iter()
        .filter_map(|f| f.text().filter(|t| t.contains("ack")))
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect();
    assert_eq!(
        acks,
        [
            json!({"type":"ack","ack":"m-1"}),
            json!({"type":"ack","ack":"m-2"}),
            json!({"type":"ack","ack":"m-3"})
        ],
        "in the order of the messages"
    );
    client.close();
}

#[test]
fn a_for_loop_over_a_batch_acks_after_the_loop() {
    let (server, client) = open_with_default_acks();
    server.publish(json!({"n": 1}));
    server.publish(json!({"n": 2}));
    let batch = client.recv_timeout(WAIT).unwrap();
    assert_eq!(batch.len(), 2);
    let mut seen = 0;
    for m in batch {
        assert!(m.id().is_some());
        seen += 1;
        if seen == 2 {
            // Still inside the loop: the last message is not finished yet.
            sync(&client, &server, "marker-2");
            assert_eq!(server_acked(&server), 0);
        }
    }
    wait_until("acked after the loop", || server_acked(&server) == 2);
    // A clone carries no acks: finishing one never acks twice.
    server.publish(json!({"n": 3}));
    let b = client.recv_timeout(WAIT).unwrap();
    drop(b.clone());
    sync(&client, &server, "marker-3");
    assert_eq!(server_acked(&server), 2);
    b.done();
    wait_until("acked once", || server_acked(&server) == 3);
    assert_eq!(client.stats().acks, 3);
    client.close();
}

#[test]
fn a_split_batch_finishes_each_part_on_its_own_and_an_abandoned_part_comes_back() {
    let (server, client) = open_with_default_acks();
    for i in 1..=3 {
        server.publish(json!({ "n": i }));
    }
    let mut first = client.recv_timeout(WAIT).unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.split_off(0).is_none() && first.split_off(3).is_none());
    let rest = first.split_off(1).expect("two parts");
    assert_eq!(seqs(first.messages()), vec![1]);
    assert_eq!(seqs(rest.messages()), vec![2, 3]);
    first.done();
    wait_until("m-1 acked", || server_acked(&server) == 1);
    drop(rest); // abandoned: not acked, handed out again, first
    let again = client.recv_timeout(WAIT).unwrap();
    assert_eq!(seqs(again.messages()), vec![2, 3]);
    sync(&client, &server, "marker-4");
    assert_eq!(server_acked(&server), 1);
    // A new connection gets the two unacked messages again: this process
    // has seen them (duplicates), but not finished them (the application
    // holds them), so it does not ack them now either.
    server.drop_all();
    wait_until("both redelivered", || client.stats().duplicates == 2);
    sync(&client, &server, "marker-5");
    assert_eq!(
        server_acked(&server),
        1,
        "unfinished duplicates are not acked"
    );
    again.done();
    wait_until("finished at last", || server_acked(&server) == 3);
    client.close();
}

/// A poll endpoint that reads each request and never answers (a hung
/// backend, or a long-poll server holding the request). Reports each
/// request it read, and each connection the client then closed.
fn silent_poll_endpoint() -> (
    std::net::SocketAddr,
    crossbeam_channel::Receiver<()>,
    crossbeam_channel::Receiver<()>,
) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let (gone_tx, gone) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let (seen_tx, gone_tx) = (seen_tx.clone(), gone_tx.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => {
                            head.extend_from_slice(&buf[..n]);
                            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                                let _ = seen_tx.send(());
                                head.clear();
                            }
                        }
                        // Held open, silent, until the client is gone.
                        _ => break,
                    }
                }
                let _ = gone_tx.send(());
            });
        }
    });
    (addr, seen, gone)
}

fn waiting_on(addr: std::net::SocketAddr, server: &TestServer) -> ClientBuilder {
    let rules = JsonRules::new().poll(format!("http://{addr}/poll"), Method::Get, None);
    fast(server.url()).protocol(rules).polling(Polling {
        after: 1,
        every: 10 * MS,
        timeout: Duration::from_secs(60),
        ..poll_cfg()
    })
}

#[test]
fn close_while_a_poll_waits_for_its_answer_is_prompt() {
    let server = server();
    server.refuse(Some(503));
    let (addr, requests, gone) = silent_poll_endpoint();
    let client = waiting_on(addr, &server).build().unwrap();
    requests.recv_timeout(WAIT).expect("a poll request");
    let t = std::time::Instant::now();
    client.close();
    let took = t.elapsed();
    // The poll's own timeout is 60 s; close() does not wait it out.
    assert!(took < Duration::from_secs(5), "close took {took:?}");
    assert_eq!(
        client.state(),
        State::Closed(heartline::CloseReason::Requested)
    );
    gone.recv_timeout(WAIT)
        .expect("the poll's connection is closed");
    // Ending the poll is not a failed poll.
    let stats = client.stats();
    assert_eq!(stats.poll_failures, 0, "{:?}", stats.last_poll_error);
}

#[test]
fn a_socket_that_comes_back_ends_a_poll_that_waits_for_its_answer() {
    let server = server();
    server.refuse(Some(503));
    let (addr, requests, gone) = silent_poll_endpoint();
    let client = waiting_on(addr, &server).build().unwrap();
    let events = client.events();
    requests.recv_timeout(WAIT).expect("a poll request");
    server.refuse(None);
    // Open is reported once the poller has stopped: within WAIT, not after
    // the poll's 60 s timeout.
    wait_event(&events, "open", |e| e.state == State::Open);
    gone.recv_timeout(WAIT)
        .expect("the poll's connection is closed");
    server.push("by the socket");
    assert_eq!(texts(&collect(&client, 1)), vec!["by the socket"]);
    client.close();
}

/// An echo server, as a test rig or a chat room is: the client's own acks
/// come back to it. An ack goes only for a message with the id it copies,
/// so the welcome frame and the echoed ack (which have none) get no ack,
/// and nothing feeds itself.
#[test]
fn json_rules_ack_only_messages_that_carry_every_field_it_copies() {
    let server = server();
    server.echo(true);
    server.set_greeting(vec![heartline::Frame::from(r#"{"type":"welcome"}"#)]);
    let client = fast(server.url())
        .protocol(
            heartline::JsonRules::new()
                .id("/id")
                .ack(json!({"type": "ack"}), [("/id", "ack")]),
        )
        .build()
        .unwrap();
    let got = collect(&client, 1);
    assert_eq!(got[0].json(), Some(json!({"type": "welcome"})));
    client.send(json!({"id": "x"})).unwrap();
    // The echo of {"id":"x"} is acked; the echo of that ack is not.
    let got = collect(&client, 2);
    assert_eq!(got[1].json(), Some(json!({"type": "ack", "ack": "x"})));
    sync(&client, &server, "marker");
    let acks = server
        .log()
        .frames
        .iter()
        .filter(|f| f.text().is_some_and(|t| t.contains(r#""type":"ack""#)))
        .count();
    assert_eq!(acks, 1, "one ack, for the one message with an id");
    assert_eq!(client.stats().acks, 1);
    client.close();
}

/// While polling, the WebSocket attempts go on in the background: the
/// application hears of the change to polling once, not of every attempt.
#[test]
fn one_polling_event_per_change_of_transport_not_per_attempt() {
    let server = feed_server();
    server.refuse(Some(503));
    let client = client(&server).build().unwrap();
    let events = client.events();
    let (ev, _) = wait_event(&events, "polling", |e| {
        matches!(e.state, State::Polling { .. })
    });
    let State::Polling { attempt, .. } = ev.state else {
        unreachable!()
    };
    wait_until(
        "five more attempts while polling",
        || matches!(client.stats().state, State::Polling { attempt: a, .. } if a >= attempt + 5),
    );
    let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(seen.is_empty(), "one polling event, then none: {seen:?}");
    // The socket back is a change: Open.
    server.refuse(None);
    wait_open(&events);
    client.close();
}

fn acked_ids(server: &TestServer) -> Vec<String> {
    server
        .log()
        .frames
        .iter()
        .filter_map(|f| f.text())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .filter_map(|v| v["ack"].as_str().map(str::to_owned))
        .collect()
}

/// Ordinary Rust control flow in the handler: a panic (caught by the
/// application, which goes on receiving), an `Err` returned half way with
/// `?`, a `break`. The message being processed and those after it are
/// neither finished nor acked, and come back first; every message is
/// processed in the end and acked only after.
#[test]
fn a_handler_that_panics_fails_or_breaks_acks_nothing_it_did_not_process() {
    let (server, client) = open_with_default_acks();
    for i in 1..=8 {
        server.publish(json!({ "n": i }));
    }
    let mut processed: Vec<String> = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    let mut early: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while processed.len() < 8 {
        let batch = client.batches().recv_deadline(deadline).expect("a batch");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for m in &batch {
                let id = m.id().unwrap_or_default();
                match id {
                    "m-3" if !failed.contains(&"m-3") => {
                        failed.push("m-3");
                        panic!("handler panics on m-3");
                    }
                    "m-5" if !failed.contains(&"m-5") => {
                        failed.push("m-5");
                        return Err(format!("cannot handle {id}"));
                    }
                    "m-7" if !failed.contains(&"m-7") => {
                        failed.push("m-7");
                        break;
                    }
                    _ => {}
                }
                // Nothing may be acked before it is processed (noted here,
                // asserted outside: a panic in here is the handler's).
                if acked_ids(&server).contains(&id.to_owned()) {
                    early.push(id.to_owned());
                }
                processed.push(id.to_owned());
            }
            Ok(())
        }));
        drop(batch);
        if !matches!(outcome, Ok(Ok(()))) || failed.len() == 3 {
            sync(&client, &server, &format!("marker-{}", failed.len()));
            let acked = acked_ids(&server);
            for id in &failed {
                if !processed.iter().any(|p| p == id) {
                    assert!(!acked.contains(&(*id).to_owned()), "{id} acked unprocessed");
                }
            }
        }
    }
    assert_eq!(failed, ["m-3", "m-5", "m-7"]);
    assert!(early.is_empty(), "acked before processed: {early:?}");
    let want: Vec<String> = (1..=8).map(|i| format!("m-{i}")).collect();
    let mut got = processed.clone();
    got.sort();
    assert_eq!(got, want, "each processed once");
    wait_until("all acked", || server_acked(&server) == 8);
    client.close();
}

/// `for m in batch` (by value) leaves the message in hand unfinished too.
#[test]
fn leaving_a_by_value_loop_early_hands_the_rest_out_again() {
    let (server, client) = open_with_default_acks();
    for i in 1..=3 {
        server.publish(json!({ "n": i }));
    }
    let batch = client.recv_timeout(WAIT).unwrap();
    assert_eq!(batch.len(), 3);
    for m in batch {
        if m.id() == Some("m-2") {
            break;
        }
    }
    let again = client.recv_timeout(WAIT).unwrap();
    assert_eq!(
        seqs(again.messages()),
        vec![2, 3],
        "first, before newer ones"
    );
    sync(&client, &server, "marker");
    assert_eq!(acked_ids(&server), ["m-1"]);
    again.finish_first(1);
    drop(again);
    wait_until("m-2 acked", || server_acked(&server) == 2);
    let last = client.recv_timeout(WAIT).unwrap();
    assert_eq!(seqs(last.messages()), vec![3]);
    last.done();
    wait_until("all acked", || server_acked(&server) == 3);
    client.close();
}
