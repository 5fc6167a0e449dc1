//! What the server says about retrying: `Retry-After` on 429/503 (upgrade
//! and polls), close codes 1012/1013, and 401/403 told to the endpoint
//! provider.
use crate::common;
use common::*;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartline::testkit::{FeedConfig, PollFault};
use heartline::{Client, Endpoint, JsonRules, Method, Polling, Reconnect, State};

fn first_delay(client: &Client) -> Duration {
    let (ev, _) = wait_event(&client.events(), "reconnecting", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    match ev.state {
        State::Reconnecting { delay, .. } => delay,
        _ => unreachable!(),
    }
}

#[test]
fn a_503_with_retry_after_delays_the_next_attempt_at_least_that_long_up_to_the_cap() {
    let server = server();
    server.refuse_with(Some(503), &[("Retry-After", "2")]);
    let client = fast(server.url()).build().unwrap(); // backoff 10 ms
    assert_eq!(first_delay(&client), Duration::from_secs(2));
    client.close();

    server.refuse_with(Some(429), &[("Retry-After", "3600")]);
    let client = fast(server.url())
        .reconnect(Reconnect {
            max_retry_after: Duration::from_secs(3),
            ..common::reconnect()
        })
        .build()
        .unwrap();
    assert_eq!(first_delay(&client), Duration::from_secs(3), "capped");
    client.close();

    // Only 429 and 503 are load hints; a 500 keeps the backoff.
    server.refuse_with(Some(500), &[("Retry-After", "60")]);
    let client = fast(server.url()).build().unwrap();
    assert_eq!(first_delay(&client), 10 * MS);
    client.close();
}

#[test]
fn a_server_that_closes_with_1012_or_1013_is_given_the_spread_on_top_of_the_backoff() {
    // Service Restart and Try Again Later: the server says it cannot take
    // the fleet back at once; the fixed backoff (10 ms here) gets the
    // spread (500 ms here) on top, and never more.
    let server = server();
    for code in [1012, 1013] {
        let client = fast(server.url())
            .reconnect(Reconnect {
                restart_spread: Duration::from_millis(500),
                ..common::reconnect()
            })
            .build()
            .unwrap();
        let events = client.events();
        wait_open(&events);
        server.close_all(code, "restarting");
        let (ev, _) = wait_event(&events, "reconnecting", |e| {
            matches!(e.state, State::Reconnecting { .. })
        });
        let State::Reconnecting { delay, .. } = ev.state else {
            unreachable!()
        };
        assert!((10 * MS..=510 * MS).contains(&delay), "{code}: {delay:?}");
        client.close();
    }
}

#[test]
fn the_endpoint_provider_is_told_why_the_last_attempt_failed() {
    let server = server();
    server.refuse(Some(401));
    let seen: Arc<Mutex<Vec<Option<u16>>>> = Arc::default();
    let url = server.url();
    let log = seen.clone();
    let refreshes = Arc::new(Mutex::new(0));
    let r = refreshes.clone();
    let client = millis_ctx(move |ctx| {
        let status = ctx.last_error.as_ref().and_then(|e| e.status());
        log.lock().unwrap().push(status);
        if matches!(status, Some(401 | 403)) {
            *r.lock().unwrap() += 1; // the token was rejected: refresh it
        }
        Endpoint::new(url.clone())
    });
    let events = client.events();
    wait_until("two refusals", || seen.lock().unwrap().len() >= 3);
    server.refuse(None);
    wait_open(&events);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], None, "nothing failed before the first attempt");
    assert_eq!(seen[1], Some(401));
    assert!(*refreshes.lock().unwrap() >= 2);
    // A dropped connection is not a rejection: no refresh for it.
    let before = *refreshes.lock().unwrap();
    server.drop_all();
    wait_open(&events);
    assert_eq!(*refreshes.lock().unwrap(), before);
    client.close();
}

fn millis_ctx(
    f: impl Fn(&heartline::EndpointContext) -> Endpoint + Send + Sync + 'static,
) -> Client {
    init();
    Client::with_endpoint_context(f)
        .reconnect(Reconnect {
            backoff: heartline::Backoff::Fixed(10 * MS),
            min_uptime: Duration::ZERO,
            ..Reconnect::default()
        })
        .build()
        .unwrap()
}

#[test]
fn a_poll_answered_503_with_retry_after_waits_that_long_before_the_next() {
    let mut server = server();
    server.enable_feed(FeedConfig::default()).unwrap();
    server.refuse(Some(502)); // the socket fails: polling starts
    server.poll_fault(PollFault::RetryAfter(503, "1".into()));
    let client = fast(server.url())
        .protocol(
            JsonRules::new()
                .id("/id")
                .poll(server.poll_url().unwrap(), Method::Get, None),
        )
        .polling(Polling {
            after: 1,
            every: 20 * MS,
            ..Polling::default()
        })
        .build()
        .unwrap();
    assert!(server.wait_for(WAIT, |l| l.polls.len() >= 2));
    let log = server.log();
    let gap = log.polls[1].at.duration_since(log.polls[0].at);
    assert!(
        gap >= Duration::from_millis(990),
        "second poll after {gap:?}"
    );
    let e = client.stats().last_poll_error;
    assert_eq!(e.and_then(|e| e.status()), Some(503));
    client.close();
}
