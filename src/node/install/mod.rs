//! `hybridboot install` and `uninstall`: the Kubernetes node artifacts `nodeadm install` places,
//! but verified before anything is placed.
//!
//! Differences from nodeadm, on purpose: every file is downloaded to a temporary file beside
//! its final path, hashed while streaming and renamed into place only when the SHA-256 matches
//! the published checksum (nodeadm writes first and checks afterwards); with
//! `--manifest-public-key` a signed manifest ([`signed`], `<manifest>.signed`) is verified before
//! any artifact is fetched and then decides every digest (the unsigned checksum files are not
//! used), a remote manifest may name only `https://` URLs, and a signed manifest older than the
//! one this node installed from is refused; files that
//! already match are not fetched again; the CNI tarball is extracted by a strict, flat-only
//! extractor ([`cni`]). Artifacts download side by side ([`parallel::DOWNLOADS_AT_ONCE`]), a
//! dropped download resumes where it stopped ([`fetch::download`]), and nothing is placed until
//! every download of the set has matched its digest. The IAM Roles Anywhere credential process is hybridboot itself (the key
//! stays in the TPM/HSM), so `aws_signing_helper` is not installed, yet the tracker still says
//! `IamRolesAnywhere: true`: that capability is present.
//!
//! State: nodeadm's tracker format at [`TRACKER_PATH`], plus [`RECORD_PATH`] (JSON) with every
//! placed file and its hash, which `uninstall` and re-runs use.

#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod cni;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod fetch;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod manifest;
pub mod mirror;
pub mod parallel;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod signature;
pub mod signed;
pub mod stage;
mod uninstall;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::{self, Class, Classify, ResultExt, WithClass};
use crate::fsutil::{self, WriteOptions};
use fetch::{Fetch, FetchError};
use manifest::{Artifact, Manifest};
pub use uninstall::{uninstall, UninstallSettings};

/// nodeadm's release manifest.
pub const DEFAULT_MANIFEST: &str = "https://hybrid-assets.eks.amazonaws.com/manifest.yaml";
/// nodeadm's tracker content, at a hybridboot path (nodeadm's is `/opt/nodeadm/tracker`).
pub const TRACKER_PATH: &str = "/var/lib/hybridboot/tracker";
/// What install placed, with hashes (JSON), for uninstall and re-runs.
pub const RECORD_PATH: &str = "/var/lib/hybridboot/installed.json";
/// Where the CNI plugins go.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Largest single artifact accepted.
pub const MAX_ARTIFACT_BYTES: u64 = 512 * 1024 * 1024;

/// Where each manifest artifact goes and which tracker field it sets.
struct Placement {
    artifact: &'static str,
    path: &'static str,
    tracker: &'static str,
    required: bool,
}

const PLACEMENTS: &[Placement] = &[
    Placement {
        artifact: "kubelet",
        path: "/usr/bin/kubelet",
        tracker: "Kubelet",
        required: true,
    },
    Placement {
        artifact: "kubectl",
        path: "/usr/local/bin/kubectl",
        tracker: "Kubectl",
        required: true,
    },
    Placement {
        artifact: "cni-plugins",
        path: CNI_BIN_DIR,
        tracker: "CniPlugins",
        required: true,
    },
    Placement {
        artifact: "aws-iam-authenticator",
        path: "/usr/local/bin/aws-iam-authenticator",
        tracker: "IamAuthenticator",
        required: false,
    },
    Placement {
        artifact: "ecr-credential-provider",
        path: crate::node::render::DEFAULT_ECR_CREDENTIAL_PROVIDER,
        tracker: "ImageCredentialProvider",
        required: false,
    },
    // Only with --containerd-source distro, when the mirror carries the distribution's builds.
    Placement {
        artifact: "containerd",
        path: "/usr/bin/containerd",
        tracker: "Containerd",
        required: false,
    },
    Placement {
        artifact: "runc",
        path: "/usr/sbin/runc",
        tracker: "Containerd",
        required: false,
    },
];

