//! Staged installs, for `upgrade`: the whole new set of artifacts is downloaded and verified
//! beside the installed files before any installed file changes, then moved into place by
//! renames that can be repeated after a power cut.
//!
//! A staged file waits under a hidden name in its final directory (`/usr/bin/.kubelet.hb-upgrade`),
//! the CNI plugins in a sibling directory (`/opt/cni/.bin.hb-upgrade/`), so every move is a
//! rename within one file system: atomic, and never a copy. A file that already holds the new
//! digest is not staged at all.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{
    check_cni, choose, cni, cni_intact, default_tracker, download_all, fetch, host_arch,
    load_manifest, note_artifact, note_image_capabilities, read_record, signed, sources, Chosen,
    Download, InstallSettings, Manifest, Record, RecordedFile, Sources, CNI_BIN_DIR, CNI_STAGING,
};
use crate::error::{self, ResultExt};
use crate::fsutil::{self, WriteOptions};

/// How a staged file's name ends (after a leading dot and the final name).
pub const STAGED_SUFFIX: &str = ".hb-upgrade";
/// Where the new CNI plugins wait (beside [`CNI_BIN_DIR`]).
pub const CNI_STAGING_DIR: &str = "/opt/cni/.bin.hb-upgrade";

/// A release chosen from a manifest that was fetched and verified as `install` verifies it.
pub struct Resolved {
    src: Sources,
    manifest: Manifest,
    signed: Option<signed::SignedManifest>,
    arch: String,
    /// The install record before this run (empty when nothing was installed).
    pub previous: Record,
    /// The exact version the manifest gives for the one asked (`1.31` -> `1.31.2`).
    pub version: String,
}

/// Fetches and verifies the manifest (signed manifest included, with its replay check against
/// the install record) and picks the release `args.kubernetes_version` names. Downloads no
/// artifact.
pub fn resolve(args: &InstallSettings) -> anyhow::Result<Resolved> {
    let src = sources(args.ca_bundle.as_deref())?;
    let previous = read_record(&args.root)?.unwrap_or_default();
    let (manifest, signed) = load_manifest(&src, args, previous.manifest_serial)?;
    let version = manifest
        .select(&args.kubernetes_version)
        .classed()
        .with_context(|| args.manifest.clone())?
        .version
        .clone();
    Ok(Resolved {
        src,
        manifest,
        signed,
        arch: args.arch.clone().unwrap_or_else(|| host_arch().to_string()),
        previous,
        version,
    })
}

/// One staged file and where it goes (both absolute, without the root).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Move {
    /// Where the verified file waits.
    pub staged: String,
    /// Its final path.
    pub target: String,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// A staged install: what the record becomes once the moves are done.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Staged {
    /// The install record after the moves.
    pub record: Record,
    /// Staged files to rename into place.
    pub moves: Vec<Move>,
    /// Files the previous install placed that the new release no longer has.
    pub remove: Vec<String>,
}

/// The hidden name a file waits under in its own directory: `/usr/bin/kubelet` ->
/// `/usr/bin/.kubelet.hb-upgrade`.
pub fn staged_path(target: &str) -> String {
    let p = Path::new(target);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    p.with_file_name(format!(".{name}{STAGED_SUFFIX}"))
        .display()
        .to_string()
}

