//! Every file `nodeadm init` (and the kubelet unit of `nodeadm install`) writes, as pure
//! functions of the validated [`NodeConfig`], the [`ClusterDetails`] and the [`NodeFacts`].
//!
//! Contents follow nodeadm (aws/eks-hybrid) so that its golden files match, except where
//! hybridboot deliberately differs: the kubeconfig's exec plugin and the AWS config's
//! `credential_process` run hybridboot itself (no aws-iam-authenticator, no
//! aws_signing_helper), arguments that need it are shell-quoted (PKCS#11 URIs contain `;`),
//! and kubelet flags are written in a stable order so a second run changes nothing.

pub mod aws;
pub mod containerd;
pub mod kubelet;
pub mod proxy;
pub mod system;

use crate::error::{Class, Classify};
use std::path::PathBuf;

use super::config::{parse_cidr, NodeConfig};

/// What the cluster is: from the NodeConfig, or from DescribeCluster when it lacks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDetails {
    /// API server URL.
    pub endpoint: String,
    /// Cluster CA, PEM bytes (the decoded `certificateAuthority`).
    pub certificate_authority: Vec<u8>,
    /// Kubernetes service CIDR (clusterDNS is derived from it).
    pub service_cidr: String,
}

impl ClusterDetails {
    /// The details the NodeConfig carries, when it has all three (else DescribeCluster is needed).
    pub fn from_config(cfg: &NodeConfig) -> Option<ClusterDetails> {
        Some(ClusterDetails {
            endpoint: cfg.cluster.api_server_endpoint.clone()?,
            certificate_authority: cfg.cluster.certificate_authority.clone()?,
            service_cidr: cfg.cluster.cidr.clone()?,
        })
    }
}

/// A kubelet version, `vMAJOR.MINOR.PATCH` (from `kubelet --version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeletVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl KubeletVersion {
    /// Finds the first `vX.Y.Z` in text such as `Kubernetes v1.31.2-eks-7f9249a`.
    pub fn parse(text: &str) -> Option<KubeletVersion> {
        // The first `v` followed by a digit, else the text itself (`1.31.2`).
        let start = text
            .char_indices()
            .find(|&(i, c)| c == 'v' && text[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map_or(0, |(i, _)| i + 1);
        text[start..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .and_then(|v| {
                let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
                Some(KubeletVersion {
                    major: it.next()??,
                    minor: it.next()??,
                    patch: it.next().flatten().unwrap_or(0),
                })
            })
    }

    /// Kubelet >= 1.29 reads drop-in config directories (and ignores
    /// `--pod-infra-container-image`).
    pub fn supports_config_dir(&self) -> bool {
        (self.major, self.minor) >= (1, 29)
    }
}

impl std::fmt::Display for KubeletVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Facts about this machine that change what is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Total memory in bytes (kubeReserved memory tiers).
    pub memory_bytes: u64,
    /// Online CPUs (kubeReserved CPU tiers).
    pub cpus: u32,
    /// Installed kubelet version.
    pub kubelet_version: KubeletVersion,
    /// Absolute path of the hybridboot binary that credential_process, the kubeconfig and the
    /// update unit run.
    pub hybridboot_path: PathBuf,
    /// Ubuntu's systemd-resolved needs kubelet pointed at the real resolv.conf.
    pub ubuntu: bool,
    /// The ECR credential provider binary (nodeadm's default, or `ECR_CREDENTIAL_PROVIDER_BIN_PATH`).
    pub ecr_credential_provider: PathBuf,
    /// Where the node's Roles Anywhere refreshes go, when not to the region's public endpoint.
    pub aws: AwsOverrides,
}

/// What the node's `credential_process` line and update unit need beyond nodeadm's arguments:
/// a private IAM Roles Anywhere endpoint, the CAs of the AWS endpoints' TLS certificates
/// (BootstrapConfig `spec.aws`), and where the key lives when not at the defaults (`spec.key`;
/// `init --roles-anywhere-endpoint/--aws-ca-bundle/--tcti/--pkcs11-lib`). Unset, the files are
/// nodeadm's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsOverrides {
    /// `--endpoint` of credential-process and update.
    pub roles_anywhere_endpoint: Option<String>,
    /// `--ca-bundle` of credential-process and update.
    pub ca_bundle: Option<PathBuf>,
    /// `--tcti` of credential-process and update: a TPM not at the default `/dev/tpmrm0`.
    pub tcti: Option<String>,
    /// `--pkcs11-lib`: the PKCS#11 module when the key URI names none.
    pub pkcs11_lib: Option<PathBuf>,
    /// The site's HTTP proxy: `--https-proxy/--http-proxy/--no-proxy` of credential-process
    /// and update (`--with-proxy` when a proxy URL carries a password, which must not be on a
    /// command line: the refreshes then take it from the kubelet's environment), and the
    /// containerd and kubelet drop-ins ([`proxy`]).
    pub proxy: Option<proxy::ProxyEnv>,
}

