//! The Roles Anywhere commands: `credential-process`, `update`, `serve` and `credentials
//! inspect`, with aws_signing_helper's flag names so that existing configuration (and nodeadm's
//! generated `credential_process` lines) carries over. Each turns its flags into
//! [`RolesAnywhereSettings`] and calls the domain.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::KeyAccessArgs;
use crate::aws::credentials::render_credential_process;
use crate::aws::session::{
    self, CacheSettings, RolesAnywhereSettings, SessionProxy, DEFAULT_SESSION_DURATION,
};
use crate::aws::{helper, inspect, serve, update};

/// The flags of every command that makes a Roles Anywhere session (aws_signing_helper's names).
#[derive(Args, Debug, Clone)]
pub struct RolesAnywhereArgs {
    /// The node certificate (PEM or DER); its first certificate is the leaf. Or, as
    /// aws_signing_helper, a PKCS#11 URI of a certificate object on a token
    /// (`pkcs11:token=..;object=..`: label and/or id name exactly one certificate).
    #[arg(long, value_name = "FILE|URI")]
    pub certificate: PathBuf,
    /// The certificate's key: handle:0x81.., pkcs11:token=..;object=.., a TSS2 PEM file, or
    /// file:/path (see `hybridboot --help`).
    #[arg(long, value_name = "REF", visible_alias = "key")]
    pub private_key: String,
    /// PEM bundle of intermediate CA certificates, issuer of the leaf first (sent as
    /// X-Amz-X509-Chain when the trust anchor is a root above the issuing CA).
    #[arg(long, value_name = "FILE")]
    pub intermediates: Option<PathBuf>,
    /// Trust anchor ARN.
    #[arg(long, value_name = "ARN")]
    pub trust_anchor_arn: String,
    /// Profile ARN.
    #[arg(long, value_name = "ARN")]
    pub profile_arn: String,
    /// Role ARN to assume.
    #[arg(long, value_name = "ARN")]
    pub role_arn: String,
    /// Signing region [default: the trust anchor ARN's].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Endpoint URL (default: env AWS_ENDPOINT_URL_ROLESANYWHERE, then AWS_ENDPOINT_URL, then
    /// `https://rolesanywhere.<region>.amazonaws.com`).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Session duration in seconds (900-43200).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SESSION_DURATION)]
    pub session_duration: u32,
    /// Role session name (usually the node name; often required to equal the certificate CN).
    #[arg(long, value_name = "NAME")]
    pub role_session_name: Option<String>,
    /// Where the key is.
    #[command(flatten)]
    pub key_access: KeyAccessArgs,
    /// Use HTTPS_PROXY / NO_PROXY from the environment (off by default, like the reference).
    #[arg(long, conflicts_with_all = ["https_proxy", "http_proxy"])]
    pub with_proxy: bool,
    /// Proxy for https endpoints (`http://host:port`), whatever the environment says: init
    /// writes it into the node's credential_process line so every later refresh goes through
    /// the site's proxy.
    #[arg(long, value_name = "URL")]
    pub https_proxy: Option<String>,
    /// Proxy for plain-http endpoints (`http://host:port`).
    #[arg(long, value_name = "URL")]
    pub http_proxy: Option<String>,
    /// Hosts, domain suffixes, IP addresses and CIDR blocks reached without the proxy (comma
    /// separated; with --https-proxy or --http-proxy).
    #[arg(long, value_name = "LIST")]
    pub no_proxy: Option<String>,
    /// Trust only the CAs in this PEM bundle for the endpoint's TLS certificate (the AWS SDKs'
    /// `AWS_CA_BUNDLE`).
    #[arg(long, value_name = "FILE", env = "AWS_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

impl RolesAnywhereArgs {
    /// The session these flags say.
    pub fn settings(&self) -> RolesAnywhereSettings {
        RolesAnywhereSettings {
            certificate: self.certificate.clone(),
            key: self.key_access.settings(&self.private_key),
            intermediates: self.intermediates.clone(),
            trust_anchor_arn: self.trust_anchor_arn.clone(),
            profile_arn: self.profile_arn.clone(),
            role_arn: self.role_arn.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            session_duration: self.session_duration,
            role_session_name: self.role_session_name.clone(),
            proxy: self.proxy(),
            ca_bundle: self.ca_bundle.clone(),
        }
    }
}

impl RolesAnywhereArgs {
    fn proxy(&self) -> SessionProxy {
        if self.https_proxy.is_some() || self.http_proxy.is_some() || self.no_proxy.is_some() {
            SessionProxy::Explicit {
                https_proxy: self.https_proxy.clone(),
                http_proxy: self.http_proxy.clone(),
                no_proxy: self.no_proxy.clone(),
            }
        } else if self.with_proxy {
            SessionProxy::Environment
        } else {
            SessionProxy::Direct
        }
    }
}

/// The cache directory: `--cache-dir` / `HYBRIDBOOT_CACHE_DIR`, else `$RUNTIME_DIRECTORY`, else
/// `$XDG_RUNTIME_DIR/hybridboot`, else `/run/hybridboot`.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Do not read or write the session cache (always make a new session).
    #[arg(long)]
    pub no_cache: bool,
    /// Session cache directory [default: $RUNTIME_DIRECTORY, then $XDG_RUNTIME_DIR/hybridboot,
    /// then /run/hybridboot].
    #[arg(long, value_name = "DIR", env = "HYBRIDBOOT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `hybridboot credential-process`.
#[derive(Args, Debug)]
pub struct CredentialProcessArgs {
    /// The session.
    #[command(flatten)]
    pub ra: RolesAnywhereArgs,
    /// The session cache.
    #[command(flatten)]
    pub cache: CacheArgs,
    /// How long to keep retrying a failing or throttling endpoint (e.g. 30s, 5m). Errors stop
    /// after 4 attempts whatever this says; a rate limit is waited out until this deadline
    /// (a fleet of N nodes behind R sessions/s needs about N/R seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::time::parse_duration)]
    pub retry_deadline: std::time::Duration,
}

impl CacheArgs {
    /// The cache these flags say.
    pub fn settings(&self) -> CacheSettings {
        CacheSettings {
            no_cache: self.no_cache,
            dir: self.cache_dir.clone(),
        }
    }
}

/// Prints `{"Version":1,...}` for an AWS SDK's `credential_process`.
pub fn credential_process(args: CredentialProcessArgs) -> anyhow::Result<()> {
    let policy = crate::aws::rolesanywhere::interactive_policy().with_deadline(args.retry_deadline);
    let creds = session::credentials_with(&args.ra.settings(), &args.cache.settings(), &policy)?;
    let out = render_credential_process(&creds);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.expose().as_bytes())
        .and_then(|_| stdout.write_all(b"\n"))
        .and_then(|_| stdout.flush())
        .context("writing credentials to stdout")?;
    Ok(())
}

