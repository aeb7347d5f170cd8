//! The configuration documents the tests write: nodeadm's NodeConfig and hybridboot's
//! BootstrapConfig, rendered from plain structs so that every topic writes them the same way.
//! Build one with struct update syntax over a preset:
//!
//! ```ignore
//! let node = NodeConfig { node_ip: Some("10.80.0.5".into()), ..NodeConfig::moto_site("node-1", key) };
//! ```
//!
//! The rendering is fixed (field order, optional fields left out when `None`), so a test may
//! edit the text or name a line number of it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::peers::RolesAnywhere;

/// What every node image the tests build holds before first boot, under `root`: the AWS
/// endpoints' CA at `/etc/hybridboot/aws-ca.pem` and the image's kubelet (a stand-in that
/// answers `--version`: there is no kubelet package here, and init only asks its version).
pub fn seed_image(root: &Path, aws_ca: &Path) {
    let etc = root.join("etc/hybridboot");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(aws_ca, etc.join("aws-ca.pem")).unwrap();
    let bin = root.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("kubelet"), "#!/bin/sh\necho Kubernetes v1.31.2\n").unwrap();
    std::fs::set_permissions(bin.join("kubelet"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `apiVersion: node.eks.aws/v1alpha1`, `kind: NodeConfig` with IAM Roles Anywhere.
#[derive(Clone)]
pub struct NodeConfig {
    pub cluster: String,
    pub region: String,
    /// `spec.kubelet.flags: [--node-ip=<ip>]`.
    pub node_ip: Option<String>,
    pub node_name: String,
    pub role_arn: String,
    pub profile_arn: String,
    pub trust_anchor_arn: String,
    pub certificate_path: Option<String>,
    pub private_key_path: String,
    pub aws_config_path: Option<String>,
}

impl NodeConfig {
    /// Cluster `my-cluster` in us-west-2 with example ARNs (account 123456789010): for tests
    /// that contact no peer.
    pub fn example(node_name: &str, private_key_path: &str) -> NodeConfig {
        NodeConfig {
            cluster: "my-cluster".into(),
            region: "us-west-2".into(),
            node_ip: None,
            node_name: node_name.into(),
            role_arn: "arn:aws:iam::123456789010:role/HybridNodes".into(),
            profile_arn: "arn:aws:rolesanywhere:us-west-2:123456789010:profile/p".into(),
            trust_anchor_arn: "arn:aws:rolesanywhere:us-west-2:123456789010:trust-anchor/t".into(),
            certificate_path: None,
            private_key_path: private_key_path.into(),
            aws_config_path: None,
        }
    }

    /// Cluster `hybrid-test` in us-east-1 and the role `hybrid-node` of account 123456789012:
    /// what tests/peers/moto_setup.py creates.
    pub fn moto_site(node_name: &str, private_key_path: &str) -> NodeConfig {
        NodeConfig {
            cluster: "hybrid-test".into(),
            region: "us-east-1".into(),
            role_arn: "arn:aws:iam::123456789012:role/hybrid-node".into(),
            profile_arn: "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p".into(),
            trust_anchor_arn: "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta".into(),
            ..NodeConfig::example(node_name, private_key_path)
        }
    }

    /// This configuration with the ARNs of the Roles Anywhere test endpoint `ra`.
    pub fn with_endpoint(self, ra: &RolesAnywhere) -> NodeConfig {
        NodeConfig {
            role_arn: ra.role_arn.clone(),
            profile_arn: ra.profile_arn.clone(),
            trust_anchor_arn: ra.trust_anchor_arn.clone(),
            ..self
        }
    }

    /// The YAML document (no `---` before it).
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: {}\n    region: {}\n",
            self.cluster, self.region
        );
        if let Some(ip) = &self.node_ip {
            y += &format!("  kubelet:\n    flags:\n      - --node-ip={ip}\n");
        }
        y += &format!(
            "  hybrid:\n    iamRolesAnywhere:\n      nodeName: {}\n      roleArn: {}\n      profileArn: {}\n      trustAnchorArn: {}\n",
            self.node_name, self.role_arn, self.profile_arn, self.trust_anchor_arn
        );
        if let Some(p) = &self.certificate_path {
            y += &format!("      certificatePath: {p}\n");
        }
        y += &format!("      privateKeyPath: {}\n", self.private_key_path);
        if let Some(p) = &self.aws_config_path {
            y += &format!("      awsConfigPath: {p}\n");
        }
        y
    }
}

