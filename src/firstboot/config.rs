//! BootstrapConfig (`hybridboot/v1alpha1`, kind `BootstrapConfig`): what first boot needs beyond
//! the NodeConfig: where the node key lives, how to reach Vault and authenticate, what to
//! install, and how long to try.
//!
//! Layers as for the NodeConfig (`crate::node::config`): raw serde structs that reject unknown
//! fields (errors carry the file's line and column, also when the document is one of several in
//! a file), then one [`validate`] into typed settings ([`BootstrapConfig`]).
//!
//! ```yaml
//! apiVersion: hybridboot/v1alpha1
//! kind: BootstrapConfig
//! spec:
//!   key:
//!     ref: handle:0x81000001          # TPM handle, TSS2 PEM file, pkcs11: URI, or file:
//!     algorithm: ecdsa-p256           # of a key created at first boot (or rsa-2048)
//!     tcti: device:/dev/tpmrm0        # optional
//!     pkcs11Lib: /usr/lib/softhsm/libsofthsm2.so   # optional
//!   vault:
//!     address: https://vault.example.com:8200
//!     caBundle: /etc/hybridboot/vault-ca.pem       # optional
//!     namespace: edge                 # optional
//!     pkiMount: pki_int               # default pki
//!     role: node
//!     ttl: 72h                        # optional: the role's ttl
//!     auth:                           # exactly one of tokenFile / appRole
//!       appRole:
//!         roleIdFile: /etc/hybridboot/role-id
//!         secretIdFile: /etc/hybridboot/secret-id
//!         wrapped: true
//!     renewal:
//!       certAuthRole: node            # optional: renew with TLS certificate auth
//!       renewBefore: "1/3"            # fraction of the lifetime left; default 1/3
//!   aws:                              # optional: private (VPC) endpoints and their CA
//!     rolesAnywhereEndpoint: https://rolesanywhere.us-west-2.amazonaws.com
//!     eksEndpoint: https://eks.us-west-2.amazonaws.com
//!     ecrEndpoint: https://api.ecr.us-west-2.amazonaws.com        # GetAuthorizationToken
//!     ecrRegistryEndpoint: https://mirror.example.com:5000        # where the sandbox image's registry is served
//!     caBundle: /etc/hybridboot/aws-ca.pem
//!   proxy:                            # optional: the site's HTTP proxy
//!     httpsProxy: http://proxy.example.com:3128
//!     httpProxy: http://proxy.example.com:3128                     # optional
//!     noProxy: [localhost, 127.0.0.1, .example.internal, 10.0.0.0/8]  # or one comma-separated string
//!   install:                          # optional: absent = binaries are in the image
//!     kubernetesVersion: "1.31"
//!     manifest: https://...           # optional
//!     manifestPublicKey: /etc/hybridboot/manifest.pub  # optional
//!     caBundle: /etc/hybridboot/mirror-ca.pem          # optional
//!     containerdSource: distro        # distro | none; default distro
//!   timeouts:
//!     overall: 30m                    # whole first boot; default 30m
//!     timeSync: 2m                    # wait for NTP; default 2m
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::key::{Algorithm, KeyRef};
use crate::node::config::{
    split_documents, yaml_error, ConfigError, RawDocument, TypeMeta, BOOTSTRAP_KIND,
    HYBRIDBOOT_API_VERSION,
};
use crate::time::{parse_duration, parse_fraction};

// ---------------------------------------------------------------------------------------------
// Typed settings.

/// A validated BootstrapConfig with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapConfig {
    /// `spec.key`.
    pub key: KeySpec,
    /// `spec.vault`.
    pub vault: VaultSpec,
    /// `spec.aws`: endpoint and CA overrides for the AWS calls.
    pub aws: AwsSpec,
    /// `spec.proxy`: the site's HTTP proxy, if any.
    pub proxy: Option<ProxyConfig>,
    /// `spec.install`; `None`: the binaries are baked into the image.
    pub install: Option<InstallSpec>,
    /// `spec.timeouts`.
    pub timeouts: Timeouts,
}

