//! Getting a connection: from a URL to an open WebSocket, every step under
//! a deadline that `close()` can end.
//!
//! - [`target`]: the `ws://` or `wss://` URL, checked.
//! - [`proxy`]: which HTTP `CONNECT` proxy (the option, or the environment
//!   as curl reads it) and the tunnel through it.
//! - [`netlink`]: the kernel's routing netlink read by hand: links,
//!   addresses, default routes, and the snapshot notifications update.
//! - [`bind`]: which uplink: the interface (the first of a list that is
//!   up with an address) and the local address a socket is bound to, and
//!   when to move back to a preferred one.
//! - [`watch`]: the netlink subscription the io thread and the supervisor
//!   wait on, so a network change is acted on at once.
//! - [`dial`]: the name lookup on a thread of its own, within
//!   `timeouts.connect`, and the addresses raced as RFC 8305 says.
//! - [`transport`]: the steps in order: TCP and its options, the proxy's
//!   tunnel, TLS, the upgrade.
//! - [`stream`]: the handshake's stream under one deadline (`Timed`), and
//!   the bytes counted per uplink.
//! - [`tls`]: the connector, and what a failed handshake means.
//! - [`upgrade`]: the HTTP upgrade and the checks of its 101 answer.
//! - [`sha1`]: the SHA-1 of its `Sec-WebSocket-Accept` check.
//! - [`identity`]: client certificates (feature `client-cert`): read,
//!   checked, named.

pub(crate) mod bind;
pub(crate) mod dial;
pub(crate) mod identity;
pub(crate) mod netlink;
pub(crate) mod proxy;
pub(crate) mod sha1;
pub(crate) mod stream;
pub(crate) mod target;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod upgrade;
pub(crate) mod watch;
