//! `reference/messmonitor.md` rebuilt on heartline.
//!
//! The browser original: hello `wsType:2` on open; heartbeat `wsType:1`
//! every 60 s; every `wsType:4` push acked at once with `wsType:3` and its
//! `msgDataId`; `pushType` 1/2/3 into a text pool and an audio pool;
//! reconnect delay stepping up by 30 s; after 3 failed reconnects, polling
//! `POST getMsg {"requestType":2}` every 30 s for messages newer (by
//! `createTime`) than the last seen; polling stops when the socket is back;
//! every 5 s, if any, one batch with both pools.
//!
//! Here it runs against the built-in test server speaking that protocol:
//! pushes of all three types, then the WebSocket refused for a stretch (so
//! the client degrades to polling), then back. Ends by itself.
//!
//! ```text
//! cargo run --example messmonitor -- --fast      # every timer ÷100, ~15 s
//! cargo run --example messmonitor                # real timers, a few minutes
//! ```

use std::time::{Duration, Instant};

use heartline::testkit::{FeedConfig, TestServer};
use heartline::{
    Backoff, Client, ClientBuilder, Delivery, Frame, Heartbeat, JsonRules, Method, Polling,
    Reconnect, ReplyRule,
};
use serde_json::json;

/// Who the device is (messmonitor fetched this with `getUserInfo`).
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: u64,
    pub tenant_id: u64,
    /// messmonitor's `wsKey`: `Date.now()` when the monitor starts.
    pub ws_key: u64,
}

/// messmonitor's timers, multiplied by `scale` (1.0: the original).
pub fn timer(seconds: f64, scale: f64) -> Duration {
    Duration::from_secs_f64(seconds * scale)
}

