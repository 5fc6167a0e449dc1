//! What heartline remembers beyond the inbound queue, and (with
//! `state_dir`) across a restart: the [`Ledger`].
//!
//! - **Finished messages**: the ids of messages whose batch the application
//!   finished (within the dedupe window) and the highest cursor among them.
//!   A redelivered message that was finished is a duplicate, and is acked
//!   again. After a restart the hello frames and polls resume from that
//!   cursor.
//! - **Outbound frames**: reliable frames until the server acknowledges
//!   them (sent again after every reconnect), and with `state_dir` every
//!   frame accepted by `send` until it is written to a socket. The
//!   outbound channel carries such a frame's number only: its payload is
//!   held once, here.
//!
//! With `state_dir`, the `heartline-state` thread writes the ledger to
//! [`file`](mod@file) at most once per `Persistence::sync_every`, only when it
//! changed (a journal record of what changed, or now and then a whole
//! snapshot: [`write`](mod@write)), and releases the acks of finished messages only after the
//! write that recorded them: record durably, then ack. Released acks wait
//! here for the io thread, never dropped: each holds its share of the
//! inbound byte budget until written ([`crate::message::ack_cost`]).
//!
//! The finished ids live in the dedupe window ([`ids`]), shared with the
//! inbox: each id once, as a digest.

pub(crate) mod file;
pub(crate) mod format;
pub(crate) mod ids;
mod write;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};

use crate::error::lock;
use crate::frame::{Cursor, Frame};
use crate::shared::Shared;
use file::{Loaded, StateFile};
use format::{Pending, Snapshot, Stored};
use ids::Ids;

/// One frame in the outbound channel.
pub(crate) enum Outgoing {
    /// The frame itself: nothing else keeps it.
    Frame(Frame),
    /// The ledger's number of a frame it keeps (a reliable frame, or any
    /// frame with `persistence.dir`), and the frame it keeps: shared, so the
    /// payload exists once. The io thread lets go of its share before it
    /// takes the frame from the ledger; a sender whose send failed gets the
    /// frame back from its share.
    Tracked(u64, Arc<Frame>),
}

/// What a reliable frame costs the outbound byte budget beyond its
/// payload while it waits for its ack: the ledger's bookkeeping. It also
/// bounds the number of waiting frames.
pub(crate) const RELIABLE_OVERHEAD: usize = 64;

const LOG: &str = "heartline::durable";

struct Entry {
    /// The only copy of the payload while the frame waits in the outbound
    /// channel (which carries just its number); shared with a snapshot
    /// being written.
    frame: Arc<Frame>,
    id: Option<Arc<str>>,
    /// In the outbound channel, not yet taken by an io thread.
    queued: bool,
}

struct State {
    cursor: Option<Cursor>,
    /// Acks of finished messages, released after the next write.
    held_acks: Vec<Frame>,
    /// Acks released (recorded, or nothing to record), for the io thread
    /// to write before anything else. Never dropped: their bytes are in
    /// the inbound budget until written, so a pile of them pauses reading.
    ready_acks: VecDeque<Frame>,
    next_seq: u64,
    out: BTreeMap<u64, Entry>,
    by_id: HashMap<Arc<str>, Vec<u64>>,
    reliable: usize,
    dirty: bool,
    /// What changed since the last write, for the journal.
    pending: Pending,
    /// Record changes in `pending` (with a state file).
    journaling: bool,
    /// The journal on disk extends the last snapshot and ends with a whole
    /// record: the next write may append to it.
    journal_ok: bool,
    journal_bytes: usize,
    snapshot_bytes: usize,
    generation: u64,
}

