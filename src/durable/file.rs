//! The state file on disk, written crash-safe, in a directory only this
//! client's user can write to.
//!
//! Two files ([`super::format`] has their layout). `heartline.state` is a
//! snapshot of the whole state, replaced whole: the new content goes to
//! `heartline.state.tmp`, is fsynced, renamed over the old file, and the
//! directory is fsynced, so after a power cut the file is the old one or
//! the new one, never a mix. `heartline.journal` names the snapshot it
//! extends (its generation) and holds one record per state write after it,
//! appended and fdatasynced: a write costs what changed, not the whole
//! state. [`StateFile::compact`] writes a new snapshot and then a fresh
//! journal the same crash-safe way; a journal of another snapshot, and a
//! torn or damaged record with everything after it, are ignored on load. A
//! torn or corrupted snapshot is caught by its checksum; loading it is a
//! warning and a fresh start, never a refusal to start.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};

use super::format::{decode, decode_journal, journal_header, Delta, Snapshot};
use crate::error::StateDirProblem;

const JOURNAL: &str = "heartline.journal";
const JOURNAL_TMP: &str = "heartline.journal.tmp";
const FILE: &str = "heartline.state";
const TMP: &str = "heartline.state.tmp";
const LOCK: &str = "heartline.lock";

/// The state file in its directory, which this client holds: the
/// directory was checked and locked when this was made, and every file in
/// it is made, read and renamed relative to the directory's descriptor,
/// never through a link.
#[derive(Debug)]
pub(crate) struct StateFile {
    dir: PathBuf,
    /// The directory, opened once: a path swapped meanwhile is not followed.
    dir_fd: OwnedFd,
    /// The lock on `heartline.lock`, released by [`StateFile::release`] or
    /// by the kernel when the process dies (so a kill -9 leaves no stale
    /// lock). Once released, nothing is written.
    lock: Mutex<Option<OwnedFd>>,
}

/// What loading found.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// No file yet: a first start.
    Fresh,
    /// The snapshot, and the journal's records that extend it.
    Found(Snapshot, Vec<Delta>),
    /// A file whose content could not be used; the reason, for the warning.
    Unusable(String),
}

/// How a file in the directory is opened: never through a symbolic link,
/// never blocking on a FIFO planted there, closed on exec.
fn private_flags() -> OFlags {
    OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK
}

fn private_mode() -> Mode {
    Mode::from_raw_mode(0o600)
}

/// A regular file, checked on the descriptor itself (no race with the path).
fn regular(fd: OwnedFd, name: &'static str) -> Result<File, StateDirProblem> {
    let file = File::from(fd);
    match file.metadata() {
        Ok(m) if m.file_type().is_file() => Ok(file),
        Ok(_) => Err(StateDirProblem::NotAFile { name }),
        Err(source) => Err(StateDirProblem::Io {
            action: "inspect a file in the directory",
            source,
        }),
    }
}

/// `ELOOP` from `O_NOFOLLOW`: the name is a symbolic link.
fn not_a_file(e: rustix::io::Errno, name: &'static str, action: &'static str) -> StateDirProblem {
    if e == rustix::io::Errno::LOOP {
        StateDirProblem::NotAFile { name }
    } else {
        StateDirProblem::Io {
            action,
            source: e.into(),
        }
    }
}

