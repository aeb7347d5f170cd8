//! Getting bytes from a URL into a writer (`file://` here; `https://` through the project's one
//! HTTP client), and the verified download: temp file beside the target, SHA-256 while
//! streaming, rename only after the digest matches.
//!
//! A download that drops resumes where it stopped ([`download`]): the bytes so far stay in the
//! temporary file and in the running SHA-256, the next request asks for `Range: bytes=N-` with
//! `If-Range` naming the validator the mirror gave (a strong `ETag`, else `Last-Modified`). A
//! `206` whose `Content-Range` starts at N continues the file; a `200` (the mirror changed the
//! file, or does not do ranges) starts it over. Without a validator a changed file shows as a
//! digest mismatch: the download then starts over from zero once, and a second mismatch fails
//! as any mismatch does. Attempts that make no progress are bounded by the retry policy;
//! an attempt that moved the file forward before it dropped resumes at once with a fresh
//! budget, within the policy's overall deadline.

use crate::error::{Class, Classify};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::fsutil::{TempFile, WriteOptions};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {detail}")]
    Transient { url: String, detail: String },
    #[error("{url}: {detail}")]
    Permanent { url: String, detail: String },
    #[error("{url} is larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: SHA-256 is {got}, {want_from} says {want}; the file was not installed")]
    Mismatch {
        url: String,
        got: String,
        want: String,
        want_from: String,
    },
    #[error("writing {path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Classify for FetchError {
    /// Transient: network trouble, 5xx, 429. A missing file, a size or digest mismatch, or a
    /// local write that fails needs an operator.
    fn class(&self) -> Class {
        match self {
            FetchError::Transient { .. } => Class::Transient,
            _ => Class::Operator,
        }
    }
}

impl crate::retry::Retryable for FetchError {}

/// A source of bytes. One call is one attempt; retries are the caller's.
pub trait Fetch {
    /// Streams the content of `url` into `sink`, failing once more than `limit` bytes arrive.
    fn fetch(&self, url: &str, sink: &mut dyn Write, limit: u64) -> Result<(), FetchError>;

    /// Continues `partial` from its offset (one attempt). Sources that cannot resume start over:
    /// [`Partial::begin`] at 0, then the whole content.
    fn fetch_from(&self, url: &str, partial: &mut Partial, limit: u64) -> Result<(), FetchError> {
        partial.begin(0, None);
        self.fetch(url, partial, limit)
    }
}

/// `file://` URLs: `file:///abs/path`, or `file://rel/path` relative to the working directory
/// (nodeadm's reading).
pub fn file_url_path(url: &str) -> Option<PathBuf> {
    url.strip_prefix("file://").map(PathBuf::from)
}

/// Reads `file://` URLs from the local filesystem (baked-in mirrors, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct FileFetch;

impl Fetch for FileFetch {
    fn fetch(&self, url: &str, sink: &mut dyn Write, limit: u64) -> Result<(), FetchError> {
        let path = file_url_path(url).ok_or_else(|| FetchError::Permanent {
            url: url.into(),
            detail: "not a file:// URL".into(),
        })?;
        let file = File::open(&path).map_err(|e| FetchError::Permanent {
            url: url.into(),
            detail: e.to_string(),
        })?;
        copy_limited(file, sink, limit, url)
    }
}

/// `https://` (and `http://`) through the project's one HTTP client.
pub struct HttpFetch {
    client: crate::http::Client,
    resume: bool,
}

impl HttpFetch {
    /// A client trusting `ca_bundle` (or the built-in roots), with download-sized time limits:
    /// a 30 s silence fails the attempt, a whole artifact may take up to 30 minutes.
    pub fn new(ca_bundle: Option<&Path>) -> Result<HttpFetch, crate::http::HttpError> {
        let mut builder = crate::http::Client::builder().timeouts(crate::http::Timeouts {
            connect: std::time::Duration::from_secs(10),
            read: std::time::Duration::from_secs(30),
            total: std::time::Duration::from_secs(30 * 60),
        });
        if let Some(ca) = ca_bundle {
            builder = builder.ca_bundle_file(ca)?;
        }
        Ok(HttpFetch {
            client: builder.build()?,
            resume: true,
        })
    }

