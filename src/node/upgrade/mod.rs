//! `hybridboot upgrade VERSION`: another Kubernetes version on a node that `install` and `init`
//! set up (`nodeadm upgrade`'s job), without a mixed set of binaries at any point a power cut
//! can reach.
//!
//! ```text
//! NodeConfig -> journal? (resume it) -> install record (what is installed) -> manifest
//!   (verified as install verifies it) -> no downgrade, same version = nothing to do
//!   -> eks:DescribeCluster -> skew policy (policy.rs) -> stage every new artifact, verified
//!   -> journal `staged` -> kubelet guard + marker -> stop kubelet -> rename the staged files
//!   into place, record -> journal `replaced` -> no marker -> init (the version-dependent
//!   files) -> start kubelet -> no journal
//! ```
//!
//! The kubelet guard is a drop-in on the kubelet unit that keeps systemd from starting the
//! kubelet while the marker exists; the marker exists exactly while binaries are being moved.
//! A power cut there boots the node with the kubelet down (not on a mixed set) until the same
//! `upgrade` runs again and finishes.
//!
//! Everything that can refuse (config, versions, cluster, downloads, digests) happens before the
//! first installed file changes; a failure there removes what was staged. From the `staged`
//! journal on, a re-run of the same upgrade finishes it: the renames are repeatable (a move
//! whose staged file is gone is done when the target holds its digest) and init is idempotent
//! (a resumed run applies the unit actions of unchanged files too, as first boot does). The
//! journal lives at [`JOURNAL_PATH`], written with the one atomic-write helper.
//!
//! Differences from nodeadm: the whole new set is verified before anything is replaced (nodeadm
//! replaces artifact by artifact); downgrades and a kubelet the control plane does not allow are
//! refused; the drain checks (`pod-validation`, `node-validation`) are the operator's to do
//! first (their names are accepted by `--skip`). containerd and iptables stay the
//! distribution's to upgrade.

pub mod policy;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::error::{self, Class, ResultExt, WithClass};
use crate::fsutil::{self, WriteOptions};
use crate::node::config;
use crate::node::init::{self, InitSettings, ServiceManager, UnitAction};
use crate::node::install::stage::{self, Staged};
use crate::node::install::{self, ContainerdSource, InstallSettings};
use crate::node::render::kubelet;
use policy::Decision;

/// The upgrade in progress (JSON); absent when none is.
pub const JOURNAL_PATH: &str = "/var/lib/hybridboot/upgrade.json";
/// `--skip` name of the skew check against the control plane (and its DescribeCluster).
pub const SKIP_SKEW: &str = "kubelet-version-skew-validation";
const KUBELET: &str = "kubelet.service";

/// What `upgrade` does: the version, where its artifacts come from, and the init that follows
/// (NodeConfig, root, skips, endpoints, whether units are touched).
#[derive(Debug, Clone)]
pub struct UpgradeSettings {
    /// `1.31` (latest patch in the manifest) or `1.31.2`.
    pub kubernetes_version: String,
    /// Release manifest, as for `install`.
    pub manifest: String,
    /// Ed25519 key that must have signed the manifest, as for `install`.
    pub manifest_public_key: Option<PathBuf>,
    /// CAs of the mirror's TLS certificate, as for `install`.
    pub ca_bundle: Option<PathBuf>,
    /// Architecture of the artifacts [default: this machine's].
    pub arch: Option<String>,
    /// The init run after the binaries are replaced; its root, `no_start` and endpoints are the
    /// upgrade's too. `kubelet_version` is ignored (the new kubelet is asked).
    pub init: InitSettings,
}

