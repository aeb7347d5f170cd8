//! The AWS side: the shared config whose `credential_process` runs hybridboot, and (with
//! `enableCredentialsFile`) the unit that keeps a shared credentials file fresh.

use super::{shell_quote, systemd_quote, AwsOverrides, Effect, NodeFacts, RenderedFile};
use crate::node::config::NodeConfig;

/// The AWS profile hybridboot's consumers use (nodeadm's `ProfileName`).
pub const PROFILE: &str = "default";
/// The shared credentials file the update unit maintains (nodeadm's path).
pub const CREDENTIALS_FILE: &str = "/eks-hybrid/.aws/credentials";
/// The update unit (instead of nodeadm's `aws_signing_helper_update.service`).
pub const UPDATE_UNIT_NAME: &str = "hybridboot-update.service";
/// Where the update unit is written.
pub const UPDATE_UNIT_PATH: &str = "/etc/systemd/system/hybridboot-update.service";

/// The Roles Anywhere arguments shared by `credential-process` and `update`, in nodeadm's order,
/// then the endpoint overrides (if any).
pub fn roles_anywhere_args(cfg: &NodeConfig, extra: &AwsOverrides) -> Vec<(&'static str, String)> {
    let ira = &cfg.iam_roles_anywhere;
    let mut args = vec![
        ("--certificate", ira.certificate_path.display().to_string()),
        ("--private-key", ira.private_key.clone()),
        ("--trust-anchor-arn", ira.trust_anchor_arn.clone()),
        ("--profile-arn", ira.profile_arn.clone()),
        ("--role-arn", ira.role_arn.clone()),
        ("--role-session-name", ira.node_name.clone()),
    ];
    if let Some(e) = &extra.roles_anywhere_endpoint {
        args.push(("--endpoint", e.clone()));
    }
    if let Some(ca) = &extra.ca_bundle {
        args.push(("--ca-bundle", ca.display().to_string()));
    }
    if let Some(t) = &extra.tcti {
        args.push(("--tcti", t.clone()));
    }
    if let Some(lib) = &extra.pkcs11_lib {
        args.push(("--pkcs11-lib", lib.display().to_string()));
    }
    if let Some(p) = &extra.proxy {
        if p.has_credentials() {
            // No password on a command line or in a world-readable file: take the proxy from
            // the environment (the kubelet's drop-in gives it to the exec plugin).
            args.push(("--with-proxy", String::new()));
        } else {
            if let Some(u) = &p.https_proxy {
                args.push(("--https-proxy", u.clone()));
            }
            if let Some(u) = &p.http_proxy {
                args.push(("--http-proxy", u.clone()));
            }
            if !p.no_proxy.is_empty() {
                args.push(("--no-proxy", p.no_proxy_value()));
            }
        }
    }
    args
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
