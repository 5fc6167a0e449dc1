//! Connects to any WebSocket server and prints, one JSON object per line on
//! stdout, each state change and each batch. Made for scripts: every line is
//! flushed as it is written.
//!
//! ```text
//! cargo run --example tail -- URL [flags]     (--help lists them all)
//!
//!   --header 'Name: value'   upgrade request header (repeatable, in order)
//!   --heartbeat TEXT         heartbeat frame (default: WebSocket Ping)
//!   --reply TEXT             heartbeat reply to consume (repeatable): a frame
//!                            equal to TEXT or, when TEXT is a JSON object, any
//!                            JSON object holding all of its fields
//!   --every MS               heartbeat interval
//!   --timeout MS             server timeout after a heartbeat
//!   --connect-timeout MS     DNS lookup and TCP connect, per attempt
//!   --beat-when-busy         heartbeat every --every MS even while frames
//!                            arrive (servers that drop a client that has
//!                            sent nothing for a while)
//!   --subprotocol NAME       offer this subprotocol (repeatable, in order of
//!                            preference); the `open` line names the one chosen
//!   --lenient                skip frames that break RFC 6455 (a reserved
//!                            type, text that is not UTF-8) and carry on,
//!                            instead of failing the connection with 1002/1007
//!   --compress               offer permessage-deflate (needs the library's
//!                            `compression` feature)
//!   --interface NAME         send the connection out over this network
//!                            interface (repeatable, in order of preference:
//!                            the first that is up with an address); needs
//!                            CAP_NET_RAW
//!   --bind ADDR              the connection's local IP address
//!   --no-watch               do not watch the kernel's netlink for network
//!                            changes (a lost link is then found by the
//!                            heartbeat, a new one at the backoff's time)
//!   --hello TEXT             frame sent first on every connect (repeatable);
//!                            `$cursor` in TEXT becomes the last cursor as
//!                            JSON (`null` before the first)
//!   --send TEXT              frame queued once at start (repeatable)
//!   --batch MS               batch window
//!   --backoff MIN_MS:MAX_MS  exponential backoff bounds
//!   --max-attempts N         give up after N failed attempts
//!   --min-uptime MS          how long a connection must stay up to count as
//!                            working (backoff reset, polling stopped), and a
//!                            preferred --interface that came back before the
//!                            connection moves back to it
//!   --count N                exit 0 after N messages
//!   --for MS                 exit 0 after that long
//!   --poll URL               HTTP polling fallback endpoint
//!   --poll-method GET|POST   poll method (default GET)
//!   --poll-body TEXT         poll request body (POST)
//!   --poll-after N           poll after N failed WebSocket attempts (default 3)
//!   --poll-every MS          poll interval
//!   --id POINTER             JSON pointer of the message id (dedupe)
//!   --cursor POINTER         JSON pointer of the cursor
//!   --since NAME             query parameter that carries the cursor on polls
//!   --items POINTER          where the array is in a poll response
//!                            (default: the body is the array)
//!   --ca FILE                trust this CA certificate (PEM; repeatable)
//!   --insecure               DANGEROUS: accept any server certificate
//!   --cert FILE              client certificate chain (PEM), with --key:
//!                            presented when the server asks (mutual TLS);
//!                            read again at every attempt
//!   --key FILE               the client certificate's private key (PEM)
//!   --pkcs12 FILE            client certificate and key as PKCS#12 instead
//!   --pkcs12-password-env NAME
//!                            the environment variable holding the PKCS#12
//!                            password (never on the command line)
//!   --stdin                  send every line read on standard input as a
//!                            text frame (EOF does not end tail)
//!   --stats MS               print {"stats":{...}} every MS and at exit
//!   --inbound-bytes N        inbound byte budget
//!   --outbound-bytes N       outbound byte budget
//!   --max-message N          largest inbound message (and frame), bytes; a
//!                            larger frame is dropped (stats: too_large)
//!   --state-dir DIR          keep the cursor, finished ids and unsent frames
//!                            in DIR across restarts and power cuts
//!   --proxy URL              HTTP CONNECT proxy, http://[user:pass@]host:port
//!                            (default: HTTPS_PROXY / http_proxy / ALL_PROXY
//!                            and NO_PROXY from the environment); `none`: off
//!   --ack TEMPLATE           sent for each finished message with an id
//!                            (see --id), `$id` replaced by the id as a JSON
//!                            string; with --state-dir, after it is recorded
//! ```
//!
//! Lines: `{"state":"connecting","attempt":1}`, `{"state":"open"}` (with
//! `"subprotocol":"..."` when the server chose one, `"compression":true`
//! when it agreed to permessage-deflate, and with `--interface` or `--bind`
//! `"interface":"..."` (the one used), `"local":"ip:port"`, the
//! connection's local address, and `"phases_ms":{"dns":0.01,"tcp":0.2,
//! "tls":3.1,"upgrade":0.4}`, how long each step of opening took, with
//! `"proxy"` and `"tls"` only when there was one),
//! `{"state":"reconnecting","attempt":2,"delay_ms":500,"error":"..."}` (with
//! `"status":503` after it when the server refused the upgrade),
//! `{"state":"polling","attempt":4,"delay_ms":800,"error":"..."}`,
//! `{"state":"closed","reason":"..."}` (with `"error"`, and `"status"` for a
//! refused upgrade, when it gave up or the server's close was terminal), and
//! `{"batch":[{"via":"ws","text":"..."},{"via":"poll","text":"..."},{"via":"ws","binary_hex":"00ff"}]}`,
//! and with `--stats`, `{"stats":{"state":"open","connects":1,...}}` (every
//! field of `heartline::Stats`; `rtt_us` in microseconds, `null` until
//! measured; `"uplinks":[{"interface":"eth0","bytes_in":..,"bytes_out":..}]`,
//! the bytes each interface carried since start).
//! A bad flag exits 2; a client that gives up or is closed by the server
//! exits 1.
//!
//! Logs go to standard error, chosen by `RUST_LOG` as with env_logger
//! (`warn`, `heartline=debug,ureq=warn`, …; off when unset), through a
//! small logger of its own: `tail` is the binary measured for the
//! device footprint, and env_logger's filter and formatter are about 11 KiB
//! of code there (cargo bloat). A release build logs at most `info`: the
//! examples turn on `log`'s `release_max_level_info`, as a device binary
//! should, so `debug` and `trace` need a debug build (`cargo run --example
//! tail`).

