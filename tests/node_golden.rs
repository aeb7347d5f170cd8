//! hybridboot's NodeConfig handling and rendered files against nodeadm's own golden files
//! (aws/eks-hybrid `test/integration/cases`, copied to `shared/fixtures/nodeadm`).
//!
//! Each case parses the fixture's config with hybridboot's strict parser, renders every file,
//! writes them under a temporary `--root` with `write_files`, and compares what is on disk with
//! the expected file: JSON, YAML and TOML semantically, INI and unit files line by line. Every
//! deliberate difference is applied to the expected text by a named function below, so the list
//! of differences is this file:
//!
//! - `hybridboot_credential_process`: the AWS config's `credential_process` runs
//!   `/usr/local/bin/hybridboot credential-process` instead of `aws_signing_helper`.
//! - `hybridboot_update_unit`: the credentials-file unit runs `hybridboot update` (and is named
//!   `hybridboot-update.service` instead of `aws_signing_helper_update.service`).
//! - `hybridboot_token_exec`: the kubeconfig's exec plugin is `hybridboot token --cluster-name`
//!   instead of `aws-iam-authenticator token --cluster-id`.
//! - `as_hybrid_node`: the EC2 cases (containerd-config, kubelet-config, kubelet-flags,
//!   kubeconfig) have no `spec.hybrid` and no region; hybridboot only joins hybrid nodes, so it
//!   refuses them as they are (checked) and the test adds a region and an iamRolesAnywhere
//!   section; EC2-only values in the expected files (providerID `aws:///...`, maxPods and
//!   kubeReserved from the instance type, `aws eks get-token`) become the hybrid ones.
//! - kubeReserved is removed before comparing kubelet configs, exactly as nodeadm's own test
//!   does (it depends on the machine), and checked separately against the tiers.
//! - Quoting: shell-unsafe arguments (PKCS#11 URIs) are quoted; no fixture has one, so the
//!   fixtures match unquoted, and `pkcs11_key_reference_is_quoted` checks the quoting.
//!
//! Not compared: `expected-nodeadm-tracker` (written by `install`, not `init`).

use crate::util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hybridboot::node::checks::{self, CheckError};
use hybridboot::node::config::{self, ConfigError, Loaded};
use hybridboot::node::init::{apply, write_files};
use hybridboot::node::render::{
    self, ClusterDetails, Effect, KubeletVersion, NodeFacts, DEFAULT_ECR_CREDENTIAL_PROVIDER,
};
use serde_json::Value;

const HYBRIDBOOT: &str = "/usr/local/bin/hybridboot";
const GIB: u64 = 1024 * 1024 * 1024;

/// The fixtures: `HYBRIDBOOT_NODEADM_FIXTURES`, else `shared/` beside the repository (CI's
/// layout), else beside the worktree directory.
fn fixtures() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("HYBRIDBOOT_NODEADM_FIXTURES").map(PathBuf::from),
        Some(manifest.join("../shared/fixtures/nodeadm")),
        Some(manifest.join("../../shared/fixtures/nodeadm")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("cases").is_dir())
        .expect("nodeadm fixtures not found: set HYBRIDBOOT_NODEADM_FIXTURES to shared/fixtures/nodeadm")
}

