//! Pure state machines: they take `now` and events and return decisions.
//! No sockets, threads or clocks here, so every timing rule is unit-tested
//! without sleeping. The threads in [`crate::threads`] carry events in and
//! decisions out.

pub mod backoff;
pub(crate) mod connection;
pub(crate) mod deflate;
pub(crate) mod frames;
pub(crate) mod heartbeat;
pub(crate) mod hints;
pub(crate) mod reconnect;
pub(crate) mod writer;