use std::io::Write;
use std::time::{Duration, Instant};

use heartline::{
    Backoff, Client, ClientIdentity, CloseReason, Delivery, Frame, Heartbeat, JsonRules, Limits,
    Message, Method, Persistence, Polling, Reconnect, RecvTimeoutError, ReplyRule, State, Timeouts,
    Tls, Update,
};
use serde_json::{json, Value};

#[derive(Default)]
struct Args {
    url: String,
    headers: Vec<(String, String)>,
    heartbeat: Option<String>,
    replies: Vec<String>,
    every: Option<u64>,
    timeout: Option<u64>,
    connect_timeout: Option<u64>,
    hello: Vec<String>,
    subprotocols: Vec<String>,
    interfaces: Vec<String>,
    bind: Option<std::net::IpAddr>,
    no_watch: bool,
    send: Vec<String>,
    batch: Option<u64>,
    backoff: Option<(u64, u64)>,
    max_attempts: Option<u32>,
    min_uptime: Option<u64>,
    count: Option<u64>,
    for_ms: Option<u64>,
    poll: Option<String>,
    poll_method: Method,
    poll_body: Option<String>,
    poll_after: Option<u32>,
    poll_every: Option<u64>,
    id: Option<String>,
    cursor: Option<String>,
    since: Option<String>,
    items: Option<String>,
    ca: Vec<String>,
    insecure: bool,
    cert: Option<String>,
    key: Option<String>,
    pkcs12: Option<String>,
    pkcs12_password_env: Option<String>,
    beat_when_busy: bool,
    lenient: bool,
    compress: bool,
    stdin: bool,
    stats: Option<u64>,
    inbound_bytes: Option<usize>,
    outbound_bytes: Option<usize>,
    max_message: Option<usize>,
    state_dir: Option<String>,
    ack: Option<String>,
    proxy: Option<String>,
}

