//! permessage-deflate (RFC 7692): what heartline offers, what the server's
//! answer agrees, and each direction's compression state. Pure: bytes in,
//! bytes out; the frame reader inflates, the frame writer deflates.
//!
//! heartline offers `permessage-deflate; client_max_window_bits;
//! client_no_context_takeover`: the server may choose the window the
//! client compresses with, and the client compresses every message on its
//! own (its messages are small; the compressor's window is not kept
//! between them, so neither is its meaning). The server's messages keep
//! their context unless the server says `server_no_context_takeover`.

/// What the server's answer agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    /// The server compresses every message on its own.
    pub server_no_context_takeover: bool,
    /// The window (bits) the client may compress with.
    pub client_max_window_bits: u8,
}

/// The offer, as the `Sec-WebSocket-Extensions` header's value.
pub(crate) const OFFER: &str =
    "permessage-deflate; client_max_window_bits; client_no_context_takeover";

/// Reads the server's `Sec-WebSocket-Extensions` answer to [`OFFER`].
///
/// # Errors
/// What is wrong with it (RFC 7692 §7: an answer the client cannot accept
/// fails the connection): another extension, more than one, a parameter
/// that is unknown, repeated or out of range.
pub(crate) fn agreed(answer: &str) -> Result<Params, String> {
    let mut extensions = answer.split(',').map(str::trim).filter(|e| !e.is_empty());
    let (Some(ext), None) = (extensions.next(), extensions.next()) else {
        return Err(format!("agreed more than one extension ({answer:?})"));
    };
    let mut parts = ext.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return Err(format!(
            "agreed the extension {name:?}, which was not offered"
        ));
    }
    let mut p = Params {
        server_no_context_takeover: false,
        client_max_window_bits: 15,
    };
    let mut seen: Vec<String> = Vec::new();
    for param in parts.filter(|s| !s.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let key = key.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(format!("repeated the permessage-deflate parameter {key}"));
        }
        let bits = |v: Option<&str>| -> Result<u8, String> {
            v.and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b))
                .ok_or_else(|| format!("gave {key} the value {v:?} (8 to 15 allowed)"))
        };
        match (key.as_str(), value) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => {} // we reset anyway
            // Any window the server compresses with inflates with ours (15).
            ("server_max_window_bits", v) => {
                bits(v)?;
            }
            ("client_max_window_bits", v) => p.client_max_window_bits = bits(v)?,
            _ => {
                return Err(format!(
                    "answered permessage-deflate with the parameter {param:?}, which RFC 7692 \
                     does not allow there"
                ))
            }
        }
        seen.push(key);
    }
    Ok(p)
}

/// The four bytes every message's compressed data ends with, which the
/// sender strips and the receiver puts back (RFC 7692 §7.2.1).
#[cfg_attr(not(feature = "compression"), allow(dead_code))]
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What inflating a message gave.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "compression"), allow(dead_code))]
pub(crate) enum Inflated {
    /// The message.
    Done(Vec<u8>),
    /// It inflates to more than the limit: at least this many bytes.
    /// Nothing of it is kept.
    TooLarge(u64),
    /// Not deflate data.
    Corrupt(String),
}

#[cfg(feature = "compression")]
pub(crate) use with_zlib::{Deflater, Inflater};
#[cfg(not(feature = "compression"))]
pub(crate) use without::{Deflater, Inflater};

#[cfg(feature = "compression")]
mod with_zlib {
    use super::{Inflated, Params, TAIL};
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

    /// Output is grown this much at a time: a message inflates into at
    /// most its limit plus this.
    const STEP: usize = 16 * 1024;

    /// The server's messages, inflated: a 32 KiB window and zlib's state
    /// (about 7 KiB), for the connection's life.
    pub(crate) struct Inflater {
        z: Decompress,
        /// `server_no_context_takeover`: every message starts afresh.
        fresh: bool,
    }

    impl Inflater {
        pub(crate) fn new(p: Params) -> Option<Inflater> {
            Some(Inflater {
                // The largest window inflates whatever window the server
                // compressed with.
                z: Decompress::new_with_window_bits(false, 15),
                fresh: p.server_no_context_takeover,
            })
        }

