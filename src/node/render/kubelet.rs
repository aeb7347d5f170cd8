//! kubelet: its configuration (nodeadm's defaults for hybrid nodes, with the user's config
//! merged in or dropped in next to it), the flags in its environment file, the kubeconfig whose
//! exec plugin is `hybridboot token`, the cluster CA, the image credential provider config and
//! the unit.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::containerd::{sandbox_image, RUNTIME_ENDPOINT};
use super::{aws, ClusterDetails, Effect, NodeFacts, RenderError, RenderedFile};
use crate::node::config::NodeConfig;

/// kubelet's config file.
pub const CONFIG_PATH: &str = "/etc/kubernetes/kubelet/config.json";
/// kubelet's drop-in directory (kubelet >= 1.29).
pub const CONFIG_DIR: &str = "/etc/kubernetes/kubelet/config.json.d";
/// The user's kubelet config as a drop-in.
pub const DROP_IN_PATH: &str = "/etc/kubernetes/kubelet/config.json.d/00-nodeadm.conf";
/// kubelet's kubeconfig.
pub const KUBECONFIG_PATH: &str = "/var/lib/kubelet/kubeconfig";
/// The cluster CA.
pub const CA_PATH: &str = "/etc/kubernetes/pki/ca.crt";
/// Environment file the kubelet unit reads (`NODEADM_KUBELET_ARGS`).
pub const ENVIRONMENT_PATH: &str = "/etc/eks/kubelet/environment";
/// Image credential provider config.
pub const IMAGE_CREDENTIAL_PROVIDER_CONFIG: &str = "/etc/eks/image-credential-provider/config.json";
/// The kubelet unit (written by `nodeadm install`).
pub const UNIT_PATH: &str = "/etc/systemd/system/kubelet.service";
/// The drop-in `upgrade` adds to the kubelet unit: while an upgrade is replacing binaries
/// ([`UPGRADE_MARKER_PATH`] exists), systemd does not start the kubelet, so a power cut in
/// the middle of the replacement cannot boot the node into a mixed set of binaries. Harmless
/// (the condition holds) at every other time; `uninstall` removes it.
pub const UPGRADE_GUARD_PATH: &str =
    "/etc/systemd/system/kubelet.service.d/90-hybridboot-upgrade.conf";
/// Exists exactly while `upgrade` moves the new binaries into place.
pub const UPGRADE_MARKER_PATH: &str = "/var/lib/hybridboot/upgrade.replacing";

/// The text of [`UPGRADE_GUARD_PATH`].
pub fn upgrade_guard() -> String {
    format!(
        "# Written by `hybridboot upgrade`: the kubelet does not start while an upgrade is\n\
         # replacing its binaries (a power cut then leaves the node down, not mixed);\n\
         # `hybridboot upgrade VERSION` run again finishes the upgrade and starts it.\n\
         [Unit]\n\
         ConditionPathExists=!{UPGRADE_MARKER_PATH}\n"
    )
}

/// systemd-resolved's real resolv.conf (Ubuntu).
pub const UBUNTU_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

const HYBRID_NODE_LABEL: &str = "eks.amazonaws.com/compute-type=hybrid";
const CREDENTIAL_PROVIDER_LABEL: &str = "eks.amazonaws.com/hybrid-credential-provider=iam-ra";

/// The kubelet's DNS server: nodeadm's heuristic on the service CIDR (`x.y.z.10` for IPv4,
/// `<prefix>a` for IPv6), as the EKS CoreDNS add-on assigns it.
pub fn cluster_dns(service_cidr: &str) -> String {
    let addr = service_cidr.split('/').next().unwrap_or(service_cidr);
    if addr.contains(':') {
        format!("{addr}a")
    } else {
        let prefix = &service_cidr[..service_cidr.rfind('.').unwrap_or(0)];
        format!("{prefix}.10")
    }
}

/// Memory reserved for Kubernetes daemons on a hybrid node (nodeadm's tiers: 255Mi below
/// 1 GiB, then 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% up to 128 GiB
/// and 2% above, rounded to whole GiB).
pub fn reserved_memory(memory_bytes: u64) -> String {
    let gib = (memory_bytes / (1024 * 1024 * 1024)) as f64;
    let reserve = if gib < 1.0 {
        return "255Mi".to_string();
    } else if gib < 4.0 {
        gib * 0.25
    } else if gib < 8.0 {
        0.25 * 4.0 + (gib - 4.0) * 0.2
    } else if gib < 16.0 {
        0.25 * 4.0 + 0.20 * 4.0 + (gib - 8.0) * 0.1
    } else if gib <= 128.0 {
        0.25 * 4.0 + 0.20 * 4.0 + 0.10 * 8.0 + (gib - 16.0) * 0.06
    } else {
        0.25 * 4.0 + 0.20 * 4.0 + 0.10 * 8.0 + 0.06 * 112.0 + (gib - 128.0) * 0.02
    };
    // Go's math.Round and Rust's f64::round both round half away from zero.
    format!("{}Gi", reserve.round() as i64)
}

