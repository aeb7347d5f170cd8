//! `hybridboot sync-artifacts`: the mirror operator's side of install (nodeadm's
//! `sync-artifacts`, writing into a directory instead of S3, and signing what it publishes).
//!
//! From a release manifest (nodeadm's schema) it takes the chosen patch releases, OS and
//! architectures, downloads every artifact through install's own verified download
//! ([`super::fetch::download_once`]: temporary file beside the target, SHA-256 while streaming,
//! renamed into place only when it matches the published checksum), into
//! `DIR/<the URL's path>`; then writes `DIR/manifest.yaml` naming the mirror's URLs and
//! `DIR/manifest.yaml.signed` ([`super::signed`]) binding that manifest's bytes and every
//! artifact's content digest, signed with the operator's Ed25519 key.
//!
//! A `gzip_uri` artifact is fetched once, compressed: the decompressed stream is what is
//! verified (and becomes the `uri` file), the compressed bytes are kept for the `gzip_uri` file.
//! Files already present with the right content are not fetched again. The manifest and the
//! signed manifest are written last, only once every artifact is in place.
//!
//! The mirrored manifest names only what the mirror carries: the chosen patch releases, with
//! the chosen OS and architectures. The aws_signing_helper and SSM releases are left out
//! (hybridboot is its own credential process and installs neither); other fields are kept as
//! they were.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::fetch::{self, Fetch, FetchError};
use super::manifest::{self, Manifest};
use super::signature::SigningKey;
use super::signed::{self, ArtifactKey, SignedManifest};

mod plan;
use crate::error::{self, Class, ResultExt, WithClass};
use crate::fsutil::{self, TempFile, WriteOptions};
use plan::signed_name;
pub use plan::{
    check_mirror_url, choose_serial, mirror_path, plan, select_releases, Item, MirrorError, Plan,
};

/// The manifest's file name in the mirror directory.
pub const MANIFEST_NAME: &str = "manifest.yaml";

/// What to mirror, from where, to where, signed with what. Built by `hybridboot sync-artifacts`.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// The upstream release manifest: `https://...`, `file:///...` or a plain path.
    pub manifest: String,
    /// `1.31` (latest patch) or `1.31.2`; empty: the latest patch of every minor version.
    pub kubernetes_versions: Vec<String>,
    /// The artifacts' OS (`linux`).
    pub os: String,
    /// The artifacts' architectures (`amd64`, `arm64`).
    pub arches: Vec<String>,
    /// The directory the web server publishes.
    pub dir: PathBuf,
    /// The URL under which `dir` is served (`https://mirror.example/eks`), or `file:///...`
    /// for a mirror baked into an image.
    pub mirror_url: String,
    /// Ed25519 private key (PEM PKCS#8, mode 0600) that signs the manifest.
    pub signing_key: PathBuf,
    /// The signed manifest's serial [default: see [`choose_serial`]].
    pub serial: Option<u64>,
    /// When the signed manifest stops being accepted.
    pub expires: Option<SystemTime>,
    /// CAs of the upstream's TLS certificate (replaces the built-in roots).
    pub ca_bundle: Option<PathBuf>,
    /// How long one download keeps being retried while the upstream fails transiently.
    pub retry_deadline: Duration,
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The manifest written.
    pub manifest: PathBuf,
    /// Its SHA-256.
    pub manifest_sha256: [u8; 32],
    /// The signed manifest written.
    pub signed: PathBuf,
    /// Its serial.
    pub serial: u64,
    /// Patch releases mirrored.
    pub releases: Vec<String>,
    /// Artifacts (release, OS, architecture, name) signed.
    pub artifacts: usize,
    /// Files downloaded this run.
    pub downloaded: usize,
    /// Files that were already present with the right content.
    pub present: usize,
}

/// Writes what a reader sees into two writers (the download's sink and a copy).
struct Both<'a> {
    first: &'a mut dyn Write,
    second: &'a mut dyn Write,
}

impl Write for Both<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.first.write(buf)?;
        self.second.write_all(&buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.first.flush()?;
        self.second.flush()
    }
}

/// A source whose bytes are also copied, as fetched, into a file: the compressed `gzip_uri`
/// file while the download verifies its decompressed content.
struct Tee<'a> {
    inner: &'a dyn Fetch,
    copy: RefCell<&'a mut std::fs::File>,
}

impl Fetch for Tee<'_> {
    fn fetch(&self, url: &str, sink: &mut dyn Write, limit: u64) -> Result<(), FetchError> {
        let mut copy = self.copy.borrow_mut();
        let mut both = Both {
            first: sink,
            second: &mut **copy,
        };
        self.inner.fetch(url, &mut both, limit)
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Downloaded,
    Present,
}

