//! The handshake's stream: a TCP socket under one deadline ([`Timed`]),
//! plain or inside TLS ([`Stream`]), and what an open WebSocket hands the
//! io thread ([`Socket`]).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::machine::deflate::Params;

/// A TCP stream whose reads and writes, while it has a deadline, all end
/// by that moment: each sets the socket's timeout to the time left. A
/// timeout set once would start again with every byte, so a peer sending
/// one byte at a time could hold the handshake for as long as it liked.
pub(crate) struct Timed {
    pub(crate) tcp: TcpStream,
    deadline: Option<Instant>,
}

impl Timed {
    /// `tcp`, bounded by `deadline` until [`Stream::no_deadline`].
    pub(crate) fn new(tcp: TcpStream, deadline: Option<Instant>) -> Timed {
        Timed { tcp, deadline }
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
        self.tcp.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.left()?;
        self.tcp.write(buf)
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
