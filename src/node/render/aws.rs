//! The AWS side: the shared config whose `credential_process` runs hybridboot, and (with
//! `enableCredentialsFile`) the unit that keeps a shared credentials file fresh.

use super::{shell_quote, systemd_quote, AwsOverrides, Effect, NodeFacts, RenderedFile};
use crate::aws::session::{RolesAnywhereSettings, SessionProxy};
use crate::key::KeySettings;
use crate::node::config::NodeConfig;

/// The AWS profile hybridboot's consumers use (nodeadm's `ProfileName`).
pub const PROFILE: &str = "default";
/// The shared credentials file the update unit maintains (nodeadm's path).
pub const CREDENTIALS_FILE: &str = "/eks-hybrid/.aws/credentials";
/// The update unit (instead of nodeadm's `aws_signing_helper_update.service`).
pub const UPDATE_UNIT_NAME: &str = "hybridboot-update.service";
/// Where the update unit is written.
pub const UPDATE_UNIT_PATH: &str = "/etc/systemd/system/hybridboot-update.service";

/// The node's own Roles Anywhere session: the NodeConfig's `spec.hybrid.iamRolesAnywhere`
/// (nodeadm's arguments) and hybridboot's additions (endpoint, CA bundle, TCTI, PKCS#11 module).
/// `init` renders the node's `credential_process` line from it and makes its own session with it.
pub fn roles_anywhere_settings(cfg: &NodeConfig, extra: &AwsOverrides) -> RolesAnywhereSettings {
    let ira = &cfg.iam_roles_anywhere;
    let key = KeySettings {
        reference: ira.private_key.clone(),
        tcti: extra.tcti.clone(),
        pkcs11_lib: extra.pkcs11_lib.clone(),
        tpm_key_auth_file: None,
    };
    RolesAnywhereSettings {
        role_session_name: Some(ira.node_name.clone()),
        endpoint: extra.roles_anywhere_endpoint.clone(),
        ca_bundle: extra.ca_bundle.clone(),
        proxy: session_proxy(extra.proxy.as_ref()),
        ..RolesAnywhereSettings::new(
            ira.certificate_path.clone(),
            key,
            ira.trust_anchor_arn.clone(),
            ira.profile_arn.clone(),
            ira.role_arn.clone(),
        )
    }
}

/// The site's proxy as the node's session takes it: named on the line, unless a proxy URL
/// carries a password, which must not go on a command line or into a world-readable file; then
/// the line says `--with-proxy` and the kubelet's drop-in gives the exec plugin the proxy.
fn session_proxy(proxy: Option<&super::proxy::ProxyEnv>) -> SessionProxy {
    match proxy {
        None => SessionProxy::Direct,
        Some(p) if p.has_credentials() => SessionProxy::Environment,
        Some(p) => SessionProxy::Explicit {
            https_proxy: p.https_proxy.clone(),
            http_proxy: p.http_proxy.clone(),
            no_proxy: (!p.no_proxy.is_empty()).then(|| p.no_proxy_value()),
        },
    }
}

/// The Roles Anywhere arguments shared by `credential-process` and `update`, in nodeadm's order,
/// then the endpoint overrides (if any): [`roles_anywhere_settings`] as flags.
pub fn roles_anywhere_args(cfg: &NodeConfig, extra: &AwsOverrides) -> Vec<(&'static str, String)> {
    roles_anywhere_settings(cfg, extra).process_args()
}

