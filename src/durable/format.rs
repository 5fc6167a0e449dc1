//! The state file's format: what survives a restart, encoded and decoded
//! (pure; [`super::file`] writes it crash-safe).
//!
//! Two files: `heartline.state`, a snapshot of the whole state, and
//! `heartline.journal`, which names the snapshot it extends (its
//! generation) and holds one record per state write after it ([`Delta`],
//! length and CRC-32 first). A torn or damaged record, with everything
//! after it, and a journal of another snapshot are ignored on load; a torn
//! or corrupted snapshot is caught by its checksum.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic    8 bytes   "heartln\n"
//! version  u32       2 (1 is read too: no generation, no frame numbers)
//! length   u32       body length
//! body     length bytes
//! crc32    u32       CRC-32 (IEEE) of the body
//!
//! body:
//! generation u64     which snapshot this is
//! cursor   u8 tag (0 none, 1 integer, 2 text), then i64 or string
//! finished u32 count, then count u64 digests of ids, oldest first
//!          (version 1: strings, the ids themselves)
//! outbound u32 count, then count frames:
//!          u64 number, u8 kind (0 text, 1 binary), u8 has-id (0/1)
//!          [string id], bytes
//!
//! journal: "heartjl\n", u32 version 1, u64 generation, then records:
//!          u32 length, u32 CRC-32 of the body, body: cursor (as above),
//!          finished ids (as above), added frames (as outbound), u32
//!          count then count u64 numbers of frames let go
//! string / bytes: u32 length, then the bytes
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::ids::{self, Digest};
use crate::frame::{Cursor, Frame};

const MAGIC: &[u8; 8] = b"heartln\n";
/// The format this heartline writes (it reads 1 too).
pub(crate) const VERSION: u32 = 2;
const JOURNAL_MAGIC: &[u8; 8] = b"heartjl\n";
const JOURNAL_VERSION: u32 = 1;
/// The journal's header: magic, version, the generation it extends.
pub(crate) const JOURNAL_HEADER: usize = 8 + 4 + 8;

/// One outbound frame kept across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The ledger's number for it (its order).
    pub seq: u64,
    /// The reliable frame's id; `None` for a frame only waiting to be sent.
    pub id: Option<Arc<str>>,
    /// Shared with the ledger: a snapshot being written holds no second
    /// copy of the payloads.
    pub frame: Arc<Frame>,
}

/// Everything the state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Which snapshot this is: a journal names the one it extends.
    pub generation: u64,
    /// The highest cursor of a message the application finished.
    pub cursor: Option<Cursor>,
    /// Digests of finished messages' ids, oldest first (the dedupe window).
    pub finished: Vec<Digest>,
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
                "format version {v}; this heartline reads versions 1 and {VERSION}"
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
    let body_size =
        64 + s.finished.len() * 8 + s.outbound.iter().map(|o| o.frame.len() + 16).sum::<usize>();
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + body_size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let len_at = out.len();
    put_len(&mut out, 0);
    let body_at = out.len();
    out.extend_from_slice(&s.generation.to_le_bytes());
    put_cursor(&mut out, s.cursor.as_ref());
    put_ids(&mut out, &s.finished);
    put_frames(&mut out, &s.outbound);
    let body_len = len_bytes(out.len() - body_at);
    out[len_at..body_at].copy_from_slice(&body_len);
    let crc = crc32(&out[body_at..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_cursor(out: &mut Vec<u8>, c: Option<&Cursor>) {
    match c {
        None => out.push(0),
        Some(Cursor::Int(i)) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Some(Cursor::Text(t)) => {
            out.push(2);
            put_bytes(out, t.as_bytes());
        }
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[Digest]) {
    put_len(out, ids.len());
    for d in ids {
        out.extend_from_slice(&d.to_le_bytes());
    }
}

fn put_frames(out: &mut Vec<u8>, frames: &[Stored]) {
    put_len(out, frames.len());
    for o in frames {
        out.extend_from_slice(&o.seq.to_le_bytes());
        out.push(match *o.frame {
            Frame::Text(_) => 0,
            Frame::Binary(_) => 1,
        });
        match &o.id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                put_bytes(out, id.as_bytes());
            }
        }
        put_bytes(out, o.frame.as_bytes());
    }
}

/// What changed since the last state write: one journal record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    /// The new highest cursor, if it moved.
    pub cursor: Option<Cursor>,
    /// Digests of the ids finished since, in order.
    pub finished: Vec<Digest>,
    /// Frames kept since (and still kept), in order.
    pub added: Vec<Stored>,
    /// Numbers of frames kept before and let go since.
    pub removed: Vec<u64>,
}