/// Where containerd comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdSource {
    /// containerd is not managed by hybridboot.
    None,
    /// The distribution's containerd: from the image, or from the mirror when the manifest
    /// lists `containerd`/`runc` artifacts.
    Distro,
}

/// What `install` installs, from where, and under which root. Built by the command line
/// (`hybridboot install`) or by first boot from `spec.install`.
#[derive(Debug, Clone)]
pub struct InstallSettings {
    /// Kubernetes version: `1.31` (latest patch in the manifest) or `1.31.2` (exactly).
    pub kubernetes_version: String,
    /// Release manifest (nodeadm's schema): https://... or file:///... [`DEFAULT_MANIFEST`].
    pub manifest: String,
    /// Ed25519 public key (PEM or base64) that must have signed the manifest.
    pub manifest_public_key: Option<PathBuf>,
    /// Install under this directory instead of `/`.
    pub root: PathBuf,
    /// Where containerd comes from.
    pub containerd_source: ContainerdSource,
    /// Architecture of the artifacts [default: this machine's].
    pub arch: Option<String>,
    /// PEM bundle of CAs that sign the mirror's TLS certificate (replaces the built-in roots).
    pub ca_bundle: Option<PathBuf>,
    /// Never download: verify the artifacts already in the image against the install record.
    pub offline: bool,
}

/// The install record: every placed file with its hash.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Kubernetes version installed.
    pub kubernetes_version: String,
    /// Manifest artifacts, by name: the SHA-256 of what was downloaded (tarball for CNI).
    pub artifacts: BTreeMap<String, String>,
    /// Placed files (absolute, without the root) and their SHA-256.
    pub files: BTreeMap<String, RecordedFile>,
    /// The tracker's fields.
    pub tracker: BTreeMap<String, String>,
    /// Serial of the signed manifest this install came from; a later install refuses an older
    /// one (replay). Absent for unsigned installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_serial: Option<u64>,
}

/// One placed file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordedFile {
    /// The manifest artifact it came from.
    pub artifact: String,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Renders nodeadm's tracker YAML (`sigs.k8s.io/yaml` output: keys sorted).
pub fn render_tracker(fields: &BTreeMap<String, String>) -> String {
    let mut out = String::from("Artifacts:\n");
    for (k, v) in fields {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    out
}

fn default_tracker() -> BTreeMap<String, String> {
    [
        "CniPlugins",
        "IamAuthenticator",
        "IamRolesAnywhere",
        "ImageCredentialProvider",
        "Iptables",
        "Kubectl",
        "Kubelet",
        "Ssm",
    ]
    .iter()
    .map(|k| (k.to_string(), "false".to_string()))
    .chain([("Containerd".to_string(), "none".to_string())])
    .collect()
}

/// Reads the install record under `root`, if any.
pub fn read_record(root: &Path) -> anyhow::Result<Option<Record>> {
    let path = fsutil::under_root(root, Path::new(RECORD_PATH));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| {
                    format!(
                        "{} is not a hybridboot install record; remove it and install again",
                        path.display()
                    )
                })
                .with_class(Class::Operator)?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_state(root: &Path, record: &Record) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(record).context("encoding the install record")?;
    let rec = fsutil::under_root(root, Path::new(RECORD_PATH));
    fsutil::atomic_write(&rec, &json, &WriteOptions::private())
        .with_context(|| format!("writing {}", rec.display()))?;
    let tr = fsutil::under_root(root, Path::new(TRACKER_PATH));
    fsutil::atomic_write(
        &tr,
        render_tracker(&record.tracker).as_bytes(),
        &WriteOptions::public(),
    )
    .with_context(|| format!("writing {}", tr.display()))
}

/// The machine's architecture in the manifest's words.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// Picks `file://` or `https://` per URL.
struct Sources {
    https: Option<Box<dyn Fetch + Send + Sync>>,
}

