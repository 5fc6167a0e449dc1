//! Connects to any WebSocket server and prints, one JSON object per line on
//! stdout, each state change and each batch. Made for scripts: every line is
//! flushed as it is written.
//!
//! ```text
//! cargo run --example tail -- URL [flags]
//!
//!   --header 'Name: value'   upgrade request header (repeatable, in order)
//!   --heartbeat TEXT         heartbeat frame (default: WebSocket Ping)
//!   --reply TEXT             heartbeat reply to consume (repeatable): a frame
//!                            equal to TEXT or, when TEXT is a JSON object, any
//!                            JSON object holding all of its fields
//!   --every MS               heartbeat interval
//!   --timeout MS             server timeout after a heartbeat
//!   --hello TEXT             frame sent first on every connect (repeatable)
//!   --send TEXT              frame queued once at start (repeatable)
//!   --batch MS               batch window
//!   --backoff MIN_MS:MAX_MS  exponential backoff bounds
//!   --max-attempts N         give up after N failed attempts
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
//! ```
//!
//! Lines: `{"state":"connecting","attempt":1}`, `{"state":"open"}`,
//! `{"state":"reconnecting","attempt":2,"delay_ms":500,"error":"..."}`,
//! `{"state":"polling","attempt":4,"delay_ms":800,"error":"..."}`,
//! `{"state":"closed","reason":"..."}`, and
//! `{"batch":[{"via":"ws","text":"..."},{"via":"poll","text":"..."},{"via":"ws","binary_hex":"00ff"}]}`.
//! A bad flag exits 2; a client that gives up or is closed by the server
//! exits 1.

use std::io::Write;
use std::time::{Duration, Instant};

use heartline::{
    Backoff, Client, CloseReason, Frame, Heartbeat, JsonRules, Message, Method, ReplyRule, State,
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
    hello: Vec<String>,
    send: Vec<String>,
    batch: Option<u64>,
    backoff: Option<(u64, u64)>,
    max_attempts: Option<u32>,
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
}

const USAGE: &str =
    "usage: tail URL [--header 'Name: value']... [--heartbeat TEXT] [--reply TEXT]... \
[--every MS] [--timeout MS] [--hello TEXT]... [--send TEXT]... [--batch MS] \
[--backoff MIN_MS:MAX_MS] [--max-attempts N] [--count N] [--for MS] [--poll URL] \
[--poll-method GET|POST] [--poll-body TEXT] [--poll-after N] [--poll-every MS] [--id POINTER] \
[--cursor POINTER] [--since NAME] [--items POINTER]";

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
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
        if arg == "--help" {
            return Err(String::new());
        }
        // --flag=value or --flag value
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--header" => {
                let v = value()?;
                let (name, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--header: `{v}` is not 'Name: value'"))?;
                if name.trim().is_empty() {
                    return Err(format!("--header: `{v}` has no name"));
                }
                a.headers
                    .push((name.trim().to_owned(), val.trim().to_owned()));
            }
            "--heartbeat" => a.heartbeat = Some(value()?),
            "--reply" => a.replies.push(value()?),
            "--every" => a.every = Some(number("--every", &value()?)?),
            "--timeout" => a.timeout = Some(number("--timeout", &value()?)?),
            "--hello" => a.hello.push(value()?),
            "--send" => a.send.push(value()?),
            "--batch" => a.batch = Some(number("--batch", &value()?)?),
            "--backoff" => {
                let v = value()?;
                let (lo, hi) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--backoff: `{v}` is not MIN_MS:MAX_MS"))?;
                a.backoff = Some((number("--backoff", lo)?, number("--backoff", hi)?));
            }
            "--max-attempts" => a.max_attempts = Some(number("--max-attempts", &value()?)?),
            "--count" => a.count = Some(number("--count", &value()?)?),
            "--for" => a.for_ms = Some(number("--for", &value()?)?),
            "--poll" => a.poll = Some(value()?),
            "--poll-method" => {
                a.poll_method = match value()?.to_ascii_uppercase().as_str() {
                    "GET" => Method::Get,
                    "POST" => Method::Post,
                    other => return Err(format!("--poll-method: `{other}` is not GET or POST")),
                }
            }
            "--poll-body" => a.poll_body = Some(value()?),
            "--poll-after" => a.poll_after = Some(number("--poll-after", &value()?)?),
            "--poll-every" => a.poll_every = Some(number("--poll-every", &value()?)?),
            "--id" => a.id = Some(value()?),
            "--cursor" => a.cursor = Some(value()?),
            "--since" => a.since = Some(value()?),
            "--items" => a.items = Some(value()?),
            _ => return Err(format!("unknown flag `{flag}`")),
        }
    }
    a.url = url.ok_or("missing URL")?;
    Ok(a)
}

