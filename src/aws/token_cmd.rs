//! `hybridboot token`: the EKS exec credential plugin. Finds AWS credentials the way an AWS SDK
//! does ([`resolve`]: environment, shared credentials file, the config file profile's static
//! keys or `credential_process`) and prints the ExecCredential that kubectl and kubelet read.
//!
//! With `--certificate ... --role-arn ...` (a user kubeconfig from `hybridboot kubeconfig`) the
//! credentials come from IAM Roles Anywhere through `hybridboot credential-process` with those
//! arguments instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;

use super::credentials::Credentials;
use super::sources::{self, join_command, SourceError};
use super::sts_token;

/// How long a `credential_process` may take (CreateSession with a TPM signature and retries).
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Roles Anywhere parameters, as `credential-process` takes them.
#[derive(Args, Debug, Clone, Default)]
pub struct RolesAnywhereArgs {
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
}

impl RolesAnywhereArgs {
    /// The `credential-process` arguments, in nodeadm's order, then the optional ones that are
    /// set; `None` when not given.
    pub fn process_args(&self) -> Option<Vec<String>> {
        let cert = self.certificate.as_ref()?;
        let mut args = vec![
            "--certificate".to_string(),
            cert.display().to_string(),
            "--private-key".into(),
            self.private_key.clone()?,
            "--trust-anchor-arn".into(),
            self.trust_anchor_arn.clone()?,
            "--profile-arn".into(),
            self.profile_arn.clone()?,
            "--role-arn".into(),
            self.role_arn.clone()?,
        ];
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        for (flag, value) in [
            ("--intermediates", path(&self.intermediates)),
            ("--endpoint", self.endpoint.clone()),
            ("--ca-bundle", path(&self.ca_bundle)),
        ] {
            if let Some(v) = value {
                args.push(flag.into());
                args.push(v);
            }
        }
        Some(args)
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
    pub roles_anywhere: RolesAnywhereArgs,
}

/// Where credentials were found (for the debug log, never with values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    Environment,
    /// A `[profile]` of the shared credentials file.
    CredentialsFile(PathBuf),
    /// Static keys in the config file profile.
    ConfigFile(PathBuf),
    /// The config profile's `credential_process`, spawned.
    Process,
    /// `hybridboot credential-process` arguments (config profile or `--certificate ...`).
    RolesAnywhere,
}

/// The file an SDK reads: `var` if set, else `$HOME/<rel>`.
fn sdk_file(env: &dyn Fn(&str) -> Option<String>, var: &str, rel: &str) -> Option<PathBuf> {
    env(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(rel)))
}

/// Reads a file that may be absent (`Ok(None)`); other errors name the file.
fn read_optional(path: &Path) -> Result<Option<String>, SourceError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SourceError::Environment(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Runs `hybridboot credential-process ARGS`. Today it runs as a child process of this
/// executable; the cache keeps repeated calls from costing a CreateSession each.
pub type RolesAnywhereFetch<'a> = &'a dyn Fn(&[String]) -> Result<Credentials, SourceError>;

/// Finds credentials like an AWS SDK: environment, shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`), then the config file
/// (`AWS_CONFIG_FILE`, `~/.aws/config`) profile (`AWS_PROFILE`, else `default`): static keys, or
/// `credential_process`. A `credential_process` that is `hybridboot credential-process` goes
/// through `roles_anywhere` instead of a generic spawn.
pub fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
    self_exe: Option<&Path>,
    roles_anywhere: RolesAnywhereFetch<'_>,
    spawn_timeout: Duration,
) -> Result<(Credentials, Origin), SourceError> {
    if let Some(c) = sources::from_environment(env)? {
        return Ok((c, Origin::Environment));
    }
    let profile = env("AWS_PROFILE")
        .or_else(|| env("AWS_DEFAULT_PROFILE"))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into());
    let cred_file = sdk_file(env, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    if let Some(path) = &cred_file {
        if let Some(text) = read_optional(path)? {
            if let Some(c) = sources::from_credentials_file(&text, &profile) {
                return Ok((c, Origin::CredentialsFile(path.clone())));
            }
        }
    }
    let config_file = sdk_file(env, "AWS_CONFIG_FILE", ".aws/config");
    if let Some(path) = &config_file {
        if let Some(text) = read_optional(path)? {
            if let Some((p, creds)) = sources::config_profile(&text, &profile) {
                if let Some(command) = p.credential_process {
                    if let Some(args) = sources::hybridboot_process_args(&command, self_exe) {
                        return Ok((roles_anywhere(&args)?, Origin::RolesAnywhere));
                    }
                    let c = sources::run_credential_process(&profile, &command, spawn_timeout)?;
                    return Ok((c, Origin::Process));
                }
                if let Some(c) = creds {
                    return Ok((c, Origin::ConfigFile(path.clone())));
                }
            }
        }
    }
    let show = |p: Option<PathBuf>| p.map_or("~/.aws/...".into(), |p| p.display().to_string());
    Err(SourceError::NotFound {
        profile,
        credentials_file: show(cred_file),
        config_file: show(config_file),
    })
}

