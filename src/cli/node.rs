//! The node commands: `config check`, `install`, `uninstall`, `init`, `upgrade` and
//! `sandbox-image`, their
//! flags turned into
//! the settings of [`crate::node`].

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use crate::error::{self, ResultExt};
use crate::node::config;
use crate::node::init::{self, InitSettings, Systemctl};
use crate::node::install::{
    self, ContainerdSource, InstallSettings, UninstallSettings, DEFAULT_MANIFEST,
};
use crate::node::render::proxy::ProxyEnv;
use crate::node::render::{AwsOverrides, KubeletVersion};
use crate::node::sandbox::{self, Outcome, SandboxSettings};
use crate::node::upgrade::{self, UpgradeSettings};

/// `hybridboot config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Parse and validate a NodeConfig without changing anything.
    ///
    /// Reads the same files as `nodeadm init --config-source` (a multi-document file may also
    /// carry a hybridboot BootstrapConfig). Unknown fields, missing values and bad values are
    /// errors naming the file, line and field; questionable ARNs are warnings.
    ///
    /// Example: hybridboot config check --config-source file:///etc/eks/nodeconfig.yaml
    Check(CheckArgs),
}

/// Arguments of `config check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// file:///abs/path, file://relative/path (nodeadm's form) or a plain path.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: String,
}

/// Runs a `config` subcommand.
pub fn run_config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check(args) => check(&args),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let loaded = config::load(&args.config_source).classed()?;
    for w in &loaded.warnings {
        log::warn!("{}: {w}", loaded.path.display());
    }
    let n = &loaded.node;
    log::info!(
        "{}: valid NodeConfig for node {} in cluster {} ({}){}",
        loaded.path.display(),
        n.iam_roles_anywhere.node_name,
        n.cluster.name,
        n.cluster.region,
        if loaded.bootstrap.is_some() {
            ", with a BootstrapConfig document"
        } else {
            ""
        }
    );
    Ok(())
}

/// `hybridboot install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Kubernetes version: `1.31` (latest patch in the manifest) or `1.31.2` (exactly).
    #[arg(value_name = "K8S_VERSION")]
    pub kubernetes_version: String,
    /// Credential provider; hybridboot supports IAM Roles Anywhere only.
    #[arg(long, value_parser = ["iam-ra"])]
    pub credential_provider: String,
    /// Where the artifacts come from and how they are verified.
    #[command(flatten)]
    pub source: ArtifactSourceArgs,
    /// Install under this directory instead of `/` (image builds, tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where containerd comes from.
    #[arg(long, value_enum, default_value = "distro")]
    pub containerd_source: ContainerdSourceArg,
    /// Never download: verify the artifacts already in the image against the install record.
    #[arg(long)]
    pub offline: bool,
}

/// The flags `install` and `upgrade` share: the release manifest, its signature key, the
/// mirror's CAs and the architecture.
#[derive(Args, Debug)]
pub struct ArtifactSourceArgs {
    /// Release manifest (nodeadm's schema): https://... or file:///...
    #[arg(long, value_name = "URL", default_value = DEFAULT_MANIFEST)]
    pub manifest: String,
    /// Ed25519 public key (PEM or base64) that must have signed `<manifest>.signed`, the signed
    /// manifest carrying the manifest's and every artifact's SHA-256 and a serial that may not
    /// go down (docs/signed-manifest.md says how a mirror produces it).
    #[arg(long, value_name = "FILE", env = "HYBRIDBOOT_MANIFEST_PUBLIC_KEY")]
    pub manifest_public_key: Option<PathBuf>,
    /// Architecture of the artifacts [default: this machine's].
    #[arg(long, value_parser = ["amd64", "arm64"])]
    pub arch: Option<String>,
    /// PEM bundle of CAs that sign the mirror's TLS certificate (replaces the built-in roots).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
}

/// Where containerd comes from (`--containerd-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ContainerdSourceArg {
    /// containerd is not managed by hybridboot.
    None,
    /// The distribution's containerd: from the image, or from the mirror when the manifest
    /// lists `containerd`/`runc` artifacts.
    Distro,
}