fn case(name: &str) -> PathBuf {
    fixtures().join("cases").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn facts(kubelet: &str) -> NodeFacts {
    NodeFacts {
        memory_bytes: 8 * GIB,
        cpus: 2,
        kubelet_version: KubeletVersion::parse(kubelet).unwrap(),
        hybridboot_path: HYBRIDBOOT.into(),
        ubuntu: false,
        ecr_credential_provider: DEFAULT_ECR_CREDENTIAL_PROVIDER.into(),
        aws: Default::default(),
    }
}

fn load_text(path: &Path, text: &str) -> Loaded {
    config::parse(path, text).unwrap_or_else(|e| panic!("{e}"))
}

/// Renders and writes everything under a fresh root; returns the root and the written files.
struct Node {
    root: tempfile::TempDir,
    loaded: Loaded,
}

impl Node {
    fn init(loaded: Loaded, facts: &NodeFacts) -> Node {
        let cluster = ClusterDetails::from_config(&loaded.node)
            .expect("the fixture carries endpoint, CA and CIDR");
        let files = render::render_all(&loaded.node, &cluster, facts).unwrap();
        let root = tempfile::tempdir().unwrap();
        let report = write_files(root.path(), &files).unwrap();
        assert_eq!(report.changed.len(), files.len());
        // Idempotent: the same inputs again change nothing and restart nothing.
        let again = write_files(root.path(), &files).unwrap();
        assert!(again.is_noop(), "second run changed {:?}", again.changed);
        Node { root, loaded }
    }

    fn path(&self, node_path: &str) -> PathBuf {
        hybridboot::fsutil::under_root(self.root.path(), Path::new(node_path))
    }

    fn file(&self, node_path: &str) -> String {
        let p = self.path(node_path);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{node_path}: {e}"));
        use std::os::unix::fs::PermissionsExt;
        // nodeadm's validate-file checks mode 644 on every file it writes.
        assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{node_path}");
        read(&p)
    }
}

// ----- comparisons -------------------------------------------------------------------------

fn assert_lines_eq(actual: &str, expected: &str, what: &str) {
    let a: Vec<&str> = actual.lines().collect();
    let e: Vec<&str> = expected.lines().collect();
    for (i, (x, y)) in a.iter().zip(e.iter()).enumerate() {
        assert_eq!(x, y, "{what}: line {} differs", i + 1);
    }
    assert_eq!(a.len(), e.len(), "{what}: line count\n{actual}");
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn toml_eq(actual: &str, expected: &str, what: &str) {
    let a: toml::Table = actual.parse().unwrap_or_else(|e| panic!("{what}: {e}"));
    let e: toml::Table = expected.parse().unwrap();
    assert_eq!(a, e, "{what}");
}

// ----- the intended differences -------------------------------------------------------------

fn hybridboot_credential_process(expected: &str) -> String {
    let from = "/usr/local/bin/aws_signing_helper credential-process ";
    assert!(expected.contains(from));
    expected.replace(from, &format!("{HYBRIDBOOT} credential-process "))
}

fn hybridboot_update_unit(expected: &str) -> String {
    let desc = "Description=Service that runs aws_signing_helper update";
    let exec = "ExecStart=/usr/local/bin/aws_signing_helper update";
    assert!(expected.contains(desc) && expected.contains(exec));
    expected
        .replace(desc, "Description=Service that runs hybridboot update")
        .replace(exec, &format!("ExecStart={HYBRIDBOOT} update"))
}

fn hybridboot_token_exec(expected: &mut Value, aws_config: &str, cluster: &str, region: &str) {
    let exec = &mut expected["users"][0]["user"]["exec"];
    *exec = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": HYBRIDBOOT,
        "env": [
            {"name": "AWS_PROFILE", "value": "default"},
            {"name": "AWS_CONFIG_FILE", "value": aws_config}
        ],
        "args": ["token", "--cluster-name", cluster, "--region", region]
    });
}

/// Makes an EC2 fixture config a hybrid one: a region and an iamRolesAnywhere section.
fn as_hybrid_node(text: &str) -> String {
    let cidr = "    cidr: 10.100.0.0/16\n";
    assert!(text.contains(cidr));
    let mut t = text.replace(cidr, &format!("{cidr}    region: us-west-2\n"));
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str(
        "  hybrid:
    iamRolesAnywhere:
      nodeName: mock-hybrid-node
      roleArn: arn:aws:iam::123456789010:role/mockHybridNodeRole
      profileArn: arn:aws:rolesanywhere:us-west-2:123456789010:profile/p
      trustAnchorArn: arn:aws:rolesanywhere:us-west-2:123456789010:trust-anchor/t
",
    );
    t
}

/// The EC2-only kubelet values in an expected kubelet config, made hybrid.
fn ec2_kubelet_config_as_hybrid(expected: &mut Value) {
    let o = expected.as_object_mut().unwrap();
    assert!(o["providerID"].as_str().unwrap().starts_with("aws:///"));
    o.insert(
        "providerID".into(),
        "eks-hybrid:///us-west-2/my-cluster/mock-hybrid-node".into(),
    );
    // maxPods comes from the EC2 instance type; hybrid nodes leave kubelet's default.
    assert!(o.remove("maxPods").is_some());
}

