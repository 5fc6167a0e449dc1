//! Delivery: everything between "a message arrived" and "the application
//! has its batch", in one place.
//!
//! - [`inbox`]: the producers' door (io thread and poller): dedupe by id
//!   (and by content for id-less poll items), the cursor, the bounds in
//!   messages and bytes, the overflow policy, and the ack to send once a
//!   message is queued.
//! - [`batcher`]: the pure rule for when a batch is ready, shared by every
//!   receive method.
//! - [`receiver`]: [`receiver::Batches`], the application's side: hands batches out,
//!   gives their bytes back to the budget (which resumes a paused reader
//!   past the half-way mark), releases acks kept for hand-out to the
//!   ledger, and takes back what a dropped batch did not finish.
//! - [`flow`]: the byte budgets, and the inbound queue's flow control
//!   (bounds, the paused reader, the doorbell, room for the poller).
//! - [`batch`]: [`batch::Batch`] and its iterators: what finishing a
//!   message records, and how an unfinished rest goes back.

pub(crate) mod batch;
pub(crate) mod batcher;
pub(crate) mod flow;
pub(crate) mod inbox;
pub(crate) mod receiver;
