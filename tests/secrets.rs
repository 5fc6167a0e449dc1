//! Alone in its binary: it installs a capturing logger.
mod common;
use common::*;

use std::sync::Mutex;

use heartline::{Client, Endpoint, Heartbeat, Polling, Reconnect};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    /// Everything at trace, except ureq's own targets at debug: the setting
    /// the observing guide asks for, because at trace ureq logs poll requests
    /// unredacted (URL and headers).
    fn enabled(&self, m: &log::Metadata) -> bool {
        !(m.target().starts_with("ureq") && m.level() == log::Level::Trace)
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        LINES
            .lock()
            .unwrap()
            .push(format!("{} {}: {}", r.level(), r.target(), r.args()));
    }
    fn flush(&self) {}
}

#[test]
fn tokens_in_urls_and_headers_never_reach_logs_or_debug_output() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let mut server = server();
    server
        .enable_feed(heartline::testkit::FeedConfig::default())
        .unwrap();
    server.refuse(Some(401));
    let url = format!("{}?token=SUPERSECRET1&device=7", server.url());
    let u = url.clone();
    let poll = format!("{}?access_token=SUPERSECRET4", server.poll_url().unwrap());
    let client = Client::with_endpoint(move || {
        Endpoint::new(u.clone()).header("Authorization", "Bearer SUPERSECRET2")
    })
    .protocol(heartline::JsonRules::new().poll(poll, heartline::Method::Get, None))
    .polling(Polling {
        after: 1,
        every: 5 * MS,
        ..Polling::default()
    })
    .reconnect(Reconnect {
        backoff: heartline::Backoff::Fixed(5 * MS),
        min_uptime: std::time::Duration::ZERO,
        ..Reconnect::default()
    })
    .heartbeat(Heartbeat {
        interval: 10 * MS,
        ..Heartbeat::default()
    })
    .build()
    .unwrap();
    let events = client.events();
    assert!(server.wait_for(WAIT, |l| l.upgrades.len() >= 2 && !l.polls.is_empty()));
    server.poll_fault(heartline::testkit::PollFault::Status(500)); // an error that names the URL
    wait_until("a failed poll", || client.stats().poll_failures >= 1);
    server.refuse(None);
    wait_open(&events);
    server.drop_all();
    wait_open(&events);
    let debug = format!(
        "{:?} {:?} {:?}",
        client,
        Client::builder(url.clone()).header("Cookie", "SUPERSECRET3"),
        Endpoint::new(url).header("Authorization", "SUPERSECRET2")
    );
    client.close();
    let lines = LINES.lock().unwrap().join("\n");
    assert!(
        lines.contains("token=***"),
        "the URL is logged, redacted:\n{lines}"
    );
    assert!(!lines.contains("SUPERSECRET"), "{lines}");
    assert!(!debug.contains("SUPERSECRET"), "{debug}");
}