fn without_kube_reserved(mut v: Value) -> (Value, Value) {
    let reserved = v
        .as_object_mut()
        .unwrap()
        .remove("kubeReserved")
        .unwrap_or(Value::Null);
    (v, reserved)
}

/// kubeReserved for the test facts (8 GiB, 2 CPUs): 1 + 0.8 = 1.8 -> 2Gi; 60m + 10m.
fn expected_kube_reserved() -> Value {
    serde_json::json!({"cpu": "70m", "ephemeral-storage": "1Gi", "memory": "2Gi"})
}

fn refused_as_ec2_config(path: &Path) {
    let e = config::parse(path, &read(path)).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Invalid {
                field: "spec.cluster.region",
                ..
            }
        ),
        "{e}"
    );
}

// ----- cases --------------------------------------------------------------------------------

#[test]
fn upgrade_with_iam_full_set() {
    let dir = case("upgrade-with-iam");
    let cfg_path = dir.join("config.yaml");
    for (kubelet, expected_config) in [
        ("v1.30.0", "expected-kubelet-config-initial"),
        ("v1.31.2", "expected-kubelet-config-upgraded"),
    ] {
        let node = Node::init(load_text(&cfg_path, &read(&cfg_path)), &facts(kubelet));
        let e = |f: &str| read(&dir.join(f));

        assert_lines_eq(
            &node.file("/.aws/config"),
            &hybridboot_credential_process(&e("expected-aws-config")),
            "aws config",
        );
        assert_lines_eq(
            &node.file("/etc/systemd/system/hybridboot-update.service"),
            &hybridboot_update_unit(&e("expected-aws-signing-helper-systemd-unit")),
            "update unit",
        );
        assert!(!node
            .path("/etc/systemd/system/aws_signing_helper_update.service")
            .exists());
        assert_eq!(
            node.file("/etc/kubernetes/pki/ca.crt"),
            e("expected-ca-crt")
        );
        toml_eq(
            &node.file("/etc/containerd/config.toml"),
            &e("expected-containerd-config"),
            "containerd config",
        );
        assert_eq!(
            json(&node.file("/etc/eks/image-credential-provider/config.json")),
            json(&e("expected-image-credential-provider-config"))
        );
        let mut kubeconfig = yaml(&e("expected-kubeconfig"));
        hybridboot_token_exec(&mut kubeconfig, "/.aws/config", "my-cluster", "us-west-2");
        assert_eq!(yaml(&node.file("/var/lib/kubelet/kubeconfig")), kubeconfig);

        let (actual, reserved) =
            without_kube_reserved(json(&node.file("/etc/kubernetes/kubelet/config.json")));
        assert_eq!(actual, json(&e(expected_config)), "{expected_config}");
        assert_eq!(reserved, expected_kube_reserved());
        assert!(!node
            .path("/etc/kubernetes/kubelet/config.json.d/00-nodeadm.conf")
            .exists());

        assert_lines_eq(
            &node.file("/etc/systemd/system/kubelet.service"),
            &e("expected-kubelet-systemd-unit"),
            "kubelet unit",
        );
        // nodeadm's test only checks that the environment file exists (its flag order is
        // random); hybridboot's order is stable, so check the content.
        let env = node.file("/etc/eks/kubelet/environment");
        let args = env
            .lines()
            .find_map(|l| l.strip_prefix("NODEADM_KUBELET_ARGS=\""))
            .and_then(|l| l.strip_suffix('"'))
            .expect(&env);
        for flag in [
            "--hostname-override=mock-hybrid-node",
            "--cloud-provider=",
            "--node-labels=eks.amazonaws.com/compute-type=hybrid,eks.amazonaws.com/hybrid-credential-provider=iam-ra",
            "--config=/etc/kubernetes/kubelet/config.json",
            "--kubeconfig=/var/lib/kubelet/kubeconfig",
            "--image-credential-provider-bin-dir=/etc/eks/image-credential-provider",
            "--image-credential-provider-config=/etc/eks/image-credential-provider/config.json",
        ] {
            assert!(args.split(' ').any(|a| a == flag), "{flag} missing: {args}");
        }
        // 1.29+ ignores --pod-infra-container-image.
        assert!(!args.contains("--pod-infra-container-image"));
        assert_eq!(
            node.loaded.warnings.len(),
            2,
            "odd fixture ARNs warn: {:?}",
            node.loaded.warnings
        );
    }
}

