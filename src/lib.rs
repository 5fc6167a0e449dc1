#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod clock;
mod config;
mod connect;
mod delivery;
mod durable;
mod error;
mod frame;
pub mod guide;
mod machine;
mod message;
#[cfg(test)]
mod parsers_proptest;
mod protocol;
mod redact;
mod shared;
mod threads;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use client::events::{Events, Update, Updates};
pub use client::Client;
pub use config::delivery::{AckMode, Delivery, Overflow, Persistence};
pub use config::sections::{
    Heartbeat, Keepalive, Limits, OverLimit, Polling, Reconnect, TcpKeepalive, Timeouts,
};
pub use config::tls::{ClientIdentity, Tls};
pub use config::{ClientBuilder, Endpoint, EndpointContext};
pub use delivery::batch::{Batch, IntoIter, Iter};
pub use delivery::receiver::Batches;
pub use error::{
    BindProblem, ConnectionError, Error, Phase, RecvError, RecvTimeoutError, Result, SendError,
    StateDirProblem, TlsProblem, TryRecvError, TrySendError,
};
pub use frame::{Cursor, Frame};
pub use machine::backoff::Backoff;
pub use message::{CloseReason, Event, Message, Opened, Phases, State, Uplink, Via};
pub use protocol::json::JsonRules;
pub use protocol::{
    HelloContext, Inspected, Method, Plain, PollItem, PollRequest, Polled, Protocol, ReplyRule,
};
pub use shared::Stats;