impl Sources {
    fn pick(&self, url: &str) -> Result<&dyn Fetch, FetchError> {
        if url.starts_with("file://") {
            Ok(&fetch::FileFetch)
        } else if url.starts_with("https://") || url.starts_with("http://") {
            match &self.https {
                Some(h) => Ok(h.as_ref()),
                None => Err(FetchError::Permanent {
                    url: url.into(),
                    detail: "no HTTP client configured".into(),
                }),
            }
        } else {
            Err(FetchError::Permanent {
                url: url.into(),
                detail: "only https:// and file:// URLs are supported".into(),
            })
        }
    }
}

impl Fetch for Sources {
    fn fetch(
        &self,
        url: &str,
        sink: &mut dyn std::io::Write,
        limit: u64,
    ) -> Result<(), FetchError> {
        self.pick(url)?.fetch(url, sink, limit)
    }

    fn fetch_from(
        &self,
        url: &str,
        partial: &mut fetch::Partial,
        limit: u64,
    ) -> Result<(), FetchError> {
        self.pick(url)?.fetch_from(url, partial, limit)
    }
}

/// Disables resuming (every retry downloads the whole file again): a benchmark knob, so that
/// `make bench` can measure the restart-from-zero baseline with the same binary.
pub const NO_RESUME_ENV: &str = "HYBRIDBOOT_BENCH_NO_RESUME";

fn sources(ca_bundle: Option<&Path>) -> anyhow::Result<Sources> {
    if let Some(ca) = ca_bundle {
        if !ca.is_file() {
            return Err(error::operator(format!(
                "--ca-bundle {}: no such file",
                ca.display()
            )));
        }
    }
    let mut https = fetch::HttpFetch::new(ca_bundle)
        .classed()
        .context("HTTP client")?;
    if std::env::var_os(NO_RESUME_ENV).is_some_and(|v| v == "1") {
        log::warn!("{NO_RESUME_ENV}=1: dropped downloads start over from zero");
        https = https.without_resume();
    }
    Ok(Sources {
        https: Some(Box::new(https)),
    })
}

/// Runs `op` with the project's retry policy; each attempt starts from scratch (a failed
/// attempt leaves nothing behind). Returns the value and the number of attempts.
fn with_retries<T>(
    what: &str,
    op: impl FnMut(u32) -> Result<T, FetchError>,
) -> Result<(T, u32), FetchError> {
    with_retries_until(what, RETRY_DEADLINE, op)
}

/// How long install keeps retrying one download.
const RETRY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// [`with_retries`] with another overall deadline.
fn with_retries_until<T>(
    what: &str,
    deadline: std::time::Duration,
    mut op: impl FnMut(u32) -> Result<T, FetchError>,
) -> Result<(T, u32), FetchError> {
    let policy = crate::retry::RetryPolicy::default().with_deadline(deadline);
    let mut attempts = 0;
    let value = crate::retry::run(&policy, &crate::retry::RealClock, |attempt| {
        attempts = attempt + 1;
        if attempt > 0 {
            log::warn!("{what}: retrying (attempt {attempts})");
        }
        op(attempt).inspect_err(|e| {
            if e.is_transient() {
                log::warn!("{what}: {e}");
            }
        })
    })?;
    Ok((value, attempts))
}