#[test]
fn init_with_iam_custom_cert_path() {
    let dir = case("init-with-iam-custom-cert-path");
    let cfg_path = dir.join("config.yaml");
    let node = Node::init(load_text(&cfg_path, &read(&cfg_path)), &facts("v1.31.0"));
    assert_lines_eq(
        &node.file("/.aws/config"),
        &hybridboot_credential_process(&read(&dir.join("expected-aws-config"))),
        "aws config",
    );
    assert_lines_eq(
        &node.file("/etc/systemd/system/hybridboot-update.service"),
        &hybridboot_update_unit(&read(&dir.join("expected-aws-signing-helper-systemd-unit"))),
        "update unit",
    );
}

#[test]
fn hybrid_node_system_aspects() {
    let dir = case("hybrid-node-system-aspects");
    let cfg_path = dir.join("config.yaml");
    let node = Node::init(load_text(&cfg_path, &read(&cfg_path)), &facts("v1.31.0"));
    assert_lines_eq(
        &node.file("/.aws/config"),
        &hybridboot_credential_process(&read(&dir.join("expected-aws-config"))),
        "aws config",
    );
    // assert::files-equal in nodeadm's test: byte for byte.
    assert_eq!(
        node.file("/etc/sysctl.d/99-nodeadm.conf"),
        read(&dir.join("expected-99-nodeadm.conf"))
    );
    assert_eq!(
        node.file("/etc/modules-load.d/containerd.conf"),
        "overlay\nbr_netfilter"
    );
    // Without enableCredentialsFile there is no update unit.
    assert!(!node
        .path("/etc/systemd/system/hybridboot-update.service")
        .exists());
}

#[test]
fn containerd_config_and_user_drop_in() {
    let dir = case("containerd-config");
    let cfg_path = dir.join("config.yaml");
    refused_as_ec2_config(&cfg_path);
    let node = Node::init(
        load_text(&cfg_path, &as_hybrid_node(&read(&cfg_path))),
        &facts("v1.31.0"),
    );
    let base = node.file("/etc/containerd/config.toml");
    let expected = read(&dir.join("expected-containerd-config.toml"));
    toml_eq(&base, &expected, "containerd config");
    assert_eq!(base, expected, "nodeadm's test compares bytes");
    let user = node.file("/etc/containerd/config.d/00-nodeadm.toml");
    let expected_user = read(&dir.join("expected-user-containerd-config.toml"));
    toml_eq(&user, &expected_user, "user drop-in");
    assert_eq!(user, expected_user);
}

#[test]
fn kubelet_config_merged_before_1_29() {
    let dir = case("kubelet-config");
    for name in [
        "config.kubelet-config-json.yaml",
        "config.kubelet-config-yaml.yaml",
    ] {
        let cfg_path = dir.join(name);
        refused_as_ec2_config(&cfg_path);
        // nodeadm's case mocks kubelet 1.28: the user config is merged into config.json.
        let node = Node::init(
            load_text(&cfg_path, &as_hybrid_node(&read(&cfg_path))),
            &facts("v1.28.0"),
        );
        let mut expected = json(&read(&dir.join("expected-kubelet-config.json")));
        ec2_kubelet_config_as_hybrid(&mut expected);
        let (expected, _) = without_kube_reserved(expected);
        let (actual, reserved) =
            without_kube_reserved(json(&node.file("/etc/kubernetes/kubelet/config.json")));
        assert_eq!(actual, expected, "{name}");
        assert_eq!(reserved, expected_kube_reserved());
        assert!(!node
            .path("/etc/kubernetes/kubelet/config.json.d/00-nodeadm.conf")
            .exists());
        let env = node.file("/etc/eks/kubelet/environment");
        assert!(
            env.contains(
                "--pod-infra-container-image=602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5"
            ),
            "{env}"
        );
        assert!(!env.contains("KUBELET_CONFIG_DROPIN_DIR_ALPHA"));
    }
}