    /// Never asks for a range: every attempt downloads the whole file (the restart-from-zero
    /// baseline the benchmark measures resuming against).
    pub fn without_resume(mut self) -> HttpFetch {
        self.resume = false;
        self
    }
}

fn http_failure(url: &str, e: crate::http::HttpError, limit: u64) -> FetchError {
    use crate::http::HttpError;
    match e {
        HttpError::TooLarge { .. } => FetchError::TooLarge {
            url: url.into(),
            limit,
        },
        e if e.is_transient() => FetchError::Transient {
            url: url.into(),
            detail: e.to_string(),
        },
        e => FetchError::Permanent {
            url: url.into(),
            detail: e.to_string(),
        },
    }
}

impl Fetch for HttpFetch {
    fn fetch(&self, url: &str, sink: &mut dyn Write, limit: u64) -> Result<(), FetchError> {
        use crate::http::{Redirects, Request, Url};
        let parsed = Url::parse(url).map_err(|e| FetchError::Permanent {
            url: url.into(),
            detail: e.to_string(),
        })?;
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        self.client
            .download(
                &Request::get(parsed).redirects(Redirects::Download),
                sink,
                limit_usize,
            )
            .map(|_| ())
            .map_err(|e| http_failure(url, e, limit))
    }

    fn fetch_from(&self, url: &str, partial: &mut Partial, limit: u64) -> Result<(), FetchError> {
        use crate::http::{HttpError, Redirects, Request, Url};
        let parsed = Url::parse(url).map_err(|e| FetchError::Permanent {
            url: url.into(),
            detail: e.to_string(),
        })?;
        let offset = if self.resume { partial.offset() } else { 0 };
        let mut req = Request::get(parsed).redirects(Redirects::Download);
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
            if let Some(v) = partial.validator() {
                req = req.header("If-Range", v);
            }
        }
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        // Decided from the head, applied before the first body byte (the sink is `partial`).
        let start: std::cell::Cell<Option<(u64, Option<String>)>> = Default::default();
        let mut accept = |status: u16, headers: &[(String, String)]| {
            let header = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.as_str())
            };
            let from = if status == 206 {
                let range = header("content-range").and_then(content_range_start);
                if offset == 0 || range != Some(offset) {
                    return Err(HttpError::Protocol {
                        peer: url.into(),
                        detail: format!(
                            "answered 206 with Content-Range {:?} to Range bytes={offset}-",
                            header("content-range").unwrap_or("(none)")
                        ),
                    });
                }
                offset
            } else {
                0
            };
            let validator = validator(header("etag"), header("last-modified"));
            start.set(Some((from, validator)));
            Ok(())
        };
        let mut gate = Gate {
            partial: &mut *partial,
            start: &start,
        };
        let result = self
            .client
            .download_with(&req, &mut gate, limit_usize, &mut accept);
        gate.apply();
        match result {
            Ok(_) => Ok(()),
            // A range the mirror cannot serve (the file shrank) or answered wrongly: start over.
            Err(e @ (HttpError::Protocol { .. } | HttpError::Status { code: 416, .. }))
                if offset > 0 =>
            {
                partial.begin(0, None);
                Err(FetchError::Transient {
                    url: url.into(),
                    detail: format!("{e}; starting the file over"),
                })
            }
            Err(e) => Err(http_failure(url, e, limit)),
        }
    }
}

/// Applies the start decided from the head before the first body byte reaches the partial file.
struct Gate<'a, 'b> {
    partial: &'a mut Partial<'b>,
    start: &'a std::cell::Cell<Option<(u64, Option<String>)>>,
}

impl Gate<'_, '_> {
    fn apply(&mut self) {
        if let Some((from, validator)) = self.start.take() {
            self.partial.begin(from, validator);
        }
    }
}

