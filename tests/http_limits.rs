//! Oversized and endless peer responses: the HTTP client (the one every Vault/AWS call goes
//! through) ends each with a clear error within its timeout, with memory bounded.
//! Servers listen on 127.0.0.1 only; each stops by itself (bounded bytes and time) or when the
//! client hangs up.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use hybridboot::http::{Client, HttpError, Request, Timeouts, Url};

use crate::util::peak_rss_kb;

/// Accepts one connection, reads the request head, writes `head`, then calls `body` with the
/// stream until it returns false or a write fails (the client gave up) or 60 s pass.
fn serve(
    head: &'static [u8],
    mut body: impl FnMut(&mut TcpStream) -> std::io::Result<bool> + Send + 'static,
) -> (Url, thread::JoinHandle<u64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return 0;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let mut rounds = 0u64;
        let started = Instant::now();
        if s.write_all(head).is_err() {
            return 0;
        }
        while started.elapsed() < Duration::from_secs(60) {
            match body(&mut s) {
                Ok(true) => rounds += 1,
                _ => break,
            }
        }
        rounds
    });
    (url, h)
}

fn client(limit: usize, total: Duration) -> Client {
    Client::builder()
        .max_response_bytes(limit)
        .timeouts(Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(1),
            total,
        })
        .build()
        .unwrap()
}

const MB: usize = 1024 * 1024;

/// Peak RSS belongs to the whole process, and this binary runs every topic's tests in it: the
/// measurement runs alone in a child process (the helper below), where no other test allocates.
#[test]
fn a_100_mb_body_is_refused_at_the_cap_with_bounded_memory() {
    crate::util::run_helper_checked(
        "http_limits::bounded_memory_child",
        &[],
        "BOUNDED MEMORY CHECKED",
    );
}

#[test]
#[ignore = "helper: run in a process of its own by a_100_mb_body_is_refused_at_the_cap_with_bounded_memory"]
fn bounded_memory_child() {
    let before = peak_rss_kb();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    // No Content-Length: the body runs until close, 100 MB of it.
    let (url, h) = serve(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
        move |s| {
            if sent >= 100 * MB {
                return Ok(false);
            }
            s.write_all(&chunk)?;
            sent += chunk.len();
            Ok(true)
        },
    );
    let started = Instant::now();
    let e = client(4 * MB, Duration::from_secs(10))
        .send(&Request::get(url))
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, HttpError::TooLarge { limit, .. } if limit == 4 * MB),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.1") && !msg.contains('\n'), "{msg}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let rounds = h.join().unwrap();
    // The client stopped reading at the cap: the server could not push 100 MB.
    assert!(
        rounds * 64 * 1024 < 100 * MB as u64,
        "server sent everything"
    );
    let grown = peak_rss_kb().saturating_sub(before);
    eprintln!(
        "100 MB body: {msg} after {took:?}; peak RSS {} kB (+{grown} kB)",
        peak_rss_kb()
    );
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} kB");
    println!("BOUNDED MEMORY CHECKED");
}

#[test]
fn a_body_announced_as_100_mb_is_refused_before_reading_it() {
    let (url, h) = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n",
        |s| s.write_all(&[b'y'; 65536]).map(|_| true),
    );
    let e = client(4 * MB, Duration::from_secs(10))
        .send(&Request::get(url))
        .unwrap_err();
    assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
    h.join().unwrap();
}

#[test]
fn an_endless_chunked_stream_ends_at_the_cap() {
    let (url, h) = serve(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        |s| {
            let mut c = b"4000\r\n".to_vec();
            c.extend_from_slice(&[b'z'; 0x4000]);
            c.extend_from_slice(b"\r\n");
            s.write_all(&c).map(|_| true)
        },
    );
    let e = client(4 * MB, Duration::from_secs(10))
        .send(&Request::get(url))
        .unwrap_err();
    assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
    h.join().unwrap();
}

#[test]
fn a_slow_drip_ends_at_the_total_timeout() {
    // One byte every 200 ms: never idle long enough for the read timeout, never finished.
    let (url, h) = serve(b"HTTP/1.1 200 OK\r\n\r\n", |s| {
        thread::sleep(Duration::from_millis(200));
        s.write_all(b"a").map(|_| true)
    });
    let started = Instant::now();
    let e = client(4 * MB, Duration::from_secs(3))
        .send(&Request::get(url))
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
    eprintln!("slow drip: {e} after {took:?}");
    h.join().unwrap();
}

#[test]
fn an_endless_head_is_refused_at_64_kib() {
    // One header line that never ends (many short lines hit the 100-header limit first).
    let (url, h) = serve(b"HTTP/1.1 200 OK\r\nX-Filler: ", |s| {
        s.write_all(&[b'a'; 1024]).map(|_| true)
    });
    let e = client(4 * MB, Duration::from_secs(10))
        .send(&Request::get(url))
        .unwrap_err();
    assert!(e.to_string().contains("larger than 64 KiB"), "{e}");
    h.join().unwrap();
}

#[test]
fn endless_interim_responses_end_at_the_total_timeout() {
    let (url, h) = serve(b"", |s| {
        thread::sleep(Duration::from_millis(5));
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map(|_| true)
    });
    let started = Instant::now();
    let e = client(4 * MB, Duration::from_secs(3))
        .send(&Request::get(url))
        .unwrap_err();
    assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    h.join().unwrap();
}
