//! nodeadm's release manifest (docs/protocols.md §4): parsing, version selection and checksum
//! files. Pure: bytes in, values out.

use serde::Deserialize;

/// Largest manifest accepted (the real one is a few hundred KiB).
pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// Largest checksum file accepted.
pub const MAX_CHECKSUM_BYTES: usize = 4096;

/// Errors in the manifest or a checksum file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid YAML for nodeadm's schema: {0}")]
    Parse(String),
    #[error("Kubernetes version {0:?} is not of the form 1.31 or 1.31.2")]
    BadVersion(String),
    #[error("the manifest has no EKS release {0} (available: {1})")]
    NoRelease(String, String),
    #[error("the manifest has no patch release {0} (available: {1})")]
    NoPatch(String, String),
    #[error("checksum file for {name} is not `<64 hex digits>` or `<64 hex digits>  <file name>`")]
    BadChecksum { name: String },
    #[error("checksum file for {name} names {found:?}, not {name}")]
    ChecksumName { name: String, found: String },
}

/// The parts of the manifest hybridboot uses; other fields (region_config, ssm_releases...) are
/// ignored so newer manifests keep working.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    #[serde(default)]
    pub supported_eks_releases: Vec<EksRelease>,
    #[serde(default)]
    pub iam_roles_anywhere_releases: Option<Vec<ToolRelease>>,
}

/// One Kubernetes minor version.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct EksRelease {
    pub major_minor_version: String,
    #[serde(default)]
    pub latest_patch_version: String,
    #[serde(default)]
    pub patch_releases: Vec<PatchRelease>,
}

/// One Kubernetes patch version and its artifacts.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PatchRelease {
    pub version: String,
    #[serde(default)]
    pub patch_version: String,
    #[serde(default)]
    pub release_date: String,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

/// A release of a helper tool (aws_signing_helper).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ToolRelease {
    pub version: String,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

/// One downloadable file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub arch: String,
    pub os: String,
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub checksum_uri: String,
    #[serde(default)]
    pub gzip_uri: Option<String>,
}

impl Manifest {
    /// Parses manifest YAML.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        serde_yaml_ng::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))
    }

    /// The patch release for `1.31` (latest patch) or `1.31.2` (exactly that one).
    pub fn select(&self, version: &str) -> Result<&PatchRelease, ManifestError> {
        let parts: Vec<&str> = version.trim_start_matches('v').split('.').collect();
        let numeric = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(parts.len() == 2 || parts.len() == 3) || !parts.iter().all(numeric) {
            return Err(ManifestError::BadVersion(version.to_string()));
        }
        let minor = format!("{}.{}", parts[0], parts[1]);
        let release = self
            .supported_eks_releases
            .iter()
            .find(|r| r.major_minor_version == minor)
            .ok_or_else(|| {
                let have: Vec<&str> = self
                    .supported_eks_releases
                    .iter()
                    .map(|r| r.major_minor_version.as_str())
                    .collect();
                ManifestError::NoRelease(minor.clone(), have.join(", "))
            })?;
        let available = || {
            release
                .patch_releases
                .iter()
                .map(|p| p.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found = if parts.len() == 3 {
            let want = format!("{minor}.{}", parts[2]);
            release.patch_releases.iter().find(|p| p.version == want)
        } else {
            // nodeadm's `latest_patch_version`; if absent or stale, the highest patch number.
            release
                .patch_releases
                .iter()
                .find(|p| {
                    !release.latest_patch_version.is_empty()
                        && p.patch_version == release.latest_patch_version
                })
                .or_else(|| {
                    release
                        .patch_releases
                        .iter()
                        .max_by_key(|p| patch_number(p))
                })
        };
        found.ok_or_else(|| ManifestError::NoPatch(version.to_string(), available()))
    }

    /// The newest IAM Roles Anywhere signing helper release (by version number).
    pub fn latest_signing_helper(&self) -> Option<&ToolRelease> {
        self.iam_roles_anywhere_releases
            .as_ref()?
            .iter()
            .max_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)))
    }
}

fn patch_number(p: &PatchRelease) -> u64 {
    p.patch_version
        .parse()
        .ok()
        .or_else(|| p.version.rsplit('.').next()?.parse().ok())
        .unwrap_or(0)
}