/// `hybridboot update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The session.
    #[command(flatten)]
    pub ra: RolesAnywhereArgs,
    /// Profile of the shared credentials file to keep fresh.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub profile: String,
    /// Shared credentials file [default: env AWS_SHARED_CREDENTIALS_FILE, then ~/.aws/credentials].
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Write once and exit (non-zero when the session cannot be made).
    #[arg(long)]
    pub once: bool,
}

/// Runs `update`.
pub fn run_update(args: UpdateArgs) -> anyhow::Result<()> {
    update::update(
        &args.ra.settings(),
        &args.profile,
        args.credentials_file.as_deref(),
        args.once,
    )
}

/// `hybridboot serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The session.
    #[command(flatten)]
    pub ra: RolesAnywhereArgs,
    /// Port on 127.0.0.1 (SDKs: `AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:<port>/`).
    #[arg(long, default_value_t = 9911)]
    pub port: u16,
}

/// Runs `serve`.
pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::process::exit_zero_on_termination("serve").context("setting up SIGTERM handling")?;
    serve::serve(&args.ra.settings(), args.port)
}

/// `hybridboot credentials ...`.
#[derive(Subcommand, Debug)]
pub enum CredentialsCommand {
    /// Show what a certificate (and chain) presents to IAM Roles Anywhere: key type, serial
    /// (decimal, as in Credential=, and hex), subject, validity, chain links.
    Inspect(InspectArgs),
}

/// `hybridboot credentials inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The node certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
    /// PEM bundle of intermediate CA certificates.
    #[arg(long, value_name = "FILE")]
    pub intermediates: Option<PathBuf>,
}