        /// Inflates one message's data (its frames' payloads together),
        /// into at most `limit` bytes. A message over the limit is still
        /// inflated to its end when the context is kept (the next messages
        /// refer to it), into a scratch buffer of 16 KiB that is reused.
        pub(crate) fn inflate(&mut self, data: &[u8], limit: u64) -> Inflated {
            if self.fresh {
                self.z.reset(false);
            }
            // Over the limit means more than `limit` bytes come out.
            let cap = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            // JSON inflates about sixfold: a first guess, then doubling.
            let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(6).clamp(64, cap));
            let mut dropped: Option<u64> = None;
            for input in [data, &TAIL[..]] {
                let mut at = 0;
                loop {
                    if out.len() == out.capacity() {
                        if dropped.is_none() && out.len() < cap {
                            let room = (cap - out.len()).min(out.len().max(64));
                            out.reserve_exact(room);
                        } else if let Some(n) = dropped.as_mut() {
                            *n += out.len() as u64;
                            out.clear();
                        } else if self.fresh {
                            return Inflated::TooLarge(out.len() as u64);
                        } else {
                            dropped = Some(out.len() as u64);
                            out = Vec::with_capacity(STEP);
                        }
                    }
                    let (was_in, was_out) = (self.z.total_in(), self.z.total_out());
                    let status =
                        self.z
                            .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync);
                    at += (self.z.total_in() - was_in) as usize;
                    let moved = self.z.total_in() != was_in || self.z.total_out() != was_out;
                    match status {
                        Err(e) => return Inflated::Corrupt(format!("bad deflate data: {e}")),
                        // A block with BFINAL: the stream ends; what follows
                        // (if anything) starts a new one.
                        Ok(Status::StreamEnd) => self.z.reset(false),
                        Ok(_) => {}
                    }
                    let room = out.len() < out.capacity();
                    if room && (at >= input.len() || !moved) {
                        break;
                    }
                }
            }
            match dropped {
                Some(n) => Inflated::TooLarge(n + out.len() as u64),
                None if out.len() >= cap => Inflated::TooLarge(out.len() as u64),
                None => {
                    // A held message pins what it allocated: no more than
                    // half again its size (the budget counts its length).
                    if out.capacity() > out.len() + out.len() / 2 + 64 {
                        out.shrink_to_fit();
                    }
                    Inflated::Done(out)
                }
            }
        }
    }

    impl Inflater {
        /// Part of a message that is dropped as it arrives (over a wire
        /// limit): inflated into nothing, so the context the server's next
        /// messages refer to stays whole. Nothing to do without context.
        pub(crate) fn discard(&mut self, data: &[u8]) -> Result<(), String> {
            if self.fresh {
                return Ok(());
            }
            let mut scratch: Vec<u8> = Vec::with_capacity(STEP);
            let mut at = 0;
            loop {
                scratch.clear();
                let (was_in, was_out) = (self.z.total_in(), self.z.total_out());
                let status = self
                    .z
                    .decompress_vec(&data[at..], &mut scratch, FlushDecompress::Sync)
                    .map_err(|e| format!("bad deflate data: {e}"))?;
                at += (self.z.total_in() - was_in) as usize;
                if status == Status::StreamEnd {
                    self.z.reset(false);
                }
                let moved = self.z.total_in() != was_in || self.z.total_out() != was_out;
                if (at >= data.len() && scratch.len() < scratch.capacity()) || !moved {
                    return Ok(());
                }
            }
        }

        /// The end of a dropped message (its tail, which was stripped).
        pub(crate) fn discard_end(&mut self) -> Result<(), String> {
            self.discard(&TAIL)
        }
    }

    /// The client's messages, deflated. The compressor (zlib: about 256
    /// KiB with a 32 KiB window) is made at the first message worth
    /// compressing, so a client that only receives never holds one.
    pub(crate) struct Deflater {
        z: Option<Compress>,
        bits: u8,
    }

    /// A message shorter than this goes as it is: deflate's framing costs
    /// more than it saves.
    const WORTH: usize = 64;

    impl Deflater {
        pub(crate) fn new(p: Params) -> Option<Deflater> {
            Some(Deflater {
                z: None,
                // zlib cannot compress raw deflate with a 256-byte window:
                // 9 is the least it does, and a server that said 8 gets
                // its message sent as it is (see `deflate`).
                bits: p.client_max_window_bits,
            })
        }

        /// The message compressed (tail stripped), or `None` when it goes
        /// as it is: short, not smaller compressed, or a window zlib
        /// cannot keep to.
        pub(crate) fn deflate(&mut self, data: &[u8]) -> Option<Vec<u8>> {
            if data.len() < WORTH || self.bits < 9 {
                return None;
            }
            let bits = self.bits;
            let z = self.z.get_or_insert_with(|| {
                Compress::new_with_window_bits(Compression::fast(), false, bits)
            });
            // Every message on its own (our offer's
            // client_no_context_takeover).
            z.reset();
            let mut out = Vec::with_capacity(data.len() / 2 + 64);
            let mut at = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() > data.len() {
                        return None; // not smaller
                    }
                    out.reserve(out.capacity());
                }
                let was_in = z.total_in();
                z.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
                    .ok()?;
                at += (z.total_in() - was_in) as usize;
                if at >= data.len() && out.len() < out.capacity() {
                    break;
                }
            }
            if !out.ends_with(&TAIL) {
                return None;
            }
            out.truncate(out.len() - TAIL.len());
            (out.len() < data.len()).then_some(out)
        }
    }
}