/// CPU reserved for Kubernetes daemons: 6% of the first core, 1% of the second, 0.5% of the
/// next two, 0.25% of the rest (in millicores).
pub fn reserved_cpu_millicores(cpus: u32) -> u64 {
    let total = cpus as u64 * 1000;
    let ranges = [0, 1000, 2000, 4000, total];
    let percent = [600, 100, 50, 25];
    (0..4)
        .map(|i| {
            let (start, end) = (ranges[i], ranges[i + 1]);
            if total <= start {
                0
            } else {
                (total.min(end) - start) * percent[i] / 10000
            }
        })
        .sum()
}

/// nodeadm's generated KubeletConfiguration for a hybrid node.
pub fn base_config(cfg: &NodeConfig, cluster: &ClusterDetails, facts: &NodeFacts) -> Value {
    let mut c = json!({
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "address": "0.0.0.0",
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": CA_PATH}
        },
        "authorization": {
            "mode": "Webhook",
            "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"}
        },
        "cgroupDriver": "systemd",
        "cgroupRoot": "/",
        "clusterDNS": [cluster_dns(&cluster.service_cidr)],
        "clusterDomain": "cluster.local",
        "containerRuntimeEndpoint": RUNTIME_ENDPOINT,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "10%",
            "nodefs.inodesFree": "5%"
        },
        "featureGates": {"RotateKubeletServerCertificate": true},
        "hairpinMode": "hairpin-veth",
        "kubeReserved": {
            "cpu": format!("{}m", reserved_cpu_millicores(facts.cpus)),
            "ephemeral-storage": "1Gi",
            "memory": reserved_memory(facts.memory_bytes)
        },
        "kubeReservedCgroup": "/runtime",
        "logging": {"verbosity": 2},
        "protectKernelDefaults": true,
        "providerID": format!(
            "eks-hybrid:///{}/{}/{}",
            cfg.cluster.region, cfg.cluster.name, cfg.iam_roles_anywhere.node_name
        ),
        "readOnlyPort": 0,
        "serializeImagePulls": false,
        "serverTLSBootstrap": true,
        "systemReservedCgroup": "/system",
        "tlsCipherSuites": [
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_AES_256_GCM_SHA384"
        ]
    });
    if facts.ubuntu {
        c["resolvConf"] = json!(UBUNTU_RESOLV_CONF);
    }
    c
}

/// Merges `src` over `dst` the way nodeadm's mergo call does: objects merge key by key,
/// everything else (scalars, arrays, null) is replaced.
pub fn merge(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (d, s) => *d = s.clone(),
    }
}

/// JSON with 4-space indentation, as nodeadm writes the kubelet config.
fn json_4(value: &Value) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(value, &mut ser)?;
    Ok(out)
}

/// A YAML scalar: bare when it cannot be mistaken for anything else, else a JSON (double-quoted
/// YAML) string.
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b':'))
        && !s.ends_with(':')
        && !s.contains(": ");
    if plain {
        s.to_string()
    } else {
        yaml_quoted(s)
    }
}

fn yaml_quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// The kubeconfig: nodeadm's hybrid template, with hybridboot's own token command.
pub fn kubeconfig(cfg: &NodeConfig, cluster: &ClusterDetails, facts: &NodeFacts) -> String {
    let q = yaml_quoted;
    format!(
        "---
apiVersion: v1
kind: Config
clusters:
  - name: kubernetes
    cluster:
      certificate-authority: {ca}
      server: {server}
current-context: kubelet
contexts:
  - name: kubelet
    context:
      cluster: kubernetes
      user: kubelet
users:
  - name: kubelet
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1beta1
        command: {command}
        env:
          - name: \"AWS_PROFILE\"
            value: {profile}
          - name: \"AWS_CONFIG_FILE\"
            value: {config}
        args:
          - \"token\"
          - \"--cluster-name\"
          - {cluster_name}
          - \"--region\"
          - {region}
",
        ca = CA_PATH,
        server = yaml_scalar(&cluster.endpoint),
        command = q(&facts.hybridboot_path.display().to_string()),
        profile = q(aws::PROFILE),
        config = q(&cfg.iam_roles_anywhere.aws_config_path.display().to_string()),
        cluster_name = q(&cfg.cluster.name),
        region = q(&cfg.cluster.region),
    )
}