#[test]
fn kubelet_config_dropped_in_from_1_29() {
    // nodeadm's kubelet-config-dir case: same inputs, kubelet >= 1.29, user config as a drop-in.
    let dir = case("kubelet-config");
    let cfg_path = dir.join("config.kubelet-config-yaml.yaml");
    let node = Node::init(
        load_text(&cfg_path, &as_hybrid_node(&read(&cfg_path))),
        &facts("v1.31.0"),
    );
    let drop_in = json(&node.file("/etc/kubernetes/kubelet/config.json.d/00-nodeadm.conf"));
    assert_eq!(
        drop_in,
        serde_json::json!({
            "kind": "KubeletConfiguration",
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "logging": {"verbosity": 5},
            "clusterDNS": ["0.0.0.0", "1.1.1.1"]
        })
    );
    let base = json(&node.file("/etc/kubernetes/kubelet/config.json"));
    assert_eq!(base["clusterDNS"], serde_json::json!(["10.100.0.10"]));
    assert_eq!(base["logging"]["verbosity"], 2);
    let env = node.file("/etc/eks/kubelet/environment");
    assert!(env.contains("--config-dir=/etc/kubernetes/kubelet/config.json.d"));
    assert!(env
        .lines()
        .any(|l| l == "KUBELET_CONFIG_DROPIN_DIR_ALPHA=\"on\""));
}

#[test]
fn kubelet_flags_come_last() {
    let dir = case("kubelet-flags");
    let cfg_path = dir.join("config.yaml");
    refused_as_ec2_config(&cfg_path);
    let node = Node::init(
        load_text(&cfg_path, &as_hybrid_node(&read(&cfg_path))),
        &facts("v1.31.0"),
    );
    let env = node.file("/etc/eks/kubelet/environment");
    // nodeadm's assertion: the file contains this at the end of a line.
    let want = "--v=5 --node-labels=foo=bar,foo2=baz --register-with-taints=foo=bar:NoSchedule\"";
    assert!(env.lines().any(|l| l.ends_with(want)), "{env}");
}

#[test]
fn kubeconfig_rendering() {
    let dir = case("kubeconfig");
    let cfg_path = dir.join("config.yaml");
    refused_as_ec2_config(&cfg_path);
    let node = Node::init(
        load_text(&cfg_path, &as_hybrid_node(&read(&cfg_path))),
        &facts("v1.31.0"),
    );
    let mut expected = yaml(&read(&dir.join("expected-kubeconfig.yaml")));
    // EC2: `aws eks get-token`; hybrid: hybridboot's token with the Roles Anywhere AWS config.
    assert_eq!(expected["users"][0]["user"]["exec"]["command"], "aws");
    hybridboot_token_exec(
        &mut expected,
        "/etc/aws/hybrid/config",
        "my-cluster",
        "us-west-2",
    );
    assert_eq!(yaml(&node.file("/var/lib/kubelet/kubeconfig")), expected);
}

#[test]
fn node_ip_validation_like_nodeadm() {
    // nodeadm's case creates the cluster with remoteNodeNetworks 172.16.0.0/24.
    let dir = case("init-with-node-ip-validation");
    let networks = vec!["172.16.0.0/24".to_string()];
    let inside = dir.join("config-ip-in-range.yaml");
    let l = load_text(&inside, &read(&inside));
    // No CA or CIDR: DescribeCluster would fill them.
    assert!(l.node.cluster.needs_cluster_details());
    let ip = checks::check_node_ip("test-cluster", &l.node.kubelet.flags, None, &networks).unwrap();
    assert_eq!(ip.to_string(), "172.16.0.1");

    let outside = dir.join("config-ip-out-of-range.yaml");
    let l = load_text(&outside, &read(&outside));
    let e =
        checks::check_node_ip("test-cluster", &l.node.kubelet.flags, None, &networks).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(
            "node IP 1.2.3.4 is not in any of the cluster's remote node networks [172.16.0.0/24]"
        ),
        "{msg}"
    );
    assert!(msg.contains("--skip node-ip-validation"), "{msg}");
}

fn openssl_cert(dir: &Path, cn: &str, days: u32) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{cn}.crt"));
    let key = dir.join(format!("{cn}.key"));
    util::x509::self_signed_ec(&cert, &key, cn, days);
    (cert, key)
}

