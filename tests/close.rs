mod common;
use common::*;

use std::time::{Duration, Instant};

use heartline::testkit::Sent;
use heartline::{
    CloseReason, ConnectionError, Delivery, Limits, Reconnect, RecvTimeoutError, State, Timeouts,
};

#[test]
fn close_sends_1000_returns_promptly_and_never_reconnects() {
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    let t = Instant::now();
    client.close();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "close took {:?}",
        t.elapsed()
    );
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .any(|r| r.sent == Sent::Close(Some(1000)))));
    assert_eq!(client.state(), State::Closed(CloseReason::Requested));
    let (ev, _) = wait_event(&events, "closed", |e| e.state.is_closed());
    assert_eq!(ev.state, State::Closed(CloseReason::Requested));
    // Every heartline thread has been joined: nothing is left to reconnect.
    assert_eq!(server.log().accepted(), 1);
    assert_eq!(
        events.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Closed
    );
    client.close(); // a second close is harmless
}

#[test]
fn dropping_the_last_handle_closes_cleanly() {
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    let clone = client.clone();
    drop(client);
    assert_eq!(clone.state(), State::Open, "a clone keeps the connection");
    let batches = clone.batches();
    drop(clone);
    // The receivers are handles too: still open, still delivering.
    server.push("still here");
    let got = batches.recv_timeout(WAIT).expect("still running");
    assert_eq!(got.messages()[0].text(), Some("still here"));
    drop(got);
    drop(batches);
    drop(events);
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .any(|r| r.sent == Sent::Close(Some(1000)))));
}

/// `let b = Client::builder(url).build()?.batches(); for x in b {}`: the
/// receiver keeps the client running (it ended at once, with nothing).
#[test]
fn a_receiver_outliving_its_client_keeps_it_running_until_dropped() {
    let server = server();
    let batches = fast(server.url()).build().unwrap().batches();
    assert!(server.wait_open(1, WAIT));
    server.push("one");
    let got = batches.recv_timeout(WAIT).expect("the client still runs");
    assert_eq!(got.messages()[0].text(), Some("one"));
    drop(got);
    let events_only = {
        let client = fast(server.url()).build().unwrap();
        client.events()
    };
    wait_open(&events_only);
    drop(batches);
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .filter(|r| r.sent == Sent::Close(Some(1000)))
        .count()
        == 1));
    // The last handle of the second client gone: it closes too.
    drop(events_only);
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .filter(|r| r.sent == Sent::Close(Some(1000)))
        .count()
        == 2));
}

#[test]
fn a_server_close_reconnects() {
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    server.close_all(1001, "going away");
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    assert!(
        matches!(&ev.error, Some(ConnectionError::ServerClosed { code: 1001, reason })
            if reason == "going away"),
        "{:?}",
        ev.error
    );
    wait_open(&events);
    assert_eq!(server.log().accepted(), 2);
    client.close();
}