impl Write for Gate<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.apply();
        self.partial.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.partial.flush()
    }
}

/// The first byte of `Content-Range: bytes FIRST-LAST/TOTAL` (`None` if malformed).
pub fn content_range_start(value: &str) -> Option<u64> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let num = |t: &str| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
    };
    let (first, last) = (num(first)?, num(last)?);
    if last < first || (total != "*" && num(total)? <= last) {
        return None;
    }
    Some(first)
}

/// What `If-Range` may name (RFC 9110 13.1.5): a strong entity tag, else the `Last-Modified`
/// date; a weak tag (`W/"..."`) cannot validate a range.
pub fn validator(etag: Option<&str>, last_modified: Option<&str>) -> Option<String> {
    match etag.map(str::trim) {
        Some(tag) if tag.starts_with('"') && tag.len() >= 2 && tag.ends_with('"') => {
            Some(tag.to_string())
        }
        _ => last_modified
            .map(str::trim)
            .filter(|d| crate::http::parse_http_date(d).is_some())
            .map(str::to_string),
    }
}

/// Copies at most `limit` bytes; more is [`FetchError::TooLarge`].
pub fn copy_limited(
    src: impl Read,
    sink: &mut dyn Write,
    limit: u64,
    url: &str,
) -> Result<(), FetchError> {
    let mut src = src.take(limit.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| FetchError::Transient {
            url: url.into(),
            detail: e.to_string(),
        })?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        if total > limit {
            return Err(FetchError::TooLarge {
                url: url.into(),
                limit,
            });
        }
        sink.write_all(&buf[..n]).map_err(|e| FetchError::Local {
            path: PathBuf::from(url),
            source: e,
        })?;
    }
}

/// Fetches a small document (manifest, checksum, signature) into memory.
pub fn fetch_small(fetch: &dyn Fetch, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    fetch.fetch(url, &mut out, limit)?;
    Ok(out)
}

/// A writer that hashes and counts what passes through, reporting progress.
struct Hashing<'a, W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
    progress: &'a mut Progress,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(io::Error::other(format!(
                "content exceeds the {}-byte limit",
                self.limit
            )));
        }
        self.progress.update(self.bytes);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `Write` that gunzips into another writer (for `gzip_uri` artifacts).
struct Gunzip<W: Write>(flate2::write::GzDecoder<W>);

impl<W: Write> Write for Gunzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Progress of one artifact: a live `\r` line on a terminal, nothing otherwise (the caller logs
/// one line per artifact).
pub struct Progress {
    name: String,
    live: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Progress for `name`; live only when stderr is a terminal.
    pub fn new(name: &str) -> Progress {
        let mut p = Progress::quiet(name);
        p.live = io::stderr().is_terminal();
        p
    }

    /// Progress that shows nothing (downloads running side by side would overwrite each
    /// other's live line; each logs its own line when done).
    pub fn quiet(name: &str) -> Progress {
        let now = Instant::now();
        Progress {
            name: name.to_string(),
            live: false,
            started: now,
            last: now,
        }
    }

    fn update(&mut self, bytes: u64) {
        if !self.live || self.last.elapsed().as_millis() < 200 {
            return;
        }
        self.last = Instant::now();
        eprint!(
            "\r{}: {} ({})   ",
            self.name,
            human(bytes),
            rate(bytes, self.started)
        );
    }

    fn finish(&self) {
        if self.live {
            eprint!("\r\x1b[K");
        }
    }
}

/// `12.3 MiB`.
pub fn human(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// `3.2 MiB/s` since `started`.
pub fn rate(bytes: u64, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    format!("{}/s", human((bytes as f64 / secs) as u64))
}

/// What one verified download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written (decompressed).
    pub bytes: u64,
    /// Attempts it took.
    pub attempts: u32,
}

/// What to download where.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Source URL.
    pub url: &'a str,
    /// Whether the source is gzip-compressed (the checksum is of the decompressed content).
    pub gzip: bool,
    /// Expected SHA-256 of the content.
    pub want: &'a [u8; 32],
    /// Where `want` comes from, for errors (`the signed manifest`, a checksum URL).
    pub want_from: &'a str,
    /// Final path.
    pub target: &'a Path,
    /// Mode and ownership of the final file.
    pub opts: &'a WriteOptions,
    /// Largest content accepted.
    pub limit: u64,
}

