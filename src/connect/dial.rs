//! From a host name to a connected TCP socket within one deadline
//! (`Timeouts::connect`): the name lookup, then the addresses it gave.
//!
//! Both steps are built for the networks devices sit on:
//! - the system resolver takes no deadline, and with the uplink gone it
//!   waits for a DNS server that never answers ([`resolve`]);
//! - a name with an IPv6 and an IPv4 address, whose IPv6 packets go
//!   nowhere (broken IPv6 on a site network), must still connect over
//!   IPv4: addresses are raced, RFC 8305 style ([`race`]).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::connect::bind::Bound;
use crate::error::lock;
use crate::error::{ConnectionError, Phase};

/// `close()`'s way into a connection attempt in flight, so it need not wait
/// for the attempt's timeouts (a server that accepts and then says nothing
/// would hold it for `Timeouts::handshake`): it wakes the connect's wait, and
/// shuts down the connected socket, which ends a blocking read or write of
/// the TLS handshake, the proxy's tunnel or the upgrade at once. Once the
/// attempt is over the connection is not touched: an open connection is
/// closed by its close handshake.
pub(crate) struct Abort {
    state: Mutex<AbortState>,
    /// Disconnected by an abort (its sender dropped): what a wait on a
    /// channel selects on.
    ended: crossbeam_channel::Receiver<()>,
}

impl Default for Abort {
    fn default() -> Self {
        let (end, ended) = crossbeam_channel::bounded(0);
        Abort {
            state: Mutex::new(AbortState {
                end: Some(end),
                ..AbortState::default()
            }),
            ended,
        }
    }
}

#[derive(Default)]
struct AbortState {
    requested: bool,
    end: Option<crossbeam_channel::Sender<()>>,
    waker: Option<Arc<Waker>>,
    /// The attempt's connected socket (a second handle to it).
    socket: Option<Socket>,
}

