//! One module per OS thread. The module path is the log target, so
//! `RUST_LOG=heartline::threads::io=trace` follows just the socket.
//!
//! - `heartline-supervisor` (one per client): connects, runs the reconnect
//!   policy, spawns and joins the per-connection threads.
//! - `heartline-io` (one per open connection): sole owner of the socket;
//!   waits in epoll on the socket and a waker.
//! - `heartline-heartbeat` (one per open connection): sleeps until the next
//!   heartbeat or timeout deadline; tells the io thread to beat or to drop a
//!   dead link.
//! - `heartline-poller` (only while degraded): polls the HTTP fallback.

pub(crate) mod heartbeat;
pub(crate) mod io;
pub(crate) mod poller;
pub(crate) mod supervisor;

/// Spawns a named thread.
pub(crate) fn spawn<F, T>(name: &'static str, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        // Small stacks: these threads hold little; devices have little RAM.
        .stack_size(256 * 1024)
        .spawn(f)
}

pub(crate) use crate::error::guarded;