/// The image credential provider config: the ECR provider with the Roles Anywhere AWS config.
pub fn image_credential_provider_config(cfg: &NodeConfig, facts: &NodeFacts) -> Value {
    let name = facts
        .ecr_credential_provider
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ecr-credential-provider".into());
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1",
        "kind": "CredentialProviderConfig",
        "providers": [{
            "name": name,
            "matchImages": [
                "*.dkr.ecr.*.amazonaws.com",
                "*.dkr.ecr.*.amazonaws.com.cn",
                "*.dkr.ecr-fips.*.amazonaws.com",
                "*.dkr.ecr.*.c2s.ic.gov",
                "*.dkr.ecr.*.sc2s.sgov.gov"
            ],
            "defaultCacheDuration": "12h0m0s",
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            "env": [
                {"name": "AWS_CONFIG_FILE", "value": cfg.iam_roles_anywhere.aws_config_path.display().to_string()},
                {"name": "AWS_PROFILE", "value": aws::PROFILE},
                {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": aws::CREDENTIALS_FILE}
            ]
        }]
    })
}

/// The kubelet unit, byte for byte nodeadm's.
pub const UNIT: &str = "[Unit]
Description=Kubernetes Kubelet
Documentation=https://github.com/kubernetes/kubernetes
After=containerd.service
Requires=containerd.service

[Service]
Slice=runtime.slice
EnvironmentFile=/etc/eks/kubelet/environment
ExecStartPre=/sbin/iptables -P FORWARD ACCEPT -w 5
ExecStart=/usr/bin/kubelet \\
    --config /etc/kubernetes/kubelet/config.json \\
    --kubeconfig /var/lib/kubelet/kubeconfig \\
    --container-runtime-endpoint unix:///run/containerd/containerd.sock \\
    $NODEADM_KUBELET_ARGS\\
    $KUBELET_EXTRA_ARGS

Restart=on-failure
RestartForceExitStatus=SIGPIPE
RestartSec=5
KillMode=process
CPUAccounting=true
MemoryAccounting=true

[Install]
WantedBy=multi-user.target
";

/// The kubelet flags hybridboot sets (without leading dashes), in a stable order, and extra
/// environment variables.
pub fn flags_and_env(
    cfg: &NodeConfig,
    facts: &NodeFacts,
) -> (
    BTreeMap<&'static str, String>,
    BTreeMap<&'static str, String>,
) {
    let mut flags = BTreeMap::new();
    let mut env = BTreeMap::new();
    flags.insert("config", CONFIG_PATH.to_string());
    flags.insert("kubeconfig", KUBECONFIG_PATH.to_string());
    // Hybrid nodes have no cloud provider; the provider ID is set in the config instead.
    flags.insert("cloud-provider", String::new());
    flags.insert(
        "hostname-override",
        cfg.iam_roles_anywhere.node_name.clone(),
    );
    flags.insert(
        "node-labels",
        format!("{HYBRID_NODE_LABEL},{CREDENTIAL_PROVIDER_LABEL}"),
    );
    let bin_dir = facts
        .ecr_credential_provider
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    flags.insert("image-credential-provider-bin-dir", bin_dir);
    flags.insert(
        "image-credential-provider-config",
        IMAGE_CREDENTIAL_PROVIDER_CONFIG.to_string(),
    );
    if facts.kubelet_version.supports_config_dir() {
        if !cfg.kubelet.config.is_empty() {
            flags.insert("config-dir", CONFIG_DIR.to_string());
            env.insert("KUBELET_CONFIG_DROPIN_DIR_ALPHA", "on".to_string());
        }
    } else {
        // Keeps the pause image from being garbage-collected before kubelet 1.29.
        flags.insert(
            "pod-infra-container-image",
            sandbox_image(&cfg.cluster.region),
        );
    }
    (flags, env)
}

