mod common;
use common::*;

use heartline::testkit::TestServer;
use heartline::State;

#[test]
fn wss_works_when_the_private_ca_is_trusted() {
    let server = TestServer::start_tls().unwrap();
    let client = fast(server.url())
        .root_certificate_pem(server.ca_pem().unwrap())
        .build()
        .unwrap();
    wait_open(&client.events());
    server.push("secure");
    assert_eq!(texts(&collect(&client, 1)), vec!["secure"]);
    client.send("up").unwrap();
    assert!(server.wait_for(WAIT, |l| l.frames.iter().any(|r| r.text() == Some("up"))));
    client.close();
}

#[test]
fn wss_with_an_untrusted_certificate_is_refused_with_a_clear_error() {
    let server = TestServer::start_tls().unwrap();
    let client = fast(server.url()).max_attempts(Some(1)).build().unwrap();
    let (ev, seen) = wait_event(&client.events(), "closed", |e| e.state.is_closed());
    assert!(matches!(ev.state, State::Closed(_)));
    let why = client.stats().last_error.unwrap_or_default();
    assert!(
        why.contains("TLS handshake with 127.0.0.1 failed") && why.contains("not trusted"),
        "{why} / {seen:?}"
    );
    assert_eq!(server.log().accepted(), 0);
}

#[test]
fn the_dangerous_option_accepts_any_certificate() {
    let server = TestServer::start_tls().unwrap();
    let client = fast(server.url())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    wait_open(&client.events());
    client.close();
}