/// One attempt of a verified download: streams `url` (gunzipping when `gzip`) into a temporary
/// file beside `target`, hashing as it goes, and renames it over `target` with `opts.mode` only
/// when the SHA-256 is `want`. On any failure the temporary file is removed and `target` is
/// untouched.
pub fn download_once(
    fetch: &dyn Fetch,
    spec: &Spec,
    progress: &mut Progress,
) -> Result<u64, FetchError> {
    let Spec {
        url,
        gzip,
        want,
        want_from,
        target,
        opts,
        limit,
    } = *spec;
    let local = |source| FetchError::Local {
        path: target.to_path_buf(),
        source,
    };
    let tmp = TempFile::create(target, opts).map_err(local)?;
    let mut failure: Option<FetchError> = None;
    let mut written = 0u64;
    let result = tmp.commit(|file| {
        let mut hashing = Hashing {
            inner: &mut *file,
            hasher: Sha256::new(),
            bytes: 0,
            limit,
            progress: &mut *progress,
        };
        let fetched = if gzip {
            let mut gz = Gunzip(flate2::write::GzDecoder::new(&mut hashing));
            // The compressed stream gets the same cap; the decompressed one is capped above.
            let r = fetch.fetch(url, &mut gz, limit);
            r.and_then(|()| {
                gz.0.try_finish().map_err(|e| FetchError::Permanent {
                    url: url.into(),
                    detail: format!("not valid gzip: {e}"),
                })
            })
        } else {
            fetch.fetch(url, &mut hashing, limit)
        };
        if let Err(e) = fetched {
            failure = Some(e);
            return Err(io::Error::other("download failed"));
        }
        let got: [u8; 32] = hashing.hasher.finalize().into();
        written = hashing.bytes;
        if &got != want {
            failure = Some(FetchError::Mismatch {
                url: url.into(),
                got: hex::encode(got),
                want: hex::encode(want),
                want_from: want_from.to_string(),
            });
            return Err(io::Error::other("checksum mismatch"));
        }
        Ok(())
    });
    progress.finish();
    match (result, failure) {
        (Ok(()), _) => Ok(written),
        (Err(_), Some(f)) => Err(f),
        (Err(e), None) => Err(local(e)),
    }
}

/// The decompressed content so far: written to the temporary file and hashed, under the cap.
struct Content {
    file: File,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
    url: String,
    target: PathBuf,
    /// Why the last write failed (over the cap, or the local write), for the caller.
    failure: Option<FetchError>,
}

impl Write for Content {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.saturating_add(buf.len() as u64) > self.limit {
            self.failure = Some(FetchError::TooLarge {
                url: self.url.clone(),
                limit: self.limit,
            });
            return Err(io::Error::other("over the size limit"));
        }
        if let Err(e) = self.file.write_all(buf) {
            let kind = e.kind();
            self.failure = Some(FetchError::Local {
                path: self.target.clone(),
                source: e,
            });
            return Err(io::Error::new(kind, "writing the temporary file"));
        }
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Decode {
    Plain(Box<Content>),
    Gzip(Box<flate2::write::GzDecoder<Content>>),
}

impl Decode {
    fn content(&mut self) -> &mut Content {
        match self {
            Decode::Plain(c) => c,
            Decode::Gzip(g) => g.get_mut(),
        }
    }
}

/// A download in progress across attempts: how many bytes of the source arrived (where the
/// next attempt resumes), the validator the mirror gave for them, and the content written so
/// far (decompressed when the source is gzip'd: the decoder lives across attempts too).
pub struct Partial<'p> {
    decode: Decode,
    received: u64,
    validator: Option<String>,
    /// Answers that continued the file (206).
    resumed: u32,
    /// Times the file started over after it had bytes.
    restarted: u32,
    progress: &'p mut Progress,
}

