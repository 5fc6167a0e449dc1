//! The guides: how heartline behaves, and why, in depth.
//!
//! The crate page is the short version; each page here is one subject. The
//! code blocks are compiled (and those that can run without a network run)
//! as doctests, so they do not drift from the API.
//!
//! | page | what it answers |
//! |---|---|
//! | [`architecture`] | the threads, the pure machines, the path of one message, where code lives |
//! | [`behaviour`] | heartbeat, reconnect, batches, close, the polling fallback, TLS, client certificates, compression |
//! | [`networks`] | proxies, server hints (`Retry-After`, 401, 1012/1013), dead links the heartbeat cannot see |
//! | [`protocol`] | the [`Protocol`](crate::Protocol) trait and [`JsonRules`](crate::JsonRules): ids, cursors, kinds, acks, polls |
//! | [`delivery`] | no message lost, none doubled: what heartline does and what the server must do |
//! | [`power_cuts`] | `persistence.dir`: the state file, its guarantee, flash wear, reliable frames |
//! | [`options`] | every option, its default, and what `build()` checks |
//! | [`limits`] | every bound, what happens at each, memory in bytes |
//! | [`observing`] | logs, errors as values, stats |
//! | [`performance`] | the benchmark and today's figures |
//! | [`conformance`] | the Autobahn test suite |
//! | [`cross_compiling`] | ARM builds with Debian's cross gcc or `cross` |
//! | [`footprint`] | binary size on an ARM device, memory, the `device` profile |
//! | [`testing`] | testing an application against the built-in server |
//!
//! These pages hold no code; they are documentation only.

#[doc = include_str!("architecture.md")]
pub mod architecture {}
#[doc = include_str!("behaviour.md")]
pub mod behaviour {}
#[doc = include_str!("networks.md")]
pub mod networks {}
#[doc = include_str!("protocol.md")]
pub mod protocol {}
#[doc = include_str!("delivery.md")]
pub mod delivery {}
#[doc = include_str!("power_cuts.md")]
pub mod power_cuts {}
#[doc = include_str!("options.md")]
pub mod options {}
#[doc = include_str!("limits.md")]
pub mod limits {}
#[doc = include_str!("observing.md")]
pub mod observing {}
#[doc = include_str!("performance.md")]
pub mod performance {}
#[doc = include_str!("conformance.md")]
pub mod conformance {}
#[doc = include_str!("cross_compiling.md")]
pub mod cross_compiling {}
#[doc = include_str!("footprint.md")]
pub mod footprint {}
#[doc = include_str!("testing.md")]
pub mod testing {}