/// Fetches the manifest (and, when a key is configured, the signed manifest, which must verify,
/// sign these manifest bytes, be unexpired and not older than `installed_serial`) and parses it.
fn load_manifest(
    src: &dyn Fetch,
    args: &InstallSettings,
    installed_serial: Option<u64>,
) -> anyhow::Result<(Manifest, Option<signed::SignedManifest>)> {
    let limit = manifest::MAX_MANIFEST_BYTES as u64;
    let (bytes, _) = with_retries("manifest", |_| {
        fetch::fetch_small(src, &args.manifest, limit)
    })
    .classed()
    .context("fetching the manifest")?;
    if let Some(key_path) = &args.manifest_public_key {
        let key_text = std::fs::read(key_path)
            .with_context(|| format!("reading --manifest-public-key {}", key_path.display()))
            .with_class(Class::Operator)?;
        let key =
            signature::PublicKey::parse(&key_text, &key_path.display().to_string()).classed()?;
        let signed_url = signed_url(&args.manifest);
        let doc = with_retries("signed manifest", |_| {
            fetch::fetch_small(src, &signed_url, signed::MAX_SIGNED_BYTES as u64)
        })
        .classed()
        .context("signed manifest required by --manifest-public-key but not available (a detached `.sig` of earlier versions is not enough: see docs/signed-manifest.md)")?
        .0;
        let signed = signed::open(&doc, &key, &signed_url).classed()?;
        signed
            .check(
                &bytes,
                std::time::SystemTime::now(),
                installed_serial,
                &signed_url,
            )
            .classed()?;
        log::info!(
            "manifest signature {signed_url} verified (serial {}, {} artifact digests)",
            signed.serial,
            signed.artifacts.len()
        );
        let manifest = Manifest::parse(&bytes)
            .classed()
            .with_context(|| args.manifest.clone())?;
        return Ok((manifest, Some(signed)));
    }
    let manifest = Manifest::parse(&bytes)
        .classed()
        .with_context(|| args.manifest.clone())?;
    Ok((manifest, None))
}

/// Where the signed manifest of `manifest` is published: beside it, `.signed` appended.
pub fn signed_url(manifest: &str) -> String {
    format!("{manifest}.signed")
}

/// A manifest fetched over the network may name only `https://` URLs: `http://` would let
/// anyone on the path swap bytes (and, unsigned, the checksum with them), `file://` would read
/// whatever the node has. A manifest from the node's own files (`file://`) may name files.
fn check_scheme(manifest: &str, artifact: &Artifact) -> anyhow::Result<()> {
    if manifest.starts_with("file://") {
        return Ok(());
    }
    let urls = [
        Some(artifact.uri.as_str()),
        artifact.gzip_uri.as_deref(),
        Some(artifact.checksum_uri.as_str()),
    ];
    for url in urls.into_iter().flatten().filter(|u| !u.is_empty()) {
        if !url.starts_with("https://") {
            return Err(error::operator(format!(
                "{manifest}: artifact {} names {url:?}; a remote manifest may only name https:// URLs (http:// and file:// are refused), fix the mirror's manifest",
                artifact.name
            )));
        }
    }
    Ok(())
}

/// One artifact chosen for this node.
struct Chosen<'a> {
    placement: &'a Placement,
    artifact: Artifact,
    want: [u8; 32],
    /// Where `want` comes from (for errors).
    want_from: String,
}

/// `hybridboot install`: verify offline, or choose the artifacts, place each (verified), note
/// the capabilities of the image, drop what the previous install had and this one has not,
/// then write the record and the tracker.
pub fn install(args: &InstallSettings) -> anyhow::Result<()> {
    let root = args.root.clone();
    let arch = args.arch.clone().unwrap_or_else(|| host_arch().to_string());
    if args.offline {
        return verify_offline(&root);
    }
    let src = sources(args.ca_bundle.as_deref())?;
    let previous = read_record(&root)?.unwrap_or_default();
    let (manifest, signed) = load_manifest(&src, args, previous.manifest_serial)?;
    let release = manifest
        .select(&args.kubernetes_version)
        .classed()
        .with_context(|| args.manifest.clone())?;
    log::info!(
        "installing Kubernetes {} ({arch}) from {}",
        release.version,
        args.manifest
    );
    let chosen = choose(
        &src,
        args,
        signed.as_ref(),
        &release.version,
        &release.artifacts,
        &arch,
    )?;

    let mut record = Record {
        kubernetes_version: release.version.clone(),
        tracker: default_tracker(),
        // Never lowered: an unsigned install after a signed one keeps the high-water mark.
        manifest_serial: signed
            .as_ref()
            .map(|s| s.serial)
            .max(previous.manifest_serial),
        ..Record::default()
    };
    // Files of artifacts this run does not touch stay recorded (e.g. containerd with `none`).
    // Every download first, side by side, each verified into its temporary file; only when
    // all of them succeeded is anything placed (no half-installed set).
    let needs = chosen
        .iter()
        .map(|c| need(&root, c, &previous))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let jobs: Vec<(&Chosen, &Download)> = chosen
        .iter()
        .zip(&needs)
        .filter_map(|(c, n)| n.as_ref().map(|d| (c, d)))
        .collect();
    let staged = download_all(&src, &jobs)?;
    // A CNI tarball is checked entry by entry before anything is placed, too.
    for ((c, _), s) in jobs.iter().zip(&staged) {
        if c.placement.path == CNI_BIN_DIR {
            check_cni(c, s)?;
        }
    }
    let mut staged = staged.into_iter();
    let mut downloaded = 0u32;
    for (c, n) in chosen.iter().zip(&needs) {
        let s = if n.is_some() { staged.next() } else { None };
        downloaded += place(&root, c, s, &previous, &mut record)?;
    }
    note_image_capabilities(&root, args.containerd_source, &mut record);
    remove_dropped(&root, &chosen, &previous, &record)?;
    write_state(&root, &record)?;
    log::info!(
        "Kubernetes {} installed: {} artifacts, {downloaded} downloaded; tracker {}",
        record.kubernetes_version,
        chosen.len(),
        TRACKER_PATH
    );
    Ok(())
}

