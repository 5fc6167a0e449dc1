//! The state file: what survives a restart, written crash-safe.
//!
//! One file, `heartline.state`, replaced whole at each write: the new
//! content goes to `heartline.state.tmp`, is fsynced, renamed over the old
//! file, and the directory is fsynced, so after a power cut the file is the
//! old one or the new one, never a mix. A torn or corrupted file is caught
//! by its checksum; loading it is a warning and a fresh start, never a
//! refusal to start.
//!
//! The directory is the client's alone ([`StateFile::open`]): created 0700,
//! checked for who may write to it, locked (`heartline.lock`, flock) for as
//! long as the client runs, and used through its descriptor; the files in
//! it are 0600 and opened without following links, so nobody who can
//! plant a link there can make heartline read or overwrite another file.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic    8 bytes   "heartln\n"
//! version  u32       1
//! length   u32       body length
//! body     length bytes
//! crc32    u32       CRC-32 (IEEE) of the body
//!
//! body:
//! cursor   u8 tag (0 none, 1 integer, 2 text), then i64 or string
//! finished u32 count, then count strings (ids, oldest first)
//! outbound u32 count, then count frames:
//!          u8 kind (0 text, 1 binary), u8 has-id (0/1) [string id], bytes
//! string / bytes: u32 length, then the bytes
//! ```

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};

use crate::error::StateDirProblem;
use crate::frame::{Cursor, Frame};

const MAGIC: &[u8; 8] = b"heartln\n";
/// The format this heartline writes and reads.
pub(crate) const VERSION: u32 = 1;
const FILE: &str = "heartline.state";
const TMP: &str = "heartline.state.tmp";
const LOCK: &str = "heartline.lock";

/// One outbound frame kept across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The reliable frame's id; `None` for a frame only waiting to be sent.
    pub id: Option<Arc<str>>,
    /// Shared with the ledger: a snapshot being written holds no second
    /// copy of the payloads.
    pub frame: Arc<Frame>,
}

/// Everything the state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The highest cursor of a message the application finished.
    pub cursor: Option<Cursor>,
    /// Ids of finished messages, oldest first (the dedupe window).
    pub finished: Vec<Arc<str>>,
    /// Frames not yet written to a socket, and reliable frames not yet
    /// acknowledged, in the order they were sent.
    pub outbound: Vec<Stored>,
}

/// Why a state file could not be read. Each is a warning and a fresh
/// start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Corrupt {
    /// Not a heartline state file.
    Magic,
    /// Written by a heartline with another format.
    Version(u32),
    /// Ends early: at byte `at`, reading `what`.
    Truncated { at: usize, what: &'static str },
    /// The checksum does not match the content (a torn or damaged write).
    Checksum,
    /// The content does not parse: `what` at byte `at`.
    Bad { at: usize, what: &'static str },
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corrupt::Magic => f.write_str("not a heartline state file (bad magic)"),
            Corrupt::Version(v) => write!(
                f,
                "format version {v}; this heartline reads version {VERSION}"
            ),
            Corrupt::Truncated { at, what } => {
                write!(f, "truncated at byte {at} while reading {what}")
            }
            Corrupt::Checksum => f.write_str("checksum mismatch (torn or damaged write)"),
            Corrupt::Bad { at, what } => write!(f, "bad {what} at byte {at}"),
        }
    }
}

/// Encodes a snapshot into the file's bytes.
pub(crate) fn encode(s: &Snapshot) -> Vec<u8> {
    // One buffer, header first and the body's length filled in after: the
    // encoded state is the only copy of the payloads a write makes.
    let body_size = 64
        + s.finished.iter().map(|i| i.len() + 4).sum::<usize>()
        + s.outbound.iter().map(|o| o.frame.len() + 16).sum::<usize>();
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + body_size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let len_at = out.len();
    put_len(&mut out, 0);
    let body_at = out.len();
    match &s.cursor {
        None => out.push(0),
        Some(Cursor::Int(i)) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Some(Cursor::Text(t)) => {
            out.push(2);
            put_bytes(&mut out, t.as_bytes());
        }
    }
    put_len(&mut out, s.finished.len());
    for id in &s.finished {
        put_bytes(&mut out, id.as_bytes());
    }
    put_len(&mut out, s.outbound.len());
    for o in &s.outbound {
        out.push(match *o.frame {
            Frame::Text(_) => 0,
            Frame::Binary(_) => 1,
        });
        match &o.id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                put_bytes(&mut out, id.as_bytes());
            }
        }
        put_bytes(&mut out, o.frame.as_bytes());
    }
    let body_len = len_bytes(out.len() - body_at);
    out[len_at..body_at].copy_from_slice(&body_len);
    let crc = crc32(&out[body_at..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3: reflected, polynomial 0xEDB88320), the checksum
/// zlib and PNG use, a byte at a time from a 1 KiB table built at compile
/// time. A state file is a few KB to a few MB, written at most once per
/// `state_sync_every`; a table-driven or hardware CRC crate would be faster
/// and cost some 24 KB more in a device binary.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8)
    })
}

