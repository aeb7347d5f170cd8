//! The `hybridboot` command line: parse, set up logging, call one function per subcommand, map
//! errors to exit codes (see `hybridboot::exit`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hybridboot::cli::{
    aws, awsauth, debug, factory, firstboot, irsa, key, mirror, node, token, vault,
};
use hybridboot::{error, exit, logging};

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
    Key(key::KeyCommand),
    /// Print a PKCS#10 certificate signing request signed by the node key.
    ///
    /// Example: hybridboot csr --key handle:0x81000001 --common-name node-1 --dns-name node-1.example.com
    Csr(key::CsrArgs),
    /// On the production line: give the device its factory identity (IEEE 802.1AR IDevID) for a
    /// first boot without secrets.
    #[command(subcommand)]
    Factory(factory::FactoryCommand),
    /// Get the node certificate from Vault PKI (CSR signed by the node key) and write it.
    Enroll(vault::EnrollArgs),
    /// Renew the node certificate once it is past its renewal point; print when the next is due.
    Renew(vault::RenewArgs),
    /// The whole first boot, resumable: key, certificate, Roles Anywhere, install, init, stamp.
    Firstboot(firstboot::FirstbootArgs),
    /// What first boot left: key, certificate, credentials, install, join stamp, last error.
    Status(firstboot::StatusArgs),
    /// Why a join fails: every check a join needs, in order, pass, warn or fail with the fix
    /// (read-only; a warning keeps exit code 0).
    ///
    /// Example: hybridboot debug --config-source file:///etc/hybridboot/config.yaml
    Debug(debug::DebugArgs),
    /// IAM Roles for Service Accounts on clusters outside EKS: keys.json and discovery document.
    #[command(subcommand)]
    Irsa(irsa::IrsaCommand),
    /// The aws-auth ConfigMap that maps the node role (and admin roles) to Kubernetes.
    #[command(subcommand)]
    AwsAuth(awsauth::AwsAuthCommand),
    /// The EKS access entry (type HYBRID_LINUX) for the node role.
    #[command(subcommand)]
    AccessEntry(awsauth::AccessEntryCommand),
    /// Check a NodeConfig (node.eks.aws/v1alpha1) before joining.
    #[command(subcommand)]
    Config(node::ConfigCommand),
    /// Print AWS credentials for an SDK's `credential_process` (IAM Roles Anywhere session signed
    /// by the node key; cached while more than 5 minutes remain).
    CredentialProcess(aws::CredentialProcessArgs),
    /// Keep one profile of the AWS shared credentials file fresh (Roles Anywhere).
    Update(aws::UpdateArgs),
    /// Serve Roles Anywhere credentials as IMDSv2 on 127.0.0.1.
    Serve(aws::ServeArgs),
    /// Inspect what a certificate presents to IAM Roles Anywhere.
    #[command(subcommand)]
    Credentials(aws::CredentialsCommand),
    /// Sign aws_signing_helper's fixed test string with the key (proves the key signs; same
    /// flags and output formats as aws_signing_helper).
    ///
    /// Example: hybridboot sign-string --private-key handle:0x81000001 --format text
    SignString(aws::SignStringArgs),
    /// Print a certificate file's data as aws_signing_helper does (JSON: keyType,
    /// certificateData, serialNumber, supportedAlgorithms).
    ///
    /// Example: hybridboot read-certificate-data --certificate /etc/iam/pki/server.pem
    ReadCertificateData(aws::ReadCertificateDataArgs),
    /// Print the version (aws_signing_helper's `version`; same as --version).
    Version,
    /// Install the Kubernetes node artifacts (like `nodeadm install`), each verified before it
    /// is placed.
    ///
    /// Example: hybridboot install 1.31 --credential-provider iam-ra --manifest https://mirror/manifest.yaml --manifest-public-key /etc/hybridboot/manifest.pub
    Install(node::InstallArgs),
    /// Leave the cluster's node behind (like `nodeadm uninstall`): stop and disable kubelet,
    /// hybridboot-update and a containerd hybridboot installed, then remove what install placed
    /// (unless changed since), the files init wrote and the kubelet's certificates and state
    /// (/var/lib/kubelet/pki: a later join to another cluster must not reuse them). Keeps the
    /// node key, its certificate and anything that may hold a mount.
    ///
    /// Example: hybridboot uninstall    (then `hybridboot init` joins afresh)
    Uninstall(node::UninstallArgs),
    /// For a mirror operator (like `nodeadm sync-artifacts`, into a directory): download the
    /// chosen Kubernetes releases' artifacts, each verified against its published checksum,
    /// write a manifest naming the mirror's URLs and sign it for `install
    /// --manifest-public-key`.
    ///
    /// Example: hybridboot sync-artifacts 1.31 --arch amd64,arm64 --dir /srv/eks-mirror --mirror-url https://mirror.example/eks --signing-key manifest-signing.key
    #[command(after_long_help = mirror::AFTER_HELP)]
    SyncArtifacts(mirror::SyncArtifactsArgs),
    /// Print an EKS ExecCredential (kubectl/kubelet exec credential plugin).
    ///
    /// Example: hybridboot token --cluster-name prod --region us-west-2
    Token(token::TokenArgs),
    /// Join the cluster like `nodeadm init`: config, credentials, cluster details, checks, files, units.
    ///
    /// Example: hybridboot init --config-source file:///etc/eks/nodeconfig.yaml
    Init(node::InitArgs),
    /// Write a user kubeconfig whose exec plugin is `hybridboot token` with IAM Roles Anywhere.
    Kubeconfig(token::KubeconfigArgs),
    /// Make sure containerd holds the sandbox image its config pins (init's last step): pulled
    /// from ECR with the node's credentials, every digest verified, imported with ctr.
    ///
    /// Example: hybridboot sandbox-image --config-source file:///etc/eks/nodeconfig.yaml
    SandboxImage(node::SandboxImageArgs),
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
            // The one place a failure becomes an exit code.
            let class = error::class_of(&err);
            log::error!("{}", error::cause_chain(&err));
            ExitCode::from(exit::code(class) as u8)
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Key(key::KeyCommand::Create(a)) => key::key_create(a),
        Command::Key(key::KeyCommand::Show(a)) => key::key_show(a),
        Command::Key(key::KeyCommand::Delete(a)) => key::key_delete(a),
        Command::SignString(a) => aws::run_sign_string(a),
        Command::ReadCertificateData(a) => aws::run_read_certificate_data(a),
        Command::Version => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Csr(a) => key::csr(a),
        Command::Factory(c) => factory::run_factory(c),
        Command::Enroll(a) => vault::enroll(a),
        Command::Renew(a) => vault::renew(a),
        Command::Firstboot(a) => firstboot::run_firstboot(a),
        Command::Status(a) => firstboot::run_status(a),
        Command::Debug(a) => debug::run(a),
        Command::Irsa(c) => irsa::run_irsa(c),
        Command::AwsAuth(c) => awsauth::run_aws_auth(c),
        Command::AccessEntry(c) => awsauth::run_access_entry(c),
        Command::Config(c) => node::run_config(c),
        Command::CredentialProcess(a) => aws::credential_process(a),
        Command::Update(a) => aws::run_update(a),
        Command::Serve(a) => aws::run_serve(a),
        Command::Credentials(c) => aws::run_credentials(c),
        Command::Install(a) => node::run_install(a),
        Command::Uninstall(a) => node::run_uninstall(a),
        Command::SyncArtifacts(a) => mirror::run(a),
        Command::Token(a) => token::run(a),
        Command::Init(a) => node::run_init(a),
        Command::Kubeconfig(a) => token::run_kubeconfig(a),
        Command::SandboxImage(a) => node::run_sandbox_image(a),
    }
}
