//! Links that die where the heartbeat cannot see: while the application
//! has paused reading (backpressure suspends the heartbeat timeout), and
//! while data waits to be written.
use crate::common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use heartline::{ConnectionError, Frame, Heartbeat, Keepalive, Limits, State, Timeouts};

#[test]
fn a_write_that_cannot_progress_drops_the_connection_within_the_write_timeout() {
    let server = server();
    let client = fast(server.url())
        .timeouts(Timeouts {
            write: Some(300 * MS),
            send: 20 * MS,
            ..common::timeouts()
        })
        .limits(Limits {
            outbound_bytes: 8 << 20,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    // The server stops reading but keeps TCP open: the kernel buffers fill
    // and then nothing moves.
    assert_eq!(server.silence_all(), 1);
    let big = Frame::Binary(vec![7; 64 * 1024]);
    let started = Instant::now();
    let (ev, _) = loop {
        // Keep data waiting to go out until the client gives up on it.
        let _ = client.send(big.clone());
        if let Ok(ev) = events.try_recv() {
            if matches!(ev.state, State::Reconnecting { .. }) {
                break (ev, ());
            }
        }
        assert!(started.elapsed() < WAIT, "never dropped the stalled link");
    };
    assert!(
        matches!(
            ev.error,
            Some(ConnectionError::WriteStalled { .. } | ConnectionError::Io(_))
        ),
        "{:?}",
        ev.error
    );
    let text = why(&ev.error);
    assert!(
        text.contains("could be written") || text.contains("timed out"),
        "{text}"
    );
    client.close();
}

/// What an `#[ignore]`d test here says when run without root.
const NEEDS_ROOT: &str = "needs root: iptables to drop loopback packets";

/// Drops every packet to or from a loopback port while alive: a pulled
/// cable, as the kernel sees it.
struct Cable {
    port: u16,
}

impl Cable {
    fn rules(port: u16) -> [Vec<String>; 2] {
        let p = port.to_string();
        [
            [
                "INPUT", "-i", "lo", "-p", "tcp", "--sport", &p, "-j", "DROP",
            ]
            .map(str::to_owned)
            .to_vec(),
            [
                "INPUT", "-i", "lo", "-p", "tcp", "--dport", &p, "-j", "DROP",
            ]
            .map(str::to_owned)
            .to_vec(),
        ]
    }

    /// `None` when iptables is not usable here (not root, not installed).
    fn pull(port: u16) -> Option<Cable> {
        for r in Self::rules(port) {
            let ok = Command::new("iptables")
                .arg("-I")
                .args(&r)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
        Some(Cable { port })
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        for r in Self::rules(self.port) {
            let _ = Command::new("iptables").arg("-D").args(&r).status();
        }
    }
}

#[test]
#[ignore = "needs root: iptables drops loopback packets (CI runs it)"]
fn a_link_that_dies_while_reading_is_paused_is_noticed_by_tcp_keepalive() {
    let server = server();
    let client = fast(server.url())
        .limits(Limits {
            inbound_capacity: 4,
            ..Limits::default()
        })
        .heartbeat(Heartbeat {
            tcp_keepalive: heartline::TcpKeepalive::Probes(Keepalive {
                idle: Duration::from_secs(1),
                interval: Duration::from_secs(1),
                count: 2,
            }),
            ..common::heartbeat()
        })
        .timeouts(Timeouts {
            write: Some(Duration::from_secs(3)),
            ..common::timeouts()
        })
        .build()
        .unwrap();
    let events = client.events();
    wait_open(&events);
    // The application reads nothing: the queue fills and reading pauses.
    server.push_many((0..64).map(|i| Frame::from(format!("m{i}"))).collect());
    wait_until("reading paused", || client.stats().inbound_queued == 4);
    let cable = Cable::pull(server.addr().port()).expect(NEEDS_ROOT);
    let started = Instant::now();
    let (ev, _) = wait_event(&events, "the dead link noticed", |e| {
        matches!(e.state, State::Reconnecting { .. })
    });
    let after = started.elapsed();
    drop(cable);
    assert!(
        matches!(ev.error, Some(ConnectionError::Io(_))),
        "the kernel reported it: {:?}",
        ev.error
    );
    assert!(after < Duration::from_secs(8), "noticed after {after:?}");
    assert_eq!(
        client.stats().inbound_queued,
        4,
        "the application never read"
    );
    // Once the application reads again, everything arrives over the new
    // connection (the server resends nothing here, so just the queued four
    // and whatever the first socket had read).
    wait_open(&events);
    assert!(!collect(&client, 4).is_empty());
    client.close();
}

#[test]
#[ignore = "needs root: iptables drops loopback packets (CI runs it)"]
fn close_during_a_connect_whose_packets_go_nowhere_is_prompt() {
    // The uplink is gone but the route is still there: the SYN is lost and
    // the connect would wait out connect_timeout, and close() with it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cable = Cable::pull(port).expect(NEEDS_ROOT);
    let client = fast(format!("ws://127.0.0.1:{port}/"))
        .timeouts(Timeouts {
            connect: Duration::from_secs(60),
            ..common::timeouts()
        })
        .build()
        .unwrap();
    wait_event(&client.events(), "connecting", |e| {
        matches!(e.state, State::Connecting { .. })
    });
    let t = Instant::now();
    client.close();
    let took = t.elapsed();
    drop(cable);
    assert!(took < Duration::from_secs(5), "close took {took:?}");
    assert_eq!(
        client.state(),
        State::Closed(heartline::CloseReason::Requested)
    );
}