/// The journal's first bytes: it extends snapshot `generation`.
pub(crate) fn journal_header(generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(JOURNAL_HEADER);
    out.extend_from_slice(JOURNAL_MAGIC);
    out.extend_from_slice(&JOURNAL_VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out
}

/// One journal record: length, CRC-32 of the body, body.
pub(crate) fn encode_delta(d: &Delta) -> Vec<u8> {
    let mut out = vec![0; 8];
    put_cursor(&mut out, d.cursor.as_ref());
    put_ids(&mut out, &d.finished);
    put_frames(&mut out, &d.added);
    put_len(&mut out, d.removed.len());
    for seq in &d.removed {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    let len = len_bytes(out.len() - 8);
    let crc = crc32(&out[8..]).to_le_bytes();
    out[..4].copy_from_slice(&len);
    out[4..8].copy_from_slice(&crc);
    out
}

/// The records of a journal that extends snapshot `generation`, up to the
/// first that is torn or damaged (a write cut by a power loss): those and
/// anything after them are ignored, as is a journal of another snapshot.
pub(crate) fn decode_journal(data: &[u8], generation: u64) -> Vec<Delta> {
    if data.len() < JOURNAL_HEADER || data[..JOURNAL_HEADER] != journal_header(generation)[..] {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut r = Reader {
        data,
        at: JOURNAL_HEADER,
    };
    while r.at < data.len() {
        let Ok(delta) = next_delta(&mut r) else { break };
        out.push(delta);
    }
    out
}

fn next_delta(r: &mut Reader<'_>) -> Result<Delta, Corrupt> {
    let len = r.u32("a record's length")? as usize;
    let crc = r.u32("a record's checksum")?;
    let body = r.take(len, "a record")?;
    if crc32(body) != crc {
        return Err(Corrupt::Checksum);
    }
    let mut b = Reader { data: body, at: 0 };
    let cursor = b.cursor()?;
    let finished = b.ids(true)?;
    let added = b.frames(true)?;
    let n = b.count("the removed frames")?;
    let mut removed = Vec::with_capacity(n);
    for _ in 0..n {
        removed.push(b.u64("a removed frame")?);
    }
    if b.at != body.len() {
        return Err(Corrupt::Bad {
            at: b.at,
            what: "trailing bytes in a record",
        });
    }
    Ok(Delta {
        cursor,
        finished,
        added,
        removed,
    })
}

/// CRC-32 (IEEE 802.3: reflected, polynomial 0xEDB88320), the checksum
/// zlib and PNG use, a byte at a time from a 1 KiB table built at compile
/// time. A state file is a few KB to a few MB, written at most once per
/// `Persistence::sync_every`; a table-driven or hardware CRC crate would be faster
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
    if version != VERSION && version != 1 {
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
    let v2 = version == VERSION;
    let generation = if v2 { r.u64("the generation")? } else { 0 };
    let cursor = r.cursor()?;
    let finished = r.ids(v2)?;
    let mut outbound = r.frames(v2)?;
    if !v2 {
        // Version 1 kept no numbers: the order is the number.
        for (i, o) in outbound.iter_mut().enumerate() {
            o.seq = i as u64;
        }
    }
    if r.at != r.data.len() {
        return Err(Corrupt::Bad {
            at: r.at,
            what: "trailing bytes in the body",
        });
    }
    Ok(Snapshot {
        generation,
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

    fn u64(&mut self, what: &'static str) -> Result<u64, Corrupt> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }

    fn cursor(&mut self) -> Result<Option<Cursor>, Corrupt> {
        Ok(match self.u8("the cursor tag")? {
            0 => None,
            1 => Some(Cursor::Int(self.u64("the cursor")? as i64)),
            2 => Some(Cursor::Text(self.string("the cursor")?.to_owned())),
            _ => {
                return Err(Corrupt::Bad {
                    at: self.at - 1,
                    what: "cursor tag",
                })
            }
        })
    }

    /// Finished ids: digests (version 2 on), or the ids themselves
    /// (version 1), digested here.
    fn ids(&mut self, digests: bool) -> Result<Vec<Digest>, Corrupt> {
        let n = self.count("the finished ids")?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(match digests {
                true => self.u64("a finished id")?,
                false => ids::of_id(self.string("a finished id")?),
            });
        }
        Ok(ids)
    }

    /// Frames, each with its number when `numbered` (version 2 on).
    fn frames(&mut self, numbered: bool) -> Result<Vec<Stored>, Corrupt> {
        let n = self.count("the outbound frames")?;
        let mut outbound = Vec::with_capacity(n);
        for _ in 0..n {
            let seq = if numbered {
                self.u64("a frame's number")?
            } else {
                0
            };
            let kind = self.u8("a frame kind")?;
            let id = match self.u8("a frame's id flag")? {
                0 => None,
                1 => Some(Arc::from(self.string("a frame id")?)),
                _ => {
                    return Err(Corrupt::Bad {
                        at: self.at - 1,
                        what: "frame id flag",
                    })
                }
            };
            let at = self.at;
            let bytes = self.bytes("a frame")?;
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
                seq,
                id,
                frame: Arc::new(frame),
            });
        }
        Ok(outbound)
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

/// Changes since the last state write: the next journal record.
#[derive(Default)]
pub(crate) struct Pending {
    pub cursor: Option<Cursor>,
    pub finished: Vec<Digest>,
    pub added: BTreeMap<u64, Stored>,
    pub removed: Vec<u64>,
    /// More changed than a record should hold: write a snapshot instead.
    pub overflow: bool,
}

impl Pending {
    /// About what the record will take on disk.
    pub(crate) fn size(&self) -> usize {
        64 + self.finished.len() * 8
            + self
                .added
                .values()
                .map(|o| o.frame.len() + o.id.as_ref().map_or(0, |i| i.len()) + 24)
                .sum::<usize>()
            + self.removed.len() * 8
    }

    pub(crate) fn into_delta(self) -> Delta {
        Delta {
            cursor: self.cursor,
            finished: self.finished,
            added: self.added.into_values().collect(),
            removed: self.removed,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            generation: 7,
            cursor: Some(Cursor::Int(-42)),
            finished: vec![ids::of_id("m-1"), ids::of_id("m-2"), ids::of_id("ü")],
            outbound: vec![
                Stored {
                    seq: 3,
                    id: None,
                    frame: Arc::new(Frame::from("plain")),
                },
                Stored {
                    seq: 5,
                    id: Some("r-1".into()),
                    frame: Arc::new(Frame::Binary(vec![0, 255, 7])),
                },
                Stored {
                    seq: 9,
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
        b[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(decode(&b), Err(Corrupt::Version(9)));
        assert!(Corrupt::Version(9)
            .to_string()
            .contains("reads versions 1 and 2"));
        assert_eq!(decode(b"not a state file at all"), Err(Corrupt::Magic));
        assert!(matches!(
            decode(&encode(&sample())[..30]),
            Err(Corrupt::Truncated { .. })
        ));
    }

    pub(crate) fn deltas() -> Vec<Delta> {
        vec![
            Delta {
                cursor: Some(Cursor::Int(-40)),
                finished: vec![ids::of_id("m-3")],
                added: vec![Stored {
                    seq: 10,
                    id: Some("r-3".into()),
                    frame: Arc::new(Frame::from("three")),
                }],
                removed: vec![3],
            },
            Delta {
                finished: vec![ids::of_id("m-4"), ids::of_id("m-5")],
                removed: vec![5, 10],
                ..Delta::default()
            },
            Delta {
                cursor: Some(Cursor::Text("z".into())),
                ..Delta::default()
            },
        ]
    }

    fn journal(generation: u64, ds: &[Delta]) -> (Vec<u8>, Vec<usize>) {
        let mut j = journal_header(generation);
        let mut ends = Vec::new();
        for d in ds {
            j.extend_from_slice(&encode_delta(d));
            ends.push(j.len());
        }
        (j, ends)
    }

    #[test]
    fn journal_records_round_trip_and_a_torn_one_is_ignored_at_every_byte() {
        let ds = deltas();
        let (j, ends) = journal(7, &ds);
        assert_eq!(decode_journal(&j, 7), ds);
        for n in 0..=j.len() {
            let whole = ends.iter().filter(|&&e| e <= n).count();
            assert_eq!(decode_journal(&j[..n], 7), ds[..whole], "cut at {n}");
        }
        // A damaged record ends the journal there.
        let mut bad = j.clone();
        bad[ends[0] + 10] ^= 0x40;
        assert_eq!(decode_journal(&bad, 7), ds[..1]);
    }

    #[test]
    fn a_journal_of_another_snapshot_is_ignored() {
        let (j, _) = journal(6, &deltas());
        assert!(decode_journal(&j, 7).is_empty());
        assert!(decode_journal(b"not a journal at all", 7).is_empty());
    }

    #[test]
    fn a_version_1_file_still_loads() {
        let mut body = vec![1];
        body.extend_from_slice(&5i64.to_le_bytes());
        put_len(&mut body, 1);
        put_bytes(&mut body, b"a");
        put_len(&mut body, 1);
        body.extend_from_slice(&[0, 0]);
        put_bytes(&mut body, b"x");
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        put_len(&mut v1, body.len());
        v1.extend_from_slice(&body);
        v1.extend_from_slice(&crc32(&body).to_le_bytes());
        let s = decode(&v1).unwrap();
        assert_eq!((s.generation, s.cursor), (0, Some(Cursor::Int(5))));
        assert_eq!(s.finished, [ids::of_id("a")]);
        assert_eq!(
            (s.outbound[0].seq, &*s.outbound[0].frame),
            (0, &Frame::from("x"))
        );
    }
}
