//! Whatever the network sends, the library reports it, keeps running, and
//! loses no good message because of a bad one.
mod common;
use common::*;

use std::io::{Read, Write};

use heartline::State;

#[test]
fn a_frame_with_a_reserved_opcode_ends_the_connection_not_the_client() {
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    server.push("good-1");
    server.push_raw(&[0x83, 0x00]); // FIN + reserved opcode 3
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    let why = why(&ev.error);
    assert!(why.contains("WebSocket error"), "{why}");
    wait_open(&events);
    server.push("good-2");
    assert_eq!(texts(&collect(&client, 2)), vec!["good-1", "good-2"]);
    client.close();
}

#[test]
fn a_text_frame_that_is_not_utf8_is_refused_and_the_client_recovers() {
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    server.push("good-1");
    server.push_raw(&[0x81, 0x02, 0xff, 0xfe]); // text frame, invalid UTF-8
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    assert!(why(&ev.error).to_lowercase().contains("utf"));
    wait_open(&events);
    server.push("good-2");
    assert_eq!(texts(&collect(&client, 2)), vec!["good-1", "good-2"]);
    client.close();
}

#[test]
fn a_peer_that_answers_the_upgrade_with_garbage_is_a_clear_error() {
    init();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        // Answer two attempts with something that is not HTTP.
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        }
    });
    let client = fast(format!("ws://{addr}/"))
        .max_attempts(Some(2))
        .build()
        .unwrap();
    let (ev, seen) = wait_event(&client.events(), "closed", |e| e.state.is_closed());
    assert!(matches!(ev.state, State::Closed(_)));
    let why = seen
        .iter()
        .find_map(|e| e.error.as_ref().map(|e| e.to_string()))
        .unwrap_or_default();
    assert!(
        why.contains("is not HTTP") && why.contains("SSH-2.0"),
        "{why}"
    );
    let _ = peer.join();
}

#[test]
fn ws_to_a_tls_port_says_to_use_wss() {
    init();
    // A real TLS server (OpenSSL, in the testkit) reached with ws://: it
    // closes on the plain-text request without a word.
    let server = heartline::testkit::TestServer::start_tls().unwrap();
    let ev = one_attempt(fast(server.url().replacen("wss://", "ws://", 1)));
    let text = why(&ev.error);
    assert!(text.contains("wss://"), "{text}");
    // A TLS server that answers with an alert record says so for sure
    // (TLS 1.0 record, alert, fatal, protocol_version).
    let (addr, peer) = answer_once(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]);
    let ev = one_attempt(fast(format!("ws://{addr}/")));
    let text = why(&ev.error);
    assert!(
        text.contains("answered with TLS") && text.contains("wss://"),
        "{text}"
    );
    let _ = peer.join();
}