/// `spec.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// `ref` as written.
    pub reference: String,
    /// `ref` parsed.
    pub parsed: KeyRef,
    /// Algorithm of a key created at first boot.
    pub algorithm: Algorithm,
    /// TPM TCTI.
    pub tcti: Option<String>,
    /// PKCS#11 module.
    pub pkcs11_lib: Option<PathBuf>,
}

/// `spec.vault`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultSpec {
    /// Vault's URL.
    pub address: String,
    /// CA bundle for Vault's TLS certificate.
    pub ca_bundle: Option<PathBuf>,
    /// Namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// PKI mount.
    pub pki_mount: String,
    /// PKI role.
    pub role: String,
    /// Requested certificate lifetime.
    pub ttl: Option<Duration>,
    /// How the first enrollment authenticates.
    pub auth: VaultAuth,
    /// `renewal.certAuthRole`.
    pub cert_auth_role: Option<String>,
    /// `renewal.renewBefore`: renew once less than this fraction of the lifetime is left.
    pub renew_before: f64,
}

/// `spec.vault.auth`: exactly one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A file holding a Vault token.
    TokenFile(PathBuf),
    /// AppRole with files for the role id and the (single-use, maybe wrapped) secret id.
    AppRole {
        /// `roleIdFile`.
        role_id_file: PathBuf,
        /// `secretIdFile`.
        secret_id_file: PathBuf,
        /// `wrapped`: the secret id file holds a response-wrapping token.
        wrapped: bool,
    },
}

/// `spec.aws`: where the AWS calls go when not to the region's public endpoints (VPC interface
/// endpoints, a proxy that terminates TLS, tests), and the CAs their TLS certificates chain to.
/// The same settings reach the `credential_process` line init writes, so the node's later
/// refreshes go where first boot went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsSpec {
    /// IAM Roles Anywhere endpoint (`https://rolesanywhere.<region>.amazonaws.com` when unset).
    pub roles_anywhere_endpoint: Option<String>,
    /// EKS endpoint for DescribeCluster (`https://eks.<region>.amazonaws.com` when unset).
    pub eks_endpoint: Option<String>,
    /// ECR API endpoint for GetAuthorizationToken (`https://api.ecr.<registry region>.<suffix>`
    /// when unset).
    pub ecr_endpoint: Option<String>,
    /// Where the sandbox image's registry is served (a VPC endpoint or pull-through mirror):
    /// replaces `https://<registry host>` of the image reference (`http://` only when written
    /// so here).
    pub ecr_registry_endpoint: Option<String>,
    /// PEM bundle replacing the built-in roots for all of them.
    pub ca_bundle: Option<PathBuf>,
}

/// `spec.proxy`: the site's HTTP proxy. First boot puts it into its own environment
/// (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), so every request it makes and every program it
/// runs uses it, and init writes it where the node needs it later (containerd and kubelet
/// drop-ins, the `credential_process` line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyConfig {
    /// Proxy for https URLs (`http://host:port`; tunnelled with CONNECT).
    pub https_proxy: Option<String>,
    /// Proxy for plain http URLs.
    pub http_proxy: Option<String>,
    /// Hosts, domain suffixes (`.example.com` or `example.com`), IP addresses and CIDR blocks
    /// reached directly.
    pub no_proxy: Vec<String>,
}

/// `spec.install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSpec {
    /// Kubernetes minor version, e.g. `1.31`.
    pub kubernetes_version: String,
    /// Where the artifact manifest comes from (URL or path), if not the default.
    pub manifest: Option<String>,
    /// Public key that signs the manifest.
    pub manifest_public_key: Option<PathBuf>,
    /// CAs of the artifact mirror's TLS certificate (default: the built-in roots).
    pub ca_bundle: Option<PathBuf>,
    /// `distro` or `none`.
    pub containerd_source: String,
}