/// See the module documentation.
pub(crate) struct Ledger {
    state: Mutex<State>,
    /// The dedupe window, shared with the inbox: which ids were finished.
    /// Locked after `state`, never before.
    ids: Arc<Mutex<Ids>>,
    window: usize,
    /// Held through a whole write and the release of its acks, so a
    /// caller of [`Ledger::write_now`] knows every ack recorded before the
    /// call is released to the io thread when it returns.
    writing: Mutex<()>,
    file: Option<StateFile>,
    sync_every: Duration,
    /// The writer thread is running: finished acks wait for its write.
    writer: AtomicBool,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    shared: Arc<Shared>,
}

/// What was loaded at start, for the inbox and the outbound budget.
pub(crate) struct Restored {
    pub cursor: Option<Cursor>,
    /// Bytes the restored outbound frames hold of the budget.
    pub outbound_bytes: usize,
}

impl Ledger {
    /// A ledger; with `dir`, the directory checked and locked (see
    /// [`StateFile::open`]) and the ledger loaded from its state file (a
    /// file whose content cannot be used is a warning and a fresh start).
    pub(crate) fn open(
        dir: Option<&std::path::Path>,
        allow_shared: bool,
        sync_every: Duration,
        window: usize,
        shared: Arc<Shared>,
    ) -> crate::Result<(Ledger, Restored)> {
        let refused = |d: &std::path::Path, problem| crate::Error::StateDir {
            dir: d.to_owned(),
            problem,
        };
        let file = match dir {
            None => None,
            Some(d) => Some(StateFile::open(d, allow_shared).map_err(|p| refused(d, p))?),
        };
        let loaded = match (&file, dir) {
            (Some(f), Some(d)) => f.load().map_err(|p| refused(d, p))?,
            _ => Loaded::Fresh,
        };
        let (snapshot, journal) = match loaded {
            Loaded::Fresh => (Snapshot::default(), Vec::new()),
            Loaded::Found(s, j) => (s, j),
            Loaded::Unusable(why) => {
                warn!(target: LOG, "state file unusable, starting fresh: {why}");
                (Snapshot::default(), Vec::new())
            }
        };
        let mut ids = Ids::new(window);
        let mut st = State {
            cursor: snapshot.cursor.clone(),
            held_acks: Vec::new(),
            ready_acks: VecDeque::new(),
            next_seq: 0,
            out: BTreeMap::new(),
            by_id: HashMap::new(),
            reliable: 0,
            dirty: false,
            pending: Pending::default(),
            journaling: false,
            // The first write starts a new snapshot and journal: nothing
            // is appended after a torn record or to another's journal.
            journal_ok: false,
            journal_bytes: 0,
            snapshot_bytes: 0,
            generation: snapshot.generation,
        };
        for d in &snapshot.finished {
            ids.finish(*d);
        }
        for Stored { seq, id, frame } in snapshot.outbound {
            st.restore(seq, frame, id);
        }
        // The journal's records, in order, as they happened.
        let records = journal.len();
        for d in journal {
            if let Some(c) = d.cursor {
                crate::frame::raise(&mut st.cursor, c);
            }
            for d in d.finished {
                ids.finish(d);
            }
            for Stored { seq, id, frame } in d.added {
                st.restore(seq, frame, id);
            }
            for seq in d.removed {
                st.remove(seq);
            }
        }
        st.journaling = file.is_some();
        let finished = ids.finished().len();
        if file.is_some() && (st.cursor.is_some() || finished > 0 || !st.out.is_empty()) {
            info!(target: LOG, "state loaded: cursor {:?}, {finished} finished ids, {} outbound frames ({records} journal records)",
                st.cursor, st.out.len());
        }
        let outbound_bytes = st
            .out
            .values()
            .map(|e| cost(&e.frame, e.id.is_some()))
            .sum();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let restored = Restored {
            cursor: st.cursor.clone(),
            outbound_bytes,
        };
        let ledger = Ledger {
            state: Mutex::new(st),
            ids: Arc::new(Mutex::new(ids)),
            window,
            writing: Mutex::new(()),
            file,
            sync_every,
            writer: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            shared,
        };
        Ok((ledger, restored))
    }

