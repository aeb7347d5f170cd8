//! `firstboot --dry-run`: what a first boot would do from here, without doing any of it. The
//! steps are read from the state file and the disk (no key is created, no certificate
//! requested); when the certificate already exists, init's own dry run lists the files and
//! unit actions exactly as init would apply them.

use std::path::Path;

use super::state::{self, State, Step};
use super::{ConfigSource, Placement, Plan};
use crate::fsutil;
use crate::node::init;

/// What `firstboot --dry-run` found.
#[derive(Debug, Clone)]
pub struct FirstbootDryRun {
    /// Per step: its name and what a run would do with it.
    pub steps: Vec<(Step, String)>,
    /// init's dry run, when it could be made (the certificate exists).
    pub init: Option<init::DryRun>,
    /// Why init's files were not compared, when they were not.
    pub init_not_previewed: Option<String>,
}

impl FirstbootDryRun {
    /// One line per step, then init's listing (or why there is none).
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for (step, what) in &self.steps {
            out += &format!("step {:<15} {what}\n", step_label(*step));
        }
        match (&self.init, &self.init_not_previewed) {
            (Some(d), _) => out += &d.render_text(),
            (None, Some(why)) => {
                out += &format!("init files not compared: {why}\n");
                out += "dry run: nothing was written\n";
            }
            (None, None) => out += "dry run: nothing was written\n",
        }
        out
    }
}

fn step_label(step: Step) -> &'static str {
    match step {
        Step::Clock => "clock",
        Step::Key => "key",
        Step::ClockVault => "clock-vault",
        Step::Enroll => "enroll",
        Step::RolesAnywhere => "roles-anywhere",
        Step::Install => "install",
        Step::Init => "init",
        Step::Stamp => "stamp",
    }
}

/// The dry run of first boot under `source.root`.
pub fn dry_run(source: &ConfigSource, placement: &Placement) -> anyhow::Result<FirstbootDryRun> {
    let root = &source.root;
    let configs = source.load()?;
    let st = State::load(root)?;
    let b = &configs.bootstrap;
    if state::joined(root) {
        return Ok(FirstbootDryRun {
            steps: Step::ALL
                .iter()
                .map(|s| (*s, "already joined: nothing would run".to_string()))
                .collect(),
            init: None,
            init_not_previewed: Some(format!(
                "{} exists: first boot has finished; use `hybridboot init --dry-run` for init alone",
                state::STAMP_FILE
            )),
        });
    }
    let plan = Plan::new(&configs, root, crate::vault::DEFAULT_TIMEOUT)?;
    let done = |s: Step| st.completed.contains(&s);
    let cert = fsutil::under_root(root, &plan.certificate);
    let cert_exists = cert.is_file();
    let mut steps = Vec::new();
    steps.push((
        Step::Clock,
        "would check NTP sync and the build-date floor".to_string(),
    ));
    steps.push((
        Step::Key,
        if done(Step::Key) {
            format!("done: would open {} again", b.key.reference)
        } else {
            format!(
                "would open {}, or create it ({})",
                b.key.reference, plan.algorithm
            )
        },
    ));
    steps.push((
        Step::ClockVault,
        format!(
            "would compare the clock with Vault at {}",
            plan.vault.address.origin()
        ),
    ));
    steps.push((
        Step::Enroll,
        if cert_exists {
            format!(
                "would keep {} if valid for the key and young enough, else renew it with Vault role {:?}",
                plan.certificate.display(),
                b.vault.role
            )
        } else {
            format!(
                "would request {} from Vault role {:?}",
                plan.certificate.display(),
                b.vault.role
            )
        },
    ));
    steps.push((
        Step::RolesAnywhere,
        "would make one CreateSession with the certificate".to_string(),
    ));
    steps.push((
        Step::Install,
        match &b.install {
            None => "skipped: spec.install not set".to_string(),
            Some(spec) if done(Step::Install) => format!(
                "done: would verify the installed {} against its record",
                spec.kubernetes_version
            ),
            Some(spec) => format!("would install Kubernetes {}", spec.kubernetes_version),
        },
    ));
    steps.push((
        Step::Init,
        if done(Step::Init) {
            "done: would re-run, restarting only what changed".to_string()
        } else {
            "would write the node's files and (re)start their units".to_string()
        },
    ));
    steps.push((Step::Stamp, format!("would write {}", state::STAMP_FILE)));

    let (init, init_not_previewed) = if !cert_exists {
        (
            None,
            Some(format!(
                "the certificate {} does not exist yet (the enroll step makes it)",
                plan.certificate.display()
            )),
        )
    } else if !kubelet_present(root) {
        (
            None,
            Some(if b.install.is_some() {
                "/usr/bin/kubelet is not installed yet (the install step brings it)".to_string()
            } else {
                "/usr/bin/kubelet is missing, and spec.install is not set: the image must carry it"
                    .to_string()
            }),
        )
    } else {
        let mut settings = plan.init(&configs);
        placement.apply(&mut settings);
        settings.apply_unchanged = !done(Step::Init);
        (Some(init::dry_run(&settings)?), None)
    };
    Ok(FirstbootDryRun {
        steps,
        init,
        init_not_previewed,
    })
}

fn kubelet_present(root: &Path) -> bool {
    fsutil::under_root(root, Path::new("/usr/bin/kubelet")).is_file()
}
