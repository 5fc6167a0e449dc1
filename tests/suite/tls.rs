use crate::common;
use common::*;

use heartline::testkit::{CertProblem, TestServer};
use heartline::{ConnectionError, Phase, Polling, Reconnect, State, Timeouts, Tls, TlsProblem};

#[test]
fn wss_works_when_the_private_ca_is_trusted() {
    let server = TestServer::start_tls().unwrap();
    let client = fast(server.url())
        .tls(Tls {
            root_certificates: vec![server.ca_pem().unwrap().into()],
            ..Tls::default()
        })
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
    let client = fast(server.url())
        .reconnect(Reconnect {
            max_attempts: 1,
            ..common::reconnect()
        })
        .build()
        .unwrap();
    let (ev, seen) = wait_event(&client.events(), "closed", |e| e.state.is_closed());
    assert!(matches!(ev.state, State::Closed(_)));
    let error = client.stats().last_error;
    assert!(
        matches!(&error, Some(ConnectionError::Tls { host, problem: TlsProblem::UnknownIssuer, .. })
            if host == "127.0.0.1"),
        "{error:?} / {seen:?}"
    );
    assert!(
        why(&error).contains("tls.root_certificates"),
        "the advice: {}",
        why(&error)
    );
    assert_eq!(server.log().accepted(), 0);
}

#[test]
fn the_dangerous_option_accepts_any_certificate() {
    let server = TestServer::start_tls().unwrap();
    let client = fast(server.url())
        .tls(Tls {
            danger_accept_invalid_certs: true,
            ..Tls::default()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    client.close();
}

/// The error of a single failed attempt against `url`.
/// Why the one attempt failed: the TLS problem, if it was one, and the
/// message with its advice.
fn failure(b: heartline::ClientBuilder) -> (Option<TlsProblem>, String) {
    let client = b
        .reconnect(Reconnect {
            max_attempts: 1,
            ..common::reconnect()
        })
        .build()
        .unwrap();
    wait_event(&client.events(), "closed", |e| e.state.is_closed());
    let error = client.stats().last_error;
    let problem = match &error {
        Some(ConnectionError::Tls { problem, .. }) => Some(*problem),
        _ => None,
    };
    (problem, why(&error))
}

fn trusting(server: &TestServer) -> heartline::ClientBuilder {
    fast(server.url()).tls(Tls {
        root_certificates: vec![server.ca_pem().unwrap().into()],
        ..Tls::default()
    })
}

#[test]
fn an_expired_certificate_says_expired_and_does_not_ask_for_a_ca() {
    let server = TestServer::start_tls_with(CertProblem::Expired).unwrap();
    let (problem, why) = failure(trusting(&server));
    assert_eq!(problem, Some(TlsProblem::Expired), "{why}");
    assert!(why.contains("clock"), "the device's clock is named: {why}");
    assert!(!why.contains("tls.root_certificates"), "{why}");
}

#[test]
fn a_certificate_not_yet_valid_points_at_the_device_clock() {
    let server = TestServer::start_tls_with(CertProblem::NotYetValid).unwrap();
    let (problem, why) = failure(trusting(&server));
    assert_eq!(problem, Some(TlsProblem::NotYetValid), "{why}");
    assert!(why.contains("clock"), "the device's clock is named: {why}");
    assert!(!why.contains("tls.root_certificates"), "{why}");
}

#[test]
fn a_certificate_for_another_host_names_the_host() {
    let server = TestServer::start_tls_with(CertProblem::OtherHost).unwrap();
    let (problem, why) = failure(trusting(&server));
    assert_eq!(problem, Some(TlsProblem::WrongHost), "{why}");
    assert!(why.contains("127.0.0.1"), "names the host: {why}");
    assert!(!why.contains("tls.root_certificates"), "{why}");
}

#[test]
fn a_self_signed_certificate_says_so() {
    let server = TestServer::start_tls_with(CertProblem::SelfSigned).unwrap();
    let (problem, why) = failure(trusting(&server));
    assert_eq!(problem, Some(TlsProblem::SelfSigned), "{why}");
    assert!(why.contains("tls.root_certificates"), "the advice: {why}");
}

#[test]
fn a_server_that_does_not_speak_tls_is_named_as_such() {
    // wss:// to a plain ws:// server.
    let server = common::server();
    let url = server.url().replace("ws://", "wss://");
    let (problem, why) = failure(fast(url));
    assert_eq!(problem, Some(TlsProblem::NotTls), "{why}");
    assert!(why.contains("ws://"), "the advice: {why}");
}

#[test]
fn a_tls_handshake_that_never_finishes_times_out() {
    // Accepts TCP and then says nothing, as a stuck middlebox does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/ws", listener.local_addr().unwrap());
    let client = fast(url)
        .timeouts(Timeouts {
            handshake: 100 * MS,
            ..common::timeouts()
        })
        .reconnect(Reconnect {
            max_attempts: 1,
            ..common::reconnect()
        })
        .build()
        .unwrap();
    wait_event(&client.events(), "closed", |e| e.state.is_closed());
    let error = client.stats().last_error;
    assert!(
        matches!(
            error,
            Some(ConnectionError::Timeout {
                phase: Phase::TlsHandshake,
                ..
            })
        ),
        "{error:?}"
    );
    drop(listener);
}

/// The poll of a client whose socket is refused, against the TLS server's
/// port over https: its last poll error.
fn poll_failure(server: &TestServer, trust: bool) -> String {
    let (_reserved, port) = refusing_port();
    let ws = format!("ws://127.0.0.1:{port}/");
    let poll = server.url().replacen("wss://", "https://", 1) + "poll";
    let mut b = fast(ws)
        .protocol(heartline::JsonRules::new().poll(poll, heartline::Method::Get, None))
        .polling(Polling {
            after: 1,
            every: std::time::Duration::from_millis(20),
            ..Polling::default()
        });
    if trust {
        b = b.tls(Tls {
            root_certificates: vec![server.ca_pem().unwrap().into()],
            ..Tls::default()
        });
    }
    let client = b.build().unwrap();
    wait_until("a failed poll", || client.stats().poll_failures >= 1);
    let why = why(&client.stats().last_poll_error);
    client.close();
    why
}

#[test]
fn a_poll_over_tls_gets_the_same_advice_as_the_socket() {
    let expired = TestServer::start_tls_with(CertProblem::Expired).unwrap();
    let why = poll_failure(&expired, true);
    assert!(why.contains("expired") && why.contains("clock"), "{why}");
    assert!(!why.contains("tls.root_certificates"), "{why}");

    let other = TestServer::start_tls_with(CertProblem::OtherHost).unwrap();
    let why = poll_failure(&other, true);
    assert!(why.contains("another name"), "{why}");

    let untrusted = TestServer::start_tls().unwrap();
    let why = poll_failure(&untrusted, false);
    assert!(why.contains("tls.root_certificates"), "{why}");
}