impl Abort {
    /// Ends the attempt in flight, and every later one, at once.
    pub(crate) fn abort(&self) {
        let mut s = lock(&self.state);
        s.requested = true;
        s.end = None;
        if let Some(w) = &s.waker {
            let _ = w.wake();
        }
        if let Some(socket) = &s.socket {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// `true` once [`Abort::abort`] was called.
    pub(crate) fn requested(&self) -> bool {
        lock(&self.state).requested
    }

    /// The attempt's socket is connected: an abort now shuts it down.
    pub(crate) fn watch(&self, tcp: &TcpStream) {
        let mut s = lock(&self.state);
        let Ok(second) = tcp.try_clone() else { return };
        if s.requested {
            let _ = second.shutdown(Shutdown::Both);
        }
        s.socket = Some(Socket::from(second));
    }

    /// The attempt is over (the connection handed on, or failed): nothing
    /// of it is touched any more.
    pub(crate) fn done(&self) {
        let mut s = lock(&self.state);
        s.socket = None;
        s.waker = None;
    }

    /// Wakes `waker` on an abort; `false` when one came already.
    pub(crate) fn wake_on_abort(&self, waker: Option<Arc<Waker>>) -> bool {
        let mut s = lock(&self.state);
        s.waker = waker;
        !s.requested
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the client is closing")
}

/// The token of the abort's waker in [`race`]'s poll (addresses use their
/// index).
const ABORT: Token = Token(usize::MAX);

/// How long an address has to connect before the next one is tried
/// alongside it (RFC 8305's "Connection Attempt Delay", 250 ms).
const NEXT_ADDRESS_AFTER: Duration = Duration::from_millis(250);

/// Connects to `host:port` (`addr`, as errors show it) within `timeout`,
/// lookup included, unless `abort` ends it first; the socket bound as
/// `bound` says.
pub(crate) fn connect(
    host: &str,
    port: u16,
    addr: &str,
    timeout: Duration,
    abort: &Abort,
    bound: &Bound,
    phases: &mut crate::message::Phases,
) -> Result<TcpStream, ConnectionError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let addrs = resolve(host, port, addr, timeout, abort)?;
    let resolved = Instant::now();
    phases.dns = resolved - start;
    let tcp = connect_resolved(addrs, addr, deadline, timeout, abort, bound)?;
    phases.tcp = resolved.elapsed();
    Ok(tcp)
}

/// Connects to one of `addrs` (`addr`, as errors show it) by `deadline`
/// (`timeout` from the start, for errors): those of the bound address's
/// family, raced as RFC 8305 says. The HTTP polls come here too, with the
/// addresses ureq resolved.
pub(crate) fn connect_resolved(
    mut addrs: Vec<SocketAddr>,
    addr: &str,
    deadline: Instant,
    timeout: Duration,
    abort: &Abort,
    bound: &Bound,
) -> Result<TcpStream, ConnectionError> {
    if let Some(ip) = bound.address {
        // A bound address speaks one family: the server's others are not
        // reachable from it.
        addrs.retain(|a| a.is_ipv4() == ip.is_ipv4());
        if addrs.is_empty() {
            return Err(ConnectionError::Bind {
                to: ip.to_string(),
                problem: crate::error::BindProblem::Other,
                reason: format!(
                    "{addr} has no {} address, and the bound address is one",
                    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                ),
            });
        }
    }
    let timed_out = || ConnectionError::Timeout {
        phase: Phase::Connect,
        addr: addr.to_owned(),
        after: timeout,
    };
    let failed = |source: io::Error| ConnectionError::Connect {
        addr: addr.to_owned(),
        source: std::sync::Arc::new(source),
    };
    match race(&interleave(addrs), deadline, abort, bound) {
        Ok(s) => Ok(s),
        Err(Failed::Bind(e)) => Err(e),
        Err(Failed::Io(e)) if e.kind() == io::ErrorKind::TimedOut => Err(timed_out()),
        Err(Failed::Io(e)) => Err(failed(e)),
    }
}

/// Resolves `host` by the system's resolver (`/etc/hosts`, DNS, …) within
/// `timeout`. `getaddrinfo` takes no deadline and cannot be cancelled, and
/// with the uplink gone it waits for a DNS server that never answers (glibc:
/// 5 s per try and server), holding up the attempt, and `close()` with it.
/// So a name is looked up on a short-lived thread: when the deadline comes
/// first, the attempt fails at once with [`Phase::Resolve`], and the thread
/// finishes its lookup on its own, within the resolver's own timeouts,
/// holding nothing of heartline's. An IP address needs no lookup and no
/// thread.
fn resolve(
    host: &str,
    port: u16,
    addr: &str,
    timeout: Duration,
    abort: &Abort,
) -> Result<Vec<SocketAddr>, ConnectionError> {
    let failed = |source: io::Error| ConnectionError::Connect {
        addr: addr.to_owned(),
        source: std::sync::Arc::new(source),
    };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let name = host.to_owned();
    let lookup = std::thread::Builder::new()
        .name("heartline-resolve".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>);
            let _ = tx.send(found);
        })
        .map_err(failed)?;
    crossbeam_channel::select! {
        recv(rx) -> found => match found {
            Ok(found) => {
                // It has sent its answer: it ends now.
                let _ = lookup.join();
                found.map_err(failed)
            }
            Err(_) => Err(failed(io::Error::other(
                "the host name lookup ended without an answer",
            ))),
        },
        recv(abort.ended) -> _ => Err(failed(aborted())),
        default(timeout) => Err(ConnectionError::Timeout {
            phase: Phase::Resolve,
            addr: addr.to_owned(),
            after: timeout,
        }),
    }
}

/// The resolver's order (its first choice first), the families taking
/// turns after it (RFC 8305, section 4): one dead family costs one
/// attempt delay, not one per address of it.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first().copied() else {
        return addrs;
    };
    let (mut same, mut other): (Vec<_>, Vec<_>) = addrs
        .into_iter()
        .partition(|a| a.is_ipv6() == first.is_ipv6());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(same.len() + other.len());
    loop {
        match (same.pop(), other.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Connects to the first of `addrs` that answers by `deadline`: each
/// address gets [`NEXT_ADDRESS_AFTER`] alone, then the next one is started
/// beside it (at once when one fails), and the first connection made wins;
/// the others are dropped. `TimedOut` when the deadline came first,
/// `Interrupted` when `abort` did; otherwise the last address's error.
fn race(
    addrs: &[SocketAddr],
    deadline: Instant,
    abort: &Abort,
    bound: &Bound,
) -> Result<TcpStream, Failed> {
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), ABORT)?);
    if !abort.wake_on_abort(Some(waker)) {
        return Err(aborted().into());
    }
    // The waker belongs to this poll: gone with it, whatever the outcome.
    struct Unhook<'a>(&'a Abort);
    impl Drop for Unhook<'_> {
        fn drop(&mut self) {
            self.0.wake_on_abort(None);
        }
    }
    let _unhook = Unhook(abort);
    let mut events = Events::with_capacity(addrs.len() + 1);
    let mut pending: Vec<(usize, Socket)> = Vec::new();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address");
    let mut next = 0;
    let mut next_at = Instant::now();
    loop {
        let now = Instant::now();
        if next < addrs.len() && (now >= next_at || pending.is_empty()) {
            match start(&addrs[next], bound) {
                Ok(Started::Connected(s)) => return Ok(s),
                Ok(Started::Pending(s)) => {
                    let fd = s.as_raw_fd();
                    poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(next),
                        Interest::WRITABLE,
                    )?;
                    pending.push((next, s));
                }
                Err(Failed::Io(e)) => last = e,
                Err(bind) => return Err(bind),
            }
            next += 1;
            next_at = now + NEXT_ADDRESS_AFTER;
            continue;
        }
        if pending.is_empty() {
            return Err(last.into());
        }
        if now >= deadline {
            return Err(io::Error::from(io::ErrorKind::TimedOut).into());
        }
        let wake = if next < addrs.len() {
            next_at.min(deadline)
        } else {
            deadline
        };
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in &events {
            if ev.token() == ABORT {
                return Err(aborted().into());
            }
            let Some(i) = pending.iter().position(|(n, _)| Token(*n) == ev.token()) else {
                continue;
            };
            let (_, s) = pending.swap_remove(i);
            let fd = s.as_raw_fd();
            let _ = poll.registry().deregister(&mut SourceFd(&fd));
            // Writable means the connect finished: made, or failed with
            // the error the socket holds.
            match s.take_error() {
                Ok(None) => match s.peer_addr() {
                    Ok(_) => {
                        s.set_nonblocking(false)?;
                        return Ok(TcpStream::from(s));
                    }
                    Err(e) => last = e,
                },
                Ok(Some(e)) | Err(e) => last = e,
            }
        }
    }
}