/// `spec.timeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole first boot.
    pub overall: Duration,
    /// Longest wait for NTP synchronisation.
    pub time_sync: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            overall: Duration::from_secs(30 * 60),
            time_sync: Duration::from_secs(120),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw serde structs.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBootstrap {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    spec: Option<RawSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    key: Option<RawKey>,
    #[serde(default)]
    vault: Option<RawVault>,
    #[serde(default)]
    aws: Option<RawAws>,
    #[serde(default)]
    proxy: Option<RawProxy>,
    #[serde(default)]
    install: Option<RawInstall>,
    #[serde(default)]
    timeouts: Option<RawTimeouts>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKey {
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    tcti: Option<String>,
    #[serde(default)]
    pkcs11_lib: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawVault {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    ca_bundle: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    pki_mount: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    renewal: Option<RawRenewal>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAuth {
    #[serde(default)]
    token_file: Option<String>,
    #[serde(default)]
    app_role: Option<RawAppRole>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAppRole {
    #[serde(default)]
    role_id_file: Option<String>,
    #[serde(default)]
    secret_id_file: Option<String>,
    #[serde(default)]
    wrapped: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRenewal {
    #[serde(default)]
    cert_auth_role: Option<String>,
    /// A number (0.333) or a fraction string ("1/3").
    #[serde(default)]
    renew_before: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAws {
    #[serde(default)]
    roles_anywhere_endpoint: Option<String>,
    #[serde(default)]
    eks_endpoint: Option<String>,
    #[serde(default)]
    ecr_endpoint: Option<String>,
    #[serde(default)]
    ecr_registry_endpoint: Option<String>,
    #[serde(default)]
    ca_bundle: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProxy {
    #[serde(default)]
    https_proxy: Option<String>,
    #[serde(default)]
    http_proxy: Option<String>,
    /// A list, or one comma-separated string (the environment variable's form).
    #[serde(default)]
    no_proxy: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawInstall {
    #[serde(default)]
    kubernetes_version: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    manifest: Option<String>,
    #[serde(default)]
    manifest_public_key: Option<String>,
    #[serde(default)]
    ca_bundle: Option<String>,
    #[serde(default)]
    containerd_source: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTimeouts {
    #[serde(default)]
    overall: Option<String>,
    #[serde(default)]
    time_sync: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Parses the BootstrapConfig document found next to a NodeConfig (`path` names the file).
pub fn from_raw_document(path: &Path, doc: &RawDocument) -> Result<BootstrapConfig, ConfigError> {
    parse_document(path, &doc.text_with_file_lines())
}

/// Reads a file holding the BootstrapConfig (`--bootstrap-config`): alone, or among other
/// documents (a NodeConfig, which is ignored here).
pub fn load_file(path: &Path) -> Result<BootstrapConfig, ConfigError> {
    let text =
        crate::fsutil::read_capped_string(path, crate::fsutil::MAX_TEXT_FILE).map_err(|e| {
            ConfigError::Read {
                path: path.to_path_buf(),
                source: e,
            }
        })?;
    parse_file_text(path, &text)
}

/// Finds the one BootstrapConfig document in a YAML stream and parses it.
pub fn parse_file_text(path: &Path, text: &str) -> Result<BootstrapConfig, ConfigError> {
    let mut found = None;
    for doc in split_documents(text) {
        let padded = doc.text_with_file_lines();
        let meta: Option<TypeMeta> =
            serde_yaml_ng::from_str(&padded).map_err(|e| yaml_error(path, &e))?;
        let Some(meta) = meta else { continue };
        if meta.api_version.as_deref() == Some(HYBRIDBOOT_API_VERSION)
            && meta.kind.as_deref() == Some(BOOTSTRAP_KIND)
        {
            if found.is_some() {
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: doc.first_line,
                    column: 1,
                    message: "a second BootstrapConfig document; keep exactly one".into(),
                });
            }
            found = Some(padded);
        }
    }
    match found {
        Some(padded) => parse_document(path, &padded),
        None => Err(ConfigError::NoBootstrapConfig {
            path: path.to_path_buf(),
        }),
    }
}

fn parse_document(path: &Path, padded: &str) -> Result<BootstrapConfig, ConfigError> {
    let raw: RawBootstrap = serde_yaml_ng::from_str(padded).map_err(|e| yaml_error(path, &e))?;
    validate(path, raw)
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn validate(path: &Path, raw: RawBootstrap) -> Result<BootstrapConfig, ConfigError> {
    let invalid = |field: &'static str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        field,
        message,
    };
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let abs_path = |field: &'static str, v: Option<String>| -> Result<Option<PathBuf>, _> {
        match non_empty(v) {
            None => Ok(None),
            Some(p) if p.starts_with('/') => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(invalid(field, format!("{p:?} must be an absolute path"))),
        }
    };
    let spec = raw.spec.ok_or_else(|| invalid("spec", "missing".into()))?;

    // spec.key
    let key = spec
        .key
        .ok_or_else(|| invalid("spec.key", "missing: set spec.key.ref".into()))?;
    let reference = non_empty(key.reference).ok_or_else(|| {
        invalid(
            "spec.key.ref",
            "missing: e.g. handle:0x81000001 (TPM) or pkcs11:token=..;object=..".into(),
        )
    })?;
    let parsed = KeyRef::parse(&reference).map_err(|e| invalid("spec.key.ref", e.to_string()))?;
    let algorithm = match non_empty(key.algorithm) {
        None => Algorithm::EcdsaP256,
        Some(a) => a
            .parse()
            .map_err(|e: String| invalid("spec.key.algorithm", e))?,
    };
    let key = KeySpec {
        reference,
        parsed,
        algorithm,
        tcti: non_empty(key.tcti),
        pkcs11_lib: abs_path("spec.key.pkcs11Lib", key.pkcs11_lib)?,
    };

    // spec.vault
    let v = spec
        .vault
        .ok_or_else(|| invalid("spec.vault", "missing: set address, role and auth".into()))?;
    let address = non_empty(v.address).ok_or_else(|| {
        invalid(
            "spec.vault.address",
            "missing: e.g. https://vault.example.com:8200".into(),
        )
    })?;
    crate::http::Url::parse(&address).map_err(|e| invalid("spec.vault.address", e.to_string()))?;
    let role = non_empty(v.role).ok_or_else(|| {
        invalid(
            "spec.vault.role",
            "missing: the PKI role that signs node certificates".into(),
        )
    })?;
    let ttl = match non_empty(v.ttl) {
        None => None,
        Some(t) => Some(parse_duration(&t).map_err(|e| invalid("spec.vault.ttl", e))?),
    };
    let auth = v.auth.unwrap_or_default();
    let auth = match (non_empty(auth.token_file), auth.app_role) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.vault.auth",
                "give either tokenFile or appRole, not both".into(),
            ))
        }
        (None, None) => {
            return Err(invalid(
                "spec.vault.auth",
                "missing: set tokenFile or appRole (roleIdFile, secretIdFile)".into(),
            ))
        }
        (Some(t), None) => VaultAuth::TokenFile(
            abs_path("spec.vault.auth.tokenFile", Some(t))?.expect("non-empty"),
        ),
        (None, Some(a)) => VaultAuth::AppRole {
            role_id_file: abs_path("spec.vault.auth.appRole.roleIdFile", a.role_id_file)?
                .ok_or_else(|| invalid("spec.vault.auth.appRole.roleIdFile", "missing".into()))?,
            secret_id_file: abs_path("spec.vault.auth.appRole.secretIdFile", a.secret_id_file)?
                .ok_or_else(|| invalid("spec.vault.auth.appRole.secretIdFile", "missing".into()))?,
            wrapped: a.wrapped.unwrap_or(false),
        },
    };
    let renewal = v.renewal.unwrap_or_default();
    let renew_before = match renewal.renew_before {
        None => crate::vault::DEFAULT_RENEW_BEFORE,
        Some(value) => {
            let text = match &value {
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::String(s) => s.clone(),
                _ => String::new(),
            };
            parse_fraction(&text).map_err(|e| invalid("spec.vault.renewal.renewBefore", e))?
        }
    };
    let vault = VaultSpec {
        address,
        ca_bundle: abs_path("spec.vault.caBundle", v.ca_bundle)?,
        namespace: non_empty(v.namespace),
        pki_mount: non_empty(v.pki_mount).unwrap_or_else(|| crate::vault::DEFAULT_PKI_MOUNT.into()),
        role,
        ttl,
        auth,
        cert_auth_role: non_empty(renewal.cert_auth_role),
        renew_before,
    };

    // spec.aws
    let a = spec.aws.unwrap_or_default();
    let endpoint = |field: &'static str, v: Option<String>| -> Result<Option<String>, _> {
        match non_empty(v) {
            None => Ok(None),
            Some(u) => {
                crate::http::Url::parse(&u).map_err(|e| invalid(field, e.to_string()))?;
                Ok(Some(u.trim_end_matches('/').to_string()))
            }
        }
    };
    let aws = AwsSpec {
        roles_anywhere_endpoint: endpoint(
            "spec.aws.rolesAnywhereEndpoint",
            a.roles_anywhere_endpoint,
        )?,
        eks_endpoint: endpoint("spec.aws.eksEndpoint", a.eks_endpoint)?,
        ecr_endpoint: endpoint("spec.aws.ecrEndpoint", a.ecr_endpoint)?,
        ecr_registry_endpoint: endpoint("spec.aws.ecrRegistryEndpoint", a.ecr_registry_endpoint)?,
        ca_bundle: abs_path("spec.aws.caBundle", a.ca_bundle)?,
    };

    // spec.proxy
    let proxy = match spec.proxy {
        None => None,
        Some(p) => {
            let proxy_url = |field: &'static str, v: Option<String>| -> Result<Option<String>, _> {
                match non_empty(v) {
                    None => Ok(None),
                    Some(u) => {
                        crate::http::Proxy::parse(u.trim())
                            .map_err(|e| invalid(field, e.to_string()))?;
                        Ok(Some(u.trim().to_string()))
                    }
                }
            };
            let https_proxy = proxy_url("spec.proxy.httpsProxy", p.https_proxy)?;
            let http_proxy = proxy_url("spec.proxy.httpProxy", p.http_proxy)?;
            if https_proxy.is_none() && http_proxy.is_none() {
                return Err(invalid(
                    "spec.proxy",
                    "set httpsProxy (and httpProxy for plain-http targets), or remove spec.proxy"
                        .into(),
                ));
            }
            let no_proxy = match p.no_proxy {
                None | Some(serde_yaml_ng::Value::Null) => Vec::new(),
                Some(serde_yaml_ng::Value::String(s)) => s.split(',').map(str::to_string).collect(),
                Some(serde_yaml_ng::Value::Sequence(items)) => items
                    .into_iter()
                    .map(|v| match v {
                        serde_yaml_ng::Value::String(s) => Ok(s),
                        other => Err(invalid(
                            "spec.proxy.noProxy",
                            format!("{other:?}: each entry must be a string (quote it)"),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(invalid(
                        "spec.proxy.noProxy",
                        "a list of hosts, suffixes and CIDR blocks, or one comma-separated string"
                            .into(),
                    ))
                }
            };
            let no_proxy: Vec<String> = no_proxy
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            for e in &no_proxy {
                if e.contains(char::is_whitespace) || e.contains('=') {
                    return Err(invalid(
                        "spec.proxy.noProxy",
                        format!("{e:?} is not a host, suffix or CIDR block"),
                    ));
                }
                if e.contains('/') {
                    crate::node::config::parse_cidr(e)
                        .map_err(|m| invalid("spec.proxy.noProxy", m))?;
                }
            }
            Some(ProxyConfig {
                https_proxy,
                http_proxy,
                no_proxy,
            })
        }
    };

    // spec.install
    let install = match spec.install {
        None => None,
        Some(i) => {
            let version = match i.kubernetes_version {
                Some(serde_yaml_ng::Value::String(s)) => s,
                // `1.30` written unquoted is a float; `1.30` != `1.3`, so refuse rather than guess.
                Some(serde_yaml_ng::Value::Number(n)) => {
                    return Err(invalid(
                        "spec.install.kubernetesVersion",
                        format!("{n} is a number; quote it, e.g. \"1.31\""),
                    ))
                }
                _ => String::new(),
            };
            let ok = {
                let parts: Vec<&str> = version.trim_start_matches('v').split('.').collect();
                (2..=3).contains(&parts.len())
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            };
            if !ok {
                return Err(invalid(
                    "spec.install.kubernetesVersion",
                    format!("{version:?}: expected a version such as \"1.31\" or \"1.31.2\""),
                ));
            }
            let containerd_source =
                non_empty(i.containerd_source).unwrap_or_else(|| "distro".into());
            if !["distro", "none"].contains(&containerd_source.as_str()) {
                return Err(invalid(
                    "spec.install.containerdSource",
                    format!("{containerd_source:?}: use distro (the distribution's containerd, from the image or the manifest) or none"),
                ));
            }
            Some(InstallSpec {
                kubernetes_version: version,
                manifest: non_empty(i.manifest),
                manifest_public_key: abs_path(
                    "spec.install.manifestPublicKey",
                    i.manifest_public_key,
                )?,
                ca_bundle: abs_path("spec.install.caBundle", i.ca_bundle)?,
                containerd_source,
            })
        }
    };

    // spec.timeouts
    let t = spec.timeouts.unwrap_or_default();
    let mut timeouts = Timeouts::default();
    if let Some(o) = non_empty(t.overall) {
        timeouts.overall = parse_duration(&o).map_err(|e| invalid("spec.timeouts.overall", e))?;
        if timeouts.overall < Duration::from_secs(10) {
            return Err(invalid(
                "spec.timeouts.overall",
                format!("{o}: at least 10s"),
            ));
        }
    }
    if let Some(s) = non_empty(t.time_sync) {
        timeouts.time_sync =
            parse_duration(&s).map_err(|e| invalid("spec.timeouts.timeSync", e))?;
    }
    Ok(BootstrapConfig {
        key,
        vault,
        aws,
        proxy,
        install,
        timeouts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec: {}
---
apiVersion: hybridboot/v1alpha1
kind: BootstrapConfig
spec:
  key:
    ref: handle:0x81000001
    tcti: swtpm:host=127.0.0.1,port=2321
  vault:
    address: https://vault.example.com:8200
    caBundle: /etc/hybridboot/vault-ca.pem
    pkiMount: pki_int
    role: node
    ttl: 72h
    auth:
      appRole:
        roleIdFile: /etc/hybridboot/role-id
        secretIdFile: /etc/hybridboot/secret-id
        wrapped: true
    renewal:
      certAuthRole: node
      renewBefore: 1/4
  install:
    kubernetesVersion: \"1.31\"
  timeouts:
    overall: 20m
";

    fn parse(text: &str) -> Result<BootstrapConfig, ConfigError> {
        parse_file_text(Path::new("/etc/hybridboot/config.yaml"), text)
    }

    #[test]
    fn a_complete_document_is_typed_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.key.parsed, KeyRef::TpmHandle(0x8100_0001));
        assert_eq!(c.key.algorithm, Algorithm::EcdsaP256);
        assert_eq!(c.vault.pki_mount, "pki_int");
        assert_eq!(c.vault.ttl, Some(Duration::from_secs(72 * 3600)));
        assert_eq!(
            c.vault.auth,
            VaultAuth::AppRole {
                role_id_file: "/etc/hybridboot/role-id".into(),
                secret_id_file: "/etc/hybridboot/secret-id".into(),
                wrapped: true
            }
        );
        assert_eq!(c.vault.cert_auth_role.as_deref(), Some("node"));
        assert!((c.vault.renew_before - 0.25).abs() < 1e-9);
        let i = c.install.unwrap();
        assert_eq!(i.kubernetes_version, "1.31");
        assert_eq!(i.containerd_source, "distro");
        assert_eq!(c.timeouts.overall, Duration::from_secs(1200));
        assert_eq!(c.timeouts.time_sync, Duration::from_secs(120));
    }

    #[test]
    fn unknown_fields_are_reported_at_their_line_in_the_file() {
        let bad = GOOD.replace("    role: node\n", "    role: node\n    roel: x\n");
        let e = parse(&bad).unwrap_err().to_string();
        // Line 16 of the whole file, not of the second document.
        assert!(
            e.starts_with("/etc/hybridboot/config.yaml:16:5: spec.vault: unknown field `roel`"),
            "{e}"
        );
        assert!(e.contains("expected one of"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases = [
            ("    role: node\n", "", "spec.vault.role: missing"),
            ("    ttl: 72h\n", "    ttl: 72y\n", "spec.vault.ttl"),
            (
                "    ref: handle:0x81000001\n",
                "    ref: handle:0x12\n",
                "spec.key.ref",
            ),
            (
                "        roleIdFile: /etc/hybridboot/role-id\n",
                "        roleIdFile: role-id\n",
                "spec.vault.auth.appRole.roleIdFile: \"role-id\" must be an absolute path",
            ),
            (
                "      renewBefore: 1/4\n",
                "      renewBefore: 2\n",
                "spec.vault.renewal.renewBefore: 2: must be in (0, 1]",
            ),
            (
                "    kubernetesVersion: \"1.31\"\n",
                "    kubernetesVersion: 1.30\n",
                "spec.install.kubernetesVersion: 1.3 is a number; quote it",
            ),
            (
                "    address: https://vault.example.com:8200\n",
                "    address: vault:8200\n",
                "spec.vault.address",
            ),
            (
                "    overall: 20m\n",
                "    overall: 1s\n",
                "spec.timeouts.overall",
            ),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{from:?} -> {e}");
            assert!(e.starts_with("/etc/hybridboot/config.yaml:"), "{e}");
        }
        // Both auth methods, or none.
        let both = GOOD.replace(
            "    auth:\n",
            "    auth:\n      tokenFile: /etc/hybridboot/token\n",
        );
        assert!(parse(&both)
            .unwrap_err()
            .to_string()
            .contains("spec.vault.auth: give either tokenFile or appRole"));
    }

    #[test]
    fn proxy_and_ecr_endpoints() {
        let with = GOOD.replace(
            "  install:\n",
            "  aws:\n    ecrEndpoint: http://127.0.0.1:5000/\n    ecrRegistryEndpoint: https://mirror.example.com:5443\n  proxy:\n    httpsProxy: http://proxy.example.com:3128\n    noProxy: [localhost, .corp.example, 10.0.0.0/8]\n  install:\n",
        );
        let c = parse(&with).unwrap();
        assert_eq!(c.aws.ecr_endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(
            c.aws.ecr_registry_endpoint.as_deref(),
            Some("https://mirror.example.com:5443")
        );
        let p = c.proxy.unwrap();
        assert_eq!(
            p.https_proxy.as_deref(),
            Some("http://proxy.example.com:3128")
        );
        assert_eq!(p.http_proxy, None);
        assert_eq!(p.no_proxy, ["localhost", ".corp.example", "10.0.0.0/8"]);
        // The environment variable's form works too.
        let comma = with.replace(
            "noProxy: [localhost, .corp.example, 10.0.0.0/8]",
            "noProxy: \"localhost, .corp.example\"",
        );
        assert_eq!(
            parse(&comma).unwrap().proxy.unwrap().no_proxy,
            ["localhost", ".corp.example"]
        );
        assert_eq!(parse(GOOD).unwrap().proxy, None);
        for (from, to, want) in [
            (
                "httpsProxy: http://proxy.example.com:3128",
                "httpsProxy: https://proxy:3128",
                "spec.proxy.httpsProxy",
            ),
            (
                "    httpsProxy: http://proxy.example.com:3128\n",
                "",
                "spec.proxy: set httpsProxy",
            ),
            ("10.0.0.0/8]", "10.0.0.0/33]", "spec.proxy.noProxy"),
            ("[localhost,", "[1,", "spec.proxy.noProxy"),
            (
                "ecrEndpoint: http://127.0.0.1:5000/",
                "ecrEndpoint: 127.0.0.1:5000",
                "spec.aws.ecrEndpoint",
            ),
            (
                "  proxy:\n",
                "  proxy:\n    bogus: 1\n",
                "unknown field `bogus`",
            ),
        ] {
            let text = with.replace(from, to);
            assert_ne!(text, with, "{from}");
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{from:?} -> {e}");
        }
    }

    #[test]
    fn a_missing_document_says_how_to_add_one() {
        let e = parse("apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bootstrap-config"), "{e}");
        // Alone in its file also works, and the first document starts at line 1.
        let alone = GOOD.split("---\n").nth(1).unwrap();
        parse(alone).unwrap();
        let e = parse(&alone.replace("spec:\n", "spec:\n  bogus: 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/hybridboot/config.yaml:4:3: spec: unknown field `bogus`"),
            "{e}"
        );
    }
}