impl StateFile {
    /// Opens the directory (created 0700 if missing), checks who may write
    /// to it (unless `allow_shared`), and takes its lock.
    pub(crate) fn open(dir: &Path, allow_shared: bool) -> Result<StateFile, StateDirProblem> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StateDirProblem::Io {
                    action: "create the directory",
                    source,
                })?;
            // Whatever the umask took away: the owner must be able to use it.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                StateDirProblem::Io {
                    action: "set the new directory's mode to 0700",
                    source,
                }
            })?;
        }
        let dir_fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StateDirProblem::Io {
            action: "open the directory",
            source: e.into(),
        })?;
        let meta = File::from(dir_fd.try_clone().map_err(|source| StateDirProblem::Io {
            action: "open the directory",
            source,
        })?)
        .metadata()
        .map_err(|source| StateDirProblem::Io {
            action: "inspect the directory",
            source,
        })?;
        if !allow_shared {
            let user = rustix::process::geteuid().as_raw();
            if meta.uid() != user {
                return Err(StateDirProblem::Owner {
                    owner: meta.uid(),
                    user,
                });
            }
            if meta.mode() & 0o022 != 0 {
                return Err(StateDirProblem::Writable {
                    mode: meta.mode() & 0o7777,
                });
            }
        }
        // Read-only is enough for flock, and works on a read-only mount
        // where the file already exists.
        let lock = rustix::fs::openat(
            &dir_fd,
            LOCK,
            OFlags::RDONLY | OFlags::CREATE | private_flags(),
            private_mode(),
        )
        .map_err(|e| not_a_file(e, LOCK, "create the lock file heartline.lock"))?;
        let lock = OwnedFd::from(regular(lock, LOCK)?);
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(StateDirProblem::InUse),
            Err(e) => {
                return Err(StateDirProblem::Io {
                    action: "lock heartline.lock",
                    source: e.into(),
                })
            }
        }
        Ok(StateFile {
            dir: dir.to_owned(),
            dir_fd,
            lock: Mutex::new(Some(lock)),
        })
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Reads the file. A file whose content cannot be used is
    /// [`Loaded::Unusable`] (a warning and a fresh start); one that is a
    /// link or not a regular file is refused.
    pub(crate) fn load(&self) -> Result<Loaded, StateDirProblem> {
        let fd = match rustix::fs::openat(
            &self.dir_fd,
            FILE,
            OFlags::RDONLY | private_flags(),
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::NOENT => return Ok(Loaded::Fresh),
            Err(e) => return Err(not_a_file(e, FILE, "open heartline.state")),
        };
        let mut file = regular(fd, FILE)?;
        let mut data = Vec::new();
        if let Err(e) = file.read_to_end(&mut data) {
            return Ok(Loaded::Unusable(format!(
                "cannot read {}: {e}",
                self.path().display()
            )));
        }
        let snapshot = match decode(&data) {
            Ok(s) => s,
            Err(c) => return Ok(Loaded::Unusable(format!("{}: {c}", self.path().display()))),
        };
        drop(data);
        let journal = match rustix::fs::openat(
            &self.dir_fd,
            JOURNAL,
            OFlags::RDONLY | private_flags(),
            Mode::empty(),
        ) {
            Ok(fd) => {
                let mut data = Vec::new();
                // A journal that cannot be read is one that adds nothing:
                // the snapshot alone is an older, consistent state.
                if regular(fd, JOURNAL)?.read_to_end(&mut data).is_ok() {
                    decode_journal(&data, snapshot.generation)
                } else {
                    Vec::new()
                }
            }
            Err(e) if e == rustix::io::Errno::NOENT => Vec::new(),
            Err(e) => return Err(not_a_file(e, JOURNAL, "open heartline.journal")),
        };
        Ok(Loaded::Found(snapshot, journal))
    }

    /// `false` once [`StateFile::release`] gave the directory up.
    pub(crate) fn held(&self) -> bool {
        self.lock.lock().map(|l| l.is_some()).unwrap_or(false)
    }

    /// Gives the directory up for another client: nothing is written after.
    pub(crate) fn release(&self) {
        if let Ok(mut l) = self.lock.lock() {
            l.take();
        }
    }

    /// Replaces the snapshot with `bytes` and starts an empty journal for
    /// it, crash-safe at every step: the snapshot is replaced whole (a new
    /// file, fsync, rename, fsync of the directory), then the journal the
    /// same way. A cut between the two leaves the new snapshot with the
    /// old journal, which names the old snapshot and is ignored.
    pub(crate) fn compact(&self, bytes: &[u8], generation: u64) -> io::Result<()> {
        self.compact_steps(bytes, generation, usize::MAX)
    }

    /// [`StateFile::compact`], stopped after `steps` of its six steps (a
    /// power cut, for the tests).
    fn compact_steps(&self, bytes: &[u8], generation: u64, steps: usize) -> io::Result<()> {
        if !self.held() {
            return Err(io::Error::other("the state directory was released"));
        }
        let steps = self.replace(TMP, FILE, bytes, steps)?;
        self.replace(JOURNAL_TMP, JOURNAL, &journal_header(generation), steps)?;
        Ok(())
    }

    /// Replaces `name` with `bytes` through `tmp`, made exclusively (a
    /// stale one is removed first, never opened) with mode 0600, in three
    /// steps (write and fsync, rename, fsync the directory), at most
    /// `steps` of them; the steps left.
    fn replace(&self, tmp: &str, name: &str, bytes: &[u8], steps: usize) -> io::Result<usize> {
        if steps == 0 {
            return Ok(0);
        }
        // unlinkat removes a link itself, never what it points to.
        match rustix::fs::unlinkat(&self.dir_fd, tmp, AtFlags::empty()) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::NOENT => {}
            Err(e) => return Err(e.into()),
        }
        // O_EXCL: if anything was planted under the name since, this fails.
        let fd = rustix::fs::openat(
            &self.dir_fd,
            tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | private_flags(),
            private_mode(),
        )?;
        let mut f = File::from(fd);
        // The umask may have taken bits away; 0600 whatever it is.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if steps == 1 {
            return Ok(0);
        }
        rustix::fs::renameat(&self.dir_fd, tmp, &self.dir_fd, name)?;
        if steps == 2 {
            return Ok(0);
        }
        // The rename is durable only once the directory entry is.
        rustix::fs::fsync(&self.dir_fd)?;
        Ok(steps - 3)
    }

    /// Appends a record to the journal and waits until it is on disk (the
    /// data only: the journal exists, so no directory entry changes).
    pub(crate) fn append(&self, record: &[u8]) -> io::Result<()> {
        if !self.held() {
            return Err(io::Error::other("the state directory was released"));
        }
        let fd = rustix::fs::openat(
            &self.dir_fd,
            JOURNAL,
            OFlags::WRONLY | OFlags::APPEND | private_flags(),
            Mode::empty(),
        )?;
        let mut f = regular(fd, JOURNAL).map_err(|p| io::Error::other(p.to_string()))?;
        f.write_all(record)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::format::tests::{deltas, sample};
    use crate::durable::format::*;
    use crate::durable::ids::Digest;
    use crate::frame::{Cursor, Frame};
    use std::sync::Arc;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "heartline-file-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn open(dir: &Path) -> StateFile {
        StateFile::open(dir, false).expect("the state directory opens")
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_missing_directory_is_created_and_the_file_round_trips() {
        let dir = scratch("missing").join("deeper");
        let f = open(&dir);
        assert!(matches!(f.load(), Ok(Loaded::Fresh)));
        f.compact(&encode(&sample()), 7).unwrap();
        assert!(matches!(f.load(), Ok(Loaded::Found(s, _)) if s == sample()));
        assert!(!dir.join(TMP).exists(), "the temporary file was renamed");
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_corrupt_file_is_unusable_with_its_path_and_reason() {
        let dir = scratch("corrupt");
        let f = open(&dir);
        let bytes = encode(&sample());
        fs::write(f.path(), &bytes[..bytes.len() / 2]).unwrap();
        match f.load() {
            Ok(Loaded::Unusable(why)) => {
                assert!(why.contains("heartline.state"), "{why}");
                assert!(why.contains("truncated"), "{why}");
            }
            other => panic!("expected Unusable, got {other:?}"),
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_read_only_directory_loads_but_refuses_writes() {
        let dir = scratch("readonly");
        let f = open(&dir);
        f.compact(&encode(&sample()), 7).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        assert!(matches!(f.load(), Ok(Loaded::Found(..))));
        // root ignores directory permissions; only check the refusal when
        // the kernel enforces it.
        let probe = dir.join("probe");
        let enforced = File::create(&probe).is_err();
        let _ = fs::remove_file(&probe);
        if enforced {
            assert!(f.compact(&encode(&Snapshot::default()), 0).is_err());
            assert!(matches!(f.load(), Ok(Loaded::Found(s, _)) if s == sample()));
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        // A write that cannot happen even for root: the temporary file's
        // name is taken by a directory. The old file stays as it was.
        fs::create_dir(dir.join(TMP)).unwrap();
        assert!(f.compact(&encode(&Snapshot::default()), 0).is_err());
        assert!(matches!(f.load(), Ok(Loaded::Found(s, _)) if s == sample()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_refused_with_what_was_tried() {
        let base = scratch("notadir");
        fs::create_dir_all(&base).unwrap();
        let file = base.join("plain-file");
        fs::write(&file, b"x").unwrap();
        match StateFile::open(&file.join("state"), false) {
            Err(StateDirProblem::Io { action, .. }) => {
                assert_eq!(action, "create the directory")
            }
            other => panic!("expected Io, got {other:?}"),
        }
        match StateFile::open(&file, false) {
            Err(StateDirProblem::Io { action, .. }) => assert_eq!(action, "open the directory"),
            other => panic!("expected Io, got {other:?}"),
        }
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn the_directory_and_files_are_private_whatever_the_umask() {
        // Under the most permissive umask (process-wide, so restored after;
        // no other test here depends on it).
        let old = rustix::process::umask(Mode::empty());
        let dir = scratch("modes").join("state");
        let f = StateFile::open(&dir, false);
        rustix::process::umask(old);
        let f = f.unwrap();
        f.compact(&encode(&sample()), 7).unwrap();
        assert_eq!(mode(&dir), 0o700, "directory");
        assert_eq!(mode(&dir.join(FILE)), 0o600, "state file");
        assert_eq!(mode(&dir.join(LOCK)), 0o600, "lock file");
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_directory_others_can_write_to_is_refused_unless_allowed() {
        let dir = scratch("shared");
        fs::create_dir_all(&dir).unwrap();
        for m in [0o777, 0o1777, 0o770, 0o720] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(m)).unwrap();
            match StateFile::open(&dir, false) {
                Err(StateDirProblem::Writable { mode }) => assert_eq!(mode, m),
                other => panic!("mode {m:o}: expected Writable, got {other:?}"),
            }
            assert!(!dir.join(LOCK).exists(), "refused before touching it");
        }
        // Readable by others is fine: the files in it are 0600.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        drop(open(&dir));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(StateFile::open(&dir, true).is_ok(), "allowed explicitly");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_another_user_owns_is_refused_unless_allowed() {
        let dir = scratch("owner");
        fs::create_dir_all(&dir).unwrap();
        let me = rustix::process::geteuid().as_raw();
        // Only root can give a directory away; elsewhere this checks the
        // accepted case alone.
        let other = me.wrapping_add(4242);
        if std::os::unix::fs::chown(&dir, Some(other), None).is_ok() {
            match StateFile::open(&dir, false) {
                Err(StateDirProblem::Owner { owner, user }) => {
                    assert_eq!((owner, user), (other, me))
                }
                other => panic!("expected Owner, got {other:?}"),
            }
            assert!(StateFile::open(&dir, true).is_ok(), "allowed explicitly");
        } else {
            assert!(StateFile::open(&dir, false).is_ok());
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// A 1777 directory (accepted explicitly) where another user planted
    /// links: the file they point to stays byte for byte as it was.
    #[test]
    fn planted_links_are_never_followed() {
        use std::os::unix::fs::symlink;
        let base = scratch("planted");
        let dir = base.join("shared");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = base.join("victim");
        fs::write(&victim, b"precious data").unwrap();

        // The temporary file: removed, never opened.
        symlink(&victim, dir.join(TMP)).unwrap();
        let f = StateFile::open(&dir, true).unwrap();
        f.compact(&encode(&sample()), 7).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious data");
        assert!(fs::symlink_metadata(dir.join(FILE)).unwrap().is_file());
        assert!(matches!(f.load(), Ok(Loaded::Found(s, _)) if s == sample()));

        // The state file: refused on load, not read.
        fs::remove_file(dir.join(FILE)).unwrap();
        symlink(&victim, dir.join(FILE)).unwrap();
        assert!(matches!(
            f.load(),
            Err(StateDirProblem::NotAFile { name: FILE })
        ));
        // A write replaces the link itself (rename), not what it points to.
        f.compact(&encode(&sample()), 7).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious data");
        assert!(fs::symlink_metadata(dir.join(FILE)).unwrap().is_file());
        drop(f);

        // The lock file: a link is refused, so is a FIFO (never blocks).
        fs::remove_file(dir.join(LOCK)).unwrap();
        symlink(&victim, dir.join(LOCK)).unwrap();
        assert!(matches!(
            StateFile::open(&dir, true),
            Err(StateDirProblem::NotAFile { name: LOCK })
        ));
        fs::remove_file(dir.join(LOCK)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join(LOCK),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        assert!(matches!(
            StateFile::open(&dir, true),
            Err(StateDirProblem::NotAFile { name: LOCK })
        ));
        assert_eq!(fs::read(&victim).unwrap(), b"precious data");
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn one_holder_at_a_time_and_none_after_release() {
        let dir = scratch("lock");
        let first = open(&dir);
        assert!(matches!(
            StateFile::open(&dir, false),
            Err(StateDirProblem::InUse)
        ));
        first.compact(&encode(&sample()), 7).unwrap();
        first.release();
        assert!(!first.held());
        assert!(first.compact(&encode(&Snapshot::default()), 0).is_err());
        let second = open(&dir);
        assert!(matches!(second.load(), Ok(Loaded::Found(s, _)) if s == sample()));
        drop(second);
        drop(open(&dir));
        let _ = fs::remove_dir_all(&dir);
    }

    /// Cursor, finished ids and numbered frames.
    type Model = (Option<Cursor>, Vec<Digest>, Vec<(u64, Frame)>);

    /// The state a snapshot and its journal stand for (window aside).
    fn state(s: &Snapshot, ds: &[Delta]) -> Model {
        let mut cursor = s.cursor.clone();
        let mut finished = s.finished.clone();
        let mut out: std::collections::BTreeMap<u64, Frame> = s
            .outbound
            .iter()
            .map(|o| (o.seq, Frame::clone(&o.frame)))
            .collect();
        for d in ds {
            if d.cursor.is_some() {
                cursor = d.cursor.clone();
            }
            finished.extend(d.finished.iter().cloned());
            for o in &d.added {
                out.insert(o.seq, Frame::clone(&o.frame));
            }
            for seq in &d.removed {
                out.remove(seq);
            }
        }
        (cursor, finished, out.into_iter().collect())
    }

    #[test]
    fn a_power_cut_at_any_step_of_compaction_loses_nothing() {
        let ds = deltas();
        let expected = state(&sample(), &ds);
        // What the compaction writes: the same state as one snapshot.
        let (cursor, finished, out) = expected.clone();
        let folded = Snapshot {
            generation: 8,
            cursor,
            finished,
            outbound: out
                .into_iter()
                .map(|(seq, f)| Stored {
                    seq,
                    id: None,
                    frame: Arc::new(f),
                })
                .collect(),
        };
        for steps in 0..=6 {
            let dir = scratch(&format!("compact-{steps}"));
            let f = open(&dir);
            f.compact(&encode(&sample()), 7).unwrap();
            for d in &ds {
                f.append(&encode_delta(d)).unwrap();
            }
            f.compact_steps(&encode(&folded), 8, steps).unwrap();
            match f.load() {
                Ok(Loaded::Found(s, j)) => {
                    assert_eq!(state(&s, &j), expected, "cut after step {steps}");
                    if steps >= 6 {
                        assert!(j.is_empty() && s.generation == 8);
                    }
                }
                other => panic!("cut after step {steps}: {other:?}"),
            }
            // Appending after the full compaction extends the new snapshot.
            if steps >= 6 {
                f.append(&encode_delta(&ds[2])).unwrap();
                assert!(matches!(f.load(), Ok(Loaded::Found(_, j)) if j == ds[2..]));
            }
            drop(f);
            let _ = fs::remove_dir_all(&dir);
        }
    }
}