/// One flag: its name, what its value is (empty for a switch), one line of
/// help, and what it sets. The parser and `--help` both read this table, so
/// they cannot drift apart.
struct Flag {
    name: &'static str,
    value: &'static str,
    help: &'static str,
    set: fn(&mut Args, String) -> Result<(), String>,
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

const FLAGS: &[Flag] = &[
    Flag { name: "--header", value: "'Name: value'", help: "upgrade request header (repeatable, in order)", set: |a, v| {
        let (name, val) = v.split_once(':').ok_or_else(|| format!("--header: `{v}` is not 'Name: value'"))?;
        if name.trim().is_empty() {
            return Err(format!("--header: `{v}` has no name"));
        }
        a.headers.push((name.trim().to_owned(), val.trim().to_owned()));
        Ok(())
    } },
    Flag { name: "--heartbeat", value: "TEXT", help: "heartbeat frame (default: WebSocket Ping)", set: |a, v| { a.heartbeat = Some(v); Ok(()) } },
    Flag { name: "--reply", value: "TEXT", help: "heartbeat reply to consume (repeatable): equal to TEXT, or holding all of a JSON object's fields", set: |a, v| { a.replies.push(v); Ok(()) } },
    Flag { name: "--every", value: "MS", help: "heartbeat interval", set: |a, v| { a.every = Some(number("--every", &v)?); Ok(()) } },
    Flag { name: "--timeout", value: "MS", help: "server timeout after a heartbeat", set: |a, v| { a.timeout = Some(number("--timeout", &v)?); Ok(()) } },
    Flag { name: "--connect-timeout", value: "MS", help: "DNS lookup and TCP connect, per attempt", set: |a, v| { a.connect_timeout = Some(number("--connect-timeout", &v)?); Ok(()) } },
    Flag { name: "--beat-when-busy", value: "", help: "heartbeat every --every MS even while frames arrive", set: |a, _| { a.beat_when_busy = true; Ok(()) } },
    Flag { name: "--subprotocol", value: "NAME", help: "offer this subprotocol (repeatable, in order of preference)", set: |a, v| { a.subprotocols.push(v); Ok(()) } },
    Flag { name: "--compress", value: "", help: "offer permessage-deflate (compression feature)", set: |a, _| { a.compress = true; Ok(()) } },
    Flag { name: "--interface", value: "NAME", help: "send the connection out over this interface (repeatable, in order of preference); needs CAP_NET_RAW", set: |a, v| { a.interfaces.push(v); Ok(()) } },
    Flag { name: "--bind", value: "ADDR", help: "the connection's local IP address", set: |a, v| {
        a.bind = Some(v.parse().map_err(|_| format!("--bind: `{v}` is not an IP address"))?);
        Ok(())
    } },
    Flag { name: "--no-watch", value: "", help: "do not watch the network for changes (netlink)", set: |a, _| { a.no_watch = true; Ok(()) } },
    Flag { name: "--lenient", value: "", help: "skip frames that break RFC 6455 instead of failing the connection", set: |a, _| { a.lenient = true; Ok(()) } },
    Flag { name: "--hello", value: "TEXT", help: "frame sent first on every connect (repeatable); `$cursor` becomes the last cursor as JSON", set: |a, v| { a.hello.push(v); Ok(()) } },
    Flag { name: "--send", value: "TEXT", help: "frame queued once at start (repeatable)", set: |a, v| { a.send.push(v); Ok(()) } },
    Flag { name: "--batch", value: "MS", help: "batch window", set: |a, v| { a.batch = Some(number("--batch", &v)?); Ok(()) } },
    Flag { name: "--backoff", value: "MIN_MS:MAX_MS", help: "exponential backoff bounds", set: |a, v| {
        let (lo, hi) = v.split_once(':').ok_or_else(|| format!("--backoff: `{v}` is not MIN_MS:MAX_MS"))?;
        a.backoff = Some((number("--backoff", lo)?, number("--backoff", hi)?));
        Ok(())
    } },
    Flag { name: "--max-attempts", value: "N", help: "give up after N failed attempts", set: |a, v| { a.max_attempts = Some(number("--max-attempts", &v)?); Ok(()) } },
    Flag { name: "--min-uptime", value: "MS", help: "how long a connection (or a preferred interface back) must stay up to count", set: |a, v| { a.min_uptime = Some(number("--min-uptime", &v)?); Ok(()) } },
    Flag { name: "--count", value: "N", help: "exit 0 after N messages", set: |a, v| { a.count = Some(number("--count", &v)?); Ok(()) } },
    Flag { name: "--for", value: "MS", help: "exit 0 after that long", set: |a, v| { a.for_ms = Some(number("--for", &v)?); Ok(()) } },
    Flag { name: "--poll", value: "URL", help: "HTTP polling fallback endpoint", set: |a, v| { a.poll = Some(v); Ok(()) } },
    Flag { name: "--poll-method", value: "GET|POST", help: "poll method (default GET)", set: |a, v| {
        a.poll_method = match v.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            other => return Err(format!("--poll-method: `{other}` is not GET or POST")),
        };
        Ok(())
    } },
    Flag { name: "--poll-body", value: "TEXT", help: "poll request body (POST)", set: |a, v| { a.poll_body = Some(v); Ok(()) } },
    Flag { name: "--poll-after", value: "N", help: "poll after N failed WebSocket attempts (default 3)", set: |a, v| { a.poll_after = Some(number("--poll-after", &v)?); Ok(()) } },
    Flag { name: "--poll-every", value: "MS", help: "poll interval", set: |a, v| { a.poll_every = Some(number("--poll-every", &v)?); Ok(()) } },
    Flag { name: "--id", value: "POINTER", help: "JSON pointer of the message id (dedupe)", set: |a, v| { a.id = Some(v); Ok(()) } },
    Flag { name: "--cursor", value: "POINTER", help: "JSON pointer of the cursor", set: |a, v| { a.cursor = Some(v); Ok(()) } },
    Flag { name: "--since", value: "NAME", help: "query parameter that carries the cursor on polls", set: |a, v| { a.since = Some(v); Ok(()) } },
    Flag { name: "--items", value: "POINTER", help: "where the array is in a poll response (default: the body)", set: |a, v| { a.items = Some(v); Ok(()) } },
    Flag { name: "--ca", value: "FILE", help: "trust this CA certificate (PEM; repeatable)", set: |a, v| { a.ca.push(v); Ok(()) } },
    Flag { name: "--insecure", value: "", help: "DANGEROUS: accept any server certificate", set: |a, _| { a.insecure = true; Ok(()) } },
    Flag { name: "--cert", value: "FILE", help: "client certificate chain (PEM), with --key (mutual TLS)", set: |a, v| { a.cert = Some(v); Ok(()) } },
    Flag { name: "--key", value: "FILE", help: "the client certificate's private key (PEM)", set: |a, v| { a.key = Some(v); Ok(()) } },
    Flag { name: "--pkcs12", value: "FILE", help: "client certificate and key as PKCS#12", set: |a, v| { a.pkcs12 = Some(v); Ok(()) } },
    Flag { name: "--pkcs12-password-env", value: "NAME", help: "environment variable holding the PKCS#12 password", set: |a, v| { a.pkcs12_password_env = Some(v); Ok(()) } },
    Flag { name: "--stdin", value: "", help: "send every line of standard input as a text frame", set: |a, _| { a.stdin = true; Ok(()) } },
    Flag { name: "--stats", value: "MS", help: "print {\"stats\":{...}} every MS and at exit", set: |a, v| { a.stats = Some(number("--stats", &v)?); Ok(()) } },
    Flag { name: "--inbound-bytes", value: "N", help: "inbound byte budget", set: |a, v| { a.inbound_bytes = Some(number("--inbound-bytes", &v)?); Ok(()) } },
    Flag { name: "--outbound-bytes", value: "N", help: "outbound byte budget", set: |a, v| { a.outbound_bytes = Some(number("--outbound-bytes", &v)?); Ok(()) } },
    Flag { name: "--max-message", value: "N", help: "largest inbound message (and frame), bytes; a larger one is dropped", set: |a, v| { a.max_message = Some(number("--max-message", &v)?); Ok(()) } },
    Flag { name: "--state-dir", value: "DIR", help: "keep cursor, finished ids and unsent frames in DIR across restarts", set: |a, v| { a.state_dir = Some(v); Ok(()) } },
    Flag { name: "--ack", value: "TEMPLATE", help: "sent for each finished message with an id (--id); `$id` becomes the id", set: |a, v| { a.ack = Some(v); Ok(()) } },
    Flag { name: "--proxy", value: "URL|none", help: "HTTP CONNECT proxy http://[user:pass@]host:port (default: environment)", set: |a, v| { a.proxy = Some(v); Ok(()) } },
    Flag { name: "--help", value: "", help: "print this and exit", set: |_, _| Err(String::new()) },
];

