//! Connections: TCP with deadlines, and `CONNECT` tunnels through a proxy.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::error::map_io;
use super::{HttpError, Proxy, Url};

/// Most bytes of a response head (status line and headers), a proxy's `CONNECT` answer too.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A byte stream, plain or TLS.
pub(super) trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A TCP stream whose every read and write respects both an idle timeout and the request's
/// overall deadline.
pub(super) struct DeadlineStream {
    pub(super) tcp: TcpStream,
    pub(super) deadline: Instant,
    pub(super) idle: Duration,
}

impl DeadlineStream {
    fn budget(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline exceeded"));
        }
        Ok(left.min(self.idle))
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.budget()?))?;
        self.tcp.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.budget()?))?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

pub(super) fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
    deadline: Instant,
    peer: &str,
) -> Result<TcpStream, HttpError> {
    let addrs = resolve(host, port, deadline, |h, p| {
        (h.as_str(), p).to_socket_addrs().map(|a| a.collect())
    })?;
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, timeout.min(left)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let via = if peer.ends_with(&format!("{host}:{port}")) {
        peer.to_string()
    } else {
        format!("{peer} (via proxy {host}:{port})")
    };
    match last {
        Some(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Err(HttpError::Timeout {
                peer: via,
                phase: "connecting",
            })
        }
        Some(e) => Err(HttpError::Connect {
            peer: via,
            source: e,
        }),
        None => Err(HttpError::Timeout {
            peer: via,
            phase: "connecting",
        }),
    }
}

/// Resolves `host` with `lookup` (the system's resolver, which cannot be cancelled) on a thread
/// of its own, waiting no longer than `deadline`: a resolver that hangs costs a thread until it
/// gives up, never the request's deadline.
fn resolve(
    host: &str,
    port: u16,
    deadline: Instant,
    lookup: impl FnOnce(String, u16) -> io::Result<Vec<SocketAddr>> + Send + 'static,
) -> Result<Vec<SocketAddr>, HttpError> {
    let peer = format!("{host}:{port}");
    // A literal address needs no resolver.
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send(lookup(name, port));
        })
        .map_err(|e| HttpError::Resolve {
            peer: peer.clone(),
            detail: format!("cannot start the resolver thread: {e}"),
        })?;
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(HttpError::Resolve {
            peer,
            detail: e.to_string(),
        }),
        Err(_) => Err(HttpError::Timeout {
            peer,
            phase: "resolving the host name",
        }),
    }
}

pub(super) fn connect_tunnel(
    raw: &mut DeadlineStream,
    proxy: &Proxy,
    url: &Url,
    peer: &str,
) -> Result<(), HttpError> {
    let authority = url.authority();
    let mut head = Zeroizing::new(format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    ));
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {}\r\n", auth.expose()));
    }
    head.push_str("\r\n");
    let proxy_name = proxy.url.origin();
    raw.write_all(head.as_bytes())
        .map_err(|e| map_io(e, &proxy_name, "connecting"))?;
    // Read the proxy's answer byte by byte: anything after its head belongs to TLS.
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::Proxy {
                proxy: proxy_name,
                peer: peer.into(),
                detail: "oversized answer".into(),
                transient: false,
            });
        }
        match raw.read(&mut byte) {
            Ok(0) => {
                return Err(HttpError::Proxy {
                    proxy: proxy_name,
                    peer: peer.into(),
                    detail: "closed the connection".into(),
                    transient: true,
                })
            }
            Ok(_) => buf.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(map_io(e, &proxy_name, "connecting")),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let code = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => resp.code.unwrap_or(0),
        _ => 0,
    };
    if (200..300).contains(&code) {
        return Ok(());
    }
    Err(HttpError::Proxy {
        proxy: proxy_name,
        peer: peer.into(),
        detail: format!("HTTP {code} {}", resp.reason.unwrap_or("")),
        transient: matches!(code, 502..=504),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_resolver_is_bound_by_the_deadline() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let deadline = Instant::now() + Duration::from_millis(200);
        // A resolver that answers only after the test lets it (as a dead DNS server would
        // never): the request must end at its deadline with a transient timeout.
        let e = resolve("mirror.example", 443, deadline, move |_, _| {
            let _ = wait.recv();
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], 443))])
        })
        .unwrap_err();
        let _ = release.send(());
        assert!(
            matches!(
                e,
                HttpError::Timeout {
                    phase: "resolving the host name",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(crate::error::Classify::is_transient(&e), "{e}");
        assert!(e.to_string().contains("mirror.example:443"), "{e}");
        // A resolver that answers in time, and a literal address (no resolver at all).
        let later = Instant::now() + Duration::from_secs(30);
        let got = resolve("mirror.example", 443, later, |_, p| {
            Ok(vec![SocketAddr::from(([127, 0, 0, 2], p))])
        })
        .unwrap();
        assert_eq!(got, vec![SocketAddr::from(([127, 0, 0, 2], 443))]);
        let got = resolve(
            "[::1]",
            8443,
            later,
            |_, _| -> io::Result<Vec<SocketAddr>> { panic!("a literal address is not resolved") },
        )
        .unwrap();
        assert_eq!(got, vec!["[::1]:8443".parse().unwrap()]);
        let e = resolve("nowhere.invalid", 443, later, |_, _| {
            Err(io::Error::other("no such host"))
        })
        .unwrap_err();
        assert!(matches!(e, HttpError::Resolve { .. }), "{e:?}");
    }
}
