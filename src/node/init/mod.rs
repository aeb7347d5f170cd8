//! `hybridboot init`: the I/O around the pure parts, in nodeadm's phase order. Everything that can
//! fail on bad input (config, credentials, cluster details, validations, rendering) happens
//! before the first file is written, so a failed init leaves the node as it was.
//!
//! ```text
//! config::load -> checks (clock, certificate) -> credentials (environment, else Roles Anywhere
//!   with the NodeConfig's arguments: what the aws phase's config file runs) -> DescribeCluster
//!   (only when endpoint, CA or service CIDR is missing) -> node IP check -> files_phase
//!   -> ServiceManager (only for the effects the write report lists; --no-start skips it)
//!   -> sandbox image in containerd (pulled from ECR only when missing; `--skip sandbox-image`)
//! ```
//!
//! The site's proxy ([`AwsOverrides::proxy`]: the environment of `hybridboot init`, or
//! BootstrapConfig `spec.proxy` in first boot) is used by every request and written into the
//! containerd and kubelet drop-ins and the credential_process line.

mod cluster;
mod files;
mod image;
mod units;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;

use crate::error::{self, Class, ResultExt, WithClass};
use crate::node::render::{
    AwsOverrides, ClusterDetails, KubeletVersion, ObsoleteFile, RenderedFile,
};
use crate::node::{checks, config, facts};
use crate::retry::RetryPolicy;
pub use cluster::{
    describe_cluster_by_name, detect_node_ip, node_credentials, roles_anywhere_credentials,
    EksTarget,
};
pub use files::{
    apply, files_phase, preview, remove_obsolete, render_phase, write_files, FilesError, Phase,
    Skip, WriteError, WriteReport,
};
pub use image::sandbox_settings;
pub use units::{plan, ServiceManager, Systemctl, UnitAction};

/// What `init` does and where: built by the command line (`hybridboot init`) or by first boot
/// from the BootstrapConfig.
#[derive(Debug, Clone)]
pub struct InitSettings {
    /// The NodeConfig: file:///abs/path, file://relative/path (nodeadm's form) or a plain path,
    /// the node's path (read under `root`).
    pub config_source: String,
    /// Prefix for every file written (tests, image builds).
    pub root: PathBuf,
    /// Phases to skip; nodeadm's names are accepted.
    pub skip: Vec<String>,
    /// Write the files but do not reload, enable or restart any unit.
    pub no_start: bool,
    /// Kubelet version [default: `<root>/usr/bin/kubelet --version`].
    pub kubelet_version: Option<KubeletVersion>,
    /// The hybridboot path written into credential_process, the kubeconfig and units
    /// [default: this executable].
    pub hybridboot_path: Option<PathBuf>,
    /// What the node's Roles Anywhere session needs beyond nodeadm's arguments (used here and
    /// written into the credential_process line).
    pub aws: AwsOverrides,
    /// EKS endpoint for DescribeCluster [default: env `AWS_ENDPOINT_URL_EKS`, then
    /// `AWS_ENDPOINT_URL`, then the region's].
    pub eks_endpoint: Option<String>,
    /// ECR API endpoint for the sandbox image's GetAuthorizationToken [default: the registry
    /// region's].
    pub ecr_endpoint: Option<String>,
    /// Where the sandbox image's registry is served (a VPC endpoint or pull-through mirror)
    /// [default: `https://<registry host of the image>`].
    pub ecr_registry_endpoint: Option<String>,
    /// Retry policy of the remote calls (first boot bounds it by its own deadline).
    pub retry: Option<RetryPolicy>,
    /// Apply the effects of unchanged files too (first boot after a power cut cannot know
    /// whether the interrupted run restarted the units after writing their files).
    pub apply_unchanged: bool,
}

impl InitSettings {
    /// Init of the NodeConfig at `config_source` under `root`, everything else at its default.
    pub fn new(config_source: impl Into<String>, root: PathBuf) -> InitSettings {
        InitSettings {
            config_source: config_source.into(),
            root,
            skip: Vec::new(),
            no_start: false,
            kubelet_version: None,
            hybridboot_path: None,
            aws: AwsOverrides::default(),
            eks_endpoint: None,
            ecr_endpoint: None,
            ecr_registry_endpoint: None,
            retry: None,
            apply_unchanged: false,
        }
    }
}

