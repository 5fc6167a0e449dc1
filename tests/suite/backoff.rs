use crate::common;
use common::*;

use std::time::Duration;

use heartline::{Backoff, CloseReason, Reconnect, RecvTimeoutError, State};

#[test]
fn refused_upgrades_back_off_and_give_up_after_max_attempts() {
    let server = server();
    server.refuse(Some(503));
    let client = fast(server.url())
        .reconnect(Reconnect {
            backoff: Backoff::Linear {
                initial: 5 * MS,
                step: 10 * MS,
                max: Duration::from_secs(1),
            },
            max_attempts: 3,
            ..common::reconnect()
        })
        .build()
        .unwrap();
    let events = client.events();
    let (last, seen) = wait_event(&events, "closed", |e| e.state.is_closed());
    assert_eq!(
        last.state,
        State::Closed(CloseReason::GaveUp { attempts: 3 })
    );
    let waits: Vec<(u32, Duration)> = seen
        .iter()
        .filter_map(|e| match e.state {
            State::Reconnecting { attempt, delay } => Some((attempt, delay)),
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![(2, 15 * MS), (3, 25 * MS)]);
    let error = seen.iter().find_map(|e| e.error.as_ref());
    assert_eq!(error.and_then(|e| e.status()), Some(503), "{error:?}");
    assert_eq!(
        server.log().upgrades.len(),
        3,
        "exactly max_attempts attempts"
    );
    // The receiver ends and sending is refused.
    assert_eq!(
        client.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Closed
    );
    assert!(client.send("late").is_err());
    assert_eq!(client.stats().failed_attempts, 3);
}

#[test]
fn connections_that_drop_before_min_uptime_count_as_failures() {
    let server = server();
    let client = fast(server.url())
        .reconnect(Reconnect {
            min_uptime: Duration::from_secs(60),
            ..common::reconnect()
        })
        .build()
        .unwrap();
    let events = client.events();
    for attempt in 2..=4u32 {
        wait_open(&events);
        server.drop_all();
        let (ev, _) = wait_event(&events, "reconnecting", |e| {
            matches!(e.state, State::Reconnecting { .. })
        });
        // The count keeps rising: no reset, no flapping at full speed.
        assert!(
            matches!(ev.state, State::Reconnecting { attempt: a, .. } if a == attempt),
            "{ev:?}"
        );
    }
    client.close();
}

#[test]
fn a_connection_that_stayed_up_resets_the_attempt_count() {
    let server = server();
    let client = fast(server.url())
        .reconnect(Reconnect {
            min_uptime: Duration::ZERO,
            ..common::reconnect()
        })
        .build()
        .unwrap();
    let events = client.events();
    for _ in 0..3 {
        wait_open(&events);
        server.drop_all();
        let (ev, _) = wait_event(&events, "reconnecting", |e| {
            matches!(e.state, State::Reconnecting { .. })
        });
        assert!(
            matches!(ev.state, State::Reconnecting { attempt: 1, .. }),
            "{ev:?}"
        );
    }
    client.close();
}

#[test]
fn an_unreachable_port_is_retried_with_a_clear_error() {
    let (_reserved, port) = refusing_port();
    let client = fast(format!("ws://127.0.0.1:{port}/"))
        .reconnect(Reconnect {
            max_attempts: 2,
            ..common::reconnect()
        })
        .build()
        .unwrap();
    let (ev, seen) = wait_event(&client.events(), "closed", |e| e.state.is_closed());
    assert_eq!(ev.state, State::Closed(CloseReason::GaveUp { attempts: 2 }));
    let why = seen
        .iter()
        .find_map(|e| e.error.as_ref().map(|e| e.to_string()))
        .unwrap_or_default();
    assert!(
        why.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{why}"
    );
}

#[test]
fn giving_up_says_why_in_the_closed_event_itself() {
    // A device that tries once (max_attempts 1) sees no Reconnecting event:
    // the Closed event is the only place the cause can be, and an
    // application reading events must not have to ask stats() for it.
    let (_reserved, port) = refusing_port();
    let ev = one_attempt(fast(format!("ws://127.0.0.1:{port}/")));
    assert_eq!(ev.state, State::Closed(CloseReason::GaveUp { attempts: 1 }));
    if let State::Closed(reason) = &ev.state {
        assert_eq!(reason.to_string(), "gave up after 1 attempt");
    }
    let why = ev.error.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        why.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "the Closed event carries no cause: {ev:?}"
    );
}

/// The Closed event of one attempt against a server refusing the upgrade
/// with `status` and `headers`.
fn refused_once(status: u16, headers: &[(&str, &str)]) -> heartline::Event {
    let server = server();
    server.refuse_with(Some(status), headers);
    one_attempt(fast(server.url()))
}

#[test]
fn a_refused_upgrade_says_what_to_do_for_its_status() {
    for (status, headers, advice) in [
        (401, vec![], "credentials"),
        (403, vec![], "credentials"),
        (404, vec![], "path"),
        (400, vec![], "upgrade request"),
        (426, vec![], "WebSocket endpoint"),
        (429, vec![], "limits"),
        (503, vec![("Retry-After", "1")], "temporary"),
        (502, vec![], "proxy"),
        (
            301,
            vec![("Location", "wss://edge2.example.com/ws")],
            "redirects to wss://edge2.example.com/ws",
        ),
        (302, vec![], "redirect"),
    ] {
        let ev = refused_once(status, &headers);
        let text = why(&ev.error);
        assert!(
            text.contains(&format!("HTTP {status}")) && text.contains(advice),
            "{status}: {text}"
        );
    }
}

#[test]
fn a_redirect_with_a_token_in_its_location_never_shows_the_token() {
    let ev = refused_once(
        307,
        &[("Location", "wss://edge2.example.com/ws?token=SECRET123")],
    );
    let e = ev.error.expect("the cause");
    let shown = format!("{e} / {e:?} / {:?}", e.header("location"));
    assert!(!shown.contains("SECRET123"), "{shown}");
    assert!(shown.contains("edge2.example.com/ws"), "{shown}");
}

#[test]
fn a_plain_http_answer_says_it_is_not_a_websocket_endpoint() {
    // As a captive portal (or any web server at the wrong path) answers:
    // 200 and a page. The test server cannot answer 200 to an upgrade, so
    // a raw peer does.
    let (addr, peer) = answer_once(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 12\r\n\r\n<p>login</p>",
    );
    let ev = one_attempt(fast(format!("ws://{addr}/ws")));
    let text = why(&ev.error);
    assert_eq!(ev.error.as_ref().and_then(|e| e.status()), Some(200));
    assert!(
        text.contains("not a WebSocket endpoint"),
        "the advice: {text}"
    );
    let _ = peer.join();
}
