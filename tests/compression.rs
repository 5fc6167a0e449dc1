//! permessage-deflate end to end, against the testkit's deflating server
//! (raw frames on a loopback socket): compressed messages both ways, with
//! the server's context kept and not, a server that does not agree, and a
//! deflate bomb measured on the heap.
//!
//! Its own test binary: the heap is counted for the whole process.
mod common;
use common::*;

use std::sync::atomic::Ordering::Relaxed;

use flate2::{Compress, Compression, FlushCompress};
use heartline::testkit::{Agree, DeflateServer};
use heartline::{Limits, State};

#[global_allocator]
static HEAP: Counting = Counting;

/// The heap is counted for the whole process: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A server's message compressed with its own compressor (for the bomb,
/// whose 64 MiB the test server's encoder would copy).
fn deflate(z: &mut Compress, data: &[u8]) -> Vec<u8> {
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

#[test]
fn compressed_messages_go_both_ways_with_the_context_kept_or_not() {
    let _one = serial();
    for agree in [Agree::Deflate, Agree::DeflateNoContext] {
        let server = DeflateServer::start(agree).unwrap();
        let client = fast(server.url()).compression(true).build().unwrap();
        let (ev, _) = wait_event(&client.events(), "open", |e| e.state == State::Open);
        assert!(ev.opened.is_some_and(|o| o.compression), "agreed");
        let pushes: Vec<String> = (0..3)
            .map(|i| format!(r#"{{"seq":{i},"device":"kiosk-7","temp":21.5,"unit":"C"}}"#))
            .collect();
        server.send_raw(server.encode(&pushes));
        assert_eq!(texts(&collect(&client, 3)), pushes, "{agree:?}");
        let up = r#"{"acks":["kiosk-7/0","kiosk-7/1","kiosk-7/2"],"device":"kiosk-7","note":"compressed on the way up, compressed on the way up"}"#;
        client.send(up).unwrap();
        client.send("short").unwrap();
        let (rsv1, got) = server.received(WAIT).unwrap();
        assert!(rsv1, "a message worth compressing goes compressed");
        assert_eq!(got, up.as_bytes());
        assert_eq!(server.received(WAIT).unwrap(), (false, b"short".to_vec()));
        client.close();
    }
}

#[test]
fn a_server_that_does_not_agree_gets_plain_messages() {
    let _one = serial();
    let server = DeflateServer::start(Agree::No).unwrap();
    let client = fast(server.url()).compression(true).build().unwrap();
    let (ev, _) = wait_event(&client.events(), "open", |e| e.state == State::Open);
    assert!(ev.opened.is_some_and(|o| !o.compression));
    server.push("plain");
    assert_eq!(texts(&collect(&client, 1)), vec!["plain"]);
    let up = "x".repeat(500);
    client.send(up.as_str()).unwrap();
    assert_eq!(server.received(WAIT).unwrap(), (false, up.into_bytes()));
    client.close();
}

#[test]
fn a_deflate_bomb_allocates_no_more_than_the_message_limit() {
    let _one = serial();
    const LIMIT: usize = 1 << 20;
    let server = DeflateServer::start(Agree::Deflate).unwrap();
    let client = fast(server.url())
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
    let bomb = deflate(&mut z, &vec![0u8; 64 << 20]);
    assert!(bomb.len() < LIMIT / 2, "{} bytes on the wire", bomb.len());
    let after = deflate(&mut z, br#"{"after":"the bomb"}"#);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    server.send_raw(frame(2, &bomb));
    server.send_raw(frame(1, &after));
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
}
