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
use serde_yaml_ng::{Mapping, Value};

use super::fetch::{self, Fetch, FetchError};
use super::manifest::{self, Artifact, Manifest};
use super::signature::SigningKey;
use super::signed::{self, ArtifactKey, SignedManifest};
use crate::error::{self, Class, Classify, ResultExt, WithClass};
use crate::fsutil::{self, TempFile, WriteOptions};

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

/// Why the manifest cannot be mirrored as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[allow(missing_docs)] // fields: the names say it
pub enum MirrorError {
    #[error("--mirror-url {url:?}: {reason}")]
    MirrorUrl { url: String, reason: String },
    #[error("{url}: {reason}; the mirror keeps each file at the path of its URL")]
    UnmirrorablePath { url: String, reason: String },
    #[error(
        "{first} and {second} would both be stored as {path}; the mirror keeps one file per path"
    )]
    PathClash {
        path: String,
        first: String,
        second: String,
    },
    #[error("the manifest: {0}")]
    Shape(String),
    #[error("Kubernetes {release} has no artifacts for {os}/{arch} in the manifest (drop that --arch, or use another manifest)")]
    NoArtifacts {
        release: String,
        os: String,
        arch: String,
    },
    #[error("artifact {what}: {reason}")]
    Artifact { what: String, reason: String },
    #[error("{0}")]
    Serial(String),
}

impl Classify for MirrorError {
    /// The operator's flags or the upstream manifest must change.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// One artifact to mirror: where its files come from and where they go (paths relative to
/// the mirror directory, which are also the paths under the mirror URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Release, OS, architecture, name: its line in the signed manifest.
    pub key: ArtifactKey,
    /// The artifact as the upstream manifest names it (URLs upstream).
    pub upstream: Artifact,
    /// The `uri` file.
    pub local: String,
    /// The `checksum_uri` file.
    pub checksum_local: String,
    /// The `gzip_uri` file, if any.
    pub gzip_local: Option<String>,
}

impl Item {
    fn what(&self) -> String {
        format!(
            "{} {} {}/{}",
            self.key.name, self.key.release, self.key.os, self.key.arch
        )
    }
}

/// The mirrored manifest and what it needs on the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `manifest.yaml` for the mirror, URLs rewritten.
    pub manifest: String,
    /// Every artifact, in manifest order.
    pub items: Vec<Item>,
    /// What was left out that an operator may want to know.
    pub notes: Vec<String>,
}

/// The patch releases to mirror: each of `wanted` (`1.31` = its latest patch, `1.31.2`
/// exactly), or with none given the latest patch of every minor version in the manifest.
pub fn select_releases(
    manifest: &Manifest,
    wanted: &[String],
) -> Result<Vec<String>, manifest::ManifestError> {
    let mut out: Vec<String> = Vec::new();
    let minors: Vec<String> = if wanted.is_empty() {
        manifest
            .supported_eks_releases
            .iter()
            .filter(|r| !r.patch_releases.is_empty())
            .map(|r| r.major_minor_version.clone())
            .collect()
    } else {
        wanted.to_vec()
    };
    for v in &minors {
        let version = manifest.select(v)?.version.clone();
        if !out.contains(&version) {
            out.push(version);
        }
    }
    Ok(out)
}