/// `hybridboot sync-artifacts`: mirrors, then writes the manifest and the signed manifest.
pub fn sync(settings: &MirrorSettings) -> anyhow::Result<Summary> {
    let mirror_url = check_mirror_url(&settings.mirror_url).classed()?;
    if settings.arches.is_empty() {
        return Err(error::operator("--arch: give at least one architecture"));
    }
    let now = SystemTime::now();
    if settings.expires.is_some_and(|e| e <= now) {
        return Err(error::operator(
            "--expires is in the past: nodes would refuse the signed manifest",
        ));
    }
    // The key first: a mistake there should not cost a download.
    let key = SigningKey::from_file(&settings.signing_key).classed()?;
    let dir = &settings.dir;
    fsutil::create_dir_all(dir)
        .with_context(|| format!("creating the mirror directory {}", dir.display()))
        .with_class(Class::Operator)?;
    let _lock = lock(dir)?;
    let signed_path = dir.join(signed_name());
    let serial = choose_serial(settings.serial, published_serial(&signed_path)?, now).classed()?;

    let manifest_url = manifest_url(&settings.manifest)?;
    let src = super::sources(settings.ca_bundle.as_deref())?;
    let deadline = settings.retry_deadline;
    let (bytes, _) = super::with_retries_until("manifest", deadline, |_| {
        fetch::fetch_small(&src, &manifest_url, manifest::MAX_MANIFEST_BYTES as u64)
    })
    .classed()
    .with_context(|| format!("fetching the manifest {manifest_url}"))?;
    let parsed = Manifest::parse(&bytes)
        .classed()
        .with_context(|| manifest_url.clone())?;
    let releases = select_releases(&parsed, &settings.kubernetes_versions)
        .classed()
        .with_context(|| manifest_url.clone())?;
    let plan = plan(
        &bytes,
        &releases,
        &settings.os,
        &settings.arches,
        &mirror_url,
    )
    .classed()
    .with_context(|| manifest_url.clone())?;
    for n in &plan.notes {
        log::info!("{n}");
    }
    log::info!(
        "mirroring Kubernetes {} ({}/{}) from {manifest_url} into {}: {} artifacts",
        releases.join(", "),
        settings.os,
        settings.arches.join(","),
        dir.display(),
        plan.items.len()
    );

    // Refused before anything is fetched, as install refuses them.
    for item in &plan.items {
        super::check_scheme(&manifest_url, &item.upstream)?;
    }
    let mut digests: BTreeMap<ArtifactKey, [u8; 32]> = BTreeMap::new();
    // Files done this run (artifacts shared by releases are fetched once).
    let mut done: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    let (mut downloaded, mut present) = (0, 0);
    for item in &plan.items {
        let (want, outcome) = sync_item(&src, dir, item, deadline, &mut done)
            .with_context(|| format!("artifact {}", item.what()))?;
        match outcome {
            Some(Outcome::Downloaded) => downloaded += 1,
            Some(Outcome::Present) => present += 1,
            None => {}
        }
        match digests.insert(item.key.clone(), want) {
            Some(other) if other != want => {
                return Err(MirrorError::Artifact {
                    what: item.what(),
                    reason: "listed twice with different content".into(),
                })
                .classed()
            }
            _ => {}
        }
    }

    let manifest_path = dir.join(MANIFEST_NAME);
    let manifest_sha256: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(plan.manifest.as_bytes()).into()
    };
    let content = SignedManifest {
        serial,
        expires: settings.expires,
        manifest_sha256,
        artifacts: digests,
    };
    let body = content.render_body();
    let document = signed::assemble(&body, &key.sign(body.as_bytes()));
    // What a node will do with it, before it is published.
    signed::open(
        document.as_bytes(),
        &key.public_key(),
        &signed_path.display().to_string(),
    )
    .and_then(|s| {
        s.check(
            plan.manifest.as_bytes(),
            now,
            None,
            "the new signed manifest",
        )
        .map(|()| s)
    })
    .classed()
    .context("checking the new signed manifest")?;
    fsutil::atomic_write(
        &manifest_path,
        plan.manifest.as_bytes(),
        &WriteOptions::public(),
    )
    .with_context(|| format!("writing {}", manifest_path.display()))?;
    fsutil::atomic_write(&signed_path, document.as_bytes(), &WriteOptions::public())
        .with_context(|| format!("writing {}", signed_path.display()))?;
    log::info!(
        "{} and {} written (serial {serial}, {} artifact digests)",
        manifest_path.display(),
        signed_path.display(),
        content.artifacts.len()
    );
    Ok(Summary {
        manifest: manifest_path,
        manifest_sha256,
        signed: signed_path,
        serial,
        releases,
        artifacts: content.artifacts.len(),
        downloaded,
        present,
    })
}

/// The lock file that keeps two runs from publishing into one directory at once (a timer that
/// fires while the last run still downloads): otherwise their manifests and signed manifests
/// could end up from different runs.
pub const LOCK_NAME: &str = ".sync-artifacts.lock";