/// Chooses this node's artifacts and, before anything is placed, takes each digest from the
/// signed manifest (when there is one) or fetches its checksum file.
fn choose<'a>(
    src: &dyn Fetch,
    args: &InstallSettings,
    signed: Option<&signed::SignedManifest>,
    version: &str,
    artifacts: &[Artifact],
    arch: &str,
) -> anyhow::Result<Vec<Chosen<'a>>> {
    let mut chosen = Vec::new();
    for placement in PLACEMENTS {
        if matches!(placement.artifact, "containerd" | "runc")
            && args.containerd_source == ContainerdSource::None
        {
            continue;
        }
        let found = artifacts
            .iter()
            .find(|a| a.name == placement.artifact && a.arch == arch && a.os == "linux");
        let Some(artifact) = found else {
            if placement.required {
                return Err(error::operator(format!(
                    "{}: Kubernetes {version} has no {} artifact for linux/{arch}",
                    args.manifest, placement.artifact
                )));
            }
            log::debug!("manifest has no {} for linux/{arch}", placement.artifact);
            continue;
        };
        let url = artifact
            .gzip_uri
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or(artifact.uri.clone());
        check_scheme(&args.manifest, artifact)?;
        if let Some(signed) = signed {
            if url.is_empty() {
                return Err(error::operator(format!(
                    "{}: artifact {} has no uri",
                    args.manifest, artifact.name
                )));
            }
            let want = signed
                .digest(version, &artifact.os, arch, &artifact.name)
                .ok_or_else(|| {
                    error::operator(format!(
                        "{}: the signed manifest has no digest for {} {version} {}/{arch}; the mirror must sign every artifact it serves",
                        signed_url(&args.manifest),
                        artifact.name,
                        artifact.os
                    ))
                })?;
            chosen.push(Chosen {
                placement,
                artifact: artifact.clone(),
                want,
                want_from: format!("the signed manifest (serial {})", signed.serial),
            });
            continue;
        }
        if url.is_empty() || artifact.checksum_uri.is_empty() {
            return Err(error::operator(format!(
                "{}: artifact {} has no uri or checksum_uri",
                args.manifest, artifact.name
            )));
        }
        let file_name = artifact
            .uri
            .rsplit('/')
            .next()
            .unwrap_or(&artifact.name)
            .to_string();
        let (text, _) = with_retries(&artifact.checksum_uri, |_| {
            fetch::fetch_small(
                src,
                &artifact.checksum_uri,
                manifest::MAX_CHECKSUM_BYTES as u64,
            )
        })
        .classed()
        .with_context(|| format!("fetching the checksum of {}", artifact.name))?;
        let want = manifest::parse_checksum(&text, &artifact.name, &file_name)
            .classed()
            .with_context(|| artifact.checksum_uri.clone())?;
        chosen.push(Chosen {
            placement,
            artifact: artifact.clone(),
            want,
            want_from: artifact.checksum_uri.clone(),
        });
    }
    Ok(chosen)
}

