//! Issue 19 point 2: what a first try meets, each with the message or behaviour that sends the
//! operator the right way: `kubeconfig --out` merging like `aws eks update-kubeconfig` (read
//! back by the real kubectl), settings from the environment written into the lines that later
//! run without it, the Roles Anywhere error when the key file is missing, labelled output.
use crate::util;

use std::path::Path;
use std::process::Command;

use util::{run, Run};

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Run {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl")
        .into()
}

fn kubeconfig(dir: &Path, cluster: &str, out: &Path, env: &[(&str, &str)]) -> Run {
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        util::x509::self_signed_ec(&ca, &dir.join("ca.key"), "cluster-ca", 2);
    }
    run(
        &[
            "kubeconfig",
            "--cluster-name",
            cluster,
            "--region",
            "us-east-1",
            "--certificate",
            "me.pem",
            "--private-key",
            "pkcs11:token=yk;object=piv",
            "--trust-anchor-arn",
            "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta",
            "--profile-arn",
            "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p",
            "--role-arn",
            "arn:aws:iam::123456789012:role/r",
            "--server",
            &format!("https://{cluster}.example.com"),
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        env,
    )
}

#[test]
fn kubeconfig_out_merges_into_an_existing_file_and_writes_environment_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config");
    // A kubeconfig holding another cluster, with a preference kubectl keeps.
    std::fs::write(
        &out,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://other.example.com\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: other\ncurrent-context: other\nusers:\n- name: other\n  user:\n    token: abc\npreferences: {}\n",
    )
    .unwrap();
    let lib = dir.path().join("libsofthsm2.so");
    std::fs::write(&lib, "").unwrap();
    let r = kubeconfig(
        dir.path(),
        "prod",
        &out,
        &[
            ("HYBRIDBOOT_PKCS11_LIB", lib.to_str().unwrap()),
            ("HYBRIDBOOT_TCTI", "swtpm:host=127.0.0.1,port=2321"),
        ],
    );
    r.ok();
    let contexts = kubectl(&out, &["config", "get-contexts", "-o", "name"]);
    contexts.ok();
    let mut names: Vec<&str> = contexts.stdout.lines().collect();
    names.sort();
    assert_eq!(names, ["other", "prod"], "{}", contexts.stdout);
    let current = kubectl(&out, &["config", "current-context"]);
    assert_eq!(current.stdout.trim(), "prod");
    // The plugin line carries what came from the environment: kubectl runs it without that.
    let view = kubectl(&out, &["config", "view", "-o", "json"]);
    view.ok();
    let v: serde_json::Value = serde_json::from_str(&view.stdout).unwrap();
    let user = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "prod-rolesanywhere")
        .unwrap();
    let args: Vec<&str> = user["user"]["exec"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("--pkcs11-lib"), lib.to_str().unwrap(), "{args:?}");
    assert_eq!(
        after("--tcti"),
        "swtpm:host=127.0.0.1,port=2321",
        "{args:?}"
    );
    // The other cluster's user is untouched.
    let other = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "other")
        .unwrap();
    assert_eq!(other["user"]["token"], "REDACTED");

    // Again for the same cluster: replaced, not duplicated; the flag works like the variable.
    kubeconfig(dir.path(), "prod", &out, &[]).ok();
    let contexts = kubectl(&out, &["config", "get-contexts", "-o", "name"]);
    assert_eq!(contexts.stdout.lines().count(), 2, "{}", contexts.stdout);

    // A file that is not a kubeconfig is left alone.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "- just\n- a list\n").unwrap();
    let r = kubeconfig(dir.path(), "prod", &junk, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("cannot merge into it"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&junk).unwrap(),
        "- just\n- a list\n"
    );
}

/// `credential-process` with a development key and its certificate in `dir` (the key removed
/// first if `remove_key`), against an endpoint where nothing listens (its port returned): a
/// request that is sent ends in exit 4 (unreachable).
fn credential_process_to_nowhere(dir: &Path, remove_key: bool) -> (Run, u16) {
    let cert = dir.join("node.pem");
    let key = dir.join("node.key");
    util::x509::self_signed_ec(&cert, &key, "node-1", 2);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if remove_key {
        std::fs::remove_file(&key).unwrap();
    }
    let port = util::free_port();
    let r = run(
        &[
            "credential-process",
            "--certificate",
            cert.to_str().unwrap(),
            "--private-key",
            key.to_str().unwrap(),
            "--trust-anchor-arn",
            "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta",
            "--profile-arn",
            "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p",
            "--role-arn",
            "arn:aws:iam::123456789012:role/r",
            "--endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--no-cache",
        ],
        &[("NO_PROXY", "127.0.0.1")],
    );
    (r, port)
}

#[test]
fn a_missing_key_file_says_nothing_was_sent_and_does_not_suggest_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = credential_process_to_nowhere(dir.path(), true);
    println!("{}", r.stderr.trim_end());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("nothing was sent to IAM Roles Anywhere"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("a new key cannot match the certificate"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("key create"), "{}", r.stderr);
    assert!(!r.stderr.contains("trustAnchorArn"), "{}", r.stderr);
}

#[test]
fn retries_are_logged_with_their_cause_and_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (r, port) = credential_process_to_nowhere(dir.path(), false);
    println!("{}", r.stderr.trim_end());
    assert_eq!(r.code, 4, "{}", r.stderr);
    let retry = r
        .stderr
        .lines()
        .find(|l| l.contains("attempt 1 failed:"))
        .unwrap_or_else(|| panic!("no retry line: {}", r.stderr));
    assert!(
        retry.contains(&format!("cannot connect to https://127.0.0.1:{port}"))
            && retry.contains("; retrying in "),
        "{retry}"
    );
}