/// The usage line, then one line per flag, from [`FLAGS`].
fn usage() -> String {
    let mut out = String::from("usage: tail URL [flags]\n");
    let width = FLAGS
        .iter()
        .map(|f| f.name.len() + f.value.len() + 1)
        .max()
        .unwrap_or(0);
    for f in FLAGS {
        let left = if f.value.is_empty() {
            f.name.to_owned()
        } else {
            format!("{} {}", f.name, f.value)
        };
        out.push_str(&format!("  {left:<width$}  {}\n", f.help));
    }
    out
}

fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut url = None;
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with("--") {
            if url.replace(arg.clone()).is_some() {
                return Err(format!("unexpected argument `{arg}` (URL given twice?)"));
            }
            continue;
        }
        // --flag=value or --flag value
        let (name, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let flag = FLAGS
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| format!("unknown flag `{name}`"))?;
        let value = match (flag.value.is_empty(), inline) {
            (true, None) => String::new(),
            (true, Some(_)) => return Err(format!("{name} takes no value")),
            (false, Some(v)) => v,
            (false, None) => it.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        (flag.set)(&mut a, value)?;
    }
    a.url = url.ok_or("missing URL")?;
    Ok(a)
}

fn build(a: &Args) -> Result<Client, String> {
    let mut b = Client::builder(a.url.clone())
        .lenient(a.lenient)
        .compression(a.compress)
        .subprotocols(a.subprotocols.clone());
    for name in &a.interfaces {
        b = b.bind_interface(name.clone());
    }
    if let Some(ip) = a.bind {
        b = b.bind_address(ip);
    }
    b = b.watch_network(!a.no_watch);
    let mut tls = Tls::default();
    for path in &a.ca {
        let pem = std::fs::read(path).map_err(|e| format!("--ca {path}: {e}"))?;
        tls.root_certificates.push(pem);
    }
    if a.insecure {
        eprintln!("tail: --insecure: any server certificate is accepted");
        tls.danger_accept_invalid_certs = true;
    }
    tls.client_identity = match (&a.cert, &a.key, &a.pkcs12) {
        (Some(chain), Some(key), None) => Some(ClientIdentity::PemFiles {
            chain: chain.into(),
            key: key.into(),
        }),
        (None, None, Some(path)) => {
            let password = match &a.pkcs12_password_env {
                Some(name) => std::env::var(name).map_err(|_| {
                    format!("--pkcs12-password-env {name}: not set in the environment")
                })?,
                None => String::new(),
            };
            Some(ClientIdentity::Pkcs12File {
                path: path.into(),
                password,
            })
        }
        (None, None, None) => None,
        _ => return Err("give --cert with --key, or --pkcs12, not both".to_owned()),
    };
    let mut limits = Limits::default();
    if let Some(n) = a.inbound_bytes {
        limits.inbound_bytes = n;
    }
    if let Some(n) = a.outbound_bytes {
        limits.outbound_bytes = n;
    }
    if let Some(n) = a.max_message {
        limits.max_message_size = n;
        limits.max_frame_size = n;
    }
    for (n, v) in &a.headers {
        b = b.header(n.clone(), v.clone());
    }
    let ms = Duration::from_millis;
    let default = Heartbeat::default();
    let heartbeat = Heartbeat {
        frame: a.heartbeat.as_deref().map(Frame::from),
        replies: a.replies.iter().map(|r| ReplyRule::parse(r)).collect(),
        interval: a.every.map_or(default.interval, ms),
        server_timeout: a.timeout.map_or(default.server_timeout, ms),
        even_when_busy: a.beat_when_busy,
        ..default
    };
    let mut timeouts = Timeouts::default();
    if let Some(t) = a.connect_timeout {
        timeouts.connect = ms(t);
    }
    if !a.hello.is_empty() {
        let texts = a.hello.clone();
        b = b.hello(move |ctx| {
            let cursor = ctx
                .cursor
                .as_ref()
                .map_or_else(|| "null".to_owned(), |c| c.to_json().to_string());
            texts
                .iter()
                .map(|h| Frame::from(h.replace("$cursor", &cursor)))
                .collect()
        });
    }
    match a.proxy.as_deref() {
        None => {}
        Some("none") => b = b.proxy(None),
        Some(url) => b = b.proxy(Some(url)),
    }
    if let Some(dir) = &a.state_dir {
        b = b.persistence(Persistence::in_dir(dir));
    }
    if a.ack.is_some() && a.id.is_none() {
        return Err("--ack needs --id (acks are sent for messages with an id)".into());
    }
    let mut delivery = Delivery::default();
    if let Some(t) = a.batch {
        delivery.batch_window = ms(t);
    }
    let mut reconnect = Reconnect::default();
    if let Some((lo, hi)) = a.backoff {
        reconnect.backoff = Backoff::Exponential {
            initial: ms(lo),
            max: ms(hi),
        };
    }
    if let Some(ms) = a.min_uptime {
        reconnect.min_uptime = Duration::from_millis(ms);
    }
    if let Some(n) = a.max_attempts {
        reconnect.max_attempts = n;
    }
    let mut polling = Polling::default();
    if let Some(n) = a.poll_after {
        polling.after = n;
    }
    if let Some(t) = a.poll_every {
        polling.every = ms(t);
    }
    b = b
        .tls(tls)
        .limits(limits)
        .heartbeat(heartbeat)
        .timeouts(timeouts)
        .delivery(delivery)
        .reconnect(reconnect)
        .polling(polling);
    let mut rules = JsonRules::new();
    if let Some(p) = &a.id {
        rules = rules.id(p);
    }
    if let Some(p) = &a.cursor {
        rules = rules.cursor(p);
    }
    if let Some(url) = &a.poll {
        rules = rules.poll(url.clone(), a.poll_method, a.poll_body.clone());
        if let Some(p) = &a.since {
            rules = rules.poll_since(p);
        }
        if let Some(p) = &a.items {
            rules = rules.poll_items(p);
        }
    }
    // The documented form, a JSON object with `$id` as values, is the
    // library's own ack rule (an ack only for a message whose id was found);
    // any other text keeps the text substitution.
    let mut text_ack = None;
    if let (Some(t), Some(id)) = (&a.ack, &a.id) {
        match json_ack(t) {
            Some((template, keys)) => {
                rules = rules.ack(template, keys.iter().map(|k| (id.as_str(), k.as_str())));
            }
            None => text_ack = Some(t.clone()),
        }
    }
    b = b.protocol(TailRules {
        rules,
        ack: text_ack,
    });
    b.build().map_err(|e| e.to_string())
}

