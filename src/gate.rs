//! The inbound gate: sits between the socket and tungstenite, reads the
//! server's frame headers as they pass, and drops a message whose frame is
//! larger than `Limits::max_frame_size` as its bytes arrive, so it is never held.
//!
//! Without it, tungstenite refuses such a frame by closing the connection
//! (1009), and every message the server had already sent behind it is lost
//! with the connection; a server that sends the same message again on
//! every connect (a snapshot, a redelivered message) keeps the client in a
//! loop of reconnects in which nothing after it ever arrives. With it, the
//! oversized message is counted and reported, and the connection carries
//! on with the next frame.
//!
//! Only a message whose first frame is too large is dropped here. One that
//! grows too large over many small fragments is still refused by
//! tungstenite (1009): by the time that is known, its first fragments have
//! been passed on, and a message cannot be taken back half way.
//!
//! With `lenient(true)`, frames of a type RFC 6455 reserves for
//! extensions (none is agreed: heartline offers none) are dropped the same
//! way and reported as malformed; by default they pass, and tungstenite's
//! error fails the connection. It also notes the code of a close frame as
//! it was on the wire (tungstenite turns a forbidden one into 1002).
//!
//! It also notes which messages it passed on came in fragments, so that
//! the io glue can tell a text message that is not UTF-8 and came whole
//! (skipped, the connection carries on) from one in fragments (which
//! tungstenite would hand on cut short: the connection fails).
//!
//! [`Gate`] is the pure part: bytes in, the bytes tungstenite may see out,
//! whatever the reads' boundaries. [`Gated`] puts it on a stream.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// The largest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Reads smaller than this go through a scratch buffer, so a held header
/// and at least some new bytes always fit.
const SMALL_READ: usize = 64;

/// A message the gate dropped: the last one, and how many since the last
/// report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Messages dropped since the last report.
    pub count: u64,
    /// The last one's first frame length, as its header gave it.
    pub len: u64,
    /// Whether the last one was fragmented: then `len` is its first frame's.
    pub fragmented: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Between frames: the next bytes are a header.
    Header,
    /// Inside a frame that passes: this many payload bytes to go.
    Pass(u64),
    /// Inside a close frame that passes: this many payload bytes to go,
    /// of which the first two (the code) are noted.
    PassClose(u64),
    /// Inside a frame that is dropped: this many payload bytes to go.
    Drop(u64),
}

/// The frame reader's state, between reads.
pub(crate) struct Gate {
    limit: u64,
    part: Part,
    /// A header that a read cut short, held until the rest arrives.
    head: [u8; MAX_HEADER],
    head_len: usize,
    /// Inside a fragmented message whose first frame was dropped: its
    /// continuation frames go too.
    dropping_message: bool,
    skipped: Option<Skipped>,
    /// Frames of a type RFC 6455 reserves (dropped since the last report,
    /// and the last one's opcode).
    unknown: Option<(u64, u8)>,
    /// Payload bytes dropped, ever: the link carried them.
    dropped_bytes: u64,
    /// Data messages passed on so far, counted by their first frames.
    passed: u64,
    /// Which of them (their numbers in `passed`) came in fragments, for
    /// those tungstenite may not have read yet.
    fragmented: VecDeque<u64>,
    /// For each close frame passed on and not yet read: how many data
    /// messages came before it. (Its reason, not UTF-8, fails with the same
    /// error as a text message.)
    closes: VecDeque<u64>,
    /// Frames of a reserved type pass to tungstenite, which fails the
    /// connection (strict, the default), or are dropped here (lenient).
    lenient: bool,
    /// The code of the last close frame passed on, as it was on the wire
    /// (tungstenite turns a code RFC 6455 does not allow into 1002), and
    /// how many of its two bytes have been seen.
    close_code: ([u8; 2], usize),
}

/// A frame header, parsed.
struct Header {
    len: usize,
    fin: bool,
    opcode: u8,
    payload: u64,
}

fn parse(b: &[u8]) -> Option<Header> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (ext, payload) = match b1 & 0x7F {
        126 => (2, u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(b.get(2..10)?);
            (8, u64::from_be_bytes(n))
        }
        n => (0, u64::from(n)),
    };
    let len = 2 + ext + if masked { 4 } else { 0 };
    (b.len() >= len).then_some(Header {
        len,
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        payload,
    })
}

