//! `hybridboot uninstall`: stops and disables the units init enabled, then removes what install
//! placed (only files still as installed), the files init writes and the kubelet's own
//! certificates and state (a later join to another cluster must not find the old cluster's
//! kubelet client and serving certificates: `kubectl logs`/`exec` fail against them). Never the
//! node's key and certificate. The only recursive removal is of the kubelet state directories
//! named here, never across a mount point and never through a symbolic link.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{fetch, read_record, CNI_BIN_DIR, RECORD_PATH, TRACKER_PATH};
use crate::fsutil;
use crate::node::init::{ServiceManager, UnitAction};
use crate::node::render::{aws, kubelet};

/// What `uninstall` does and where.
#[derive(Debug, Clone)]
pub struct UninstallSettings {
    /// Uninstall from under this directory instead of `/`.
    pub root: PathBuf,
    /// Leave the units alone (image builds: nothing runs under the root).
    pub no_stop: bool,
}

/// The units init enabled, with the file whose presence says init set it up. containerd is
/// stopped only when install placed it (a distribution containerd may serve others).
const INIT_UNITS: &[(&str, &str)] = &[
    ("kubelet.service", kubelet::UNIT_PATH),
    (aws::UPDATE_UNIT_NAME, aws::UPDATE_UNIT_PATH),
];

/// The kubelet's certificates (client and serving, rotated by the kubelet itself): removed
/// whole.
const KUBELET_STATE_DIRS: &[&str] = &["/var/lib/kubelet/pki"];

/// The kubelet's checkpoint files: removed.
const KUBELET_STATE_FILES: &[&str] = &[
    "/var/lib/kubelet/cpu_manager_state",
    "/var/lib/kubelet/memory_manager_state",
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint",
];

/// Kubelet directories that may hold mounts (pod volumes): reported, never removed.
const KUBELET_MOUNT_DIRS: &[&str] = &["/var/lib/kubelet/pods", "/var/lib/kubelet/plugins"];

/// Files `init` writes; `uninstall` removes them.
const INIT_FILES: &[&str] = &[
    crate::node::render::kubelet::UNIT_PATH,
    crate::node::render::kubelet::CONFIG_PATH,
    crate::node::render::kubelet::DROP_IN_PATH,
    crate::node::render::kubelet::KUBECONFIG_PATH,
    crate::node::render::kubelet::CA_PATH,
    crate::node::render::kubelet::ENVIRONMENT_PATH,
    crate::node::render::kubelet::IMAGE_CREDENTIAL_PROVIDER_CONFIG,
    crate::node::render::kubelet::UPGRADE_GUARD_PATH,
    crate::node::render::containerd::CONFIG_PATH,
    crate::node::render::containerd::DROP_IN_PATH,
    crate::node::render::containerd::MODULES_PATH,
    crate::node::render::system::SYSCTL_PATH,
    crate::node::render::aws::UPDATE_UNIT_PATH,
    crate::node::config::DEFAULT_AWS_CONFIG_PATH,
];

/// Files `uninstall` never removes: the node's identity.
const KEPT_FILES: &[(&str, &str)] = &[
    (
        crate::node::config::DEFAULT_PRIVATE_KEY_PATH,
        "node private key",
    ),
    (
        crate::node::config::DEFAULT_CERTIFICATE_PATH,
        "node certificate",
    ),
];

