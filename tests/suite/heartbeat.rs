use crate::common;
use common::*;

use heartline::testkit::Sent;
use heartline::{Frame, Heartbeat, ReplyRule};
use std::time::Duration;

#[test]
fn ping_heartbeats_are_sent_on_an_idle_link_and_time_the_round_trip() {
    let server = server();
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            interval: 30 * MS,
            server_timeout: 500 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .filter(|r| r.sent == Sent::Ping)
        .count()
        >= 3));
    wait_until("rtt measured", || client.stats().rtt.is_some());
    let stats = client.stats();
    assert!(stats.heartbeats >= 3, "{stats:?}");
    assert_eq!(
        stats.connects, 1,
        "answered pings must not cause reconnects"
    );
    client.close();
}

#[test]
fn application_heartbeat_replies_are_consumed_not_delivered() {
    let server = server();
    server.reply(
        ReplyRule::parse(r#"{"wsType":1}"#),
        r#"{"wsType":1,"ok":true}"#,
    );
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            frame: Some(r#"{"wsType":1,"userId":7}"#.into()),
            replies: vec![ReplyRule::parse(r#"{"wsType":1}"#)],
            interval: 20 * MS,
            server_timeout: 500 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    assert!(server.wait_for(WAIT, |l| {
        l.frames
            .iter()
            .filter(|r| r.text() == Some(r#"{"wsType":1,"userId":7}"#))
            .count()
            >= 3
    }));
    wait_until("rtt measured", || client.stats().rtt.is_some());
    server.push(r#"{"wsType":4,"msgDataId":"m1"}"#);
    let got = collect(&client, 1);
    assert_eq!(texts(&got), vec![r#"{"wsType":4,"msgDataId":"m1"}"#]);
    // Nothing else is waiting: the replies never reached the application.
    assert!(client.try_recv().is_err());
    assert_eq!(client.stats().inbound_queued, 0);
    client.close();
}

#[test]
fn text_ping_pong_heartbeat_like_the_singleton_client() {
    let server = server();
    server.reply(ReplyRule::Text("ping".into()), "pong");
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            frame: Some(Frame::from("ping")),
            replies: vec![ReplyRule::Text("pong".into())],
            interval: 20 * MS,
            server_timeout: 500 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    assert!(server.wait_for(WAIT, |l| l
        .frames
        .iter()
        .filter(|r| r.text() == Some("ping"))
        .count()
        >= 3));
    server.push("news");
    assert_eq!(texts(&collect(&client, 1)), vec!["news"]);
    assert_eq!(client.stats().connects, 1);
    client.close();
}

/// The span from the first to the `n`th Ping the server received.
fn span_of_pings(server: &heartline::testkit::TestServer, n: usize) -> std::time::Duration {
    assert!(
        server.wait_for(WAIT, |l| l
            .frames
            .iter()
            .filter(|r| r.sent == Sent::Ping)
            .count()
            >= n),
        "the server never saw {n} heartbeats"
    );
    let log = server.log();
    let pings: Vec<_> = log
        .frames
        .iter()
        .filter(|r| r.sent == Sent::Ping)
        .map(|r| r.at)
        .collect();
    pings[n - 1] - pings[0]
}

#[test]
fn heartbeats_keep_the_interval_when_the_server_timeout_is_much_longer() {
    // As seen against node-ws-echo: 100 ms heartbeat, 1 s timeout gave one
    // beat per second. Here in milliseconds: 20 ms heartbeat, 600 ms timeout.
    let server = server();
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            interval: 20 * MS,
            server_timeout: 600 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    let n = 20;
    let span = span_of_pings(&server, n);
    // At the interval, 19 gaps take about 0.4 s; at the timeout's pace they
    // would take 11.4 s. Half of that is the line (a loaded machine delays
    // each wake-up a little, never by hundreds of milliseconds).
    assert!(
        span < 600 * MS * (n as u32 - 1) / 2,
        "{n} heartbeats took {span:?}: the cadence follows the timeout, not the interval"
    );
    assert_eq!(client.stats().connects, 1);
    client.close();
}

#[test]
fn a_heartbeat_shorter_than_a_proxy_idle_timeout_holds_one_connection() {
    // A proxy in the path cuts connections idle for 150 ms; the heartbeat
    // (40 ms) is shorter, the reply timeout (1 s) longer, as in the
    // server-timeout-heartcheck client behind nginx.
    let server = server();
    server.idle_timeout(Some(150 * MS));
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            interval: 40 * MS,
            server_timeout: 1000 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    // 40 heartbeats: about 1.6 s, more than ten of the proxy's timeouts.
    let span = span_of_pings(&server, 40);
    let log = server.log();
    assert_eq!(
        log.accepted(),
        1,
        "the idle proxy cut the link during {span:?} of heartbeats: {:?}",
        client.stats()
    );
    assert_eq!(log.open, 1);
    assert!(
        span >= 150 * MS * 5,
        "the test must outlast several idle timeouts"
    );
    client.close();
}

#[test]
fn without_a_heartbeat_inside_the_proxy_timeout_the_link_is_cut_and_reopened() {
    // The other side of the same switch: a heartbeat slower than the
    // proxy's idle timeout loses the connection, and the client reconnects.
    let server = server();
    server.idle_timeout(Some(60 * MS));
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            interval: Duration::from_secs(5),
            server_timeout: Duration::from_secs(5),
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    assert!(
        server.wait_connections(2, WAIT),
        "the proxy cut and the client came back"
    );
    client.close();
}

/// Pushes a frame every 5 ms until dropped: a busy downstream.
struct Stream {
    stop: Option<crossbeam_channel::Sender<()>>,
    pusher: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(server: std::sync::Arc<heartline::testkit::TestServer>) -> Stream {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let pusher = std::thread::spawn(move || {
            let mut i = 0u64;
            // The pace of the traffic, not a wait for anything.
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(5 * MS)
            {
                server.push(format!("m{i}"));
                i += 1;
            }
        });
        Stream {
            stop: Some(stop),
            pusher: Some(pusher),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(p) = self.pusher.take() {
            let _ = p.join();
        }
    }
}

#[test]
fn a_server_that_drops_silent_clients_keeps_a_busy_one_that_beats_even_when_busy() {
    // A server with a read-idle timeout (Netty's IdleStateHandler) drops a
    // client that has sent nothing for 400 ms, however much it sends the
    // client itself. A frame every 5 ms postpones a 50 ms heartbeat for
    // ever, so the default client is dropped; one that beats even when
    // busy keeps its connection.
    let server = std::sync::Arc::new(server());
    server.idle_timeout(Some(400 * MS));
    let _traffic = Stream::start(server.clone());
    let quiet = fast(server.url())
        .heartbeat(Heartbeat {
            interval: 50 * MS,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    wait_open(&quiet.events());
    assert!(
        server.wait_for(WAIT, |l| l.accepted() >= 2),
        "the default client was never dropped: {:?}",
        quiet.stats()
    );
    quiet.close();
    let before = server.log().accepted();
    let busy = fast(server.url())
        .heartbeat(Heartbeat {
            interval: 50 * MS,
            even_when_busy: true,
            ..common::heartbeat()
        })
        .build()
        .unwrap();
    wait_open(&busy.events());
    // 300 messages: 1.5 s at least, several of the server's timeouts.
    assert!(collect(&busy, 300).len() >= 300);
    let stats = busy.stats();
    assert_eq!(stats.connects, 1, "dropped while busy: {stats:?}");
    assert_eq!(server.log().accepted(), before + 1, "{stats:?}");
    assert!(stats.heartbeats >= 10, "{stats:?}");
    busy.close();
}
