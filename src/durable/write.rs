//! One state write: whether what changed since the last
//! ([`format::Pending`]) goes as a journal record or a whole snapshot, and
//! the write itself ([`Ledger::write_now`]), after which the acks it
//! recorded are released.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use log::{debug, warn};

use super::format::{self, Delta, Snapshot, Stored};
use super::{Ledger, LOG};
use crate::error::lock;

/// The journal is folded into a new snapshot once it would grow past the
/// snapshot's size, or this, whichever is larger: a state write costs about
/// one record, and a snapshot's cost is spread over the records before it.
const MIN_JOURNAL: usize = 64 << 10;

/// What a state write does.
enum Job {
    Compact(Snapshot),
    Append(Delta),
}

impl Ledger {
    /// Writes the state now (when it changed), then releases the acks the
    /// write recorded.
    pub(crate) fn write_now(&self) {
        let Some(file) = &self.file else { return };
        let _writing = lock(&self.writing);
        if !file.held() {
            // After close(): the directory may belong to another client now.
            debug!(target: LOG, "state directory released at close(): not written");
            return;
        }
        let (job, acks) = {
            let mut st = lock(&self.state);
            if !st.dirty {
                return;
            }
            st.dirty = false;
            let pending = std::mem::take(&mut st.pending);
            let grown = st.journal_bytes + pending.size();
            let job =
                if !st.journal_ok || pending.overflow || grown > st.snapshot_bytes.max(MIN_JOURNAL)
                {
                    st.generation += 1;
                    Job::Compact(Snapshot {
                        generation: st.generation,
                        cursor: st.cursor.clone(),
                        finished: lock(&self.ids).finished(),
                        outbound: st
                            .out
                            .iter()
                            .map(|(seq, e)| Stored {
                                seq: *seq,
                                id: e.id.clone(),
                                frame: e.frame.clone(),
                            })
                            .collect(),
                    })
                } else {
                    Job::Append(pending.into_delta())
                };
            (job, std::mem::take(&mut st.held_acks))
        };
        let started = Instant::now();
        let written = match &job {
            Job::Compact(snapshot) => {
                let bytes = format::encode(snapshot);
                file.compact(&bytes, snapshot.generation)
                    .map(|()| (bytes.len(), true))
            }
            Job::Append(delta) => {
                let record = format::encode_delta(delta);
                file.append(&record).map(|()| (record.len(), false))
            }
        };
        drop(job);
        match written {
            Ok((n, compacted)) => {
                let mut st = lock(&self.state);
                if compacted {
                    st.snapshot_bytes = n;
                    st.journal_bytes = format::JOURNAL_HEADER;
                    st.journal_ok = true;
                } else {
                    st.journal_bytes += n;
                }
                drop(st);
                self.shared.counters.state_writes.fetch_add(1, Relaxed);
                debug!(target: LOG, "state written in {:?} ({n} bytes, {})",
                    started.elapsed(), if compacted { "snapshot" } else { "journal record" });
            }
            Err(e) => {
                // What this write held is not on disk: the next one writes
                // a whole snapshot. A device must keep working: the acks
                // still go (without the guarantee across a power cut).
                lock(&self.state).journal_ok = false;
                self.shared
                    .counters
                    .state_write_errors
                    .fetch_add(1, Relaxed);
                warn!(target: LOG, "cannot write {}: {e}; state is not kept across a restart until this is fixed (check the directory exists, is writable and the disk is not full)",
                    file.path().display());
            }
        }
        self.release(acks);
    }
}