/// The messmonitor protocol and timers as a heartline configuration.
pub fn monitor(ws_url: &str, poll_url: &str, user: &User, scale: f64) -> ClientBuilder {
    let who = json!({"userId": user.user_id, "tenantId": user.tenant_id, "wsKey": user.ws_key});
    let with = |mut v: serde_json::Value| {
        if let (Some(o), Some(w)) = (v.as_object_mut(), who.as_object()) {
            o.extend(w.clone());
        }
        v
    };
    let hello = Frame::from(with(json!({"wsType": 2})));
    let rules = JsonRules::new()
        .id("/msgDataId")
        .cursor("/createTime")
        .kinds(
            "/pushType",
            [
                ("1", &["text"][..]),
                ("2", &["audio"]),
                ("3", &["text", "audio"]),
            ],
        )
        .ack_when(
            "/wsType",
            json!(4),
            with(json!({"wsType": 3})),
            [("/pushType", "pushType"), ("/msgDataId", "msgDataId")],
        )
        .poll(poll_url, Method::Post, Some(r#"{"requestType":2}"#.into()))
        .poll_success("/code", json!("0000"))
        // As the original: getMsg's messages go to the text pool, and its
        // voiceUrls (plain strings) to the audio pool.
        .poll_items_of_kind("/data/ordinaryDatas", &["text"])
        .poll_strings("/data/voiceUrls", &["audio"]);
    Client::builder(ws_url)
        .protocol(rules)
        .hello(move |_| vec![hello.clone()])
        .heartbeat(Heartbeat {
            frame: Some(Frame::from(with(json!({"wsType": 1})))),
            replies: vec![ReplyRule::parse(r#"{"wsType":1}"#)],
            interval: timer(60.0, scale),
            server_timeout: timer(20.0, scale),
            ..Heartbeat::default()
        })
        .reconnect(Reconnect {
            backoff: Backoff::Linear {
                initial: Duration::ZERO,
                step: timer(30.0, scale),
                max: timer(300.0, scale),
            },
            min_uptime: timer(5.0, scale),
            ..Reconnect::default()
        })
        .polling(Polling {
            after: 3,
            every: timer(30.0, scale),
            ..Polling::default()
        })
        .delivery(Delivery {
            batch_window: timer(5.0, scale),
            batch_max: 10_000,
            ..Delivery::default()
        })
}

/// The test server speaking messmonitor's side: `wsType:4` pushes, acks by
/// `msgDataId`, `getMsg` answering
/// `{"code":"0000","data":{"ordinaryDatas":[…],"voiceUrls":[…]}}` with the
/// latest messages and the voice URLs of those not yet acknowledged, and
/// `wsType:1` heartbeats answered.
pub fn server() -> std::io::Result<TestServer> {
    let mut s = TestServer::start()?;
    s.enable_feed(FeedConfig {
        id_key: "msgDataId".into(),
        seq_key: "createTime".into(),
        ack_pointer: "/msgDataId".into(),
        since_param: None,
        poll_limit: 50,
        envelope: Some((
            json!({"code": "0000", "data": {"ordinaryDatas": null, "voiceUrls": []}}),
            "/data/ordinaryDatas".into(),
        )),
        strings: Some(("/data/voiceUrls".into(), "voiceUrl".into())),
        ..FeedConfig::default()
    })?;
    s.reply(
        ReplyRule::parse(r#"{"wsType":1}"#),
        r#"{"wsType":1,"code":"0000"}"#,
    );
    Ok(s)
}

/// The getMsg URL on the test server.
pub fn get_msg_url(server: &TestServer) -> String {
    server
        .poll_url()
        .map(|u| u.replace("/poll", "/getMsg"))
        .unwrap_or_default()
}

/// A `wsType:4` push: 1 text, 2 voice, 3 both (voice ones carry a
/// `voiceUrl`).
pub fn push(server: &TestServer, push_type: u8, n: u64) -> u64 {
    let mut msg = json!({
        "wsType": 4,
        "pushType": push_type,
        "title": format!("notice {n}"),
        "actionUrl": format!("/orders/{n}"),
        "importantStatus": 0,
        "groupId": 1
    });
    if push_type >= 2 {
        msg["voiceUrl"] = json!(voice_url(n));
    }
    server.publish(msg)
}

/// The voice URL of notice `n`.
pub fn voice_url(n: u64) -> String {
    format!("https://cdn.example/voice/{n}.mp3")
}

#[allow(dead_code)] // the messmonitor test includes this file for its configuration
fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("heartline=info"))
        .init();
    let mut scale = 1.0;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--fast" => scale = 0.01,
            other => {
                eprintln!("messmonitor: unknown argument `{other}`\nusage: messmonitor [--fast]");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run(scale) {
        eprintln!("messmonitor: {e}");
        std::process::exit(1);
    }
}

#[allow(dead_code)]
fn run(scale: f64) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let t = move || format!("[{:>7.2}s]", start.elapsed().as_secs_f64());
    let server = server()?;
    let user = User {
        user_id: 7,
        tenant_id: 3,
        ws_key: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let client = monitor(&server.url(), &get_msg_url(&server), &user, scale).build()?;
    let events = client.events();
    let states = std::thread::spawn(move || {
        for ev in events {
            println!(
                "state: {:?}{}",
                ev.state,
                ev.error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
    });
    // The show, on messmonitor's own clock: pushes for 3 checkTimer periods,
    // the socket refused long enough for three failed reconnects and a few
    // polls, then the socket back.
    let schedule = [
        (0.0, "push"),
        (6.0, "push"),
        (12.0, "refuse"),
        (20.0, "push"),
        (130.0, "push"),
        (200.0, "accept"),
        (260.0, "push"),
        (330.0, "end"),
    ];
    let mut n = 0;
    let mut delivered = 0;
    let batches = client.batches();
    for (at, what) in schedule {
        let due = start + timer(at, scale);
        // Hand out batches until the next step.
        while let Ok(batch) = batches.recv_deadline(due) {
            delivered += batch.len();
            let text: Vec<String> = batch
                .of_kind("text")
                .filter_map(|m| m.json().map(|v| v["title"].to_string()))
                .collect();
            // A push carries the URL in its JSON; a poll, as a plain string.
            let audio: Vec<String> = batch
                .of_kind("audio")
                .filter_map(|m| match m.json() {
                    Some(v) => Some(v["voiceUrl"].to_string()),
                    None => m.text().map(|t| format!("{t:?}")),
                })
                .collect();
            println!("{} batch: textMsgPool {text:?} audioMsgPool {audio:?}", t());
            // Both pools are shown: finished (acked), not handed out again.
            batch.done();
        }
        match what {
            "push" => {
                for push_type in [1, 2, 3] {
                    n += 1;
                    push(&server, push_type, n);
                }
                println!("{} server: pushed 3 messages (pushType 1, 2, 3)", t());
            }
            "refuse" => {
                server.refuse(Some(503));
                server.drop_all();
                println!("{} server: WebSocket down (upgrades refused)", t());
            }
            "accept" => {
                server.refuse(None);
                println!("{} server: WebSocket back", t());
            }
            _ => break,
        }
    }
    let stats = client.stats();
    client.close();
    let _ = states.join();
    println!(
        "{} done: {} messages delivered, {} acks, {} polls, {} duplicates dropped, {} connects",
        t(),
        delivered,
        stats.acks,
        stats.polls,
        stats.duplicates,
        stats.connects
    );
    Ok(())
}