#[test]
fn certificate_validation_like_nodeadm() {
    let dir = case("init-with-iam-custom-cert-path");
    let cfg_path = dir.join("config-certificate-validation.yaml");
    let l = load_text(&cfg_path, &read(&cfg_path));
    let ira = &l.node.iam_roles_anywhere;
    let root = tempfile::tempdir().unwrap();
    let on_node = hybridboot::fsutil::under_root(root.path(), &ira.certificate_path);
    std::fs::create_dir_all(on_node.parent().unwrap()).unwrap();
    let check = || -> Result<(), CheckError> {
        let facts = checks::read_certificate(root.path(), &ira.certificate_path)?;
        checks::check_certificate(&facts, &ira.node_name, SystemTime::now())
    };

    // 1. The certificate does not exist.
    let e = check().unwrap_err();
    assert!(matches!(e, CheckError::CertificateMissing(_)), "{e}");
    assert!(e
        .to_string()
        .contains("/etc/certificates/iam/pki/my-server_cert_validation.crt not found"));
    // 2. It is empty.
    std::fs::write(&on_node, b"").unwrap();
    assert!(check()
        .unwrap_err()
        .to_string()
        .contains("the file is empty"));
    // 3. It is not a certificate.
    std::fs::write(&on_node, b"CORRUPTED_DATA\n").unwrap();
    assert!(matches!(check(), Err(CheckError::CertificateInvalid(..))));
    // 4. A real certificate with its second line damaged (nodeadm: sed '2s/$/A/').
    let tmp = tempfile::tempdir().unwrap();
    let (good, _) = openssl_cert(tmp.path(), "mock-hybrid-node", 1);
    let pem = read(&good);
    let damaged: Vec<String> = pem
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 1 {
                format!("{l}A")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&on_node, damaged.join("\n") + "\n").unwrap();
    let e = check().unwrap_err();
    assert!(matches!(e, CheckError::CertificateInvalid(..)), "{e}");
    // 5. The real certificate passes.
    std::fs::write(&on_node, &pem).unwrap();
    check().unwrap();
    // 6. Better than nodeadm: a certificate for another name is refused before AWS is asked.
    let (other, _) = openssl_cert(tmp.path(), "someone-else", 1);
    std::fs::copy(&other, &on_node).unwrap();
    let e = check().unwrap_err();
    assert!(
        e.to_string()
            .contains("CN \"someone-else\" does not match nodeName \"mock-hybrid-node\""),
        "{e}"
    );
    // 7. Expired (valid for 1 day, checked 2 days later).
    std::fs::write(&on_node, &pem).unwrap();
    let facts = checks::read_certificate(root.path(), &ira.certificate_path).unwrap();
    let later = SystemTime::now() + std::time::Duration::from_secs(2 * 86_400);
    assert!(matches!(
        checks::check_certificate(&facts, &ira.node_name, later),
        Err(CheckError::CertificateExpired { .. })
    ));
}

#[test]
fn pkcs11_key_reference_is_quoted() {
    let dir = case("upgrade-with-iam");
    let cfg_path = dir.join("config.yaml");
    let uri = "pkcs11:token=edge%20hsm;object=node?pin-source=file:/run/hybridboot/pin";
    let text = read(&cfg_path).replace(
        "      nodeName: mock-hybrid-node\n",
        &format!("      nodeName: mock-hybrid-node\n      privateKeyPath: \"{uri}\"\n"),
    );
    let node = Node::init(load_text(&cfg_path, &text), &facts("v1.31.0"));
    let aws = node.file("/.aws/config");
    let line = aws
        .lines()
        .find_map(|l| l.strip_prefix("credential_process = "))
        .unwrap();
    assert!(line.contains(&format!("--private-key '{uri}' ")), "{line}");
    // The shell gives back the URI as one argument, `;` and `%` intact.
    let out = util::tool(
        "sh",
        &[
            "-c",
            &format!("set -- {line}; for a; do printf '%s\\n' \"$a\"; done"),
        ],
        &[],
    );
    let args: Vec<&str> = out.stdout.lines().collect();
    let i = args.iter().position(|a| *a == "--private-key").unwrap();
    assert_eq!(args[i + 1], uri);
    assert_eq!(args[0], HYBRIDBOOT);
    // In the unit file, `%` is doubled (systemd specifiers) and the word is quoted.
    let unit = node.file("/etc/systemd/system/hybridboot-update.service");
    assert!(
        unit.contains("--private-key \"pkcs11:token=edge%%20hsm;object=node?pin-source=file:/run/hybridboot/pin\""),
        "{unit}"
    );
}