/// Takes the mirror directory's lock, or fails (transient: the other run ends) if another
/// run holds it. Released when the returned file is dropped.
fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(LOCK_NAME);
    let file = fsutil::open_lock_file(&path)?;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(error::transient(format!(
                    "another sync-artifacts is publishing into {} (it holds {}); run again when it has finished",
                    dir.display(),
                    path.display()
                )))
            }
            Err(e) => {
                return Err(io::Error::from(e))
                    .with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// Where a compressed file already in the mirror is decompressed to be checked.
const GUNZIP_CHECK_NAME: &str = ".sync-artifacts.gunzip-check";

/// `https://...` and `file://...` as given; a plain path becomes a `file://` URL.
fn manifest_url(given: &str) -> anyhow::Result<String> {
    if given.contains("://") {
        return Ok(given.to_string());
    }
    let abs = std::path::absolute(given)
        .with_context(|| format!("--manifest {given}"))
        .with_class(Class::Operator)?;
    Ok(format!("file://{}", abs.display()))
}

/// The serial of the signed manifest already in the mirror directory, if any (read, not
/// verified: it only keeps the new serial from going below it).
fn published_serial(path: &Path) -> anyhow::Result<Option<u64>> {
    let bytes = match fsutil::read_capped(path, signed::MAX_SIGNED_BYTES as u64) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let source = path.display().to_string();
    let serial = signed::split(&bytes, &source)
        .and_then(|(body, _)| signed::parse_body(body, &source))
        .map(|s| s.serial)
        .classed()
        .context("the mirror directory's signed manifest is unreadable: remove it (nodes keep the serial they installed from; pass --serial above it)")?;
    Ok(Some(serial))
}

/// Fetches the checksum, then the artifact (unless present); writes the checksum file once the
/// artifact is in place. Returns the content digest and what happened (`None`: done earlier in
/// this run).
fn sync_item(
    src: &dyn Fetch,
    dir: &Path,
    item: &Item,
    deadline: Duration,
    done: &mut BTreeMap<String, [u8; 32]>,
) -> anyhow::Result<([u8; 32], Option<Outcome>)> {
    let a = &item.upstream;
    let (text, _) = super::with_retries_until(&a.checksum_uri, deadline, |_| {
        fetch::fetch_small(src, &a.checksum_uri, manifest::MAX_CHECKSUM_BYTES as u64)
    })
    .classed()
    .context("fetching its checksum")?;
    let file_name = a.uri.rsplit('/').next().unwrap_or(&a.name);
    let want = manifest::parse_checksum(&text, &a.name, file_name)
        .classed()
        .with_context(|| a.checksum_uri.clone())?;
    if let Some(earlier) = done.get(&item.local) {
        if *earlier == want {
            return Ok((want, None));
        }
        return Err(MirrorError::Artifact {
            what: item.what(),
            reason: format!(
                "{} has another checksum than an earlier artifact stored at the same path",
                a.checksum_uri
            ),
        })
        .classed();
    }
    let outcome = match &item.gzip_local {
        None => sync_plain(src, dir, item, &want, deadline)?,
        Some(gz) => sync_gzip(src, dir, item, gz, &want, deadline)?,
    };
    let checksum_path = dir.join(&item.checksum_local);
    if fetch::sha256_file(&checksum_path)
        .ok()
        .flatten()
        .is_none_or(|d| d != sha256(&text))
    {
        fsutil::atomic_write(&checksum_path, &text, &WriteOptions::public())
            .with_context(|| format!("writing {}", checksum_path.display()))?;
    }
    done.insert(item.local.clone(), want);
    Ok((want, Some(outcome)))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

fn spec<'a>(
    url: &'a str,
    gzip: bool,
    want: &'a [u8; 32],
    want_from: &'a str,
    target: &'a Path,
    opts: &'a WriteOptions,
) -> fetch::Spec<'a> {
    fetch::Spec {
        url,
        gzip,
        want,
        want_from,
        target,
        opts,
        limit: super::MAX_ARTIFACT_BYTES,
    }
}

fn sync_plain(
    src: &dyn Fetch,
    dir: &Path,
    item: &Item,
    want: &[u8; 32],
    deadline: Duration,
) -> anyhow::Result<Outcome> {
    let target = dir.join(&item.local);
    let current =
        fetch::sha256_file(&target).with_context(|| format!("reading {}", target.display()))?;
    if current.as_ref() == Some(want) {
        log::info!(
            "{}: {} already present (sha256 {}); not downloaded",
            item.what(),
            item.local,
            hex::encode(want)
        );
        return Ok(Outcome::Present);
    }
    let opts = WriteOptions::public();
    let a = &item.upstream;
    let started = std::time::Instant::now();
    let (bytes, _) = super::with_retries_until(&a.name, deadline, |_| {
        let mut progress = fetch::Progress::new(&a.name);
        fetch::download_once(
            src,
            &spec(&a.uri, false, want, &a.checksum_uri, &target, &opts),
            &mut progress,
        )
    })
    .classed()?;
    log::info!(
        "{}: {} downloaded ({}, {}, sha256 {})",
        item.what(),
        item.local,
        fetch::human(bytes),
        fetch::rate(bytes, started),
        hex::encode(want)
    );
    Ok(Outcome::Downloaded)
}

