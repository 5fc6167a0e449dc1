mod common;
use common::*;

use heartline::testkit::Sent;
use heartline::{Frame, ReplyRule};

#[test]
fn ping_heartbeats_are_sent_on_an_idle_link_and_time_the_round_trip() {
    let server = server();
    let client = fast(server.url())
        .heartbeat_interval(30 * MS)
        .server_timeout(500 * MS)
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .filter(|r| r.sent == Sent::Ping)
        .count()
        >= 3));
    wait_until("rtt measured", || client.stats().rtt.is_some());
    let stats = client.stats();
    assert!(stats.heartbeats >= 3, "{stats:?}");
    assert_eq!(
        stats.connects, 1,
        "answered pings must not cause reconnects"
    );
    client.close();
}

#[test]
fn application_heartbeat_replies_are_consumed_not_delivered() {
    let server = server();
    server.reply(
        ReplyRule::parse(r#"{"wsType":1}"#),
        r#"{"wsType":1,"ok":true}"#,
    );
    let client = fast(server.url())
        .heartbeat_frame(r#"{"wsType":1,"userId":7}"#)
        .reply(ReplyRule::parse(r#"{"wsType":1}"#))
        .heartbeat_interval(20 * MS)
        .server_timeout(500 * MS)
        .build()
        .unwrap();
    wait_open(&client.events());
    assert!(server.wait_for(WAIT, |l| {
        l.frames
            .iter()
            .filter(|r| r.text() == Some(r#"{"wsType":1,"userId":7}"#))
            .count()
            >= 3
    }));
    wait_until("rtt measured", || client.stats().rtt.is_some());
    server.push(r#"{"wsType":4,"msgDataId":"m1"}"#);
    let got = collect(&client, 1);
    assert_eq!(texts(&got), vec![r#"{"wsType":4,"msgDataId":"m1"}"#]);
    // Nothing else is waiting: the replies never reached the application.
    assert!(client.try_recv().is_err());
    assert_eq!(client.stats().inbound_queued, 0);
    client.close();
}

#[test]
fn text_ping_pong_heartbeat_like_the_singleton_client() {
    let server = server();
    server.reply(ReplyRule::Text("ping".into()), "pong");
    let client = fast(server.url())
        .heartbeat(heartline::Heartbeat::Frame(Frame::from("ping")))
        .reply(ReplyRule::Text("pong".into()))
        .heartbeat_interval(20 * MS)
        .server_timeout(500 * MS)
        .build()
        .unwrap();
    wait_open(&client.events());
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .filter(|r| r.text() == Some("ping"))
        .count()
        >= 3));
    server.push("news");
    assert_eq!(texts(&collect(&client, 1)), vec!["news"]);
    assert_eq!(client.stats().connects, 1);
    client.close();
}
