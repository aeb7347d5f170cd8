//! The file-writing phases of `init`: every rendered file is written atomically under `--root`,
//! only when its content or mode differs, and the caller learns which changed so that it
//! restarts only what needs it (a second run with the same inputs changes nothing).

use crate::error::{Class, Classify};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{self, WriteOptions};
use crate::node::config::NodeConfig;
use crate::node::render::{
    self, ClusterDetails, Effect, FilePhase, NodeFacts, ObsoleteFile, RenderError, RenderedFile,
};

/// A phase of `init` that `--skip NAME` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Writing one group of files (`aws`, `system`, `containerd`, `kubelet`).
    Files(FilePhase),
    /// DescribeCluster (`cluster-details`).
    ClusterDetails,
    /// Node IP inside the remote node networks (`node-ip-validation`).
    NodeIpValidation,
    /// Certificate readable, valid, CN == nodeName (`certificate-validation`).
    CertificateValidation,
    /// Clock after the floor (`clock-validation`).
    ClockValidation,
    /// Enabling and restarting units (`run`).
    Run,
    /// Making sure containerd holds the sandbox image (`sandbox-image`).
    SandboxImage,
}

const FILE_PHASES: [FilePhase; 4] = [
    FilePhase::Aws,
    FilePhase::System,
    FilePhase::Containerd,
    FilePhase::Kubelet,
];

/// nodeadm phase names hybridboot has no equivalent for: accepted so that existing
/// `nodeadm init --skip ...` command lines keep working, and ignored.
pub const NODEADM_ONLY_PHASES: &[&str] = &[
    "install-validation",
    "cni-validation",
    "credentials-validation",
    "kubelet-cert-validation",
    "ssm-api-network-validation",
    "iam-ra-api-network-validation",
    "aws-auth-validation",
    "k8s-endpoint-network-validation",
    "k8s-authentication-validation",
    "kubelet-version-skew-validation",
    "api-server-endpoint-resolution-validation",
    "proxy-validation",
    "node-inactive-validation",
    "cluster-access-validation",
    "preprocess",
];

/// The steps `--skip` named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skip {
    phases: BTreeSet<Phase>,
    /// nodeadm names that were accepted but mean nothing here.
    pub ignored: Vec<String>,
}

impl Skip {
    /// Parses `--skip a,b` values (repeatable, comma separated). nodeadm's `config` skips every
    /// file; unknown names are an error listing the known ones.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Skip, String> {
        let mut skip = Skip::default();
        for name in values
            .iter()
            .flat_map(|v| v.as_ref().split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            match name {
                "config" => skip.phases.extend(FILE_PHASES.map(Phase::Files)),
                "cluster-details" => {
                    skip.phases.insert(Phase::ClusterDetails);
                }
                "node-ip-validation" => {
                    skip.phases.insert(Phase::NodeIpValidation);
                }
                "certificate-validation" => {
                    skip.phases.insert(Phase::CertificateValidation);
                }
                "clock-validation" => {
                    skip.phases.insert(Phase::ClockValidation);
                }
                "run" => {
                    skip.phases.insert(Phase::Run);
                }
                "sandbox-image" => {
                    skip.phases.insert(Phase::SandboxImage);
                }
                n if NODEADM_ONLY_PHASES.contains(&n) => skip.ignored.push(n.to_string()),
                n => match FILE_PHASES.iter().find(|p| p.name() == n) {
                    Some(p) => {
                        skip.phases.insert(Phase::Files(*p));
                    }
                    None => {
                        return Err(format!(
                            "--skip {n:?}: unknown phase; known: {}",
                            Skip::known_names().join(", ")
                        ))
                    }
                },
            }
        }
        Ok(skip)
    }

    /// Every name `--skip` accepts that means something to hybridboot.
    pub fn known_names() -> Vec<&'static str> {
        let mut v = vec!["config"];
        v.extend(FILE_PHASES.map(FilePhase::name));
        v.extend([
            "cluster-details",
            "node-ip-validation",
            "certificate-validation",
            "clock-validation",
            "run",
            "sandbox-image",
        ]);
        v
    }

    /// True when `step` is skipped.
    pub fn skips(&self, step: Phase) -> bool {
        self.phases.contains(&step)
    }
}

/// Why the file phase failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Rendering failed: nothing was written.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A write failed (each file is atomic; earlier files may be new).
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl Classify for FilesError {
    /// Rendering fails on the configuration; a write is classed by its I/O error's kind.
    fn class(&self) -> Class {
        match self {
            FilesError::Render(r) => r.class(),
            FilesError::Write(w) => w.class(),
        }
    }
}

