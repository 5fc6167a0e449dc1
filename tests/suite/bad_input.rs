//! Whatever the network sends, the library reports it, keeps running, and
//! loses no good message because of a bad one.
use crate::common;
use common::*;

use std::io::{Read, Write};

use heartline::{Reconnect, State};

/// Good frames around `bad`, sent in one burst: the good ones behind it are
/// already on their way when it arrives, and a server that only pushes
/// never sends them again.
fn around(bad: &[u8]) -> Vec<u8> {
    let mut raw = vec![0x81, 6];
    raw.extend(b"good-1");
    raw.extend(bad);
    raw.extend([0x81, 6]);
    raw.extend(b"good-2");
    raw
}

/// With `lenient(true)`, the good messages around `bad` arrive on one
/// connection and `bad` is counted as malformed.
fn carries_on_past(bad: &[u8]) {
    let server = server();
    let client = fast(server.url()).lenient(true).build().unwrap();
    wait_open(&client.events());
    server.push_raw(&around(bad));
    assert_eq!(texts(&collect(&client, 2)), vec!["good-1", "good-2"]);
    let stats = client.stats();
    assert_eq!((stats.malformed, stats.connects), (1, 1), "{stats:?}");
    client.close();
}

/// By default, `bad` fails the connection with a close frame of `code`:
/// the good message before it arrives, the client reconnects, and the
/// error names what the server did.
fn fails_on(bad: &[u8], code: u16) {
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    server.push_raw(&around(bad));
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    assert!(
        matches!(ev.error, Some(heartline::ConnectionError::Protocol(_))),
        "{:?}",
        ev.error
    );
    assert!(
        server.wait_for(WAIT, |l| l
            .frames
            .iter()
            .any(|f| f.sent == heartline::testkit::Sent::Close(Some(code)))),
        "the server got a close with {code}"
    );
    wait_open(&events);
    assert_eq!(texts(&collect(&client, 1)), vec!["good-1"]);
    assert_eq!(client.stats().connects, 2);
    client.close();
}

#[test]
fn a_frame_of_a_reserved_type_fails_the_connection_with_1002() {
    fails_on(&[0x83, 0x00], 1002); // FIN + reserved data opcode 3
    fails_on(&[0x8B, 0x01, b'?'], 1002); // reserved control opcode 11
}

#[test]
fn a_text_message_that_is_not_utf8_fails_the_connection_with_1007() {
    fails_on(&[0x81, 0x02, 0xff, 0xfe], 1007); // text frame, invalid UTF-8
}

#[test]
fn leniently_a_frame_of_a_reserved_type_is_skipped_and_the_connection_carries_on() {
    carries_on_past(&[0x83, 0x00]); // FIN + reserved data opcode 3
    carries_on_past(&[0x8B, 0x01, b'?']); // reserved control opcode 11
}

#[test]
fn leniently_a_text_message_that_is_not_utf8_is_skipped_and_the_connection_carries_on() {
    carries_on_past(&[0x81, 0x02, 0xff, 0xfe]); // text frame, invalid UTF-8
}

#[test]
fn leniently_a_text_message_in_fragments_that_is_not_utf8_is_skipped_whole() {
    // Its frames after the bad bytes go with it; nothing comes out short.
    carries_on_past(&[0x01, 0x02, b'o', 0xff, 0x80, 0x01, b'k']);
}

#[test]
fn a_text_message_in_fragments_that_is_not_utf8_ends_the_connection_not_the_client() {
    // Cut where the bad bytes are it would come out short: refused whole,
    // with the connection, as RFC 6455 says.
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    server.push("good-1");
    server.push_raw(&[0x01, 0x02, b'o', 0xff, 0x80, 0x01, b'k']);
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    assert!(why(&ev.error).contains("UTF-8"), "{}", why(&ev.error));
    wait_open(&events);
    server.push("good-2");
    assert_eq!(texts(&collect(&client, 2)), vec!["good-1", "good-2"]);
    client.close();
}

#[test]
fn rsv_bits_nobody_agreed_to_end_the_connection_not_the_client() {
    // A compressed frame (RSV1) without permessage-deflate agreed: every
    // message would be unreadable, so this one fails loudly.
    let server = server();
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    wait_open(&events);
    server.push("good-1");
    server.push_raw(&[0xC1, 0x01, b'x']);
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    assert!(
        why(&ev.error).contains("WebSocket error"),
        "{}",
        why(&ev.error)
    );
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
        .reconnect(Reconnect {
            max_attempts: 2,
            ..common::reconnect()
        })
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

#[test]
fn a_server_that_answers_the_upgrade_a_byte_at_a_time_is_given_up_at_the_deadline() {
    // Seen: one byte every 200 ms held an attempt for 25 s with a 10 s
    // handshake timeout, as every byte started the socket's timeout again.
    init();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (sent_tx, sent) = crossbeam_channel::bounded(1);
    let peer = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        // A real answer's head, long enough to take 8 s at this pace, and
        // never finished (no Sec-WebSocket-Accept, no blank line).
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Pad: {}\r\n",
            "x".repeat(400)
        );
        let mut n = 0;
        for b in answer.bytes() {
            if s.write_all(&[b]).is_err() {
                break;
            }
            n += 1;
            std::thread::sleep(20 * MS);
        }
        let _ = sent_tx.send(n);
    });
    let ev = one_attempt(fast(format!("ws://{addr}/")).timeouts(heartline::Timeouts {
        handshake: 300 * MS,
        ..common::timeouts()
    }));
    assert!(
        matches!(
            ev.error,
            Some(heartline::ConnectionError::Timeout {
                phase: heartline::Phase::WebSocketHandshake,
                ..
            })
        ),
        "{:?}",
        ev.error
    );
    // The client gave up while the peer was still sending: it had sent a
    // fraction of its answer when its next write found the socket closed.
    let n = sent.recv_timeout(WAIT).expect("the peer stopped");
    assert!(n < 200, "the peer sent {n} bytes before the client gave up");
    peer.join().unwrap();
}

#[test]
fn the_subprotocols_offered_go_out_and_the_one_chosen_is_told_with_open() {
    let (url, offered) = answering(Some("v2.push"), None);
    let client = fast(url)
        .subprotocols(["v3.push", "v2.push"])
        .build()
        .unwrap();
    let events = client.events();
    let (open, _) = wait_event(&events, "open", |e| e.state == State::Open);
    assert_eq!(
        offered.recv_timeout(WAIT).unwrap().as_deref(),
        Some("v3.push, v2.push")
    );
    let chosen = open.opened.and_then(|o| o.subprotocol);
    assert_eq!(chosen.as_deref(), Some("v2.push"));
    assert_eq!(client.stats().subprotocol.as_deref(), Some("v2.push"));
    assert_eq!(texts(&collect(&client, 1)), vec!["hi"]);
    client.close();
}

#[test]
fn a_subprotocol_or_extension_that_was_not_offered_fails_the_attempt() {
    for (protocol, extensions, says) in [
        (Some("mqtt"), None, "was not offered"),
        (None, Some("permessage-deflate"), "did not offer"),
    ] {
        let (url, _offered) = answering(protocol, extensions);
        let ev = one_attempt(fast(url).subprotocols(["v2.push"]));
        let why = why(&ev.error);
        assert!(
            matches!(ev.error, Some(heartline::ConnectionError::Protocol(_))) && why.contains(says),
            "{why}"
        );
    }
}
