//! The server's frames, read and judged: the one place where the bytes a
//! server sends become messages, pings, pongs and closes, or a reason to
//! fail the connection (RFC 6455 §5 and §7.1.7).
//!
//! A pure reader: the io glue reads the socket into [`Reader::space`], says
//! how much arrived with [`Reader::filled`], and takes what it makes of the
//! bytes from [`Reader::next`] until it says it needs more. Headers are
//! parsed by tungstenite's frame codec ([`FrameHeader::parse`]); the rest
//! (fragments and the control frames between them, UTF-8 checked as the
//! bytes arrive, the size limits, the strict or lenient decision, close
//! codes) is decided here, and every decision has a test on scripted bytes
//! below.
//!
//! A payload is copied once, from the read buffer into the message the
//! application receives; with [`Rules::share`], the whole small messages
//! of a read are copied side by side into one storage and handed out in
//! one piece ([`FrameEvent::Run`]). A message over a limit is dropped as its bytes
//! arrive and never held (or fails the connection with 1009, if so
//! configured), so memory stays within `max_message_size` whatever the
//! server announces.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::frame::Frame;
use crate::machine::connection::ReadFailure;
use crate::machine::deflate::{Inflated, Inflater, Params};
use crate::message::{Body, Gathered, Span, Turn};

/// The read buffer's largest size: what one read of the socket may bring.
const BUFFER: usize = 64 * 1024;

/// The read buffer's first size. It doubles, up to [`BUFFER`], each time
/// a read fills it: a connection that is mostly idle (most of a device's
/// life) never holds, or touches, the pages a flood needs.
const FIRST: usize = 4 * 1024;

/// The largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: u64 = 125;

/// The largest message that goes into its read's shared storage (see
/// [`Rules::share`]); a larger one has an allocation of its own, so
/// keeping a small message never keeps a large one's bytes.
const SHARED_MAX: u64 = 8 * 1024;

/// What the reader made of the server's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameEvent {
    /// A whole data message.
    Message(Body),
    /// The whole small messages of a read, in the storage they share, in
    /// one piece (with [`Rules::share`]).
    Run(Gathered),
    /// A Ping, with its payload (answered with a Pong carrying it).
    Ping(Vec<u8>),
    /// A Pong.
    Pong,
    /// A close frame: its code and reason, if it had any.
    Close(Option<(u16, String)>),
    /// A message over a limit, dropped as its bytes arrive. `len` is what
    /// was known of its size when it was dropped: the frame's announced
    /// length, or the bytes so far and the next frame's.
    TooLarge {
        /// Its size as far as it was known.
        len: u64,
        /// Whether it came in fragments.
        fragmented: bool,
    },
    /// With `lenient`: a message skipped for breaking RFC 6455 (its frames
    /// are dropped, the connection carries on).
    Skipped(Skip),
}

/// Why a message was skipped (lenient only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// A frame of a type RFC 6455 reserves, with this opcode.
    Reserved(u8),
    /// A text message that is not UTF-8.
    NotUtf8,
}

/// What to do with a message over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// The largest frame's payload.
    pub max_frame: u64,
    /// The largest message, its fragments together.
    pub max_message: u64,
    /// Close with 1009 rather than drop a message over a limit.
    pub close_on_too_large: bool,
    /// Skip what breaks RFC 6455 where the stream allows it.
    pub lenient: bool,
    /// The small messages that one read brings whole go into one storage
    /// they share, and are handed out in one piece ([`FrameEvent::Run`]):
    /// one allocation and one event per read, not per message. Off when a
    /// protocol or a reply rule inspects each message as a [`Frame`] of its
    /// own, or polls need each pushed message remembered.
    pub share: bool,
}

/// A data message being read: its frames so far.
struct Message {
    text: bool,
    /// The payload so far; for uncompressed text only a code point the
    /// last bytes cut (at most 3 bytes), the rest being in `string`.
    data: Vec<u8>,
    /// Uncompressed text, checked once as it was copied.
    string: String,
    /// Its frames' payloads so far, dropped ones included.
    total: u64,
    fragmented: bool,
    /// Its bytes are dropped as they arrive (too large, or skipped).
    dropping: bool,
    /// Sent compressed (RSV1, permessage-deflate): inflated when whole.
    compressed: bool,
}

/// The frame whose payload is being read.
struct Payload {
    left: u64,
    fin: bool,
}

/// The frame reader's state between reads.
pub(crate) struct Reader {
    rules: Rules,
    /// Bytes read and not yet taken: `buf[at..end]`.
    buf: Vec<u8>,
    at: usize,
    end: usize,
    message: Option<Message>,
    payload: Option<Payload>,
    /// An event decided while taking a header, handed out next.
    pending: Option<FrameEvent>,
    /// permessage-deflate, when the server agreed to it.
    inflater: Option<Inflater>,
}

fn violation(code: u16, what: impl Into<String>) -> ReadFailure {
    ReadFailure::Violation {
        code,
        what: what.into(),
    }
}

/// Whether this opcode is one RFC 6455 reserves.
fn reserved(opcode: u8) -> bool {
    matches!(opcode, 3..=7 | 11..=15)
}

impl Reader {
    /// A reader under these rules; its buffer is allocated at the first
    /// read.
    pub(crate) fn new(rules: Rules) -> Reader {
        Reader {
            rules,
            buf: Vec::new(),
            at: 0,
            end: 0,
            message: None,
            payload: None,
            pending: None,
            inflater: None,
        }
    }

