use crate::common;
use common::*;

use heartline::{ConnectionError, Heartbeat, State};

#[test]
fn a_silent_server_with_tcp_still_open_is_detected_and_replaced() {
    let server = server();
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            interval: 40 * MS,
            server_timeout: 60 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    server.push("before");
    assert_eq!(texts(&collect(&client, 1)), vec!["before"]);

    assert_eq!(server.silence_all(), 1);
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    assert!(
        matches!(ev.error, Some(ConnectionError::HeartbeatTimeout { .. })),
        "{:?}",
        ev.error
    );
    wait_open(&events);
    assert!(server.wait_connections(2, WAIT));
    server.push("after");
    assert_eq!(texts(&collect(&client, 1)), vec!["after"]);
    assert_eq!(client.stats().connects, 2);
    client.close();
}