/// The file phases of `init`: renders everything first (so bad input writes nothing), then
/// writes the files and removes the obsolete ones of every phase not skipped.
pub fn files_phase(
    root: &Path,
    cfg: &NodeConfig,
    cluster: &ClusterDetails,
    facts: &NodeFacts,
    skip: &Skip,
) -> Result<WriteReport, FilesError> {
    let (files, obsolete) = render_phase(cfg, cluster, facts, skip)?;
    Ok(apply(root, &files, &obsolete)?)
}

/// The files of every phase not skipped, and the obsolete files to remove: pure, nothing is
/// read or written.
pub fn render_phase(
    cfg: &NodeConfig,
    cluster: &ClusterDetails,
    facts: &NodeFacts,
    skip: &Skip,
) -> Result<(Vec<RenderedFile>, Vec<ObsoleteFile>), RenderError> {
    let keep = |phase: FilePhase| !skip.skips(Phase::Files(phase));
    let files: Vec<RenderedFile> = render::render_all(cfg, cluster, facts)?
        .into_iter()
        .filter(|f| keep(f.phase))
        .collect();
    let obsolete: Vec<ObsoleteFile> = render::obsolete_files(cfg, facts)
        .into_iter()
        .filter(|f| keep(f.phase))
        .collect();
    Ok((files, obsolete))
}

/// What [`apply`] would report for `files` and `obsolete` under `root`, without writing,
/// removing or cleaning up anything (`--dry-run`).
pub fn preview(root: &Path, files: &[RenderedFile], obsolete: &[ObsoleteFile]) -> WriteReport {
    let mut report = WriteReport::default();
    for f in files {
        let target = fsutil::under_root(root, &f.path);
        let effects = f.effects.iter().copied().filter(|e| *e != Effect::None);
        if up_to_date(&target, &f.contents, f.mode) {
            report.unchanged.push(f.path.clone());
            report.unchanged_effects.extend(effects);
            continue;
        }
        if std::fs::symlink_metadata(&target).is_err() {
            report.created.push(f.path.clone());
        }
        report.changed.push(f.path.clone());
        report.effects.extend(effects);
    }
    for f in obsolete {
        let target = fsutil::under_root(root, &f.path);
        if std::fs::symlink_metadata(&target).is_ok() {
            report.removed.push(f.path.clone());
            report
                .effects
                .extend(f.effects.iter().copied().filter(|e| *e != Effect::None));
        }
    }
    report
}

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {source}", path.display())]
pub struct WriteError {
    /// The file (on the node, without the root prefix).
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl Classify for WriteError {
    /// By the I/O error's kind (a read-only or missing directory is the operator's).
    fn class(&self) -> Class {
        crate::error::io_class(self.source.kind())
    }
}

/// What `write_files` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Files written because they were missing or different (node paths).
    pub changed: Vec<PathBuf>,
    /// Those of `changed` that did not exist before.
    pub created: Vec<PathBuf>,
    /// Files already identical.
    pub unchanged: Vec<PathBuf>,
    /// Obsolete files that were removed.
    pub removed: Vec<PathBuf>,
    /// What the changes require (daemon-reload, restarts), without duplicates, in order.
    pub effects: BTreeSet<Effect>,
    /// What the unchanged files would require: a caller that cannot know whether an earlier,
    /// interrupted run already applied them (first boot) applies these too.
    pub unchanged_effects: BTreeSet<Effect>,
}

impl WriteReport {
    /// True when nothing was written.
    pub fn is_noop(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// True when `path` already holds exactly `contents` with `mode`.
fn up_to_date(path: &Path, contents: &[u8], mode: u32) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file()
        || meta.permissions().mode() & 0o7777 != mode
        || meta.len() != contents.len() as u64
    {
        return false;
    }
    std::fs::read(path).is_ok_and(|existing| existing == contents)
}

/// Writes `files` under `root`, each atomically, skipping those already up to date. First
/// removes the temporary files a writer killed in these directories left (a power cut mid-init).
///
/// The files are written as one [`fsutil::Batch`]: each is staged and flushed, then all are
/// renamed, then each directory is flushed once. A crash leaves every file old or new, never
/// partial, but possibly only some of them new; a re-run finds those up to date and writes the
/// rest (first boot records init complete only after this returned, and until then applies the
/// unchanged files' effects too, so a partial set is repaired, units included).
pub fn write_files(root: &Path, files: &[RenderedFile]) -> Result<WriteReport, WriteError> {
    let mut report = WriteReport::default();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.path.parent().map(Path::to_path_buf))
        .collect();
    for dir in dirs {
        match fsutil::remove_stale_temp_files(&fsutil::under_root(root, &dir)) {
            Ok(0) => {}
            Ok(n) => log::info!(
                "removed {n} temporary file(s) of an interrupted run in {}",
                dir.display()
            ),
            Err(source) => return Err(WriteError { path: dir, source }),
        }
    }
    let mut batch = fsutil::Batch::new();
    let mut staged: Vec<&RenderedFile> = Vec::new();
    for f in files {
        let target = fsutil::under_root(root, &f.path);
        if up_to_date(&target, &f.contents, f.mode) {
            report.unchanged.push(f.path.clone());
            report
                .unchanged_effects
                .extend(f.effects.iter().copied().filter(|e| *e != Effect::None));
            continue;
        }
        if std::fs::symlink_metadata(&target).is_err() {
            report.created.push(f.path.clone());
        }
        batch
            .stage(
                &target,
                &f.contents,
                &WriteOptions::public().with_mode(f.mode),
            )
            .map_err(|source| WriteError {
                path: f.path.clone(),
                source,
            })?;
        staged.push(f);
    }
    batch.commit().map_err(|e| WriteError {
        path: staged
            .get(e.index)
            .map_or_else(PathBuf::new, |f| f.path.clone()),
        source: e.source,
    })?;
    for f in staged {
        log::info!("wrote {}", f.path.display());
        report.changed.push(f.path.clone());
        report
            .effects
            .extend(f.effects.iter().copied().filter(|e| *e != Effect::None));
    }
    Ok(report)
}

