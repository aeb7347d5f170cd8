//! `enroll` and `renew`: the Vault flags, turned into [`vault::Settings`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::key::SubjectArgs;
use super::KeyArgs;
use anyhow::Context;

use crate::error::{self, ResultExt};
use crate::firstboot::{self, ConfigSource};
use crate::vault::{self, parse_duration, parse_fraction, SecretAuth};
use crate::{http, x509};

/// Flags shared by `enroll` and `renew`.
#[derive(Args, Debug, Clone)]
pub struct VaultArgs {
    /// Vault address, e.g. https://vault.example.com:8200.
    #[arg(long, value_name = "URL", env = "VAULT_ADDR")]
    pub vault_addr: String,
    /// PEM bundle of the CA(s) that issued Vault's TLS certificate (replaces the built-in roots).
    #[arg(long = "vault-ca", value_name = "FILE", env = "VAULT_CACERT")]
    pub vault_ca: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace (X-Vault-Namespace).
    #[arg(long, value_name = "NS", env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// Ask Vault's standby nodes to redirect (307) to the active node instead of forwarding
    /// our requests to it: the active node's api_addr must then be reachable from here. The
    /// default, forwarding, suits one load-balanced address.
    #[arg(long)]
    pub vault_no_request_forwarding: bool,
    /// Mount path of the PKI secrets engine.
    #[arg(long, value_name = "PATH", default_value = vault::DEFAULT_PKI_MOUNT)]
    pub pki_mount: String,
    /// PKI role that signs the node certificate.
    #[arg(long, value_name = "ROLE")]
    pub pki_role: String,
    /// The node key.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The subject.
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Requested lifetime (e.g. 72h, 30m, 3600s); a certificate shorter than asked for is
    /// refused (the role's max_ttl is lower). Default: the role's ttl.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Certificate file to write: leaf first, then the CA chain (mode 0644).
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
    /// Also write the issuing CA and its chain to this file.
    #[arg(long, value_name = "FILE")]
    pub ca_certificate: Option<PathBuf>,
    /// Token auth: file holding a Vault token [default: env VAULT_TOKEN].
    #[arg(long, value_name = "FILE", conflicts_with = "approle_role_id_file")]
    pub vault_token_file: Option<PathBuf>,
    /// AppRole auth: file holding the role id.
    #[arg(long, value_name = "FILE", requires = "approle_secret_id_file")]
    pub approle_role_id_file: Option<PathBuf>,
    /// AppRole auth: file holding the secret id (removed after a successful enrollment).
    #[arg(long, value_name = "FILE", requires = "approle_role_id_file")]
    pub approle_secret_id_file: Option<PathBuf>,
    /// The secret id file holds a response-wrapping token: unwrap it (once) first.
    #[arg(long, requires = "approle_secret_id_file")]
    pub secret_id_wrapped: bool,
    /// TLS certificate auth role (auth/cert/login over mutual TLS with the current certificate
    /// and the hardware key). `renew` tries it first and falls back to a token or AppRole given
    /// as well.
    #[arg(long, value_name = "NAME")]
    pub cert_auth_role: Option<String>,
    /// Mount path of the cert auth method.
    #[arg(long, value_name = "PATH", default_value = vault::DEFAULT_CERT_AUTH_MOUNT)]
    pub cert_auth_mount: String,
    /// Mount path of the AppRole auth method.
    #[arg(long, value_name = "PATH", default_value = vault::DEFAULT_APPROLE_MOUNT)]
    pub approle_mount: String,
    /// Give up retrying an unreachable, sealed or failing Vault after this long.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hybridboot enroll`.
#[derive(Args, Debug)]
pub struct EnrollArgs {
    /// The Vault flags.
    #[command(flatten)]
    pub vault: VaultArgs,
}

impl VaultArgs {
    /// The settings these flags say (`VAULT_TOKEN` is the token when no other secret auth and
    /// no cert auth role is given).
    pub fn settings(&self) -> anyhow::Result<vault::Settings> {
        let address = http::Url::parse(&self.vault_addr)
            .classed()
            .context("--vault-addr / VAULT_ADDR")?;
        let auth = if let Some(f) = &self.vault_token_file {
            Some(SecretAuth::TokenFile(f.clone()))
        } else if let (Some(rf), Some(sf)) =
            (&self.approle_role_id_file, &self.approle_secret_id_file)
        {
            Some(SecretAuth::AppRole {
                role_id_file: rf.clone(),
                secret_id_file: sf.clone(),
                wrapped: self.secret_id_wrapped,
            })
        } else if self.cert_auth_role.is_none() {
            std::env::var("VAULT_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .map(|t| SecretAuth::Token(crate::secret::Secret::new(t)))
        } else {
            None
        };
        Ok(vault::Settings {
            address,
            ca_bundle: self.vault_ca.clone(),
            namespace: self.vault_namespace.clone(),
            pki_mount: self.pki_mount.clone(),
            pki_role: self.pki_role.clone(),
            key: self.key.settings(),
            common_name: self.subject.common_name.clone(),
            dns_names: self.subject.dns_names.clone(),
            ip_addresses: self.subject.ip_addresses.clone(),
            ttl: self.ttl,
            certificate: self.certificate.clone(),
            ca_certificate: self.ca_certificate.clone(),
            auth,
            cert_auth_role: self.cert_auth_role.clone(),
            cert_auth_mount: self.cert_auth_mount.clone(),
            approle_mount: self.approle_mount.clone(),
            timeout: self.timeout,
            request_forwarding: !self.vault_no_request_forwarding,
        })
    }
}

/// `hybridboot enroll`: prints `serial:`, `not-after:` and `next-renewal:` (RFC 3339) lines.
pub fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let r = vault::enroll(&args.vault.settings()?)?;
    print!("{}", renewal_lines(&r));
    Ok(())
}

/// `hybridboot renew`: from the BootstrapConfig (`--config-source`, as the shipped timer unit
/// runs it) or from explicit Vault flags (those of `enroll`).
#[derive(Debug)]
pub struct RenewArgs {
    /// `--config-source` and friends.
    pub own: RenewOwnArgs,
    /// The Vault flags; `None` with `--config-source`.
    pub vault: Option<VaultArgs>,
}

/// The flags of `renew` besides the Vault ones.
#[derive(Args, Debug)]
pub struct RenewOwnArgs {
    /// The NodeConfig + BootstrapConfig file (file:///path or a path); replaces the Vault flags.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: Option<String>,
    /// The BootstrapConfig in its own file.
    #[arg(long, value_name = "FILE", requires = "config_source")]
    pub bootstrap_config: Option<PathBuf>,
    /// Work under this directory instead of / (with --config-source).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Renew once less than this fraction of the lifetime remains (0 < F <= 1; 1 renews now)
    /// [default: spec.vault.renewal.renewBefore, else 1/3].
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub renew_before: Option<f64>,
}

// By hand rather than derived: the Vault flags are required only without --config-source, which
// derive cannot say for a flattened group (they stay required inside an `Option`).
impl clap::FromArgMatches for RenewArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let own = RenewOwnArgs::from_arg_matches(m)?;
        let vault = if own.config_source.is_some() {
            None
        } else {
            Some(VaultArgs::from_arg_matches(m).map_err(|_| {
                clap::Error::raw(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "give --config-source FILE (the BootstrapConfig), or --vault-addr, --pki-role, --key, --common-name and --certificate\n",
                )
            })?)
        };
        Ok(RenewArgs { own, vault })
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for RenewArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        VaultArgs::augment_args_for_update(RenewOwnArgs::augment_args(cmd))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Runs `renew`; prints the RFC 3339 time of the next renewal on stdout.
pub fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let own = args.own;
    let mut state_root = None;
    let (settings, fraction) = match (&own.config_source, args.vault) {
        (Some(source), None) => {
            let source = ConfigSource {
                config_source: source.clone(),
                bootstrap_config: own.bootstrap_config.clone(),
                root: own.root.clone(),
            };
            let (settings, configured) = firstboot::renewal_settings(&source)?;
            state_root = Some(own.root.clone());
            (settings, own.renew_before.unwrap_or(configured))
        }
        (None, Some(v)) => (
            v.settings()?,
            own.renew_before.unwrap_or(vault::DEFAULT_RENEW_BEFORE),
        ),
        (Some(_), Some(_)) => {
            return Err(error::operator(
                "give either --config-source or the Vault flags (--vault-addr, --pki-role, ...), not both",
            ))
        }
        (None, None) => {
            return Err(error::operator(
                "give --config-source FILE (the BootstrapConfig) or the Vault flags (--vault-addr, --pki-role, --key, --common-name, --certificate)",
            ))
        }
    };
    let r = vault::renew_certificate(&settings, fraction)?;
    if let (Some(root), Some(login)) = (&state_root, &r.login) {
        // The certificate is written; a record that cannot be updated is not a failed renewal.
        if let Err(e) = firstboot::record_login(root, login) {
            log::warn!("could not record the Vault login for status: {e:#}");
        }
    }
    print!("{}", renewal_lines(&r));
    Ok(())
}

