//! The `hybridboot` command line: parse, set up logging, call one function per subcommand, map
//! errors to exit codes (see `hybridboot::exit`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use hybridboot::cli::KeyArgs;
use hybridboot::key::{Algorithm, OpenMode};
use hybridboot::{exit, fsutil, logging, vault, x509};

const AFTER_HELP: &str = "\
KEY REFERENCES (--key):
  handle:0x81000001                 TPM 2.0 persistent handle (0x81000000-0x81FFFFFF); created
                                    under the owner-hierarchy SRK if absent (key create)
  /path/key.tss2.pem                TPM-wrapped key file (-----BEGIN TSS2 PRIVATE KEY-----)
  pkcs11:token=LABEL;object=LABEL   PKCS#11 key (RFC 7512). PIN from ?pin-source=file:/path,
                                    ?pin-value=.. or HYBRIDBOOT_PKCS11_PIN; module from
                                    ?module-path=.. or --pkcs11-lib
  file:/path/key.pem | /path        software key file, development only (must be mode 0600)

EXIT CODES:
  0 success, 1 internal error, 2 usage error, 3 needs an operator (configuration, key,
  permission), 4 retry later (a peer is unreachable or failing transiently)

Logs go to stderr; stdout carries only machine-readable output.";

/// Turns factory hardware into an Amazon EKS hybrid node whose identity never leaves its TPM or
/// HSM.
#[derive(Parser, Debug)]
#[command(name = "hybridboot", version, after_long_help = AFTER_HELP, after_help = "Run `hybridboot --help` for key references and exit codes.")]
struct Cli {
    /// More log output on stderr (-v debug, -vv trace). Secrets are never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or show the node key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a PKCS#10 certificate signing request signed by the node key.
    ///
    /// Example: hybridboot csr --key handle:0x81000001 --common-name node-1 --dns-name node-1.example.com
    Csr(CsrArgs),
    /// Get the node certificate from Vault PKI (CSR signed by the node key) and write it.
    Enroll(vault::EnrollArgs),
    /// Renew the node certificate once it is past its renewal point; print when the next is due.
    Renew(hybridboot::firstboot::RenewArgs),
    /// The whole first boot, resumable: key, certificate, Roles Anywhere, install, init, stamp.
    Firstboot(hybridboot::firstboot::FirstbootArgs),
    /// What first boot left: key, certificate, credentials, install, join stamp, last error.
    Status(hybridboot::firstboot::status::StatusArgs),
    /// IAM Roles for Service Accounts on clusters outside EKS: keys.json and discovery document.
    #[command(subcommand)]
    Irsa(hybridboot::irsa::IrsaCommand),
    /// The aws-auth ConfigMap that maps the node role (and admin roles) to Kubernetes.
    #[command(subcommand)]
    AwsAuth(hybridboot::awsauth::AwsAuthCommand),
    /// The EKS access entry (type HYBRID_LINUX) for the node role.
    #[command(subcommand)]
    AccessEntry(hybridboot::awsauth::AccessEntryCommand),
    /// Check a NodeConfig (node.eks.aws/v1alpha1) before joining.
    #[command(subcommand)]
    Config(hybridboot::node::cmd::ConfigCommand),
    /// Print AWS credentials for an SDK's `credential_process` (IAM Roles Anywhere session signed
    /// by the node key; cached while more than 5 minutes remain).
    CredentialProcess(hybridboot::aws::commands::CredentialProcessArgs),
    /// Keep one profile of the AWS shared credentials file fresh (Roles Anywhere).
    Update(hybridboot::aws::commands::UpdateArgs),
    /// Serve Roles Anywhere credentials as IMDSv2 on 127.0.0.1.
    Serve(hybridboot::aws::commands::ServeArgs),
    /// Inspect what a certificate presents to IAM Roles Anywhere.
    #[command(subcommand)]
    Credentials(hybridboot::aws::commands::CredentialsCommand),
    /// Install the Kubernetes node artifacts (like `nodeadm install`), each verified before it
    /// is placed.
    ///
    /// Example: hybridboot install 1.31 --credential-provider iam-ra --manifest https://mirror/manifest.yaml --manifest-public-key /etc/hybridboot/manifest.pub
    Install(hybridboot::node::install::InstallArgs),
    /// Remove what install placed and the files init wrote; keeps the node key and certificate.
    Uninstall(hybridboot::node::install::UninstallArgs),
    /// Print an EKS ExecCredential (kubectl/kubelet exec credential plugin).
    ///
    /// Example: hybridboot token --cluster-name prod --region us-west-2
    Token(hybridboot::aws::token_cmd::TokenArgs),
    /// Join the cluster like `nodeadm init`: config, credentials, cluster details, checks, files, units.
    ///
    /// Example: hybridboot init --config-source file:///etc/eks/nodeconfig.yaml
    Init(hybridboot::node::init_cmd::InitArgs),
    /// Write a user kubeconfig whose exec plugin is `hybridboot token` with IAM Roles Anywhere.
    Kubeconfig(hybridboot::node::kubeconfig_cmd::KubeconfigArgs),
    /// Make sure containerd holds the sandbox image its config pins (init's last step): pulled
    /// from ECR with the node's credentials, every digest verified, imported with ctr.
    ///
    /// Example: hybridboot sandbox-image --config-source file:///etc/eks/nodeconfig.yaml
    SandboxImage(SandboxImageArgs),
}