/// `spec.vault.auth` with a token file.
pub const TOKEN_FILE_AUTH: &str = "      tokenFile: /etc/hybridboot/vault-token\n";

/// `spec.vault.auth` with AppRole and a response-wrapped secret id.
pub const WRAPPED_APPROLE_AUTH: &str = "      appRole:\n        roleIdFile: /etc/hybridboot/role-id\n        secretIdFile: /etc/hybridboot/secret-id\n        wrapped: true\n";

/// `spec.aws`: where the node reaches AWS.
#[derive(Clone)]
pub struct AwsEndpoints {
    pub roles_anywhere: String,
    pub eks: String,
    pub ca_bundle: String,
}

/// `apiVersion: hybridboot/v1alpha1`, `kind: BootstrapConfig`.
#[derive(Clone)]
pub struct BootstrapConfig {
    pub key_ref: String,
    pub tcti: String,
    pub vault_address: String,
    pub vault_ca_bundle: Option<String>,
    pub pki_mount: Option<String>,
    pub role: String,
    pub ttl: Option<String>,
    /// The lines under `spec.vault.auth:`, indented six spaces ([`TOKEN_FILE_AUTH`], ...).
    pub auth: String,
    pub aws: Option<AwsEndpoints>,
    /// `spec.timeouts.{overall, timeSync}`.
    pub timeouts: Option<(String, String)>,
}

impl BootstrapConfig {
    /// Key `key_ref` on the TPM at `tcti`, Vault at `vault_address` (role `node`, token file).
    pub fn new(key_ref: &str, tcti: &str, vault_address: &str) -> BootstrapConfig {
        BootstrapConfig {
            key_ref: key_ref.into(),
            tcti: tcti.into(),
            vault_address: vault_address.into(),
            vault_ca_bundle: None,
            pki_mount: None,
            role: "node".into(),
            ttl: None,
            auth: TOKEN_FILE_AUTH.into(),
            aws: None,
            timeouts: None,
        }
    }

    /// [`BootstrapConfig::new`] as first boot tests use it against the test peers: OpenBao's
    /// `pki_int` mount with a 24 h TTL, AWS through `aws` (CA bundle
    /// `/etc/hybridboot/aws-ca.pem`), a 2 min deadline and a 5 s time check.
    pub fn site(
        key_ref: &str,
        tcti: &str,
        vault_address: &str,
        roles_anywhere: &str,
        eks: &str,
    ) -> BootstrapConfig {
        BootstrapConfig {
            pki_mount: Some("pki_int".into()),
            ttl: Some("24h".into()),
            aws: Some(AwsEndpoints {
                roles_anywhere: roles_anywhere.into(),
                eks: eks.into(),
                ca_bundle: "/etc/hybridboot/aws-ca.pem".into(),
            }),
            timeouts: Some(("2m".into(), "5s".into())),
            ..BootstrapConfig::new(key_ref, tcti, vault_address)
        }
    }

    /// The YAML document (no `---` before it).
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: hybridboot/v1alpha1\nkind: BootstrapConfig\nspec:\n  key:\n    ref: {}\n    tcti: {}\n  vault:\n    address: {}\n",
            self.key_ref, self.tcti, self.vault_address
        );
        if let Some(ca) = &self.vault_ca_bundle {
            y += &format!("    caBundle: {ca}\n");
        }
        if let Some(m) = &self.pki_mount {
            y += &format!("    pkiMount: {m}\n");
        }
        y += &format!("    role: {}\n", self.role);
        if let Some(t) = &self.ttl {
            y += &format!("    ttl: {t}\n");
        }
        y += &format!("    auth:\n{}", self.auth);
        if let Some(a) = &self.aws {
            y += &format!(
                "  aws:\n    rolesAnywhereEndpoint: {}\n    eksEndpoint: {}\n    caBundle: {}\n",
                a.roles_anywhere, a.eks, a.ca_bundle
            );
        }
        if let Some((overall, time_sync)) = &self.timeouts {
            y += &format!("  timeouts:\n    overall: {overall}\n    timeSync: {time_sync}\n");
        }
        y
    }
}

/// First boot's configuration file: the NodeConfig, then the BootstrapConfig.
pub fn firstboot_yaml(node: &NodeConfig, boot: &BootstrapConfig) -> String {
    format!("{}---\n{}", node.yaml(), boot.yaml())
}