/// A download one chosen artifact needs: from where, and the file it is verified into.
struct Download {
    url: String,
    gzip: bool,
    target: PathBuf,
    opts: WriteOptions,
}

/// Where the CNI tarball is verified and checked before it is extracted.
const CNI_STAGING: &str = "/var/lib/hybridboot/cni-plugins.tgz";

/// What one chosen artifact needs: nothing when what is in place already matches (a single
/// file with the digest, or every file the CNI tarball placed last time), else a download.
fn need(root: &Path, c: &Chosen, previous: &Record) -> anyhow::Result<Option<Download>> {
    let name = &c.artifact.name;
    let gzip_uri = c.artifact.gzip_uri.as_deref().filter(|u| !u.is_empty());
    let url = gzip_uri.unwrap_or(&c.artifact.uri).to_string();
    let gzip = gzip_uri.is_some();
    if c.placement.path == CNI_BIN_DIR {
        if cni_intact(root, c, previous) {
            log::info!(
                "{name}: {CNI_BIN_DIR} already holds tarball sha256 {}; not downloaded",
                hex::encode(c.want)
            );
            return Ok(None);
        }
        return Ok(Some(Download {
            url,
            gzip,
            target: fsutil::under_root(root, Path::new(CNI_STAGING)),
            opts: WriteOptions::private(),
        }));
    }
    let target = fsutil::under_root(root, Path::new(c.placement.path));
    let current =
        fetch::sha256_file(&target).with_context(|| format!("reading {}", target.display()))?;
    if current == Some(c.want) {
        log::info!(
            "{name}: {} already matches sha256 {}; not downloaded",
            c.placement.path,
            hex::encode(c.want)
        );
        return Ok(None);
    }
    Ok(Some(Download {
        url,
        gzip,
        target,
        opts: WriteOptions::executable(),
    }))
}

/// The retry policy of one artifact's download: the project's, within 10 minutes.
fn download_policy() -> crate::retry::RetryPolicy {
    crate::retry::RetryPolicy::default().with_deadline(RETRY_DEADLINE)
}

/// A download that failed, with its artifact's name.
struct Failed {
    name: String,
    error: FetchError,
}

impl Classify for Failed {
    fn class(&self) -> Class {
        self.error.class()
    }
}

/// Downloads every job, [`parallel::DOWNLOADS_AT_ONCE`] at a time, each into a verified
/// temporary file beside its target, with its own size cap, time limits and retries. Nothing
/// is placed here; on failure every temporary file is removed.
fn download_all(
    src: &Sources,
    jobs: &[(&Chosen, &Download)],
) -> anyhow::Result<Vec<fetch::Staged>> {
    let quiet = jobs.len() > 1;
    let result = parallel::bounded(jobs, parallel::DOWNLOADS_AT_ONCE, |(c, d)| {
        let name = &c.artifact.name;
        let mut progress = if quiet {
            fetch::Progress::quiet(name)
        } else {
            fetch::Progress::new(name)
        };
        let started = std::time::Instant::now();
        let staged = fetch::download(
            src,
            &fetch::Spec {
                url: &d.url,
                gzip: d.gzip,
                want: &c.want,
                want_from: &c.want_from,
                target: &d.target,
                opts: &d.opts,
                limit: MAX_ARTIFACT_BYTES,
            },
            &download_policy(),
            &mut progress,
        )
        .map_err(|error| Failed {
            name: name.clone(),
            error,
        })?;
        let mut notes = String::new();
        if staged.attempts > 1 {
            notes += &format!(", {} attempts", staged.attempts);
        }
        if staged.resumed > 0 {
            notes += &format!(", resumed {} times", staged.resumed);
        }
        if staged.restarted > 0 {
            notes += &format!(", started over {} times", staged.restarted);
        }
        log::info!(
            "{name}: downloaded and verified ({}, {}, sha256 {}{notes})",
            fetch::human(staged.bytes),
            fetch::rate(staged.bytes, started),
            hex::encode(c.want),
        );
        Ok(staged)
    });
    result.or_else(|f: Failed| {
        Err(f.error)
            .classed()
            .with_context(|| format!("installing {}", f.name))
    })
}