#[test]
fn a_terminal_close_code_stops_the_client_and_ends_the_receiver() {
    let server = server();
    let client = fast(server.url())
        .reconnect(Reconnect {
            terminal_close_codes: vec![4001],
            ..common::reconnect()
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    server.push("last words");
    assert_eq!(texts(&collect(&client, 1)), vec!["last words"]);
    server.close_all(4001, "account disabled");
    let (ev, _) = wait_event(&events, "closed", |e| e.state.is_closed());
    assert_eq!(
        ev.state,
        State::Closed(CloseReason::Terminal {
            code: 4001,
            reason: "account disabled".into()
        })
    );
    // The event also carries the server's close as the cause.
    assert!(
        matches!(
            ev.error,
            Some(ConnectionError::ServerClosed { code: 4001, .. })
        ),
        "{ev:?}"
    );
    assert_eq!(client.batches().count(), 0, "the iterator ends");
    assert_eq!(server.log().accepted(), 1);
}

#[test]
fn close_while_waiting_to_reconnect_is_prompt() {
    let server = server();
    server.refuse(Some(503));
    let client = fast(server.url())
        .reconnect(Reconnect {
            backoff: heartline::Backoff::Fixed(Duration::from_secs(30)),
            ..common::reconnect()
        })
        .build()
        .unwrap();
    wait_event(&client.events(), "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    let t = Instant::now();
    client.close();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "close took {:?}",
        t.elapsed()
    );
    assert_eq!(client.state(), State::Closed(CloseReason::Requested));
}

#[test]
fn the_batch_iterator_hands_out_everything_received_then_ends_after_close() {
    let server = server();
    let client = fast(server.url())
        .delivery(Delivery {
            batch_window: Duration::from_secs(5),
            ..common::delivery()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    for i in 0..3 {
        server.push(format!("m{i}"));
    }
    wait_until("3 frames read", || client.stats().inbound_queued == 3);
    client.close();
    let all: Vec<String> = client.batches().flat_map(|b| texts(b.messages())).collect();
    assert_eq!(all, vec!["m0", "m1", "m2"]);
}

/// The state letter of this process's thread named `name` in
/// /proc/self/task (`S` while it sleeps), if there is one.
fn thread_state(name: &str) -> Option<char> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // "pid (comm) S ...": the letter after the last ')'.
            return stat.rsplit(')').next()?.trim_start().chars().next();
        }
    }
    None
}

/// A `send` waiting for room (in frames or in bytes) returns
/// `SendError::Closed` as soon as the client is closed, not after
/// `send_timeout`.
#[test]
fn close_wakes_a_send_that_waits_for_room() {
    for (which, by_bytes) in [("count", false), ("bytes", true)] {
        // Nobody listens there: every frame stays queued.
        let (_reserved, port) = refusing_port();
        let url = format!("ws://127.0.0.1:{port}/");
        let b = fast(url).timeouts(Timeouts {
            send: Duration::from_secs(60),
            ..common::timeouts()
        });
        let client = if by_bytes {
            b.limits(Limits {
                outbound_bytes: 1024,
                ..Limits::default()
            })
            .build()
            .unwrap()
        } else {
            b.limits(Limits {
                outbound_capacity: 2,
                ..Limits::default()
            })
            .build()
            .unwrap()
        };
        let frame = "x".repeat(if by_bytes { 600 } else { 10 });
        while client.try_send(frame.as_str()).is_ok() {}
        let name = format!("wsend-{which}"); // comm keeps 15 bytes
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let c = client.clone();
        let f = frame.clone();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _ = done_tx.send(c.send(f.as_str()));
            })
            .unwrap();
        // The sender is asleep in send() (waiting for room).
        wait_until("the sender to wait", || thread_state(&name) == Some('S'));
        assert!(done.is_empty(), "{which}: send returned before close");
        let t = Instant::now();
        client.close();
        let got = done
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{which}: send still waiting after close"));
        assert!(
            matches!(got, Err(heartline::SendError::Closed(_))),
            "{which}: {got:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{which}: {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn close_during_a_handshake_the_server_never_answers_is_prompt() {
    // A server (or a proxy, or a captive portal) that accepts TCP and then
    // says nothing: the attempt would wait out its handshake timeout (the
    // upgrade's, or the TLS handshake's for wss://), and close() with it.
    for scheme in ["ws", "wss"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, accepted) = crossbeam_channel::bounded(1);
        let silent = std::thread::spawn(move || {
            let conn = listener.accept().map(|(s, _)| s);
            let _ = accepted_tx.send(());
            // Held open, silent, until the client is gone.
            if let Ok(mut s) = conn {
                let mut buf = [0u8; 4096];
                while matches!(std::io::Read::read(&mut s, &mut buf), Ok(n) if n > 0) {}
            }
        });
        let client = fast(format!("{scheme}://{addr}/"))
            .timeouts(Timeouts {
                handshake: Duration::from_secs(60),
                ..common::timeouts()
            })
            .build()
            .unwrap();
        accepted.recv_timeout(WAIT).expect("the client connected");
        let t = Instant::now();
        client.close();
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{scheme}: close took {took:?}"
        );
        assert_eq!(client.state(), State::Closed(CloseReason::Requested));
        // The client's socket is closed: the silent peer sees its end.
        silent.join().unwrap();
    }
}
