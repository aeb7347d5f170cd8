//! `hybridboot debug`: every check a join depends on, in the order the join needs them, each
//! answered with pass, warn or fail (and what to fix) or skip (and which earlier check it waits
//! for). A warning does not change the exit code.
//!
//! ```text
//! config -> clock (floor, NTP) -> vault (reachable, unsealed) -> clock-vault -> clock-aws
//!   -> key -> certificate -> vault-auth -> roles-anywhere -> sts -> eks -> apiserver
//!   -> node-ip -> proxy -> swap -> containerd -> kubelet -> sandbox-image
//! ```
//!
//! Read-only: nothing is written under `--root` (the Roles Anywhere session bypasses the
//! cache), no single-use secret is spent (an AppRole secret id is only checked to exist), no
//! key is created. The remote checks use the same clients first boot and `init` use
//! ([`crate::vault::Vault`], [`crate::aws::session`], [`crate::node::init`]), with one attempt
//! each: an operator wants the answer now, not after the retry policy's two minutes.
//!
//! The report ([`Report`]) is pure data; [`Report::render_text`] and `serde_json` print it, and
//! [`Report::failure`] is the error (with its class: 3 if any failure needs an operator, else
//! 4 when only peers were unreachable) the command line turns into the exit code.

mod probes;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::error::Class;
use crate::firstboot::clock::SyncSources;
use crate::firstboot::ConfigSource;

/// What `debug` checks and with what.
#[derive(Debug, Clone)]
pub struct DebugSettings {
    /// The NodeConfig and BootstrapConfig, and the root (every path is read under it).
    pub source: ConfigSource,
    /// STS endpoint for GetCallerIdentity [default: env `AWS_ENDPOINT_URL_STS`, then
    /// `AWS_ENDPOINT_URL`, then the cluster region's].
    pub sts_endpoint: Option<String>,
    /// The service manager asked `is-active` [default: `HYBRIDBOOT_SYSTEMCTL`, else `systemctl`].
    pub systemctl: PathBuf,
    /// containerd's client (`ctr`), for the sandbox image.
    pub ctr: PathBuf,
    /// containerd's socket (under the root).
    pub containerd_address: PathBuf,
    /// Where NTP synchronisation state is read (under the root).
    pub time_sync: SyncSources,
    /// How long one remote check may take.
    pub timeout: Duration,
}

impl DebugSettings {
    /// The checks of this configuration, everything else at its default.
    pub fn new(source: ConfigSource) -> DebugSettings {
        let root = source.root.clone();
        let mut time_sync = SyncSources::default();
        time_sync.timesyncd_flag = crate::fsutil::under_root(&root, &time_sync.timesyncd_flag);
        DebugSettings {
            source,
            sts_endpoint: None,
            systemctl: std::env::var_os("HYBRIDBOOT_SYSTEMCTL")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("systemctl"), PathBuf::from),
            ctr: PathBuf::from("ctr"),
            containerd_address: crate::fsutil::under_root(
                &root,
                std::path::Path::new("/run/containerd/containerd.sock"),
            ),
            time_sync,
            timeout: Duration::from_secs(15),
        }
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Pass,
    /// Works, but something is off (see the remediation); does not change the exit code.
    Warn,
    /// Something to fix (see the remediation).
    Fail,
    /// Not checked: an earlier check it needs failed, or nothing here can tell.
    Skip,
}

impl Outcome {
    /// The word the text report shows.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short stable name (`clock`, `key`, `vault-auth`, ...).
    pub name: &'static str,
    /// Pass, warn, fail or skip.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// On a warning or failure: what to change (field, file, permission or command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// On failure: `operator` (fix something) or `transient` (a peer is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'static str>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
            class: None,
        }
    }

    /// A failed check of `class` and what fixes it.
    pub fn fail(
        name: &'static str,
        class: Class,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
            // A bug in a probe is not the operator's to fix, but it is not an outage either:
            // someone has to look.
            class: Some(match class {
                Class::Transient => "transient",
                Class::Operator | Class::Bug => "operator",
            }),
        }
    }

    /// A check that passed with something an operator should still fix (no exit code of its
    /// own).
    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
            class: None,
        }
    }

    /// A check left out, and why.
    pub fn skip(name: &'static str, why: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Skip,
            detail: why.into(),
            fix: None,
            class: None,
        }
    }
}

/// Every check, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// One line per check: `PASS|WARN|FAIL|SKIP  name  detail`, and on a warning or failure
    /// `  -> fix: ...`.
    pub fn render_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{} {:width$}  {}",
                c.outcome.word(),
                c.name,
                one_line(&c.detail)
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("  -> fix: {}", one_line(fix)));
            }
            out.push('\n');
        }
        out
    }

    /// The class of the report as a whole: `None` when nothing failed; operator when any failure
    /// needs one (retrying cannot fix it), else transient (only peers were unreachable).
    pub fn class(&self) -> Option<Class> {
        let failed: Vec<&Check> = self
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .collect();
        if failed.is_empty() {
            None
        } else if failed.iter().any(|c| c.class == Some("operator")) {
            Some(Class::Operator)
        } else {
            Some(Class::Transient)
        }
    }

    /// The failure the command ends with (its class gives the exit code), if any check failed.
    pub fn failure(&self) -> Option<anyhow::Error> {
        let class = self.class()?;
        let names: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .map(|c| c.name)
            .collect();
        Some(crate::error::message(
            class,
            format!(
                "{} of {} checks failed: {}",
                names.len(),
                self.checks.len(),
                names.join(", ")
            ),
        ))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs every check (read-only) and returns the report.
pub fn run(settings: &DebugSettings) -> Report {
    probes::run(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_class_prefers_what_an_operator_fixes() {
        let mut r = Report {
            checks: vec![Check::pass("clock", "ok"), Check::skip("swap", "unknown")],
        };
        assert_eq!(r.class(), None);
        assert!(r.failure().is_none());
        // A warning changes no exit code.
        r.checks
            .push(Check::warn("clock-aws", "20s ahead", "synchronise"));
        assert_eq!(r.class(), None);
        assert!(r.failure().is_none());
        r.checks
            .push(Check::fail("vault", Class::Transient, "down", "start it"));
        assert_eq!(r.class(), Some(Class::Transient));
        r.checks
            .push(Check::fail("key", Class::Operator, "gone", "create it"));
        assert_eq!(r.class(), Some(Class::Operator));
        let e = r.failure().unwrap();
        assert_eq!(crate::error::class_of(&e), Class::Operator);
        assert_eq!(e.to_string(), "2 of 5 checks failed: vault, key");
    }

    #[test]
    fn text_is_one_line_per_check_with_the_fix_on_failure() {
        let r = Report {
            checks: vec![
                Check::pass("clock", "synchronised"),
                Check::fail(
                    "vault-auth",
                    Class::Operator,
                    "token\nexpired",
                    "write a token",
                ),
            ],
        };
        assert_eq!(
            r.render_text(),
            "PASS clock       synchronised\nFAIL vault-auth  token expired  -> fix: write a token\n"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][1]["outcome"], "fail");
        assert_eq!(json["checks"][1]["class"], "operator");
        assert!(json["checks"][0].get("fix").is_none());
    }
}
