//! Response framing: the head (skipping interim responses), then a body delimited by
//! `Content-Length`, chunked encoding or the connection's close, under a size cap.

use std::io::{self, BufRead, BufReader, Read, Write};

use super::connect::{Stream, MAX_HEAD_BYTES};
use super::error::{map_io, STORING_PHASE};
use super::HttpError;

/// Fuzzing and corpus-replay entry point (not an API): parses `raw` as the bytes a server sent
/// for a request with `method`, through the same head, framing and body code as a real exchange,
/// with a body cap of `limit` bytes. Returns status, headers and body.
#[doc(hidden)]
pub type ParsedResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// See [`ParsedResponse`]; the entry point itself.
#[doc(hidden)]
pub fn parse_response_bytes(
    raw: &[u8],
    method: &str,
    limit: usize,
) -> Result<ParsedResponse, HttpError> {
    let peer = "fuzz";
    let stream: Box<dyn Stream> = Box::new(io::Cursor::new(raw.to_vec()));
    let head_req = method == "HEAD";
    let (status, headers, mut reader) = read_head(stream, peer, head_req)?;
    let framing = framing(status, &headers, head_req, peer)?;
    let mut body = Vec::new();
    read_body(&mut reader, framing, &mut body, limit, peer)?;
    Ok((status, headers, body))
}

/// Where a body goes: a buffer, or a file for 2xx downloads.
pub(super) trait BodySink {
    /// The head arrived (before any body byte); an error ends the exchange.
    fn start(&mut self, _status: u16, _headers: &[(String, String)]) -> Result<(), HttpError> {
        Ok(())
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
}

/// What a download's caller checks in a 2xx head before its body reaches the sink (a resumed
/// download: 206 with the asked-for `Content-Range`, or 200 and the whole content again).
pub type AcceptHead<'a> = &'a mut dyn FnMut(u16, &[(String, String)]) -> Result<(), HttpError>;

impl BodySink for Vec<u8> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }
}

pub(super) struct StatusGatedSink<'a, 'b> {
    pub(super) sink: &'a mut dyn Write,
    pub(super) error: Vec<u8>,
    pub(super) ok: Option<bool>,
    pub(super) accept: AcceptHead<'b>,
}

impl BodySink for StatusGatedSink<'_, '_> {
    fn start(&mut self, status: u16, headers: &[(String, String)]) -> Result<(), HttpError> {
        let ok = (200..300).contains(&status);
        self.ok = Some(ok);
        if ok {
            (self.accept)(status, headers)?;
        }
        Ok(())
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.ok == Some(true) {
            self.sink.write_all(data)
        } else {
            if self.error.len() < 64 * 1024 {
                self.error.extend_from_slice(data);
            }
            Ok(())
        }
    }
}

pub(super) type HeadResult = (
    u16,
    Vec<(String, String)>,
    BufReader<io::Chain<io::Cursor<Vec<u8>>, Box<dyn Stream>>>,
);

/// Reads the response head (skipping 1xx interim responses); returns status, headers, and a
/// reader positioned at the first body byte.
pub(super) fn read_head(
    mut stream: Box<dyn Stream>,
    peer: &str,
    _head_req: bool,
) -> Result<HeadResult, HttpError> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    buf.drain(..n);
                    continue;
                }
                let hs = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                let rest = buf.split_off(n);
                let reader = BufReader::new(io::Cursor::new(rest).chain(stream));
                return Ok((code, hs, reader));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(HttpError::Protocol {
                    peer: peer.into(),
                    detail: format!("bad response head: {e}"),
                })
            }
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::Protocol {
                peer: peer.into(),
                detail: "response head larger than 64 KiB".into(),
            });
        }
        let n = loop {
            match stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }
        .map_err(|e| map_io(e, peer, "reading the response"))?;
        if n == 0 {
            return Err(HttpError::Io {
                peer: peer.into(),
                phase: "reading the response",
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response head",
                ),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

pub(super) fn framing(
    status: u16,
    headers: &[(String, String)],
    head_req: bool,
    peer: &str,
) -> Result<Framing, HttpError> {
    if head_req || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Framing::Empty);
    }
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    if let Some(te) = get("transfer-encoding").last() {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked);
        }
        return Ok(Framing::UntilClose);
    }
    let lengths = get("content-length");
    if let Some(first) = lengths.first() {
        // Digits only (RFC 9110 §8.6): `u64::from_str` would also take `+5`.
        let n: u64 = digits(first, 10).ok_or_else(|| HttpError::Protocol {
            peer: peer.into(),
            detail: format!("invalid Content-Length {first:?}"),
        })?;
        if lengths.iter().any(|l| *l != *first) {
            return Err(HttpError::Protocol {
                peer: peer.into(),
                detail: "conflicting Content-Length headers".into(),
            });
        }
        return Ok(Framing::Length(n));
    }
    Ok(Framing::UntilClose)
}