/// The machine output of `enroll` and `renew`: labelled lines, the serial as Vault prints it.
fn renewal_lines(r: &vault::Renewal) -> String {
    format!(
        "serial: {}
not-after: {}
next-renewal: {}
",
        r.info.serial_hex,
        x509::chain::rfc3339(r.info.not_after),
        x509::chain::rfc3339(r.due)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        vault: VaultArgs,
    }

    /// The flags' defaults are the domain's (`--timeout` is spelled for the help text).
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        let cli = Cli::try_parse_from([
            "enroll",
            "--vault-addr",
            "https://vault.test:8200",
            "--pki-role",
            "node",
            "--key",
            "file:/k.pem",
            "--common-name",
            "node-1",
            "--certificate",
            "/c.pem",
            "--vault-token-file",
            "/t",
        ])
        .unwrap();
        let s = cli.vault.settings().unwrap();
        let d = vault::Settings::new(
            s.address.clone(),
            "node",
            s.key.clone(),
            "node-1",
            "/c.pem".into(),
        );
        assert_eq!(s.timeout, d.timeout);
        assert_eq!(
            (&s.pki_mount, &s.cert_auth_mount, &s.approle_mount),
            (&d.pki_mount, &d.cert_auth_mount, &d.approle_mount)
        );
        assert!(matches!(s.auth, Some(SecretAuth::TokenFile(_))));
    }
}
