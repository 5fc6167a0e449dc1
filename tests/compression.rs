//! permessage-deflate end to end, against a raw loopback server that
//! speaks it (the testkit's tungstenite server cannot): compressed
//! messages both ways, with the server's context kept and not, and a
//! deflate bomb measured on the heap.
//!
//! Its own test binary: the heap is counted for the whole process.
mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use heartline::{Limits, State};

#[global_allocator]
static HEAP: Counting = Counting;

/// A server's message: compressed (tail stripped) by a compressor that
/// keeps its context unless `fresh`.
fn deflate(z: &mut Compress, fresh: bool, data: &[u8]) -> Vec<u8> {
    if fresh {
        z.reset();
    }
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    let mut at = 0;
    while at < data.len() || out.len() == out.capacity() {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let was = z.total_in();
        z.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
            .unwrap();
        at += (z.total_in() - was) as usize;
    }
    out.truncate(out.len() - 4);
    out
}

/// A frame from the server: FIN, RSV1 (compressed), unmasked.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | 0x40 | opcode];
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

/// What the server read from the client: whether RSV1 was set, and the
/// payload inflated (or as it came).
type Seen = (bool, Vec<u8>);

/// Accepts one connection, agrees to permessage-deflate (`fresh`:
/// `server_no_context_takeover`), sends what `push` gives it, and reports
/// each data frame the client sends.
fn server(fresh: bool) -> (String, Sender<Vec<u8>>, Receiver<Seen>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (push, pushed) = crossbeam_channel::unbounded::<Vec<u8>>();
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "the client hung up during the upgrade");
            head.extend_from_slice(&b[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.contains("permessage-deflate"), "offered: {head}");
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim();
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let ext = if fresh {
            "permessage-deflate; server_no_context_takeover"
        } else {
            "permessage-deflate"
        };
        write!(
            s,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {ext}\r\n\r\n"
        )
        .unwrap();
        let mut reader = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            for bytes in pushed {
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
        });
        // The client's frames: each inflated with a fresh context (the
        // client compresses every message on its own).
        loop {
            let mut h = [0u8; 2];
            if reader.read_exact(&mut h).is_err() {
                break;
            }
            let mut len = u64::from(h[1] & 0x7F);
            if len == 126 {
                let mut l = [0u8; 2];
                reader.read_exact(&mut l).unwrap();
                len = u64::from(u16::from_be_bytes(l));
            } else if len == 127 {
                let mut l = [0u8; 8];
                reader.read_exact(&mut l).unwrap();
                len = u64::from_be_bytes(l);
            }
            let mut mask = [0u8; 4];
            reader.read_exact(&mut mask).unwrap();
            let mut p = vec![0u8; len as usize];
            reader.read_exact(&mut p).unwrap();
            for (i, b) in p.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            let opcode = h[0] & 0x0F;
            if opcode == 8 {
                break;
            }
            if opcode > 2 {
                continue;
            }
            let rsv1 = h[0] & 0x40 != 0;
            if rsv1 {
                p.extend([0, 0, 0xff, 0xff]);
                let mut z = Decompress::new(false);
                let mut out = Vec::with_capacity(64 << 10);
                z.decompress_vec(&p, &mut out, FlushDecompress::Sync)
                    .unwrap();
                p = out;
            }
            let _ = seen_tx.send((rsv1, p));
        }
        let _ = writer.join();
    });
    (url, push, seen, h)
}

#[test]
fn compressed_messages_go_both_ways_with_the_context_kept_or_not() {
    for fresh in [false, true] {
        let (url, push, seen, h) = server(fresh);
        let client = fast(url).compression(true).build().unwrap();
        let (ev, _) = wait_event(&client.events(), "open", |e| e.state == State::Open);
        assert!(ev.opened.is_some_and(|o| o.compression), "agreed");
        let mut z = Compress::new(Compression::default(), false);
        let pushes: Vec<String> = (0..3)
            .map(|i| format!(r#"{{"seq":{i},"device":"kiosk-7","temp":21.5,"unit":"C"}}"#))
            .collect();
        for p in &pushes {
            push.send(frame(1, &deflate(&mut z, fresh, p.as_bytes())))
                .unwrap();
        }
        assert_eq!(texts(&collect(&client, 3)), pushes, "fresh {fresh}");
        let up = r#"{"acks":["kiosk-7/0","kiosk-7/1","kiosk-7/2"],"device":"kiosk-7","note":"compressed on the way up, compressed on the way up"}"#;
        client.send(up).unwrap();
        client.send("short").unwrap();
        let (rsv1, got) = seen.recv_timeout(WAIT).unwrap();
        assert!(rsv1, "a message worth compressing goes compressed");
        assert_eq!(got, up.as_bytes());
        assert_eq!(seen.recv_timeout(WAIT).unwrap(), (false, b"short".to_vec()));
        client.close();
        drop(push);
        h.join().unwrap();
    }
}

#[test]
fn a_deflate_bomb_allocates_no_more_than_the_message_limit() {
    const LIMIT: usize = 1 << 20;
    let (url, push, _seen, h) = server(false);
    let client = fast(url)
        .compression(true)
        .limits(Limits {
            max_message_size: LIMIT,
            ..Limits::default()
        })
        .build()
        .unwrap();
    wait_open(&client.events());
    let mut z = Compress::new(Compression::best(), false);
    // 64 MiB of zeros: about 64 KB on the wire, under every wire limit.
    let bomb = deflate(&mut z, false, &vec![0u8; 64 << 20]);
    assert!(bomb.len() < LIMIT / 2, "{} bytes on the wire", bomb.len());
    let after = deflate(&mut z, false, br#"{"after":"the bomb"}"#);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    push.send(frame(2, &bomb)).unwrap();
    push.send(frame(1, &after)).unwrap();
    // The message behind the bomb arrives: the context survived.
    assert_eq!(texts(&collect(&client, 1)), vec![r#"{"after":"the bomb"}"#]);
    let peak = PEAK.load(Relaxed).saturating_sub(before);
    assert_eq!(client.stats().too_large, 1);
    // The bomb's wire bytes, the limit, and the reader's buffers; far
    // from the 64 MiB it inflates to.
    assert!(
        peak < bomb.len() + LIMIT + (2 << 20),
        "heap grew {peak} bytes for a bomb of {} bytes",
        bomb.len()
    );
    client.close();
    drop(push);
    h.join().unwrap();
}
