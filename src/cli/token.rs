//! `token` (the EKS exec credential plugin) and `kubeconfig` (a user kubeconfig whose plugin is
//! `hybridboot token` with IAM Roles Anywhere).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;

use super::aws::CredentialProcessArgs;
use crate::aws::credentials::Credentials;
use crate::aws::session::{self, CacheSettings, RolesAnywhereSettings};
use crate::aws::sources::{self, Origin, SourceError, PROCESS_TIMEOUT};
use crate::aws::{rolesanywhere, sts_token};
use crate::error::{self, Class, Classify, ResultExt, WithClass};
use crate::fsutil::{self, WriteOptions};
use crate::key::KeySettings;
use crate::node::init::{describe_cluster_by_name, EksTarget};
use crate::node::kubeconfig;

/// Roles Anywhere parameters of `token` and `kubeconfig`: all or none.
#[derive(Args, Debug, Clone, Default)]
pub struct TokenRolesAnywhereArgs {
    /// The node or user certificate (PEM) presented to IAM Roles Anywhere.
    #[arg(long, value_name = "FILE", requires_all = ["private_key", "trust_anchor_arn", "profile_arn", "role_arn"])]
    pub certificate: Option<PathBuf>,
    /// Key reference of the certificate's key (handle:, pkcs11:, TSS2 PEM, file:).
    #[arg(long, value_name = "REF", requires = "certificate")]
    pub private_key: Option<String>,
    /// IAM Roles Anywhere trust anchor ARN.
    #[arg(long, value_name = "ARN", requires = "certificate")]
    pub trust_anchor_arn: Option<String>,
    /// IAM Roles Anywhere profile ARN.
    #[arg(long, value_name = "ARN", requires = "certificate")]
    pub profile_arn: Option<String>,
    /// IAM role to assume through Roles Anywhere.
    #[arg(long, value_name = "ARN", requires = "certificate")]
    pub role_arn: Option<String>,
    /// PEM bundle of intermediate CA certificates, issuer of the leaf first (when the trust
    /// anchor is a root above the issuing CA).
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub intermediates: Option<PathBuf>,
    /// Roles Anywhere endpoint URL (default: env AWS_ENDPOINT_URL_ROLESANYWHERE, then
    /// AWS_ENDPOINT_URL, then the trust anchor region's), e.g. a VPC endpoint.
    #[arg(long, value_name = "URL", requires = "certificate")]
    pub endpoint: Option<String>,
    /// Trust only the CAs in this PEM bundle for the Roles Anywhere endpoint's TLS certificate.
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub ca_bundle: Option<PathBuf>,
    /// PKCS#11 module for a pkcs11: key whose URI names none.
    #[arg(long, value_name = "FILE", env = "HYBRIDBOOT_PKCS11_LIB")]
    pub pkcs11_lib: Option<PathBuf>,
    /// TPM TCTI for a TPM key (default: env HYBRIDBOOT_TCTI, then TPM2TOOLS_TCTI, then
    /// device:/dev/tpmrm0).
    #[arg(long, value_name = "TCTI", env = "HYBRIDBOOT_TCTI")]
    pub tcti: Option<String>,
    /// For a PKCS#11 key that needs the PIN for every signature (CKA_ALWAYS_AUTHENTICATE, PIV
    /// slot 9c): log in again with the user PIN before each signature.
    #[arg(long, requires = "certificate")]
    pub reuse_pin: bool,
}

impl TokenRolesAnywhereArgs {
    /// The session these flags say; `None` when not given (the SDK chain then applies).
    pub fn settings(&self) -> anyhow::Result<Option<RolesAnywhereSettings>> {
        let Some(certificate) = &self.certificate else {
            return Ok(None);
        };
        let (Some(key), Some(ta), Some(profile), Some(role)) = (
            &self.private_key,
            &self.trust_anchor_arn,
            &self.profile_arn,
            &self.role_arn,
        ) else {
            return Err(error::operator(
                "--certificate, --private-key, --trust-anchor-arn, --profile-arn and --role-arn are required",
            ));
        };
        Ok(Some(RolesAnywhereSettings {
            intermediates: self.intermediates.clone(),
            endpoint: self.endpoint.clone(),
            ca_bundle: self.ca_bundle.clone(),
            ..RolesAnywhereSettings::new(
                certificate.clone(),
                KeySettings {
                    pkcs11_lib: self
                        .pkcs11_lib
                        .clone()
                        .filter(|p| !p.as_os_str().is_empty()),
                    tcti: self.tcti.clone().filter(|t| !t.is_empty()),
                    reuse_pin: self.reuse_pin,
                    ..KeySettings::new(key.clone())
                },
                ta.clone(),
                profile.clone(),
                role.clone(),
            )
        }))
    }
}

/// Arguments of `hybridboot token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// EKS cluster name (signed into the token as `x-k8s-aws-id`).
    #[arg(long, value_name = "NAME")]
    pub cluster_name: String,
    /// Region of the cluster (and of its STS endpoint).
    #[arg(long, value_name = "REGION")]
    pub region: String,
    /// Use IAM Roles Anywhere with these parameters instead of the SDK credential chain.
    #[command(flatten)]
    pub roles_anywhere: TokenRolesAnywhereArgs,
}