fn version_key(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Parses a checksum file: a bare 64-hex-digit SHA-256, or `sha256sum` lines `<hex>  <name>`
/// (the line naming `file_name` or `artifact` wins). Returns the digest.
pub fn parse_checksum(
    text: &[u8],
    artifact: &str,
    file_name: &str,
) -> Result<[u8; 32], ManifestError> {
    let bad = || ManifestError::BadChecksum {
        name: artifact.to_string(),
    };
    let text = std::str::from_utf8(text).map_err(|_| bad())?;
    let mut only_line = None;
    let mut lines = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        lines += 1;
        let mut fields = line.split_whitespace();
        let hex_digest = fields.next().ok_or_else(bad)?;
        let name = fields.next().map(|n| n.trim_start_matches(['*', ' ']));
        if fields.next().is_some() {
            return Err(bad());
        }
        let digest = decode_hex32(hex_digest).ok_or_else(bad)?;
        match name {
            None => only_line = Some((digest, None)),
            Some(n) => {
                let base = n.rsplit('/').next().unwrap_or(n);
                if base == file_name || base == artifact {
                    return Ok(digest);
                }
                only_line = Some((digest, Some(n.to_string())));
            }
        }
    }
    match (lines, only_line) {
        (1, Some((digest, None))) => Ok(digest),
        (1, Some((_, Some(found)))) => Err(ManifestError::ChecksumName {
            name: artifact.to_string(),
            found,
        }),
        _ => Err(bad()),
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
supported_eks_releases:
- latest_patch_version: "2"
  major_minor_version: "1.31"
  patch_releases:
  - version: 1.31.1
    patch_version: "1"
    artifacts:
    - {name: kubelet, arch: amd64, os: linux, uri: "https://m/1.31.1/kubelet", checksum_uri: "https://m/1.31.1/kubelet.sha256"}
  - version: 1.31.2
    patch_version: "2"
    artifacts:
    - {name: kubelet, arch: amd64, os: linux, uri: "https://m/1.31.2/kubelet", checksum_uri: "https://m/1.31.2/kubelet.sha256", gzip_uri: "https://m/1.31.2/kubelet.gz"}
- major_minor_version: "1.30"
  patch_releases:
  - {version: 1.30.7, patch_version: "7"}
  - {version: 1.30.10, patch_version: "10"}
iam_roles_anywhere_releases:
- {version: 1.2.0, artifacts: []}
- {version: 1.10.1, artifacts: []}
region_config: {us-east-1: {partition: aws}}
ssm_releases: null
"#;

    #[test]
    fn nodeadm_sample_parses() {
        let text = include_str!("../../../tests/fixtures/nodeadm/manifest.yaml");
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.supported_eks_releases[0].major_minor_version, "M.m");
        assert_eq!(
            m.latest_signing_helper().unwrap().artifacts[0].name,
            "dummy_signing_helper"
        );
    }

    #[test]
    fn selects_latest_or_exact_patch() {
        let m = Manifest::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(m.select("1.31").unwrap().version, "1.31.2");
        assert_eq!(m.select("1.31.1").unwrap().version, "1.31.1");
        assert_eq!(
            m.select("v1.31.2").unwrap().artifacts[0]
                .gzip_uri
                .as_deref(),
            Some("https://m/1.31.2/kubelet.gz")
        );
        // No latest_patch_version: highest patch number, numerically (10 > 7).
        assert_eq!(m.select("1.30").unwrap().version, "1.30.10");
        assert!(
            matches!(m.select("1.29"), Err(ManifestError::NoRelease(_, ref a)) if a == "1.31, 1.30")
        );
        assert!(matches!(
            m.select("1.31.9"),
            Err(ManifestError::NoPatch(..))
        ));
        for bad in ["1", "1.31.2.3", "latest", "1.x", ""] {
            assert!(
                matches!(m.select(bad), Err(ManifestError::BadVersion(_))),
                "{bad}"
            );
        }
        assert_eq!(m.latest_signing_helper().unwrap().version, "1.10.1");
    }

    #[test]
    fn rejects_garbage_manifest() {
        assert!(matches!(
            Manifest::parse(b"supported_eks_releases: 7"),
            Err(ManifestError::Parse(_))
        ));
    }

    #[test]
    fn checksum_forms() {
        let h = "ab".repeat(32);
        let want = [0xabu8; 32];
        assert_eq!(
            parse_checksum(h.as_bytes(), "kubelet", "kubelet").unwrap(),
            want
        );
        assert_eq!(
            parse_checksum(format!("{h}\n").as_bytes(), "kubelet", "kubelet").unwrap(),
            want
        );
        assert_eq!(
            parse_checksum(format!("{h}  kubelet\n").as_bytes(), "kubelet", "kubelet").unwrap(),
            want
        );
        assert_eq!(
            parse_checksum(format!("{h} *bin/kubelet").as_bytes(), "kubelet", "kubelet").unwrap(),
            want
        );
        let multi = format!(
            "{}  kubectl\n{h}  cni-plugins-linux-amd64-v1.5.tgz\n",
            "cd".repeat(32)
        );
        assert_eq!(
            parse_checksum(
                multi.as_bytes(),
                "cni-plugins",
                "cni-plugins-linux-amd64-v1.5.tgz"
            )
            .unwrap(),
            want
        );
        assert!(matches!(
            parse_checksum(format!("{h}  kubectl").as_bytes(), "kubelet", "kubelet"),
            Err(ManifestError::ChecksumName { .. })
        ));
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            &format!("{h} a b"),
            &"ab".repeat(31),
        ] {
            assert!(
                parse_checksum(bad.as_bytes(), "kubelet", "kubelet").is_err(),
                "{bad:?}"
            );
        }
    }
}
