//! Devices with more than one uplink: the connection bound to an interface
//! (the first of a list that is up with an address) or to an address.
//!
//! The root tests build two network namespaces joined by two veth pairs
//! (`common::netns`); the kernel's own interface counters say which link
//! carried the connection. They need root (`#[ignore]`d in a normal run;
//! CI runs them). The others run anywhere.
use crate::common;
use common::netns::{c0_then_c1, Live, Net};
use common::*;

use std::time::{Duration, Instant};

use heartline::{BindProblem, Client, ConnectionError, State};
use serde_json::Value;

#[test]
fn an_interface_that_does_not_exist_is_a_typed_error_with_advice() {
    init();
    let server = server();
    let closed = one_attempt(fast(server.url()).bind_interface("nosuch9"));
    match &closed.error {
        Some(ConnectionError::Bind {
            to,
            problem: BindProblem::NoSuchInterface,
            reason,
        }) => {
            assert_eq!(to, "nosuch9");
            assert!(reason.contains("ip link"), "{reason}");
        }
        other => panic!("expected a Bind error, got {other:?}"),
    }
}

#[test]
fn an_address_that_is_not_the_devices_is_a_typed_error() {
    init();
    let server = server();
    // TEST-NET-1: never an address of this machine.
    let ip = "192.0.2.7".parse().unwrap();
    let closed = one_attempt(fast(server.url()).bind_address(ip));
    assert!(
        matches!(
            &closed.error,
            Some(ConnectionError::Bind {
                problem: BindProblem::AddressNotLocal,
                ..
            })
        ),
        "{:?}",
        closed.error
    );
}

#[test]
fn a_bound_address_is_the_connections_local_address() {
    init();
    let server = server();
    let client = fast(server.url())
        .bind_address("127.0.0.1".parse().unwrap())
        .build()
        .unwrap();
    let (open, _) = wait_event(&client.events(), "open", |e| e.state == State::Open);
    let local = open
        .opened
        .as_ref()
        .and_then(|o| o.local_addr)
        .expect("local address");
    assert_eq!(local.ip().to_string(), "127.0.0.1");
    // The interface is the one with that address; stats() tells the same.
    assert_eq!(
        open.opened.as_ref().and_then(|o| o.interface.as_deref()),
        Some("lo")
    );
    let stats = client.stats();
    assert_eq!(stats.local_addr, Some(local));
    assert_eq!(stats.interface.as_deref(), Some("lo"));
    // How long each step took, in the event and in stats().
    let phases = open.opened.as_ref().map(|o| o.phases).expect("phases");
    assert!(
        phases.tcp > Duration::ZERO && phases.upgrade > Duration::ZERO,
        "{phases:?}"
    );
    assert_eq!((phases.tls, phases.proxy), (None, None));
    assert_eq!(stats.phases, Some(phases));
    // The bytes of the handshake, counted on the interface that has the
    // local address.
    let lo = stats.uplinks.iter().find(|u| u.interface == "lo");
    assert!(
        lo.is_some_and(|u| u.bytes_out > 100 && u.bytes_in > 100),
        "{:?}",
        stats.uplinks
    );
    client.close();
}

#[test]
fn interface_names_are_checked_when_the_client_is_built() {
    for bad in ["", "a/b", "has space", "sixteen-chars-ab"] {
        let r = Client::builder("ws://127.0.0.1:1/ws")
            .bind_interface(bad)
            .build();
        assert!(
            matches!(&r, Err(heartline::Error::Config { field, .. }) if *field == "bind_interface"),
            "{bad:?}: {r:?}"
        );
    }
}

const NEEDS_ROOT: &str = "needs root: network namespaces and veth pairs";

fn net() -> Net {
    Net::new().unwrap_or_else(|why| panic!("{NEEDS_ROOT} ({why})"))
}

/// The `open` line of tail's output.
fn open_line(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|l| l["state"] == "open")
        .unwrap_or_else(|| panic!("no open line in {lines:#?}"))
}