/// Downloads and verifies every artifact of `resolved` that differs from what is installed,
/// side by side as `install` does, into the staging names. Nothing installed changes; on
/// failure the staged files are removed.
pub fn stage(args: &InstallSettings, resolved: &Resolved) -> anyhow::Result<Staged> {
    let root = &args.root;
    let release = resolved
        .manifest
        .select(&resolved.version)
        .classed()
        .with_context(|| args.manifest.clone())?;
    let chosen = choose(
        &resolved.src,
        args,
        resolved.signed.as_ref(),
        &release.version,
        &release.artifacts,
        &resolved.arch,
    )?;
    let previous = &resolved.previous;
    let mut record = Record {
        kubernetes_version: release.version.clone(),
        tracker: default_tracker(),
        manifest_serial: resolved
            .signed
            .as_ref()
            .map(|s| s.serial)
            .max(previous.manifest_serial),
        ..Record::default()
    };
    // What each artifact needs: nothing (installed already), a move of a file a killed run
    // staged and verified, or a download into its staging name.
    let mut needs = Vec::new();
    for c in &chosen {
        needs.push(staging_need(root, c, previous)?);
    }
    let jobs: Vec<(&Chosen, &Download)> = chosen
        .iter()
        .zip(&needs)
        .filter_map(|(c, n)| match n {
            Need::Download(d) => Some((c, d)),
            _ => None,
        })
        .collect();
    let downloads = download_all(&resolved.src, &jobs)?;
    for ((c, _), s) in jobs.iter().zip(&downloads) {
        if c.placement.path == CNI_BIN_DIR {
            check_cni(c, s)?;
        }
    }
    let mut moves = Vec::new();
    let promoted = (|| -> anyhow::Result<()> {
        let mut downloads = downloads.into_iter();
        for (c, n) in chosen.iter().zip(&needs) {
            let name = &c.artifact.name;
            let download = match n {
                Need::Download(_) => downloads.next(),
                _ => None,
            };
            if c.placement.path == CNI_BIN_DIR {
                match download {
                    None => {
                        for (p, f) in previous.files.iter().filter(|(_, f)| &f.artifact == name) {
                            record.files.insert(p.clone(), f.clone());
                        }
                    }
                    Some(tarball) => {
                        stage_cni(root, c, tarball, &mut moves, &mut record)?;
                    }
                }
            } else {
                let target = c.placement.path;
                if !matches!(n, Need::Nothing) {
                    let staged = staged_path(target);
                    if let Some(file) = download {
                        file.place()
                            .with_context(|| format!("staging {name} at {staged}"))?;
                    }
                    moves.push(Move {
                        staged,
                        target: target.to_string(),
                        sha256: hex::encode(c.want),
                    });
                }
                record.files.insert(
                    target.to_string(),
                    RecordedFile {
                        artifact: name.clone(),
                        sha256: hex::encode(c.want),
                    },
                );
            }
            note_artifact(c, &mut record);
        }
        Ok(())
    })();
    if let Err(e) = promoted {
        discard(root, &moves);
        return Err(e);
    }
    note_image_capabilities(root, args.containerd_source, &mut record);
    let remove = previous
        .files
        .iter()
        .filter(|(path, f)| {
            !record.files.contains_key(*path)
                && chosen.iter().any(|c| c.artifact.name == f.artifact)
        })
        .map(|(path, _)| path.clone())
        .collect();
    Ok(Staged {
        record,
        moves,
        remove,
    })
}

/// What one artifact needs before the moves.
enum Need {
    /// The installed file (or CNI set) is the new release's already.
    Nothing,
    /// A killed run staged and verified it already.
    Staged,
    /// A download into its staging name (the CNI tarball: beside the state).
    Download(Download),
}

fn staging_need(root: &Path, c: &Chosen, previous: &Record) -> anyhow::Result<Need> {
    let name = &c.artifact.name;
    let gzip_uri = c.artifact.gzip_uri.as_deref().filter(|u| !u.is_empty());
    let url = gzip_uri.unwrap_or(&c.artifact.uri).to_string();
    let gzip = gzip_uri.is_some();
    let digest =
        |p: &Path| fetch::sha256_file(p).with_context(|| format!("reading {}", p.display()));
    if c.placement.path == CNI_BIN_DIR {
        if cni_intact(root, c, previous) {
            log::info!("{name}: {CNI_BIN_DIR} is already the new release's; kept");
            return Ok(Need::Nothing);
        }
        let target = fsutil::under_root(root, Path::new(CNI_STAGING));
        clean_temp_files(&target)?;
        return Ok(Need::Download(Download {
            url,
            gzip,
            target,
            opts: WriteOptions::private(),
        }));
    }
    if digest(&fsutil::under_root(root, Path::new(c.placement.path)))? == Some(c.want) {
        log::info!(
            "{name}: {} is already the new release's; kept",
            c.placement.path
        );
        return Ok(Need::Nothing);
    }
    let staged = fsutil::under_root(root, Path::new(&staged_path(c.placement.path)));
    clean_temp_files(&staged)?;
    if digest(&staged)? == Some(c.want) {
        log::info!("{name}: staged and verified by an interrupted run; not downloaded again");
        return Ok(Need::Staged);
    }
    Ok(Need::Download(Download {
        url,
        gzip,
        target: staged,
        opts: WriteOptions::executable(),
    }))
}

