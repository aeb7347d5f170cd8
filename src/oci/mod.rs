//! Just enough of the OCI image and distribution specifications to fetch one small image for one
//! platform and hand it to containerd: image references, manifests and indexes (OCI and Docker
//! v2 media types), platform selection, digests, registry auth challenges ([`registry`] does the
//! I/O), and the OCI image-layout archive that `ctr images import` reads ([`archive`]).
//!
//! Why a client of our own rather than asking containerd over CRI (`ImageService.PullImage`, as
//! nodeadm does): CRI is gRPC over HTTP/2 with protobuf messages; speaking it takes tonic, prost
//! and h2 (plus their async runtime), several hundred KiB of a binary that must stay small and
//! static, for one call at first boot. The distribution API is plain HTTPS GETs that the
//! project's one HTTP client already makes, and `ctr images import -` (shipped with containerd)
//! puts the verified result into the same content store the CRI plugin uses. It also lets
//! hybridboot verify every digest itself before containerd sees a byte, and keeps the registry
//! token inside this process (no argv, environment or file carries it).

pub mod archive;
pub mod registry;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (schema 2).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The `Accept` header of manifest requests: every form we can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A parsed image reference: `registry/repository[:tag][@sha256:...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The reference as written (the name containerd knows the image by).
    pub name: String,
    /// Registry host, with port if any (`docker.io` for references without one).
    pub registry: String,
    /// Repository path (`eks/pause`; `library/x` on Docker Hub).
    pub repository: String,
    /// Tag, if any (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Digest, if pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference the way containerd and Docker normalise it.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("image reference {text:?}: {why}");
        let name = text.trim();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("empty or contains spaces"));
        }
        let (rest, digest) = match name.split_once('@') {
            Some((r, d)) => {
                check_digest(d).map_err(|e| bad(&e))?;
                (r, Some(d.to_string()))
            }
            None => (name, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), Some(tag.to_string())),
            _ => (path, None),
        };
        if repository.is_empty()
            || !repository.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'/' | b'.' | b'_' | b'-')
            })
        {
            return Err(bad(
                "the repository must be lowercase letters, digits and . _ - /",
            ));
        }
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(bad("invalid tag"));
            }
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            name: name.to_string(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host that serves the registry API (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What the manifest request names: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// Accepts only `sha256:<64 lowercase hex>` (what registries and containerd use).
pub fn check_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "digest {d:?} is not sha256:<64 hex digits> (other algorithms are not supported)"
        )),
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A platform (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v8`, `v7`, ...
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// This node's platform in OCI terms (Go's GOARCH names).
pub fn node_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
        variant: variant.map(str::to_string),
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// For index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A manifest document: an index of per-platform manifests, or one image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestDoc {
    /// Index / manifest list.
    Index(Vec<Descriptor>),
    /// Image manifest: its media type, config and layers.
    Image {
        /// Media type of the manifest itself.
        media_type: String,
        /// The config blob.
        config: Descriptor,
        /// The layer blobs.
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest document; `content_type` is the response's `Content-Type`, used when the
/// document does not name its own media type.
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<ManifestDoc, String> {
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| format!("not a manifest (JSON: {e})"))?;
    if raw.schema_version != Some(2) {
        return Err(format!(
            "schemaVersion {:?}: only schema 2 (OCI, Docker v2) manifests are supported",
            raw.schema_version
        ));
    }
    let media_type = raw
        .media_type
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()))
        .unwrap_or_default();
    let check = |d: &Descriptor| check_digest(&d.digest);
    match (raw.manifests, raw.config, raw.layers) {
        (Some(m), None, _) if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST => {
            m.iter().try_for_each(check)?;
            Ok(ManifestDoc::Index(m))
        }
        (None, Some(config), layers) => {
            let media_type = if media_type == OCI_INDEX || media_type == DOCKER_LIST {
                return Err(format!("{media_type} without manifests"));
            } else if media_type.is_empty() {
                OCI_MANIFEST.to_string()
            } else {
                media_type
            };
            let layers = layers.unwrap_or_default();
            check(&config)?;
            layers.iter().try_for_each(check)?;
            Ok(ManifestDoc::Image {
                media_type,
                config,
                layers,
            })
        }
        _ => Err("neither an image index nor an image manifest".into()),
    }
}

