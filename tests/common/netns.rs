//! Two network namespaces joined by two veth pairs, `c0`–`s0` and
//! `c1`–`s1`, for the uplink tests and the benchmark's uplink row: the
//! server's address (`10.201.9.1`) is reachable over both, and the client's
//! routes prefer `c0`. `serve` runs in the server's namespace and `tail` in
//! the client's. Needs root. Also the example binaries both use.
#![allow(dead_code)] // the benchmark uses a part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `tail` example binary, built once per run: `cargo test` builds the
/// examples, but `cargo test --test tail` alone does not, and a stale binary
/// would test old code.
pub fn tail_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| example_bin("tail")).clone()
}

/// The `serve` example (the test server as a process), built once.
pub fn serve_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| example_bin("serve")).clone()
}

/// Builds an example in this test binary's profile; its path.
fn example_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--example", name, "--profile", &profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the {name} example failed");
    profile_dir.join("examples").join(name)
}

/// Two network namespaces joined by two veth pairs (see the module
/// documentation); deleted on drop.
pub struct Net {
    pub client: String,
    pub server: String,
}

impl Net {
    pub fn new() -> Result<Net, String> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("hl{}-{n}", std::process::id());
        let net = Net {
            client: format!("{tag}c"),
            server: format!("{tag}s"),
        };
        let (c, s) = (net.client.as_str(), net.server.as_str());
        // The server's address over both links, c0 preferred; replies
        // arrive on whichever link the connection uses. No IPv6: nothing
        // but the test's own traffic on the links.
        let script = format!(
            "netns add {c}
             netns add {s}
             link add c0 netns {c} type veth peer name s0 netns {s}
             link add c1 netns {c} type veth peer name s1 netns {s}
             -n {c} addr add 10.201.0.1/24 dev c0
             -n {c} addr add 10.201.1.1/24 dev c1
             -n {s} addr add 10.201.0.2/24 dev s0
             -n {s} addr add 10.201.1.2/24 dev s1
             -n {s} addr add 10.201.9.1/32 dev lo
             netns exec {c} sysctl -qw net.ipv6.conf.all.disable_ipv6=1
             netns exec {s} sysctl -qw net.ipv6.conf.all.disable_ipv6=1
             netns exec {c} sysctl -qw net.ipv6.conf.default.disable_ipv6=1
             netns exec {s} sysctl -qw net.ipv6.conf.default.disable_ipv6=1
             -n {c} link set lo up
             -n {c} link set c0 up
             -n {c} link set c1 up
             -n {s} link set lo up
             -n {s} link set s0 up
             -n {s} link set s1 up
             -n {c} route add 10.201.9.1/32 via 10.201.0.2 dev c0 metric 10
             -n {c} route add 10.201.9.1/32 via 10.201.1.2 dev c1 metric 20
             netns exec {c} sysctl -qw net.ipv4.conf.all.rp_filter=0
             netns exec {c} sysctl -qw net.ipv4.conf.default.rp_filter=0
             netns exec {c} sysctl -qw net.ipv4.conf.c0.rp_filter=0
             netns exec {c} sysctl -qw net.ipv4.conf.c1.rp_filter=0"
        );
        for step in script.lines() {
            net.ip(&step.split_whitespace().collect::<Vec<_>>())?;
        }
        Ok(net)
    }

    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A counter of the client's interface `link` (`tx_bytes`, …).
    pub fn counter(&self, link: &str, which: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "cat"])
            .arg(format!("/sys/class/net/{link}/statistics/{which}"))
            .output()
            .expect("ip netns exec");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a counter")
    }

    /// The test server in the server's namespace, pushing a message every
    /// 20 ms; its URL.
    pub fn serve(&self) -> (Killed, String) {
        self.serve_with(&[])
    }

    pub fn serve_with(&self, more: &[&str]) -> (Killed, String) {
        let (child, mut lines) = self.serve_lines(more, 1);
        (child, lines.remove(0))
    }

    /// The test server with a feed; its WebSocket and poll URLs.
    pub fn serve_feed(&self) -> (Killed, String, String) {
        let (child, mut lines) = self.serve_lines(&["--feed"], 2);
        let poll = lines.remove(1);
        (child, lines.remove(0), poll)
    }

    /// `serve` with these arguments, and the first `n` lines it prints
    /// (its URLs).
    fn serve_lines(&self, more: &[&str], n: usize) -> (Killed, Vec<String>) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.server])
            .arg(serve_bin())
            .args(["--listen", "10.201.9.1:0", "--every", "20"])
            .args(more)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve runs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let lines = (0..n)
            .map(|_| {
                let mut line = String::new();
                out.read_line(&mut line).expect("serve prints its URLs");
                line.trim().to_owned()
            })
            .collect();
        (Killed(child), lines)
    }

    /// `tail` in the client's namespace until it exits; its JSON lines.
    pub fn tail(&self, args: &[&str]) -> Vec<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client])
            .arg(tail_bin())
            .args(args)
            .output()
            .expect("tail runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Net {
    /// `tail` in the client's namespace, its JSON lines read as they come.
    pub fn tail_live(&self, args: &[&str]) -> Live {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.client])
            .arg(tail_bin())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("tail runs");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send((Instant::now(), v)).is_err() {
                        break;
                    }
                }
            }
        });
        Live {
            _child: Killed(child),
            lines,
            seen: Vec::new(),
        }
    }
}

