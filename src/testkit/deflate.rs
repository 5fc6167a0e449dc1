//! A loopback server that speaks permessage-deflate (RFC 7692), which the
//! main test server (tungstenite) cannot: it accepts one connection,
//! agrees to compression (or not), sends what it is given, compressed as a
//! server would, and reports the client's data frames, inflated.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::error::lock;

/// What the server answers to the client's offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Agree {
    /// No extension: messages go as they are.
    No,
    /// `permessage-deflate`: the server keeps its context between messages.
    Deflate,
    /// `permessage-deflate; server_no_context_takeover`.
    DeflateNoContext,
}

/// A data frame the client sent: whether it was compressed (RSV1), and its
/// payload, inflated.
pub type Received = (bool, Vec<u8>);

/// The deflating test server. Stops (and joins its thread) when dropped.
pub struct DeflateServer {
    url: String,
    agree: Agree,
    z: Mutex<Compress>,
    push: Option<Sender<Vec<u8>>>,
    seen: Receiver<Received>,
    thread: Option<JoinHandle<()>>,
}

impl DeflateServer {
    /// Starts on `127.0.0.1:0`; the first connection is served.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start(agree: Agree) -> io::Result<DeflateServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("ws://{}/", listener.local_addr()?);
        let (push, pushed) = crossbeam_channel::unbounded::<Vec<u8>>();
        let (seen_tx, seen) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("testkit-deflate".into())
            .spawn(move || {
                if let Ok((s, _)) = listener.accept() {
                    let _ = serve(s, agree, &pushed, &seen_tx);
                }
            })?;
        Ok(DeflateServer {
            url,
            agree,
            z: Mutex::new(Compress::new(Compression::default(), false)),
            push: Some(push),
            seen,
            thread: Some(thread),
        })
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Text messages as the server sends them: each a frame, compressed
    /// when compression was agreed (in order: with context, each depends
    /// on the ones before). Send them with [`DeflateServer::send_raw`].
    pub fn encode(&self, texts: &[String]) -> Vec<u8> {
        let mut z = lock(&self.z);
        let mut out = Vec::new();
        for t in texts {
            match self.agree {
                Agree::No => out.extend(frame(false, t.as_bytes())),
                Agree::Deflate | Agree::DeflateNoContext => {
                    if self.agree == Agree::DeflateNoContext {
                        z.reset();
                    }
                    out.extend(frame(true, &deflate(&mut z, t.as_bytes())));
                }
            }
        }
        out
    }

    /// Sends bytes (frames from [`DeflateServer::encode`], or anything).
    pub fn send_raw(&self, bytes: Vec<u8>) {
        if let Some(p) = &self.push {
            let _ = p.send(bytes);
        }
    }

    /// Sends one text message; its size on the wire.
    pub fn push(&self, text: &str) -> usize {
        let bytes = self.encode(&[text.to_owned()]);
        let n = bytes.len();
        self.send_raw(bytes);
        n
    }

    /// The next data frame the client sent, within `timeout`.
    pub fn received(&self, timeout: Duration) -> Option<Received> {
        self.seen.recv_timeout(timeout).ok()
    }
}

impl Drop for DeflateServer {
    fn drop(&mut self) {
        self.push.take();
        if let Some(t) = self.thread.take() {
            // A client that never connected: wake the accept.
            if let Some(addr) = self.url.strip_prefix("ws://") {
                let _ = TcpStream::connect(addr.trim_end_matches('/'));
            }
            let _ = t.join();
        }
    }
}

/// A message's data, deflated, the tail stripped (RFC 7692 §7.2.1).
fn deflate(z: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut at = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let was = z.total_in();
        if z.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
            .is_err()
        {
            break;
        }
        at += (z.total_in() - was) as usize;
        if at >= data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out.truncate(out.len().saturating_sub(4));
    out
}

/// A server's text frame: FIN, RSV1 when `compressed`, unmasked.
fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81 | if compressed { 0x40 } else { 0 }];
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

fn serve(
    mut s: TcpStream,
    agree: Agree,
    pushed: &Receiver<Vec<u8>>,
    seen: &Sender<Received>,
) -> io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let key = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim())
        })
        .unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let offered = head.to_ascii_lowercase().contains("permessage-deflate");
    let ext = match agree {
        Agree::Deflate if offered => "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        Agree::DeflateNoContext if offered => {
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
        }
        _ => "",
    };
    write!(
        s,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{ext}\r\n"
    )?;
    let mut reader = s.try_clone()?;
    let pushed = pushed.clone();
    let writer = std::thread::Builder::new()
        .name("testkit-deflate-w".into())
        .spawn(move || {
            for bytes in pushed {
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
        })?;
    let result = read_client(&mut reader, seen);
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    result
}

/// Reads the client's frames until its close: each data frame reported,
/// inflated on its own (the client compresses every message on its own).
fn read_client(r: &mut TcpStream, seen: &Sender<Received>) -> io::Result<()> {
    loop {
        let mut h = [0u8; 2];
        r.read_exact(&mut h)?;
        let mut len = u64::from(h[1] & 0x7F);
        if len == 126 {
            let mut l = [0u8; 2];
            r.read_exact(&mut l)?;
            len = u64::from(u16::from_be_bytes(l));
        } else if len == 127 {
            let mut l = [0u8; 8];
            r.read_exact(&mut l)?;
            len = u64::from_be_bytes(l);
        }
        let mut mask = [0u8; 4];
        r.read_exact(&mut mask)?;
        let mut p = vec![0u8; usize::try_from(len).unwrap_or(0)];
        r.read_exact(&mut p)?;
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match h[0] & 0x0F {
            8 => return Ok(()),
            1 | 2 => {}
            _ => continue,
        }
        let rsv1 = h[0] & 0x40 != 0;
        if rsv1 {
            p.extend([0, 0, 0xff, 0xff]);
            let mut z = Decompress::new(false);
            let mut out = Vec::with_capacity(p.len() * 8 + 1024);
            loop {
                let was = z.total_in();
                let at = was as usize;
                z.decompress_vec(&p[at..], &mut out, FlushDecompress::Sync)
                    .map_err(io::Error::other)?;
                if z.total_in() as usize >= p.len() && out.len() < out.capacity() {
                    break;
                }
                if out.len() == out.capacity() {
                    out.reserve(out.capacity());
                } else if z.total_in() == was {
                    break;
                }
            }
            p = out;
        }
        if seen.send((rsv1, p)).is_err() {
            return Ok(());
        }
    }
}