/// How an upgrade ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The version asked for was already installed: nothing changed.
    Current(String),
    /// Upgraded (`resumed` when this run finished an interrupted one).
    Upgraded {
        /// The version before.
        from: String,
        /// The version now.
        to: String,
        /// Files replaced or added.
        replaced: usize,
        /// Whether an interrupted run was finished.
        resumed: bool,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Current(v) => write!(
                f,
                "Kubernetes {v} is already installed: nothing to do (nothing changed)"
            ),
            Outcome::Upgraded {
                from,
                to,
                replaced,
                resumed,
            } => write!(
                f,
                "upgraded Kubernetes {from} -> {to}: {replaced} files replaced{}",
                if *resumed {
                    " (an interrupted upgrade was finished)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Where an upgrade stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Step {
    /// Every new file is staged and verified; nothing installed has changed yet (or the moves
    /// were interrupted: repeating them is safe).
    Staged,
    /// The binaries and the install record are the new version's; init and the restart remain.
    Replaced,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    from: String,
    to: String,
    step: Step,
    staged: Staged,
}

fn read_journal(root: &Path) -> anyhow::Result<Option<Journal>> {
    let path = fsutil::under_root(root, Path::new(JOURNAL_PATH));
    match fsutil::read_capped(&path, 16 * 1024 * 1024) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| {
                format!(
                    "{} is not a hybridboot upgrade journal; remove it and run the upgrade again",
                    path.display()
                )
            })
            .with_class(Class::Operator),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_journal(root: &Path, journal: &Journal) -> anyhow::Result<()> {
    let path = fsutil::under_root(root, Path::new(JOURNAL_PATH));
    let json = serde_json::to_vec_pretty(journal).context("encoding the upgrade journal")?;
    fsutil::atomic_write(&path, &json, &WriteOptions::private())
        .with_context(|| format!("writing {}", path.display()))
}

/// Whether `asked` (`1.31` or `1.31.2`) names the exact version `exact`.
fn names(asked: &str, exact: &str) -> bool {
    let asked = asked.trim().trim_start_matches('v');
    exact == asked || exact.starts_with(&format!("{asked}."))
}

/// The whole of `upgrade`, with an injectable service manager.
pub fn upgrade(s: &UpgradeSettings, services: &mut dyn ServiceManager) -> anyhow::Result<Outcome> {
    let root = &s.init.root;
    let loaded = config::load_under(&s.init.config_source, root).classed()?;
    let (skip_skew, init_skip): (Vec<String>, Vec<String>) = s
        .init
        .skip
        .iter()
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .partition(|n| n == SKIP_SKEW);
    let mut init_settings = InitSettings {
        skip: init_skip,
        kubelet_version: None,
        ..s.init.clone()
    };
    // Refuse a bad --skip before anything happens.
    init::Skip::parse(&init_settings.skip).map_err(error::operator)?;

    // What a killed run left beside the journal and the install record.
    let state_dir = fsutil::under_root(root, Path::new(JOURNAL_PATH))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    fsutil::remove_stale_temp_files(&state_dir)
        .with_context(|| format!("cleaning {}", state_dir.display()))?;
    if let Some(journal) = read_journal(root)? {
        if !names(&s.kubernetes_version, &journal.to) {
            return Err(error::operator(format!(
                "an upgrade from Kubernetes {} to {} was interrupted ({JOURNAL_PATH}); finish it first with `hybridboot upgrade {} --config-source {}`, then upgrade to {}",
                journal.from, journal.to, journal.to, s.init.config_source, s.kubernetes_version
            )));
        }
        log::info!(
            "finishing the interrupted upgrade from Kubernetes {} to {} (step {:?})",
            journal.from,
            journal.to,
            journal.step
        );
        init_settings.apply_unchanged = true;
        return finish(journal, &init_settings, services, true);
    }

    let installed = install::read_record(root)?.ok_or_else(|| {
        error::operator(format!(
            "nothing installed: no install record at {}; upgrade replaces what `hybridboot install` placed, so run `hybridboot install {}` and `hybridboot init` instead",
            install::RECORD_PATH,
            s.kubernetes_version
        ))
    })?;
    let install_settings = InstallSettings {
        kubernetes_version: s.kubernetes_version.clone(),
        manifest: s.manifest.clone(),
        manifest_public_key: s.manifest_public_key.clone(),
        root: root.clone(),
        containerd_source: if installed.tracker.get("Containerd").map(String::as_str)
            == Some("distro")
        {
            ContainerdSource::Distro
        } else {
            ContainerdSource::None
        },
        arch: s.arch.clone(),
        ca_bundle: s.ca_bundle.clone(),
        offline: false,
    };
    let resolved = stage::resolve(&install_settings)?;
    let from = installed.kubernetes_version.clone();
    let to = resolved.version.clone();
    match policy::direction(&from, &to).map_err(|e| error::operator(e.to_string()))? {
        Decision::Current => return Ok(Outcome::Current(to)),
        Decision::Upgrade => {}
    }
    let cfg = &loaded.node;
    if skip_skew.is_empty() {
        let cluster = cluster_version(cfg, &init_settings)?;
        policy::skew(&to, &cluster, &cfg.cluster.name)
            .map_err(|e| error::operator(e.to_string()))?;
        log::info!(
            "kubelet {to} is allowed with the control plane of cluster {} ({cluster})",
            cfg.cluster.name
        );
    } else {
        log::warn!("--skip {SKIP_SKEW}: the control plane's version is not checked");
    }
    log::info!("upgrading Kubernetes {from} -> {to}: staging the new artifacts");
    let staged = stage::stage(&install_settings, &resolved)?;
    let journal = Journal {
        from,
        to,
        step: Step::Staged,
        staged,
    };
    if let Err(e) = write_journal(root, &journal) {
        stage::discard(root, &journal.staged.moves);
        return Err(e);
    }
    finish(journal, &init_settings, services, false)
}

/// The control plane's `MAJOR.MINOR`, from eks:DescribeCluster as init asks it.
fn cluster_version(cfg: &config::NodeConfig, s: &InitSettings) -> anyhow::Result<String> {
    let d = init::describe_node_cluster(cfg, s, &s.retry.unwrap_or_default(), false)?;
    d.version.ok_or_else(|| {
        error::operator(format!(
            "eks:DescribeCluster of {} answered no Kubernetes version; the skew cannot be checked (--skip {SKIP_SKEW} upgrades without the check)",
            cfg.cluster.name
        ))
    })
}

/// From the journal on: stop kubelet, move the staged files in, record, re-run init, start
/// kubelet, drop the journal. Each step is safe to repeat.
fn finish(
    mut journal: Journal,
    init_settings: &InitSettings,
    services: &mut dyn ServiceManager,
    resumed: bool,
) -> anyhow::Result<Outcome> {
    let root = &init_settings.root;
    let touch_units = !init_settings.no_start;
    if journal.step == Step::Staged {
        guard_kubelet(root, touch_units, services)?;
        if touch_units {
            log::info!("{}", UnitAction::Halt(KUBELET.into()));
            services.apply(&UnitAction::Halt(KUBELET.into()))?;
        }
        stage::apply(root, &journal.staged)
            .with_context(|| format!("moving the files the journal {JOURNAL_PATH} lists"))?;
        for m in &journal.staged.moves {
            log::debug!("{} <- {}", m.target, m.staged);
        }
        log::info!(
            "replaced {} files; install record says Kubernetes {}",
            journal.staged.moves.len(),
            journal.to
        );
        journal.step = Step::Replaced;
        write_journal(root, &journal)?;
    }
    // The binaries are the new version's as a whole: the kubelet may start again.
    let marker = fsutil::under_root(root, Path::new(kubelet::UPGRADE_MARKER_PATH));
    fsutil::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    // The version-dependent files (kubelet flags and configuration): init asks the new kubelet
    // its version.
    init::init(init_settings, services).context("re-running init for the new kubelet")?;
    if touch_units {
        log::info!("{}", UnitAction::Start(KUBELET.into()));
        services.apply(&UnitAction::Start(KUBELET.into()))?;
    }
    let path = fsutil::under_root(root, Path::new(JOURNAL_PATH));
    fsutil::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Outcome::Upgraded {
        from: journal.from,
        to: journal.to,
        replaced: journal.staged.moves.len(),
        resumed,
    })
}

/// Before the first binary moves: the kubelet unit's guard drop-in (written once; systemd
/// told when it changed) and the marker it watches.
fn guard_kubelet(
    root: &Path,
    touch_units: bool,
    services: &mut dyn ServiceManager,
) -> anyhow::Result<()> {
    let guard = fsutil::under_root(root, Path::new(kubelet::UPGRADE_GUARD_PATH));
    // What a run killed while writing the guard left beside it.
    if let Some(dir) = guard.parent() {
        fsutil::remove_stale_temp_files(dir)
            .with_context(|| format!("cleaning {}", dir.display()))?;
    }
    let text = kubelet::upgrade_guard();
    if std::fs::read(&guard).ok().as_deref() != Some(text.as_bytes()) {
        fsutil::atomic_write(&guard, text.as_bytes(), &WriteOptions::public())
            .with_context(|| format!("writing {}", guard.display()))?;
        if touch_units {
            log::info!("{}", UnitAction::DaemonReload);
            services.apply(&UnitAction::DaemonReload)?;
        }
    }
    let marker = fsutil::under_root(root, Path::new(kubelet::UPGRADE_MARKER_PATH));
    fsutil::atomic_write(&marker, b"", &WriteOptions::private())
        .with_context(|| format!("writing {}", marker.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_names_its_patches_only() {
        assert!(names("1.31", "1.31.2"));
        assert!(names("v1.31.2", "1.31.2"));
        assert!(!names("1.3", "1.31.2"));
        assert!(!names("1.31.1", "1.31.2"));
    }
}