fn kubelet_version(args: &InitSettings) -> anyhow::Result<KubeletVersion> {
    match &args.kubelet_version {
        Some(v) => Ok(*v),
        None => facts::kubelet_version(&crate::fsutil::under_root(
            &args.root,
            Path::new("/usr/bin/kubelet"),
        ))
        .with_class(Class::Operator),
    }
}

/// Everything `init` decided before its first write: the files to write and remove, the phases
/// skipped, and the settings of the run.
struct Rendered {
    files: Vec<RenderedFile>,
    obsolete: Vec<ObsoleteFile>,
    skip: Skip,
    cfg: config::NodeConfig,
    aws: AwsOverrides,
    policy: RetryPolicy,
}

/// The whole of `init`, with an injectable service manager.
pub fn init(args: &InitSettings, services: &mut dyn ServiceManager) -> anyhow::Result<()> {
    let rendered = prepare(args, false)?;
    let report = apply(&args.root, &rendered.files, &rendered.obsolete)?;
    log::info!(
        "files: {} written, {} unchanged, {} removed",
        report.changed.len(),
        report.unchanged.len(),
        report.removed.len()
    );

    // run
    let actions = unit_actions(args, &report);
    if args.no_start || rendered.skip.skips(Phase::Run) {
        if !actions.is_empty() {
            log::info!(
                "not starting anything (--no-start / --skip run): {}",
                actions
                    .iter()
                    .map(UnitAction::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        return Ok(());
    }
    for a in &actions {
        log::info!("{a}");
        services.apply(a)?;
    }
    if actions.is_empty() {
        log::info!("nothing changed: no unit restarted");
    }

    // sandbox image (nodeadm pulls it right after starting containerd)
    if !rendered.skip.skips(Phase::SandboxImage) {
        image::ensure_sandbox_image(args, &rendered.cfg, &rendered.aws, &rendered.policy)?;
    }
    Ok(())
}

/// What `init --dry-run` found: the file report `init` would make and the unit actions it would
/// take. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// Under which root the files were compared.
    pub root: PathBuf,
    /// Per file: new, changed, unchanged, removed (as `init` would report them).
    pub report: WriteReport,
    /// The systemd actions `init` would take (none with `--no-start` / `--skip run`).
    pub actions: Vec<UnitAction>,
}

impl DryRun {
    /// One line per file (`new`, `changed`, `unchanged`, `remove`) and per unit action, then
    /// a summary line.
    pub fn render_text(&self) -> String {
        let r = &self.report;
        let mut out = String::new();
        for p in &r.changed {
            let word = if r.created.contains(p) {
                "new"
            } else {
                "changed"
            };
            out += &format!("{word:<10} {}\n", p.display());
        }
        for p in &r.unchanged {
            out += &format!("{:<10} {}\n", "unchanged", p.display());
        }
        for p in &r.removed {
            out += &format!("{:<10} {}\n", "remove", p.display());
        }
        for a in &self.actions {
            out += &format!("{:<10} {a}\n", "unit");
        }
        out += &format!(
            "dry run: {} new, {} changed, {} unchanged, {} to remove, {} unit action(s); nothing was written\n",
            r.created.len(),
            r.changed.len().saturating_sub(r.created.len()),
            r.unchanged.len(),
            r.removed.len(),
            self.actions.len()
        );
        out
    }
}

/// `init --dry-run`: every check and remote call `init` makes (credentials without touching the
/// session cache), then the files compared with what is on disk. Writes nothing, starts nothing.
pub fn dry_run(args: &InitSettings) -> anyhow::Result<DryRun> {
    let rendered = prepare(args, true)?;
    let report = preview(&args.root, &rendered.files, &rendered.obsolete);
    let actions = if args.no_start || rendered.skip.skips(Phase::Run) {
        Vec::new()
    } else {
        unit_actions(args, &report)
    };
    Ok(DryRun {
        root: args.root.clone(),
        report,
        actions,
    })
}

/// The unit actions a write report requires (with the unchanged files' too when the caller
/// cannot know whether an interrupted run applied them).
fn unit_actions(args: &InitSettings, report: &WriteReport) -> Vec<UnitAction> {
    let mut effects = report.effects.clone();
    if args.apply_unchanged {
        effects.extend(report.unchanged_effects.iter().copied());
    }
    plan(effects)
}

/// Everything before the first write: config, checks, credentials, cluster details,
/// validations, rendering. `dry_run` keeps the session cache untouched.
fn prepare(args: &InitSettings, dry_run: bool) -> anyhow::Result<Rendered> {
    let env = |k: &str| std::env::var(k).ok();
    // config
    let loaded = config::load_under(&args.config_source, &args.root).classed()?;
    for w in &loaded.warnings {
        log::warn!("{}: {w}", loaded.path.display());
    }
    let cfg = loaded.node;
    let skip = Skip::parse(&args.skip).map_err(error::operator)?;
    for name in &skip.ignored {
        log::info!("--skip {name}: nodeadm phase that hybridboot does not have; ignored");
    }
    let now = SystemTime::now();
    if !skip.skips(Phase::ClockValidation) {
        checks::check_clock(now).classed()?;
    }
    if !skip.skips(Phase::CertificateValidation) {
        checks::read_certificate(&args.root, &cfg.iam_roles_anywhere.certificate_path)
            .and_then(|c| checks::check_certificate(&c, &cfg.iam_roles_anywhere.node_name, now))
            .classed()?;
    }
    let hybridboot_path = match &args.hybridboot_path {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this executable")?,
    };
    let mut facts = facts::detect(&args.root, kubelet_version(args)?, hybridboot_path)
        .context("reading node facts")?;
    facts.aws = args.aws.clone();
    let policy = args.retry.unwrap_or_default();

    // cluster details
    let mut remote_node_cidrs: Option<Vec<String>> = None;
    let cluster = if cfg.cluster.needs_cluster_details() {
        if skip.skips(Phase::ClusterDetails) {
            match ClusterDetails::from_config(&cfg) {
                Some(c) => c,
                None => {
                    return Err(error::operator(
                        "--skip cluster-details needs spec.cluster.apiServerEndpoint, certificateAuthority and cidr in the NodeConfig",
                    ))
                }
            }
        } else {
            let creds = node_credentials(&cfg, &facts.aws, &args.root, &policy, dry_run)
                .context("getting AWS credentials")?;
            let target = EksTarget {
                endpoint: args.eks_endpoint.clone(),
                ca_bundle: args
                    .aws
                    .ca_bundle
                    .as_deref()
                    .map(|p| crate::fsutil::under_root(&args.root, p)),
                retry: Some(policy),
            };
            let d = describe_cluster_by_name(
                &cfg.cluster.name,
                &cfg.cluster.region,
                &creds,
                &target,
                &env,
            )?;
            remote_node_cidrs = Some(d.remote_node_cidrs.clone());
            let service_cidr = cfg.cluster.cidr.clone().or(d.service_cidr).ok_or_else(|| {
                error::operator(format!(
                    "EKS cluster {} has no service CIDR: set spec.cluster.cidr",
                    cfg.cluster.name
                ))
            })?;
            ClusterDetails {
                endpoint: cfg
                    .cluster
                    .api_server_endpoint
                    .clone()
                    .unwrap_or(d.endpoint),
                certificate_authority: cfg
                    .cluster
                    .certificate_authority
                    .clone()
                    .unwrap_or(d.certificate_authority_pem),
                service_cidr,
            }
        }
    } else {
        ClusterDetails::from_config(&cfg).expect("needs_cluster_details was false")
    };

    // validations (the remote node networks are known only from DescribeCluster)
    if !skip.skips(Phase::NodeIpValidation) {
        if let Some(cidrs) = &remote_node_cidrs {
            let ip = checks::check_node_ip(
                &cfg.cluster.name,
                &cfg.kubelet.flags,
                detect_node_ip(&cluster.endpoint),
                cidrs,
            )
            .classed()?;
            log::info!("node IP {ip} is inside the cluster's remote node networks");
        }
    }

    // files
    let (files, obsolete) =
        render_phase(&cfg, &cluster, &facts, &skip).map_err(|r| error::operator(r.to_string()))?;
    Ok(Rendered {
        files,
        obsolete,
        skip,
        cfg,
        aws: facts.aws,
        policy,
    })
}