impl InstallArgs {
    /// The settings these flags say.
    pub fn settings(&self) -> InstallSettings {
        InstallSettings {
            kubernetes_version: self.kubernetes_version.clone(),
            manifest: self.source.manifest.clone(),
            manifest_public_key: self.source.manifest_public_key.clone(),
            root: self.root.clone(),
            containerd_source: match self.containerd_source {
                ContainerdSourceArg::None => ContainerdSource::None,
                ContainerdSourceArg::Distro => ContainerdSource::Distro,
            },
            arch: self.source.arch.clone(),
            ca_bundle: self.source.ca_bundle.clone(),
            offline: self.offline,
        }
    }
}

/// Runs `install`.
pub fn run_install(args: InstallArgs) -> anyhow::Result<()> {
    install::install(&args.settings())
}

/// `hybridboot uninstall`.
#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Uninstall from under this directory instead of `/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Do not stop or disable any unit (an image under --root that is not running). Without
    /// it, kubelet, hybridboot-update and (when hybridboot installed it) containerd are
    /// stopped and disabled before their files go.
    #[arg(long)]
    pub no_stop: bool,
}

/// Runs `uninstall` with systemd as the service manager.
pub fn run_uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let report = install::uninstall(
        &UninstallSettings {
            root: args.root,
            no_stop: args.no_stop,
        },
        &mut Systemctl::from_env(),
    )?;
    super::print(&report)
}

/// Where hybridboot lives in a node image: what the lines init writes name under `--root`.
pub const DEFAULT_HYBRIDBOOT_PATH: &str = "/usr/bin/hybridboot";

/// The `--root` rule for what writes a node's files (init, first boot): a root other than `/`
/// starts no unit unless `start`, and the lines written name `/usr/bin/hybridboot` unless
/// `hybridboot_path` says otherwise.
pub fn root_rule(
    root: &Path,
    (no_start, start): (bool, bool),
    hybridboot_path: Option<PathBuf>,
) -> crate::firstboot::Placement {
    let rooted = root != Path::new("/");
    if rooted && !no_start && !start {
        log::info!(
            "--root {}: not starting any unit (--root implies --no-start; --start overrides)",
            root.display()
        );
    }
    crate::firstboot::Placement {
        no_start: no_start || (rooted && !start),
        hybridboot_path: hybridboot_path
            .or_else(|| rooted.then(|| PathBuf::from(DEFAULT_HYBRIDBOOT_PATH))),
    }
}

/// Arguments of `hybridboot init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// file:///abs/path, file://relative/path (nodeadm's form) or a plain path: the node's
    /// path, read under --root.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: String,
    /// The node's / (image builds, tests): the NodeConfig, certificate, CA bundles and every
    /// file written are taken under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Phases to skip (comma separated, repeatable); nodeadm's names are accepted.
    #[arg(long, short = 's', value_name = "NAME,...")]
    pub skip: Vec<String>,
    /// Write the files but do not reload, enable or restart any unit (implied by --root other
    /// than /: the units of an image being built are not this machine's).
    #[arg(long)]
    pub no_start: bool,
    /// With --root: (re)start the units anyway (a root that is the running system's, or tests
    /// with a recording service manager).
    #[arg(long, conflicts_with = "no_start")]
    pub start: bool,
    /// Show what init would do, and do none of it: every check and remote call runs as usual
    /// (credentials bypass the session cache), then each file is listed as `new`, `changed`,
    /// `unchanged` or `remove` against what is on disk, followed by the `systemctl` actions.
    /// Nothing is written, removed, started or cached. Run it before re-running init with an
    /// edited NodeConfig to see which units will restart.
    #[arg(long)]
    pub dry_run: bool,
    /// Kubelet version (`v1.31.2`) instead of running `<root>/usr/bin/kubelet --version`.
    #[arg(long, value_name = "VERSION")]
    pub kubelet_version: Option<String>,
    /// Where the node reaches AWS and finds its key.
    #[command(flatten)]
    pub site: NodeSiteArgs,
}