/// A running `tail`: its lines as they come, and those seen so far.
pub struct Live {
    _child: Killed,
    pub lines: crossbeam_channel::Receiver<(Instant, Value)>,
    pub seen: Vec<Value>,
}

impl Live {
    /// The next `open` line, which must be over `link`; when it came.
    pub fn open_over(&mut self, link: &str) -> Instant {
        let (at, open) = self.next("open", Duration::from_secs(10), |l| l["state"] == "open");
        assert_eq!(open["interface"], link, "{:#?}", self.seen);
        at
    }

    /// Waits for the next batch of messages.
    pub fn a_batch(&mut self) {
        self.next("messages", Duration::from_secs(10), |l| {
            l["batch"].is_array()
        });
    }

    /// The first line from now on that `want` accepts, and when it came;
    /// fails the test after `within`.
    pub fn next(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> (Instant, Value) {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return (at, line);
                    }
                }
                Err(_) => panic!("no {what} within {within:?}; lines: {:#?}", self.seen),
            }
        }
    }

    /// Waits for the feed to go `more` messages past the last one seen.
    pub fn more_of_the_feed(&mut self, what: &str, more: u64) {
        let beyond = self.seqs().last().copied().unwrap_or(0) + more;
        let seq = |m: &Value| {
            serde_json::from_str::<Value>(m["text"].as_str()?)
                .ok()?
                .get("seq")?
                .as_u64()
        };
        self.next(what, Duration::from_secs(10), |l| {
            l["batch"]
                .as_array()
                .is_some_and(|b| b.iter().any(|m| seq(m).is_some_and(|s| s > beyond)))
        });
    }

    /// The feed's sequence numbers of the messages seen so far, in order.
    pub fn seqs(&self) -> Vec<u64> {
        self.seen
            .iter()
            .filter_map(|l| l["batch"].as_array())
            .flatten()
            .filter_map(|m| serde_json::from_str::<Value>(m["text"].as_str()?).ok())
            .filter_map(|m| m["seq"].as_u64())
            .collect()
    }
}

/// `tail`'s arguments for `url` with the interface list `c0`, `c1`.
pub fn c0_then_c1(url: &str) -> Vec<&str> {
    vec![url, "--interface", "c0", "--interface", "c1"]
}

impl Net {
    /// Takes the client's `link` up or down.
    pub fn set_link(&self, link: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        self.ip(&["-n", &self.client, "link", "set", link, state])
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and their peers.
        let _ = self.ip(&["netns", "del", &self.client]);
        let _ = self.ip(&["netns", "del", &self.server]);
    }
}

/// A child process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