#[derive(Args, Debug)]
struct SandboxImageArgs {
    /// The NodeConfig whose IAM Roles Anywhere settings give the credentials for ECR (not needed
    /// when AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are set).
    #[arg(long, short = 'c', value_name = "SOURCE")]
    config_source: Option<String>,
    /// Node root (containerd's socket and config are taken under it).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// containerd's config for `containerd config dump` [default: containerd's default].
    #[arg(long, value_name = "FILE")]
    containerd_config: Option<PathBuf>,
    /// ECR API endpoint [default: the registry region's].
    #[arg(long, value_name = "URL")]
    ecr_endpoint: Option<String>,
    /// Where the image's registry is served [default: https://<registry host>].
    #[arg(long, value_name = "URL")]
    ecr_registry_endpoint: Option<String>,
    /// CAs of the ECR endpoint's and the registry's TLS certificates [default: env
    /// AWS_CA_BUNDLE, then the built-in roots].
    #[arg(long, value_name = "FILE", env = "AWS_CA_BUNDLE")]
    aws_ca_bundle: Option<PathBuf>,
    /// How long to keep retrying an unreachable or failing ECR or registry (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    retry_deadline: String,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create the key if it does not exist (an existing key is reused) and print its public key.
    ///
    /// Idempotent: running it again prints the same public key. A TPM key is created under the
    /// owner hierarchy's storage root key with fixedTPM, fixedParent and sensitiveDataOrigin, so
    /// its private part can never leave the TPM. A PKCS#11 key is generated on the token as
    /// sensitive and never extractable.
    Create(KeyCreateArgs),
    /// Print the public key (PEM SubjectPublicKeyInfo) and its algorithm.
    Show(KeyArgs),
}

#[derive(Args, Debug)]
struct KeyCreateArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Algorithm of a new key. An existing key of another algorithm is an error.
    #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "rsa-2048"])]
    algorithm: String,
}

#[derive(Args, Debug)]
struct CsrArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Subject common name; for EKS hybrid nodes, the node name.
    #[arg(long, value_name = "CN")]
    common_name: String,
    /// DNS subject alternative name (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    dns_names: Vec<String>,
    /// IP subject alternative name (repeatable).
    #[arg(long = "ip-address", value_name = "IP")]
    ip_addresses: Vec<IpAddr>,
    /// Write the CSR to this file (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    logging::init(cli.verbose as i8 - cli.quiet as i8);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let class = exit::classify(&err);
            log::error!("{}", chain(&err));
            ExitCode::from(class.code() as u8)
        }
    }
}

