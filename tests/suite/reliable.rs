//! Reliable outbound frames: kept until the server acks them, sent again
//! after every reconnect (after the hello frames, before newer frames).
use crate::common;
use common::*;

use heartline::{Frame, JsonRules, Limits, Timeouts};
use serde_json::json;

fn hello(_: &heartline::HelloContext) -> Vec<Frame> {
    vec![Frame::from(r#"{"type":"hello"}"#)]
}

fn rules() -> JsonRules {
    JsonRules::new().acked_by("/type", json!("ack"), "/id")
}

#[test]
fn an_unacked_reliable_frame_is_sent_again_after_a_reconnect_until_the_server_acks_it() {
    let server = server();
    server.ack_frames(Some("/id"));
    server.withhold_acks(true); // the server "forgets" its acks for now
    let client = fast(server.url())
        .protocol(rules())
        .hello(hello)
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    client
        .send_reliable("r-1", json!({"type": "report", "id": "r-1"}))
        .unwrap();
    client.send("plain").unwrap();
    client
        .send_reliable("r-2", json!({"type": "report", "id": "r-2"}))
        .unwrap();
    assert!(server.wait_for(WAIT, |l| l.texts_of(1).len() >= 4));
    assert_eq!(client.stats().reliable_pending, 2);

    server.withhold_acks(false);
    server.drop_all();
    wait_open(&events);
    client.send("newer").unwrap();
    assert!(server.wait_for(WAIT, |l| l.texts_of(2).len() >= 4));
    assert_eq!(
        server.log().texts_of(2),
        vec![
            r#"{"type":"hello"}"#,
            r#"{"id":"r-1","type":"report"}"#,
            r#"{"id":"r-2","type":"report"}"#,
            "newer"
        ],
        "kept frames go after the hello and before newer frames; the plain frame is not repeated"
    );
    // The server acked both this time: nothing is kept, and the acks were
    // consumed, not delivered.
    wait_until("both frames acked", || client.stats().reliable_pending == 0);
    assert_eq!(client.stats().outbound_bytes, 0, "their budget came back");
    assert!(client.try_recv().is_err(), "acks are not messages");

    server.drop_all();
    wait_open(&events);
    client.send("after").unwrap();
    assert!(server.wait_for(WAIT, |l| l.texts_of(3).len() >= 2));
    assert_eq!(
        server.log().texts_of(3),
        vec![r#"{"type":"hello"}"#, "after"],
        "acked frames are not sent again"
    );
}

#[test]
fn a_protocol_rule_makes_send_reliable_and_the_budget_bounds_waiting_frames() {
    let server = server();
    server.ack_frames(Some("/id"));
    server.withhold_acks(true);
    let client = fast(server.url())
        .protocol(rules().reliable("/id"))
        .hello(hello)
        .limits(Limits {
            outbound_bytes: 1024,
            ..Limits::default()
        })
        .timeouts(Timeouts {
            send: 20 * MS,
            ..common::timeouts()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    // ~170 bytes each with the bookkeeping: the sixth no longer fits while
    // the server withholds its acks.
    let frame = |i: usize| Frame::from(json!({"id": format!("r-{i}"), "pad": "x".repeat(80)}));
    let mut sent = 0;
    let refused = loop {
        match client.send(frame(sent)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "the budget never filled");
    };
    assert!(
        (4..=10).contains(&sent),
        "{sent} frames fit in 1 KiB with 64 bytes of bookkeeping each"
    );
    assert!(
        matches!(&refused, heartline::SendError::Timeout { frame, .. } if frame.as_text().is_some()),
        "handed back: {refused:?}"
    );
    assert_eq!(client.stats().reliable_pending, sent);
    // Acks make room again.
    server.withhold_acks(false);
    server.drop_all();
    wait_until("every frame acked", || client.stats().reliable_pending == 0);
    client.send(frame(999)).unwrap();
}