/// Built without the `compression` feature: nothing is offered, so none
/// of these is ever made.
#[cfg(not(feature = "compression"))]
mod without {
    use super::{Inflated, Params};

    pub(crate) enum Inflater {}
    pub(crate) enum Deflater {}

    impl Inflater {
        pub(crate) fn new(_: Params) -> Option<Inflater> {
            None
        }
        pub(crate) fn inflate(&mut self, _: &[u8], _: u64) -> Inflated {
            match *self {}
        }
        pub(crate) fn discard(&mut self, _: &[u8]) -> Result<(), String> {
            match *self {}
        }
        pub(crate) fn discard_end(&mut self) -> Result<(), String> {
            match *self {}
        }
    }

    impl Deflater {
        pub(crate) fn new(_: Params) -> Option<Deflater> {
            None
        }
        pub(crate) fn deflate(&mut self, _: &[u8]) -> Option<Vec<u8>> {
            match *self {}
        }
    }
}

#[cfg(all(test, feature = "compression"))]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn params(fresh: bool) -> Params {
        Params {
            server_no_context_takeover: fresh,
            client_max_window_bits: 15,
        }
    }

    #[test]
    fn answers_are_read_as_rfc_7692_says() {
        let p = agreed("permessage-deflate").unwrap();
        assert_eq!(p, params(false));
        let p = agreed("permessage-deflate; server_no_context_takeover; client_max_window_bits=10")
            .unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.client_max_window_bits, 10);
        assert!(agreed("permessage-deflate; server_max_window_bits=\"12\"").is_ok());
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(agreed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_is_deflated_inflates_back_with_or_without_context() {
        let json = br#"{"id":"a-1","temp":21.5,"unit":"C","device":"kiosk-7","ok":true}"#.repeat(3);
        for fresh in [false, true] {
            let mut d = Deflater::new(params(fresh)).unwrap();
            let mut i = Inflater::new(params(fresh)).unwrap();
            for _ in 0..3 {
                let z = d.deflate(&json).expect("worth compressing");
                assert!(z.len() < json.len());
                assert_eq!(i.inflate(&z, 1 << 20), Inflated::Done(json.clone()));
            }
        }
        assert_eq!(
            Deflater::new(params(false)).unwrap().deflate(b"short"),
            None
        );
    }

    /// What a server sends: each message deflated, the tail stripped,
    /// the context kept from one to the next unless `fresh`.
    fn server(z: &mut Compress, fresh: bool, data: &[u8]) -> Vec<u8> {
        if fresh {
            z.reset();
        }
        let mut out = Vec::with_capacity(data.len() + 1024);
        let was = z.total_in();
        z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert_eq!(
            z.total_in() - was,
            data.len() as u64,
            "one call takes it all"
        );
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit_and_the_next_message_inflates() {
        for fresh in [true, false] {
            let mut z = Compress::new(Compression::best(), false);
            let bomb = server(&mut z, fresh, &vec![0u8; 8 << 20]);
            assert!(bomb.len() < 16 << 10, "a few KB: {}", bomb.len());
            let next = br#"{"after":"the bomb","ok":true,"pad":"0000000000000000000000"}"#;
            let after = server(&mut z, fresh, next);
            let mut i = Inflater::new(params(fresh)).unwrap();
            match i.inflate(&bomb, 64 << 10) {
                Inflated::TooLarge(n) => assert!(n > 64 << 10, "{n}"),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                i.inflate(&after, 1 << 20),
                Inflated::Done(next.to_vec()),
                "fresh {fresh}"
            );
        }
    }

    #[test]
    fn a_message_exactly_at_the_limit_is_taken() {
        let msg = b"abcdefgh".repeat(1000);
        let mut z = Compress::new(Compression::fast(), false);
        let data = server(&mut z, false, &msg);
        let mut i = Inflater::new(params(false)).unwrap();
        assert_eq!(
            i.inflate(&data, msg.len() as u64),
            Inflated::Done(msg.clone())
        );
        let data = server(&mut z, false, &msg);
        assert_eq!(
            i.inflate(&data, msg.len() as u64 - 1),
            Inflated::TooLarge(msg.len() as u64)
        );
    }

    #[test]
    fn bytes_that_are_not_deflate_are_corrupt() {
        let mut i = Inflater::new(params(false)).unwrap();
        assert!(matches!(
            i.inflate(&[0xff; 32], 1 << 20),
            Inflated::Corrupt(_)
        ));
    }
}