/// Credentials for the arguments of a `credential_process = hybridboot credential-process ...`
/// line found in the AWS config (everything after `credential-process`): the line is this
/// program's own command line, so it is read with the same parser as `credential-process`, and
/// served in-process through the same cache.
fn credentials_from_process_args(args: &[String]) -> anyhow::Result<Credentials> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    #[derive(clap::Parser)]
    #[command(name = "credential-process")]
    struct Wrapper {
        #[command(flatten)]
        inner: CredentialProcessArgs,
    }
    let operator =
        |e: clap::Error| error::operator(format!("credential_process arguments: {}", e.kind()));
    let matches = Wrapper::command()
        .try_get_matches_from(
            std::iter::once("credential-process".to_string()).chain(args.iter().cloned()),
        )
        .map_err(operator)?;
    let parsed = Wrapper::from_arg_matches(&matches).map_err(operator)?;
    session::credentials_with(
        &parsed.inner.ra.settings(),
        &parsed.inner.cache.settings(),
        &rolesanywhere::interactive_policy(),
    )
}

/// Credentials for `token`: Roles Anywhere with `--certificate ...`, else the SDK chain.
///
/// When the credentials come from hybridboot's own `credential-process` (the flags here, or a
/// `credential_process = hybridboot credential-process ...` line in the AWS config), they are
/// fetched in-process through the session cache: a warm token costs no process spawn and no
/// CreateSession.
pub fn credentials_for(
    ra: Option<&RolesAnywhereSettings>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(Credentials, Origin)> {
    if let Some(settings) = ra {
        let settings = settings.clone().with_env_defaults(env);
        return Ok((
            session::credentials(&settings, &CacheSettings::for_root(Path::new("/"), env))?,
            Origin::RolesAnywhere,
        ));
    }
    let self_exe = std::env::current_exe().ok();
    // The in-process error keeps its class (retry later vs operator) for the exit code.
    let failure: std::cell::RefCell<Option<anyhow::Error>> = Default::default();
    let fetch = |args: &[String]| -> Result<Credentials, SourceError> {
        credentials_from_process_args(args).map_err(|e| {
            let detail = format!("{e:#}");
            *failure.borrow_mut() = Some(e);
            SourceError::Process {
                profile: "hybridboot".into(),
                command: "hybridboot credential-process".into(),
                detail,
            }
        })
    };
    match sources::resolve(env, self_exe.as_deref(), &fetch, PROCESS_TIMEOUT) {
        Ok(found) => Ok(found),
        Err(e) => Err(failure.borrow_mut().take().unwrap_or_else(|| e.classed())),
    }
}

/// Runs `hybridboot token`: prints one ExecCredential line on stdout.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    crate::aws::eks::validate_cluster_name(&args.cluster_name).classed()?;
    let api_version =
        sts_token::exec_info_api_version(env("KUBERNETES_EXEC_INFO").as_deref()).classed()?;
    let (creds, origin) = credentials_for(args.roles_anywhere.settings()?.as_ref(), &env)
        .context("getting AWS credentials")?;
    log::debug!("credentials from {origin:?}: {creds:?}");
    let now = SystemTime::now();
    let token = sts_token::eks_token(
        &creds,
        &args.region,
        &sts_token::sts_host(&args.region),
        &args.cluster_name,
        now,
    );
    let out = sts_token::render_exec_credential(&token, now, &api_version);
    super::print(&format!("{}\n", out.expose()))
}

/// Arguments of `hybridboot kubeconfig`.
#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    /// EKS cluster name.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: String,
    /// Region of the cluster.
    #[arg(long, value_name = "REGION")]
    pub region: String,
    /// IAM Roles Anywhere parameters the token plugin uses (all required).
    #[command(flatten)]
    pub roles_anywhere: TokenRolesAnywhereArgs,
    /// API server URL (default: from DescribeCluster).
    #[arg(long, value_name = "URL", requires = "certificate_authority")]
    pub server: Option<String>,
    /// The cluster CA (PEM) (default: from DescribeCluster).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub certificate_authority: Option<PathBuf>,
    /// Write here (atomically, mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The hybridboot the plugin runs (default: this executable).
    #[arg(long, value_name = "PATH")]
    pub hybridboot_path: Option<PathBuf>,
}