/// The whole cause chain on one line: `outer: inner: root cause`, without repeats.
fn chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Key(KeyCommand::Create(a)) => key_create(a),
        Command::Key(KeyCommand::Show(a)) => key_show(a),
        Command::Csr(a) => csr(a),
        Command::Enroll(a) => vault::enroll(a),
        Command::Renew(a) => hybridboot::firstboot::renew(a),
        Command::Firstboot(a) => hybridboot::firstboot::run(a),
        Command::Status(a) => hybridboot::firstboot::status::run(a),
        Command::Irsa(c) => hybridboot::irsa::run(c),
        Command::AwsAuth(c) => hybridboot::awsauth::run_aws_auth(c),
        Command::AccessEntry(c) => hybridboot::awsauth::run_access_entry(c),
        Command::Config(c) => hybridboot::node::cmd::run(c),
        Command::CredentialProcess(a) => hybridboot::aws::commands::credential_process(a),
        Command::Update(a) => hybridboot::aws::commands::update(a),
        Command::Serve(a) => hybridboot::aws::commands::serve(a),
        Command::Credentials(c) => hybridboot::aws::commands::run_credentials(c),
        Command::Install(a) => hybridboot::node::install::run_install(a),
        Command::Uninstall(a) => hybridboot::node::install::run_uninstall(a),
        Command::Token(a) => hybridboot::aws::token_cmd::run(a),
        Command::Init(a) => hybridboot::node::init_cmd::run(a),
        Command::Kubeconfig(a) => hybridboot::node::kubeconfig_cmd::run(a),
        Command::SandboxImage(a) => sandbox_image(a),
    }
}

fn sandbox_image(args: SandboxImageArgs) -> anyhow::Result<()> {
    use hybridboot::node::sandbox::{self, Outcome, SandboxSettings};
    let mut settings = SandboxSettings::new(&args.root);
    settings.containerd_config = args.containerd_config;
    settings.ecr_endpoint = args.ecr_endpoint;
    settings.registry_endpoint = args.ecr_registry_endpoint;
    settings.ca_bundle = args.aws_ca_bundle;
    let deadline = hybridboot::vault::parse_duration(&args.retry_deadline)
        .map_err(|e| exit::operator(format!("--retry-deadline: {e}")))?;
    settings.retry = settings.retry.with_deadline(deadline);
    let root = args.root.clone();
    let source = args.config_source;
    let retry = settings.retry;
    let mut credentials = || -> anyhow::Result<hybridboot::aws::credentials::Credentials> {
        let env = |k: &str| std::env::var(k).ok();
        if let Some(c) = hybridboot::aws::sources::from_environment(&env)? {
            return Ok(c);
        }
        let source = source.as_deref().ok_or_else(|| {
            exit::operator("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or give --config-source (the node's IAM Roles Anywhere settings)")
        })?;
        let cfg =
            hybridboot::node::config::load(source).map_err(|e| exit::operator(e.to_string()))?;
        hybridboot::node::init_cmd::roles_anywhere_credentials(
            &cfg.node,
            &Default::default(),
            &root,
            &retry,
        )
    };
    match sandbox::ensure(&settings, &mut credentials)
        .map_err(sandbox::SandboxError::into_classified)?
    {
        Outcome::Present(image) => println!("{image}: present"),
        Outcome::Pulled {
            image,
            digest,
            bytes,
            ..
        } => println!("{image}: pulled {digest} ({bytes} bytes)"),
    }
    Ok(())
}

fn key_create(args: KeyCreateArgs) -> anyhow::Result<()> {
    let alg: Algorithm = args.algorithm.parse().map_err(exit::operator)?;
    let key = args.key.open(OpenMode::CreateIfAbsent(alg))?;
    log::info!(
        "{} ready: {} (sha256 {})",
        key.describe(),
        key.algorithm(),
        key.fingerprint()
    );
    print!("{}", key.public_key_pem());
    Ok(())
}

fn key_show(args: KeyArgs) -> anyhow::Result<()> {
    let key = args.open(OpenMode::Existing)?;
    println!("# algorithm: {}", key.algorithm());
    println!("# sha256: {}", key.fingerprint());
    print!("{}", key.public_key_pem());
    Ok(())
}

fn csr(args: CsrArgs) -> anyhow::Result<()> {
    let key = args.key.open(OpenMode::Existing)?;
    let req = x509::CsrRequest {
        common_name: args.common_name,
        dns_names: args.dns_names,
        ip_addresses: args.ip_addresses,
    };
    let pem = x509::build_csr(key.as_ref(), &req)?;
    match args.out {
        Some(path) => {
            fsutil::atomic_write(&path, pem.as_bytes(), &fsutil::WriteOptions::public())
                .with_context(|| format!("writing CSR to {}", path.display()))?;
            log::info!(
                "CSR for CN={} written to {}",
                req.common_name,
                path.display()
            );
        }
        None => print!("{pem}"),
    }
    Ok(())
}
