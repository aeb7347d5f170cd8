//! The file-writing phases of `init`: every rendered file is written atomically under `--root`,
//! only when its content or mode differs, and the caller learns which changed so that it
//! restarts only what needs it (a second run with the same inputs changes nothing).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::render::{Effect, ObsoleteFile, RenderedFile};
use crate::fsutil::{self, WriteOptions};

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

/// What `write_files` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Files written because they were missing or different (node paths).
    pub changed: Vec<PathBuf>,
    /// Files already identical.
    pub unchanged: Vec<PathBuf>,
    /// Obsolete files that were removed.
    pub removed: Vec<PathBuf>,
    /// What the changes require (daemon-reload, restarts), without duplicates, in order.
    pub effects: BTreeSet<Effect>,
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

/// Writes `files` under `root`, each atomically, skipping those already up to date.
pub fn write_files(root: &Path, files: &[RenderedFile]) -> Result<WriteReport, WriteError> {
    let mut report = WriteReport::default();
    for f in files {
        let target = fsutil::under_root(root, &f.path);
        if up_to_date(&target, &f.contents, f.mode) {
            report.unchanged.push(f.path.clone());
            continue;
        }
        fsutil::atomic_write(
            &target,
            &f.contents,
            &WriteOptions::public().with_mode(f.mode),
        )
        .map_err(|source| WriteError {
            path: f.path.clone(),
            source,
        })?;
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

    fn file(path: &str, body: &str, effects: &[Effect]) -> RenderedFile {
        RenderedFile {
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
