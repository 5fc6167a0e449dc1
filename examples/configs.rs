//! Four browser clients that heartline replaces, each as a configuration
//! (the fifth, with a protocol of its own, is `examples/messmonitor.rs`).
//! Each is connected to the built-in test server, which checks that it opens
//! and sends its hello frames; then it is closed.
//!
//! ```text
//! cargo run --example configs
//! ```

use std::time::Duration;

use heartline::testkit::TestServer;
use heartline::{Backoff, Client, ClientBuilder, Heartbeat, Reconnect, ReplyRule};
use serde_json::json;

const S: fn(u64) -> Duration = Duration::from_secs;

/// Two subscribe frames on every open; a heartbeat after 30 s without any
/// inbound message; reconnect every 4 s, one attempt at a time.
fn subscribe_heartcheck(url: &str) -> ClientBuilder {
    Client::builder(url)
        .hello(|_| {
            vec![
                json!({"type": "sub", "service": "A"}).into(),
                json!({"type": "sub", "service": "B"}).into(),
            ]
        })
        .heartbeat(Heartbeat {
            frame: Some(json!({"type": "HEART_BEAT", "service": "A"}).into()),
            interval: S(30),
            ..Heartbeat::default()
        })
        .reconnect(Reconnect {
            backoff: Backoff::Fixed(S(4)),
            ..Reconnect::default()
        })
}

/// Text "ping" every 15 s, "pong" is not a message; reconnect 15 s after an
/// error or close.
fn ping_pong_singleton(url: &str) -> ClientBuilder {
    Client::builder(url)
        .heartbeat(Heartbeat {
            frame: Some("ping".into()),
            replies: vec![ReplyRule::Text("pong".into())],
            interval: S(15),
            ..Heartbeat::default()
        })
        .reconnect(Reconnect {
            backoff: Backoff::Fixed(S(15)),
            ..Reconnect::default()
        })
}

/// A heartbeat every 30 s; no frame within 60 s after it means a dead link;
/// at most 5 reconnects, 60 s apart; `close()` sends 1000 and never
/// reconnects.
fn server_timeout_heartcheck(url: &str) -> ClientBuilder {
    Client::builder(url)
        .heartbeat(Heartbeat {
            frame: Some(json!({"ModeCode": "heart_beat"}).into()),
            interval: S(30),
            server_timeout: S(60),
            ..Heartbeat::default()
        })
        .reconnect(Reconnect {
            backoff: Backoff::Fixed(S(60)),
            max_attempts: 5,
            ..Reconnect::default()
        })
}

/// `{"mode":"HEART_BEAT"}` every 4 s, a reply within 2 s, and a reconnect
/// after 3 s; the echoed HEART_BEAT is consumed, a MESSAGE delivered.
fn node_ws_echo(url: &str) -> ClientBuilder {
    Client::builder(url)
        .heartbeat(Heartbeat {
            frame: Some(json!({"mode": "HEART_BEAT", "msg": "ping"}).into()),
            replies: vec![ReplyRule::parse(r#"{"mode":"HEART_BEAT"}"#)],
            interval: S(4),
            server_timeout: S(2),
            ..Heartbeat::default()
        })
        .reconnect(Reconnect {
            backoff: Backoff::Fixed(S(3)),
            ..Reconnect::default()
        })
}

type Config = fn(&str) -> ClientBuilder;

fn main() {
    let configs: [(&str, Config, usize); 4] = [
        ("subscribe-heartcheck", subscribe_heartcheck, 2),
        ("ping-pong-singleton", ping_pong_singleton, 0),
        ("server-timeout-heartcheck", server_timeout_heartcheck, 0),
        ("node-ws-echo", node_ws_echo, 0),
    ];
    let server = match TestServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("configs: test server: {e}");
            std::process::exit(1);
        }
    };
    for (n, (name, config, hellos)) in configs.into_iter().enumerate() {
        let conn = n as u64 + 1;
        let client = match config(&server.url()).build() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("configs: {name}: {e}");
                std::process::exit(1);
            }
        };
        let ok = server.wait_for(S(10), |log| {
            log.accepted() > n && log.texts_of(conn).len() >= hellos
        });
        client.close();
        if !ok {
            eprintln!("configs: {name}: not open with its {hellos} hello frames within 10 s");
            std::process::exit(1);
        }
        println!("{name}: open, {hellos} hello frames sent, closed");
    }
}
