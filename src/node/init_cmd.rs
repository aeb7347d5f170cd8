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
//! The site's proxy (`HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` in init's environment, which first
//! boot fills from BootstrapConfig `spec.proxy`) is used by every request and written into the
//! containerd and kubelet drop-ins and the credential_process line.

use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;

use super::checks;
use super::config::{self, NodeConfig};
use super::facts;
use super::init::{files_phase, Skip, Step};
use super::render::{aws, AwsOverrides, ClusterDetails, Effect, KubeletVersion};
use super::sandbox::{self, SandboxSettings};
use crate::aws::credentials::Credentials;
use crate::aws::eks;
use crate::exit;
use crate::http::{self, Client};
use crate::retry::RetryPolicy;

/// Arguments of `hybridboot init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// file:///abs/path, file://relative/path (nodeadm's form) or a plain path.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: String,
    /// Prefix for every file written (tests, image builds).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Phases to skip (comma separated, repeatable); nodeadm's names are accepted.
    #[arg(long, short = 's', value_name = "NAME,...")]
    pub skip: Vec<String>,
    /// Write the files but do not reload, enable or restart any unit.
    #[arg(long)]
    pub no_start: bool,
    /// Kubelet version (`v1.31.2`) instead of running `<root>/usr/bin/kubelet --version`.
    #[arg(long, value_name = "VERSION")]
    pub kubelet_version: Option<String>,
    /// The hybridboot path written into credential_process, the kubeconfig and units
    /// (default: this executable).
    #[arg(long, value_name = "PATH")]
    pub hybridboot_path: Option<PathBuf>,
    /// A private IAM Roles Anywhere endpoint (VPC endpoint): used here and written into the
    /// credential_process line [default: env AWS_ENDPOINT_URL_ROLESANYWHERE, then the region's].
    #[arg(long, value_name = "URL")]
    pub roles_anywhere_endpoint: Option<String>,
    /// EKS endpoint for DescribeCluster [default: env AWS_ENDPOINT_URL_EKS, then
    /// AWS_ENDPOINT_URL, then the region's].
    #[arg(long, value_name = "URL")]
    pub eks_endpoint: Option<String>,
    /// ECR API endpoint for the sandbox image's GetAuthorizationToken [default: the registry
    /// region's, `https://api.ecr.<region>.amazonaws.com`].
    #[arg(long, value_name = "URL")]
    pub ecr_endpoint: Option<String>,
    /// Where the sandbox image's registry is served (a VPC endpoint or pull-through mirror)
    /// [default: `https://<registry host of the image>`; `http://` only when written here].
    #[arg(long, value_name = "URL")]
    pub ecr_registry_endpoint: Option<String>,
    /// PEM bundle of the CAs of the AWS endpoints' TLS certificates, used here and written into
    /// the credential_process line [default: AWS_CA_BUNDLE for this run only (not written),
    /// then the built-in roots].
    #[arg(long, value_name = "FILE")]
    pub aws_ca_bundle: Option<PathBuf>,
    /// TPM TCTI of the node key, used here and written into the credential_process line when
    /// the TPM is not at the default (`device:/dev/tpmrm0`).
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// PKCS#11 module of the node key when its URI names none, used here and written into the
    /// credential_process line.
    #[arg(long, value_name = "FILE")]
    pub pkcs11_lib: Option<PathBuf>,
    /// Retry policy of the remote calls (first boot bounds it by its own deadline).
    #[arg(skip)]
    pub retry: Option<RetryPolicy>,
    /// Apply the effects of unchanged files too (first boot after a power cut cannot know
    /// whether the interrupted run restarted the units after writing their files).
    #[arg(skip)]
    pub apply_unchanged: bool,
}

impl InitArgs {
    /// What the credential_process line needs beyond nodeadm's arguments.
    pub fn aws_overrides(&self) -> AwsOverrides {
        AwsOverrides {
            roles_anywhere_endpoint: self.roles_anywhere_endpoint.clone(),
            ca_bundle: self.aws_ca_bundle.clone(),
            tcti: self.tcti.clone(),
            pkcs11_lib: self.pkcs11_lib.clone(),
            proxy: super::render::proxy::ProxyEnv::from_env(),
        }
    }
}

/// One systemd operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitAction {
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// `systemctl disable --now UNIT`.
    Stop(String),
    /// `systemctl enable UNIT`.
    Enable(String),
    /// `systemctl restart UNIT`.
    Restart(String),
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
        let args: Vec<&str> = match action {
            UnitAction::DaemonReload => vec!["daemon-reload"],
            UnitAction::Stop(u) => vec!["disable", "--now", u],
            UnitAction::Enable(u) => vec!["enable", u],
            UnitAction::Restart(u) => vec!["restart", u],
        };
        let out = Command::new(&self.program)
            .args(&args)
            .output()
            .with_context(|| format!("running {} {}", self.program.display(), args.join(" ")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            anyhow::bail!(
                "{} {} failed ({}): {}",
                self.program.display(),
                args.join(" "),
                out.status,
                err.lines().next().unwrap_or("").trim()
            );
        }
        Ok(())
    }
}