/// The flags `init` and `upgrade` share: where hybridboot and the node key are, and where the
/// node reaches AWS.
#[derive(Args, Debug)]
pub struct NodeSiteArgs {
    /// The hybridboot path written into credential_process, the kubeconfig and units: where
    /// the binary is on the node [default: this executable; with --root other than /,
    /// /usr/bin/hybridboot, never the build host's path].
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
    /// the TPM is not at the default (`device:/dev/tpmrm0`). From the environment too: the
    /// line runs later without this shell's environment.
    #[arg(long, value_name = "TCTI", env = "HYBRIDBOOT_TCTI")]
    pub tcti: Option<String>,
    /// PKCS#11 module of the node key when its URI names none, used here and written into the
    /// credential_process line (from the environment too, for the same reason).
    #[arg(long, value_name = "FILE", env = "HYBRIDBOOT_PKCS11_LIB")]
    pub pkcs11_lib: Option<PathBuf>,
}

impl NodeSiteArgs {
    /// The AWS settings these flags say (the proxy from this run's environment).
    pub fn aws(&self) -> AwsOverrides {
        AwsOverrides {
            roles_anywhere_endpoint: self.roles_anywhere_endpoint.clone(),
            ca_bundle: self.aws_ca_bundle.clone(),
            tcti: self.tcti.clone().filter(|t| !t.is_empty()),
            pkcs11_lib: self
                .pkcs11_lib
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            // The site's proxy, from this run's environment (HTTPS_PROXY, HTTP_PROXY,
            // NO_PROXY): written into the drop-ins and the credential_process line.
            proxy: ProxyEnv::from_env(),
        }
    }

    /// The init settings of `config_source` under `root` with these flags; `--root` other than
    /// `/` implies `--no-start` unless `start`.
    pub fn init_settings(
        &self,
        config_source: &str,
        root: &Path,
        skip: &[String],
        (no_start, start): (bool, bool),
    ) -> InitSettings {
        let placement = root_rule(root, (no_start, start), self.hybridboot_path.clone());
        InitSettings {
            skip: skip.to_vec(),
            no_start: placement.no_start,
            hybridboot_path: placement.hybridboot_path,
            aws: self.aws(),
            eks_endpoint: self.eks_endpoint.clone(),
            ecr_endpoint: self.ecr_endpoint.clone(),
            ecr_registry_endpoint: self.ecr_registry_endpoint.clone(),
            ..InitSettings::new(config_source, root.to_path_buf())
        }
    }
}

impl InitArgs {
    /// The settings these flags say.
    pub fn settings(&self) -> anyhow::Result<InitSettings> {
        let kubelet_version = match &self.kubelet_version {
            Some(v) => Some(KubeletVersion::parse(v).ok_or_else(|| {
                error::operator(format!("--kubelet-version {v:?}: expected vX.Y.Z"))
            })?),
            None => None,
        };
        Ok(InitSettings {
            kubelet_version,
            ..self.site.init_settings(
                &self.config_source,
                &self.root,
                &self.skip,
                (self.no_start, self.start),
            )
        })
    }
}

/// Runs `init` with systemd as the service manager (or only prints what it would do).
pub fn run_init(args: InitArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    if args.dry_run {
        let report = init::dry_run(&settings)?;
        return super::print(&report.render_text());
    }
    init::init(&settings, &mut Systemctl::from_env())
}

/// Arguments of `hybridboot sandbox-image`.
#[derive(Args, Debug)]
pub struct SandboxImageArgs {
    /// The NodeConfig whose IAM Roles Anywhere settings give the credentials for ECR (not needed
    /// when AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are set).
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: Option<String>,
    /// Node root (the NodeConfig, containerd's socket and config are taken under it).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// containerd's config for `containerd config dump` [default: containerd's default].
    #[arg(long, value_name = "FILE")]
    pub containerd_config: Option<PathBuf>,
    /// ECR API endpoint [default: the registry region's].
    #[arg(long, value_name = "URL")]
    pub ecr_endpoint: Option<String>,
    /// Where the image's registry is served [default: https://<registry host>].
    #[arg(long, value_name = "URL")]
    pub ecr_registry_endpoint: Option<String>,
    /// CAs of the ECR endpoint's and the registry's TLS certificates [default: env
    /// AWS_CA_BUNDLE, then the built-in roots].
    #[arg(long, value_name = "FILE", env = "AWS_CA_BUNDLE")]
    pub aws_ca_bundle: Option<PathBuf>,
    /// How long to keep retrying an unreachable or failing ECR or registry (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = crate::time::parse_duration)]
    pub retry_deadline: std::time::Duration,
}