    /// `true` with a `state_dir`.
    pub(crate) fn durable(&self) -> bool {
        self.file.is_some()
    }

    fn changed(&self, st: &mut State) {
        if self.durable() {
            st.dirty = true;
            let _ = self.wake_tx.try_send(());
        }
    }

    /// What goes into the outbound channel for a frame: the frame itself,
    /// or, when it must be remembered (it is reliable, `id`, or the state
    /// is durable), its number, with the frame kept here. Either way the
    /// payload exists once, so the outbound byte budget is what it holds.
    pub(crate) fn track(&self, frame: Frame, id: Option<Arc<str>>) -> Outgoing {
        if id.is_none() && !self.durable() {
            return Outgoing::Frame(frame);
        }
        let mut st = lock(&self.state);
        let frame = Arc::new(frame);
        let seq = st.insert(frame.clone(), id, true);
        self.changed(&mut st);
        Outgoing::Tracked(seq, frame)
    }

    /// A tracked frame never entered the channel (the send failed): the
    /// ledger forgets it, and the sender has it back from its share.
    pub(crate) fn untrack(&self, seq: u64, frame: Arc<Frame>) -> Frame {
        let mut st = lock(&self.state);
        if st.remove(seq).is_some() {
            self.changed(&mut st);
        }
        drop(st);
        Arc::unwrap_or_clone(frame)
    }

    /// The io thread took the tracked frame `seq` from the channel to
    /// write it: the frame, and `true` when its bytes stay in the budget
    /// until the server acks it (a reliable frame, which stays here for a
    /// resend; the caller writes a copy). A frame that is only durable
    /// leaves the ledger now, as it goes to the socket.
    pub(crate) fn take(&self, seq: u64) -> Option<(Frame, bool)> {
        let mut st = lock(&self.state);
        let e = st.out.get_mut(&seq)?;
        if e.id.is_some() {
            e.queued = false;
            return Some((Frame::clone(&e.frame), true));
        }
        let e = st.remove(seq)?;
        self.changed(&mut st);
        Some((Arc::unwrap_or_clone(e.frame), false))
    }

    /// A frame from [`Ledger::resend`] (not in the channel) was handed to
    /// a socket. `true` when its bytes stay in the budget until the server
    /// acks it (a reliable frame).
    pub(crate) fn written(&self, seq: u64) -> bool {
        let mut st = lock(&self.state);
        let reliable = match st.out.get_mut(&seq) {
            Some(e) if e.id.is_some() => {
                e.queued = false;
                true
            }
            Some(_) => {
                st.remove(seq);
                self.changed(&mut st);
                false
            }
            None => false,
        };
        reliable
    }

    /// The server acknowledged the reliable frame `id`: forgotten. Returns
    /// the budget bytes to give back.
    pub(crate) fn acked(&self, id: &str) -> usize {
        let mut st = lock(&self.state);
        let Some((key, seqs)) = st.by_id.remove_entry(id) else {
            debug!(target: LOG, "ack for an unknown or already acked frame");
            return 0;
        };
        // Only what was written can be acked: a frame with the same id
        // still in the outbound channel waits for an ack of its own.
        let (sent, queued): (Vec<u64>, Vec<u64>) = seqs
            .into_iter()
            .partition(|seq| st.out.get(seq).is_some_and(|e| !e.queued));
        if !queued.is_empty() {
            st.by_id.insert(key, queued);
        }
        let mut bytes = 0;
        for seq in sent {
            if let Some(e) = st.out.remove(&seq) {
                bytes += cost(&e.frame, true);
                st.reliable -= 1;
            }
        }
        self.changed(&mut st);
        bytes
    }