/// `--ack`'s template as a JSON object and the keys whose value is `$id`,
/// if it is one.
fn json_ack(template: &str) -> Option<(Value, Vec<String>)> {
    const MARK: &str = "\u{1}heartline-id\u{1}";
    let quoted = json!(MARK).to_string();
    let marked = template.replace("$id", &quoted);
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&marked) else {
        return None;
    };
    let keys: Vec<String> = map
        .iter()
        .filter(|(_, v)| v.as_str() == Some(MARK))
        .map(|(k, _)| k.clone())
        .collect();
    if keys.is_empty() || marked.matches(&quoted).count() != keys.len() {
        return None; // `$id` nested, or inside a string: the text form
    }
    for k in &keys {
        map.remove(k);
    }
    Some((Value::Object(map), keys))
}

/// The rules from the flags, plus `--ack`'s text template (when it is not
/// a JSON object, see [`json_ack`]).
struct TailRules {
    rules: JsonRules,
    ack: Option<String>,
}

impl heartline::Protocol for TailRules {
    fn inspect(&self, frame: &Frame) -> heartline::Inspected {
        let mut out = self.rules.inspect(frame);
        if let (Some(t), Some(id)) = (&self.ack, &out.id) {
            out.ack = Some(Frame::from(t.replace("$id", &json!(id).to_string())));
        }
        out
    }
    fn poll_request(&self, cursor: Option<&heartline::Cursor>) -> Option<heartline::PollRequest> {
        self.rules.poll_request(cursor)
    }
    fn parse_poll(&self, body: &[u8]) -> Result<Vec<heartline::PollItem>, String> {
        self.rules.parse_poll(body)
    }
}

