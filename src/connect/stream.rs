//! The handshake's stream: a TCP socket under one deadline ([`Timed`]),
//! plain or inside TLS ([`Stream`]), and what an open WebSocket hands the
//! io thread ([`Socket`]).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::machine::deflate::Params;

/// A TCP stream whose reads and writes, while it has a deadline, all end
/// by that moment: each sets the socket's timeout to the time left. A
/// timeout set once would start again with every byte, so a peer sending
/// one byte at a time could hold the handshake for as long as it liked.
pub(crate) struct Timed {
    pub(crate) tcp: TcpStream,
    deadline: Option<Instant>,
    /// Where the bytes are counted.
    wire: Option<Arc<Wire>>,
}

/// Bytes through one uplink's sockets.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    rx: AtomicU64,
    tx: AtomicU64,
}

/// The bytes each uplink carried since the client started
/// ([`crate::Stats::uplinks`]).
#[derive(Debug, Default)]
pub(crate) struct Wires(Mutex<Vec<(String, Arc<Wire>)>>);

impl Wires {
    /// The counter of the interface named `name`.
    pub(crate) fn of(&self, name: &str) -> Arc<Wire> {
        let mut all = crate::error::lock(&self.0);
        if let Some((_, w)) = all.iter().find(|(n, _)| n == name) {
            return w.clone();
        }
        let w = Arc::new(Wire::default());
        all.push((name.to_owned(), w.clone()));
        w
    }

    pub(crate) fn totals(&self) -> Vec<crate::message::Uplink> {
        crate::error::lock(&self.0)
            .iter()
            .map(|(name, w)| crate::message::Uplink {
                interface: name.clone(),
                bytes_in: w.rx.load(Relaxed),
                bytes_out: w.tx.load(Relaxed),
            })
            .collect()
    }
}

impl Wire {
    /// Counts `rx` bytes received and `tx` sent.
    pub(crate) fn add(&self, rx: usize, tx: usize) {
        self.rx.fetch_add(rx as u64, Relaxed);
        self.tx.fetch_add(tx as u64, Relaxed);
    }
}

impl Timed {
    /// `tcp`, bounded by `deadline` until [`Stream::no_deadline`].
    pub(crate) fn new(tcp: TcpStream, deadline: Option<Instant>) -> Timed {
        Timed {
            tcp,
            deadline,
            wire: None,
        }
    }

    /// Counts what goes through it on `wire`.
    pub(crate) fn counted(mut self, wire: Arc<Wire>) -> Timed {
        self.wire = Some(wire);
        self
    }

    fn count(&self, n: io::Result<usize>, rx: bool) -> io::Result<usize> {
        if let (Ok(n), Some(w)) = (&n, &self.wire) {
            match rx {
                true => w.add(*n, 0),
                false => w.add(0, *n),
            }
        }
        n
    }

    /// Sets the socket's timeouts to the time left.
    fn left(&self) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.left()?;
        let n = self.tcp.read(buf);
        self.count(n, true)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.left()?;
        let n = self.tcp.write(buf);
        self.count(n, false)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// The byte stream under the WebSocket.
pub(crate) enum Stream {
    Plain(Timed),
    Tls(Box<native_tls::TlsStream<Timed>>),
}

impl Stream {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => &s.tcp,
            Stream::Tls(s) => &s.get_ref().tcp,
        }
    }

    /// The handshake is over: reads and writes no longer end by its
    /// deadline.
    pub(crate) fn no_deadline(&mut self) {
        match self {
            Stream::Plain(s) => s.deadline = None,
            Stream::Tls(s) => s.get_mut().deadline = None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The open WebSocket: the stream, and the bytes read past the upgrade
/// answer, the start of what the frame reader ([`crate::machine::frames`])
/// reads.
pub(crate) struct Socket {
    pub stream: Stream,
    pub leftover: Vec<u8>,
    /// permessage-deflate, when the server agreed to it.
    pub deflate: Option<Params>,
}

/// A read or write that ran out of time (the socket's timeout).
pub(crate) fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
