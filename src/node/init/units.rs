//! The units `init` starts: what a write report's effects require, and the service manager
//! that carries it out (systemd, or a recorder in tests).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::node::render::{aws, Effect};

/// One systemd operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitAction {
    /// `systemctl enable UNIT...`: every unit a plan enables, in one call (enabling only
    /// links the units for the next boot, so one call does what one per unit did, with one
    /// process started instead of several).
    EnableUnits(Vec<String>),
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// `systemctl disable --now UNIT`.
    Stop(String),
    /// `systemctl enable UNIT`.
    Enable(String),
    /// `systemctl restart UNIT`.
    Restart(String),
}

impl UnitAction {
    /// The `systemctl` arguments that carry it out.
    pub fn systemctl_args(&self) -> Vec<&str> {
        match self {
            UnitAction::EnableUnits(units) => std::iter::once("enable")
                .chain(units.iter().map(String::as_str))
                .collect(),
            UnitAction::DaemonReload => vec!["daemon-reload"],
            UnitAction::Stop(u) => vec!["disable", "--now", u],
            UnitAction::Enable(u) => vec!["enable", u],
            UnitAction::Restart(u) => vec!["restart", u],
        }
    }
}

impl std::fmt::Display for UnitAction {
    /// The command line: `systemctl restart kubelet.service`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "systemctl {}", self.systemctl_args().join(" "))
    }
}

/// Starts and stops units; tests use a recorder instead of systemd.
pub trait ServiceManager {
    /// Carries out one action.
    fn apply(&mut self, action: &UnitAction) -> anyhow::Result<()>;
}

/// The real one: `systemctl` (or `HYBRIDBOOT_SYSTEMCTL`, which tests point at a recorder).
pub struct Systemctl {
    program: PathBuf,
}

impl Systemctl {
    /// `systemctl` from PATH, unless `HYBRIDBOOT_SYSTEMCTL` names another program.
    pub fn from_env() -> Systemctl {
        Systemctl {
            program: std::env::var_os("HYBRIDBOOT_SYSTEMCTL")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("systemctl"), PathBuf::from),
        }
    }
}

impl ServiceManager for Systemctl {
    fn apply(&mut self, action: &UnitAction) -> anyhow::Result<()> {
        let args = action.systemctl_args();
        let out = crate::process::command(&self.program, crate::process::ChildEnv::System)
            .args(&args)
            .output()
            .with_context(|| format!("running {} {}", self.program.display(), args.join(" ")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(crate::error::operator(format!(
                "{} {} failed ({}): {}",
                self.program.display(),
                args.join(" "),
                out.status,
                err.lines().next().unwrap_or("").trim()
            )));
        }
        Ok(())
    }
}

/// What the effects of a write report require, in order: units stopped, daemon-reload, then
/// one `enable` of every unit that is restarted and must come back after a reboot (containerd,
/// kubelet, the credentials update), then the restarts one by one, in the effects' order (each
/// `systemctl restart` returns once its unit is up, so the next starts after it).
pub fn plan(effects: impl IntoIterator<Item = Effect>) -> Vec<UnitAction> {
    let mut out = Vec::new();
    let mut enable = Vec::new();
    let mut restarts = Vec::new();
    let mut restart = |unit: &str, enabled: bool| {
        if enabled {
            enable.push(unit.to_string());
        }
        restarts.push(UnitAction::Restart(unit.into()));
    };
    // BTreeSet order of Effect is already the execution order; sort in case a caller did not.
    let mut effects: Vec<Effect> = effects.into_iter().collect();
    effects.sort();
    effects.dedup();
    for e in effects {
        match e {
            Effect::Stop(u) => out.push(UnitAction::Stop(u.into())),
            Effect::DaemonReload => out.push(UnitAction::DaemonReload),
            Effect::CredentialsUpdate => restart(aws::UPDATE_UNIT_NAME, true),
            Effect::Sysctl => restart("systemd-sysctl.service", false),
            Effect::ModulesLoad => restart("systemd-modules-load.service", false),
            Effect::Containerd => restart("containerd.service", true),
            Effect::Kubelet => restart("kubelet.service", true),
            Effect::None => {}
        }
    }
    if !enable.is_empty() {
        out.push(UnitAction::EnableUnits(enable));
    }
    out.extend(restarts);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_effects_only() {
        assert!(plan([]).is_empty());
        assert!(plan([Effect::None]).is_empty());
        let p = plan([
            Effect::Kubelet,
            Effect::DaemonReload,
            Effect::Containerd,
            Effect::Stop("aws_signing_helper_update.service"),
        ]);
        assert_eq!(
            p,
            vec![
                UnitAction::Stop("aws_signing_helper_update.service".into()),
                UnitAction::DaemonReload,
                UnitAction::EnableUnits(vec![
                    "containerd.service".into(),
                    "kubelet.service".into()
                ]),
                UnitAction::Restart("containerd.service".into()),
                UnitAction::Restart("kubelet.service".into()),
            ]
        );
        assert_eq!(
            p[2].to_string(),
            "systemctl enable containerd.service kubelet.service"
        );
        // One unit: the same line as before.
        assert_eq!(
            plan([Effect::Kubelet])[0].to_string(),
            "systemctl enable kubelet.service"
        );
        assert_eq!(
            plan([Effect::Sysctl]),
            vec![UnitAction::Restart("systemd-sysctl.service".into())]
        );
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn actions_read_as_the_systemctl_command() {
        assert_eq!(
            UnitAction::Restart("kubelet".into()).to_string(),
            "systemctl restart kubelet"
        );
        assert_eq!(
            UnitAction::Stop("old".into()).to_string(),
            "systemctl disable --now old"
        );
        assert_eq!(
            UnitAction::DaemonReload.to_string(),
            "systemctl daemon-reload"
        );
    }
}
