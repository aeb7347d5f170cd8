//! The command-line flags of `enroll` (and first boot's `renew`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::cli::KeyArgs;

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
    /// Mount path of the PKI secrets engine.
    #[arg(long, value_name = "PATH", default_value = "pki")]
    pub pki_mount: String,
    /// PKI role that signs the node certificate.
    #[arg(long, value_name = "ROLE")]
    pub pki_role: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Subject common name: the node name.
    #[arg(long, value_name = "CN")]
    pub common_name: String,
    /// DNS subject alternative name (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// IP subject alternative name (repeatable).
    #[arg(long = "ip-address", value_name = "IP")]
    pub ip_addresses: Vec<IpAddr>,
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
    #[arg(long, value_name = "PATH", default_value = "cert")]
    pub cert_auth_mount: String,
    /// Mount path of the AppRole auth method.
    #[arg(long, value_name = "PATH", default_value = "approle")]
    pub approle_mount: String,
    /// Give up retrying an unreachable, sealed or failing Vault after this long.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hybridboot enroll`.
#[derive(Args, Debug)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
}