    /// Frames to send on a new connection, after the hello frames and
    /// before the outbound channel: everything not in the channel (frames
    /// restored at start, reliable frames written on an earlier
    /// connection), in order.
    pub(crate) fn resend(&self) -> Vec<(u64, Frame)> {
        lock(&self.state)
            .out
            .iter()
            .filter(|(_, e)| !e.queued)
            .map(|(s, e)| (*s, Frame::clone(&e.frame)))
            .collect()
    }

    /// Reliable frames waiting for their ack.
    pub(crate) fn reliable_pending(&self) -> usize {
        lock(&self.state).reliable
    }

    /// `true` when the application finished a message with this id.
    #[cfg(test)]
    pub(crate) fn is_finished(&self, id: &str) -> bool {
        lock(&self.ids).is_finished(ids::of_id(id))
    }

    /// The dedupe window, for the inbox to share.
    pub(crate) fn ids(&self) -> Arc<Mutex<Ids>> {
        self.ids.clone()
    }

    /// The application finished these messages. Their acks go out after
    /// the write that records them (durable), or at once (in memory only).
    pub(crate) fn finished(&self, ids: Vec<Arc<str>>, cursor: Option<Cursor>, acks: Vec<Frame>) {
        let mut st = lock(&self.state);
        {
            let mut window = lock(&self.ids);
            for id in ids {
                let d = ids::of_id(&id);
                if window.finish(d) && st.journaling && !st.pending.overflow {
                    st.pending.finished.push(d);
                    if st.pending.finished.len() > self.window {
                        // More than the window since the last write: a
                        // snapshot is smaller than the record.
                        st.pending = Pending {
                            overflow: true,
                            ..Pending::default()
                        };
                    }
                }
            }
        }
        if let Some(c) = cursor {
            if crate::frame::raise(&mut st.cursor, c) && st.journaling {
                st.pending.cursor = st.cursor.clone();
            }
        }
        if !self.durable() {
            drop(st);
            self.release(acks);
            return;
        }
        st.held_acks.extend(acks);
        self.changed(&mut st);
        if !self.writer.load(SeqCst) {
            // No writer (the client is closed): write now, on this thread.
            drop(st);
            self.write_now();
        }
    }

    /// Acks that may go now (on hand-out, nothing to record first; or
    /// recorded by a write), for the io thread.
    pub(crate) fn release(&self, acks: Vec<Frame>) {
        if acks.is_empty() {
            return;
        }
        lock(&self.state).ready_acks.extend(acks);
        self.shared.wake_io();
    }

    /// The acks released so far, oldest first, for the io thread to write.
    /// Their bytes stay in the inbound budget until written ([`crate::message::ack_cost`]
    /// each, given back by the io thread).
    pub(crate) fn take_acks(&self) -> VecDeque<Frame> {
        std::mem::take(&mut lock(&self.state).ready_acks)
    }

    /// Acks from [`Ledger::take_acks`] the io thread could not write (its
    /// connection ended first): they go first on the next connection.
    pub(crate) fn unsent_acks(&self, mut rest: VecDeque<Frame>) {
        if !rest.is_empty() {
            let mut st = lock(&self.state);
            rest.append(&mut st.ready_acks);
            st.ready_acks = rest;
        }
    }

    /// Gives the state directory up (its lock) after the last write, at
    /// the end of `close()`: another client may take it from then on, and
    /// this one writes nothing more.
    pub(crate) fn unlock(&self) {
        if let Some(file) = &self.file {
            let _writing = lock(&self.writing);
            file.release();
        }
    }

    /// The writer thread ([`crate::threads::state`]) starts (`true`) or
    /// stops: while it runs, finished acks wait for its write.
    pub(crate) fn writer_running(&self, on: bool) {
        self.writer.store(on, SeqCst);
    }

    /// Rung on every change the writer should record.
    pub(crate) fn changes(&self) -> &Receiver<()> {
        &self.wake_rx
    }

    /// The shortest time between two writes.
    pub(crate) fn sync_every(&self) -> Duration {
        self.sync_every
    }
}