#[test]
fn changed_input_rewrites_only_affected_files() {
    let dir = case("upgrade-with-iam");
    let cfg_path = dir.join("config.yaml");
    let f = facts("v1.31.0");
    let root = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let loaded = load_text(&cfg_path, text);
        let cluster = ClusterDetails::from_config(&loaded.node).unwrap();
        let files = render::render_all(&loaded.node, &cluster, &f).unwrap();
        let obsolete = render::obsolete_files(&loaded.node, &f);
        apply(root.path(), &files, &obsolete).unwrap()
    };
    // A node that nodeadm set up before: its update unit goes, and is stopped.
    let legacy = hybridboot::fsutil::under_root(
        root.path(),
        Path::new("/etc/systemd/system/aws_signing_helper_update.service"),
    );
    std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    std::fs::write(&legacy, "[Service]\n").unwrap();
    let original = read(&cfg_path);
    let first = run(&original);
    assert!(!legacy.exists());
    assert!(first
        .effects
        .contains(&Effect::Stop("aws_signing_helper_update.service")));
    assert!(run(&original).is_noop());

    // The user adds a containerd drop-in: only containerd files change, only containerd restarts.
    let with_dropin = original.replace(
        "  hybrid:\n",
        "  containerd:\n    config: |\n      version = 2\n  hybrid:\n",
    );
    let report = run(&with_dropin);
    assert_eq!(
        report.changed,
        vec![PathBuf::from("/etc/containerd/config.d/00-nodeadm.toml")]
    );
    assert_eq!(
        report.effects.into_iter().collect::<Vec<_>>(),
        vec![Effect::Containerd]
    );
    // ...and removes it again: the drop-in is deleted (containerd would still import it).
    let report = run(&original);
    assert!(report.changed.is_empty());
    assert_eq!(
        report.removed,
        vec![PathBuf::from("/etc/containerd/config.d/00-nodeadm.toml")]
    );
    assert_eq!(
        report.effects.into_iter().collect::<Vec<_>>(),
        vec![Effect::Containerd]
    );
    // Turning enableCredentialsFile off removes and stops the update unit.
    let report = run(&original.replace("    enableCredentialsFile: true\n", ""));
    assert_eq!(
        report.removed,
        vec![PathBuf::from(
            "/etc/systemd/system/hybridboot-update.service"
        )]
    );
    assert!(report
        .effects
        .contains(&Effect::Stop("hybridboot-update.service")));
}

#[test]
fn every_expected_file_of_the_iam_ra_cases_is_covered() {
    // Guards against a fixture file being added without a comparison here.
    let covered: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        (
            "upgrade-with-iam",
            vec![
                "expected-aws-config",
                "expected-aws-signing-helper-systemd-unit",
                "expected-ca-crt",
                "expected-containerd-config",
                "expected-image-credential-provider-config",
                "expected-kubeconfig",
                "expected-kubelet-config-initial",
                "expected-kubelet-config-upgraded",
                "expected-kubelet-systemd-unit",
                "expected-nodeadm-tracker", // install's output, not init's
            ],
        ),
        (
            "init-with-iam-custom-cert-path",
            vec![
                "expected-aws-config",
                "expected-aws-signing-helper-systemd-unit",
            ],
        ),
        (
            "hybrid-node-system-aspects",
            vec!["expected-99-nodeadm.conf", "expected-aws-config"],
        ),
        (
            "containerd-config",
            vec![
                "expected-containerd-config.toml",
                "expected-user-containerd-config.toml",
            ],
        ),
        ("kubelet-config", vec!["expected-kubelet-config.json"]),
        ("kubelet-flags", vec![]),
        ("kubeconfig", vec!["expected-kubeconfig.yaml"]),
    ]);
    for (name, files) in covered {
        let mut found: Vec<String> = util::dir_entries(&case(name))
            .into_iter()
            .filter(|f| f.starts_with("expected-"))
            .collect();
        found.sort();
        let mut want: Vec<String> = files.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(found, want, "{name}");
    }
}

