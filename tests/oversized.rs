mod common;
use common::*;

use heartline::testkit::Sent;
use heartline::State;

#[test]
fn an_oversized_message_closes_with_1009_and_the_client_reconnects() {
    let server = server();
    let client = fast(server.url())
        .max_message_size(1024)
        .max_frame_size(1024)
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    server.push("good-1");
    server.push("x".repeat(4096));
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    let why = why(&ev.error);
    assert!(why.contains("too large"), "{why}");
    assert!(why.contains("raise max_message_size"), "the advice: {why}");
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