/// `{"stats":{...}}`: every field of `Stats`, in its order.
fn stats_line(s: &heartline::Stats) -> Value {
    json!({ "stats": {
        "state": s.state.name(),
        "connects": s.connects,
        "failed_attempts": s.failed_attempts,
        "last_error": s.last_error.as_ref().map(|e| e.to_string()),
        "last_poll_error": s.last_poll_error.as_ref().map(|e| e.to_string()),
        "subprotocol": s.subprotocol,
        "interface": s.interface,
        "local": s.local_addr.map(|a| a.to_string()),
        "phases_ms": s.phases.as_ref().map(phases_json),
        "uplinks": s.uplinks.iter().map(|u| json!({
            "interface": u.interface,
            "bytes_in": u.bytes_in,
            "bytes_out": u.bytes_out,
        })).collect::<Vec<_>>(),
        "rtt_us": s.rtt.map(|d| d.as_micros() as u64),
        "heartbeats": s.heartbeats,
        "frames_in": s.frames_in,
        "bytes_in": s.bytes_in,
        "frames_out": s.frames_out,
        "bytes_out": s.bytes_out,
        "outbound_queued": s.outbound_queued,
        "outbound_bytes": s.outbound_bytes,
        "inbound_queued": s.inbound_queued,
        "inbound_bytes": s.inbound_bytes,
        "inbound_bytes_peak": s.inbound_bytes_peak,
        "dropped": s.dropped,
        "events_dropped": s.events_dropped,
        "duplicates": s.duplicates,
        "acks": s.acks,
        "polls": s.polls,
        "poll_failures": s.poll_failures,
        "malformed": s.malformed,
        "too_large": s.too_large,
        "reliable_pending": s.reliable_pending,
        "state_writes": s.state_writes,
        "state_write_errors": s.state_write_errors,
    }})
}