impl<'p> Partial<'p> {
    fn new(file: File, spec: &Spec, progress: &'p mut Progress) -> Partial<'p> {
        let content = Content {
            file,
            hasher: Sha256::new(),
            bytes: 0,
            limit: spec.limit,
            url: spec.url.to_string(),
            target: spec.target.to_path_buf(),
            failure: None,
        };
        Partial {
            decode: if spec.gzip {
                Decode::Gzip(Box::new(flate2::write::GzDecoder::new(content)))
            } else {
                Decode::Plain(Box::new(content))
            },
            received: 0,
            validator: None,
            resumed: 0,
            restarted: 0,
            progress,
        }
    }

    /// Bytes of the source received so far: where the next attempt resumes.
    pub fn offset(&self) -> u64 {
        self.received
    }

    /// The mirror's validator of those bytes (`If-Range`), if it gave one.
    pub fn validator(&self) -> Option<&str> {
        self.validator.as_deref()
    }

    /// An answer's body starts at byte `from` of the source: `0` drops what the file holds
    /// (the whole content follows), otherwise `from` is [`Partial::offset`] and the body
    /// continues the file. `validator` is what the answer named (kept when it named none).
    pub fn begin(&mut self, from: u64, validator: Option<String>) {
        if from == 0 || from != self.received {
            self.reset();
        } else {
            self.resumed += 1;
        }
        if validator.is_some() || from == 0 {
            self.validator = validator;
        }
    }

    /// Drops every byte so far: the next attempt downloads the whole file.
    fn reset(&mut self) {
        if self.received > 0 {
            self.restarted += 1;
        }
        self.received = 0;
        self.validator = None;
        let gzip = matches!(self.decode, Decode::Gzip(_));
        let c = self.decode.content();
        let fresh = |c: &mut Content| -> io::Result<File> {
            use std::io::Seek;
            c.file.set_len(0)?;
            c.file.seek(io::SeekFrom::Start(0))?;
            c.file.try_clone()
        };
        let failure = match fresh(c) {
            Ok(file) => {
                let content = Content {
                    file,
                    hasher: Sha256::new(),
                    bytes: 0,
                    limit: c.limit,
                    url: c.url.clone(),
                    target: c.target.clone(),
                    failure: None,
                };
                self.decode = if gzip {
                    Decode::Gzip(Box::new(flate2::write::GzDecoder::new(content)))
                } else {
                    Decode::Plain(Box::new(content))
                };
                return;
            }
            Err(e) => e,
        };
        c.failure = Some(FetchError::Local {
            path: c.target.clone(),
            source: failure,
        });
    }

    /// The error a failed write recorded (the cap, the local disk), taking precedence over the
    /// transport's view of it.
    fn take_failure(&mut self) -> Option<FetchError> {
        self.decode.content().failure.take()
    }
}

impl Write for Partial<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A reset that could not truncate the file leaves its failure: nothing more is written.
        if self.decode.content().failure.is_some() {
            return Err(io::Error::other("the temporary file failed"));
        }
        match &mut self.decode {
            Decode::Plain(c) => c.write_all(buf)?,
            Decode::Gzip(g) => g.write_all(buf)?,
        }
        self.received += buf.len() as u64;
        let bytes = self.decode.content().bytes;
        self.progress.update(bytes);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A verified download in its temporary file beside the target: [`Staged::place`] renames it
/// into place; dropping it removes it.
pub struct Staged {
    tmp: TempFile,
    /// Content bytes (decompressed).
    pub bytes: u64,
    /// Attempts (requests) it took.
    pub attempts: u32,
    /// Answers that continued the file where a drop cut it (206).
    pub resumed: u32,
    /// Times it started over after holding bytes (200 to a range request, a digest mismatch).
    pub restarted: u32,
}

impl Staged {
    /// Sets mode and owner, fsyncs, renames the file over its target and fsyncs the directory.
    pub fn place(self) -> io::Result<()> {
        self.tmp.commit(|_| Ok(()))
    }