#[test]
fn status_after_the_manual_flow_reads_the_config_and_certificate_and_says_first_boot_has_not_run() {
    use util::config::{firstboot_yaml, BootstrapConfig, NodeConfig};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc/hybridboot")).unwrap();
    std::fs::create_dir_all(root.join("etc/iam/pki")).unwrap();
    let node = NodeConfig {
        certificate_path: Some("/etc/iam/pki/server.pem".into()),
        ..NodeConfig::example("node-1", "handle:0x81000001")
    };
    let boot = BootstrapConfig::new(
        "handle:0x81000001",
        "device:/dev/tpmrm0",
        "https://vault.test:8200",
    );
    std::fs::write(
        root.join("etc/hybridboot/config.yaml"),
        firstboot_yaml(&node, &boot),
    )
    .unwrap();
    util::x509::self_signed_ec(
        &root.join("etc/iam/pki/server.pem"),
        &root.join("etc/iam/pki/server.key"),
        "node-1",
        2,
    );
    // Init by hand wrote its files; first boot never ran (no state file).
    let r = run(&["status", "--root", root.to_str().unwrap()], &[]);
    r.ok();
    println!("{}", r.stdout);
    assert!(r.stdout.contains("has not run"), "{}", r.stdout);
    assert!(
        r.stdout.contains("node                   node-1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("CN=node-1"), "{}", r.stdout);
    let r = run(&["status", "--json", "--root", root.to_str().unwrap()], &[]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["firstBoot"], "not run");
    assert_eq!(v["nodeName"], "node-1");
    assert_eq!(v["certificate"]["valid"], true, "{v}");
    assert!(
        v["certificate"]["serial"].as_str().unwrap().contains(':'),
        "{v}"
    );
}

#[test]
fn init_under_a_root_starts_nothing_and_names_the_image_path_of_hybridboot() {
    use util::config::NodeConfig;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/iam/pki")).unwrap();
    util::x509::self_signed_ec(
        &root.join("etc/iam/pki/server.pem"),
        &root.join("etc/iam/pki/server.key"),
        "node-1",
        2,
    );
    let ca = dir.path().join("ca.pem");
    util::x509::self_signed_ec(&ca, &dir.path().join("ca.key"), "cluster-ca", 2);
    use base64::Engine as _;
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca).unwrap());
    let text = NodeConfig {
        certificate_path: Some("/etc/iam/pki/server.pem".into()),
        ..NodeConfig::example("node-1", "handle:0x81000001")
    }
    .yaml()
    .replace(
        "    region: us-west-2\n",
        &format!("    region: us-west-2\n    apiServerEndpoint: https://api.example.com\n    certificateAuthority: {ca_b64}\n    cidr: 10.100.0.0/16\n"),
    );
    // The NodeConfig is the node's file: --config-source is taken under the root like every
    // other path. A NodeConfig at that path outside the root is not read.
    std::fs::create_dir_all(root.join("etc/eks")).unwrap();
    std::fs::write(root.join("etc/eks/node.yaml"), &text).unwrap();
    let config = "file:///etc/eks/node.yaml";
    let outside = dir.path().join("outside.yaml");
    std::fs::write(&outside, &text).unwrap();
    // A service manager that must not be asked: it fails.
    let systemctl = dir.path().join("systemctl");
    std::fs::write(&systemctl, "#!/bin/sh\necho called >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let r = run(
        &[
            "init",
            "--config-source",
            config,
            "--root",
            root.to_str().unwrap(),
            "--kubelet-version",
            "v1.31.2",
            "--skip",
            "node-ip-validation",
        ],
        &[
            ("HYBRIDBOOT_SYSTEMCTL", systemctl.to_str().unwrap()),
            ("HYBRIDBOOT_TCTI", "swtpm:host=127.0.0.1,port=2321"),
        ],
    );
    println!("{}", r.stderr.trim_end());
    r.ok();
    assert!(
        r.stderr.contains("--root implies --no-start"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("systemctl restart kubelet"),
        "{}",
        r.stderr
    );
    let aws_config = std::fs::read_to_string(root.join("etc/aws/hybrid/config"))
        .or_else(|_| {
            // Wherever init put it: find the credential_process line.
            let out = util::tool(
                "grep",
                &["-rl", "credential_process", root.to_str().unwrap()],
                &[],
            );
            std::fs::read_to_string(out.stdout.lines().next().unwrap_or_default())
        })
        .unwrap();
    assert!(
        aws_config.contains("credential_process = /usr/bin/hybridboot credential-process"),
        "{aws_config}"
    );
    // The TPM given through the environment is in the line that runs without it.
    assert!(
        aws_config.contains("--tcti swtpm:host=127.0.0.1,port=2321"),
        "{aws_config}"
    );
    assert!(!aws_config.contains("target/debug"), "{aws_config}");

    // The host's file at the same path is not the node's: the error names the path under the
    // root.
    let r = run(
        &[
            "init",
            "--config-source",
            outside.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--kubelet-version",
            "v1.31.2",
        ],
        &[("HYBRIDBOOT_SYSTEMCTL", systemctl.to_str().unwrap())],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let under = root.join(outside.strip_prefix("/").unwrap());
    assert!(
        r.stderr.contains(&under.display().to_string()),
        "{}",
        r.stderr
    );
}
