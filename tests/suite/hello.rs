use crate::common;
use common::*;

use heartline::{Frame, Limits, State, Timeouts};

#[test]
fn hello_frames_go_first_on_every_connect_then_queued_frames_in_order() {
    let server = server();
    server.refuse(Some(503));
    let client = fast(server.url())
        .hello(|ctx| {
            vec![
                Frame::from(format!(
                    r#"{{"type":"sub","service":"a","n":{}}}"#,
                    ctx.reconnects
                )),
                Frame::from(format!(
                    r#"{{"type":"sub","service":"b","n":{}}}"#,
                    ctx.reconnects
                )),
            ]
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    // Sent while no socket is open: kept and flushed after the hellos.
    client.send("q1").unwrap();
    client.send(serde_json::json!({"q": 2})).unwrap();
    assert_eq!(client.stats().outbound_queued, 2);
    server.refuse(None);
    wait_open(&events);
    assert!(server.wait_for(WAIT, |l| l.frames.len() >= 4));
    let log = server.log();
    let first = log.upgrades.iter().find(|u| u.accepted).unwrap().conn;
    assert_eq!(
        log.texts_of(first),
        vec![
            r#"{"type":"sub","service":"a","n":0}"#,
            r#"{"type":"sub","service":"b","n":0}"#,
            "q1",
            r#"{"q":2}"#
        ]
    );

    server.drop_all();
    wait_open(&events);
    client.send("q3").unwrap();
    assert!(server.wait_for(WAIT, |l| l.frames.len() >= 7));
    let log = server.log();
    let second = log
        .upgrades
        .iter()
        .filter(|u| u.accepted)
        .nth(1)
        .unwrap()
        .conn;
    assert_eq!(
        log.texts_of(second),
        vec![
            r#"{"type":"sub","service":"a","n":1}"#,
            r#"{"type":"sub","service":"b","n":1}"#,
            "q3"
        ]
    );
    client.close();
}

#[test]
fn a_full_outbound_queue_hands_the_frame_back() {
    let server = server();
    server.refuse(Some(503));
    let client = fast(server.url())
        .limits(Limits {
            outbound_capacity: 2,
            ..Limits::default()
        })
        .timeouts(Timeouts {
            send: 10 * MS,
            ..common::timeouts()
        })
        .build()
        .unwrap();
    client.try_send("a").unwrap();
    client.try_send("b").unwrap();
    let err = client.try_send("c").unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.into_frame(), Frame::from("c"));
    let err = client.send("d").unwrap_err();
    assert!(
        matches!(&err, heartline::SendError::Timeout { capacity: 2, .. }),
        "{err}"
    );
    assert_eq!(err.into_frame(), Frame::from("d"), "handed back");
    server.refuse(None);
    assert!(server.wait_for(WAIT, |l| l.frames.len() >= 2));
    assert_eq!(
        server.log().texts_of(
            server
                .log()
                .upgrades
                .iter()
                .find(|u| u.accepted)
                .unwrap()
                .conn
        ),
        vec!["a", "b"]
    );
    // Written frames give their places back: two more fit, and once they
    // are written, two more again.
    client.try_send("e").unwrap();
    client.try_send("f").unwrap();
    assert!(server.wait_for(WAIT, |l| l.frames.len() >= 4));
    for frame in ["g", "h"] {
        client.try_send(frame).unwrap();
    }
    assert!(server.wait_for(WAIT, |l| l.frames.len() >= 6));
    client.close();
}