fn len_bytes(n: usize) -> [u8; 4] {
    // Bounded far below 4 GiB by the dedupe window and the byte budgets.
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&len_bytes(n));
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

/// Reads what [`encode`] wrote.
pub(crate) fn decode(data: &[u8]) -> Result<Snapshot, Corrupt> {
    let mut r = Reader { data, at: 0 };
    if r.take(8, "the magic")? != MAGIC {
        return Err(Corrupt::Magic);
    }
    let version = r.u32("the version")?;
    if version != VERSION {
        return Err(Corrupt::Version(version));
    }
    let len = r.u32("the body length")? as usize;
    let body_at = r.at;
    let body = r.take(len, "the body")?;
    let crc = r.u32("the checksum")?;
    if r.at != data.len() {
        return Err(Corrupt::Bad {
            at: r.at,
            what: "trailing bytes",
        });
    }
    if crc32(body) != crc {
        return Err(Corrupt::Checksum);
    }
    // Past the checksum, a parse error means a writer bug or a deliberate
    // edit; still reported by position, never a panic.
    let mut r = Reader {
        data: &data[..body_at + len],
        at: body_at,
    };
    let cursor = match r.u8("the cursor tag")? {
        0 => None,
        1 => {
            let b = r.take(8, "the cursor")?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some(Cursor::Int(i64::from_le_bytes(a)))
        }
        2 => Some(Cursor::Text(r.string("the cursor")?.to_owned())),
        _ => {
            return Err(Corrupt::Bad {
                at: r.at - 1,
                what: "cursor tag",
            })
        }
    };
    let n = r.count("the finished ids")?;
    let mut finished = Vec::with_capacity(n);
    for _ in 0..n {
        finished.push(Arc::from(r.string("a finished id")?));
    }
    let n = r.count("the outbound frames")?;
    let mut outbound = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.u8("a frame kind")?;
        let id = match r.u8("a frame's id flag")? {
            0 => None,
            1 => Some(Arc::from(r.string("a frame id")?)),
            _ => {
                return Err(Corrupt::Bad {
                    at: r.at - 1,
                    what: "frame id flag",
                })
            }
        };
        let at = r.at;
        let bytes = r.bytes("a frame")?;
        let frame = match kind {
            0 => Frame::Text(
                std::str::from_utf8(bytes)
                    .map_err(|_| Corrupt::Bad {
                        at,
                        what: "UTF-8 in a text frame",
                    })?
                    .to_owned(),
            ),
            1 => Frame::Binary(bytes.to_vec()),
            _ => {
                return Err(Corrupt::Bad {
                    at,
                    what: "frame kind",
                })
            }
        };
        outbound.push(Stored {
            id,
            frame: Arc::new(frame),
        });
    }
    if r.at != r.data.len() {
        return Err(Corrupt::Bad {
            at: r.at,
            what: "trailing bytes in the body",
        });
    }
    Ok(Snapshot {
        cursor,
        finished,
        outbound,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Corrupt> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(Corrupt::Truncated { at: self.at, what })?;
        let b = &self.data[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Corrupt> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Corrupt> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items, each at least 4 bytes: more than the bytes left is
    /// corrupt (and would otherwise reserve absurd memory).
    fn count(&mut self, what: &'static str) -> Result<usize, Corrupt> {
        let at = self.at;
        let n = self.u32(what)? as usize;
        if n > (self.data.len() - self.at) / 4 {
            return Err(Corrupt::Bad { at, what });
        }
        Ok(n)
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], Corrupt> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str, Corrupt> {
        let at = self.at;
        std::str::from_utf8(self.bytes(what)?).map_err(|_| Corrupt::Bad { at, what })
    }
}

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
    Found(Snapshot),
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
        Ok(match decode(&data) {
            Ok(s) => Loaded::Found(s),
            Err(c) => Loaded::Unusable(format!("{}: {c}", self.path().display())),
        })
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

    /// Replaces the file with `bytes`, crash-safe: a new file, fsync,
    /// rename, fsync of the directory. The new file is made exclusively
    /// (a stale one is removed first, never opened), with mode 0600.
    pub(crate) fn store(&self, bytes: &[u8]) -> io::Result<()> {
        if !self.held() {
            return Err(io::Error::other("the state directory was released"));
        }
        // unlinkat removes a link itself, never what it points to.
        match rustix::fs::unlinkat(&self.dir_fd, TMP, AtFlags::empty()) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::NOENT => {}
            Err(e) => return Err(e.into()),
        }
        // O_EXCL: if anything was planted under the name since, this fails.
        let fd = rustix::fs::openat(
            &self.dir_fd,
            TMP,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | private_flags(),
            private_mode(),
        )?;
        let mut f = File::from(fd);
        // The umask may have taken bits away; 0600 whatever it is.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        rustix::fs::renameat(&self.dir_fd, TMP, &self.dir_fd, FILE)?;
        // The rename is durable only once the directory entry is.
        rustix::fs::fsync(&self.dir_fd)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32_ieee_as_state_files_written_before_have_it() {
        // The standard check values, and crc32fast's answers (the crate
        // earlier versions wrote state files with) over assorted inputs.
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        let mut data = Vec::new();
        for i in 0..5000u32 {
            data.push((i.wrapping_mul(2_654_435_761) >> 13) as u8);
            assert_eq!(crc32(&data), crc32fast::hash(&data), "{} bytes", data.len());
        }
    }

    fn sample() -> Snapshot {
        Snapshot {
            cursor: Some(Cursor::Int(-42)),
            finished: vec!["m-1".into(), "m-2".into(), "ü".into()],
            outbound: vec![
                Stored {
                    id: None,
                    frame: Arc::new(Frame::from("plain")),
                },
                Stored {
                    id: Some("r-1".into()),
                    frame: Arc::new(Frame::Binary(vec![0, 255, 7])),
                },
                Stored {
                    id: Some("r-2".into()),
                    frame: Arc::new(Frame::from(r#"{"id":"r-2"}"#)),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        for s in [
            sample(),
            Snapshot::default(),
            Snapshot {
                cursor: Some(Cursor::Text("2026-11-23T10:00:00Z".into())),
                ..Snapshot::default()
            },
        ] {
            assert_eq!(decode(&encode(&s)), Ok(s));
        }
    }

    #[test]
    fn a_file_truncated_at_any_byte_is_refused_without_panic() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            let got = decode(&bytes[..n]);
            assert!(got.is_err(), "truncated to {n} bytes decoded: {got:?}");
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(decode(&b).is_err(), "bit {bit:#x} of byte {i} flipped");
            }
        }
    }

    #[test]
    fn a_bad_checksum_wrong_version_and_wrong_magic_say_so() {
        let mut b = encode(&sample());
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert_eq!(decode(&b), Err(Corrupt::Checksum));
        let mut b = encode(&sample());
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(decode(&b), Err(Corrupt::Version(2)));
        assert!(Corrupt::Version(2).to_string().contains("reads version 1"));
        assert_eq!(decode(b"not a state file at all"), Err(Corrupt::Magic));
        assert!(matches!(
            decode(&encode(&sample())[..30]),
            Err(Corrupt::Truncated { .. })
        ));
    }

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
        f.store(&encode(&sample())).unwrap();
        assert!(matches!(f.load(), Ok(Loaded::Found(s)) if s == sample()));
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
        f.store(&encode(&sample())).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        assert!(matches!(f.load(), Ok(Loaded::Found(_))));
        // root ignores directory permissions; only check the refusal when
        // the kernel enforces it.
        let probe = dir.join("probe");
        let enforced = File::create(&probe).is_err();
        let _ = fs::remove_file(&probe);
        if enforced {
            assert!(f.store(&encode(&Snapshot::default())).is_err());
            assert!(matches!(f.load(), Ok(Loaded::Found(s)) if s == sample()));
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        // A write that cannot happen even for root: the temporary file's
        // name is taken by a directory. The old file stays as it was.
        fs::create_dir(dir.join(TMP)).unwrap();
        assert!(f.store(&encode(&Snapshot::default())).is_err());
        assert!(matches!(f.load(), Ok(Loaded::Found(s)) if s == sample()));
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
        f.store(&encode(&sample())).unwrap();
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
        f.store(&encode(&sample())).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious data");
        assert!(fs::symlink_metadata(dir.join(FILE)).unwrap().is_file());
        assert!(matches!(f.load(), Ok(Loaded::Found(s)) if s == sample()));

        // The state file: refused on load, not read.
        fs::remove_file(dir.join(FILE)).unwrap();
        symlink(&victim, dir.join(FILE)).unwrap();
        assert!(matches!(
            f.load(),
            Err(StateDirProblem::NotAFile { name: FILE })
        ));
        // A write replaces the link itself (rename), not what it points to.
        f.store(&encode(&sample())).unwrap();
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
        first.store(&encode(&sample())).unwrap();
        first.release();
        assert!(!first.held());
        assert!(first.store(&encode(&Snapshot::default())).is_err());
        let second = open(&dir);
        assert!(matches!(second.load(), Ok(Loaded::Found(s)) if s == sample()));
        drop(second);
        drop(open(&dir));
        let _ = fs::remove_dir_all(&dir);
    }
}
