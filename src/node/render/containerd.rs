//! containerd: nodeadm's base config (version 2, systemd cgroups, the EKS pause image), the
//! user's TOML as a drop-in, and the kernel modules it needs.

use super::{Effect, RenderedFile};
use crate::node::config::NodeConfig;

/// containerd's main config.
pub const CONFIG_PATH: &str = "/etc/containerd/config.toml";
/// The user's drop-in (imported by the main config).
pub const DROP_IN_PATH: &str = "/etc/containerd/config.d/00-nodeadm.toml";
/// Kernel modules loaded at boot for containerd.
pub const MODULES_PATH: &str = "/etc/modules-load.d/containerd.conf";
/// The CRI socket.
pub const RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

const ALIVE_ACCOUNT: &str = "602401143452";

/// The EKS ECR registry nodeadm uses for hybrid nodes in `region` (no FIPS endpoint, no
/// manifest region override): opt-in regions have their own account, everything else uses
/// the us-west-2 registry of the commercial account.
pub fn eks_registry(region: &str) -> String {
    let by_region = [
        ("cn-north-1", "918309763551"),
        ("cn-northwest-1", "961992271922"),
        ("eu-isoe-west-1", "249663109785"),
        ("us-gov-east-1", "151742754352"),
        ("us-gov-west-1", "013241004608"),
        ("us-iso-east-1", "725322719131"),
        ("us-iso-west-1", "608367168043"),
        ("us-isob-east-1", "187977181151"),
        ("us-isof-south-1", "676585237158"),
    ];
    let (account, registry_region) = match by_region.iter().find(|(r, _)| *r == region) {
        Some((r, a)) => (*a, *r),
        None if region.starts_with("us-gov-") => ("013241004608", "us-gov-west-1"),
        None if region.starts_with("cn-") => ("961992271922", "cn-northwest-1"),
        None if region.starts_with("us-iso-") => ("725322719131", "us-iso-east-1"),
        None if region.starts_with("us-isob-") => ("187977181151", "us-isob-east-1"),
        None if region.starts_with("us-isof-") => ("676585237158", "us-isof-south-1"),
        None => (ALIVE_ACCOUNT, "us-west-2"),
    };
    format!("{account}.dkr.ecr.{registry_region}.{}", dns_suffix(region))
}

/// The partition's DNS suffix, from the region name.
fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-isoe-") {
        "cloud.adc-e.uk"
    } else if region.starts_with("us-isof-") {
        "csp.hci.ic.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else if region.starts_with("eusc-") {
        "amazonaws.eu"
    } else {
        "amazonaws.com"
    }
}

/// The pause image pinned as containerd's sandbox image.
pub fn sandbox_image(region: &str) -> String {
    format!("{}/eks/pause:3.5", eks_registry(region))
}

/// nodeadm's containerd config template with the sandbox image filled in.
pub fn base_config(sandbox_image: &str) -> String {
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# Users can use the following import directory to add additional
# configuration to containerd. The imports do not behave exactly like overrides.
# see: https://github.com/containerd/containerd/blob/main/docs/man/containerd-config.toml.5.md#format
imports = ["/etc/containerd/config.d/*.toml"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    discard_unpacked_layers = true
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
"#
    )
}

/// The containerd files: base config, the user's drop-in when given, kernel modules.
pub fn files(cfg: &NodeConfig) -> Vec<RenderedFile> {
    let sandbox = sandbox_image(&cfg.cluster.region);
    // The sandbox image is a TOML basic string: the region comes from validated input, but a
    // quote would still break the file, so escape like TOML wants.
    let sandbox = sandbox.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = vec![RenderedFile::new(
        CONFIG_PATH,
        base_config(&sandbox),
        &[Effect::Containerd],
    )];
    if let Some(user) = &cfg.containerd_config {
        out.push(RenderedFile::new(
            DROP_IN_PATH,
            user.as_bytes(),
            &[Effect::Containerd],
        ));
    }
    out.push(RenderedFile::new(
        MODULES_PATH,
        "overlay\nbr_netfilter",
        &[Effect::ModulesLoad],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_follow_nodeadm() {
        assert_eq!(
            sandbox_image("us-west-2"),
            "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5"
        );
        // Not opt-in: nodeadm falls back to the us-west-2 registry.
        assert_eq!(
            eks_registry("eu-central-1"),
            "602401143452.dkr.ecr.us-west-2.amazonaws.com"
        );
        assert_eq!(
            eks_registry("cn-north-1"),
            "918309763551.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            eks_registry("us-gov-east-2"),
            "013241004608.dkr.ecr.us-gov-west-1.amazonaws.com"
        );
    }

    #[test]
    fn base_config_is_valid_toml() {
        let t: toml::Table = base_config("x/eks/pause:3.5").parse().unwrap();
        assert_eq!(t["version"].as_integer(), Some(2));
    }
}