/// Runs `hybridboot kubeconfig`.
pub fn run_kubeconfig(args: KubeconfigArgs) -> anyhow::Result<()> {
    crate::aws::eks::validate_cluster_name(&args.cluster_name).classed()?;
    let Some(mut ra) = args.roles_anywhere.settings()? else {
        return Err(error::operator(
            "--certificate, --private-key, --trust-anchor-arn, --profile-arn and --role-arn are required",
        ));
    };
    // The plugin runs from kubectl's working directory: make the file paths absolute.
    let absolute = |flag: &str, p: &Path| {
        std::path::absolute(p).with_context(|| format!("{flag} {}", p.display()))
    };
    ra.certificate = absolute("--certificate", &ra.certificate)?;
    // Settings from this shell's environment (HYBRIDBOOT_PKCS11_LIB, HYBRIDBOOT_TCTI) are
    // written into the plugin line through their flags: kubectl runs the plugin without them.
    for (flag, path) in [
        ("--intermediates", &mut ra.intermediates),
        ("--ca-bundle", &mut ra.ca_bundle),
        ("--pkcs11-lib", &mut ra.key.pkcs11_lib),
    ] {
        if let Some(p) = path {
            *p = absolute(flag, p)?;
        }
    }
    let ra_args = crate::node::render::aws::flag_words(&ra.process_args());
    // The kubeconfig stores the arguments in clear text (and kubectl shows them): a PIN in the
    // key reference would be written into it.
    if let Ok(crate::key::uri::KeyRef::Pkcs11(u)) =
        crate::key::uri::KeyRef::parse(&ra.key.reference)
    {
        if matches!(u.pin, Some(crate::key::uri::PinSource::Value(_))) {
            return Err(error::operator(
                "--private-key carries the PIN (pin-value=), which the kubeconfig would store in clear text: use ?pin-source=file:/path or the HYBRIDBOOT_PKCS11_PIN environment variable",
            ));
        }
    }
    let (server, ca) = match (&args.server, &args.certificate_authority) {
        (Some(s), Some(f)) => {
            let ca = crate::fsutil::read_capped(f, crate::fsutil::MAX_TEXT_FILE)
                .with_context(|| format!("--certificate-authority {}", f.display()))
                .with_class(Class::Operator)?;
            if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
                return Err(error::operator(format!(
                    "--certificate-authority {}: no PEM certificate in it",
                    f.display()
                )));
            }
            (s.clone(), ca)
        }
        _ => {
            let env = |k: &str| std::env::var(k).ok();
            let (creds, _) = credentials_for(Some(&ra), &env)
                .context("getting AWS credentials for DescribeCluster")?;
            let d = describe_cluster_by_name(
                &args.cluster_name,
                &args.region,
                &creds,
                &EksTarget::default(),
                &env,
            )?;
            (d.endpoint, d.certificate_authority_pem)
        }
    };
    let hybridboot = match &args.hybridboot_path {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this executable")?,
    };
    let text = kubeconfig::render(
        &args.cluster_name,
        &args.region,
        &server,
        &ca,
        &hybridboot.display().to_string(),
        &ra_args,
    );
    match &args.out {
        Some(path) => {
            // Like `aws eks update-kubeconfig`: other clusters in the file are kept.
            let merged = match std::fs::read_to_string(path) {
                Ok(existing) => kubeconfig::merge(&existing, &text).map_err(|e| {
                    error::operator(format!(
                        "--out {}: cannot merge into it: {e} (nothing written; choose another file)",
                        path.display()
                    ))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => text,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading {}", path.display()))
                        .with_class(Class::Operator)
                }
            };
            fsutil::atomic_write(path, merged.as_bytes(), &WriteOptions::private())
                .with_context(|| format!("writing {}", path.display()))?;
            log::info!(
                "kubeconfig for {} merged into {} (current context {})",
                args.cluster_name,
                path.display(),
                args.cluster_name
            );
        }
        None => super::print(&text)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_anywhere_args_in_order() {
        let ra = TokenRolesAnywhereArgs {
            certificate: Some("/c.pem".into()),
            private_key: Some("handle:0x81000001".into()),
            trust_anchor_arn: Some("ta".into()),
            profile_arn: Some("p".into()),
            role_arn: Some("r".into()),
            ..Default::default()
        };
        let base = vec![
            "--certificate",
            "/c.pem",
            "--private-key",
            "handle:0x81000001",
            "--trust-anchor-arn",
            "ta",
            "--profile-arn",
            "p",
            "--role-arn",
            "r",
        ];
        assert_eq!(ra.process_args().unwrap(), base);
        let more = TokenRolesAnywhereArgs {
            intermediates: Some("/i.pem".into()),
            endpoint: Some("https://ra.test".into()),
            ca_bundle: Some("/ca.pem".into()),
            ..ra
        };
        let mut want = base.clone();
        want.extend([
            "--intermediates",
            "/i.pem",
            "--endpoint",
            "https://ra.test",
            "--ca-bundle",
            "/ca.pem",
        ]);
        assert_eq!(more.process_args().unwrap(), want);
        assert!(TokenRolesAnywhereArgs::default()
            .settings()
            .unwrap()
            .is_none());
    }

    /// The flags and values of [`TokenRolesAnywhereArgs`] as the kubeconfig's plugin line gets them.
    impl TokenRolesAnywhereArgs {
        fn process_args(&self) -> Option<Vec<String>> {
            let settings = self.settings().ok()??;
            Some(
                settings
                    .process_args()
                    .into_iter()
                    .flat_map(|(flag, value)| [flag.to_string(), value])
                    .collect(),
            )
        }
    }
}