/// The index entry for `want`: same OS and architecture; among those, the same variant, else
/// one without a variant (arm64 images often omit `v8`).
pub fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
        .collect();
    candidates
        .iter()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref())
        .or_else(|| {
            candidates
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none()))
        })
        .or_else(|| candidates.first())
        .copied()
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`: send the credentials as Basic.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`: get a token from the realm first.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter, if given.
        service: Option<String>,
        /// `scope` parameter, if given.
        scope: Option<String>,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` header (the registries we talk to send
/// one). Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let mut values = std::collections::BTreeMap::new();
    // key="value" pairs separated by commas; values may contain commas inside quotes.
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        values.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: values.remove("realm")?,
            service: values.remove("service"),
            scope: values.remove("scope"),
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_containerd() {
        let r =
            Reference::parse("602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5").unwrap();
        assert_eq!(r.registry, "602401143452.dkr.ecr.us-west-2.amazonaws.com");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("eks/pause", Some("3.5"))
        );
        assert_eq!(r.manifest_reference(), "3.5");
        let local = Reference::parse("127.0.0.1:5000/eks/pause").unwrap();
        assert_eq!(local.registry, "127.0.0.1:5000");
        assert_eq!(local.tag.as_deref(), Some("latest"));
        let hub = Reference::parse("pause:3.9").unwrap();
        assert_eq!(
            (hub.api_host(), hub.repository.as_str()),
            ("registry-1.docker.io", "library/pause")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let pinned = Reference::parse(&format!("registry.k8s.io/pause:3.9@{d}")).unwrap();
        assert_eq!(pinned.manifest_reference(), d);
        assert_eq!(pinned.tag.as_deref(), Some("3.9"));
        for bad in [
            "",
            "a b",
            "Reg.io/UPPER:1",
            "r.io/x@sha256:12",
            "r.io/x:",
            "r.io/x@md5:aa",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    fn desc(arch: &str, variant: Option<&str>, n: char) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(str::to_string),
            }),
        }
    }

    #[test]
    fn platform_selection_prefers_the_exact_variant() {
        let entries = vec![
            desc("amd64", None, 'a'),
            desc("arm64", None, 'b'),
            desc("arm64", Some("v8"), 'c'),
            desc("arm", Some("v7"), 'd'),
        ];
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(
            select_platform(&entries, &amd).unwrap().digest.as_bytes()[7],
            b'a'
        );
        let arm = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(
            select_platform(&entries, &arm).unwrap().digest.as_bytes()[7],
            b'c'
        );
        assert_eq!(
            select_platform(&entries[..2], &arm)
                .unwrap()
                .digest
                .as_bytes()[7],
            b'b'
        );
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            variant: None,
        };
        assert!(select_platform(&entries, &s390).is_none());
        assert!(
            ["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"]
                .contains(&node_platform().architecture.as_str())
        );
    }

    #[test]
    fn manifests_and_indexes_parse() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":7,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d('1')
        );
        match parse_manifest(None, index.as_bytes()).unwrap() {
            ManifestDoc::Index(m) => assert_eq!(m[0].size, 7),
            other => panic!("{other:?}"),
        }
        // An OCI manifest without its own mediaType: the Content-Type decides.
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":2}},"layers":[{{"mediaType":"l","digest":"{}","size":3}}]}}"#,
            d('2'),
            d('3')
        );
        match parse_manifest(
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            manifest.as_bytes(),
        )
        .unwrap()
        {
            ManifestDoc::Image {
                media_type,
                config,
                layers,
            } => {
                assert_eq!(media_type, OCI_MANIFEST);
                assert_eq!((config.size, layers.len()), (2, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse_manifest(None, br#"{"schemaVersion":1,"fsLayers":[]}"#)
                .unwrap_err()
                .contains("schema 2")
        );
        assert!(parse_manifest(None, b"<html>").is_err());
        let bad_digest = manifest.replace(&d('3'), "sha512:00");
        assert!(parse_manifest(None, bad_digest.as_bytes())
            .unwrap_err()
            .contains("sha256"));
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Basic realm="https://602401143452.dkr.ecr.us-west-2.amazonaws.com/",service="ecr.amazonaws.com""#
            ),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:eks/pause:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:eks/pause:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
