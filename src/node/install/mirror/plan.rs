//! The pure core of `sync-artifacts`: which patch releases, where each file of the mirror goes
//! (the path of its URL), the mirrored manifest with its URLs rewritten, and the serial of the
//! new signed manifest. Bytes and values in, values out.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_yaml_ng::{Mapping, Value};

use super::MANIFEST_NAME;
use crate::error::{Class, Classify};
use crate::node::install::fetch;
use crate::node::install::manifest::{self, Artifact, Manifest};
use crate::node::install::signed::ArtifactKey;

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
    pub(super) fn what(&self) -> String {
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

pub(super) fn signed_name() -> String {
    crate::node::install::signed_url(MANIFEST_NAME)
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
