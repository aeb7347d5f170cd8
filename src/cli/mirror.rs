//! `sync-artifacts`: the mirror operator's command, its flags turned into
//! [`MirrorSettings`].

use std::path::PathBuf;

use clap::Args;

use crate::node::install::mirror::{self, MirrorSettings};
use crate::node::install::{host_arch, DEFAULT_MANIFEST};

/// What `sync-artifacts --help` ends with.
pub const AFTER_HELP: &str = "\
WHAT LANDS IN --dir
  Every file keeps its URL's path: https://hybrid-assets.eks.amazonaws.com/releases/v1.31.2/
  bin/linux/amd64/kubelet becomes DIR/releases/v1.31.2/bin/linux/amd64/kubelet, served as
  <--mirror-url>/releases/v1.31.2/bin/linux/amd64/kubelet. Beside them:
    DIR/manifest.yaml         the chosen releases, OS and architectures, URLs on the mirror
    DIR/manifest.yaml.signed  SHA-256 of manifest.yaml and of every artifact, a serial,
                              signed with --signing-key (docs/signed-manifest.md)
  Each artifact is verified against its published checksum before it is renamed into place;
  files already present with the right content are not fetched again. The two manifests are
  written last, when every artifact is in place. Publish DIR as it is.

THE SIGNING KEY (once; the public half goes into the node image)
  openssl genpkey -algorithm ed25519 -out manifest-signing.key    (mode 0600)
  openssl pkey -in manifest-signing.key -pubout -out manifest-signing.pub
  Nodes: hybridboot install 1.31 --manifest <--mirror-url>/manifest.yaml
         --manifest-public-key manifest-signing.pub ...

SERIAL
  Without --serial: the current UNIX time, or one more than the serial of the signed manifest
  already in DIR if that is higher. Nodes refuse a serial below the one they installed from.

EXAMPLES
  # The latest patch of every Kubernetes version AWS publishes, both architectures:
  hybridboot sync-artifacts --arch amd64,arm64 --dir /srv/eks-mirror \\
      --mirror-url https://mirror.example/eks --signing-key manifest-signing.key
  # Kubernetes 1.31 (latest patch) and exactly 1.30.7, for arm64 nodes, valid 180 days:
  hybridboot sync-artifacts 1.31 1.30.7 --arch arm64 --dir /srv/eks-mirror \\
      --mirror-url https://mirror.example/eks --signing-key manifest-signing.key --expires 180d

EXIT CODES
  0 mirrored and signed; 3 the operator must act (a checksum that does not match: nothing is
  kept of that artifact and no manifest is written; a bad flag, key or manifest); 4 the
  upstream is unreachable or failing, or another run is publishing into DIR (run again: what
  is already in place is kept).";

/// `hybridboot sync-artifacts`.
#[derive(Args, Debug)]
pub struct SyncArtifactsArgs {
    /// Kubernetes versions to mirror: `1.31` (its latest patch) or `1.31.2` (exactly that one)
    /// [default: the latest patch of every version in the manifest].
    #[arg(value_name = "K8S_VERSION")]
    pub versions: Vec<String>,
    /// The same as a K8S_VERSION argument; may be repeated.
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Vec<String>,
    /// The upstream release manifest (nodeadm's schema): https://..., file:///... or a path.
    #[arg(long, value_name = "URL", default_value = DEFAULT_MANIFEST)]
    pub manifest: String,
    /// Architectures to mirror, comma-separated or repeated [default: this machine's, as
    /// nodeadm's].
    #[arg(long, short = 'a', value_name = "ARCH", value_delimiter = ',', value_parser = ["amd64", "arm64"])]
    pub arch: Vec<String>,
    /// The artifacts' OS.
    #[arg(long, value_name = "OS", default_value = "linux")]
    pub os: String,
    /// The directory the web server publishes (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The URL nodes reach --dir at: https://host[:port][/base], or file:///path for a mirror
    /// baked into the image. The manifest's URLs are rewritten to it.
    #[arg(long, value_name = "URL")]
    pub mirror_url: String,
    /// Ed25519 private key (PEM PKCS#8, `openssl genpkey -algorithm ed25519`; mode 0600) that
    /// signs manifest.yaml.signed. Never printed or logged.
    #[arg(long, value_name = "FILE")]
    pub signing_key: PathBuf,
    /// The signed manifest's serial [default: the current UNIX time, or one more than the
    /// serial already in --dir if that is higher].
    #[arg(long, value_name = "N")]
    pub serial: Option<u64>,
    /// When nodes stop accepting the signed manifest: RFC 3339 (2027-06-01T00:00:00Z) or a
    /// duration from now (180d). Nodes need a correct clock: leave long margins.
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_expires)]
    pub expires: Option<std::time::SystemTime>,
    /// CAs of the upstream's TLS certificate (replaces the built-in roots).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// How long each download is retried while the upstream is unreachable or failing.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::time::parse_duration)]
    pub retry_deadline: std::time::Duration,
}

impl SyncArtifactsArgs {
    /// The settings these flags say.
    pub fn settings(&self) -> MirrorSettings {
        let mut arches: Vec<String> = Vec::new();
        for a in &self.arch {
            if !arches.contains(a) {
                arches.push(a.clone());
            }
        }
        if arches.is_empty() {
            arches.push(host_arch().to_string());
        }
        MirrorSettings {
            manifest: self.manifest.clone(),
            kubernetes_versions: self
                .versions
                .iter()
                .chain(&self.kubernetes_version)
                .cloned()
                .collect(),
            os: self.os.clone(),
            arches,
            dir: self.dir.clone(),
            mirror_url: self.mirror_url.clone(),
            signing_key: self.signing_key.clone(),
            serial: self.serial,
            expires: self.expires,
            ca_bundle: self.ca_bundle.clone(),
            retry_deadline: self.retry_deadline,
        }
    }
}

/// `--expires`: an RFC 3339 time, or a duration from now.
fn parse_expires(text: &str) -> Result<std::time::SystemTime, String> {
    crate::time::parse_rfc3339(text)
        .or_else(|| {
            let d = crate::time::parse_duration(text).ok()?;
            std::time::SystemTime::now().checked_add(d)
        })
        .ok_or_else(|| {
            format!(
                "{text:?} is neither an RFC 3339 time (2027-06-01T00:00:00Z) nor a duration (180d)"
            )
        })
}

/// Runs `sync-artifacts`; prints labelled lines (`manifest:`, `signed:`, `serial:`,
/// `releases:`, `artifacts:`) on stdout.
pub fn run(args: SyncArtifactsArgs) -> anyhow::Result<()> {
    let s = mirror::sync(&args.settings())?;
    super::print(&format!(
        "manifest: {} sha256 {}\nsigned: {}\nserial: {}\nreleases: {}\nartifacts: {} signed ({} downloaded, {} already present)\n",
        s.manifest.display(),
        hex::encode(s.manifest_sha256),
        s.signed.display(),
        s.serial,
        s.releases.join(" "),
        s.artifacts,
        s.downloaded,
        s.present
    ))
}
