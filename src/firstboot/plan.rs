//! The settings of each step, built from the NodeConfig and the BootstrapConfig: the same
//! settings structs the command line builds for `enroll`, `install` and `init`, with every
//! path taken under `--root`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::{InstallSpec, VaultAuth};
use super::{state, ConfigSource, Configs};
use anyhow::Context;

use crate::error::ResultExt;
use crate::fsutil;
use crate::http::Url;
use crate::key::{Algorithm, KeyRef, KeySettings};
use crate::node::init::InitSettings;
use crate::node::install::{self, ContainerdSource, InstallSettings};
use crate::node::render::proxy::ProxyEnv;
use crate::node::render::AwsOverrides;
use crate::vault::{self, SecretAuth};

/// The files and settings first boot uses, resolved under `--root`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `--root`.
    pub root: PathBuf,
    /// Node name: certificate CN and Kubernetes node name.
    pub node_name: String,
    /// How to open the key.
    pub key: KeySettings,
    /// Algorithm of a key created here.
    pub algorithm: Algorithm,
    /// Everything the Vault client needs (paths under root).
    pub vault: vault::Settings,
    /// `spec.vault.renewal.renewBefore`.
    pub renew_before: f64,
    /// Certificate path as configured (without root), for the record.
    pub certificate: PathBuf,
    /// The AppRole secret id file, if that is the auth method (removed once used).
    pub secret_id_file: Option<PathBuf>,
}

impl Plan {
    /// Resolves the configuration into concrete paths and client settings; Vault gets
    /// `timeout`.
    pub fn new(configs: &Configs, root: &Path, timeout: Duration) -> anyhow::Result<Plan> {
        let b = &configs.bootstrap;
        let ira = &configs.node.iam_roles_anywhere;
        let r = |p: &Path| fsutil::under_root(root, p);
        let key = KeySettings {
            reference: match &b.key.parsed {
                KeyRef::Path(p) => r(p).display().to_string(),
                _ => b.key.reference.clone(),
            },
            tcti: b.key.tcti.clone(),
            pkcs11_lib: b.key.pkcs11_lib.clone(),
            ..KeySettings::default()
        };
        let (auth, secret_id_file) = match &b.vault.auth {
            VaultAuth::TokenFile(t) => (SecretAuth::TokenFile(r(t)), None),
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                wrapped,
            } => (
                SecretAuth::AppRole {
                    role_id_file: r(role_id_file),
                    secret_id_file: r(secret_id_file),
                    wrapped: *wrapped,
                    kept_login: Some(r(Path::new(state::APPROLE_LOGIN_FILE))),
                },
                Some(r(secret_id_file)),
            ),
            VaultAuth::DeviceCertificate(d) => (
                SecretAuth::DeviceCertificate(vault::DeviceIdentity {
                    key: KeySettings {
                        reference: match &d.key {
                            KeyRef::Path(p) => r(p).display().to_string(),
                            _ => d.key_reference.clone(),
                        },
                        ..key.clone()
                    },
                    certificate: r(&d.certificate),
                    role: d.role.clone(),
                    mount: d.mount.clone(),
                }),
                None,
            ),
        };
        let address = Url::parse(&b.vault.address)
            .classed()
            .context("spec.vault.address")?;
        let vault = vault::Settings {
            ca_bundle: b.vault.ca_bundle.as_deref().map(r),
            namespace: b.vault.namespace.clone(),
            pki_mount: b.vault.pki_mount.clone(),
            ttl: b.vault.ttl,
            auth: Some(auth),
            cert_auth_role: b.vault.cert_auth_role.clone(),
            timeout,
            request_forwarding: b.vault.request_forwarding,
            ..vault::Settings::new(
                address,
                b.vault.role.clone(),
                key.clone(),
                ira.node_name.clone(),
                r(&ira.certificate_path),
            )
        };
        Ok(Plan {
            root: root.to_path_buf(),
            node_name: ira.node_name.clone(),
            key,
            algorithm: b.key.algorithm,
            vault,
            renew_before: b.vault.renew_before,
            certificate: ira.certificate_path.clone(),
            secret_id_file,
        })
    }

    /// `init` as first boot runs it: the BootstrapConfig's AWS endpoints and key location reach
    /// the node's credential_process line.
    pub fn init(&self, configs: &Configs) -> InitSettings {
        let b = &configs.bootstrap;
        InitSettings {
            aws: AwsOverrides {
                roles_anywhere_endpoint: b.aws.roles_anywhere_endpoint.clone(),
                ca_bundle: b.aws.ca_bundle.clone(),
                tcti: b.key.tcti.clone(),
                pkcs11_lib: b.key.pkcs11_lib.clone(),
                // spec.proxy, else the unit's environment (a drop-in's Environment=).
                proxy: match &b.proxy {
                    Some(p) => Some(ProxyEnv {
                        https_proxy: p.https_proxy.clone(),
                        http_proxy: p.http_proxy.clone(),
                        no_proxy: p.no_proxy.clone(),
                    }),
                    None => ProxyEnv::from_env(),
                },
            },
            eks_endpoint: b.aws.eks_endpoint.clone(),
            ecr_endpoint: b.aws.ecr_endpoint.clone(),
            ecr_registry_endpoint: b.aws.ecr_registry_endpoint.clone(),
            ..InitSettings::new(configs.source.clone(), self.root.clone())
        }
    }
}

/// `install` as `spec.install` describes it.
pub(super) fn install(spec: &InstallSpec, root: &Path, offline: bool) -> InstallSettings {
    InstallSettings {
        kubernetes_version: spec.kubernetes_version.clone(),
        manifest: spec
            .manifest
            .clone()
            .unwrap_or_else(|| install::DEFAULT_MANIFEST.into()),
        manifest_public_key: spec
            .manifest_public_key
            .as_deref()
            .map(|p| fsutil::under_root(root, p)),
        root: root.to_path_buf(),
        containerd_source: match spec.containerd_source.as_str() {
            "none" => ContainerdSource::None,
            _ => ContainerdSource::Distro,
        },
        arch: None,
        ca_bundle: spec
            .ca_bundle
            .as_deref()
            .map(|p| fsutil::under_root(root, p)),
        offline,
    }
}

/// What `renew --config-source` renews with: the BootstrapConfig's Vault settings and its
/// `renewBefore`. The secret id of the first enrollment is spent, so with a cert auth role the
/// AppRole is left out (a token file stays valid as long as its TTL).
pub fn renewal_settings(source: &ConfigSource) -> anyhow::Result<(vault::Settings, f64)> {
    let configs = source.load()?;
    let plan = Plan::new(&configs, &source.root, vault::DEFAULT_TIMEOUT)?;
    let mut settings = plan.vault;
    if settings.cert_auth_role.is_some()
        && matches!(settings.auth, Some(SecretAuth::AppRole { .. }))
    {
        settings.auth = None;
    }
    Ok((settings, plan.renew_before))
}