pub(super) fn read_body(
    reader: &mut dyn BufRead,
    framing: Framing,
    sink: &mut dyn BodySink,
    limit: usize,
    peer: &str,
) -> Result<(), HttpError> {
    let too_large = || HttpError::TooLarge {
        peer: peer.into(),
        limit,
    };
    let io_err = |e: io::Error| map_io(e, peer, "reading the response");
    let mut total: usize = 0;
    let mut buf = [0u8; 16 * 1024];
    let mut copy =
        |reader: &mut dyn BufRead, mut n: u64, total: &mut usize| -> Result<(), HttpError> {
            while n > 0 {
                let want = (n.min(buf.len() as u64)) as usize;
                let got = reader.read(&mut buf[..want]).map_err(io_err)?;
                if got == 0 {
                    return Err(HttpError::Io {
                        peer: peer.into(),
                        phase: "reading the response",
                        source: io::Error::new(io::ErrorKind::UnexpectedEof, "body truncated"),
                    });
                }
                *total += got;
                if *total > limit {
                    return Err(too_large());
                }
                sink.write(&buf[..got]).map_err(|e| HttpError::Io {
                    peer: peer.into(),
                    phase: STORING_PHASE,
                    source: e,
                })?;
                n -= got as u64;
            }
            Ok(())
        };
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => {
            if n > limit as u64 {
                return Err(too_large());
            }
            copy(reader, n, &mut total)
        }
        Framing::Chunked => loop {
            let line = read_line(reader, peer)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = digits(size_text, 16).ok_or_else(|| HttpError::Protocol {
                peer: peer.into(),
                detail: format!("invalid chunk size {size_text:?}"),
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(reader, peer)?.is_empty() {}
                return Ok(());
            }
            // Saturating: a peer may announce a chunk of up to 2^64-1 bytes.
            if (total as u64).saturating_add(size) > limit as u64 {
                return Err(too_large());
            }
            copy(reader, size, &mut total)?;
            if !read_line(reader, peer)?.is_empty() {
                return Err(HttpError::Protocol {
                    peer: peer.into(),
                    detail: "chunk not followed by CRLF".into(),
                });
            }
        },
        Framing::UntilClose => loop {
            let got = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Over TLS only close_notify ends such a body: a connection that just ends
                // (rustls: UnexpectedEof) may have been cut by anyone on the path, so the body
                // is truncated, an I/O error (transient), never complete.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(HttpError::Io {
                        peer: peer.into(),
                        phase: "reading the response",
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "body truncated: the connection closed without TLS close_notify",
                        ),
                    })
                }
                Err(e) => return Err(io_err(e)),
            };
            if got == 0 {
                return Ok(());
            }
            total += got;
            if total > limit {
                return Err(too_large());
            }
            sink.write(&buf[..got]).map_err(|e| HttpError::Io {
                peer: peer.into(),
                phase: STORING_PHASE,
                source: e,
            })?;
        },
    }
}

/// A number of only `radix` digits (no sign, no spaces, at least one digit), `None` otherwise
/// or on overflow.
fn digits(text: &str, radix: u32) -> Option<u64> {
    if text.is_empty() || !text.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(text, radix).ok()
}

/// One CRLF-terminated line (at most 4 KiB), without the terminator.
fn read_line(reader: &mut dyn BufRead, peer: &str) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = reader
        .take(4096)
        .read_until(b'\n', &mut line)
        .map_err(|e| map_io(e, peer, "reading the response"))?;
    if n == 0 || !line.ends_with(b"\n") {
        return Err(HttpError::Protocol {
            peer: peer.into(),
            detail: "truncated or overlong chunk line".into(),
        });
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
