//! Init's last step: containerd's `k8s.io` namespace holds the sandbox image its config pins
//! (nodeadm pulls it right after starting containerd). The pull itself is
//! [`crate::node::sandbox`]; this is where init's settings meet it.

use std::path::{Path, PathBuf};

use super::cluster::node_credentials;
use super::InitSettings;
use crate::error::Classify as _;
use crate::node::config::NodeConfig;
use crate::node::render::AwsOverrides;
use crate::node::sandbox::{self, SandboxSettings};
use crate::retry::RetryPolicy;

/// Whether `HYBRIDBOOT_SYSTEMCTL` replaces systemd (tests): containerd then is whatever the
/// stand-in provides.
fn stand_in_service_manager() -> bool {
    std::env::var_os("HYBRIDBOOT_SYSTEMCTL").is_some_and(|v| !v.is_empty())
}

/// The sandbox step's settings from init's: endpoints, the CA bundle (under the root), the
/// retry policy.
pub fn sandbox_settings(args: &InitSettings, policy: &RetryPolicy) -> SandboxSettings {
    let mut s = SandboxSettings::new(&args.root);
    s.ecr_endpoint = args.ecr_endpoint.clone();
    s.registry_endpoint = args.ecr_registry_endpoint.clone();
    s.ca_bundle = args
        .aws
        .ca_bundle
        .as_deref()
        .map(|p| crate::fsutil::under_root(&args.root, p))
        .or_else(|| {
            std::env::var("AWS_CA_BUNDLE")
                .ok()
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
    s.retry = *policy;
    s
}

/// Makes sure containerd holds the sandbox image. With a stand-in service manager and no
/// containerd serving, the step is skipped (logged); under systemd, a containerd that does not
/// answer is an error.
pub(super) fn ensure_sandbox_image(
    args: &InitSettings,
    cfg: &NodeConfig,
    extra: &AwsOverrides,
    policy: &RetryPolicy,
) -> anyhow::Result<()> {
    let settings = sandbox_settings(args, policy);
    let stand_in = stand_in_service_manager();
    let info = match sandbox::read_config(&settings) {
        Ok(i) => i,
        Err(e) if stand_in => {
            log::info!("sandbox image: skipped, containerd is not managed here ({e})");
            return Ok(());
        }
        Err(e) => return Err(e.classed()),
    };
    let socket = sandbox::socket_path(&settings, &info);
    if stand_in && !socket.exists() {
        log::info!(
            "sandbox image: skipped, no containerd serving at {} (HYBRIDBOOT_SYSTEMCTL stands in for systemd)",
            socket.display()
        );
        return Ok(());
    }
    let root: &Path = &args.root;
    let mut credentials = || node_credentials(cfg, extra, root, policy);
    sandbox::ensure_with(&settings, &info, &socket, &mut credentials)
        .map(|_| ())
        .map_err(|e| e.classed())
}