    /// The server agreed to permessage-deflate: messages with RSV1 set
    /// are inflated.
    pub(crate) fn inflate_with(&mut self, p: Params) {
        self.inflater = Inflater::new(p);
    }

    /// The rules it reads by.
    pub(crate) fn rules(&self) -> Rules {
        self.rules
    }

    /// Bytes that arrived before the reader was made (read past the
    /// upgrade answer): the start of the frame stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let room = self.space().len();
        if room < bytes.len() {
            self.buf.resize(self.buf.len() + bytes.len() - room, 0);
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Where the next read of the socket goes. Called only once
    /// [`Reader::next`] has returned `None`: then at most one control
    /// frame waits, and the space is most of the buffer.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; FIRST];
        } else if self.end == self.buf.len() && self.buf.len() < BUFFER {
            // The last read filled it: more is coming than it holds.
            self.buf.resize((self.buf.len() * 2).min(BUFFER), 0);
        }
        if self.at == self.end {
            self.at = 0;
            self.end = 0;
        } else if self.at > 0 && self.buf.len() - self.end < self.buf.len() / 2 {
            self.buf.copy_within(self.at..self.end, 0);
            self.end -= self.at;
            self.at = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Reader::space`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes read and not yet judged.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.end - self.at
    }

    /// The next thing the bytes so far make: `None` when more are needed.
    /// After an error the connection is to be failed; nothing more is
    /// read.
    pub(crate) fn next(&mut self) -> Option<Result<FrameEvent, ReadFailure>> {
        loop {
            if let Some(e) = self.pending.take() {
                return Some(Ok(e));
            }
            if self.rules.share && self.payload.is_none() && self.message.is_none() {
                if let Some(g) = self.gather() {
                    return Some(Ok(FrameEvent::Run(g)));
                }
            }
            if self.payload.is_some() {
                match self.take_payload() {
                    Ok(Some(e)) => return Some(Ok(e)),
                    Ok(None) if self.payload.is_some() && self.pending.is_none() => return None,
                    Ok(None) => continue,
                    Err(f) => return Some(Err(f)),
                }
            }
            match self.header() {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) if self.payload.is_some() || self.pending.is_some() => continue,
                Ok(None) => return None,
                Err(f) => return Some(Err(f)),
            }
        }
    }

    /// Takes the whole small messages at the front of the buffer, up to
    /// the first frame that is anything else, into one storage they share:
    /// their payloads are copied once, side by side, and each text is
    /// checked as it is copied. A frame this does not take (a control
    /// frame, a fragment, a compressed, large, masked or reserved one, text
    /// that is not UTF-8, a frame not all here) stays for the frame-by-frame
    /// path, which decides on it after the run is handed out.
    fn gather(&mut self) -> Option<Gathered> {
        let mut spans = Vec::new();
        let limit = SHARED_MAX
            .min(self.rules.max_frame)
            .min(self.rules.max_message);
        let (mut texts, mut binaries) = (0, 0);
        let mut at = self.at;
        // Positions in the buffer (at most its 64 KiB and what came with the
        // upgrade answer) while gathering, then in the storage.
        while let Some((header, len, text)) = small_frame(&self.buf[at..self.end], limit) {
            if at + header + len > u32::MAX as usize {
                break;
            }
            spans.push(Span {
                at: (at + header) as u32,
                len: len as u32,
                text,
            });
            if text {
                texts += len;
            } else {
                binaries += len;
            }
            at += header + len;
        }
        if spans.is_empty() {
            return None;
        }
        let mut text = String::with_capacity(texts);
        let mut binary = Vec::with_capacity(binaries);
        let mut taken = 0;
        for s in &mut spans {
            let end = (s.at + s.len) as usize;
            let payload = &self.buf[s.at as usize..end];
            if s.text {
                let Ok(t) = std::str::from_utf8(payload) else {
                    break;
                };
                s.at = text.len() as u32;
                text.push_str(t);
            } else {
                s.at = binary.len() as u32;
                binary.extend_from_slice(payload);
            }
            self.at = end;
            taken += 1;
        }
        spans.truncate(taken);
        (taken > 0).then(|| Gathered {
            turn: Turn::new(text, binary),
            spans,
        })
    }

    /// Takes what has arrived of the current data frame's payload; the
    /// message, if this finished it.
    fn take_payload(&mut self) -> Result<Option<FrameEvent>, ReadFailure> {
        let (Some(p), Some(m)) = (self.payload.as_mut(), self.message.as_mut()) else {
            self.payload = None;
            return Ok(None);
        };
        let k = p.left.min((self.end - self.at) as u64) as usize;
        let bytes = &self.buf[self.at..self.at + k];
        self.at += k;
        p.left -= k as u64;
        if m.dropping && m.compressed && k > 0 {
            // Dropped, but the server's next messages may refer to it:
            // through the inflater, into nothing.
            if let Some(i) = self.inflater.as_mut() {
                i.discard(bytes).map_err(|e| violation(1007, e))?;
            }
        }
        if !m.dropping && k > 0 {
            if !m.text || m.compressed {
                m.data.extend_from_slice(bytes);
            } else if !take_text(m, bytes) {
                if !self.rules.lenient {
                    return Err(violation(1007, "a text message is not valid UTF-8"));
                }
                m.dropping = true;
                m.data = Vec::new();
                m.string = String::new();
                self.pending = Some(FrameEvent::Skipped(Skip::NotUtf8));
            }
        }
        if p.left > 0 {
            return Ok(None);
        }
        let fin = p.fin;
        self.payload = None;
        if !fin {
            return Ok(None);
        }
        let Some(mut m) = self.message.take() else {
            return Ok(None);
        };
        if m.dropping {
            if m.compressed {
                if let Some(i) = self.inflater.as_mut() {
                    i.discard_end().map_err(|e| violation(1007, e))?;
                }
            }
            return Ok(None);
        }
        if m.compressed {
            let Some(i) = self.inflater.as_mut() else {
                return Ok(None);
            };
            match i.inflate(&m.data, self.rules.max_message) {
                Inflated::Done(data) => m.data = data,
                Inflated::Corrupt(e) => return Err(violation(1007, e)),
                Inflated::TooLarge(len) => {
                    if self.rules.close_on_too_large {
                        return Err(ReadFailure::TooLarge(format!(
                            "a compressed message that inflates to more than {} bytes \
                             (limits.max_message_size)",
                            self.rules.max_message
                        )));
                    }
                    return Ok(Some(FrameEvent::TooLarge {
                        len,
                        fragmented: m.fragmented,
                    }));
                }
            }
        }
        match finish(m) {
            Some(e) => Ok(Some(e)),
            None if self.rules.lenient => Ok(Some(FrameEvent::Skipped(Skip::NotUtf8))),
            None => Err(violation(1007, "a text message is not valid UTF-8")),
        }
    }

    /// Reads the next frame's header, if it has arrived, and decides on
    /// the frame: a control frame is handed out whole, a data frame's
    /// payload is taken next.
    fn header(&mut self) -> Result<Option<FrameEvent>, ReadFailure> {
        let avail = &self.buf[self.at..self.end];
        let Some(&first) = avail.first() else {
            return Ok(None);
        };
        let opcode = first & 0x0F;
        if reserved(opcode) && !self.rules.lenient {
            return Err(violation(
                1002,
                format!("a frame with opcode {opcode}, which RFC 6455 reserves and no extension was agreed for"),
            ));
        }
        // tungstenite's parser refuses a reserved opcode; with `lenient`
        // the frame is dropped, so its lengths are read as a binary
        // frame's.
        let mut copy = [0u8; 14];
        let parsed = if reserved(opcode) {
            let n = avail.len().min(copy.len());
            copy[..n].copy_from_slice(&avail[..n]);
            copy[0] = (first & 0xF0) | if opcode < 8 { 2 } else { 9 };
            let mut c = Cursor::new(&copy[..n]);
            FrameHeader::parse(&mut c).map(|h| h.map(|h| (h, c.position())))
        } else {
            let mut c = Cursor::new(avail);
            FrameHeader::parse(&mut c).map(|h| h.map(|h| (h, c.position())))
        };
        let (h, len, header_len) = match parsed {
            Ok(Some(((h, len), at))) => (h, len, at as usize),
            Ok(None) => return Ok(None),
            Err(e) => return Err(violation(1002, format!("a bad frame header: {e}"))),
        };
        if h.mask.is_some() {
            return Err(violation(1002, "the server masked a frame (RFC 6455 §5.1)"));
        }
        // RSV1 marks a compressed message: on its first frame only, and
        // only once permessage-deflate was agreed (RFC 7692 §6).
        let compressed = h.rsv1 && self.inflater.is_some() && matches!(opcode, 1 | 2);
        if (h.rsv1 && !compressed) || h.rsv2 || h.rsv3 {
            let what = if h.rsv1 && self.inflater.is_some() {
                "RSV1 on a frame other than a message's first (RFC 7692 §6)"
            } else {
                "a frame with RSV bits set, and no extension was agreed"
            };
            return Err(violation(1002, what));
        }
        if opcode >= 8 {
            return self.control(opcode, h.is_final, len, header_len);
        }
        self.at += header_len;
        self.data(h.opcode, opcode, h.is_final, len, compressed)?;
        Ok(None)
    }

    /// A control frame, taken whole once all of it has arrived.
    fn control(
        &mut self,
        opcode: u8,
        fin: bool,
        len: u64,
        header_len: usize,
    ) -> Result<Option<FrameEvent>, ReadFailure> {
        if !fin {
            return Err(violation(1002, "a fragmented control frame"));
        }
        if len > MAX_CONTROL {
            return Err(violation(
                1002,
                format!("a control frame of {len} bytes (at most 125)"),
            ));
        }
        let whole = header_len + len as usize;
        if self.end - self.at < whole {
            return Ok(None);
        }
        let payload = &self.buf[self.at + header_len..self.at + whole];
        self.at += whole;
        match opcode {
            9 => Ok(Some(FrameEvent::Ping(payload.to_vec()))),
            10 => Ok(Some(FrameEvent::Pong)),
            8 => close(payload).map(Some),
            _ => Ok(Some(FrameEvent::Skipped(Skip::Reserved(opcode)))),
        }
    }

    /// A data frame's header: starts or continues a message, and decides
    /// whether its payload is kept or dropped.
    fn data(
        &mut self,
        op: OpCode,
        opcode: u8,
        fin: bool,
        len: u64,
        compressed: bool,
    ) -> Result<(), ReadFailure> {
        let rules = self.rules;
        match (op, self.message.as_mut()) {
            (OpCode::Data(Data::Continue), None) => {
                return Err(violation(
                    1002,
                    "a continuation frame with no message to continue",
                ))
            }
            (OpCode::Data(Data::Continue), Some(m)) => m.fragmented = true,
            (_, Some(_)) => {
                return Err(violation(
                    1002,
                    "a new message began before the fragmented one ended",
                ))
            }
            (_, None) => {
                let skip = reserved(opcode);
                if skip {
                    self.pending = Some(FrameEvent::Skipped(Skip::Reserved(opcode)));
                }
                self.message = Some(Message {
                    text: op == OpCode::Data(Data::Text),
                    data: Vec::new(),
                    string: String::new(),
                    total: 0,
                    fragmented: !fin,
                    dropping: skip,
                    compressed,
                });
            }
        }
        let Some(m) = self.message.as_mut() else {
            return Ok(());
        };
        let total = m.total.saturating_add(len);
        if !m.dropping && (len > rules.max_frame || total > rules.max_message) {
            let what = if len > rules.max_frame {
                format!(
                    "a frame of {len} bytes (limits.max_frame_size: {})",
                    rules.max_frame
                )
            } else {
                format!(
                    "a message of at least {total} bytes (limits.max_message_size: {})",
                    rules.max_message
                )
            };
            if rules.close_on_too_large {
                return Err(ReadFailure::TooLarge(what));
            }
            m.dropping = true;
            m.data = Vec::new();
            m.string = String::new();
            self.pending = Some(FrameEvent::TooLarge {
                len: total,
                fragmented: m.fragmented,
            });
        }
        m.total = total;
        if !m.dropping {
            // Within the limits: room for the whole frame at once.
            if m.text && !m.compressed {
                m.string.reserve(len as usize);
            } else {
                m.data.reserve(len as usize);
            }
        }
        self.payload = Some(Payload { left: len, fin });
        Ok(())
    }
}

/// Appends uncompressed text to the message, checking it once as it is
/// copied (so bad text fails as it arrives, also within one frame, and a
/// whole message is never checked again). A code point the end of `bytes`
/// cuts waits in `m.data` for the rest. `false` once the bytes cannot be
/// UTF-8 whatever follows.
fn take_text(m: &mut Message, mut bytes: &[u8]) -> bool {
    if let Some(&lead) = m.data.first() {
        // Finish the code point the last bytes cut (its lead byte says
        // how long it is: 2 to 4 bytes).
        let width: usize = match lead {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        let n = width.saturating_sub(m.data.len()).min(bytes.len());
        m.data.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        match std::str::from_utf8(&m.data) {
            Ok(c) => m.string.push_str(c),
            Err(e) if e.error_len().is_none() => return true, // still cut
            Err(_) => return false,
        }
        m.data.clear();
    }
    // `from_utf8` for its fast path over ASCII (`utf8_chunks` goes byte by
    // byte: 64 KiB messages cost twice the CPU through it).
    match std::str::from_utf8(bytes) {
        Ok(t) => m.string.push_str(t),
        // Only the very end may be cut, and only inside a code point: the
        // part before it is checked again (a read that ends inside a
        // character), the cut bytes wait.
        Err(e) if e.error_len().is_none() => {
            let (whole, cut) = bytes.split_at(e.valid_up_to());
            match std::str::from_utf8(whole) {
                Ok(t) => m.string.push_str(t),
                Err(_) => return false,
            }
            m.data.extend_from_slice(cut);
        }
        Err(_) => return false,
    }
    true
}

/// A whole message, as the application receives it; `None` when it is
/// text and not UTF-8 (a message checked as it came can only end inside a
/// character).
fn finish(m: Message) -> Option<FrameEvent> {
    if !m.text {
        return Some(FrameEvent::Message(Frame::Binary(m.data).into()));
    }
    if !m.compressed {
        // Checked as it came: whole unless it ends inside a code point.
        return m
            .data
            .is_empty()
            .then(|| FrameEvent::Message(Frame::Text(m.string).into()));
    }
    String::from_utf8(m.data)
        .ok()
        .map(|t| FrameEvent::Message(Frame::Text(t).into()))
}

/// A whole data frame at the front of `wire` that can go into shared
/// storage: final, unmasked, no RSV bit, text or binary, at most `limit`
/// bytes, all of it here. Its header's length, its payload's, and whether
/// it is text. Anything else is `None`, for the frame-by-frame path.
fn small_frame(wire: &[u8], limit: u64) -> Option<(usize, usize, bool)> {
    let (&first, &second) = (wire.first()?, wire.get(1)?);
    let text = match first {
        0x81 => true,
        0x82 => false,
        _ => return None,
    };
    let (header, len) = match second {
        0..=125 => (2, u64::from(second)),
        126 => (
            4,
            u64::from(u16::from_be_bytes(wire.get(2..4)?.try_into().ok()?)),
        ),
        127 => (10, u64::from_be_bytes(wire.get(2..10)?.try_into().ok()?)),
        _ => return None, // masked
    };
    if len > limit || ((wire.len() - header) as u64) < len {
        return None;
    }
    Some((header, len as usize, text))
}

/// A close frame's payload: nothing, or a code RFC 6455 allows and a UTF-8
/// reason.
fn close(payload: &[u8]) -> Result<FrameEvent, ReadFailure> {
    let (code, reason) = match payload {
        [] => return Ok(FrameEvent::Close(None)),
        [_] => {
            return Err(violation(
                1002,
                "a close frame with a one-byte payload (a code takes two)",
            ))
        }
        [a, b, reason @ ..] => (u16::from_be_bytes([*a, *b]), reason),
    };
    if !CloseCode::from(code).is_allowed() {
        return Err(violation(
            1002,
            format!("the server closed with code {code}, which RFC 6455 does not allow"),
        ));
    }
    match std::str::from_utf8(reason) {
        Ok(r) => Ok(FrameEvent::Close(Some((code, r.to_owned())))),
        Err(_) => Err(violation(
            1007,
            "the server's close frame has a reason that is not valid UTF-8",
        )),
    }
}

/// A server's frame (unmasked, RSV clear), encoded by hand for the tests.
#[cfg(test)]
pub(crate) fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 1000;
    const TEXT: u8 = 1;
    const BINARY: u8 = 2;
    const CONT: u8 = 0;
    const CLOSE: u8 = 8;
    const PING: u8 = 9;
    const PONG: u8 = 10;

    fn rules(lenient: bool) -> Rules {
        Rules {
            max_frame: LIMIT,
            max_message: 4 * LIMIT,
            close_on_too_large: false,
            lenient,
            share: false,
        }
    }

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        server_frame(fin, opcode, payload)
    }

    fn text(s: &str) -> Vec<u8> {
        frame(true, TEXT, s.as_bytes())
    }

    fn msg(s: &str) -> Result<FrameEvent, String> {
        Ok(FrameEvent::Message(Frame::Text(s.to_owned()).into()))
    }

    /// Everything a reader makes of `wire`, arriving `cut` bytes at a time
    /// (`head` of it with the upgrade answer); an error ends the list, as
    /// it ends the connection; permessage-deflate agreed when `deflate`.
    fn read_as(
        wire: &[u8],
        rules: Rules,
        deflate: Option<Params>,
        head: usize,
        cut: usize,
    ) -> Vec<Result<FrameEvent, String>> {
        let mut r = Reader::new(rules);
        if let Some(p) = deflate {
            r.inflate_with(p);
        }
        let head = head.min(wire.len());
        r.push(&wire[..head]);
        let mut out = Vec::new();
        let mut at = head;
        loop {
            match r.next() {
                Some(Ok(FrameEvent::Run(g))) => {
                    out.extend(g.bodies().map(|b| Ok(FrameEvent::Message(b))));
                }
                Some(Ok(e)) => out.push(Ok(e)),
                Some(Err(ReadFailure::Violation { code, what })) => {
                    out.push(Err(format!("{code}: {what}")));
                    return out;
                }
                Some(Err(ReadFailure::TooLarge(what))) => {
                    out.push(Err(format!("1009: {what}")));
                    return out;
                }
                Some(Err(e)) => panic!("{e:?}"),
                None if at == wire.len() => return out,
                None => {
                    let space = r.space();
                    assert!(space.len() >= FIRST / 2, "room to read");
                    let k = cut.min(space.len()).min(wire.len() - at);
                    space[..k].copy_from_slice(&wire[at..at + k]);
                    r.filled(k);
                    at += k;
                }
            }
        }
    }

    /// The same at every cut in `cuts`, checked to agree; one list.
    fn read(wire: &[u8], rules: Rules) -> Vec<Result<FrameEvent, String>> {
        read_at_cuts(wire, rules, None)
    }

    fn read_at_cuts(
        wire: &[u8],
        rules: Rules,
        deflate: Option<Params>,
    ) -> Vec<Result<FrameEvent, String>> {
        let read_with = |wire: &[u8], rules, head, cut| read_as(wire, rules, deflate, head, cut);
        let whole = read_with(wire, rules, 0, usize::MAX);
        // The small messages of a read in shared storage: the same events.
        let share = Rules {
            share: !rules.share,
            ..rules
        };
        assert_eq!(
            read_with(wire, share, 0, usize::MAX),
            whole,
            "shared storage"
        );
        assert_eq!(
            read_with(wire, share, 0, 7),
            whole,
            "shared storage, reads of 7"
        );
        for (head, cut) in [
            (0, 1),
            (1, 2),
            (3, 3),
            (5, 7),
            (0, 13),
            (20, 100),
            (0, 4096),
        ] {
            assert_eq!(
                read_with(wire, rules, head, cut),
                whole,
                "head {head}, reads of {cut}"
            );
        }
        whole
    }

    fn failure(events: &[Result<FrameEvent, String>]) -> &str {
        match events.last() {
            Some(Err(e)) => e,
            other => panic!("no failure: {other:?}"),
        }
    }

    #[test]
    fn messages_come_whole_across_fragments_and_the_control_frames_between() {
        let mut wire = text("one");
        wire.extend(frame(false, TEXT, "tw".as_bytes()));
        wire.extend(frame(true, PING, b"p"));
        wire.extend(frame(false, CONT, b""));
        wire.extend(frame(true, PONG, b""));
        wire.extend(frame(true, CONT, "o €".as_bytes()));
        wire.extend(frame(false, BINARY, &[1, 2]));
        wire.extend(frame(true, CONT, &[3]));
        wire.extend(text(""));
        wire.extend(frame(true, CLOSE, &[0x03, 0xE8, b'b', b'y', b'e']));
        assert_eq!(
            read(&wire, rules(false)),
            vec![
                msg("one"),
                Ok(FrameEvent::Ping(b"p".to_vec())),
                Ok(FrameEvent::Pong),
                msg("two €"),
                Ok(FrameEvent::Message(Frame::Binary(vec![1, 2, 3]).into())),
                msg(""),
                Ok(FrameEvent::Close(Some((1000, "bye".into())))),
            ]
        );
    }

    #[test]
    fn text_that_is_not_utf8_fails_with_1007_as_soon_as_the_bad_byte_arrives() {
        // A large frame whose bad byte comes early: the failure comes
        // before the rest of the frame (Autobahn 6.4.3).
        let mut payload = "κόσμε".as_bytes().to_vec();
        payload.extend([0xF4, 0x90, 0x80, 0x80]); // past U+10FFFF
        payload.extend(vec![b'a'; 3000]);
        let mut wire = frame(true, TEXT, &payload[..]);
        let mut limits = rules(false);
        limits.max_frame = 1 << 20;
        limits.max_message = 1 << 20;
        let mut r = Reader::new(limits);
        r.push(&wire[..20]);
        match r.next() {
            Some(Err(ReadFailure::Violation { code: 1007, .. })) => {}
            other => panic!("{other:?}"),
        }
        // Whole, in fragments, and cut inside a character at the end.
        assert!(failure(&read(&wire, limits)).starts_with("1007"));
        wire = frame(false, TEXT, "ok".as_bytes());
        wire.extend(frame(true, CONT, &[0xCE]));
        assert!(failure(&read(&wire, limits)).starts_with("1007"));
        // A character split between two fragments is fine.
        let e = "€".as_bytes();
        let mut wire = frame(false, TEXT, &e[..1]);
        wire.extend(frame(true, CONT, &e[1..]));
        assert_eq!(read(&wire, limits), vec![msg("€")]);
    }

    #[test]
    fn a_character_cut_anywhere_waits_for_its_rest_and_is_checked_whole() {
        let mut limits = rules(false);
        limits.max_frame = 1 << 20;
        limits.max_message = 1 << 20;
        // A four-byte character, one byte per fragment, between others.
        let clef = "𝄞".as_bytes();
        let mut wire = frame(false, TEXT, b"a");
        for b in clef {
            wire.extend(frame(false, CONT, &[*b]));
        }
        wire.extend(frame(true, CONT, "b€".as_bytes()));
        assert_eq!(read(&wire, limits), vec![msg("a𝄞b€")]);
        // A long text cut by the reads at every byte (read() cuts it at
        // several sizes): the same message.
        let long = "κόσμε 𝄞 € ".repeat(500);
        assert_eq!(read(&text(&long), limits), vec![msg(&long)]);
        // A cut lead byte whose next byte does not continue it.
        let mut wire = frame(false, TEXT, &[b'a', 0xF0]);
        wire.extend(frame(true, CONT, b"A"));
        assert!(failure(&read(&wire, limits)).starts_with("1007"));
        let mut wire = frame(false, TEXT, &[0xE2, 0x82]);
        wire.extend(frame(true, CONT, &[0x41]));
        assert!(failure(&read(&wire, limits)).starts_with("1007"));
    }

    #[test]
    fn lenient_skips_a_text_message_that_is_not_utf8_and_carries_on() {
        let mut wire = text("before");
        wire.extend(frame(false, TEXT, b"a"));
        wire.extend(frame(true, PING, b""));
        wire.extend(frame(true, CONT, &[0xFF, b'b']));
        wire.extend(text("after"));
        assert_eq!(
            read(&wire, rules(true)),
            vec![
                msg("before"),
                Ok(FrameEvent::Ping(Vec::new())),
                Ok(FrameEvent::Skipped(Skip::NotUtf8)),
                msg("after"),
            ]
        );
        // Ending inside a character: skipped too, whole or in fragments.
        let mut wire = frame(true, TEXT, &[b'a', 0xE2, 0x82]);
        wire.extend(frame(false, TEXT, b"b"));
        wire.extend(frame(true, CONT, &[0xCE]));
        wire.extend(text("ok"));
        assert_eq!(
            read(&wire, rules(true)),
            vec![
                Ok(FrameEvent::Skipped(Skip::NotUtf8)),
                Ok(FrameEvent::Skipped(Skip::NotUtf8)),
                msg("ok")
            ]
        );
        // Reported as soon as the bad byte is there, not once more bytes
        // come.
        let mut r = Reader::new(rules(true));
        r.push(&frame(true, TEXT, &[b'a', 0xFF, b'b', b'c'])[..4]);
        assert!(matches!(
            r.next(),
            Some(Ok(FrameEvent::Skipped(Skip::NotUtf8)))
        ));
    }

    #[test]
    fn reserved_opcodes_fail_with_1002_or_are_skipped_when_lenient() {
        for opcode in [3, 7, 11, 15] {
            let mut wire = text("one");
            wire.extend(frame(true, opcode, b"?"));
            wire.extend(text("two"));
            let strict = read(&wire, rules(false));
            assert_eq!(strict[0], msg("one"));
            assert!(failure(&strict).starts_with("1002"), "{strict:?}");
            assert_eq!(
                read(&wire, rules(true)),
                vec![
                    msg("one"),
                    Ok(FrameEvent::Skipped(Skip::Reserved(opcode))),
                    msg("two")
                ]
            );
        }
        // A reserved data type in fragments goes with its continuations.
        let mut wire = frame(false, 4, b"a");
        wire.extend(frame(true, PING, b""));
        wire.extend(frame(true, CONT, b"b"));
        wire.extend(text("two"));
        assert_eq!(
            read(&wire, rules(true)),
            vec![
                Ok(FrameEvent::Skipped(Skip::Reserved(4))),
                Ok(FrameEvent::Ping(Vec::new())),
                msg("two")
            ]
        );
    }

    #[test]
    fn broken_framing_fails_with_1002() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(true, CONT, b"x"), "continuation"),
            (
                [frame(false, TEXT, b"a"), text("b")].concat(),
                "new message began",
            ),
            (frame(false, PING, b""), "fragmented control"),
            (frame(true, PING, &[0; 126]), "126 bytes"),
            ([vec![0xC1], text("x")[1..].to_vec()].concat(), "RSV"),
            (vec![0x81, 0x81, 1, 2, 3, 4, b'x'], "masked"),
            (frame(true, CLOSE, &[3]), "one-byte"),
        ];
        for (wire, what) in cases {
            for lenient in [false, true] {
                let got = read(&wire, rules(lenient));
                let f = failure(&got);
                assert!(f.starts_with("1002") && f.contains(what), "{what}: {f}");
            }
        }
    }

    #[test]
    fn a_close_is_read_with_its_code_checked() {
        assert_eq!(
            read(&frame(true, CLOSE, b""), rules(false)),
            vec![Ok(FrameEvent::Close(None))]
        );
        for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
            let wire = frame(true, CLOSE, &code.to_be_bytes());
            assert_eq!(
                read(&wire, rules(false)),
                vec![Ok(FrameEvent::Close(Some((code, String::new()))))]
            );
        }
        // A code RFC 6455 does not allow is named as it was on the wire.
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let wire = frame(true, CLOSE, &code.to_be_bytes());
            let got = read(&wire, rules(false));
            assert!(failure(&got).contains(&format!("code {code},")), "{got:?}");
        }
        let wire = frame(true, CLOSE, &[0x03, 0xE8, 0xFF]);
        assert!(failure(&read(&wire, rules(false))).starts_with("1007"));
    }

    #[test]
    fn a_message_over_a_limit_is_dropped_as_it_arrives_and_the_next_one_comes() {
        let big = "x".repeat(70_000); // a 64-bit length
        let mut wire = text("before");
        wire.extend(text(&big));
        wire.extend(frame(true, PING, b"p"));
        wire.extend(text(&"z".repeat(LIMIT as usize))); // at the limit: kept
                                                        // Grows over max_message_size through fragments within the frame
                                                        // limit: dropped from the fragment that makes it too large.
        wire.extend(frame(false, TEXT, &[b'a'; 900]));
        for _ in 0..3 {
            wire.extend(frame(false, CONT, &[b'a'; 900]));
        }
        wire.extend(frame(true, PING, b""));
        wire.extend(frame(true, CONT, &[b'a'; 900]));
        wire.extend(text("after"));
        let got = read(&wire, rules(false));
        assert_eq!(
            got,
            vec![
                msg("before"),
                Ok(FrameEvent::TooLarge {
                    len: 70_000,
                    fragmented: false
                }),
                Ok(FrameEvent::Ping(b"p".to_vec())),
                msg(&"z".repeat(LIMIT as usize)),
                Ok(FrameEvent::Ping(Vec::new())),
                Ok(FrameEvent::TooLarge {
                    len: 4500,
                    fragmented: true
                }),
                msg("after"),
            ]
        );
        // Nothing of the big one was held: the reader never had more than
        // its buffer.
        let mut r = Reader::new(rules(false));
        r.push(&text(&big)[..BUFFER / 2]);
        assert!(matches!(r.next(), Some(Ok(FrameEvent::TooLarge { .. }))));
        assert!(r.next().is_none());
        assert_eq!(r.waiting(), 0);
        assert!(r.message.as_ref().is_some_and(|m| m.data.capacity() == 0));
    }

    #[test]
    fn with_close_on_too_large_a_message_over_a_limit_fails_with_1009() {
        let mut r = rules(false);
        r.close_on_too_large = true;
        let wire = [text("ok"), text(&"x".repeat(2000))].concat();
        let got = read(&wire, r);
        assert_eq!(got[0], msg("ok"));
        assert!(failure(&got).contains("max_frame_size"));
        let mut wire = frame(false, BINARY, &[0; 1000]);
        for _ in 0..4 {
            wire.extend(frame(false, CONT, &[0; 1000]));
        }
        let got = read(&wire, r);
        assert!(failure(&got).contains("at least 5000 bytes"), "{got:?}");
    }

    #[test]
    fn the_read_buffer_starts_small_and_doubles_while_reads_fill_it() {
        let mut r = Reader::new(rules(false));
        assert_eq!(r.buf.capacity(), 0, "nothing before the first read");
        // A read that does not fill it: it stays as it is.
        let wire = text("idle");
        r.space()[..wire.len()].copy_from_slice(&wire);
        r.filled(wire.len());
        assert!(matches!(r.next(), Some(Ok(FrameEvent::Message(_)))));
        assert!(r.next().is_none());
        assert_eq!(r.space().len(), FIRST);
        // Reads that fill it: twice the room each time, up to BUFFER.
        let big = text(&"x".repeat(LIMIT as usize));
        let mut sizes = Vec::new();
        for _ in 0..8 {
            let space = r.space();
            sizes.push(space.len());
            let n = space.len();
            // Whole frames where they fit, then the start of one: all of
            // it is taken or waits as a cut header (the next read's start).
            let mut wire = Vec::new();
            while wire.len() < n {
                wire.extend(&big);
            }
            space.copy_from_slice(&wire[..n]);
            r.filled(n);
            while let Some(e) = r.next() {
                assert!(e.is_ok());
            }
            // Finish the frame that was cut, so the next read starts clean.
            r.message = None;
            r.payload = None;
            r.at = r.end;
        }
        assert_eq!(
            sizes,
            [
                FIRST,
                2 * FIRST,
                4 * FIRST,
                8 * FIRST,
                BUFFER,
                BUFFER,
                BUFFER,
                BUFFER
            ]
        );
    }

    #[test]
    fn a_header_cut_at_the_end_of_the_buffer_waits_for_the_rest() {
        let mut r = Reader::new(rules(false));
        let wire = [text("a"), frame(true, PING, &[7; 125])].concat();
        r.push(&wire[..5]);
        assert!(matches!(r.next(), Some(Ok(FrameEvent::Message(b))) if b.text() == Some("a")));
        assert!(r.next().is_none());
        assert_eq!(r.waiting(), 2);
        let rest = &wire[5..];
        r.space()[..rest.len()].copy_from_slice(rest);
        r.filled(rest.len());
        assert!(matches!(r.next(), Some(Ok(FrameEvent::Ping(p))) if p == [7; 125]));
        assert!(r.next().is_none());
    }

    #[cfg(feature = "compression")]
    mod deflated {
        use super::*;
        use flate2::{Compress, Compression, FlushCompress};

        fn agreed(fresh: bool) -> Option<Params> {
            Some(Params {
                server_no_context_takeover: fresh,
                client_max_window_bits: 15,
            })
        }

        /// A server's compressor: each message deflated, tail stripped;
        /// `fresh`: each on its own (server_no_context_takeover).
        struct Server(Compress, bool);

        impl Server {
            fn new() -> Server {
                Server::with(false)
            }
            fn with(fresh: bool) -> Server {
                Server(Compress::new(Compression::default(), false), fresh)
            }
            fn deflate(&mut self, data: &[u8]) -> Vec<u8> {
                if self.1 {
                    self.0.reset();
                }
                let mut out = Vec::with_capacity(data.len() + 64);
                self.0
                    .compress_vec(data, &mut out, FlushCompress::Sync)
                    .unwrap();
                out.truncate(out.len() - 4);
                out
            }
        }

        /// A frame with RSV1 set.
        fn rsv1(mut f: Vec<u8>) -> Vec<u8> {
            f[0] |= 0x40;
            f
        }

        #[test]
        fn compressed_messages_inflate_whole_or_in_fragments() {
            let mut z = Server::new();
            let one = "a compressed message, compressed message, compressed message";
            let mut wire = rsv1(frame(true, TEXT, &z.deflate(one.as_bytes())));
            let two = z.deflate("two in fragments, two in fragments".as_bytes());
            wire.extend(rsv1(frame(false, TEXT, &two[..5])));
            wire.extend(frame(true, PING, b"p"));
            wire.extend(frame(true, CONT, &two[5..]));
            wire.extend(text("plain, between"));
            let bin = z.deflate(&[7u8; 300]);
            wire.extend(rsv1(frame(true, BINARY, &bin)));
            assert_eq!(
                read_at_cuts(&wire, rules(false), agreed(false)),
                vec![
                    msg(one),
                    Ok(FrameEvent::Ping(b"p".to_vec())),
                    msg("two in fragments, two in fragments"),
                    msg("plain, between"),
                    Ok(FrameEvent::Message(Frame::Binary(vec![7u8; 300]).into())),
                ]
            );
        }

        #[test]
        fn rsv1_where_it_does_not_belong_fails_with_1002() {
            let mut z = Server::new();
            let data = z.deflate(b"0123456789 0123456789 0123456789");
            let mut cont = frame(false, TEXT, &data[..3]);
            cont.extend(rsv1(frame(true, CONT, &data[3..])));
            let ping = rsv1(frame(true, PING, b""));
            for wire in [cont, ping] {
                assert!(
                    failure(&read_at_cuts(&wire, rules(false), agreed(false))).starts_with("1002")
                );
            }
            // Not agreed: RSV1 is a violation whatever follows.
            let wire = rsv1(frame(true, TEXT, &data));
            assert!(failure(&read(&wire, rules(false))).contains("RSV"));
        }

        #[test]
        fn bad_compressed_data_or_text_fails_with_1007() {
            let wire = rsv1(frame(true, TEXT, &[0xff; 20]));
            assert!(failure(&read_at_cuts(&wire, rules(false), agreed(false))).starts_with("1007"));
            let mut z = Server::new();
            let wire = rsv1(frame(true, TEXT, &z.deflate(&[0xc3, 0x28, 0x41, 0x41])));
            assert!(failure(&read_at_cuts(&wire, rules(false), agreed(false))).starts_with("1007"));
        }

        #[test]
        fn a_message_that_inflates_over_the_limit_is_dropped_and_the_next_inflates() {
            for fresh in [false, true] {
                let mut z = Server::with(fresh);
                let max = rules(false).max_message as usize;
                // Small on the wire (under every wire limit), large inflated;
                // then one over the wire limit, dropped as it arrives.
                let mut wire = rsv1(frame(true, BINARY, &z.deflate(&vec![1u8; 3 * max])));
                let mut x: u32 = 1;
                let noise: Vec<u8> = (0..6000)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (x >> 16) as u8
                    })
                    .collect();
                let big = z.deflate(&noise);
                assert!(big.len() as u64 > LIMIT, "over the frame limit on the wire");
                wire.extend(rsv1(frame(true, BINARY, &big)));
                wire.extend(rsv1(frame(true, TEXT, &z.deflate(b"and then this one"))));
                let events = read_at_cuts(&wire, rules(false), agreed(fresh));
                assert!(
                    matches!(events[0], Ok(FrameEvent::TooLarge { len, .. }) if len > max as u64),
                    "{events:?}"
                );
                assert!(
                    matches!(events[1], Ok(FrameEvent::TooLarge { .. })),
                    "{events:?}"
                );
                assert_eq!(events[2], msg("and then this one"), "fresh {fresh}");
            }
        }
    }
}
