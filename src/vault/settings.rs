//! What enrollment and renewal need to know, whoever asks: the command line (`enroll`, `renew`)
//! or first boot (the BootstrapConfig). Defaults live here, once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::http::Url;
use crate::key::KeySettings;
use crate::secret::Secret;

/// Mount path of the PKI secrets engine unless told otherwise.
pub const DEFAULT_PKI_MOUNT: &str = "pki";
/// Mount path of the TLS certificate auth method unless told otherwise.
pub const DEFAULT_CERT_AUTH_MOUNT: &str = "cert";
/// Mount path of the AppRole auth method unless told otherwise.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// How long to keep retrying an unreachable, sealed or failing Vault unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The default renewal point (see [`crate::time::DEFAULT_RENEW_BEFORE`]).
pub use crate::time::DEFAULT_RENEW_BEFORE;

/// The auth method that needs no current certificate.
#[derive(Debug, Clone)]
pub enum SecretAuth {
    /// A token already at hand (`VAULT_TOKEN`).
    Token(Secret),
    /// A file holding a token (read when it is needed).
    TokenFile(PathBuf),
    /// AppRole: role id file and secret id file (removed after a successful enrollment).
    AppRole {
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id, or a response-wrapping token for it.
        secret_id_file: PathBuf,
        /// The secret id file holds a wrapping token: unwrap it (once) first.
        wrapped: bool,
    },
    /// TLS certificate auth with the factory identity (IEEE 802.1AR IDevID): no secret at all.
    DeviceCertificate(DeviceIdentity),
}

/// The factory identity: a key of its own (never the node key) and the certificate the factory
/// CA issued for it. Both are public or inside the TPM; neither is a secret.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// The IDevID key.
    pub key: KeySettings,
    /// The IDevID certificate (leaf first, then any factory intermediates).
    pub certificate: PathBuf,
    /// The TLS certificate auth role that trusts the factory CA.
    pub role: String,
    /// Mount path of that cert auth method.
    pub mount: String,
}

/// Everything [`enroll`](super::enroll) and [`renew_certificate`](super::renew_certificate) need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Vault's address.
    pub address: Url,
    /// PEM bundle of the CA(s) of Vault's TLS certificate (replaces the built-in roots).
    pub ca_bundle: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`); empty means none.
    pub namespace: Option<String>,
    /// Mount path of the PKI secrets engine.
    pub pki_mount: String,
    /// PKI role that signs the node certificate.
    pub pki_role: String,
    /// The node key.
    pub key: KeySettings,
    /// Subject common name: the node name.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Requested lifetime [default: the role's ttl].
    pub ttl: Option<Duration>,
    /// Certificate file to write: leaf first, then the CA chain.
    pub certificate: PathBuf,
    /// Also write the issuing CA and its chain here.
    pub ca_certificate: Option<PathBuf>,
    /// The auth method that needs no current certificate, if any.
    pub auth: Option<SecretAuth>,
    /// TLS certificate auth role (tried first when renewing a usable certificate).
    pub cert_auth_role: Option<String>,
    /// Mount path of the cert auth method.
    pub cert_auth_mount: String,
    /// Mount path of the AppRole auth method.
    pub approle_mount: String,
    /// Give up retrying Vault after this long.
    pub timeout: Duration,
    /// Let a standby Vault node forward our requests to the active node (Vault's default).
    /// `false` asks standbys not to (`X-Vault-No-Request-Forwarding`): they answer 307 with the
    /// active node's `api_addr`, which this node must then reach; the redirect is followed once,
    /// as Vault's own client does.
    pub request_forwarding: bool,
}

impl Settings {
    /// Settings for `address`, `pki_role`, `key`, `common_name` and `certificate`, everything
    /// else at its default.
    pub fn new(
        address: Url,
        pki_role: impl Into<String>,
        key: KeySettings,
        common_name: impl Into<String>,
        certificate: PathBuf,
    ) -> Settings {
        Settings {
            address,
            ca_bundle: None,
            namespace: None,
            pki_mount: DEFAULT_PKI_MOUNT.into(),
            pki_role: pki_role.into(),
            key,
            common_name: common_name.into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            ttl: None,
            certificate,
            ca_certificate: None,
            auth: None,
            cert_auth_role: None,
            cert_auth_mount: DEFAULT_CERT_AUTH_MOUNT.into(),
            approle_mount: DEFAULT_APPROLE_MOUNT.into(),
            timeout: DEFAULT_TIMEOUT,
            request_forwarding: true,
        }
    }
}