/// `true` when the `open` line's local address has this IP.
fn local_is(open: &Value, ip: &str) -> bool {
    open["local"]
        .as_str()
        .and_then(|l| l.rsplit_once(':'))
        .is_some_and(|(a, _)| a == ip)
}

fn messages(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter_map(|l| l["batch"].as_array())
        .map(Vec::len)
        .sum()
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn a_bound_interface_carries_the_connection_though_the_routes_prefer_another() {
    let net = net();
    let (_server, url) = net.serve();
    // Unbound, the preferred route's link carries it.
    let sent = |link: &str| net.counter(link, "tx_bytes");
    let (c0_before, c1_before) = (sent("c0"), sent("c1"));
    let lines = net.tail(&[&url, "--count", "2", "--for", "10000"]);
    assert_eq!(messages(&lines), 2, "{lines:#?}");
    let (c0, c1) = (sent("c0") - c0_before, sent("c1") - c1_before);
    assert!(c0 >= 300 && c1 == 0, "unbound: c0 sent {c0} bytes, c1 {c1}");
    let (c0_before, c1_before) = (sent("c0"), sent("c1"));
    let lines = net.tail(&[&url, "--interface", "c1", "--count", "3", "--for", "10000"]);
    let open = open_line(&lines);
    assert_eq!(open["interface"], "c1", "{lines:#?}");
    assert!(local_is(open, "10.201.1.1"), "{lines:#?}");
    assert_eq!(messages(&lines), 3, "{lines:#?}");
    // The kernel's counters: the handshake, acks and close went out over
    // c1, nothing over c0 (no other traffic: no IPv6, no other client).
    let (c0, c1) = (sent("c0") - c0_before, sent("c1") - c1_before);
    assert!(
        c1 >= 300 && c0 == 0,
        "bound to c1: c1 sent {c1} bytes, c0 {c0}"
    );
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn of_a_list_the_first_interface_that_is_up_is_used() {
    let net = net();
    let (_server, url) = net.serve();
    net.set_link("c0", false);
    let lines = net.tail(&[
        &url,
        "--interface",
        "c0",
        "--interface",
        "c1",
        "--count",
        "1",
        "--for",
        "10000",
    ]);
    assert_eq!(open_line(&lines)["interface"], "c1", "{lines:#?}");
    assert_eq!(messages(&lines), 1, "{lines:#?}");
    // None of the list up: a typed error that names each one's state, and
    // the reconnect policy (here: give up after one attempt).
    let lines = net.tail(&[
        &url,
        "--interface",
        "c0",
        "--max-attempts",
        "1",
        "--for",
        "10000",
    ]);
    let closed = lines
        .iter()
        .find(|l| l["state"] == "closed")
        .unwrap_or_else(|| panic!("no closed line in {lines:#?}"));
    let error = closed["error"].as_str().unwrap_or("");
    assert!(error.contains("c0: down or no carrier"), "{error}");
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn a_bound_address_is_the_source_of_the_connection() {
    let net = net();
    let (_server, url) = net.serve();
    let lines = net.tail(&[
        &url,
        "--bind",
        "10.201.1.1",
        "--count",
        "1",
        "--for",
        "10000",
    ]);
    let open = open_line(&lines);
    assert!(local_is(open, "10.201.1.1"), "{lines:#?}");
    assert_eq!(messages(&lines), 1, "{lines:#?}");
}

/// What the network-change tests give `tail`: a heartbeat and a backoff so
/// long that only the watcher can explain a move within a second, and the
/// feed's ids and acks, so a message is neither lost nor doubled.
const SLOW_BUT_WATCHING: &[&str] = &[
    "--every",
    "60000",
    "--timeout",
    "60000",
    "--backoff",
    "30000:30000",
    "--connect-timeout",
    "3000",
    "--id",
    "/id",
    "--ack",
    r#"{"type":"ack","ack":"$id"}"#,
    "--for",
    "30000",
];

fn feed_seqs_are_whole(live: &Live) {
    let seqs = live.seqs();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "a message came twice: {seqs:?}");
    let max = sorted.last().copied().unwrap_or(0);
    assert_eq!(
        sorted,
        (1..=max).collect::<Vec<_>>(),
        "a message was lost: {seqs:?}"
    );
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn pulling_the_preferred_link_moves_the_connection_within_a_second() {
    let net = net();
    let (_server, url) = net.serve_with(&["--feed"]);
    let mut args = c0_then_c1(&url);
    args.extend(SLOW_BUT_WATCHING);
    let mut live = net.tail_live(&args);
    live.open_over("c0");
    live.a_batch();
    let pulled = Instant::now();
    net.set_link("c0", false);
    let took = live.open_over("c1") - pulled;
    assert!(took < Duration::from_secs(1), "moved after {took:?}");
    let why = live
        .seen
        .iter()
        .find(|l| l["state"] == "reconnecting")
        .map(|l| l["error"].to_string())
        .unwrap_or_default();
    assert!(
        why.contains("network change") && why.contains("c0"),
        "{why}"
    );
    // The feed goes on over c1, from where it was, nothing lost or doubled.
    live.more_of_the_feed("messages over c1", 10);
    feed_seqs_are_whole(&live);
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn a_client_started_without_a_route_connects_as_soon_as_one_appears() {
    let net = net();
    let (_server, url) = net.serve_with(&["--feed"]);
    for (via, link) in [("10.201.0.2", "c0"), ("10.201.1.2", "c1")] {
        net.ip(&[
            "-n",
            &net.client,
            "route",
            "del",
            "10.201.9.1/32",
            "via",
            via,
            "dev",
            link,
        ])
        .expect("routes removed");
    }
    let mut args = vec![url.as_str()];
    args.extend(SLOW_BUT_WATCHING);
    let mut live = net.tail_live(&args);
    let (_, waiting) = live.next("a failed attempt", Duration::from_secs(10), |l| {
        l["state"] == "reconnecting"
    });
    assert!(
        waiting["error"]
            .to_string()
            .to_lowercase()
            .contains("unreachable"),
        "{waiting}"
    );
    let added = Instant::now();
    net.ip(&[
        "-n",
        &net.client,
        "route",
        "add",
        "default",
        "via",
        "10.201.1.2",
        "dev",
        "c1",
    ])
    .expect("a default route");
    let (at, _) = live.next("open", Duration::from_secs(10), |l| l["state"] == "open");
    let took = at - added;
    assert!(
        took < Duration::from_secs(1),
        "connected {took:?} after the route appeared"
    );
    live.a_batch();
    feed_seqs_are_whole(&live);
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn the_bytes_counted_per_uplink_agree_with_the_kernels_counters() {
    let net = net();
    let (_server, url) = net.serve();
    let counters = |link: &str| {
        ["tx_bytes", "rx_bytes", "tx_packets", "rx_packets"].map(|c| net.counter(link, c))
    };
    let before = counters("c1");
    let lines = net.tail(&[
        &url,
        "--interface",
        "c1",
        "--count",
        "20",
        "--stats",
        "600000",
        "--for",
        "10000",
    ]);
    let after = counters("c1");
    let [tx, rx, tx_packets, rx_packets] = [0, 1, 2, 3].map(|i| after[i] - before[i]);
    let stats = lines
        .iter()
        .rev()
        .find_map(|l| l.get("stats"))
        .unwrap_or_else(|| panic!("no stats line in {lines:#?}"));
    let uplinks = stats["uplinks"].as_array().expect("uplinks");
    assert_eq!(uplinks.len(), 1, "only c1 carried anything: {uplinks:?}");
    let c1 = &uplinks[0];
    assert_eq!(c1["interface"], "c1");
    let (ours_out, ours_in) = (
        c1["bytes_out"].as_u64().unwrap(),
        c1["bytes_in"].as_u64().unwrap(),
    );
    // The kernel counts what we counted plus, per packet, its Ethernet, IP
    // and TCP headers: 66 bytes with TCP timestamps. The SYN's longer
    // options and ARP's shorter packets are the only other difference;
    // nothing else crosses the link (no IPv6, no other client).
    const HEADERS: u64 = 66;
    assert!(ours_out > 100 && ours_in > 20 * 8, "{c1}");
    assert!(
        tx.abs_diff(ours_out + tx_packets * HEADERS) <= 2 * HEADERS,
        "sent: ours {ours_out}, kernel {tx} in {tx_packets} packets"
    );
    assert!(
        rx.abs_diff(ours_in + rx_packets * HEADERS) <= 2 * HEADERS,
        "received: ours {ours_in}, kernel {rx} in {rx_packets} packets"
    );
    // The phase times are on the open line.
    let phases = &open_line(&lines)["phases_ms"];
    assert!(phases["tcp"].as_f64().is_some_and(|t| t > 0.0), "{phases}");
    assert!(
        phases["upgrade"].as_f64().is_some_and(|t| t > 0.0),
        "{phases}"
    );
    assert!(
        phases.get("tls").is_none() && phases.get("proxy").is_none(),
        "{phases}"
    );
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn the_connection_moves_back_to_the_preferred_link_once_it_stayed_up() {
    let net = net();
    let (_server, url) = net.serve_with(&["--feed"]);
    net.set_link("c0", false);
    let mut args = c0_then_c1(&url);
    args.extend(["--min-uptime", "1500"]);
    args.extend(SLOW_BUT_WATCHING);
    let mut live = net.tail_live(&args);
    live.open_over("c1");
    live.a_batch();
    // c0 comes back, and its route with it (as a network manager does).
    let up = Instant::now();
    net.set_link("c0", true);
    net.ip(&[
        "-n",
        &net.client,
        "route",
        "add",
        "10.201.9.1/32",
        "via",
        "10.201.0.2",
        "dev",
        "c0",
        "metric",
        "10",
    ])
    .expect("c0's route");
    let took = live.open_over("c0") - up;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(2500),
        "moved back {took:?} after c0 came up (hysteresis 1.5 s)"
    );
    let why = live
        .seen
        .iter()
        .rfind(|l| l["state"] == "reconnecting")
        .map(|l| l["error"].to_string())
        .unwrap_or_default();
    assert!(why.contains("moving back to c0"), "{why}");
    live.more_of_the_feed("messages over c0", 10);
    feed_seqs_are_whole(&live);
}

#[test]
#[ignore = "needs root: network namespaces and veth pairs (CI runs it)"]
fn polls_go_out_over_the_bound_interface_and_are_counted() {
    let net = net();
    let (_server, _, poll) = net.serve_feed();
    let sent = |link: &str| net.counter(link, "tx_bytes");
    let (c0_before, c1_before) = (sent("c0"), sent("c1"));
    // Nothing listens on port 1: the WebSocket is refused at once, and
    // the client polls after the first failure.
    let lines = net.tail(&[
        "ws://10.201.9.1:1/ws",
        "--interface",
        "c1",
        "--poll",
        &poll,
        "--poll-after",
        "1",
        "--poll-every",
        "50",
        "--id",
        "/id",
        "--cursor",
        "/seq",
        "--since",
        "since",
        "--count",
        "5",
        "--stats",
        "600000",
        "--for",
        "10000",
    ]);
    let polled: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l["batch"].as_array())
        .flatten()
        .filter(|m| m["via"] == "poll")
        .collect();
    assert!(polled.len() >= 5, "{lines:#?}");
    let (c0, c1) = (sent("c0") - c0_before, sent("c1") - c1_before);
    assert!(c1 >= 300 && c0 == 0, "polls: c1 sent {c1} bytes, c0 {c0}");
    let stats = lines
        .iter()
        .rev()
        .find_map(|l| l.get("stats"))
        .unwrap_or_else(|| panic!("no stats line in {lines:#?}"));
    let uplinks = stats["uplinks"].as_array().expect("uplinks");
    assert!(
        uplinks.len() == 1
            && uplinks[0]["interface"] == "c1"
            && uplinks[0]["bytes_out"]
                .as_u64()
                .is_some_and(|b| b > 0 && b <= c1),
        "{uplinks:?} against the kernel's {c1}"
    );
}
