//! Name lookup and connecting, as a device meets them when its uplink is
//! gone or its IPv6 is broken: library behaviour (`connect::dial`), run in
//! a `tail` process because each needs a private `/etc` (its own
//! `resolv.conf` or `hosts`) in a mount namespace, and root to make the
//! fault. `#[ignore]`d in a normal run; CI runs them where root can.
use crate::common;
use common::*;

use std::process::Command;

use serde_json::Value;

/// Runs `tail` with `args` in a private mount namespace where
/// `/etc/{file}` is `content`; its JSON lines and standard error. `Err`:
/// this machine cannot make one.
fn tail_with_etc(file: &str, content: &str, args: &[&str]) -> Result<(Vec<Value>, String), String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("heartline-etc-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ours = dir.join(file);
    std::fs::write(&ours, content).map_err(|e| e.to_string())?;
    let mount = format!("mount --bind {} /etc/{file}", ours.display());
    let private = |script: String| {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &script]);
        c
    };
    let usable = private(format!("{mount} 2>/dev/null"))
        .status()
        .is_ok_and(|s| s.success());
    let out = usable.then(|| {
        private(format!("{mount} && exec \"$0\" \"$@\""))
            .arg(tail_bin())
            .args(args)
            .output()
    });
    let _ = std::fs::remove_dir_all(&dir);
    let out = match out {
        Some(Ok(out)) => out,
        Some(Err(e)) => return Err(format!("cannot run unshare: {e}")),
        None => return Err("cannot make a private mount namespace".into()),
    };
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok((lines, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A DNS server that never answers: a UDP socket on port 53 of a loopback
/// address nobody else uses (a parallel run may hold the first), and that
/// address.
fn silent_dns() -> Option<(std::net::UdpSocket, String)> {
    (77..100).find_map(|i| {
        let ip = format!("127.0.0.{i}");
        std::net::UdpSocket::bind((ip.as_str(), 53))
            .ok()
            .map(|s| (s, ip))
    })
}

#[test]
#[ignore = "needs root: a private mount namespace and a DNS port on 127.0.0.77 (CI runs it)"]
fn a_dns_server_that_never_answers_costs_an_attempt_its_connect_timeout_not_more() {
    // As on a device whose uplink is gone: the resolver's queries go
    // nowhere, and glibc waits 5 s per try (here, two tries) before it
    // gives up, longer than any connect timeout. The resolver here is a
    // UDP socket that never answers, given to tail through its own
    // /etc/resolv.conf.
    init();
    let (silent, ip) = silent_dns().expect("needs root: a DNS port on 127.0.0.77 to 99");
    let ran = tail_with_etc(
        "resolv.conf",
        &format!("nameserver {ip}\noptions timeout:5 attempts:2\n"),
        &[
            "ws://device.heartline.test/ws",
            "--max-attempts",
            "1",
            "--connect-timeout",
            "300",
        ],
    );
    drop(silent);
    let (lines, stderr) = match ran {
        Ok(r) => r,
        Err(why) => panic!("needs root: a private mount namespace ({why})"),
    };
    let closed = lines.last().cloned().unwrap_or_default();
    let error = closed["error"].as_str().unwrap_or("");
    assert!(
        error.contains("DNS lookup") && error.contains("timed out after 300ms"),
        "{lines:?} / {stderr}"
    );
}

#[test]
#[ignore = "needs root: a private mount namespace and a DNS port on 127.0.0.77 (CI runs it)"]
fn close_during_a_dns_lookup_that_never_answers_is_prompt() {
    // tail closes the client after 300 ms (--for), while the lookup has
    // 60 s to go: close() must not wait for it.
    init();
    let (silent, ip) = silent_dns().expect("needs root: a DNS port on 127.0.0.77 to 99");
    let t = std::time::Instant::now();
    let ran = tail_with_etc(
        "resolv.conf",
        &format!("nameserver {ip}\noptions timeout:30 attempts:2\n"),
        &[
            "ws://device.heartline.test/ws",
            "--connect-timeout",
            "60000",
            "--for",
            "300",
        ],
    );
    let took = t.elapsed();
    drop(silent);
    let (lines, stderr) = match ran {
        Ok(r) => r,
        Err(why) => panic!("needs root: a private mount namespace ({why})"),
    };
    assert!(
        took < std::time::Duration::from_secs(10),
        "tail took {took:?}"
    );
    let closed = lines.last().cloned().unwrap_or_default();
    assert_eq!(
        closed["reason"], "closed by the application",
        "{lines:?} / {stderr}"
    );
}

/// Drops every TCP packet to a port on ::1 while alive: IPv6 that
/// resolves but goes nowhere.
struct Ipv6Blackhole(String);

impl Ipv6Blackhole {
    fn rule(port: &str) -> [&str; 9] {
        [
            "INPUT", "-i", "lo", "-p", "tcp", "--dport", port, "-j", "DROP",
        ]
    }

    fn new(port: u16) -> Option<Ipv6Blackhole> {
        let port = port.to_string();
        let ok = Command::new("ip6tables")
            .arg("-I")
            .args(Self::rule(&port))
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Ipv6Blackhole(port))
    }
}

impl Drop for Ipv6Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("ip6tables")
            .arg("-D")
            .args(Self::rule(&self.0))
            .status();
    }
}

#[test]
#[ignore = "needs root: ip6tables and a private mount namespace (CI runs it)"]
fn a_name_whose_ipv6_address_goes_nowhere_connects_over_ipv4() {
    // Broken IPv6 is common on site networks: the name has an AAAA record
    // (tried first, as RFC 6724 prefers it) but its packets are dropped.
    // The attempt must not spend all of connect_timeout on it and fail.
    init();
    let server = server();
    server.set_greeting(vec!["over IPv4".into()]);
    let port = server.addr().port();
    let hole = Ipv6Blackhole::new(port).expect("needs root: ip6tables to drop packets to ::1");
    let url = format!("ws://dual.heartline.test:{port}/");
    let ran = tail_with_etc(
        "hosts",
        "127.0.0.1 localhost\n::1 dual.heartline.test\n127.0.0.1 dual.heartline.test\n",
        &[
            &url,
            "--max-attempts",
            "1",
            "--connect-timeout",
            "5000",
            "--count",
            "1",
        ],
    );
    drop(hole);
    let (lines, stderr) = match ran {
        Ok(r) => r,
        Err(why) => panic!("needs root: a private mount namespace ({why})"),
    };
    assert!(
        lines.iter().any(|l| l["batch"][0]["text"] == "over IPv4"),
        "{lines:?} / {stderr}"
    );
}