/// `credential-process` through this executable: spawned, with the same timeout as any
/// `credential_process`.
pub fn spawn_self_credential_process(
    self_exe: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<Credentials, SourceError> {
    let mut argv = vec![self_exe.display().to_string(), "credential-process".into()];
    argv.extend(args.iter().cloned());
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    sources::run_credential_process("hybridboot", &join_command(&refs), timeout)
}

/// Credentials for `token`: Roles Anywhere with `--certificate ...`, else the SDK chain.
///
/// When the credentials come from hybridboot's own `credential-process` (the flags here, or a
/// `credential_process = hybridboot credential-process ...` line in the AWS config), they are
/// fetched in-process through the session cache: a warm token costs no process spawn and no
/// CreateSession.
pub fn credentials_for(
    ra: &RolesAnywhereArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(Credentials, Origin)> {
    if let Some(args) = ra.process_args() {
        return Ok((
            crate::aws::commands::credentials_from_process_args(&args)?,
            Origin::RolesAnywhere,
        ));
    }
    let self_exe = std::env::current_exe().ok();
    // The in-process error keeps its class (retry later vs operator) for the exit code.
    let failure: std::cell::RefCell<Option<anyhow::Error>> = Default::default();
    let fetch = |args: &[String]| -> Result<Credentials, SourceError> {
        crate::aws::commands::credentials_from_process_args(args).map_err(|e| {
            let detail = format!("{e:#}");
            *failure.borrow_mut() = Some(e);
            SourceError::Process {
                profile: "hybridboot".into(),
                command: "hybridboot credential-process".into(),
                detail,
            }
        })
    };
    match resolve(env, self_exe.as_deref(), &fetch, PROCESS_TIMEOUT) {
        Ok(found) => Ok(found),
        Err(e) => Err(failure.borrow_mut().take().unwrap_or_else(|| e.into())),
    }
}

/// Runs `hybridboot token`: prints one ExecCredential line on stdout.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    crate::aws::eks::validate_cluster_name(&args.cluster_name)
        .map_err(|e| crate::exit::operator(e.to_string()))?;
    let api_version = sts_token::exec_info_api_version(env("KUBERNETES_EXEC_INFO").as_deref())
        .map_err(|e| crate::exit::operator(e.to_string()))?;
    let (creds, origin) =
        credentials_for(&args.roles_anywhere, &env).context("getting AWS credentials")?;
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
    println!("{}", out.expose());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_map(m: HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> {
        move |k| m.get(k).cloned()
    }

    fn no_ra(_: &[String]) -> Result<Credentials, SourceError> {
        panic!("Roles Anywhere must not be used here")
    }

    #[test]
    fn chain_order_and_profiles() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("credentials");
        let config = d.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s1\n[other]\naws_access_key_id=AKIDOTHER\naws_secret_access_key=s2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[profile cfg]\naws_access_key_id = AKIDCFG\naws_secret_access_key = s3\n",
        )
        .unwrap();
        let base = |extra: &[(&'static str, String)]| {
            let mut m: HashMap<&'static str, String> = HashMap::new();
            m.insert("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string());
            m.insert("AWS_CONFIG_FILE", config.display().to_string());
            for (k, v) in extra {
                m.insert(k, v.clone());
            }
            env_map(m)
        };
        let t = Duration::from_secs(5);
        let (c, o) = resolve(&base(&[]), None, &no_ra, t).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("AKIDFILE", Origin::CredentialsFile(creds.clone()))
        );
        let (c, _) = resolve(&base(&[("AWS_PROFILE", "other".into())]), None, &no_ra, t).unwrap();
        assert_eq!(c.access_key_id, "AKIDOTHER");
        let (c, o) = resolve(&base(&[("AWS_PROFILE", "cfg".into())]), None, &no_ra, t).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("AKIDCFG", Origin::ConfigFile(config.clone()))
        );
        let (c, o) = resolve(
            &base(&[
                ("AWS_ACCESS_KEY_ID", "AKIDENV".into()),
                ("AWS_SECRET_ACCESS_KEY", "s4".into()),
            ]),
            None,
            &no_ra,
            t,
        )
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("AKIDENV", Origin::Environment)
        );
        let e = resolve(&base(&[("AWS_PROFILE", "nope".into())]), None, &no_ra, t).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"nope\"") && msg.contains(&config.display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn hybridboot_process_is_routed_in_process_and_others_are_spawned() {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("config");
        std::fs::write(
            &config,
            "[default]\ncredential_process = /usr/bin/hybridboot credential-process --certificate /c.pem --private-key 'pkcs11:token=a;object=b'\n",
        )
        .unwrap();
        let mut m: HashMap<&'static str, String> = HashMap::new();
        m.insert("AWS_CONFIG_FILE", config.display().to_string());
        m.insert("HOME", d.path().display().to_string());
        let seen = std::cell::RefCell::new(Vec::new());
        let ra = |args: &[String]| -> Result<Credentials, SourceError> {
            seen.borrow_mut().push(args.to_vec());
            Ok(Credentials {
                access_key_id: "ASIARA".into(),
                secret_access_key: crate::secret::Secret::new("x"),
                session_token: Some(crate::secret::Secret::new("t")),
                expiration: None,
            })
        };
        let (c, o) = resolve(&env_map(m.clone()), None, &ra, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("ASIARA", Origin::RolesAnywhere)
        );
        assert_eq!(
            seen.borrow()[0],
            vec![
                "--certificate",
                "/c.pem",
                "--private-key",
                "pkcs11:token=a;object=b"
            ]
        );

        // Any other program is spawned and its output parsed.
        let script = d.path().join("proc.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"Version\":1,\"AccessKeyId\":\"AKIDPROC\",\"SecretAccessKey\":\"s\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            &config,
            format!("[default]\ncredential_process = {}\n", script.display()),
        )
        .unwrap();
        let (c, o) = resolve(&env_map(m), None, &no_ra, Duration::from_secs(5)).unwrap();
        assert_eq!((c.access_key_id.as_str(), o), ("AKIDPROC", Origin::Process));
    }

    #[test]
    fn roles_anywhere_args_in_order() {
        let ra = RolesAnywhereArgs {
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
        let more = RolesAnywhereArgs {
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
        assert!(RolesAnywhereArgs::default().process_args().is_none());
    }
}