/// `hybridboot uninstall`: stops and disables the units init enabled (unless `no_stop`),
/// removes what install placed (unless changed since), the files init writes and the
/// kubelet's certificates and state; keeps the node's key and certificate. Returns what it
/// did, a line each, for the command to print.
pub fn uninstall(
    settings: &UninstallSettings,
    services: &mut dyn ServiceManager,
) -> anyhow::Result<String> {
    let root = settings.root.as_path();
    let record = read_record(root)?;
    let exists =
        |p: &str| std::fs::symlink_metadata(fsutil::under_root(root, Path::new(p))).is_ok();
    let mut removed = Vec::new();
    let mut kept: Vec<(String, String)> = Vec::new();

    // The units first: nothing may run from the files about to go.
    let mut units: Vec<&str> = INIT_UNITS
        .iter()
        .filter(|(_, file)| exists(file))
        .map(|(unit, _)| *unit)
        .collect();
    let containerd_installed = record
        .as_ref()
        .is_some_and(|r| r.files.contains_key("/usr/bin/containerd"));
    if containerd_installed {
        units.push("containerd.service");
    }
    let mut stopped = Vec::new();
    if settings.no_stop {
        if !units.is_empty() {
            log::info!("--no-stop: leaving {} alone", units.join(", "));
        }
    } else {
        for unit in &units {
            services
                .apply(&UnitAction::Stop(unit.to_string()))
                .with_context(|| format!("stopping {unit} before removing its files (nothing was removed; pass --no-stop for an image that is not running)"))?;
            stopped.push(unit.to_string());
        }
    }

    // Refuse before removing anything: a kubelet state directory holding a mount point.
    for dir in KUBELET_STATE_DIRS {
        check_removable_tree(&fsutil::under_root(root, Path::new(dir)))?;
    }

    if let Some(record) = &record {
        for (path, f) in &record.files {
            let p = fsutil::under_root(root, Path::new(path));
            match fetch::sha256_file(&p).with_context(|| format!("reading {}", p.display()))? {
                None => {}
                Some(d) if hex::encode(d) == f.sha256 => {
                    fsutil::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
                    removed.push(path.clone());
                }
                Some(_) => {
                    kept.push((path.clone(), "changed since hybridboot installed it".into()))
                }
            }
        }
    } else {
        log::warn!("no install record at {RECORD_PATH}: removing only the files init writes and the kubelet's state");
    }
    let unit_files_before = INIT_UNITS.iter().filter(|(_, f)| exists(f)).count();
    for path in INIT_FILES
        .iter()
        .chain(KUBELET_STATE_FILES)
        .chain([TRACKER_PATH, RECORD_PATH].iter())
    {
        let p = fsutil::under_root(root, Path::new(path));
        if fsutil::remove_file(&p).with_context(|| format!("removing {}", p.display()))? {
            removed.push(path.to_string());
        }
    }
    for dir in KUBELET_STATE_DIRS {
        let p = fsutil::under_root(root, Path::new(dir));
        if remove_tree(&p).with_context(|| format!("removing {}", p.display()))? {
            removed.push(format!("{dir}/"));
        }
    }
    for dir in KUBELET_MOUNT_DIRS {
        let p = fsutil::under_root(root, Path::new(dir));
        if std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_some()) {
            kept.push((
                format!("{dir}/"),
                "may hold pod volume mounts: unmount them, then remove it".into(),
            ));
        }
    }
    for (path, why) in KEPT_FILES {
        if fsutil::under_root(root, Path::new(path)).exists() {
            kept.push((path.to_string(), why.to_string()));
        }
    }
    if exists(crate::firstboot::state::STAMP_FILE) {
        kept.push((
            crate::firstboot::state::STAMP_FILE.to_string(),
            "first boot's record; remove it for first boot to join again at the next boot".into(),
        ));
    }
    // Directories only install or init created, if now empty.
    for dir in [
        CNI_BIN_DIR,
        "/opt/cni",
        "/etc/eks/image-credential-provider",
        "/var/lib/kubelet/device-plugins",
    ] {
        let _ = std::fs::remove_dir(fsutil::under_root(root, Path::new(dir)));
    }
    if !settings.no_stop && unit_files_before > 0 {
        services.apply(&UnitAction::DaemonReload)?;
    }
    let mut report = String::new();
    for unit in &stopped {
        report.push_str(&format!("stopped and disabled {unit}\n"));
    }
    if !containerd_installed && !settings.no_stop {
        report.push_str("kept containerd.service running (not installed by hybridboot; `systemctl disable --now containerd` if nothing else uses it)\n");
    }
    for path in &removed {
        report.push_str(&format!("removed {path}\n"));
    }
    for (path, why) in &kept {
        report.push_str(&format!("kept {path} ({why})\n"));
    }
    log::info!(
        "uninstalled: {} units stopped, {} files removed, {} kept",
        stopped.len(),
        removed.len(),
        kept.len()
    );
    if record.is_none() && removed.is_empty() && stopped.is_empty() {
        return Err(crate::error::operator(format!(
            "nothing to uninstall under {}",
            root.display()
        )));
    }
    Ok(report)
}

/// Refuses a tree that is a mount point or holds one (pod volumes, a bind mount): removing it
/// would reach into another file system. A missing tree or a symbolic link is fine (the link
/// alone is removed).
fn check_removable_tree(dir: &Path) -> anyhow::Result<()> {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if !top.is_dir() {
        return Ok(());
    }
    let parent_dev = dir
        .parent()
        .and_then(|p| std::fs::symlink_metadata(p).ok())
        .map(|m| m.dev());
    let refuse = |p: &Path| {
        crate::error::operator(format!(
            "refusing to remove {}: {} is a mount point (unmount it first); nothing was removed",
            dir.display(),
            p.display()
        ))
    };
    if parent_dev.is_some_and(|d| d != top.dev()) {
        return Err(refuse(dir));
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e.with_context(|| format!("reading {}", d.display()))?;
            let m = std::fs::symlink_metadata(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            if m.dev() != top.dev() {
                return Err(refuse(&e.path()));
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// Removes `dir` and everything in it (checked by [`check_removable_tree`] first); a symbolic
/// link at `dir` is removed, not followed. False when it did not exist.
fn remove_tree(dir: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir).map(|()| true),
        Ok(_) => fsutil::remove_file(dir),
    }
}