impl SandboxImageArgs {
    /// The settings these flags say.
    pub fn settings(&self) -> anyhow::Result<SandboxSettings> {
        let mut settings = SandboxSettings::new(&self.root);
        settings.containerd_config = self.containerd_config.clone();
        settings.ecr_endpoint = self.ecr_endpoint.clone();
        settings.registry_endpoint = self.ecr_registry_endpoint.clone();
        settings.ca_bundle = self.aws_ca_bundle.clone();
        settings.retry = settings.retry.with_deadline(self.retry_deadline);
        Ok(settings)
    }
}

/// Runs `sandbox-image`: init's last step alone.
pub fn run_sandbox_image(args: SandboxImageArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let retry = settings.retry;
    let mut credentials = || -> anyhow::Result<crate::aws::credentials::Credentials> {
        let env = |k: &str| std::env::var(k).ok();
        if let Some(c) = crate::aws::sources::from_environment(&env).classed()? {
            return Ok(c);
        }
        let source = args.config_source.as_deref().ok_or_else(|| {
            error::operator("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or give --config-source (the node's IAM Roles Anywhere settings)")
        })?;
        let cfg = config::load_under(source, &args.root).classed()?;
        init::roles_anywhere_credentials(&cfg.node, &AwsOverrides::default(), &args.root, &retry)
    };
    match sandbox::ensure(&settings, &mut credentials).classed()? {
        Outcome::Present(image) => super::print(&format!("{image}: present\n")),
        Outcome::Pulled {
            image,
            digest,
            bytes,
            ..
        } => super::print(&format!("{image}: pulled {digest} ({bytes} bytes)\n")),
    }
}

/// Arguments of `hybridboot upgrade`.
#[derive(Args, Debug)]
pub struct UpgradeArgs {
    /// Kubernetes version to move to: `1.32` (latest patch in the manifest) or `1.32.1`
    /// (exactly). Never lower than the installed one; the kubelet may not be newer than the
    /// control plane nor more than 3 minor versions older.
    #[arg(value_name = "K8S_VERSION")]
    pub kubernetes_version: String,
    /// The node's NodeConfig, as given to `init`: file:///abs/path, file://relative/path or a
    /// plain path: the node's path, read under --root.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: String,
    /// Where the artifacts come from and how they are verified, as for `install` (the signed
    /// manifest's serial may not be lower than the one the node installed from).
    #[command(flatten)]
    pub source: ArtifactSourceArgs,
    /// The node's / (image builds, tests): the NodeConfig, the install record and every file
    /// upgrade and init read or write are taken under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Phases to skip (comma separated, repeatable): init's names, `kubelet-version-skew-validation`
    /// (no DescribeCluster, no skew check), and nodeadm's `pod-validation`, `node-validation`,
    /// `init-validation` (accepted; drain and cordon the node yourself first).
    #[arg(long, short = 's', value_name = "NAME,...")]
    pub skip: Vec<String>,
    /// Do not stop, start or restart any unit (implied by --root other than /).
    #[arg(long)]
    pub no_start: bool,
    /// With --root: stop and start the units anyway (tests with a recording service manager).
    #[arg(long, conflicts_with = "no_start")]
    pub start: bool,
    /// Where the node reaches AWS and finds its key.
    #[command(flatten)]
    pub site: NodeSiteArgs,
}

impl UpgradeArgs {
    /// The settings these flags say.
    pub fn settings(&self) -> UpgradeSettings {
        UpgradeSettings {
            kubernetes_version: self.kubernetes_version.clone(),
            manifest: self.source.manifest.clone(),
            manifest_public_key: self.source.manifest_public_key.clone(),
            ca_bundle: self.source.ca_bundle.clone(),
            arch: self.source.arch.clone(),
            init: self.site.init_settings(
                &self.config_source,
                &self.root,
                &self.skip,
                (self.no_start, self.start),
            ),
        }
    }
}

/// Runs `upgrade` with systemd as the service manager and prints how it ended.
pub fn run_upgrade(args: UpgradeArgs) -> anyhow::Result<()> {
    let outcome = upgrade::upgrade(&args.settings(), &mut Systemctl::from_env())?;
    super::print(&format!("{outcome}\n"))
}
