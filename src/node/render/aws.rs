//! The AWS side: the shared config whose `credential_process` runs hybridboot, and (with
//! `enableCredentialsFile`) the unit that keeps a shared credentials file fresh.

use super::{shell_quote, systemd_quote, AwsOverrides, Effect, NodeFacts, RenderedFile};
use crate::aws::session::RolesAnywhereSettings;
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
        ..KeySettings::default()
    };
    RolesAnywhereSettings {
        role_session_name: Some(ira.node_name.clone()),
        endpoint: extra.roles_anywhere_endpoint.clone(),
        ca_bundle: extra.ca_bundle.clone(),
        ..RolesAnywhereSettings::new(
            ira.certificate_path.clone(),
            key,
            ira.trust_anchor_arn.clone(),
            ira.profile_arn.clone(),
            ira.role_arn.clone(),
        )
    }
}

/// The Roles Anywhere arguments shared by `credential-process` and `update`, in nodeadm's order,
/// then the endpoint overrides (if any): [`roles_anywhere_settings`] as flags.
pub fn roles_anywhere_args(cfg: &NodeConfig, extra: &AwsOverrides) -> Vec<(&'static str, String)> {
    roles_anywhere_settings(cfg, extra).process_args()
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
        line.push(' ');
        line.push_str(&shell_quote(&value));
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
        exec.push_str(&format!(" \\\n        {flag} {}", systemd_quote(&value)));
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