/// `{"dns":..,"tcp":..,"proxy":..,"tls":..,"upgrade":..}` in milliseconds
/// (fractions kept); `proxy` and `tls` only when there was one.
fn phases_json(p: &heartline::Phases) -> Value {
    let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
    let mut v = json!({ "dns": ms(p.dns), "tcp": ms(p.tcp) });
    if let Some(d) = p.proxy {
        v["proxy"] = json!(ms(d));
    }
    if let Some(d) = p.tls {
        v["tls"] = json!(ms(d));
    }
    v["upgrade"] = json!(ms(p.upgrade));
    v
}

/// Sends each line of standard input as a text frame, until EOF (which
/// does not end tail) or the client closes.
fn forward_stdin(client: Client) {
    let stdin = std::io::stdin();
    for line in std::io::BufRead::lines(stdin.lock()) {
        let Ok(line) = line else { break };
        match client.send(line) {
            Ok(()) => {}
            Err(heartline::SendError::Closed(_)) => break,
            Err(e) => eprintln!("tail: --stdin: {e}"),
        }
    }
}

fn emit(v: &Value) {
    write_line(&v.to_string());
}

fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe ends the program quietly.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// A state line with `state` first, as scripts reading by eye expect
/// (serde_json's maps are sorted by key).
fn emit_state(ev: &heartline::Event, bound: bool) {
    let Value::Object(mut rest) = state_line(ev, bound) else {
        return;
    };
    let state = rest.remove("state").unwrap_or_default();
    let rest = Value::Object(rest).to_string();
    match rest.strip_prefix('{').filter(|r| *r != "}") {
        Some(r) => write_line(&format!("{{\"state\":{state},{r}")),
        None => write_line(&format!("{{\"state\":{state}}}")),
    }
}

fn state_line(ev: &heartline::Event, bound: bool) -> Value {
    let mut v = json!({ "state": ev.state.name() });
    match &ev.state {
        State::Connecting { attempt } => v["attempt"] = json!(attempt),
        State::Reconnecting { attempt, delay } | State::Polling { attempt, delay } => {
            v["attempt"] = json!(attempt);
            v["delay_ms"] = json!(delay.as_millis() as u64);
        }
        State::Closed(reason) => v["reason"] = json!(reason.to_string()),
        _ => {}
    }
    if let Some(p) = ev.opened.as_ref().and_then(|o| o.subprotocol.as_ref()) {
        v["subprotocol"] = json!(p);
    }
    if ev.opened.as_ref().is_some_and(|o| o.compression) {
        v["compression"] = json!(true);
    }
    // The interface, local address and phase times when the uplink was
    // chosen (the line is unchanged for scripts that do not bind).
    if bound {
        if let Some(o) = &ev.opened {
            if let Some(i) = &o.interface {
                v["interface"] = json!(i);
            }
            if let Some(a) = o.local_addr {
                v["local"] = json!(a.to_string());
            }
            v["phases_ms"] = phases_json(&o.phases);
        }
    }
    if let Some(e) = &ev.error {
        v["error"] = json!(e.to_string());
        // The HTTP status of a refused upgrade, so a script can tell a
        // 401 from a 503 without parsing the text.
        if let Some(status) = e.status() {
            v["status"] = json!(status);
        }
    }
    v
}