/// What the effects of a write report require, in order. Containerd and kubelet are enabled
/// too, so they come back after a reboot.
pub fn plan(effects: impl IntoIterator<Item = Effect>) -> Vec<UnitAction> {
    let mut out = Vec::new();
    let restart = |unit: &str, enable: bool, out: &mut Vec<UnitAction>| {
        if enable {
            out.push(UnitAction::Enable(unit.into()));
        }
        out.push(UnitAction::Restart(unit.into()));
    };
    // BTreeSet order of Effect is already the execution order; sort in case a caller did not.
    let mut effects: Vec<Effect> = effects.into_iter().collect();
    effects.sort();
    effects.dedup();
    for e in effects {
        match e {
            Effect::Stop(u) => out.push(UnitAction::Stop(u.into())),
            Effect::DaemonReload => out.push(UnitAction::DaemonReload),
            Effect::CredentialsUpdate => restart(aws::UPDATE_UNIT_NAME, true, &mut out),
            Effect::Sysctl => restart("systemd-sysctl.service", false, &mut out),
            Effect::ModulesLoad => restart("systemd-modules-load.service", false, &mut out),
            Effect::Containerd => restart("containerd.service", true, &mut out),
            Effect::Kubelet => restart("kubelet.service", true, &mut out),
            Effect::None => {}
        }
    }
    out
}

/// The local address the kernel would use to reach `host` (no packet is sent: a UDP connect
/// only picks a route). nodeadm takes the default route's address the same way.
fn detect_node_ip(endpoint: &str) -> Option<IpAddr> {
    let url = http::Url::parse(endpoint).ok()?;
    let sock = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    sock.connect((url.host().trim_matches(['[', ']']), url.port()))
        .ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// Credentials for DescribeCluster: the environment if it has keys (operators and tests), else
/// [`roles_anywhere_credentials`].
pub fn node_credentials(
    cfg: &NodeConfig,
    extra: &AwsOverrides,
    root: &Path,
    policy: &RetryPolicy,
) -> anyhow::Result<Credentials> {
    let env = |k: &str| std::env::var(k).ok();
    if let Some(c) = crate::aws::sources::from_environment(&env)? {
        log::info!("using AWS credentials from the environment");
        return Ok(c);
    }
    roles_anywhere_credentials(cfg, extra, root, policy)
}

/// IAM Roles Anywhere with exactly the arguments the aws phase writes into `credential_process`
/// (files taken under `root`, the cache too unless the environment names one), through the
/// session cache that credential_process shares. First boot's Roles Anywhere check is this call.
pub fn roles_anywhere_credentials(
    cfg: &NodeConfig,
    extra: &AwsOverrides,
    root: &Path,
    policy: &RetryPolicy,
) -> anyhow::Result<Credentials> {
    let mut args: Vec<String> = aws::flag_words(&aws::roles_anywhere_args(cfg, extra));
    // The line is written for the node's own root; this run may work under another.
    let under_root = |p: &str| {
        crate::fsutil::under_root(root, Path::new(p))
            .display()
            .to_string()
    };
    for i in 1..args.len() {
        match args[i - 1].as_str() {
            "--certificate" | "--ca-bundle" => args[i] = under_root(&args[i]),
            "--private-key" => {
                if let Ok(crate::key::KeyRef::Path(p)) = crate::key::KeyRef::parse(&args[i]) {
                    args[i] = under_root(&p.display().to_string());
                }
            }
            _ => {}
        }
    }
    if let Some(dir) = crate::aws::cache::dir_for_root(root, |k| std::env::var(k).ok()) {
        args.extend(["--cache-dir".to_string(), dir.display().to_string()]);
    }
    crate::aws::commands::credentials_from_process_args_with(&args, policy)
}

/// Where DescribeCluster goes and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct EksTarget {
    /// The endpoint [default: `AWS_ENDPOINT_URL_EKS`, `AWS_ENDPOINT_URL`, else the region's].
    pub endpoint: Option<String>,
    /// CAs of its TLS certificate [default: env `AWS_CA_BUNDLE`, else the built-in roots].
    pub ca_bundle: Option<PathBuf>,
    /// The retry policy [default: [`RetryPolicy::default`]].
    pub retry: Option<RetryPolicy>,
}

