use crate::common;
use common::*;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use heartline::{Endpoint, State};

#[test]
fn the_endpoint_provider_is_called_before_every_attempt() {
    let server = server();
    server.refuse(Some(401));
    let base = server.url();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let client = fast_with(move || {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        Endpoint::new(format!("{base}?token=t{n}&device=kiosk"))
            .header("Authorization", format!("Bearer t{n}"))
            .header("X-Device", "kiosk-7")
    })
    .build()
    .unwrap();
    let events = client.events();
    assert!(server.wait_for(WAIT, |l| l.upgrades.len() >= 2));
    server.refuse(None);
    wait_open(&events);
    let log = server.log();
    let n = log.upgrades.len();
    assert!(n >= 3);
    for (i, u) in log.upgrades.iter().enumerate() {
        let k = i + 1;
        assert_eq!(u.uri, format!("/ws?token=t{k}&device=kiosk"));
        assert_eq!(
            u.header("authorization"),
            Some(format!("Bearer t{k}").as_str())
        );
        assert_eq!(u.header("x-device"), Some("kiosk-7"));
    }
    assert!(log.upgrades.last().unwrap().accepted);
    assert_eq!(calls.load(Ordering::SeqCst) as usize, n);
    client.close();
}

#[test]
fn a_bad_url_from_the_provider_fails_the_attempt_and_is_retried() {
    let server = server();
    let good = server.url();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let client = fast_with(move || {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Endpoint::new("http://wrong-scheme/?token=SECRET")
        } else {
            Endpoint::new(good.clone())
        }
    })
    .build()
    .unwrap();
    let events = client.events();
    let (ev, _) = wait_event(&events, "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    let why = why(&ev.error);
    assert!(
        why.contains("scheme `http`") && !why.contains("SECRET"),
        "{why}"
    );
    wait_open(&events);
    client.close();
}

#[test]
fn a_panicking_closure_fails_that_attempt_only() {
    let server = server();
    let good = server.url();
    let calls = Arc::new(AtomicU32::new(0));
    let (c, h) = (calls.clone(), Arc::new(AtomicU32::new(0)));
    let client = fast_with(move || {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("token service unreachable");
        }
        Endpoint::new(good.clone())
    })
    .hello(move |_| {
        if h.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("no subscriptions yet");
        }
        vec!["sub".into()]
    })
    .build()
    .unwrap();
    let events = client.events();
    let (_, seen) = wait_event(&events, "open", |e| e.state == State::Open);
    // Typed: which callback, and what it said.
    let errors: Vec<String> = seen
        .iter()
        .filter_map(|e| match &e.error {
            Some(heartline::ConnectionError::Callback { what, reason }) => {
                Some(format!("the {what} closure panicked: {reason}"))
            }
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e == "the endpoint closure panicked: token service unreachable"),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e == "the hello closure panicked: no subscriptions yet"),
        "{errors:?}"
    );
    assert!(server.wait_for(WAIT, |l| l.frames.iter().any(|f| f.text() == Some("sub"))));
    client.close();
}

#[test]
fn an_application_tells_a_401_from_a_503_without_parsing_text() {
    let server = server();
    server.refuse(Some(401));
    let client = fast(server.url()).build().unwrap();
    let events = client.events();
    let (ev, _) = wait_event(&events, "a refusal", |e| e.error.is_some());
    let error = ev.error.unwrap();
    assert!(
        matches!(
            error,
            heartline::ConnectionError::Refused { status: 401, .. }
        ),
        "{error}"
    );
    assert_eq!(error.status(), Some(401));
    server.refuse(Some(503));
    let (ev, _) = wait_event(&events, "a 503", |e| {
        e.error.as_ref().and_then(|e| e.status()) == Some(503)
    });
    assert!(ev.error.is_some());
    client.close();
}