impl Gate {
    /// A gate that drops messages whose first frame is over `limit` bytes.
    pub(crate) fn new(limit: usize, lenient: bool) -> Gate {
        Gate {
            lenient,
            close_code: ([0; 2], 0),
            limit: limit as u64,
            part: Part::Header,
            head: [0; MAX_HEADER],
            head_len: 0,
            dropping_message: false,
            skipped: None,
            unknown: None,
            dropped_bytes: 0,
            passed: 0,
            fragmented: VecDeque::new(),
            closes: VecDeque::new(),
        }
    }

    /// Filters `buf` in place: what tungstenite may see is moved to its
    /// front, and its length returned. A header cut short at the end is
    /// held (see [`Gate::held`]) and must be put back in front of the next
    /// bytes.
    pub(crate) fn filter(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len();
        let (mut r, mut w) = (0, 0);
        while r < n {
            let avail = (n - r) as u64;
            match self.part {
                Part::Pass(left) | Part::PassClose(left) => {
                    let k = left.min(avail);
                    let ku = k as usize;
                    if let Part::PassClose(_) = self.part {
                        for &b in &buf[r..r + ku] {
                            let (code, seen) = &mut self.close_code;
                            if *seen < 2 {
                                code[*seen] = b;
                                *seen += 1;
                            }
                        }
                    }
                    // Nothing dropped yet in this read: the bytes are in place.
                    if w != r {
                        buf.copy_within(r..r + ku, w);
                    }
                    r += ku;
                    w += ku;
                    self.part = match self.part {
                        Part::PassClose(_) => Part::PassClose(left - k),
                        _ => Part::Pass(left - k),
                    };
                }
                Part::Drop(left) => {
                    let k = left.min(avail);
                    r += k as usize;
                    self.dropped_bytes += k;
                    self.part = Part::Drop(left - k);
                }
                Part::Header => match parse(&buf[r..]) {
                    None => {
                        let rest = n - r;
                        self.head[..rest].copy_from_slice(&buf[r..]);
                        self.head_len = rest;
                        r = n;
                    }
                    Some(h) => {
                        if self.drops(&h) {
                            self.part = Part::Drop(h.payload);
                        } else {
                            if w != r {
                                buf.copy_within(r..r + h.len, w);
                            }
                            w += h.len;
                            self.part = if h.opcode == 8 {
                                self.close_code = ([0; 2], 0);
                                Part::PassClose(h.payload)
                            } else {
                                Part::Pass(h.payload)
                            };
                        }
                        r += h.len;
                    }
                },
            }
            if matches!(
                self.part,
                Part::Pass(0) | Part::PassClose(0) | Part::Drop(0)
            ) {
                self.part = Part::Header;
            }
        }
        w
    }

    /// Whether the frame with this header is dropped; notes a dropped
    /// message.
    fn drops(&mut self, h: &Header) -> bool {
        match h.opcode {
            // A message's first frame.
            1 | 2 => {
                let drop = h.payload > self.limit;
                self.dropping_message = drop && !h.fin;
                if !drop {
                    self.passed += 1;
                    if !h.fin {
                        self.fragmented.push_back(self.passed);
                    }
                }
                if drop {
                    let count = self.skipped.map_or(0, |s| s.count) + 1;
                    self.skipped = Some(Skipped {
                        count,
                        len: h.payload,
                        fragmented: !h.fin,
                    });
                }
                drop
            }
            // A type no extension was agreed for (a data type, with the
            // continuations of its message, or a control type): nothing
            // the library could hand on, and the frames around it are
            // intact.
            3..=7 | 11..=15 if self.lenient => {
                if h.opcode < 8 {
                    self.dropping_message = !h.fin;
                }
                let count = self.unknown.map_or(0, |(n, _)| n) + 1;
                self.unknown = Some((count, h.opcode));
                true
            }
            // A continuation of a dropped message.
            0 if self.dropping_message => {
                self.dropping_message = !h.fin;
                true
            }
            8 => {
                self.closes.push_back(self.passed);
                false
            }
            // Everything else is tungstenite's to judge, control frames
            // (which may come between fragments) included.
            _ => false,
        }
    }