/// `/etc/eks/kubelet/environment`: `NODEADM_KUBELET_ARGS` (hybridboot's flags, then the user's,
/// which therefore win) and other variables, one `NAME="value"` per line, sorted.
pub fn environment(cfg: &NodeConfig, facts: &NodeFacts) -> String {
    let (flags, mut env) = flags_and_env(cfg, facts);
    let mut args: Vec<String> = flags.iter().map(|(k, v)| format!("--{k}={v}")).collect();
    args.extend(cfg.kubelet.flags.iter().cloned());
    env.insert("NODEADM_KUBELET_ARGS", args.join(" "));
    env.iter()
        .map(|(k, v)| {
            // systemd's EnvironmentFile= undoes backslash escapes inside double quotes.
            format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// All kubelet files.
pub fn files(
    cfg: &NodeConfig,
    cluster: &ClusterDetails,
    facts: &NodeFacts,
) -> Result<Vec<RenderedFile>, RenderError> {
    let kubelet = &[Effect::Kubelet];
    let mut config = base_config(cfg, cluster, facts);
    let mut out = Vec::new();
    let user = Value::Object(cfg.kubelet.config.clone());
    if cfg.kubelet.config.is_empty() || facts.kubelet_version.supports_config_dir() {
        out.push(RenderedFile::new(CONFIG_PATH, json_4(&config)?, kubelet));
        if !cfg.kubelet.config.is_empty() {
            // kind and apiVersion make the drop-in a valid KubeletConfiguration on its own.
            let mut drop_in = Value::Object(Map::from_iter([
                ("kind".to_string(), json!("KubeletConfiguration")),
                (
                    "apiVersion".to_string(),
                    json!("kubelet.config.k8s.io/v1beta1"),
                ),
            ]));
            merge(&mut drop_in, &user);
            out.push(RenderedFile::new(DROP_IN_PATH, json_4(&drop_in)?, kubelet));
        }
    } else {
        merge(&mut config, &user);
        out.push(RenderedFile::new(CONFIG_PATH, json_4(&config)?, kubelet));
    }
    out.push(RenderedFile::new(
        KUBECONFIG_PATH,
        kubeconfig(cfg, cluster, facts),
        kubelet,
    ));
    let icp = serde_json::to_vec_pretty(&image_credential_provider_config(cfg, facts))?;
    out.push(RenderedFile::new(
        IMAGE_CREDENTIAL_PROVIDER_CONFIG,
        icp,
        kubelet,
    ));
    out.push(RenderedFile::new(
        CA_PATH,
        cluster.certificate_authority.clone(),
        kubelet,
    ));
    out.push(RenderedFile::new(
        ENVIRONMENT_PATH,
        environment(cfg, facts),
        kubelet,
    ));
    out.push(RenderedFile::new(
        UNIT_PATH,
        UNIT,
        &[Effect::DaemonReload, Effect::Kubelet],
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn cluster_dns_heuristic() {
        assert_eq!(cluster_dns("10.100.0.0/16"), "10.100.0.10");
        assert_eq!(cluster_dns("172.20.0.0/16"), "172.20.0.10");
        assert_eq!(cluster_dns("fd00:1234::/108"), "fd00:1234::a");
    }

    #[test]
    fn reserved_memory_tiers() {
        assert_eq!(reserved_memory(GIB / 2), "255Mi");
        assert_eq!(reserved_memory(2 * GIB), "1Gi"); // 0.5 rounds away from zero
        assert_eq!(reserved_memory(8 * GIB), "2Gi"); // 1 + 0.8 + 0 = 1.8
        assert_eq!(reserved_memory(16 * GIB), "3Gi"); // 2.6
        assert_eq!(reserved_memory(64 * GIB), "5Gi"); // 2.6 + 2.88 = 5.48
        assert_eq!(reserved_memory(256 * GIB), "12Gi"); // 9.32 + 2.56 = 11.88
    }

    #[test]
    fn reserved_cpu_tiers() {
        assert_eq!(reserved_cpu_millicores(1), 60);
        assert_eq!(reserved_cpu_millicores(2), 70);
        assert_eq!(reserved_cpu_millicores(4), 80);
        assert_eq!(reserved_cpu_millicores(8), 90);
    }

    #[test]
    fn merge_is_deep_for_objects_only() {
        let mut d = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"});
        merge(
            &mut d,
            &json!({"a": {"c": 3, "d": 4}, "l": [9], "s": "", "n": null}),
        );
        assert_eq!(
            d,
            json!({"a": {"b": 1, "c": 3, "d": 4}, "l": [9], "s": "", "n": null})
        );
    }

    #[test]
    fn yaml_scalars() {
        assert_eq!(yaml_scalar("https://example.com"), "https://example.com");
        assert_eq!(yaml_scalar("https://h:443/x y"), "\"https://h:443/x y\"");
        assert_eq!(yaml_scalar("#x"), "\"#x\"");
    }
}