/// Places one chosen artifact from its verified download (none: what is in place already
/// matches) and records it; returns 1 when it was downloaded.
fn place(
    root: &Path,
    c: &Chosen,
    staged: Option<fetch::Staged>,
    previous: &Record,
    record: &mut Record,
) -> anyhow::Result<u32> {
    let name = &c.artifact.name;
    let downloaded = u32::from(staged.is_some());
    if c.placement.path == CNI_BIN_DIR {
        install_cni(root, c, staged, previous, record)?;
    } else {
        if let Some(staged) = staged {
            let target = fsutil::under_root(root, Path::new(c.placement.path));
            staged
                .place()
                .with_context(|| format!("installing {name} at {}", target.display()))?;
            log::info!(
                "{name}: installed {} (sha256 {})",
                c.placement.path,
                hex::encode(c.want)
            );
        }
        record.files.insert(
            c.placement.path.to_string(),
            RecordedFile {
                artifact: name.clone(),
                sha256: hex::encode(c.want),
            },
        );
    }
    note_artifact(c, record);
    Ok(downloaded)
}

/// Records a chosen artifact's digest and its tracker field.
fn note_artifact(c: &Chosen, record: &mut Record) {
    record
        .artifacts
        .insert(c.artifact.name.clone(), hex::encode(c.want));
    let field = c.placement.tracker;
    let value = if field == "Containerd" {
        "distro"
    } else {
        "true"
    };
    record.tracker.insert(field.to_string(), value.to_string());
}

/// Capabilities that come from the image or from hybridboot itself.
fn note_image_capabilities(root: &Path, containerd: ContainerdSource, record: &mut Record) {
    record
        .tracker
        .insert("IamRolesAnywhere".into(), "true".into());
    if containerd == ContainerdSource::Distro {
        record.tracker.insert("Containerd".into(), "distro".into());
        if !["/usr/bin/containerd", "/usr/local/bin/containerd"]
            .iter()
            .any(|p| fsutil::under_root(root, Path::new(p)).exists())
        {
            log::warn!("--containerd-source distro: containerd is neither in the manifest nor in the image; install the distribution's package");
        }
    }
    let iptables = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .iter()
        .any(|p| fsutil::under_root(root, Path::new(p)).exists());
    if iptables {
        record.tracker.insert("Iptables".into(), "true".into());
    } else {
        log::warn!("iptables is not in the image; kube-proxy needs it (install the distribution's package)");
    }
}

/// Files the previous install placed that this one no longer has (an older CNI plugin...).
fn remove_dropped(
    root: &Path,
    chosen: &[Chosen],
    previous: &Record,
    record: &Record,
) -> anyhow::Result<()> {
    for (path, f) in &previous.files {
        if !record.files.contains_key(path) && chosen.iter().any(|c| c.artifact.name == f.artifact)
        {
            let p = fsutil::under_root(root, Path::new(path));
            if fsutil::remove_file(&p).with_context(|| format!("removing {}", p.display()))? {
                log::info!(
                    "removed {path} (not in Kubernetes {})",
                    record.kubernetes_version
                );
            }
        }
    }
    Ok(())
}

/// Whether every file the previous install extracted from this very tarball is unchanged.
fn cni_intact(root: &Path, c: &Chosen, previous: &Record) -> bool {
    let name = &c.artifact.name;
    let mut files = previous
        .files
        .iter()
        .filter(|(_, f)| &f.artifact == name)
        .peekable();
    previous.artifacts.get(name) == Some(&hex::encode(c.want))
        && files.peek().is_some()
        && files.all(|(p, f)| {
            fetch::sha256_file(&fsutil::under_root(root, Path::new(p)))
                .ok()
                .flatten()
                .map(hex::encode)
                .as_ref()
                == Some(&f.sha256)
        })
}

