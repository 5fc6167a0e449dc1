//! The client's frames, encoded: headers by tungstenite's frame codec
//! ([`FrameHeader::format`]), payloads masked here (RFC 6455 §5.3: a fresh
//! random mask per frame). Small frames are encoded into one buffer; a
//! large payload is masked where it is and written from there, with no
//! copy. The io glue writes from where the last write stopped.
//!
//! tungstenite's own writer copied every payload into its buffer and
//! moved the unwritten rest to the front after every partial write; on a
//! non-blocking socket a 16 MiB message took hundreds of such writes, and
//! the moves cost more than the message itself. Here a write only
//! advances an offset.

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::machine::deflate::{Deflater, Params};

/// The kinds of frame the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// Why a frame was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// More than the limit waits unwritten: the server has stopped reading.
    Full,
    /// A close frame was sent: nothing may follow it (RFC 6455 §5.5.1).
    Closed,
}

/// A payload at least this large is masked where it is and written from
/// there, not copied into the buffer.
const OWN: usize = 64 * 1024;

/// Encoded frames waiting for the socket.
pub(crate) struct Writer {
    /// What waits, in order: the buffer small frames and headers are
    /// encoded into, and large payloads as they came (masked in place).
    /// The first part has `at` bytes written.
    parts: std::collections::VecDeque<Vec<u8>>,
    at: usize,
    /// Bytes waiting, in all parts.
    waiting: usize,
    /// The most that may wait unwritten.
    limit: usize,
    closed: bool,
    /// A written part kept for the next buffer, so a steady stream of
    /// small frames does not allocate one per turn.
    spare: Vec<u8>,
    /// permessage-deflate, when the server agreed to it.
    deflater: Option<Deflater>,
}

/// A written part up to this size is kept as the spare.
const KEEP: usize = 256 * 1024;

impl Writer {
    /// A writer that refuses frames once more than `limit` bytes wait.
    pub(crate) fn new(limit: usize) -> Writer {
        Writer {
            parts: std::collections::VecDeque::new(),
            at: 0,
            waiting: 0,
            limit,
            closed: false,
            spare: Vec::new(),
            deflater: None,
        }
    }

    /// The server agreed to permessage-deflate: data messages worth it are
    /// sent compressed.
    pub(crate) fn deflate_with(&mut self, p: Params) {
        self.deflater = Deflater::new(p);
    }

    /// A data message compressed, when compression was agreed and it is
    /// worth it.
    fn compressed(&mut self, kind: Kind, payload: &[u8]) -> Option<Vec<u8>> {
        if matches!(kind, Kind::Text | Kind::Binary) && !self.closed {
            self.deflater.as_mut()?.deflate(payload)
        } else {
            None
        }
    }

    /// Encodes one frame, masked, behind what waits (the payload copied).
    pub(crate) fn frame(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Refused> {
        if let Some(z) = self.compressed(kind, payload) {
            return self.encode(kind, true, z);
        }
        self.copy(kind, false, payload)
    }

    fn copy(&mut self, kind: Kind, rsv1: bool, payload: &[u8]) -> Result<(), Refused> {
        let mask = self.header(kind, rsv1, payload.len())?;
        let Some(buf) = self.parts.back_mut() else {
            return Ok(());
        };
        let start = buf.len();
        buf.extend_from_slice(payload);
        apply_mask(&mut buf[start..], mask);
        self.waiting += payload.len();
        Ok(())
    }

    /// The same for a payload the writer may keep: a large one is masked
    /// where it is and written from there, with no copy.
    pub(crate) fn frame_owned(&mut self, kind: Kind, payload: Vec<u8>) -> Result<(), Refused> {
        match self.compressed(kind, &payload) {
            Some(z) => self.encode(kind, true, z),
            None => self.encode(kind, false, payload),
        }
    }

    fn encode(&mut self, kind: Kind, rsv1: bool, mut payload: Vec<u8>) -> Result<(), Refused> {
        if payload.len() < OWN {
            return self.copy(kind, rsv1, &payload);
        }
        let mask = self.header(kind, rsv1, payload.len())?;
        apply_mask(&mut payload, mask);
        self.waiting += payload.len();
        self.parts.push_back(payload);
        Ok(())
    }

    /// Checks that a frame may go, and encodes its header into the last
    /// buffer (a new one if the last part is a payload); its mask.
    fn header(&mut self, kind: Kind, rsv1: bool, len: usize) -> Result<[u8; 4], Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if self.waiting > self.limit {
            return Err(Refused::Full);
        }
        self.closed = kind == Kind::Close;
        let opcode = match kind {
            Kind::Text => OpCode::Data(Data::Text),
            Kind::Binary => OpCode::Data(Data::Binary),
            Kind::Ping => OpCode::Control(Control::Ping),
            Kind::Pong => OpCode::Control(Control::Pong),
            Kind::Close => OpCode::Control(Control::Close),
        };
        let mask: [u8; 4] = rand::random();
        let header = FrameHeader {
            opcode,
            rsv1,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        // A payload part, or a buffer half written, is not appended to: a
        // new buffer follows it (written parts are dropped, so nothing is
        // moved).
        let fresh = match self.parts.back() {
            None => true,
            Some(b) => b.len() >= OWN || (self.parts.len() == 1 && self.at > 0),
        };
        if fresh {
            self.parts.push_back(std::mem::take(&mut self.spare));
        }
        let len = len as u64;
        let Some(buf) = self.parts.back_mut() else {
            return Ok(mask);
        };
        let before = buf.len();
        // Writing to a Vec cannot fail.
        let _ = header.format(len, buf);
        self.waiting += buf.len() - before;
        Ok(mask)
    }

    /// The next bytes waiting for the socket (of the first part; more may
    /// follow once they are written).
    pub(crate) fn pending(&self) -> &[u8] {
        self.parts.front().map_or(&[], |p| &p[self.at..])
    }

    /// How many bytes wait.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// The socket took `n` of the [`Writer::pending`] bytes.
    pub(crate) fn advance(&mut self, n: usize) {
        let Some(front) = self.parts.front() else {
            return;
        };
        let n = n.min(front.len() - self.at);
        self.at += n;
        self.waiting -= n;
        if self.at == front.len() {
            if let Some(mut done) = self.parts.pop_front() {
                if done.capacity() <= KEEP && done.capacity() > self.spare.capacity() {
                    done.clear();
                    self.spare = done;
                }
            }
            self.at = 0;
        }
    }
}

/// XORs `buf` with the mask, repeated (RFC 6455 §5.3), eight bytes at a
/// time.
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

