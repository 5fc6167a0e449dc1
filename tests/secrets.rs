//! Alone in its binary: it installs a capturing logger.
mod common;
use common::*;

use std::sync::Mutex;

use heartline::{Client, Endpoint};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
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
    let server = server();
    server.refuse(Some(401));
    let url = format!("{}?token=SUPERSECRET1&device=7", server.url());
    let u = url.clone();
    let client = Client::builder("ws://unused/")
        .endpoint(move || Endpoint::new(u.clone()).header("Authorization", "Bearer SUPERSECRET2"))
        .backoff(heartline::Backoff::Fixed(5 * MS))
        .heartbeat_interval(10 * MS)
        .min_uptime(std::time::Duration::ZERO)
        .build()
        .unwrap();
    let events = client.events();
    assert!(server.wait_for(WAIT, |l| l.upgrades.len() >= 2));
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