enum Started {
    Connected(TcpStream),
    Pending(Socket),
}

/// Why a race was lost: the addresses' failure, or a bind that cannot
/// succeed for any address.
enum Failed {
    Io(io::Error),
    Bind(ConnectionError),
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        Failed::Io(e)
    }
}

/// Starts a non-blocking connect to `a`, from a socket bound as `bound`
/// says.
fn start(a: &SocketAddr, bound: &Bound) -> Result<Started, Failed> {
    let s = Socket::new(Domain::for_address(*a), Type::STREAM, Some(Protocol::TCP))?;
    bound.apply(&s, a).map_err(Failed::Bind)?;
    s.set_nonblocking(true)?;
    match s.connect(&SockAddr::from(*a)) {
        Ok(()) => {
            s.set_nonblocking(false)?;
            Ok(Started::Connected(TcpStream::from(s)))
        }
        Err(e)
            if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error())
                || e.kind() == io::ErrorKind::WouldBlock =>
        {
            Ok(Started::Pending(s))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 80))
    }

    fn v6(last: u16) -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, last], 80))
    }

    #[test]
    fn families_take_turns_after_the_resolvers_first_choice() {
        assert_eq!(
            interleave(vec![v6(1), v6(2), v6(3), v4(1)]),
            vec![v6(1), v4(1), v6(2), v6(3)]
        );
        assert_eq!(
            interleave(vec![v4(1), v4(2), v6(1), v6(2)]),
            vec![v4(1), v6(1), v4(2), v6(2)]
        );
        assert_eq!(interleave(vec![v4(1)]), vec![v4(1)]);
        assert!(interleave(Vec::new()).is_empty());
    }

    #[test]
    fn a_refused_address_hands_over_to_the_next_at_once() {
        // Bind and drop: nobody listens on the first.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let s = race(
            &[dead, live.local_addr().unwrap()],
            t0 + Duration::from_secs(10),
            &Abort::default(),
            &Bound::default(),
        )
        .ok()
        .unwrap();
        assert_eq!(s.peer_addr().unwrap(), live.local_addr().unwrap());
    }

    #[test]
    fn an_abort_ends_the_race_and_every_later_one() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let abort = Abort::default();
        let at = [live.local_addr().unwrap()];
        let far = Instant::now() + Duration::from_secs(10);
        let any = Bound::default();
        assert!(race(&at, far, &abort, &any).is_ok());
        abort.abort();
        let e = race(&at, far, &abort, &any).err();
        assert!(matches!(e, Some(Failed::Io(e)) if e.kind() == io::ErrorKind::Interrupted));
        // A socket connected before the abort is shut down by it.
        let abort = Abort::default();
        let tcp = race(&at, far, &abort, &any).ok().unwrap();
        abort.watch(&tcp);
        abort.abort();
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &tcp, &mut buf).unwrap(), 0);
    }

    #[test]
    fn every_address_refused_is_the_last_ones_error() {
        let dead = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
        };
        let e = race(
            &[dead(), dead()],
            Instant::now() + Duration::from_secs(10),
            &Abort::default(),
            &Bound::default(),
        )
        .err();
        assert!(matches!(e, Some(Failed::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused));
    }
}