/// nodeadm's ECR credential provider location.
pub const DEFAULT_ECR_CREDENTIAL_PROVIDER: &str =
    "/etc/eks/image-credential-provider/ecr-credential-provider";

/// What must happen when a file changed. The variants are in the order they must be carried
/// out (a `BTreeSet<Effect>` iterates in that order): stop what is gone, reload units, refresh
/// credentials, kernel settings, then containerd before the kubelet that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// Stop and disable a unit that is no longer wanted.
    Stop(&'static str),
    /// `systemctl daemon-reload` (a unit file changed).
    DaemonReload,
    /// Restart the credentials update unit.
    CredentialsUpdate,
    /// Restart `systemd-sysctl`.
    Sysctl,
    /// Restart `systemd-modules-load`.
    ModulesLoad,
    /// Restart containerd.
    Containerd,
    /// Restart kubelet.
    Kubelet,
    /// Nothing to restart (credential_process is read on each use).
    None,
}

/// The `init` phase a file belongs to; `--skip NAME` leaves that phase's files alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilePhase {
    /// AWS config and the credentials update unit (`aws`).
    Aws,
    /// Kernel settings (`system`).
    System,
    /// containerd config, drop-in and modules (`containerd`).
    Containerd,
    /// kubelet config, kubeconfig, CA, environment, unit (`kubelet`).
    Kubelet,
}

impl FilePhase {
    /// The name used with `--skip`.
    pub fn name(self) -> &'static str {
        match self {
            FilePhase::Aws => "aws",
            FilePhase::System => "system",
            FilePhase::Containerd => "containerd",
            FilePhase::Kubelet => "kubelet",
        }
    }
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// The phase that writes it.
    pub phase: FilePhase,
    /// Absolute path on the node (prefix it with `--root`).
    pub path: PathBuf,
    /// Exact content.
    pub contents: Vec<u8>,
    /// Permission bits (nodeadm writes everything 0644).
    pub mode: u32,
    /// What changes to this file require.
    pub effects: Vec<Effect>,
}

impl RenderedFile {
    fn new(path: &str, contents: impl Into<Vec<u8>>, effects: &[Effect]) -> RenderedFile {
        RenderedFile {
            // Set by render_all per group.
            phase: FilePhase::Kubelet,
            path: PathBuf::from(path),
            contents: contents.into(),
            mode: 0o644,
            effects: effects.to_vec(),
        }
    }
}

/// A file an earlier run (of hybridboot or nodeadm) wrote that the current configuration no
/// longer wants. Leaving it would keep it in force: containerd imports every drop-in in
/// `config.d`, and a stale credentials unit would keep running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObsoleteFile {
    /// The phase that owns it.
    pub phase: FilePhase,
    /// Absolute path on the node.
    pub path: PathBuf,
    /// What removing it requires.
    pub effects: Vec<Effect>,
}

/// nodeadm's unit for the credentials file, replaced by hybridboot's.
pub const NODEADM_UPDATE_UNIT_PATH: &str = "/etc/systemd/system/aws_signing_helper_update.service";

/// Files to remove for this configuration (only if present).
pub fn obsolete_files(cfg: &NodeConfig, facts: &NodeFacts) -> Vec<ObsoleteFile> {
    let mut out = vec![ObsoleteFile {
        phase: FilePhase::Aws,
        path: NODEADM_UPDATE_UNIT_PATH.into(),
        effects: vec![
            Effect::Stop("aws_signing_helper_update.service"),
            Effect::DaemonReload,
        ],
    }];
    if !cfg.enable_credentials_file {
        out.push(ObsoleteFile {
            phase: FilePhase::Aws,
            path: aws::UPDATE_UNIT_PATH.into(),
            effects: vec![Effect::Stop(aws::UPDATE_UNIT_NAME), Effect::DaemonReload],
        });
    }
    if cfg.containerd_config.is_none() {
        out.push(ObsoleteFile {
            phase: FilePhase::Containerd,
            path: containerd::DROP_IN_PATH.into(),
            effects: vec![Effect::Containerd],
        });
    }
    if cfg.kubelet.config.is_empty() || !facts.kubelet_version.supports_config_dir() {
        out.push(ObsoleteFile {
            phase: FilePhase::Kubelet,
            path: kubelet::DROP_IN_PATH.into(),
            effects: vec![Effect::Kubelet],
        });
    }
    out
}

