//! The client's frames, encoded: headers by tungstenite's frame codec
//! ([`FrameHeader::format`]), payloads masked here (RFC 6455 §5.3: a fresh
//! random mask per frame), into one buffer the io glue writes to the
//! socket from where the last write stopped.
//!
//! tungstenite's own writer moved the unwritten rest of its buffer to the
//! front after every partial write; on a non-blocking socket a 16 MiB
//! message took hundreds of such writes, and the moves cost more than the
//! message itself. Here a write only advances an offset.

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

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

/// Encoded frames waiting for the socket.
pub(crate) struct Writer {
    out: Vec<u8>,
    /// Written so far: `out[at..]` waits.
    at: usize,
    /// The most that may wait unwritten.
    limit: usize,
    closed: bool,
}

impl Writer {
    /// A writer that refuses frames once more than `limit` bytes wait.
    pub(crate) fn new(limit: usize) -> Writer {
        Writer {
            out: Vec::new(),
            at: 0,
            limit,
            closed: false,
        }
    }

    /// Encodes one frame, masked, behind what waits.
    pub(crate) fn frame(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if self.waiting() > self.limit {
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
            mask: Some(mask),
            ..FrameHeader::default()
        };
        if self.at == self.out.len() {
            self.out.clear();
            self.at = 0;
        } else if self.at > self.out.len() / 2 {
            // Most of the buffer is written: move the rest down once, not
            // after every write.
            self.out.drain(..self.at);
            self.at = 0;
        }
        let len = payload.len() as u64;
        self.out.reserve(header.len(len) + payload.len());
        // Writing to a Vec cannot fail.
        let _ = header.format(len, &mut self.out);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        apply_mask(&mut self.out[start..], mask);
        Ok(())
    }

    /// The bytes waiting for the socket.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.out[self.at..]
    }

    /// How many bytes wait.
    pub(crate) fn waiting(&self) -> usize {
        self.out.len() - self.at
    }

    /// The socket took `n` of the pending bytes.
    pub(crate) fn advance(&mut self, n: usize) {
        self.at = (self.at + n).min(self.out.len());
        if self.at == self.out.len() {
            self.out.clear();
            self.at = 0;
            // A large message's buffer is not kept once it is written.
            if self.out.capacity() > 1 << 20 {
                self.out = Vec::new();
            }
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
        w.frame(Kind::Binary, &big).unwrap();
        w.frame(Kind::Ping, b"p").unwrap();
        // Written in uneven pieces, frames added between them.
        let mut wire = Vec::new();
        for (i, n) in [1usize, 7, 1000, 3, 65_536].iter().cycle().enumerate() {
            if w.waiting() == 0 {
                break;
            }
            let k = (*n).min(w.waiting());
            wire.extend_from_slice(&w.pending()[..k]);
            w.advance(k);
            if i == 3 {
                w.frame(Kind::Pong, b"q").unwrap();
            }
        }
        w.frame(Kind::Close, &1000u16.to_be_bytes()).unwrap();
        wire.extend_from_slice(w.pending());
        assert_eq!(wire[1] & 0x80, 0x80, "masked");
        let got = at_server(&wire);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], Message::text("héllo"));
        assert_eq!(got[1], Message::binary(big));
        assert_eq!(got[2], Message::Ping(b"p".to_vec().into()));
        assert_eq!(got[3], Message::Pong(b"q".to_vec().into()));
        assert!(matches!(&got[4], Message::Close(Some(f)) if u16::from(f.code) == 1000));
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