    /// Whether data message number `n` (counting from 1, the messages
    /// passed on) came in fragments. Forgets the messages before it.
    pub(crate) fn fragmented(&mut self, n: u64) -> bool {
        self.read_up_to(n.saturating_sub(1));
        self.fragmented.front() == Some(&n)
    }

    /// Tungstenite has read the first `n` data messages passed on: what
    /// was kept about them goes.
    pub(crate) fn read_up_to(&mut self, n: u64) {
        while self.fragmented.front().is_some_and(|&f| f <= n) {
            self.fragmented.pop_front();
        }
    }

    /// Whether the next frame tungstenite reads, after `read` data
    /// messages, is a close frame rather than a data message.
    pub(crate) fn close_next(&self, read: u64) -> bool {
        self.closes.front() == Some(&read)
    }

    /// Tungstenite has read the oldest close frame passed on.
    pub(crate) fn close_read(&mut self) {
        self.closes.pop_front();
    }

    /// The code of the last close frame passed on, as it was on the wire
    /// (`None`: it had no code).
    pub(crate) fn close_code(&self) -> Option<u16> {
        let (code, seen) = self.close_code;
        (seen == 2).then(|| u16::from_be_bytes(code))
    }

    /// The header bytes held from the last read.
    pub(crate) fn held(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    /// The messages dropped since the last call.
    pub(crate) fn take_skipped(&mut self) -> Option<Skipped> {
        self.skipped.take()
    }

    /// The frames of a reserved type dropped since the last call, and the
    /// last one's opcode.
    pub(crate) fn take_unknown(&mut self) -> Option<(u64, u8)> {
        self.unknown.take()
    }

    /// Payload bytes dropped so far.
    pub(crate) fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }
}

/// A stream with the gate on its reads; writes pass straight through.
pub(crate) struct Gated<S> {
    inner: S,
    gate: Gate,
    /// Filtered bytes that did not fit a small read, handed out first.
    backlog: [u8; SMALL_READ],
    backlog_at: usize,
    backlog_len: usize,
}

impl<S> Gated<S> {
    /// Puts the gate on `inner`. `leftover` (bytes read past the upgrade
    /// answer, the start of the frame stream) is filtered in place.
    pub(crate) fn new(inner: S, limit: usize, lenient: bool, leftover: &mut Vec<u8>) -> Gated<S> {
        let mut gate = Gate::new(limit, lenient);
        let kept = gate.filter(leftover);
        leftover.truncate(kept);
        Gated {
            inner,
            gate,
            backlog: [0; SMALL_READ],
            backlog_at: 0,
            backlog_len: 0,
        }
    }

    /// The stream under the gate.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream under the gate, to write to it directly.
    #[cfg(test)]
    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Whether the gate has dropped a message not yet reported.
    pub(crate) fn has_skipped(&self) -> bool {
        self.gate.skipped.is_some() || self.gate.unknown.is_some()
    }

    /// The gate, to look at.
    pub(crate) fn gate_ref(&self) -> &Gate {
        &self.gate
    }

    /// The gate.
    pub(crate) fn gate(&mut self) -> &mut Gate {
        &mut self.gate
    }
}

impl<S: Read> Gated<S> {
    /// One read of the stream into `to`, behind the held header; the
    /// filtered length (0 at the stream's end).
    fn fill(&mut self, to: &mut [u8]) -> io::Result<Option<usize>> {
        let h = self.gate.head_len;
        to[..h].copy_from_slice(self.gate.held());
        let n = self.inner.read(&mut to[h..])?;
        if n == 0 {
            // The stream ended inside a header: tungstenite sees the end.
            return Ok(None);
        }
        self.gate.head_len = 0;
        Ok(Some(self.gate.filter(&mut to[..h + n])))
    }
}

