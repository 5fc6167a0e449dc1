//! Opening a connection: TCP with a connect timeout and its options, then
//! TLS ([`super::tls`]) and the WebSocket upgrade ([`super::upgrade`]), all
//! on a blocking socket under one deadline ([`Timed`]). The io thread then
//! switches the socket to non-blocking and waits in epoll.
//!
//! `tungstenite::connect` is not used because it has no connect timeout.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, Endpoint};
use crate::connect::bind::Bound;
use crate::connect::dial::Abort;
use crate::error::{ConnectionError, Phase};

type Result<T, E = ConnectionError> = std::result::Result<T, E>;
use crate::connect::stream::{Socket, Stream, Timed, Wire, Wires};
use crate::connect::target::Target;
use crate::connect::tls::{tls_error, TlsCache};
use crate::connect::upgrade::upgrade;

/// Once this much waits for the socket, it is written before more is
/// encoded.
pub(crate) const WRITE_BUFFER: usize = 128 * 1024;

/// What may wait unwritten before the connection is given up. Data frames
/// are encoded only while the socket takes them, at most one outbound
/// budget per turn; what else piles up (acks, pongs, heartbeats) does so
/// only when the server stops reading. Past twice the budget the
/// connection is given up instead of growing.
pub(crate) fn write_limit(cfg: &Config) -> usize {
    cfg.limits
        .outbound_bytes
        .saturating_mul(2)
        .saturating_add(2 * WRITE_BUFFER)
}

/// Connects, runs the TLS and WebSocket handshakes, and returns the socket
/// still in blocking mode.
pub(crate) fn connect(
    endpoint: &Endpoint,
    cfg: &Config,
    tls: &mut TlsCache,
    abort: &Abort,
    wires: &Wires,
) -> Result<(Socket, crate::message::Opened)> {
    // However this attempt ends, `abort` lets go of it.
    struct Over<'a>(&'a Abort);
    impl Drop for Over<'_> {
        fn drop(&mut self) {
            self.0.done();
        }
    }
    let _over = Over(abort);
    let target = Target::parse(&endpoint.url)?;
    let addr = target.addr();
    if target.tls {
        // The client identity is read before any connection is made: one
        // that cannot be used costs the server nothing.
        tls.get(cfg, &target.host)?;
    }
    // The uplink is chosen at every attempt: the preferred one again once
    // it is back.
    let bound = cfg.binding.choose()?;
    let mut phases = crate::message::Phases::default();
    let deadline;
    let (tcp, uplink, wire) =
        match cfg
            .proxy
            .choice
            .for_host(&cfg.proxy.env, target.tls, &target.host)
        {
            None => {
                let tcp = connect_tcp(
                    &target.host,
                    target.port,
                    &addr,
                    cfg.timeouts.connect,
                    abort,
                    &bound,
                    &mut phases,
                )?;
                deadline = Instant::now() + cfg.timeouts.handshake;
                let (uplink, wire) = uplink_of(&bound, &tcp, wires);
                (tcp, uplink, wire)
            }
            Some(proxy) => {
                log::debug!("through proxy {}", proxy.shown);
                let tcp = connect_tcp(
                    &proxy.host,
                    proxy.port,
                    &proxy.addr(),
                    cfg.timeouts.connect,
                    abort,
                    &bound,
                    &mut phases,
                )
                .map_err(|e| match e {
                    // The device's own binding, not the proxy's doing.
                    ConnectionError::Bind { .. } => e,
                    e => ConnectionError::Proxy {
                        proxy: proxy.shown.clone(),
                        status: None,
                        reason: format!("cannot reach the proxy: {e}"),
                    },
                })?;
                let (uplink, wire) = uplink_of(&bound, &tcp, wires);
                // The tunnel counts against the handshake's time, as the
                // handshake through it does.
                let start = Instant::now();
                deadline = start + cfg.timeouts.handshake;
                let mut timed = Timed::new(tcp, Some(deadline)).counted(wire.clone());
                proxy.tunnel(
                    &mut timed,
                    &target.host,
                    target.port,
                    cfg.timeouts.handshake,
                )?;
                phases.proxy = Some(start.elapsed());
                (timed.tcp, uplink, wire)
            }
        };
    let _ = tcp.set_nodelay(true);
    tune(&tcp, cfg);
    let local = tcp.local_addr().ok();
    let tcp = Timed::new(tcp, Some(deadline)).counted(wire);
    let stream = if target.tls {
        let connector = tls.get(cfg, &target.host)?;
        let start = Instant::now();
        match connector.connect(&target.host, tcp) {
            Ok(s) => {
                phases.tls = Some(start.elapsed());
                Stream::Tls(Box::new(s))
            }
            Err(native_tls::HandshakeError::WouldBlock(_)) => {
                return Err(ConnectionError::Timeout {
                    phase: Phase::TlsHandshake,
                    addr,
                    after: cfg.timeouts.handshake,
                })
            }
            Err(native_tls::HandshakeError::Failure(e)) => {
                let sent = tls.sent.as_deref();
                return Err(tls_error(
                    &target.host,
                    &e,
                    &addr,
                    cfg.timeouts.handshake,
                    sent,
                ));
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    let start = Instant::now();
    let (socket, mut opened) = upgrade(stream, endpoint, &target, &addr, cfg, tls.sent.as_deref())?;
    phases.upgrade = start.elapsed();
    opened.interface = uplink;
    opened.local_addr = local;
    opened.phases = phases;
    Ok((socket, opened))
}

/// The interface `tcp` goes out on: the bound one, or the one the kernel
/// lists with its local address; and that uplink's byte counter.
pub(crate) fn uplink_of(
    bound: &Bound,
    tcp: &TcpStream,
    wires: &Wires,
) -> (Option<String>, Arc<Wire>) {
    let name = bound.interface.clone().or_else(|| {
        let ip = tcp.local_addr().ok()?.ip();
        let net = crate::connect::netlink::dump(false).ok()?;
        net.link_of(ip).map(|(_, name)| name.to_owned())
    });
    let wire = wires.of(name.as_deref().unwrap_or("?"));
    (name, wire)
}

/// Keepalive and `TCP_USER_TIMEOUT`, so the kernel reports a dead peer
/// while reading is paused and gives up on unacknowledged data within the
/// write timeout. A refusal (an unusual kernel) is logged, not fatal.
fn tune(tcp: &TcpStream, cfg: &Config) {
    let sock = socket2::SockRef::from(tcp);
    if let Some(k) = cfg.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(k.idle)
            .with_interval(k.interval)
            .with_retries(k.count);
        if let Err(e) = sock.set_tcp_keepalive(&ka) {
            log::warn!("cannot turn on TCP keepalive: {e}");
        }
    }
    if let Err(e) = sock.set_tcp_user_timeout(Some(cfg.write_timeout)) {
        log::warn!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

/// Connects within `timeout`; from then on until the attempt is over, an
/// abort shuts the socket down (ending any blocking read or write on it).
fn connect_tcp(
    host: &str,
    port: u16,
    addr: &str,
    timeout: Duration,
    abort: &Abort,
    bound: &Bound,
    phases: &mut crate::message::Phases,
) -> Result<TcpStream> {
    let tcp = crate::connect::dial::connect(host, port, addr, timeout, abort, bound, phases)?;
    abort.watch(&tcp);
    Ok(tcp)
}
