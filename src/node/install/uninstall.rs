//! `hybridboot uninstall`: removes what install placed (only files still as installed) and the
//! files init writes; never the node's key and certificate.

use std::path::Path;

use anyhow::Context;

use super::{fetch, read_record, CNI_BIN_DIR, RECORD_PATH, TRACKER_PATH};
use crate::fsutil;

/// Files `init` writes; `uninstall` removes them.
const INIT_FILES: &[&str] = &[
    crate::node::render::kubelet::UNIT_PATH,
    crate::node::render::kubelet::CONFIG_PATH,
    crate::node::render::kubelet::DROP_IN_PATH,
    crate::node::render::kubelet::KUBECONFIG_PATH,
    crate::node::render::kubelet::CA_PATH,
    crate::node::render::kubelet::ENVIRONMENT_PATH,
    crate::node::render::kubelet::IMAGE_CREDENTIAL_PROVIDER_CONFIG,
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

/// `hybridboot uninstall`: removes what install placed (unless changed since) and the files
/// init writes; keeps the node's key and certificate.
pub fn uninstall(root: &Path) -> anyhow::Result<()> {
    let record = read_record(root)?;
    let mut removed = Vec::new();
    let mut kept: Vec<(String, String)> = Vec::new();
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
        log::warn!("no install record at {RECORD_PATH}: removing only the files init writes");
    }
    for path in INIT_FILES {
        let p = fsutil::under_root(root, Path::new(path));
        if fsutil::remove_file(&p).with_context(|| format!("removing {}", p.display()))? {
            removed.push(path.to_string());
        }
    }
    for path in [TRACKER_PATH, RECORD_PATH] {
        let p = fsutil::under_root(root, Path::new(path));
        if fsutil::remove_file(&p).with_context(|| format!("removing {}", p.display()))? {
            removed.push(path.to_string());
        }
    }
    for (path, why) in KEPT_FILES {
        if fsutil::under_root(root, Path::new(path)).exists() {
            kept.push((path.to_string(), why.to_string()));
        }
    }
    // Directories only install created, if now empty.
    for dir in [
        CNI_BIN_DIR,
        "/opt/cni",
        "/etc/eks/image-credential-provider",
    ] {
        let _ = std::fs::remove_dir(fsutil::under_root(root, Path::new(dir)));
    }
    for path in &removed {
        println!("removed {path}");
    }
    for (path, why) in &kept {
        println!("kept {path} ({why})");
    }
    log::info!(
        "uninstalled: {} files removed, {} kept",
        removed.len(),
        kept.len()
    );
    if record.is_none() && removed.is_empty() {
        return Err(crate::error::operator(format!(
            "nothing to uninstall under {}",
            root.display()
        )));
    }
    Ok(())
}
