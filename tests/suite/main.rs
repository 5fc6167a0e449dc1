//! The integration tests, one module per behaviour, each against the real
//! loopback servers of the testkit. One binary: the modules share the
//! helpers in `common` and compile and link once.
//!
//! Tests that must be alone in their process stay binaries of their own:
//! `close` and `memory` read their threads in /proc, `threads` counts them,
//! `heap` and `compression` count the heap, `secrets` installs a logger,
//! `proxy_env` sets the environment, and `power_cut` kills its children.

#[path = "../common/mod.rs"]
mod common;

mod backoff;
mod backpressure;
mod bad_input;
mod batching;
mod chaos;
#[cfg(feature = "client-cert")]
mod client_cert;
mod config;
mod dead_link;
mod endpoint;
mod half_open;
mod heartbeat;
mod hello;
mod hints;
mod messmonitor;
mod name_lookup;
mod oversized;
mod polling;
mod proxy;
mod reliable;
mod restart;
mod tail;
mod tls;
mod uplinks;
