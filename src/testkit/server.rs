//! The test server's threads: accepting, the upgrade (with the switches
//! that refuse it), and serving each connection (pushes, echo, replies,
//! silence, drops, idle cuts), recording what clients send.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message as WsMessage, WebSocket};

use crate::connect::stream::{Stream, Timed};
use crate::error::lock;
use crate::frame::Frame;

use super::{feed, record, Cmd, Conn, Inner, Recorded, Sent, Upgrade};

pub(super) fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if inner.stop.load(SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let i = inner.clone();
        let id = inner.next_id.fetch_add(1, SeqCst);
        if let Ok(h) = std::thread::Builder::new()
            .name(format!("testkit-conn-{id}"))
            .spawn(move || serve(&i, stream, id))
        {
            let mut threads = lock(&inner.threads);
            threads.retain(|t| !t.is_finished());
            threads.push(h);
        }
    }
}

fn serve(inner: &Inner, tcp: TcpStream, id: u64) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let stream = match &inner.tls {
        Some(acceptor) => match acceptor.accept(Timed::new(tcp, None)) {
            Ok(s) => Stream::Tls(Box::new(s)),
            Err(_) => return,
        },
        None => Stream::Plain(Timed::new(tcp, None)),
    };
    let refuse = *lock(&inner.refuse);
    let refuse_headers = lock(&inner.refuse_headers).clone();
    let mut commands: Option<Receiver<Cmd>> = None;
    // The callback's signature is tungstenite's; its error type is large.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let upgrade = Upgrade {
            conn: id,
            uri: req.uri().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            accepted: refuse.is_none(),
            at: Instant::now(),
        };
        match refuse {
            None => {
                // Registered before the 101 goes out: once a client sees the
                // connection open, pushes and faults reach it.
                let (tx, rx) = crossbeam_channel::unbounded();
                lock(&inner.conns).push(Conn { id, tx });
                commands = Some(rx);
                record(inner, |l| {
                    l.upgrades.push(upgrade);
                    l.open += 1;
                });
                Ok(resp)
            }
            Some(status) => {
                record(inner, |l| l.upgrades.push(upgrade));
                let mut r = ErrorResponse::new(Some("refused by the test server".into()));
                *r.status_mut() = tungstenite::http::StatusCode::from_u16(status)
                    .unwrap_or(tungstenite::http::StatusCode::SERVICE_UNAVAILABLE);
                for (n, v) in &refuse_headers {
                    if let (Ok(n), Ok(v)) = (
                        tungstenite::http::HeaderName::from_bytes(n.as_bytes()),
                        tungstenite::http::HeaderValue::from_str(v),
                    ) {
                        r.headers_mut().insert(n, v);
                    }
                }
                Err(r)
            }
        }
    };
    let ws = tungstenite::accept_hdr_with_config(stream, callback, Some(inner.ws_config)).ok();
    let Some(rx) = commands else { return };
    if let Some(mut ws) = ws {
        if !inner.stop.load(SeqCst) {
            serve_open(inner, &mut ws, &rx, id);
        }
    }
    lock(&inner.conns).retain(|c| c.id != id);
    record(inner, |l| l.open -= 1);
}

fn serve_open(inner: &Inner, ws: &mut WebSocket<Stream>, rx: &Receiver<Cmd>, id: u64) {
    let _ = ws
        .get_ref()
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(1)));
    for f in lock(&inner.greeting).clone() {
        let _ = ws.write(to_ws(f));
    }
    let _ = ws.flush();
    run_conn(inner, ws, rx, id);
}

/// The ack for a client frame, by the rule of [`super::TestServer::ack_frames`].
fn frame_ack(inner: &Inner, frame: &Frame) -> Option<Frame> {
    if inner.withhold.load(SeqCst) {
        return None;
    }
    let rule = lock(&inner.frame_acks).clone()?;
    let id = frame.json()?.pointer(&rule)?.clone();
    Some(Frame::from(serde_json::json!({"type": "ack", "id": id})))
}

fn to_ws(f: Frame) -> WsMessage {
    match f {
        Frame::Text(t) => WsMessage::Text(t.into()),
        Frame::Binary(b) => WsMessage::Binary(b.into()),
    }
}

fn run_conn(inner: &Inner, ws: &mut WebSocket<Stream>, rx: &Receiver<Cmd>, id: u64) {
    // Feed position: the first unacked message, then onwards.
    let mut next = lock(&inner.feed).as_ref().map_or(0, feed::Feed::start);
    let mut heard = Instant::now();
    loop {
        if let Some(after) = *lock(&inner.idle_cut) {
            if heard.elapsed() >= after {
                return; // cut, as an idle proxy does: no close frame
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Cmd::Push(f)) => {
                    if ws.write(to_ws(f)).is_err() {
                        return;
                    }
                }
                Ok(Cmd::Raw(bytes)) => {
                    use std::io::Write as _;
                    if ws.flush().is_err()
                        || ws.get_mut().write_all(&bytes).is_err()
                        || ws.get_mut().flush().is_err()
                    {
                        return;
                    }
                }
                Ok(Cmd::PushMany(frames)) => {
                    for f in frames.iter() {
                        if ws.write(to_ws(f.clone())).is_err() {
                            return;
                        }
                    }
                }
                Ok(Cmd::Drop) | Err(TryRecvError::Disconnected) => return,
                Ok(Cmd::Silence) => {
                    // Half-open: neither read nor write until told to drop or
                    // the server stops.
                    loop {
                        match rx.recv() {
                            Ok(Cmd::Drop) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                }
                Ok(Cmd::Close(code, reason)) => {
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    }));
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if let Some(f) = lock(&inner.feed).as_ref() {
            while next < f.len() {
                if let Some(text) = f.text(next) {
                    if ws.write(WsMessage::Text(text.to_owned().into())).is_err() {
                        return;
                    }
                }
                next += 1;
            }
        }
        match ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                continue
            }
            Err(_) => return,
        };
        heard = Instant::now();
        let sent = match &msg {
            WsMessage::Text(t) => Sent::Text(t.as_str().to_owned()),
            WsMessage::Binary(b) => Sent::Binary(b.to_vec()),
            WsMessage::Ping(_) => Sent::Ping,
            WsMessage::Pong(_) => Sent::Pong,
            WsMessage::Close(c) => Sent::Close(c.as_ref().map(|c| u16::from(c.code))),
            WsMessage::Frame(_) => continue,
        };
        // Applied before the frame is logged, so a test that saw the ack
        // in the log sees it counted.
        if let (WsMessage::Text(t), Some(f)) = (&msg, lock(&inner.feed).as_mut()) {
            f.ack_from(t.as_str());
        }
        record(inner, |l| {
            l.frames.push(Recorded {
                conn: id,
                sent,
                at: Instant::now(),
            })
        });
        let frame = match msg {
            WsMessage::Text(t) => Frame::Text(t.as_str().to_owned()),
            WsMessage::Binary(b) => Frame::Binary(b.to_vec()),
            _ => continue,
        };
        let answer = lock(&inner.replies)
            .iter()
            .find(|(rule, _)| rule.matches(&frame))
            .map(|(_, a)| a.clone());
        if let Some(a) = answer {
            let _ = ws.write(to_ws(a));
        }
        if let Some(ack) = frame_ack(inner, &frame) {
            let _ = ws.write(to_ws(ack));
        }
        if inner.echo.load(SeqCst) {
            let _ = ws.write(to_ws(frame));
        }
    }
}