/// Runs a `credentials` subcommand.
pub fn run_credentials(cmd: CredentialsCommand) -> anyhow::Result<()> {
    match cmd {
        CredentialsCommand::Inspect(a) => super::print(&inspect::inspect(
            &a.certificate,
            a.intermediates.as_deref(),
        )?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        CredentialProcess(CredentialProcessArgs),
        Update(UpdateArgs),
        Serve(ServeArgs),
    }

    fn parse(line: &str) -> Sub {
        let argv = crate::aws::sources::split_command(line).unwrap();
        let m = Cli::command().try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&m).unwrap().cmd
    }

    /// The lines nodeadm (and our NodeConfig renderer) write must parse unchanged.
    #[test]
    fn accepts_nodeadm_style_lines() {
        let flags = "--certificate /etc/iam/pki/server.pem --private-key /etc/iam/pki/server.key \
            --trust-anchor-arn arn:aws:acm-pca:us-west-2:123456789010:certificate-authority/fc32b514 \
            --profile-arn arn:aws:iam::123456789010:instance-profile/mockHybridNodeRole \
            --role-arn arn:aws:iam::123456789010:role/mockHybridNodeRole \
            --role-session-name mock-hybrid-node";
        match parse(&format!("hybridboot credential-process {flags}")) {
            Sub::CredentialProcess(a) => {
                assert_eq!(a.ra.private_key, "/etc/iam/pki/server.key");
                assert_eq!(a.ra.role_session_name.as_deref(), Some("mock-hybrid-node"));
                assert_eq!(a.ra.session_duration, 3600);
                assert!(!a.cache.no_cache && !a.ra.with_proxy);
                assert_eq!(a.ra.settings().proxy, SessionProxy::Direct);
            }
            _ => unreachable!(),
        }
        match parse(&format!("hybridboot update {flags} --region us-west-2")) {
            Sub::Update(a) => {
                assert_eq!(a.ra.region.as_deref(), Some("us-west-2"));
                assert_eq!(a.profile, "default");
                assert!(!a.once);
            }
            _ => unreachable!(),
        }
        match parse(&format!("hybridboot serve {flags}")) {
            Sub::Serve(a) => assert_eq!(a.port, 9911),
            _ => unreachable!(),
        }
        // aws_signing_helper's other flags.
        match parse(&format!(
            "hybridboot credential-process {flags} --intermediates /c.pem --region eu-west-1 \
             --endpoint https://x.test --session-duration 900 --pkcs11-lib /l.so --with-proxy \
             --ca-bundle /ca.pem --tcti swtpm: --no-cache"
        )) {
            Sub::CredentialProcess(a) => {
                assert_eq!(a.ra.session_duration, 900);
                assert!(a.ra.with_proxy && a.cache.no_cache);
                assert_eq!(
                    a.ra.key_access.pkcs11_lib.as_deref(),
                    Some(std::path::Path::new("/l.so"))
                );
            }
            _ => unreachable!(),
        }
    }
}

/// `hybridboot sign-string` (aws_signing_helper's): proves the key signs.
#[derive(Args, Debug)]
pub struct SignStringArgs {
    /// The key: handle:0x81.., pkcs11:token=..;object=.., a TSS2 PEM file, or file:/path.
    #[arg(long, value_name = "REF", visible_alias = "key")]
    pub private_key: String,
    /// Accepted for aws_signing_helper command lines (it may name the key's certificate on the
    /// token); the key alone is signed with.
    #[arg(long, value_name = "URI")]
    pub certificate: Option<String>,
    /// Where the key is.
    #[command(flatten)]
    pub key_access: KeyAccessArgs,
    /// Output: json (a JSON string of the hex signature), text (hex) or bin (raw bytes).
    #[arg(long, default_value = "json", value_parser = ["json", "text", "bin"])]
    pub format: String,
    /// Digest: SHA256 (hybridboot's keys sign SHA-256 digests; SHA384 and SHA512 are refused).
    #[arg(long, default_value = "SHA256", value_parser = ["SHA256", "SHA384", "SHA512"])]
    pub digest: String,
}

/// Runs `sign-string`: signs aws_signing_helper's fixed test string.
pub fn run_sign_string(args: SignStringArgs) -> anyhow::Result<()> {
    if args.digest != "SHA256" {
        return Err(crate::error::operator(format!(
            "--digest {}: hybridboot signs SHA-256 digests only (what IAM Roles Anywhere uses); pass --digest SHA256",
            args.digest
        )));
    }
    let format = match args.format.as_str() {
        "text" => helper::SignFormat::Text,
        "bin" => helper::SignFormat::Bin,
        _ => helper::SignFormat::Json,
    };
    let key = args
        .key_access
        .settings(&args.private_key)
        .open(crate::key::OpenMode::Existing)?;
    let out = helper::sign_string(key.as_ref(), format)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|_| stdout.flush())
        .context("writing the signature to stdout")?;
    Ok(())
}

/// `hybridboot read-certificate-data` (aws_signing_helper's).
#[derive(Args, Debug)]
pub struct ReadCertificateDataArgs {
    /// The certificate file (PEM or DER); its first certificate is read.
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
}

/// Runs `read-certificate-data`: the reference's JSON (keyType, certificateData,
/// serialNumber, supportedAlgorithms), no trailing newline.
pub fn run_read_certificate_data(args: ReadCertificateDataArgs) -> anyhow::Result<()> {
    let data = helper::read_certificate_data(&args.certificate)?;
    super::print(&serde_json::to_string(&data).expect("serialisable"))
}
