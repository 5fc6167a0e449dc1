//! The messmonitor port, end to end, with millisecond timers: the same
//! configuration as `examples/messmonitor.rs` (included from there).
use crate::common;
use common::*;

#[path = "../../examples/messmonitor.rs"]
mod example;

use std::time::Duration;

use heartline::testkit::Recorded;
use heartline::{State, Via};
use serde_json::{json, Value};

/// 60 s heartbeat -> 120 ms, 30 s reconnect step -> 60 ms, 5 s window -> 10 ms.
const SCALE: f64 = 0.002;

fn json_of(r: &Recorded) -> Option<Value> {
    r.text().and_then(|t| serde_json::from_str(t).ok())
}

#[test]
fn messmonitor_on_heartline_frame_by_frame() {
    init();
    let server = example::server().unwrap();
    let user = example::User {
        user_id: 7,
        tenant_id: 3,
        ws_key: 1_700_000_000_000,
    };
    let client = example::monitor(&server.url(), &example::get_msg_url(&server), &user, SCALE)
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);

    // Hello wsType 2 first on the connection, with who we are.
    assert!(server.wait_for(WAIT, |l| !l.frames.is_empty()));
    let hello = json_of(&server.log().frames[0]).unwrap();
    assert_eq!(
        hello,
        json!({"wsType": 2, "userId": 7, "tenantId": 3, "wsKey": 1_700_000_000_000u64})
    );

    // Pushes of each type land in the right pools, and each is acked.
    for (n, t) in [1, 2, 3].into_iter().enumerate() {
        example::push(&server, t, n as u64 + 1);
    }
    let got = collect(&client, 3);
    let kinds: Vec<Vec<String>> = got.iter().map(|m| m.kinds().to_vec()).collect();
    assert_eq!(
        kinds,
        vec![vec!["text"], vec!["audio"], vec!["text", "audio"]]
    );
    assert!(got.iter().all(|m| m.via() == Via::Ws));
    assert!(server.wait_for(WAIT, |l| {
        l.frames
            .iter()
            .filter_map(json_of)
            .filter(|v| v["wsType"] == 3)
            .count()
            == 3
    }));
    let acks: Vec<Value> = server
        .log()
        .frames
        .iter()
        .filter_map(json_of)
        .filter(|v| v["wsType"] == 3)
        .collect();
    assert_eq!(
        acks[2],
        json!({"wsType": 3, "userId": 7, "tenantId": 3, "wsKey": 1_700_000_000_000u64, "pushType": 3, "msgDataId": "m-3"})
    );
    assert_eq!(server.feed_counts(), (3, 3));

    // Heartbeats wsType 1 go out; the server's replies are not messages.
    assert!(server.wait_for(WAIT, |l| {
        l.frames
            .iter()
            .filter_map(json_of)
            .filter(|v| v["wsType"] == 1 && v["userId"] == 7)
            .count()
            >= 2
    }));
    assert!(client.try_recv().is_err());

    // The socket goes down: delays step by 30 s (scaled), and after three
    // failed reconnects the client polls.
    server.refuse(Some(503));
    server.drop_all();
    let (ev, seen) = wait_event(&events, "polling", |e| {
        matches!(e.state, State::Polling { .. })
    });
    let delays: Vec<Duration> = seen
        .iter()
        .filter_map(|e| match e.state {
            State::Reconnecting { delay, .. } => Some(delay),
            _ => None,
        })
        .collect();
    let step = example::timer(30.0, SCALE);
    assert_eq!(delays, vec![Duration::ZERO, step, step * 2], "{seen:?}");
    assert_eq!(
        ev.state,
        State::Polling {
            attempt: 4,
            delay: step * 3
        }
    );

    // getMsg is POSTed with {"requestType":2}; only messages not seen
    // before are delivered (getMsg returns old ones too). A voice push
    // arrives twice, as the original has it: its text item for the text
    // pool, its voice URL (a plain string in voiceUrls) for the audio pool.
    example::push(&server, 3, 4);
    let polled = collect(&client, 2);
    assert!(polled.iter().all(|m| m.via() == Via::Poll));
    assert_eq!(polled[0].kinds(), ["text"]);
    assert_eq!(polled[0].json().unwrap()["msgDataId"], "m-4");
    assert_eq!(polled[1].kinds(), ["audio"]);
    assert_eq!(polled[1].text(), Some(example::voice_url(4).as_str()));
    let polls = server.log().polls;
    assert!(!polls.is_empty());
    assert!(polls
        .iter()
        .all(|p| p.method == "POST" && p.uri == "/getMsg" && p.body == r#"{"requestType":2}"#));
    // Every later getMsg repeats m-1..m-4 and the voice URL: all dropped.
    wait_until("old getMsg items dropped", || {
        client.stats().duplicates >= 5
    });

    // The socket is back: polling stops once it has proved itself.
    server.refuse(None);
    wait_event(&events, "open", |e| e.state == State::Open);
    let polls_at_open = server.log().polls.len();
    example::push(&server, 2, 5);
    let back = collect(&client, 1);
    assert_eq!(back[0].via(), Via::Ws);
    assert_eq!(back[0].json().unwrap()["msgDataId"], "m-5");
    assert_eq!(server.log().polls.len(), polls_at_open);
    // Nothing was delivered twice, though the server redelivered m-4 (it
    // was never acked: polls are not).
    assert!(client.try_recv().is_err());
    client.close();
}