/// Checks every entry of a verified CNI tarball (no traversal, only flat files, within the
/// limits) without extracting anything.
fn check_cni(c: &Chosen, staged: &fetch::Staged) -> anyhow::Result<()> {
    std::fs::File::open(staged.path())
        .map_err(cni::CniError::Corrupt)
        .and_then(|tarball| cni::plan(tarball, &cni::Limits::default()))
        .map(|_| ())
        .classed()
        .with_context(|| c.artifact.uri.clone())
}

/// Extracts the verified CNI plugins tarball (checked entry by entry first), or keeps the
/// files of the previous install when the tarball did not change.
fn install_cni(
    root: &Path,
    c: &Chosen,
    staged: Option<fetch::Staged>,
    previous: &Record,
    record: &mut Record,
) -> anyhow::Result<()> {
    let name = &c.artifact.name;
    let Some(staged) = staged else {
        for (p, f) in previous.files.iter().filter(|(_, f)| &f.artifact == name) {
            record.files.insert(p.clone(), f.clone());
        }
        return Ok(());
    };
    let placed = std::fs::File::open(staged.path())
        .map_err(cni::CniError::Corrupt)
        .and_then(|tarball| {
            cni::extract(
                tarball,
                &fsutil::under_root(root, Path::new(CNI_BIN_DIR)),
                &cni::Limits::default(),
            )
        })
        .classed()
        .with_context(|| c.artifact.uri.clone())?;
    // Dropping the staged tarball removes it.
    drop(staged);
    let bin = fsutil::under_root(root, Path::new(CNI_BIN_DIR));
    for (path, digest) in &placed {
        let rel = Path::new(CNI_BIN_DIR).join(path.strip_prefix(&bin).unwrap_or(path));
        record.files.insert(
            rel.display().to_string(),
            RecordedFile {
                artifact: name.clone(),
                sha256: hex::encode(digest),
            },
        );
    }
    log::info!(
        "{name}: installed {} files in {CNI_BIN_DIR} (tarball sha256 {})",
        placed.len(),
        hex::encode(c.want)
    );
    Ok(())
}

/// `--offline`: the artifacts are already in the image; check them against the record.
fn verify_offline(root: &Path) -> anyhow::Result<()> {
    let record = read_record(root)?.ok_or_else(|| {
        error::operator(format!(
            "--offline: no install record at {RECORD_PATH}; run `hybridboot install` while building the image"
        ))
    })?;
    let mut bad = Vec::new();
    for (path, f) in &record.files {
        let p = fsutil::under_root(root, Path::new(path));
        match fetch::sha256_file(&p).with_context(|| format!("reading {}", p.display()))? {
            Some(d) if hex::encode(d) == f.sha256 => {}
            Some(d) => bad.push(format!(
                "{path} has sha256 {} (installed {})",
                hex::encode(d),
                f.sha256
            )),
            None => bad.push(format!("{path} is missing")),
        }
    }
    if !bad.is_empty() {
        for b in &bad {
            log::error!("{b}");
        }
        return Err(error::operator(format!(
            "--offline: {} of {} installed files do not match the install record; rebuild the image or install online",
            bad.len(),
            record.files.len()
        )));
    }
    log::info!(
        "--offline: Kubernetes {}: all {} installed files verified; nothing downloaded",
        record.kubernetes_version,
        record.files.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_matches_nodeadm_fixture() {
        let mut t = default_tracker();
        for k in [
            "CniPlugins",
            "IamAuthenticator",
            "IamRolesAnywhere",
            "ImageCredentialProvider",
            "Iptables",
            "Kubectl",
            "Kubelet",
        ] {
            t.insert(k.into(), "true".into());
        }
        t.insert("Containerd".into(), "distro".into());
        assert_eq!(
            render_tracker(&t),
            include_str!("../../../tests/fixtures/nodeadm/expected-nodeadm-tracker")
        );
    }
}