/// `eks:DescribeCluster` through the HTTP client with the retry policy, at the endpoint an SDK
/// would use (`AWS_ENDPOINT_URL_EKS`, `AWS_ENDPOINT_URL`, else the region's) unless `target`
/// names one.
pub fn describe_cluster_by_name(
    name: &str,
    region: &str,
    creds: &Credentials,
    target: &EksTarget,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<eks::ClusterDetails> {
    let endpoint = target
        .endpoint
        .clone()
        .or_else(|| eks::endpoint_from_env("EKS", env))
        .unwrap_or_else(|| eks::default_endpoint(region));
    let signed = eks::describe_cluster_request(&endpoint, region, name, creds, SystemTime::now())
        .map_err(|e| exit::operator(e.to_string()))?;
    let mut req = http::Request::get(http::Url::parse(&signed.url)?);
    for (name, value) in &signed.request.headers {
        if !name.eq_ignore_ascii_case("host") {
            req = req.header(name, value.clone());
        }
    }
    let mut builder = Client::builder();
    let ca = target.ca_bundle.clone().or_else(|| {
        env("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(ca) = &ca {
        builder = builder.ca_bundle_file(ca)?;
    }
    let client = builder.build()?;
    log::info!("DescribeCluster {name} at {endpoint}");
    let policy = target.retry.unwrap_or_default();
    let (status, error_type, body) = match client.send_retrying(&req, &policy) {
        Ok(resp) => (
            resp.status,
            resp.header("x-amzn-errortype").map(str::to_string),
            resp.body().to_vec(),
        ),
        Err(http::HttpError::Status { code, body, .. }) => (code, None, body),
        Err(e) => return Err(e).context(format!("DescribeCluster at {endpoint}")),
    };
    eks::parse_describe_cluster(name, region, status, error_type.as_deref(), &body).map_err(|e| {
        if e.is_transient() {
            anyhow::Error::new(e)
        } else {
            exit::operator(e.to_string())
        }
    })
}

fn kubelet_version(args: &InitArgs) -> anyhow::Result<KubeletVersion> {
    match &args.kubelet_version {
        Some(v) => KubeletVersion::parse(v)
            .ok_or_else(|| exit::operator(format!("--kubelet-version {v:?}: expected vX.Y.Z"))),
        None => Ok(facts::kubelet_version(&crate::fsutil::under_root(
            &args.root,
            Path::new("/usr/bin/kubelet"),
        ))
        .map_err(|e| exit::operator(e.to_string()))?),
    }
}

/// Runs `hybridboot init` with systemd as the service manager.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    init(&args, &mut Systemctl::from_env())
}

/// The whole of `init`, with an injectable service manager.
pub fn init(args: &InitArgs, services: &mut dyn ServiceManager) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    // config
    let loaded = config::load(&args.config_source).map_err(|e| exit::operator(e.to_string()))?;
    for w in &loaded.warnings {
        log::warn!("{}: {w}", loaded.path.display());
    }
    let cfg = loaded.node;
    let skip = Skip::parse(&args.skip).map_err(|e| exit::operator(e.to_string()))?;
    for name in &skip.ignored {
        log::info!("--skip {name}: nodeadm phase that hybridboot does not have; ignored");
    }
    let now = SystemTime::now();
    if !skip.skips(Step::ClockValidation) {
        checks::check_clock(now).map_err(|e| exit::operator(e.to_string()))?;
    }
    if !skip.skips(Step::CertificateValidation) {
        checks::read_certificate(&args.root, &cfg.iam_roles_anywhere.certificate_path)
            .and_then(|c| checks::check_certificate(&c, &cfg.iam_roles_anywhere.node_name, now))
            .map_err(|e| exit::operator(e.to_string()))?;
    }
    let hybridboot_path = match &args.hybridboot_path {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this executable")?,
    };
    let mut facts = facts::detect(&args.root, kubelet_version(args)?, hybridboot_path)
        .context("reading node facts")?;
    facts.aws = args.aws_overrides();
    let policy = args.retry.unwrap_or_default();

    // cluster details
    let mut remote_node_cidrs: Option<Vec<String>> = None;
    let cluster = if cfg.cluster.needs_cluster_details() {
        if skip.skips(Step::ClusterDetails) {
            match ClusterDetails::from_config(&cfg) {
                Some(c) => c,
                None => {
                    return Err(exit::operator(
                        "--skip cluster-details needs spec.cluster.apiServerEndpoint, certificateAuthority and cidr in the NodeConfig",
                    ))
                }
            }
        } else {
            let creds = node_credentials(&cfg, &facts.aws, &args.root, &policy)
                .context("getting AWS credentials")?;
            let target = EksTarget {
                endpoint: args.eks_endpoint.clone(),
                ca_bundle: args
                    .aws_ca_bundle
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
                exit::operator(format!(
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
    if !skip.skips(Step::NodeIpValidation) {
        if let Some(cidrs) = &remote_node_cidrs {
            let ip = checks::check_node_ip(
                &cfg.cluster.name,
                &cfg.kubelet.flags,
                detect_node_ip(&cluster.endpoint),
                cidrs,
            )
            .map_err(|e| exit::operator(e.to_string()))?;
            log::info!("node IP {ip} is inside the cluster's remote node networks");
        }
    }

    // files
    let report = files_phase(&args.root, &cfg, &cluster, &facts, &skip).map_err(|e| match e {
        super::init::FilesError::Render(r) => exit::operator(r.to_string()),
        w => anyhow::Error::new(w),
    })?;
    log::info!(
        "files: {} written, {} unchanged, {} removed",
        report.changed.len(),
        report.unchanged.len(),
        report.removed.len()
    );

    // run
    let mut effects = report.effects.clone();
    if args.apply_unchanged {
        effects.extend(report.unchanged_effects.iter().copied());
    }
    let actions = plan(effects);
    if args.no_start || skip.skips(Step::Run) {
        if !actions.is_empty() {
            log::info!("not starting anything (--no-start / --skip run): {actions:?}");
        }
        return Ok(());
    }
    for a in &actions {
        log::info!("systemd: {a:?}");
        services.apply(a)?;
    }
    if actions.is_empty() {
        log::info!("nothing changed: no unit restarted");
    }

    // sandbox image (nodeadm caches it right after starting containerd)
    if !skip.skips(Step::SandboxImage) {
        sandbox_image(args, &cfg, &facts.aws, &policy)?;
    }
    Ok(())
}

/// Whether `HYBRIDBOOT_SYSTEMCTL` replaces systemd (tests): containerd then is whatever the
/// stand-in provides.
fn stand_in_service_manager() -> bool {
    std::env::var_os("HYBRIDBOOT_SYSTEMCTL").is_some_and(|v| !v.is_empty())
}

/// The sandbox step's settings from init's arguments.
pub fn sandbox_settings(args: &InitArgs, policy: &RetryPolicy) -> SandboxSettings {
    let mut s = SandboxSettings::new(&args.root);
    s.ecr_endpoint = args.ecr_endpoint.clone();
    s.registry_endpoint = args.ecr_registry_endpoint.clone();
    s.ca_bundle = args
        .aws_ca_bundle
        .as_deref()
        .map(|p| crate::fsutil::under_root(&args.root, p))
        .or_else(|| {
            std::env::var("AWS_CA_BUNDLE")
                .ok()
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
    s.retry = *policy;
    s
}

/// Makes sure containerd's `k8s.io` namespace holds the sandbox image its config pins
/// ([`crate::node::sandbox`]). With a stand-in service manager and no containerd serving, the
/// step is skipped (logged); with systemd, a containerd that does not answer is an error.
fn sandbox_image(
    args: &InitArgs,
    cfg: &NodeConfig,
    extra: &AwsOverrides,
    policy: &RetryPolicy,
) -> anyhow::Result<()> {
    let settings = sandbox_settings(args, policy);
    let stand_in = stand_in_service_manager();
    let info = match sandbox::read_config(&settings) {
        Ok(i) => i,
        Err(e) if stand_in => {
            log::info!("sandbox image: skipped, containerd is not managed here ({e})");
            return Ok(());
        }
        Err(e) => return Err(e.into_classified()),
    };
    let socket = sandbox::socket_path(&settings, &info);
    if stand_in && !socket.exists() {
        log::info!(
            "sandbox image: skipped, no containerd serving at {} (HYBRIDBOOT_SYSTEMCTL stands in for systemd)",
            socket.display()
        );
        return Ok(());
    }
    let mut credentials = || node_credentials(cfg, extra, &args.root, policy);
    sandbox::ensure_with(&settings, &info, &socket, &mut credentials)
        .map(|_| ())
        .map_err(sandbox::SandboxError::into_classified)
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
                UnitAction::Enable("containerd.service".into()),
                UnitAction::Restart("containerd.service".into()),
                UnitAction::Enable("kubelet.service".into()),
                UnitAction::Restart("kubelet.service".into()),
            ]
        );
        assert_eq!(
            plan([Effect::Sysctl]),
            vec![UnitAction::Restart("systemd-sysctl.service".into())]
        );
    }

    #[test]
    fn node_ip_detection_uses_the_route_without_traffic() {
        assert_eq!(
            detect_node_ip("https://127.0.0.1:6443"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(detect_node_ip("not a url"), None);
    }
}
