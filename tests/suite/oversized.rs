use crate::common;
use common::*;

use heartline::testkit::Sent;
use heartline::{ConnectionError, Frame, Limits, OverLimit, State};

fn limited(server: &heartline::testkit::TestServer) -> heartline::Client {
    limited_with(server, OverLimit::Drop)
}

fn limited_with(server: &heartline::testkit::TestServer, policy: OverLimit) -> heartline::Client {
    fast(server.url())
        .limits(Limits {
            max_message_size: 1024,
            max_frame_size: 1024,
            on_too_large: policy,
            ..Limits::default()
        })
        .build()
        .unwrap()
}

fn closed_with_1009(server: &heartline::testkit::TestServer) -> bool {
    server
        .log()
        .frames
        .iter()
        .any(|r| r.sent == Sent::Close(Some(1009)))
}

#[test]
fn an_oversized_message_is_dropped_and_the_messages_behind_it_arrive() {
    let server = server();
    let client = limited(&server);
    wait_open(&client.events());
    // One burst: the messages behind the big one are already on their way
    // when it arrives, and a server that only pushes never sends them again.
    server.push_many(vec![
        Frame::from("good-1"),
        Frame::from("x".repeat(4096)),
        Frame::Binary(vec![7; 70_000]),
        Frame::from("good-2"),
    ]);
    assert_eq!(texts(&collect(&client, 2)), vec!["good-1", "good-2"]);
    let stats = client.stats();
    assert_eq!(stats.too_large, 2, "both big ones counted");
    assert_eq!(stats.connects, 1, "the connection was kept");
    server.push("good-3");
    assert_eq!(texts(&collect(&client, 1)), vec!["good-3"]);
    client.close();
    assert!(!closed_with_1009(&server));
}

#[test]
fn an_oversized_greeting_does_not_keep_the_client_reconnecting() {
    // A server that sends a snapshot on every connect: refusing it by
    // closing (1009) brought it back on the next connect, for ever, and
    // nothing behind it arrived.
    let server = server();
    server.set_greeting(vec![Frame::Binary(vec![1; 8192]), Frame::from("live")]);
    let client = limited(&server);
    assert_eq!(texts(&collect(&client, 1)), vec!["live"]);
    let stats = client.stats();
    assert_eq!((stats.too_large, stats.connects), (1, 1));
    client.close();
    assert!(!closed_with_1009(&server));
}

/// A server's frame (unmasked), encoded by hand: the test server's
/// tungstenite would not send a message in fragments.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    if payload.len() < 126 {
        out.push(payload.len() as u8);
    } else {
        out.push(126);
        out.extend((payload.len() as u16).to_be_bytes());
    }
    out.extend(payload);
    out
}

/// Two fragments, each within max_frame_size, together over
/// max_message_size, which is known only once the first one has passed.
fn grown_too_large() -> Vec<u8> {
    let mut raw = frame(false, 1, &[b'a'; 600]);
    raw.extend(frame(true, 0, &[b'b'; 600]));
    raw
}

#[test]
fn a_message_grown_too_large_over_fragments_is_dropped_and_the_next_arrives() {
    let server = server();
    let client = limited(&server);
    wait_open(&client.events());
    server.push("good-1");
    let mut raw = grown_too_large();
    raw.extend(frame(true, 1, b"good-2"));
    server.push_raw(&raw);
    assert_eq!(texts(&collect(&client, 2)), vec!["good-1", "good-2"]);
    let stats = client.stats();
    assert_eq!((stats.too_large, stats.connects), (1, 1));
    client.close();
    assert!(!closed_with_1009(&server));
}

#[test]
fn with_on_too_large_close_a_grown_message_closes_with_1009_and_the_client_reconnects() {
    let server = server();
    let client = limited_with(&server, OverLimit::Close);
    let events = client.events();
    wait_open(&events);
    server.push("good-1");
    server.push_raw(&grown_too_large());
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    let why = why(&ev.error);
    assert!(
        matches!(ev.error, Some(ConnectionError::TooLarge(_))),
        "{why}"
    );
    assert!(
        why.contains("raise limits.max_message_size"),
        "the advice: {why}"
    );
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .any(|r| r.sent == Sent::Close(Some(1009)))));
    wait_open(&events);
    server.push("good-2");
    // The good message before the bad one was delivered; nothing else lost.
    assert_eq!(texts(&collect(&client, 2)), vec!["good-1", "good-2"]);
    client.close();
}