/// Renders upgrade-with-iam with a PKCS#11 key and the built binary as the hybridboot path.
fn pkcs11_node_with_real_binary() -> Node {
    let cfg_path = case("upgrade-with-iam").join("config.yaml");
    let text = read(&cfg_path).replace(
        "      nodeName: mock-hybrid-node\n",
        "      nodeName: mock-hybrid-node\n      privateKeyPath: \"pkcs11:token=edge%20hsm;object=node?pin-source=file:/run/pin\"\n",
    );
    let mut f = facts("v1.31.0");
    f.hybridboot_path = util::bin();
    Node::init(load_text(&cfg_path, &text), &f)
}

#[test]
fn update_unit_passes_systemd_analyze_verify() {
    let node = pkcs11_node_with_real_binary();
    let unit = node.path("/etc/systemd/system/hybridboot-update.service");
    let r = util::tool(
        "systemd-analyze",
        &["verify", unit.to_str().unwrap()],
        &[("SYSTEMD_LOG_LEVEL", "warning")],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("hybridboot-update"), "{}", r.stderr);
    // The control: the same unit without `%` doubled is rejected (unknown specifier %2).
    let broken = node.path("/etc/systemd/system/broken-update.service");
    std::fs::write(&broken, read(&unit).replace("%%20", "%20")).unwrap();
    let r = util::tool(
        "systemd-analyze",
        &["verify", broken.to_str().unwrap()],
        &[("SYSTEMD_LOG_LEVEL", "warning")],
    );
    assert_ne!(r.code, 0, "systemd accepted an unescaped %: {}", r.stderr);
    assert!(r.stderr.contains("specifier"), "{}", r.stderr);
}

#[test]
fn kubectl_reads_the_kubeconfig() {
    let node = pkcs11_node_with_real_binary();
    let kubeconfig = node.path("/var/lib/kubelet/kubeconfig");
    let r = util::tool(
        "kubectl",
        &[
            "config",
            "view",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    r.ok();
    let v = json(&r.stdout);
    assert_eq!(v["current-context"], "kubelet");
    assert_eq!(v["clusters"][0]["cluster"]["server"], "https://example.com");
    assert_eq!(
        v["clusters"][0]["cluster"]["certificate-authority"],
        "/etc/kubernetes/pki/ca.crt"
    );
    let exec = &v["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], util::bin().to_str().unwrap());
    assert_eq!(
        exec["args"],
        serde_json::json!([
            "token",
            "--cluster-name",
            "my-cluster",
            "--region",
            "us-west-2"
        ])
    );
    assert_eq!(
        exec["env"],
        serde_json::json!([
            {"name": "AWS_PROFILE", "value": "default"},
            {"name": "AWS_CONFIG_FILE", "value": "/.aws/config"}
        ])
    );
}

#[test]
fn skipped_phases_and_bad_details_write_nothing_of_theirs() {
    use hybridboot::node::init::{files_phase, FilesError, Skip};
    let cfg_path = case("upgrade-with-iam").join("config.yaml");
    let loaded = load_text(&cfg_path, &read(&cfg_path));
    let cluster = ClusterDetails::from_config(&loaded.node).unwrap();
    let f = facts("v1.31.0");

    let root = tempfile::tempdir().unwrap();
    let skip = Skip::parse(&["kubelet,run", "k8s-authentication-validation"]).unwrap();
    let report = files_phase(root.path(), &loaded.node, &cluster, &f, &skip).unwrap();
    assert!(report.changed.contains(&PathBuf::from("/.aws/config")));
    assert!(report
        .changed
        .contains(&PathBuf::from("/etc/containerd/config.toml")));
    assert!(report
        .changed
        .iter()
        .all(|p| !p.starts_with("/etc/kubernetes")
            && !p.starts_with("/var/lib/kubelet")
            && !p.starts_with("/etc/eks")));
    assert!(!report.effects.contains(&Effect::Kubelet));

    // A service CIDR from DescribeCluster that is not a CIDR: rendering fails, nothing written.
    let root = tempfile::tempdir().unwrap();
    let mut bad = cluster.clone();
    bad.service_cidr = "10.100.0.0".into();
    let e = files_phase(root.path(), &loaded.node, &bad, &f, &Skip::default()).unwrap_err();
    assert!(matches!(e, FilesError::Render(_)), "{e}");
    assert!(e.to_string().contains("cluster service CIDR"), "{e}");
    assert!(util::dir_entries(root.path()).is_empty());
}