fn build(a: &Args) -> heartline::Result<Client> {
    let mut b = Client::builder(a.url.clone());
    for (n, v) in &a.headers {
        b = b.header(n.clone(), v.clone());
    }
    if let Some(h) = &a.heartbeat {
        b = b.heartbeat(Heartbeat::Frame(Frame::from(h.as_str())));
    }
    for r in &a.replies {
        b = b.reply(ReplyRule::parse(r));
    }
    if let Some(ms) = a.every {
        b = b.heartbeat_interval(Duration::from_millis(ms));
    }
    if let Some(ms) = a.timeout {
        b = b.server_timeout(Duration::from_millis(ms));
    }
    if !a.hello.is_empty() {
        let frames: Vec<Frame> = a.hello.iter().map(|h| Frame::from(h.as_str())).collect();
        b = b.hello(move |_| frames.clone());
    }
    if let Some(ms) = a.batch {
        b = b.batch_window(Duration::from_millis(ms));
    }
    if let Some((lo, hi)) = a.backoff {
        b = b.backoff(Backoff::Exponential {
            initial: Duration::from_millis(lo),
            max: Duration::from_millis(hi),
        });
    }
    if let Some(n) = a.max_attempts {
        b = b.max_attempts(Some(n));
    }
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
    b = b.protocol(rules);
    if let Some(n) = a.poll_after {
        b = b.poll_after(n);
    }
    if let Some(ms) = a.poll_every {
        b = b.poll_every(Duration::from_millis(ms));
    }
    b.build()
}

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed pipe ends the program quietly.
    if writeln!(out, "{v}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn state_line(ev: &heartline::Event) -> Value {
    let mut v = json!({ "state": ev.state.name() });
    // (keys keep this order: serde_json's preserve_order is on for examples)
    match &ev.state {
        State::Connecting { attempt } => v["attempt"] = json!(attempt),
        State::Reconnecting { attempt, delay } | State::Polling { attempt, delay } => {
            v["attempt"] = json!(attempt);
            v["delay_ms"] = json!(delay.as_millis() as u64);
        }
        State::Closed(reason) => v["reason"] = json!(reason.to_string()),
        _ => {}
    }
    if let Some(e) = &ev.error {
        v["error"] = json!(e);
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

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("tail: {e}\n{USAGE}");
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
    let events = client.events();
    let printer = std::thread::spawn(move || {
        let mut last = None;
        for ev in events {
            emit(&state_line(&ev));
            last = Some(ev.state);
        }
        last
    });
    let deadline = args
        .for_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut seen = 0u64;
    let mut done = false;
    while !done {
        let got = match deadline {
            Some(d) => client.batches().recv_deadline(d),
            None => client.recv(),
        };
        let Ok(batch) = got else { break };
        let mut items = Vec::with_capacity(batch.len());
        for m in batch.iter() {
            items.push(message_json(m));
            seen += 1;
            if args.count.is_some_and(|n| seen >= n) {
                done = true;
                break;
            }
        }
        emit(&json!({ "batch": items }));
    }
    client.close();
    let last = printer.join().ok().flatten();
    let finished = done || deadline.is_some_and(|d| Instant::now() >= d);
    match last {
        Some(State::Closed(CloseReason::Requested)) | None if finished => {}
        Some(State::Closed(CloseReason::Requested)) => {}
        Some(State::Closed(reason)) => {
            eprintln!("tail: {reason}");
            std::process::exit(1);
        }
        _ => {}
    }
}
