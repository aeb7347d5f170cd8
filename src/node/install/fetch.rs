//! Getting bytes from a URL into a writer (`file://` here; `https://` through the project's one
//! HTTP client), and the verified download: temp file beside the target, SHA-256 while
//! streaming, rename only after the digest matches.

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
        })
    }
}

impl Fetch for HttpFetch {
    fn fetch(&self, url: &str, sink: &mut dyn Write, limit: u64) -> Result<(), FetchError> {
        use crate::http::{HttpError, Redirects, Request, Url};
        let parsed = Url::parse(url).map_err(|e| FetchError::Permanent {
            url: url.into(),
            detail: e.to_string(),
        })?;
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        match self.client.download(
            &Request::get(parsed).redirects(Redirects::Download),
            sink,
            limit_usize,
        ) {
            Ok(_) => Ok(()),
            Err(HttpError::TooLarge { .. }) => Err(FetchError::TooLarge {
                url: url.into(),
                limit,
            }),
            Err(e) if e.is_transient() => Err(FetchError::Transient {
                url: url.into(),
                detail: e.to_string(),
            }),
            Err(e) => Err(FetchError::Permanent {
                url: url.into(),
                detail: e.to_string(),
            }),
        }
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
        let now = Instant::now();
        Progress {
            name: name.to_string(),
            live: io::stderr().is_terminal(),
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
