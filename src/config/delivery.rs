//! What the application receives and what survives a restart: the
//! [`Delivery`] section (with [`Overflow`] and [`AckMode`]) and
//! [`Persistence`].

use std::path::PathBuf;
use std::time::Duration;

use super::sections::{at_least_one, within_a_day};
use crate::error::{Error, Result};

/// What happens when the inbound queue is full because the application is
/// slower than the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Stop reading the socket until the application catches up; TCP flow
    /// control then slows the server. Nothing is dropped, and the heartbeat
    /// timeout is suspended while reading is paused (a slow consumer is not a
    /// dead link). The default.
    #[default]
    Backpressure,
    /// Drop the oldest queued message to make room, counting it in
    /// [`crate::Stats::dropped`]. For feeds where only the latest matters.
    /// The small messages one read brought are queued together (see
    /// [`crate::Message`]) and dropped together: at most one read's worth
    /// (64 KiB) more than the room needed.
    DropOldest,
}

/// When the acknowledgement of a pushed message is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AckMode {
    /// When the application has finished with it: the loop over its batch
    /// moved past it, or `done()` / `finish_first()` said so (see
    /// [`crate::Batch`]). A process that dies while holding a batch never
    /// acked it, so the server redelivers it: nothing acked is lost
    /// unprocessed. The default.
    #[default]
    Finished,
    /// As soon as the message is safely in the inbound queue. Cheapest, but
    /// a message acked this way is lost if the process dies before the
    /// application processed it. Refused with [`Overflow::DropOldest`].
    Queued,
    /// When the batch holding it is handed to the application. A message
    /// lost with the process while still queued is redelivered by the
    /// server; one handed out but not yet processed is not.
    Delivered,
}

/// How messages reach the application: batching, acks, and a full queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When acks are sent. Default: [`AckMode::Finished`]. `Queued` with
    /// [`Overflow::DropOldest`] is refused (a message acked on queueing
    /// could then be dropped unprocessed).
    pub ack_mode: AckMode,
    /// What to do when the inbound queue is full. Default:
    /// [`Overflow::Backpressure`] (nothing dropped).
    pub overflow: Overflow,
    /// A batch is handed out this long after its first message arrived, or
    /// sooner when it reaches `batch_max`. Zero hands out each message at
    /// once (with whatever else is already waiting); then a receiver that
    /// has sent since its last batch looks for the reply for up to 50 µs
    /// before it sleeps, which shortens a request/reply round trip.
    /// Default: 100 ms (the [delivery guide](crate::guide::delivery) says why).
    pub batch_window: Duration,
    /// The most messages in one batch. Default: 512.
    pub batch_max: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            ack_mode: AckMode::Finished,
            overflow: Overflow::Backpressure,
            batch_window: Duration::from_millis(100),
            batch_max: 512,
        }
    }
}

impl Delivery {
    pub(crate) fn validate(&self) -> Result<()> {
        within_a_day("delivery.batch_window", self.batch_window)?;
        at_least_one("delivery.batch_max", self.batch_max)?;
        if (self.ack_mode, self.overflow) == (AckMode::Queued, Overflow::DropOldest) {
            // An acked message must never be dropped from the queue later.
            return Err(Error::config(
                "delivery.ack_mode",
                "AckMode::Queued with Overflow::DropOldest would ack messages that are \
                 then dropped unprocessed; use AckMode::Delivered",
            ));
        }
        Ok(())
    }
}

/// State kept on disk across restarts and power cuts. Default: nothing is
/// written.
///
/// With a directory, heartline keeps there the highest cursor and the ids
/// of messages the application finished, the frames accepted by `send` and
/// not yet written to a socket, and reliable frames not yet acknowledged.
/// Finished messages are acked only after the write that records them.
/// See the [power cuts guide](crate::guide::power_cuts).
///
/// What is kept there is application data, so the directory is private to
/// the process's user:
///
/// - A missing directory is created with mode 0700, and the state file is
///   written with mode 0600, whatever the umask.
/// - `build()` refuses a directory that users other than its owner can
///   write to, or that another user owns ([`StateDirProblem::Writable`],
///   [`StateDirProblem::Owner`]), unless [`Persistence::allow_shared`] accepts
///   it.
/// - No symbolic link in it is followed: a state or lock file that is a
///   link is refused ([`StateDirProblem::NotAFile`]), and the temporary
///   file a write goes through is created afresh (a stale one is removed,
///   never opened).
/// - One client at a time: `build()` takes a lock on `heartline.lock`
///   there, held until the end of [`crate::Client::close`] (or until the
///   process ends, however it ends: the kernel releases it), and a second
///   client on the directory, in this process or another, is refused with
///   [`StateDirProblem::InUse`]. A batch finished after `close()` returned
///   is not recorded.
///
/// Loaded at `build()`; a missing, truncated or corrupted state file is a
/// warning and a fresh start.
///
/// [`StateDirProblem::Writable`]: crate::StateDirProblem::Writable
/// [`StateDirProblem::Owner`]: crate::StateDirProblem::Owner
/// [`StateDirProblem::NotAFile`]: crate::StateDirProblem::NotAFile
/// [`StateDirProblem::InUse`]: crate::StateDirProblem::InUse
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// The directory; `None` (the default): nothing is written and the
    /// record lives in memory.
    pub dir: Option<PathBuf>,
    /// The most often the state file is written (only when something
    /// changed; an idle client writes nothing). Shorter: fewer duplicates
    /// after a power cut, acks sent sooner; longer: less flash wear.
    /// Default: 1 s.
    pub sync_every: Duration,
    /// Accept a directory that users other than its owner can write to (a
    /// shared data partition, mode 1777) or that another user owns. Links
    /// are still never followed and the lock still holds, but any user who
    /// can write there can delete or replace the state, so a restart may
    /// lose its record. Default: off; prefer a directory of the service's
    /// own user.
    pub allow_shared: bool,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            dir: None,
            sync_every: Duration::from_secs(1),
            allow_shared: false,
        }
    }
}

impl Persistence {
    /// State kept in `dir`, with the other defaults.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Persistence {
            dir: Some(dir.into()),
            ..Persistence::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        within_a_day("persistence.sync_every", self.sync_every)?;
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(Error::config("persistence.dir", "is empty"));
        }
        Ok(())
    }
}