/// Removes the `obsolete` files that exist under `root`, adding them and their effects to
/// `report`.
pub fn remove_obsolete(
    root: &Path,
    obsolete: &[ObsoleteFile],
    report: &mut WriteReport,
) -> Result<(), WriteError> {
    for f in obsolete {
        let target = fsutil::under_root(root, &f.path);
        let removed = fsutil::remove_file(&target).map_err(|source| WriteError {
            path: f.path.clone(),
            source,
        })?;
        if removed {
            log::info!("removed obsolete {}", f.path.display());
            report.removed.push(f.path.clone());
            report
                .effects
                .extend(f.effects.iter().copied().filter(|e| *e != Effect::None));
        }
    }
    Ok(())
}

/// Writes `files` and removes `obsolete` ones: the whole file phase of `init`.
pub fn apply(
    root: &Path,
    files: &[RenderedFile],
    obsolete: &[ObsoleteFile],
) -> Result<WriteReport, WriteError> {
    let mut report = write_files(root, files)?;
    remove_obsolete(root, obsolete, &mut report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_names() {
        let s = Skip::parse(&[
            "run,node-ip-validation",
            "k8s-authentication-validation",
            "kubelet",
        ])
        .unwrap();
        assert!(s.skips(Phase::Run) && s.skips(Phase::NodeIpValidation));
        assert!(s.skips(Phase::Files(FilePhase::Kubelet)));
        assert!(!s.skips(Phase::Files(FilePhase::Aws)));
        assert_eq!(s.ignored, vec!["k8s-authentication-validation"]);
        let all = Skip::parse(&["config"]).unwrap();
        assert!(FILE_PHASES.iter().all(|p| all.skips(Phase::Files(*p))));
        let e = Skip::parse(&["kubelett"]).unwrap_err();
        assert!(
            e.contains("unknown phase") && e.contains("containerd"),
            "{e}"
        );
    }

    fn file(path: &str, body: &str, effects: &[Effect]) -> RenderedFile {
        RenderedFile {
            phase: FilePhase::Kubelet,
            path: path.into(),
            contents: body.as_bytes().to_vec(),
            mode: 0o644,
            effects: effects.to_vec(),
        }
    }

    #[test]
    fn idempotent_and_reports_only_changes() {
        let root = tempfile::tempdir().unwrap();
        let files = vec![
            file("/etc/a.conf", "a", &[Effect::Containerd]),
            file("/etc/b/b.conf", "b", &[Effect::Kubelet]),
        ];
        let first = write_files(root.path(), &files).unwrap();
        assert_eq!(first.changed.len(), 2);
        assert_eq!(
            first.effects.iter().copied().collect::<Vec<_>>(),
            vec![Effect::Containerd, Effect::Kubelet]
        );
        let second = write_files(root.path(), &files).unwrap();
        assert!(second.is_noop());
        assert!(second.effects.is_empty());

        let mut changed = files.clone();
        changed[1].contents = b"b2".to_vec();
        let third = write_files(root.path(), &changed).unwrap();
        assert_eq!(third.changed, vec![PathBuf::from("/etc/b/b.conf")]);
        assert_eq!(
            third.effects.iter().copied().collect::<Vec<_>>(),
            vec![Effect::Kubelet]
        );
        assert_eq!(
            std::fs::read(root.path().join("etc/b/b.conf")).unwrap(),
            b"b2"
        );
        // A mode drift is a change too.
        let p = root.path().join("etc/a.conf");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let fourth = write_files(root.path(), &changed).unwrap();
        assert_eq!(fourth.changed, vec![PathBuf::from("/etc/a.conf")]);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
}
