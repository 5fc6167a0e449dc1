//! Delivery: everything between "a message arrived" and "the application
//! has its batch", in one place.
//!
//! - [`inbox`]: the inbound queue: the producers' door (io thread and
//!   poller: dedupe by id, and by content for id-less poll items, the
//!   cursor, the overflow policy, the ack to send once a message is
//!   queued), its flow control (bounds in messages and bytes, the paused
//!   reader, the doorbell, room for the poller) and the io thread's end
//!   (the held message).
//! - [`receiver`]: [`receiver::Batches`], the application's side, and the
//!   pure rule for when a batch is ready: hands batches out, gives their
//!   bytes back to the budget (which resumes a paused reader past the
//!   half-way mark), releases acks kept for hand-out to the ledger, and
//!   takes back what a dropped batch did not finish.
//! - [`batch`]: [`batch::Batch`] and its iterators: what finishing a
//!   message records, and how an unfinished rest goes back.
//! - [`budget`]: a byte budget (the inbound and the outbound queue each
//!   have one).

pub(crate) mod batch;
pub(crate) mod budget;
pub(crate) mod inbox;
pub(crate) mod receiver;
