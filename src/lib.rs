//! # heartline
//!
//! Keeps one WebSocket connection alive on an embedded or edge Linux device
//! and hands the application every message the server pushes, in batches,
//! through a blocking receiver.
//!
//! ```no_run
//! use std::time::Duration;
//! use heartline::{Heartbeat, ReplyRule};
//! let client = heartline::Client::builder("wss://push.example.com/ws")
//!     .heartbeat(Heartbeat {
//!         frame: Some(r#"{"type":"ping"}"#.into()),
//!         replies: vec![ReplyRule::parse(r#"{"type":"pong"}"#)],
//!         interval: Duration::from_secs(30),
//!         server_timeout: Duration::from_secs(10),
//!         ..Heartbeat::default()
//!     })
//!     .build()?;
//! for batch in client.batches() {
//!     for msg in &batch {
//!         println!("{}", msg.text().unwrap_or("<binary>"));
//!     }
//! }
//! # Ok::<(), heartline::Error>(())
//! ```
//!
//! ## Threads
//!
//! No async runtime: a few named threads talk over bounded crossbeam
//! channels.
//!
//! ```text
//!  Client::send ─► outbound queue (frames + bytes) ─────┐ (+ waker)
//!  Client::close ─► control ─► heartline-supervisor ── connects, backoff,
//!                                 │ spawns/joins per connection:
//!                                 ├─► heartline-io ◄── commands ── heartline-heartbeat
//!                                 │     mio loop around the pure frame reader, writer
//!                                 │     and connection machine
//!                                 │     └─► delivery (dedupe, cursor, bounds, acks) ─► Batches
//!                                 ├─► heartline-poller (only while the socket keeps failing)
//!                                 │     └─► delivery
//!                                 └─► state events (typed errors) ─► Events
//! ```
//!
//! ## Log levels
//!
//! heartline logs through the `log` crate and never installs a logger.
//! Targets are module paths (`heartline::threads::io`, …).
//!
//! - `error`: the client gave up, or a heartline thread failed.
//! - `warn`: a connection attempt failed, a connection was lost, a dead link
//!   was detected, an oversized message was dropped or refused, a poll
//!   failed, a poll item was skipped.
//! - `info`: connecting, open, reconnecting (with delay), polling started
//!   and stopped, closed.
//! - `debug`: heartbeats, close handshakes, reading paused by backpressure.
//! - `trace`: every frame (payload heads only).
//!
//! URLs and headers are always logged with token-like query values and
//! `Authorization`/`Cookie` headers replaced by `***`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod clock;
mod config;
mod delivery;
mod dial;
mod durable;
mod error;
mod frame;
mod identity;
mod machine;
mod message;
#[cfg(test)]
mod parsers_proptest;
mod protocol;
mod proxy;
mod redact;
mod shared;
mod target;
mod threads;
mod transport;

#[cfg(feature = "testkit")]
pub mod testkit;

/// The README's code blocks, compiled as doctests so they never rot.
#[cfg(all(doctest, feature = "testkit"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use client::{Client, Events, Update, Updates};
pub use config::sections::{
    AckMode, ClientIdentity, Delivery, Heartbeat, Keepalive, Limits, OverLimit, Overflow,
    Persistence, Polling, Reconnect, TcpKeepalive, Timeouts, Tls,
};
pub use config::{ClientBuilder, Endpoint, EndpointContext};
pub use delivery::Batches;
pub use error::{
    ConnectionError, Error, Phase, RecvError, RecvTimeoutError, Result, SendError, StateDirProblem,
    TlsProblem, TryRecvError, TrySendError,
};
pub use machine::backoff::Backoff;
pub use message::{Batch, CloseReason, Event, Frame, IntoIter, Iter, Message, Opened, State, Via};
pub use protocol::{
    Cursor, HelloContext, Inspected, JsonRules, Method, Plain, PollItem, PollRequest, Polled,
    Protocol, ReplyRule,
};
pub use shared::Stats;