impl<S: Read> Read for Gated<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.backlog_len > 0 {
            let k = self.backlog_len.min(buf.len());
            let at = self.backlog_at;
            buf[..k].copy_from_slice(&self.backlog[at..at + k]);
            self.backlog_at += k;
            self.backlog_len -= k;
            return Ok(k);
        }
        // A dropped frame's bytes are read and thrown away until there is
        // something to hand on, the stream would block, or it ends.
        loop {
            if buf.len() >= SMALL_READ {
                match self.fill(buf)? {
                    None => return Ok(0),
                    Some(0) => continue,
                    Some(kept) => return Ok(kept),
                }
            }
            let mut scratch = [0u8; SMALL_READ];
            match self.fill(&mut scratch)? {
                None => return Ok(0),
                Some(0) => continue,
                Some(kept) => {
                    let k = kept.min(buf.len());
                    buf[..k].copy_from_slice(&scratch[..k]);
                    self.backlog[..kept - k].copy_from_slice(&scratch[k..kept]);
                    self.backlog_at = 0;
                    self.backlog_len = kept - k;
                    return Ok(k);
                }
            }
        }
    }
}

impl<S: Write> Write for Gated<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A server's frame (unmasked), encoded by hand for the tests.
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
    use std::io::Cursor;
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

    const LIMIT: usize = 1000;

    const TEXT: u8 = 1;
    const BINARY: u8 = 2;
    const CONTINUATION: u8 = 0;
    const PING: u8 = 9;

    fn frame(fin: bool, opcode: u8, payload: Vec<u8>) -> Vec<u8> {
        server_frame(fin, opcode, &payload)
    }

    fn text(s: &str) -> Vec<u8> {
        frame(true, TEXT, s.as_bytes().to_vec())
    }

    /// Reads that stop at every `cut` bytes, and sometimes would block.
    struct Chunks {
        data: Vec<u8>,
        at: usize,
        cut: usize,
        blocked: bool,
    }

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Every other read would block: a nonblocking socket between
            // its packets.
            self.blocked = !self.blocked;
            if self.blocked && self.at < self.data.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let k = self.cut.min(buf.len()).min(self.data.len() - self.at);
            buf[..k].copy_from_slice(&self.data[self.at..self.at + k]);
            self.at += k;
            Ok(k)
        }
    }

    impl Write for Chunks {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What a client reads from `wire` through the gate, in reads of `cut`
    /// bytes into buffers of `buf` bytes, `head` of it arriving with the
    /// upgrade answer.
    fn through(wire: &[u8], head: usize, cut: usize, buf: usize) -> (Vec<u8>, Gate) {
        let head = head.min(wire.len());
        let mut leftover = wire[..head].to_vec();
        let chunks = Chunks {
            data: wire[head..].to_vec(),
            at: 0,
            cut,
            blocked: false,
        };
        let mut g = Gated::new(chunks, LIMIT, true, &mut leftover);
        let mut out = leftover;
        let mut b = vec![0u8; buf];
        loop {
            match g.read(&mut b) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        (out, g.gate)
    }

    /// The messages tungstenite reads from these bytes.
    fn messages(bytes: Vec<u8>) -> Vec<Message> {
        let mut ws = WebSocket::from_raw_socket(Cursor::new(bytes), Role::Client, None);
        std::iter::from_fn(|| ws.read().ok()).collect()
    }

    #[test]
    fn an_oversized_message_is_dropped_whatever_the_reads_boundaries() {
        let big = "x".repeat(70_000); // a 64-bit length
        let mid = "y".repeat(LIMIT + 1); // a 16-bit length
        let mut wire = text("before");
        wire.extend(text(&big));
        wire.extend(frame(true, PING, b"p".to_vec()));
        wire.extend(text(&mid));
        wire.extend(text(&"z".repeat(LIMIT))); // at the limit: kept
        wire.extend(text("after"));
        let expected = {
            let mut w = text("before");
            w.extend(frame(true, PING, b"p".to_vec()));
            w.extend(text(&"z".repeat(LIMIT)));
            w.extend(text("after"));
            w
        };
        for (head, cut, buf) in [
            (0, 1, 1),
            (1, 1, 7),
            (3, 2, 64),
            (5, 3, 13),
            (9, 7, 4096),
            (20, 13, 100),
            (0, 4096, 4096),
            (70_100, 1 << 20, 1 << 17),
        ] {
            let (out, mut gate) = through(&wire, head, cut, buf);
            assert_eq!(out, expected, "head {head}, reads of {cut} into {buf}");
            let s = gate.take_skipped().expect("a report");
            assert_eq!(s.count, 2);
            assert_eq!((s.len, s.fragmented), (mid.len() as u64, false));
            assert_eq!(gate.dropped_bytes(), (big.len() + mid.len()) as u64);
            assert_eq!(gate.take_skipped(), None, "reported once");
        }
        let got = messages(expected);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], Message::text("after"));
    }

    #[test]
    fn a_fragmented_message_goes_whole_when_its_first_frame_is_too_large() {
        let (bin, cont, ping) = (BINARY, CONTINUATION, PING);
        let mut wire = frame(false, bin, vec![1; LIMIT + 5]);
        wire.extend(frame(false, cont, vec![2; 10])); // small, but its message is dropped
        wire.extend(frame(true, ping, vec![]));
        wire.extend(frame(true, cont, vec![3; 3 * LIMIT]));
        // A fragmented message with small frames passes (tungstenite
        // judges its total).
        wire.extend(frame(false, bin, vec![4; 10]));
        wire.extend(frame(true, cont, vec![5; 10]));
        for cut in [1, 5, 64, 8192] {
            let (out, mut gate) = through(&wire, 0, cut, 256);
            let got = messages(out);
            assert_eq!(
                got,
                vec![
                    Message::Ping(Vec::new().into()),
                    Message::binary([vec![4; 10], vec![5; 10]].concat())
                ],
                "reads of {cut}"
            );
            let s = gate.take_skipped().expect("a report");
            assert_eq!(
                (s.count, s.len, s.fragmented),
                (1, (LIMIT + 5) as u64, true)
            );
        }
    }

    #[test]
    fn frames_of_a_reserved_type_are_dropped_with_their_continuations() {
        let mut wire = text("one");
        wire.extend(frame(true, 3, b"?".to_vec()));
        wire.extend(frame(false, 4, b"a".to_vec()));
        wire.extend(frame(true, PING, Vec::new()));
        wire.extend(frame(true, CONTINUATION, b"b".to_vec()));
        wire.extend(frame(true, 11, Vec::new()));
        wire.extend(text("two"));
        let mut expected = text("one");
        expected.extend(frame(true, PING, Vec::new()));
        expected.extend(text("two"));
        for cut in [1, 3, 64] {
            let (out, mut gate) = through(&wire, 0, cut, 100);
            assert_eq!(out, expected, "reads of {cut}");
            assert_eq!(gate.take_unknown(), Some((3, 11)));
            assert_eq!(gate.take_skipped(), None);
        }
    }

    #[test]
    fn it_knows_which_messages_came_in_fragments() {
        let mut wire = text("one");
        wire.extend(frame(false, TEXT, b"tw".to_vec()));
        wire.extend(frame(true, PING, Vec::new()));
        wire.extend(frame(true, CONTINUATION, b"o".to_vec()));
        wire.extend(text(&"x".repeat(LIMIT + 1))); // dropped: not counted
        wire.extend(frame(false, BINARY, vec![1]));
        wire.extend(frame(true, CONTINUATION, vec![2]));
        wire.extend(text("four"));
        let (_, mut gate) = through(&wire, 0, 7, 64);
        assert!(!gate.fragmented(1));
        assert!(gate.fragmented(2));
        assert!(gate.fragmented(3));
        assert!(!gate.fragmented(4));
        gate.read_up_to(4);
        assert!(gate.fragmented.is_empty());
    }

    #[test]
    fn frames_within_the_limit_pass_unchanged() {
        let mut wire = Vec::new();
        for i in 0..300 {
            wire.extend(text(&"m".repeat(i % 150)));
        }
        for cut in [1, 2, 3, 100, 1 << 16] {
            let (out, mut gate) = through(&wire, 17, cut, 1 << 12);
            assert_eq!(out, wire, "reads of {cut}");
            assert_eq!(gate.take_skipped(), None);
        }
    }

    #[test]
    fn the_end_of_the_stream_inside_a_dropped_frame_or_a_header_is_the_end() {
        let mut wire = text("ok");
        wire.extend(text(&"x".repeat(5000)));
        wire.truncate(wire.len() - 100);
        let (out, _) = through(&wire, 0, 333, 512);
        assert_eq!(out, text("ok"));
        let mut wire = text("ok");
        wire.extend(&text(&"x".repeat(5000))[..3]);
        let (out, _) = through(&wire, 0, 1, 512);
        assert_eq!(out, text("ok"));
    }
}