fn message_json(m: &Message) -> Value {
    match m.text() {
        Some(t) => json!({ "via": m.via().as_str(), "text": t }),
        None => {
            let hex: String = m.bytes().iter().map(|b| format!("{b:02x}")).collect();
            json!({ "via": m.via().as_str(), "binary_hex": hex })
        }
    }
}

/// `RUST_LOG` directives: `level` or `target=level`, comma-separated; the
/// longest matching target prefix wins.
struct StderrLog {
    rules: Vec<(String, log::LevelFilter)>,
}

impl StderrLog {
    fn install() {
        let spec = std::env::var("RUST_LOG").unwrap_or_default();
        let mut rules: Vec<(String, log::LevelFilter)> = spec
            .split(',')
            .filter_map(|d| {
                let (target, level) = d.trim().rsplit_once('=').unwrap_or(("", d.trim()));
                Some((target.to_owned(), level.parse().ok()?))
            })
            .collect();
        rules.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let max = rules
            .iter()
            .map(|r| r.1)
            .max()
            .unwrap_or(log::LevelFilter::Off);
        if log::set_boxed_logger(Box::new(StderrLog { rules })).is_ok() {
            log::set_max_level(max);
        }
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        let t = m.target();
        self.rules
            .iter()
            .find(|(p, _)| t.starts_with(p.as_str()))
            .is_some_and(|(_, l)| m.level() <= *l)
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

fn main() {
    StderrLog::install();
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{}", usage());
            return;
        }
        Err(e) => {
            eprintln!("tail: {e}\n{}", usage());
            std::process::exit(2);
        }
    };
    let client = match build(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tail: {e}");
            std::process::exit(2);
        }
    };
    for s in &args.send {
        if let Err(e) = client.send(s.as_str()) {
            eprintln!("tail: --send: {e}");
        }
    }
    if args.stdin {
        let c = client.clone();
        // Not joined: a read of standard input cannot be interrupted, and
        // the process exit ends it.
        std::thread::spawn(move || forward_stdin(c));
    }
    // One loop: state changes and batches in the order they happened, and
    // the --stats lines when due.
    let updates = client.updates();
    let deadline = args
        .for_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let every = args.stats.map(|ms| Duration::from_millis(ms.max(1)));
    let mut next_stats = every.map(|e| Instant::now() + e);
    let mut last: Option<heartline::Event> = None;
    let bound = !args.interfaces.is_empty() || args.bind.is_some();
    let mut seen = 0u64;
    let mut done = false;
    while !done {
        let until = match (deadline, next_stats) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let got = match until {
            Some(t) => updates.recv_deadline(t),
            None => updates.recv().map_err(|_| RecvTimeoutError::Closed),
        };
        match got {
            Err(RecvTimeoutError::Closed) => break,
            Err(RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let (Some(t), Some(e)) = (next_stats, every) {
                    emit(&stats_line(&client.stats()));
                    next_stats = Some(t + e);
                }
            }
            Ok(Update::Event(ev)) => {
                emit_state(&ev, bound);
                last = Some(ev);
            }
            Ok(Update::Batch(mut batch)) => {
                let left = args.count.map(|n| n.saturating_sub(seen) as usize);
                if let Some(rest) = left.and_then(|n| batch.split_off(n)) {
                    // --count stops inside this batch: the messages after it
                    // are not printed, so they are not finished (not acked,
                    // not recorded) and the server delivers them again.
                    drop(rest);
                }
                // The loop over the batch finishes what it passes: all of it.
                let items: Vec<Value> = batch.iter().map(message_json).collect();
                seen += items.len() as u64;
                done = args.count.is_some_and(|n| seen >= n);
                emit(&json!({ "batch": items }));
                // Dropping the batch records and acks what was printed (with
                // --state-dir, recorded first).
            }
        }
    }
    client.close();
    // The state lines up to the final one; what else was queued is not
    // printed (and not acked: the server delivers it again).
    for update in updates {
        if let Update::Event(ev) = update {
            emit_state(&ev, bound);
            last = Some(ev);
        }
    }
    if args.stats.is_some() {
        emit(&stats_line(&client.stats()));
    }
    let Some(last) = last else { return };
    match last.state {
        State::Closed(CloseReason::Requested) => {}
        State::Closed(reason) => {
            match last.error {
                Some(e) => eprintln!("tail: {reason}: {e}"),
                None => eprintln!("tail: {reason}"),
            }
            std::process::exit(1);
        }
        _ => {}
    }
}