/// Why rendering failed (inputs that validation could not see, such as the service CIDR that
/// DescribeCluster returned).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The service CIDR is not a CIDR.
    #[error("cluster service CIDR: {0}")]
    ServiceCidr(String),
    /// Kubelet config could not be serialised (cannot happen with JSON values).
    #[error("kubelet config: {0}")]
    Json(#[from] serde_json::Error),
}

impl Classify for RenderError {
    /// What cannot be rendered comes from the configuration.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// Everything `init` writes, in nodeadm's order: AWS config (and update unit), containerd,
/// kernel settings, kubelet.
pub fn render_all(
    cfg: &NodeConfig,
    cluster: &ClusterDetails,
    facts: &NodeFacts,
) -> Result<Vec<RenderedFile>, RenderError> {
    parse_cidr(&cluster.service_cidr).map_err(RenderError::ServiceCidr)?;
    let tag = |phase: FilePhase, files: Vec<RenderedFile>| {
        files.into_iter().map(move |mut f| {
            f.phase = phase;
            f
        })
    };
    let mut aws_files = vec![aws::aws_config(cfg, facts)];
    if cfg.enable_credentials_file {
        aws_files.push(aws::update_unit(cfg, facts));
    }
    let mut files: Vec<RenderedFile> = tag(FilePhase::Aws, aws_files).collect();
    files.extend(tag(FilePhase::Containerd, containerd::files(cfg)));
    // Proxy drop-ins carry their own phases (containerd's, the kubelet's).
    files.extend(proxy::files(facts.aws.proxy.as_ref(), cluster));
    files.extend(tag(FilePhase::System, vec![system::sysctl()]));
    files.extend(tag(
        FilePhase::Kubelet,
        kubelet::files(cfg, cluster, facts)?,
    ));
    Ok(files)
}

/// Quotes one word for a POSIX shell when it needs it: the AWS SDKs run `credential_process`
/// through `sh -c` (Go, Rust) or split it with `shlex` (botocore); both undo single quotes.
/// Words made only of safe characters stay bare, so plain paths look exactly like nodeadm's.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'.' | b'-' | b'_' | b':' | b'=' | b'@' | b',' | b'+'
                )
        });
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Quotes one word of a systemd `ExecStart=` line: double quotes when needed, and `%`/`$`
/// doubled because systemd expands specifiers and variables even inside quotes.
pub fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let safe = !escaped.is_empty()
        && escaped.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'.' | b'-' | b'_' | b':' | b'=' | b'@' | b',' | b'+' | b'%' | b'$'
                )
        });
    if safe {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', r"\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        let v = KubeletVersion::parse("Kubernetes v1.31.2-eks-7f9249a").unwrap();
        assert_eq!(v.to_string(), "v1.31.2");
        assert!(v.supports_config_dir());
        assert!(!KubeletVersion::parse("v1.28.0")
            .unwrap()
            .supports_config_dir());
        assert!(KubeletVersion::parse("v1.29.0")
            .unwrap()
            .supports_config_dir());
        assert_eq!(KubeletVersion::parse("1.30").unwrap().minor, 30);
        assert!(KubeletVersion::parse("kubelet").is_none());
        assert_eq!(
            KubeletVersion::parse("kubelet version v1.30.4")
                .unwrap()
                .to_string(),
            "v1.30.4"
        );
    }

    #[test]
    fn shell_quoting_round_trips_through_sh() {
        for w in [
            "/etc/iam/pki/server.pem",
            "pkcs11:token=edge;object=node?pin-source=file:/run/pin",
            "it's",
            "a b",
            "",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(w)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), w);
        }
        assert_eq!(
            shell_quote("/etc/iam/pki/server.pem"),
            "/etc/iam/pki/server.pem"
        );
        assert_eq!(shell_quote("handle:0x81000001"), "handle:0x81000001");
    }

    #[test]
    fn systemd_quoting() {
        assert_eq!(systemd_quote("/a/b"), "/a/b");
        assert_eq!(
            systemd_quote("pkcs11:token=a%20b;object=k"),
            "\"pkcs11:token=a%%20b;object=k\""
        );
    }
}