/// `flag value` words of [`roles_anywhere_args`] (an empty value is a flag that takes none).
pub fn flag_words(args: &[(&'static str, String)]) -> Vec<String> {
    args.iter()
        .flat_map(|(flag, value)| {
            std::iter::once(flag.to_string()).chain((!value.is_empty()).then(|| value.clone()))
        })
        .collect()
}

/// The `credential_process` command line: hybridboot with every argument shell-quoted as needed.
pub fn credential_process(cfg: &NodeConfig, facts: &NodeFacts) -> String {
    let mut line = format!(
        "{} credential-process",
        shell_quote(&facts.hybridboot_path.display().to_string())
    );
    for (flag, value) in roles_anywhere_args(cfg, &facts.aws) {
        line.push(' ');
        line.push_str(flag);
        if !value.is_empty() {
            line.push(' ');
            line.push_str(&shell_quote(&value));
        }
    }
    line
}

/// `awsConfigPath` (default `/etc/aws/hybrid/config`): profile `default`, and nodeadm's
/// backward-compatible profile `hybrid` with the same content.
pub fn aws_config(cfg: &NodeConfig, facts: &NodeFacts) -> RenderedFile {
    let region = &cfg.cluster.region;
    let process = credential_process(cfg, facts);
    let text = format!(
        "[profile {PROFILE}]\nregion = {region}\ncredential_process = {process}\n\n\
         # hybrid profile is maintained for backwards compatibility, nodeadm no longer uses it\n\
         [profile hybrid]\nregion = {region}\ncredential_process = {process}\n"
    );
    RenderedFile {
        phase: super::FilePhase::Aws,
        path: cfg.iam_roles_anywhere.aws_config_path.clone(),
        contents: text.into_bytes(),
        mode: 0o644,
        effects: vec![Effect::None],
    }
}

/// The `hybridboot update` unit (nodeadm: `aws_signing_helper_update.service`).
pub fn update_unit(cfg: &NodeConfig, facts: &NodeFacts) -> RenderedFile {
    let mut exec = format!(
        "{} update",
        systemd_quote(&facts.hybridboot_path.display().to_string())
    );
    for (flag, value) in roles_anywhere_args(cfg, &facts.aws) {
        if value.is_empty() {
            exec.push_str(&format!(" \\\n        {flag}"));
        } else {
            exec.push_str(&format!(" \\\n        {flag} {}", systemd_quote(&value)));
        }
    }
    exec.push_str(&format!(
        " \\\n        --region {}",
        systemd_quote(&cfg.cluster.region)
    ));
    let text = format!(
        "[Unit]\n\
         Description=Service that runs hybridboot update to keep the AWS credentials refreshed in {CREDENTIALS_FILE}.\n\
         \n\
         [Service]\n\
         User=root\n\
         Environment=AWS_SHARED_CREDENTIALS_FILE={CREDENTIALS_FILE}\n\
         ExecStart={exec}\n\
         StandardOutput=journal\n\
         StandardError=journal\n\
         Restart=always\n\
         RestartSec=10\n\
         CPUAccounting=true\n\
         MemoryAccounting=true\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    );
    RenderedFile::new(
        UPDATE_UNIT_PATH,
        text,
        &[Effect::DaemonReload, Effect::CredentialsUpdate],
    )
}

#[cfg(test)]
mod tests {
    use super::super::proxy::ProxyEnv;
    use super::super::{KubeletVersion, NodeFacts, DEFAULT_ECR_CREDENTIAL_PROVIDER};
    use super::*;

    const NODE: &str = "\
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: my-cluster
    region: us-west-2
  hybrid:
    iamRolesAnywhere:
      nodeName: mock-hybrid-node
      roleArn: arn:aws:iam::123456789010:role/mockHybridNodeRole
      profileArn: arn:aws:rolesanywhere:us-west-2:123456789010:profile/p1
      trustAnchorArn: arn:aws:rolesanywhere:us-west-2:123456789010:trust-anchor/t1
";

    fn facts(proxy: Option<ProxyEnv>) -> NodeFacts {
        NodeFacts {
            memory_bytes: 1 << 33,
            cpus: 2,
            kubelet_version: KubeletVersion::parse("v1.31.2").unwrap(),
            hybridboot_path: "/usr/bin/hybridboot".into(),
            ubuntu: false,
            ecr_credential_provider: DEFAULT_ECR_CREDENTIAL_PROVIDER.into(),
            aws: AwsOverrides {
                proxy,
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_proxy_reaches_the_credential_process_line_and_the_update_unit() {
        let cfg = crate::node::config::parse(std::path::Path::new("/n.yaml"), NODE)
            .unwrap()
            .node;
        let base = "/usr/bin/hybridboot credential-process --certificate /etc/iam/pki/server.pem --private-key /etc/iam/pki/server.key --trust-anchor-arn arn:aws:rolesanywhere:us-west-2:123456789010:trust-anchor/t1 --profile-arn arn:aws:rolesanywhere:us-west-2:123456789010:profile/p1 --role-arn arn:aws:iam::123456789010:role/mockHybridNodeRole --role-session-name mock-hybrid-node";
        assert_eq!(credential_process(&cfg, &facts(None)), base);
        let plain = ProxyEnv {
            https_proxy: Some("http://proxy.example.com:3128".into()),
            http_proxy: None,
            no_proxy: vec![
                "localhost".into(),
                ".corp.example".into(),
                "10.0.0.0/8".into(),
            ],
        };
        assert_eq!(
            credential_process(&cfg, &facts(Some(plain.clone()))),
            format!("{base} --https-proxy http://proxy.example.com:3128 --no-proxy localhost,.corp.example,10.0.0.0/8")
        );
        let unit = String::from_utf8(update_unit(&cfg, &facts(Some(plain))).contents).unwrap();
        assert!(
            unit.contains("        --https-proxy http://proxy.example.com:3128 \\\n        --no-proxy localhost,.corp.example,10.0.0.0/8 \\\n        --region us-west-2\n"),
            "{unit}"
        );
        // A password stays off the command line: the proxy then comes from the environment.
        let secret = ProxyEnv {
            https_proxy: Some("http://edge:s3cret@proxy:3128".into()),
            ..Default::default()
        };
        let line = credential_process(&cfg, &facts(Some(secret.clone())));
        assert_eq!(line, format!("{base} --with-proxy"));
        let unit = String::from_utf8(update_unit(&cfg, &facts(Some(secret))).contents).unwrap();
        assert!(
            !unit.contains("s3cret") && unit.contains("        --with-proxy \\\n"),
            "{unit}"
        );
        // The words init runs in-process parse as credential-process arguments.
        let words = flag_words(&roles_anywhere_args(
            &cfg,
            &facts(Some(ProxyEnv {
                https_proxy: Some("http://p:1".into()),
                ..Default::default()
            }))
            .aws,
        ));
        assert_eq!(&words[words.len() - 2..], ["--https-proxy", "http://p:1"]);
    }
}