/// A `gzip_uri` artifact: the compressed file is fetched once; its decompressed content must
/// have the checksum and becomes the `uri` file, its bytes as fetched the `gzip_uri` file
/// (renamed into place only after the content matched).
fn sync_gzip(
    src: &dyn Fetch,
    dir: &Path,
    item: &Item,
    gz: &str,
    want: &[u8; 32],
    deadline: Duration,
) -> anyhow::Result<Outcome> {
    let a = &item.upstream;
    let gz_url = a.gzip_uri.as_deref().unwrap_or_default();
    let target = dir.join(&item.local);
    let gz_target = dir.join(gz);
    let opts = WriteOptions::public();
    // Present: the compressed file on disk decompresses to the checksum, checked through the
    // same verified path. Its output goes to the plain file when that is missing or wrong,
    // else to a scratch file removed afterwards (a published file that is right is not
    // rewritten: tools that copy the mirror on would see it changed).
    if gz_target.is_file() {
        let local_url = format!("file://{}", gz_target.display());
        let mut progress = fetch::Progress::new(&a.name);
        let plain_ok = fetch::sha256_file(&target).ok().flatten().as_ref() == Some(want);
        let scratch = dir.join(GUNZIP_CHECK_NAME);
        let check_target = if plain_ok { &scratch } else { &target };
        let local_spec = spec(&local_url, true, want, &a.checksum_uri, check_target, &opts);
        let checked = fetch::download_once(&fetch::FileFetch, &local_spec, &mut progress);
        if plain_ok {
            fsutil::remove_file(&scratch)
                .with_context(|| format!("removing {}", scratch.display()))?;
        }
        match checked {
            Ok(_) => {
                log::info!(
                    "{}: {gz} and {} already present (content sha256 {}); not downloaded",
                    item.what(),
                    item.local,
                    hex::encode(want)
                );
                return Ok(Outcome::Present);
            }
            Err(e @ FetchError::Local { .. }) => return Err(e).classed(),
            Err(e) => log::warn!(
                "{}: the copy in the mirror is not right ({e}); fetching it again",
                item.what()
            ),
        }
    }
    let started = std::time::Instant::now();
    let (bytes, _) = super::with_retries_until(&a.name, deadline, |_| {
        let local = |source| FetchError::Local {
            path: gz_target.clone(),
            source,
        };
        let tmp = TempFile::create(&gz_target, &opts).map_err(local)?;
        let mut failure = None;
        let mut written = 0;
        let committed = tmp.commit(|file| {
            let tee = Tee {
                inner: src,
                copy: RefCell::new(file),
            };
            let mut progress = fetch::Progress::new(&a.name);
            match fetch::download_once(
                &tee,
                &spec(gz_url, true, want, &a.checksum_uri, &target, &opts),
                &mut progress,
            ) {
                Ok(n) => {
                    written = n;
                    Ok(())
                }
                Err(e) => {
                    failure = Some(e);
                    Err(io::Error::other("download failed"))
                }
            }
        });
        match (committed, failure) {
            (Ok(()), _) => Ok(written),
            (Err(_), Some(f)) => Err(f),
            (Err(e), None) => Err(local(e)),
        }
    })
    .classed()?;
    log::info!(
        "{}: {gz} downloaded and {} verified from it ({} decompressed, {}, sha256 {})",
        item.what(),
        item.local,
        fetch::human(bytes),
        fetch::rate(bytes, started),
        hex::encode(want)
    );
    Ok(Outcome::Downloaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_serial_is_read_unverified_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(signed_name());
        assert_eq!(published_serial(&p).unwrap(), None);
        let body = SignedManifest {
            serial: 42,
            expires: None,
            manifest_sha256: [0; 32],
            artifacts: BTreeMap::new(),
        }
        .render_body();
        std::fs::write(&p, signed::assemble(&body, &[0u8; 64])).unwrap();
        assert_eq!(published_serial(&p).unwrap(), Some(42));
        std::fs::write(&p, "not a signed manifest\n").unwrap();
        let err = published_serial(&p).unwrap_err();
        assert_eq!(crate::error::class_of(&err), Class::Operator);
        assert!(format!("{err:#}").contains("remove it"), "{err:#}");
    }
}