    /// What a server reads from these bytes.
    fn at_server(bytes: &[u8]) -> Vec<Message> {
        let mut ws = WebSocket::from_raw_socket(Cursor::new(bytes.to_vec()), Role::Server, None);
        std::iter::from_fn(|| ws.read().ok()).collect()
    }

    #[test]
    fn frames_are_masked_and_read_back_by_a_server_whatever_the_writes() {
        let mut w = Writer::new(1 << 20);
        let big: Vec<u8> = (0..70_001u32).map(|i| (i % 251) as u8).collect();
        w.frame(Kind::Text, "héllo".as_bytes()).unwrap();
        w.frame_owned(Kind::Binary, big.clone()).unwrap();
        w.frame_owned(Kind::Text, b"small".to_vec()).unwrap();
        w.frame(Kind::Ping, b"p").unwrap();
        // Written in uneven pieces, frames added between them.
        let mut wire = Vec::new();
        for (i, n) in [1usize, 7, 1000, 3, 65_536].iter().cycle().enumerate() {
            if w.waiting() == 0 {
                break;
            }
            let k = (*n).min(w.pending().len());
            wire.extend_from_slice(&w.pending()[..k]);
            w.advance(k);
            if i == 3 {
                w.frame(Kind::Pong, b"q").unwrap();
            }
        }
        w.frame(Kind::Close, &1000u16.to_be_bytes()).unwrap();
        while w.waiting() > 0 {
            let k = w.pending().len();
            wire.extend_from_slice(w.pending());
            w.advance(k);
        }
        assert_eq!(wire[1] & 0x80, 0x80, "masked");
        let got = at_server(&wire);
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[0], Message::text("héllo"));
        assert_eq!(got[1], Message::binary(big));
        assert_eq!(got[2], Message::text("small"));
        assert_eq!(got[3], Message::Ping(b"p".to_vec().into()));
        assert_eq!(got[4], Message::Pong(b"q".to_vec().into()));
        assert!(matches!(&got[5], Message::Close(Some(f)) if u16::from(f.code) == 1000));
    }

    #[test]
    fn nothing_follows_a_close_and_a_full_buffer_refuses() {
        let mut w = Writer::new(100);
        w.frame(Kind::Binary, &[0; 150]).unwrap();
        assert_eq!(w.frame(Kind::Binary, &[0; 1]), Err(Refused::Full));
        w.advance(w.waiting());
        w.frame(Kind::Close, &[]).unwrap();
        assert_eq!(w.frame(Kind::Pong, &[]), Err(Refused::Closed));
    }

    #[test]
    fn a_written_buffer_is_reused_for_the_next_frames() {
        let mut w = Writer::new(1 << 20);
        w.frame(Kind::Text, &[b'a'; 1000]).unwrap();
        let n = w.waiting();
        w.advance(n);
        let kept = w.spare.capacity();
        assert!(kept >= 1000);
        w.frame(Kind::Text, b"b").unwrap();
        assert_eq!(w.spare.capacity(), 0, "taken for the next frame");
        assert_eq!(w.parts.front().map(Vec::capacity), Some(kept));
    }

    #[test]
    fn the_mask_is_applied_to_every_byte() {
        for len in 0..40 {
            let mut buf: Vec<u8> = (0..len as u8).collect();
            apply_mask(&mut buf, [1, 2, 3, 4]);
            for (i, b) in buf.iter().enumerate() {
                assert_eq!(*b, (i as u8) ^ [1, 2, 3, 4][i % 4]);
            }
        }
    }
}