    /// The temporary file (to inspect it before placing, e.g. a tarball's entries).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// At least this much of a file must arrive before a drop for the next attempt to resume at
/// once with a fresh retry budget; less counts as a failed attempt.
pub const PROGRESS_FOR_FRESH_BUDGET: u64 = 64 * 1024;

/// Downloads `spec.url` into a temporary file beside `spec.target`, resuming after drops (see
/// the module's notes), and checks its SHA-256; nothing is placed until [`Staged::place`].
/// Attempts without progress follow `policy`; the whole download starts no attempt after
/// `policy.deadline`.
pub fn download(
    fetch: &dyn Fetch,
    spec: &Spec,
    policy: &crate::retry::RetryPolicy,
    progress: &mut Progress,
) -> Result<Staged, FetchError> {
    use std::cell::Cell;
    let local = |source| FetchError::Local {
        path: spec.target.to_path_buf(),
        source,
    };
    let tmp = TempFile::create(spec.target, spec.opts).map_err(local)?;
    let started = Instant::now();
    let mut partial = Partial::new(tmp.handle().map_err(local)?, spec, progress);
    let mut attempts = 0u32;
    let mut restarted_for_digest = false;
    loop {
        let left = policy.deadline.saturating_sub(started.elapsed());
        let progressed = Cell::new(false);
        let result = crate::retry::run_if(
            &policy.with_deadline(left),
            &crate::retry::RealClock,
            |e: &FetchError| e.is_transient() && !progressed.get(),
            |_| {
                attempts = attempts.saturating_add(1);
                let before = partial.offset();
                let r = fetch.fetch_from(spec.url, &mut partial, spec.limit);
                let r = r.map_err(|e| partial.take_failure().unwrap_or(e));
                if r.is_err()
                    && partial.offset() >= before.saturating_add(PROGRESS_FOR_FRESH_BUDGET)
                {
                    progressed.set(true);
                }
                r
            },
        );
        match result {
            Ok(()) => {}
            Err(e) if e.is_transient() && progressed.get() && !left.is_zero() => {
                log::info!(
                    "{}: dropped after {}; resuming",
                    spec.url,
                    human(partial.offset())
                );
                continue;
            }
            Err(e) => {
                partial.progress.finish();
                return Err(e);
            }
        }
        let finished = match &mut partial.decode {
            Decode::Plain(_) => Ok(()),
            Decode::Gzip(g) => g.try_finish(),
        };
        if let Err(e) = finished {
            partial.progress.finish();
            return Err(partial.take_failure().unwrap_or(FetchError::Permanent {
                url: spec.url.into(),
                detail: format!("not valid gzip: {e}"),
            }));
        }
        let content = partial.decode.content();
        let got: [u8; 32] = content.hasher.clone().finalize().into();
        let bytes = content.bytes;
        if &got != spec.want {
            // Spliced halves of a file the mirror changed in between (no validator told us):
            // once more from zero; a whole file that does not match fails as always.
            if partial.resumed > 0 && !restarted_for_digest {
                log::warn!(
                    "{}: SHA-256 of the resumed file is {}, not {}; the mirror may have changed the file between requests, downloading it again from the start",
                    spec.url,
                    hex::encode(got),
                    hex::encode(spec.want)
                );
                restarted_for_digest = true;
                partial.reset();
                partial.resumed = 0;
                continue;
            }
            partial.progress.finish();
            return Err(FetchError::Mismatch {
                url: spec.url.into(),
                got: hex::encode(got),
                want: hex::encode(spec.want),
                want_from: spec.want_from.to_string(),
            });
        }
        partial.progress.finish();
        return Ok(Staged {
            tmp,
            bytes,
            attempts,
            resumed: partial.resumed,
            restarted: partial.restarted,
        });
    }
}

/// SHA-256 of a file, `None` if it does not exist.
pub fn sha256_file(path: &Path) -> io::Result<Option<[u8; 32]>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(Some(hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Serves fixed bytes, failing the first `fail_first` attempts halfway through the body.
    struct Flaky {
        body: Vec<u8>,
        fail_first: Cell<u32>,
    }

    impl Fetch for Flaky {
        fn fetch(&self, url: &str, sink: &mut dyn Write, limit: u64) -> Result<(), FetchError> {
            if self.fail_first.get() > 0 {
                self.fail_first.set(self.fail_first.get() - 1);
                sink.write_all(&self.body[..self.body.len() / 2]).unwrap();
                return Err(FetchError::Transient {
                    url: url.into(),
                    detail: "connection reset".into(),
                });
            }
            copy_limited(&self.body[..], sink, limit, url)
        }
    }

    fn digest(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn failed_or_wrong_downloads_leave_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("kubelet");
        std::fs::write(&target, b"old verified").unwrap();
        let good = b"new kubelet".to_vec();
        let src = Flaky {
            body: good.clone(),
            fail_first: Cell::new(1),
        };
        let mut p = Progress::new("kubelet");
        let opts = WriteOptions::executable();
        let err = download_once(
            &src,
            &Spec {
                url: "x://k",
                gzip: false,
                want: &digest(&good),
                want_from: "the checksum file",
                target: &target,
                opts: &opts,
                limit: 1 << 20,
            },
            &mut p,
        )
        .unwrap_err();
        assert!(err.is_transient());
        assert_eq!(std::fs::read(&target).unwrap(), b"old verified");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file removed"
        );
        // Wrong digest: not transient, old file kept.
        let err = download_once(
            &src,
            &Spec {
                url: "x://k",
                gzip: false,
                want: &[0u8; 32],
                want_from: "the checksum file",
                target: &target,
                opts: &opts,
                limit: 1 << 20,
            },
            &mut p,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old verified");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Over the limit.
        let err = download_once(
            &src,
            &Spec {
                url: "x://k",
                gzip: false,
                want: &digest(&good),
                want_from: "the checksum file",
                target: &target,
                opts: &opts,
                limit: 4,
            },
            &mut p,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
        // Then success, with the mode.
        let n = download_once(
            &src,
            &Spec {
                url: "x://k",
                gzip: false,
                want: &digest(&good),
                want_from: "the checksum file",
                target: &target,
                opts: &opts,
                limit: 1 << 20,
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(n, good.len() as u64);
        assert_eq!(std::fs::read(&target).unwrap(), good);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn gzip_content_is_hashed_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("kubectl");
        let plain = b"kubectl binary".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let src = Flaky {
            body: gz.finish().unwrap(),
            fail_first: Cell::new(0),
        };
        let mut p = Progress::new("kubectl");
        download_once(
            &src,
            &Spec {
                url: "x://k.gz",
                gzip: true,
                want: &digest(&plain),
                want_from: "the checksum file",
                target: &target,
                opts: &WriteOptions::executable(),
                limit: 1 << 20,
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), plain);
        let err = download_once(
            &src,
            &Spec {
                url: "x://k.gz",
                gzip: true,
                want: &digest(&plain),
                want_from: "the checksum file",
                target: &target,
                opts: &WriteOptions::executable(),
                limit: 100,
            },
            &mut p,
        )
        .unwrap_err();
        assert!(
            matches!(err, FetchError::Local { .. } | FetchError::TooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn content_range_and_validators() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        for bad in [
            "bytes 100-99/200",
            "bytes 100-199/199",
            "bytes */200",
            "bytes +1-5/9",
            "items 1-2/3",
            "bytes 1-2",
        ] {
            assert_eq!(content_range_start(bad), None, "{bad}");
        }
        let lm = "Sun, 06 Dec 2026 03:00:00 GMT";
        assert_eq!(
            validator(Some("\"abc\""), Some(lm)).as_deref(),
            Some("\"abc\"")
        );
        assert_eq!(validator(Some("W/\"abc\""), Some(lm)).as_deref(), Some(lm));
        assert_eq!(validator(Some("W/\"abc\""), None), None);
        assert_eq!(validator(None, Some("yesterday")), None);
    }

    /// Serves `body` from the partial's offset, cutting each answer after `cut` bytes, as a
    /// mirror with ranges; `changed` is served for the first answer only (a file replaced
    /// between the halves, no validator).
    struct Ranged {
        body: Vec<u8>,
        changed: Option<Vec<u8>>,
        cut: usize,
        offsets: std::cell::RefCell<Vec<u64>>,
    }

    impl Fetch for Ranged {
        fn fetch(&self, _: &str, _: &mut dyn Write, _: u64) -> Result<(), FetchError> {
            unreachable!("downloads resume through fetch_from")
        }
        fn fetch_from(&self, url: &str, p: &mut Partial, _: u64) -> Result<(), FetchError> {
            let first = self.offsets.borrow().is_empty();
            let from = p.offset();
            self.offsets.borrow_mut().push(from);
            let body = match (&self.changed, first) {
                (Some(c), true) => c,
                _ => &self.body,
            };
            p.begin(from, None);
            let rest = &body[from as usize..];
            let n = rest.len().min(self.cut);
            p.write_all(&rest[..n]).unwrap();
            if n < rest.len() {
                return Err(FetchError::Transient {
                    url: url.into(),
                    detail: "connection reset".into(),
                });
            }
            Ok(())
        }
    }

    #[test]
    fn drops_resume_at_the_offset_and_a_spliced_file_starts_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("kubelet");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let policy = crate::retry::RetryPolicy::default();
        let opts = WriteOptions::executable();
        fn spec<'a>(want: &'a [u8; 32], target: &'a Path, opts: &'a WriteOptions) -> Spec<'a> {
            Spec {
                url: "x://k",
                gzip: false,
                want,
                want_from: "the checksum file",
                target,
                opts,
                limit: 1 << 20,
            }
        }
        let want = digest(&body);
        let src = Ranged {
            body: body.clone(),
            changed: None,
            cut: 100_000,
            offsets: Default::default(),
        };
        let mut p = Progress::quiet("kubelet");
        let staged = download(&src, &spec(&want, &target, &opts), &policy, &mut p).unwrap();
        assert_eq!(*src.offsets.borrow(), vec![0, 100_000, 200_000]);
        assert_eq!(
            (staged.attempts, staged.resumed, staged.restarted),
            (3, 2, 0)
        );
        assert!(!target.exists(), "nothing placed before place()");
        staged.place().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);

        // The first half came from another file: the digest catches it, the file starts over.
        let mut changed = body.clone();
        changed[5] ^= 1;
        let src = Ranged {
            body: body.clone(),
            changed: Some(changed),
            cut: 200_000,
            offsets: Default::default(),
        };
        let staged = download(&src, &spec(&want, &target, &opts), &policy, &mut p).unwrap();
        assert_eq!(*src.offsets.borrow(), vec![0, 200_000, 0, 200_000]);
        assert_eq!(staged.restarted, 1);
        staged.place().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);

        // A file that never matches fails after the one restart, and leaves no temp file.
        let src = Ranged {
            body: body.clone(),
            changed: None,
            cut: 200_000,
            offsets: Default::default(),
        };
        let err = download(&src, &spec(&[7u8; 32], &target, &opts), &policy, &mut p)
            .err()
            .unwrap();
        assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
        assert_eq!(*src.offsets.borrow(), vec![0, 200_000, 0, 200_000]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.yaml");
        std::fs::write(&p, b"abc").unwrap();
        let url = format!("file://{}", p.display());
        assert_eq!(fetch_small(&FileFetch, &url, 10).unwrap(), b"abc");
        assert!(matches!(
            fetch_small(&FileFetch, &url, 2),
            Err(FetchError::TooLarge { .. })
        ));
        assert!(matches!(
            fetch_small(&FileFetch, "file:///nonexistent/x", 2),
            Err(FetchError::Permanent { .. })
        ));
    }
}