/// Budget bytes a tracked frame holds.
pub(crate) fn cost(frame: &Frame, reliable: bool) -> usize {
    frame.len() + if reliable { RELIABLE_OVERHEAD } else { 0 }
}

impl State {
    fn insert(&mut self, frame: Arc<Frame>, id: Option<Arc<str>>, queued: bool) -> u64 {
        let seq = self.next_seq;
        if self.journaling && !self.pending.overflow {
            let stored = Stored {
                seq,
                id: id.clone(),
                frame: frame.clone(),
            };
            self.pending.added.insert(seq, stored);
        }
        self.put(seq, frame, id, queued);
        seq
    }

    /// A frame loaded from the state file, under its number.
    fn restore(&mut self, seq: u64, frame: Arc<Frame>, id: Option<Arc<str>>) {
        self.put(seq, frame, id, false);
    }

    fn put(&mut self, seq: u64, frame: Arc<Frame>, id: Option<Arc<str>>, queued: bool) {
        self.next_seq = self.next_seq.max(seq + 1);
        if let Some(id) = &id {
            self.by_id.entry(id.clone()).or_default().push(seq);
            self.reliable += 1;
        }
        if let Some(old) = self.out.insert(seq, Entry { frame, id, queued }) {
            // A number used twice (a damaged journal): the newer wins.
            if old.id.is_some() {
                self.reliable -= 1;
            }
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.out.remove(&seq)?;
        // Added and gone before any write: the journal never hears of it
        // (and the ledger's is again the only reference to its payload).
        if self.journaling && self.pending.added.remove(&seq).is_none() && !self.pending.overflow {
            self.pending.removed.push(seq);
        }
        if let Some(id) = &e.id {
            self.reliable -= 1;
            if let Some(v) = self.by_id.get_mut(id) {
                v.retain(|s| *s != seq);
                if v.is_empty() {
                    self.by_id.remove(id);
                }
            }
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;

    fn ledger(dir: Option<&std::path::Path>) -> (Ledger, Restored) {
        let (shared, _events) = Shared::new(4, (usize::MAX, usize::MAX));
        let (l, r) = Ledger::open(dir, false, Duration::from_millis(10), 3, shared).unwrap();
        (l, r)
    }

    /// The ledger's number for a frame it keeps.
    fn tracked(o: Outgoing) -> u64 {
        match o {
            Outgoing::Tracked(seq, _) => seq,
            Outgoing::Frame(f) => panic!("not kept by the ledger: {f:?}"),
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("heartline-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn in_memory_acks_go_at_once_and_finished_ids_are_remembered_within_the_window() {
        let (l, _) = ledger(None);
        l.finished(
            vec!["a".into(), "b".into()],
            Some(Cursor::Int(2)),
            vec![Frame::from("ack a"), Frame::from("ack b")],
        );
        assert_eq!(l.take_acks(), [Frame::from("ack a"), Frame::from("ack b")]);
        assert!(l.is_finished("a"));
        l.finished(vec!["c".into(), "d".into()], None, vec![]);
        assert!(!l.is_finished("a"), "window of 3");
        assert!(l.is_finished("d"));
        // Plain frames are not tracked without a state directory.
        assert!(
            matches!(l.track(Frame::from("x"), None), Outgoing::Frame(f) if f == Frame::from("x"))
        );
    }

    #[test]
    fn a_reliable_frame_is_kept_until_acked_and_resent_after_reconnect() {
        let (l, _) = ledger(None);
        let s1 = tracked(l.track(Frame::from("one"), Some("r1".into())));
        let s2 = tracked(l.track(Frame::from("two"), Some("r2".into())));
        assert!(l.resend().is_empty(), "still in the channel");
        // Taken by the io thread: a copy to write, and the bytes stay
        // until the ack.
        assert_eq!(l.take(s1), Some((Frame::from("one"), true)));
        assert_eq!(l.take(s2), Some((Frame::from("two"), true)));
        let again: Vec<_> = l.resend().into_iter().map(|(_, f)| f).collect();
        assert_eq!(again, [Frame::from("one"), Frame::from("two")]);
        assert_eq!(l.reliable_pending(), 2);
        assert_eq!(l.acked("r1"), 3 + RELIABLE_OVERHEAD);
        assert_eq!(l.acked("r1"), 0, "a second ack is nothing");
        assert_eq!(l.reliable_pending(), 1);
        let Outgoing::Tracked(s3, share) = l.track(Frame::from("three"), Some("r3".into())) else {
            panic!("a reliable frame is kept");
        };
        assert_eq!(l.untrack(s3, share), Frame::from("three"), "handed back");
        assert_eq!(l.reliable_pending(), 1);
    }

    #[test]
    fn an_ack_covers_only_frames_written_not_one_with_the_same_id_still_queued() {
        let (l, _) = ledger(None);
        let first = tracked(l.track(Frame::from("v1"), Some("r".into())));
        assert!(l.take(first).is_some());
        let second = tracked(l.track(Frame::from("v2"), Some("r".into())));
        assert_eq!(l.acked("r"), 2 + RELIABLE_OVERHEAD, "the written one");
        assert_eq!(l.reliable_pending(), 1);
        assert_eq!(l.take(second), Some((Frame::from("v2"), true)));
        assert_eq!(l.acked("r"), 2 + RELIABLE_OVERHEAD);
        assert_eq!(l.reliable_pending(), 0);
    }

    #[test]
    fn a_durable_frame_leaves_the_ledger_when_taken_and_is_kept_once() {
        let dir = scratch("once");
        let (l, _) = ledger(Some(&dir));
        let seq = tracked(l.track(Frame::from("plain"), None));
        // The channel carries only the number: the ledger's copy is the one.
        assert_eq!(l.take(seq), Some((Frame::from("plain"), false)));
        assert_eq!(l.take(seq), None, "gone once taken");
        assert!(l.resend().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durable_acks_wait_for_the_write_and_everything_survives_a_restart() {
        let dir = scratch("restart");
        {
            let (l, _) = ledger(Some(&dir));
            assert!(lock(&l.ids).finished().is_empty());
            l.finished(
                vec!["m-1".into()],
                Some(Cursor::Int(1)),
                vec![Frame::from("ack 1")],
            );
            let plain = tracked(l.track(Frame::from("unsent"), None));
            let rel = tracked(l.track(Frame::from("rel"), Some("r".into())));
            assert_eq!(l.take(rel), Some((Frame::from("rel"), true)));
            assert_eq!(plain, 0);
            // No writer thread: the write happened on this thread, then the ack.
            assert_eq!(l.take_acks(), [Frame::from("ack 1")]);
            assert!(dir.join("heartline.state").exists());
            l.write_now();
        }
        let (l, r) = ledger(Some(&dir));
        assert_eq!(r.cursor, Some(Cursor::Int(1)));
        assert_eq!(lock(&l.ids).finished(), [ids::of_id("m-1")]);
        assert_eq!(r.outbound_bytes, 6 + 3 + RELIABLE_OVERHEAD);
        assert!(l.is_finished("m-1"));
        let again: Vec<_> = l.resend().into_iter().map(|(_, f)| f).collect();
        assert_eq!(again, [Frame::from("unsent"), Frame::from("rel")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_ack_is_dropped_however_many_pile_up_between_writes() {
        let dir = scratch("burst");
        let (l, _) = ledger(Some(&dir));
        // As if the writer thread ran: the acks wait for its write.
        l.writer.store(true, SeqCst);
        let ids = (0..10_000).map(|i| format!("m-{i}").into()).collect();
        let acks: Vec<_> = (0..10_000)
            .map(|i| Frame::from(format!("ack {i}")))
            .collect();
        l.finished(ids, None, acks);
        assert!(l.take_acks().is_empty(), "held until written");
        l.write_now();
        let out = l.take_acks();
        assert_eq!(out.len(), 10_000, "every ack released after the write");
        assert_eq!(out[9_999], Frame::from("ack 9999"));
        // What an io thread could not write goes first next time.
        l.release(vec![Frame::from("newer")]);
        l.unsent_acks(out.into_iter().skip(9_998).collect());
        assert_eq!(
            l.take_acks(),
            [
                Frame::from("ack 9998"),
                Frame::from("ack 9999"),
                Frame::from("newer")
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn with_a_full_window_a_write_appends_a_small_record_and_a_restart_replays_it() {
        let dir = scratch("journal");
        let open = || {
            let (shared, _events) = Shared::new(4, (usize::MAX, usize::MAX));
            Ledger::open(Some(&dir), false, Duration::ZERO, 10_000, shared).unwrap()
        };
        let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        {
            let (l, _) = open();
            let ids = (0..10_000)
                .map(|i| format!("message-{i:05}").into())
                .collect();
            l.finished(ids, Some(Cursor::Int(10_000)), vec![]);
            let snapshot = size("heartline.state");
            assert!(snapshot > 80_000, "the full window: {snapshot} bytes");
            let journal = size("heartline.journal");
            for i in 0..20 {
                let seq = tracked(l.track(Frame::from(format!("unsent {i}")), None));
                l.finished(vec![format!("later-{i}").into()], None, vec![]);
                if i % 2 == 0 {
                    l.take(seq); // written to a socket: gone again
                }
            }
            assert_eq!(size("heartline.state"), snapshot, "not rewritten");
            let per_write = (size("heartline.journal") - journal) / 20;
            assert!(per_write < 128, "{per_write} bytes per write");
        }
        let (l, r) = open();
        assert_eq!(lock(&l.ids).finished().len(), 10_000);
        assert!(!l.is_finished("message-00019"), "pushed out of the window");
        assert!(l.is_finished("message-00020") && l.is_finished("later-19"));
        assert_eq!(r.cursor, Some(Cursor::Int(10_000)));
        let unsent: Vec<_> = l.resend().into_iter().map(|(_, f)| f).collect();
        let odd: Vec<_> = (1..20)
            .step_by(2)
            .map(|i| Frame::from(format!("unsent {i}")))
            .collect();
        assert_eq!(unsent, odd);
        // New frames get numbers after the restored ones.
        let seq = tracked(l.track(Frame::from("after"), None));
        assert!(l.resend().iter().all(|(s, _)| *s < seq));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_writer_writes_at_most_once_per_interval_and_not_when_idle() {
        let dir = scratch("writer");
        let (l, _) = ledger(Some(&dir));
        let l = Arc::new(l);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let w = {
            let l = l.clone();
            std::thread::spawn(move || crate::threads::state::run(&l, &stop_rx))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !l.writer.load(SeqCst) {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        for i in 0..50 {
            l.finished(
                vec![format!("m-{i}").into()],
                None,
                vec![Frame::from("ack")],
            );
        }
        // Every ack arrives, after a write.
        let mut got = 0;
        while got < 50 {
            assert!(Instant::now() < deadline, "{got} of 50 acks released");
            got += l.take_acks().len();
            std::thread::sleep(Duration::from_millis(1));
        }
        let writes = l.shared.counters.state_writes.load(Relaxed);
        assert!((1..=50).contains(&writes), "{writes} writes");
        drop(stop_tx);
        w.join().unwrap();
        // Nothing changed since: closing wrote nothing more than one final
        // write of the last changes at most.
        let after = l.shared.counters.state_writes.load(Relaxed);
        assert!(after <= writes + 1);
        l.write_now();
        assert_eq!(
            l.shared.counters.state_writes.load(Relaxed),
            after,
            "idle: no write"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