/// Where the file of `url` is kept: its path, without the leading `/`. Only plain path
/// segments (letters, digits, `.`, `_`, `-`, `+`, `~`; no `..`, no hidden names, no query)
/// are accepted, so nothing lands outside the mirror directory.
pub fn mirror_path(url: &str) -> Result<String, MirrorError> {
    let bad = |reason: &str| MirrorError::UnmirrorablePath {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let path = if let Some(p) = fetch::file_url_path(url) {
        p.display().to_string()
    } else {
        let parsed = crate::http::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        parsed.path_and_query().to_string()
    };
    if path.contains('?') {
        return Err(bad("it has a query string"));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for s in &segments {
        if s.is_empty() || s.starts_with('.') {
            return Err(bad("empty, `.`, `..` or hidden path segments"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
        {
            return Err(bad(&format!(
                "path segment {s:?} has characters other than letters, digits and . _ - + ~"
            )));
        }
    }
    let rel = segments.join("/");
    if rel == MANIFEST_NAME || rel == signed_name() {
        return Err(bad("it is the mirror's own manifest path"));
    }
    Ok(rel)
}

fn signed_name() -> String {
    super::signed_url(MANIFEST_NAME)
}

/// Checks a mirror URL: `https://host[:port][/path]` (what nodes fetch over the network) or
/// `file:///abs/path` (a mirror baked into the image); no query, no trailing file name magic.
pub fn check_mirror_url(url: &str) -> Result<String, MirrorError> {
    let bad = |reason: &str| MirrorError::MirrorUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let base = url.trim_end_matches('/');
    if let Some(path) = base.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad(
                "a file:// mirror URL needs an absolute path (file:///srv/mirror)",
            ));
        }
    } else if base.starts_with("https://") {
        let parsed = crate::http::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if parsed.path_and_query().contains('?') {
            return Err(bad("no query string"));
        }
    } else {
        return Err(bad(
            "it must be https:// (nodes refuse other schemes from a remote manifest) or file:///",
        ));
    }
    Ok(base.to_string())
}

/// The pure core: keeps the chosen `releases`, `os` and `arches` of the manifest `bytes`,
/// rewrites every artifact's URLs to `mirror_url` + the path [`mirror_path`] gives, and lists
/// what the mirror must hold.
pub fn plan(
    bytes: &[u8],
    releases: &[String],
    os: &str,
    arches: &[String],
    mirror_url: &str,
) -> Result<Plan, MirrorError> {
    let shape = |s: &str| MirrorError::Shape(s.to_string());
    let mut doc: Value =
        serde_yaml_ng::from_slice(bytes).map_err(|e| MirrorError::Shape(e.to_string()))?;
    let top = doc.as_mapping_mut().ok_or_else(|| shape("not a mapping"))?;
    let mut notes = Vec::new();
    for dropped in ["iam_roles_anywhere_releases", "ssm_releases"] {
        if top.remove(dropped).is_some_and(|v| !v.is_null()) {
            notes.push(format!(
                "{dropped} left out (hybridboot does not install them)"
            ));
        }
    }
    let eks = top
        .get_mut("supported_eks_releases")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| shape("no supported_eks_releases list"))?;
    let mut items = Vec::new();
    let mut by_path: BTreeMap<String, String> = BTreeMap::new();
    let mut kept_eks = Vec::new();
    for mut minor in std::mem::take(eks) {
        let m = minor
            .as_mapping_mut()
            .ok_or_else(|| shape("a supported_eks_releases entry is not a mapping"))?;
        let mut kept = Vec::new();
        if let Some(patches) = m.get_mut("patch_releases").and_then(Value::as_sequence_mut) {
            for mut patch in std::mem::take(patches) {
                let version = str_field(&patch, "version").unwrap_or_default();
                if !releases.contains(&version) {
                    continue;
                }
                let p = patch
                    .as_mapping_mut()
                    .ok_or_else(|| shape("a patch release is not a mapping"))?;
                let artifacts = p
                    .get_mut("artifacts")
                    .and_then(Value::as_sequence_mut)
                    .ok_or_else(|| shape(&format!("patch release {version} has no artifacts")))?;
                let mut kept_artifacts = Vec::new();
                for mut a in std::mem::take(artifacts) {
                    let item = item_of(&a, &version)?;
                    if item.key.os != os || !arches.contains(&item.key.arch) {
                        continue;
                    }
                    let item = place(item, &mut by_path)?;
                    rewrite(&mut a, &item, mirror_url, &mut notes)?;
                    kept_artifacts.push(a);
                    items.push(item);
                }
                for arch in arches {
                    if !items
                        .iter()
                        .any(|i| i.key.release == version && &i.key.arch == arch)
                    {
                        return Err(MirrorError::NoArtifacts {
                            release: version.clone(),
                            os: os.to_string(),
                            arch: arch.clone(),
                        });
                    }
                }
                *artifacts = kept_artifacts;
                kept.push(patch);
            }
        }
        if kept.is_empty() {
            continue;
        }
        // nodeadm's `latest_patch_version` must name a patch the mirror has.
        let latest = str_field(&minor, "latest_patch_version");
        let patch_numbers: Vec<String> = kept
            .iter()
            .filter_map(|p| str_field(p, "patch_version"))
            .collect();
        let m = minor
            .as_mapping_mut()
            .ok_or_else(|| shape("a supported_eks_releases entry is not a mapping"))?;
        if latest.is_some_and(|l| !patch_numbers.contains(&l)) {
            if let Some(highest) = patch_numbers
                .iter()
                .max_by_key(|p| p.parse::<u64>().unwrap_or(0))
            {
                m.insert(
                    "latest_patch_version".into(),
                    Value::String(highest.clone()),
                );
            }
        }
        if let Some(patches) = m.get_mut("patch_releases").and_then(Value::as_sequence_mut) {
            *patches = kept;
        }
        kept_eks.push(minor);
    }
    let top = doc.as_mapping_mut().ok_or_else(|| shape("not a mapping"))?;
    top.insert("supported_eks_releases".into(), Value::Sequence(kept_eks));
    for r in releases {
        if !items.iter().any(|i| &i.key.release == r) {
            return Err(shape(&format!(
                "patch release {r} has no artifacts to mirror"
            )));
        }
    }
    let manifest = serde_yaml_ng::to_string(&doc).map_err(|e| MirrorError::Shape(e.to_string()))?;
    Ok(Plan {
        manifest,
        items,
        notes,
    })
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The artifact of one manifest entry (not yet placed).
fn item_of(a: &Value, release: &str) -> Result<Item, MirrorError> {
    let field = |k: &str| str_field(a, k).unwrap_or_default();
    let (name, os, arch) = (field("name"), field("os"), field("arch"));
    if name.is_empty() || os.is_empty() || arch.is_empty() {
        return Err(MirrorError::Shape(format!(
            "an artifact of {release} lacks name, os or arch"
        )));
    }
    let gzip_uri = str_field(a, "gzip_uri").filter(|u| !u.is_empty());
    Ok(Item {
        key: ArtifactKey {
            release: release.to_string(),
            os,
            arch,
            name,
        },
        upstream: Artifact {
            name: field("name"),
            arch: field("arch"),
            os: field("os"),
            uri: field("uri"),
            checksum_uri: field("checksum_uri"),
            gzip_uri,
        },
        local: String::new(),
        checksum_local: String::new(),
        gzip_local: None,
    })
}

/// Gives `item` its mirror paths, refusing two URLs that would share one.
fn place(mut item: Item, by_path: &mut BTreeMap<String, String>) -> Result<Item, MirrorError> {
    let what = item.what();
    let need = |url: &str, field: &str| {
        if url.is_empty() {
            Err(MirrorError::Artifact {
                what: what.clone(),
                reason: format!("no {field} in the manifest"),
            })
        } else {
            Ok(())
        }
    };
    need(&item.upstream.uri, "uri")?;
    need(&item.upstream.checksum_uri, "checksum_uri")?;
    let mut claim = |url: &str| -> Result<String, MirrorError> {
        let path = mirror_path(url)?;
        match by_path.get(&path) {
            Some(first) if first != url => Err(MirrorError::PathClash {
                path,
                first: first.clone(),
                second: url.to_string(),
            }),
            _ => {
                by_path.insert(path.clone(), url.to_string());
                Ok(path)
            }
        }
    };
    item.local = claim(&item.upstream.uri)?;
    item.checksum_local = claim(&item.upstream.checksum_uri)?;
    item.gzip_local = match &item.upstream.gzip_uri {
        Some(g) => Some(claim(g)?),
        None => None,
    };
    Ok(item)
}

/// Points an artifact entry's URLs at the mirror; URL fields this version does not mirror
/// are dropped (the mirrored manifest names nothing outside the mirror).
fn rewrite(
    a: &mut Value,
    item: &Item,
    mirror_url: &str,
    notes: &mut Vec<String>,
) -> Result<(), MirrorError> {
    let m: &mut Mapping = a
        .as_mapping_mut()
        .ok_or_else(|| MirrorError::Shape("an artifact is not a mapping".into()))?;
    let url = |rel: &str| Value::String(format!("{mirror_url}/{rel}"));
    let unknown: Vec<Value> = m
        .keys()
        .filter(|k| {
            k.as_str().is_some_and(|k| {
                k.ends_with("uri") && !["uri", "checksum_uri", "gzip_uri"].contains(&k)
            })
        })
        .cloned()
        .collect();
    for k in unknown {
        notes.push(format!(
            "{}: field {} left out (not mirrored by this version)",
            item.what(),
            k.as_str().unwrap_or_default()
        ));
        m.remove(&k);
    }
    m.insert("uri".into(), url(&item.local));
    m.insert("checksum_uri".into(), url(&item.checksum_local));
    match &item.gzip_local {
        Some(g) => {
            m.insert("gzip_uri".into(), url(g));
        }
        None => {
            m.remove("gzip_uri");
        }
    }
    Ok(())
}

/// The serial of a new signed manifest: `requested` if given (refused when below the one
/// already published, which nodes that installed from it would refuse), else the current UNIX
/// time in seconds, or one more than the published serial if that is not below it.
pub fn choose_serial(
    requested: Option<u64>,
    published: Option<u64>,
    now: SystemTime,
) -> Result<u64, MirrorError> {
    match (requested, published) {
        (Some(r), Some(p)) if r < p => Err(MirrorError::Serial(format!(
            "--serial {r} is below serial {p} of the signed manifest already in the mirror directory: nodes that installed from it would refuse the new one (pass --serial {p} or more, or leave --serial out)"
        ))),
        (Some(r), _) => Ok(r),
        (None, p) => {
            let now = u64::try_from(crate::time::unix_seconds(now)).unwrap_or(0);
            match p {
                Some(p) if p >= now => p.checked_add(1).ok_or_else(|| {
                    MirrorError::Serial(format!("the published serial {p} cannot grow"))
                }),
                _ => Ok(now),
            }
        }
    }
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
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_NAME);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
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
    // Present: the compressed file on disk decompresses to the checksum (which also
    // re-creates the plain file from it, through the same verified path).
    if gz_target.is_file() {
        let local_url = format!("file://{}", gz_target.display());
        let mut progress = fetch::Progress::new(&a.name);
        let local_spec = spec(&local_url, true, want, &a.checksum_uri, &target, &opts);
        match fetch::download_once(&fetch::FileFetch, &local_spec, &mut progress) {
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

    const UPSTREAM: &str = r#"
supported_eks_releases:
- latest_patch_version: "2"
  major_minor_version: "1.31"
  patch_releases:
  - version: 1.31.1
    patch_version: "1"
    release_date: "2026-10-01"
    artifacts:
    - {name: kubelet, arch: amd64, os: linux, uri: "https://up.example/releases/v1.31.1/bin/linux/amd64/kubelet", checksum_uri: "https://up.example/releases/v1.31.1/bin/linux/amd64/kubelet.sha256"}
  - version: 1.31.2
    patch_version: "2"
    release_date: "2026-11-01"
    artifacts:
    - {name: kubelet, arch: amd64, os: linux, uri: "https://up.example/releases/v1.31.2/bin/linux/amd64/kubelet", checksum_uri: "https://up.example/releases/v1.31.2/bin/linux/amd64/kubelet.sha256", gzip_uri: "https://up.example/releases/v1.31.2/bin/linux/amd64/kubelet.gz"}
    - {name: kubelet, arch: arm64, os: linux, uri: "https://up.example/releases/v1.31.2/bin/linux/arm64/kubelet", checksum_uri: "https://up.example/releases/v1.31.2/bin/linux/arm64/kubelet.sha256", zstd_uri: "https://up.example/k.zst"}
- major_minor_version: "1.30"
  latest_patch_version: "7"
  patch_releases:
  - version: 1.30.7
    patch_version: "7"
    artifacts:
    - {name: kubelet, arch: amd64, os: linux, uri: "https://up.example/releases/v1.30.7/kubelet", checksum_uri: "https://up.example/releases/v1.30.7/kubelet.sha256"}
iam_roles_anywhere_releases:
- {version: 1.2.0, artifacts: [{name: aws_signing_helper, arch: amd64, os: linux, uri: "https://up.example/h", checksum_uri: "https://up.example/h.sha256"}]}
region_config: {us-east-1: {partition: aws}}
ssm_releases: null
"#;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The plan for UPSTREAM's `releases` on linux/`arches`.
    fn plan_of(releases: &[&str], arches: &[&str], url: &str) -> Result<Plan, MirrorError> {
        plan(UPSTREAM.as_bytes(), &v(releases), "linux", &v(arches), url)
    }

    #[test]
    fn selects_the_latest_patch_of_each_minor_or_what_is_asked() {
        let m = Manifest::parse(UPSTREAM.as_bytes()).unwrap();
        assert_eq!(select_releases(&m, &[]).unwrap(), v(&["1.31.2", "1.30.7"]));
        assert_eq!(
            select_releases(&m, &v(&["1.31.1", "1.31", "1.31.2"])).unwrap(),
            v(&["1.31.1", "1.31.2"])
        );
        assert!(select_releases(&m, &v(&["1.29"])).is_err());
    }

    #[test]
    fn rewrites_urls_keeps_the_chosen_releases_and_drops_the_rest() {
        let p = plan_of(&["1.31.1"], &["amd64"], "https://mirror.example/eks").unwrap();
        assert!(!p.manifest.contains("up.example"), "{}", p.manifest);
        assert!(
            !p.manifest.contains("1.31.2") && !p.manifest.contains("1.30"),
            "{}",
            p.manifest
        );
        assert!(
            p.manifest.contains("release_date: 2026-10-01"),
            "{}",
            p.manifest
        );
        assert!(p.manifest.contains("region_config"), "{}", p.manifest);
        assert!(!p.manifest.contains("aws_signing_helper"), "{}", p.manifest);
        // The latest patch named must be one the mirror has.
        let m = Manifest::parse(p.manifest.as_bytes()).unwrap();
        assert_eq!(m.supported_eks_releases[0].latest_patch_version, "1");
        let a = &m.select("1.31").unwrap().artifacts[0];
        assert_eq!(
            a.uri,
            "https://mirror.example/eks/releases/v1.31.1/bin/linux/amd64/kubelet"
        );
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].local, "releases/v1.31.1/bin/linux/amd64/kubelet");
        assert_eq!(
            p.items[0].upstream.uri,
            "https://up.example/releases/v1.31.1/bin/linux/amd64/kubelet"
        );
    }

    #[test]
    fn gzip_and_unknown_url_fields() {
        let p = plan_of(&["1.31.2"], &["amd64", "arm64"], "file:///srv/m").unwrap();
        let m = Manifest::parse(p.manifest.as_bytes()).unwrap();
        let arts = &m.select("1.31.2").unwrap().artifacts;
        assert_eq!(
            arts[0].gzip_uri.as_deref(),
            Some("file:///srv/m/releases/v1.31.2/bin/linux/amd64/kubelet.gz")
        );
        assert!(!p.manifest.contains("zstd_uri"), "{}", p.manifest);
        assert!(
            p.notes.iter().any(|n| n.contains("zstd_uri")),
            "{:?}",
            p.notes
        );
        assert_eq!(
            p.items[0].gzip_local.as_deref(),
            Some("releases/v1.31.2/bin/linux/amd64/kubelet.gz")
        );
    }

    #[test]
    fn an_architecture_the_release_lacks_is_refused() {
        let err = plan_of(&["1.31.1"], &["amd64", "arm64"], "https://m").unwrap_err();
        assert!(
            matches!(err, MirrorError::NoArtifacts { ref arch, .. } if arch == "arm64"),
            "{err}"
        );
    }

    #[test]
    fn paths_stay_inside_the_mirror() {
        assert_eq!(
            mirror_path("https://h:8443/a/b-1.2_3+x~/c.tgz").unwrap(),
            "a/b-1.2_3+x~/c.tgz"
        );
        assert_eq!(
            mirror_path("file:///store/common/kubectl").unwrap(),
            "store/common/kubectl"
        );
        for bad in [
            "https://h/a/../b",
            "https://h/a//b",
            "https://h/a/./b",
            "https://h/.hidden",
            "https://h/a%2f..",
            "https://h/a?x=1",
            "https://h/",
            "https://h/manifest.yaml",
            "https://h/manifest.yaml.signed",
            "ftp://h/a",
        ] {
            assert!(mirror_path(bad).is_err(), "{bad}");
        }
        // Two URLs, one path.
        let clash = UPSTREAM.replace(
            "uri: \"https://up.example/releases/v1.31.2/bin/linux/amd64/kubelet\"",
            "uri: \"https://up2.example/releases/v1.31.1/bin/linux/amd64/kubelet\"",
        );
        let err = plan(
            clash.as_bytes(),
            &v(&["1.31.1", "1.31.2"]),
            "linux",
            &v(&["amd64"]),
            "https://m",
        )
        .unwrap_err();
        assert!(matches!(err, MirrorError::PathClash { .. }), "{err}");
    }

    #[test]
    fn mirror_urls() {
        assert_eq!(
            check_mirror_url("https://m.example/base/").unwrap(),
            "https://m.example/base"
        );
        assert_eq!(
            check_mirror_url("file:///srv/mirror").unwrap(),
            "file:///srv/mirror"
        );
        for bad in [
            "http://m.example",
            "file://rel",
            "m.example",
            "https://m/?a=1",
        ] {
            assert!(check_mirror_url(bad).is_err(), "{bad}");
        }
    }

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

    #[test]
    fn serials_only_grow() {
        let now = crate::time::from_unix_seconds(1_800_000_000);
        assert_eq!(choose_serial(None, None, now).unwrap(), 1_800_000_000);
        assert_eq!(choose_serial(None, Some(5), now).unwrap(), 1_800_000_000);
        assert_eq!(
            choose_serial(None, Some(2_000_000_000), now).unwrap(),
            2_000_000_001
        );
        assert_eq!(choose_serial(Some(7), Some(7), now).unwrap(), 7);
        assert!(choose_serial(Some(6), Some(7), now).is_err());
        assert!(choose_serial(None, Some(u64::MAX), now).is_err());
    }
}