/// Removes the temporary files a killed download left beside `target`.
fn clean_temp_files(target: &Path) -> anyhow::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    fsutil::remove_stale_temp_files(dir)
        .map(drop)
        .with_context(|| format!("cleaning {}", dir.display()))
}

/// Extracts a verified (and checked) CNI tarball into [`CNI_STAGING_DIR`], emptied first, and
/// notes a move per plugin.
fn stage_cni(
    root: &Path,
    c: &Chosen,
    tarball: fetch::Staged,
    moves: &mut Vec<Move>,
    record: &mut Record,
) -> anyhow::Result<()> {
    let dir = fsutil::under_root(root, Path::new(CNI_STAGING_DIR));
    clear_dir(&dir)?;
    let placed = std::fs::File::open(tarball.path())
        .map_err(cni::CniError::Corrupt)
        .and_then(|t| cni::extract(t, &dir, &cni::Limits::default()))
        .classed()
        .with_context(|| c.artifact.uri.clone())?;
    // Dropping the verified tarball removes it.
    drop(tarball);
    for (path, digest) in placed {
        let rel = path.strip_prefix(&dir).unwrap_or(&path).to_path_buf();
        let target = Path::new(CNI_BIN_DIR).join(&rel).display().to_string();
        let sha256 = hex::encode(digest);
        moves.push(Move {
            staged: Path::new(CNI_STAGING_DIR).join(&rel).display().to_string(),
            target: target.clone(),
            sha256: sha256.clone(),
        });
        record.files.insert(
            target,
            RecordedFile {
                artifact: c.artifact.name.clone(),
                sha256,
            },
        );
    }
    Ok(())
}

/// Removes the regular files in our own staging directory (left by an interrupted run).
fn clear_dir(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            fsutil::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes the staged files of an upgrade that will not happen (best effort: a leftover is
/// harmless and replaced by the next staging).
pub fn discard(root: &Path, moves: &[Move]) {
    for m in moves {
        let _ = fsutil::remove_file(&fsutil::under_root(root, Path::new(&m.staged)));
    }
    let _ = std::fs::remove_dir(fsutil::under_root(root, Path::new(CNI_STAGING_DIR)));
}

/// Moves the staged files into place and removes the dropped ones. Safe to repeat after an
/// interruption at any point: a move whose staged file is gone is done when the target holds
/// its digest.
pub fn apply(root: &Path, staged: &Staged) -> anyhow::Result<()> {
    for m in &staged.moves {
        let from = fsutil::under_root(root, Path::new(&m.staged));
        let to = fsutil::under_root(root, Path::new(&m.target));
        let digest = |p: &PathBuf| {
            fetch::sha256_file(p)
                .with_context(|| format!("reading {}", p.display()))
                .map(|d| d.map(hex::encode))
        };
        match digest(&from)? {
            Some(d) if d == m.sha256 => {
                fsutil::rename(&from, &to)
                    .with_context(|| format!("moving {} to {}", m.staged, m.target))?;
            }
            Some(d) => {
                return Err(error::operator(format!(
                    "{} changed after it was verified (sha256 {d}, verified {}); remove it and the upgrade journal, then run the upgrade again",
                    from.display(),
                    m.sha256
                )))
            }
            None if digest(&to)?.as_deref() == Some(m.sha256.as_str()) => {}
            None => {
                return Err(error::operator(format!(
                    "{} is gone and {} does not hold sha256 {}; remove the upgrade journal and run the upgrade again",
                    from.display(),
                    to.display(),
                    m.sha256
                )))
            }
        }
    }
    let _ = std::fs::remove_dir(fsutil::under_root(root, Path::new(CNI_STAGING_DIR)));
    for path in &staged.remove {
        let p = fsutil::under_root(root, Path::new(path));
        if fsutil::remove_file(&p).with_context(|| format!("removing {}", p.display()))? {
            log::info!(
                "removed {path} (not in Kubernetes {})",
                staged.record.kubernetes_version
            );
        }
    }
    super::write_state(root, &staged.record)
}
