//! `init`, `token` and `kubeconfig` against real peers on loopback: moto (EKS DescribeCluster with
//! signature checking on, IAM, STS), a test API server that verifies EKS tokens with botocore
//! (tests/peers/apiserver.py), and the real `kubectl`.

use crate::util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::config::NodeConfig;
use util::peers::{ApiServer, MiniCa, Moto};

use serde_json::Value;

/// The cluster CA (`ca.pem`, which also signs the API server's TLS certificate) and a
/// self-signed node certificate `node.pem` with CN `node_cn`.
fn make_pki(dir: &Path, node_cn: &str) -> MiniCa {
    let ca = MiniCa::root(dir, "ca");
    util::x509::self_signed_ec(&dir.join("node.pem"), &dir.join("node.key"), node_cn, 2);
    ca
}

/// moto + apiserver + role credentials, in one tempdir.
struct Env {
    dir: tempfile::TempDir,
    moto_endpoint: String,
    api_port: u16,
    /// Credentials of the node role (allowed eks:DescribeCluster).
    role: (String, String, String),
    _moto: Moto,
    api: ApiServer,
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = make_pki(d, "node-1");
        let apicreds = d.join("apicreds.json");
        std::fs::write(&apicreds, r#"{"credentials":[]}"#).unwrap();
        let api = ApiServer::start(&ca, &apicreds);
        let moto = Moto::start_with(&[
            "--eks-ca-file",
            ca.cert.to_str().unwrap(),
            "--eks-endpoint",
            &api.endpoint(),
        ]);
        // The node role's credentials, from moto's STS with the minter's key (boto3, not us).
        let role = moto.assume_role("node-1");
        std::fs::write(
            &apicreds,
            serde_json::json!({"credentials": [
                {"access_key_id": role.0, "secret_access_key": role.1}
            ]})
            .to_string(),
        )
        .unwrap();
        Env {
            dir,
            moto_endpoint: moto.endpoint.clone(),
            api_port: api.port,
            role,
            _moto: moto,
            api,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn api_stats(&self) -> Value {
        self.api.stats()
    }

    /// A NodeConfig under the tempdir; `edit` changes its text.
    fn node_config(&self, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let text = NodeConfig {
            node_ip: Some("10.80.0.5".into()),
            certificate_path: Some("/etc/iam/pki/server.pem".into()),
            ..NodeConfig::moto_site("node-1", "/etc/iam/pki/server.key")
        }
        .yaml();
        let path = self.path(name);
        std::fs::write(&path, edit(text)).unwrap();
        path
    }

    /// A root with the node certificate in place.
    fn root(&self, name: &str, cert: &str) -> PathBuf {
        let root = self.path(name);
        std::fs::create_dir_all(root.join("etc/iam/pki")).unwrap();
        std::fs::copy(self.path(cert), root.join("etc/iam/pki/server.pem")).unwrap();
        root
    }
}

/// `cfg` copied into the node's root at /etc/eks/<name>; returns that node path as init's
/// `--config-source` (read under `--root`, like every path of the node).
fn source_in(root: &Path, cfg: &Path) -> String {
    let node_path = Path::new("/etc/eks").join(cfg.file_name().unwrap());
    let in_root = root.join(node_path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(in_root.parent().unwrap()).unwrap();
    std::fs::copy(cfg, &in_root).unwrap();
    format!("file://{}", node_path.display())
}

/// Runs hybridboot with no AWS settings inherited, HOME in the tempdir, and `env` on top.
fn hb(env: &Env, args: &[&str], extra: &[(&str, &str)]) -> util::Run {
    let mut cmd = Command::new(util::bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("HYBRIDBOOT_") || k == "KUBERNETES_EXEC_INFO" {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", env.dir.path());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().unwrap().into()
}

fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn kubectl(kubeconfig: &Path, env: &Env, extra: &[(&str, &str)]) -> util::Run {
    let mut cmd = Command::new("kubectl");
    cmd.args([
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "get",
        "--raw",
        "/version",
    ]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("KUBE") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", env.dir.path());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("kubectl").into()
}

#[test]
fn init_fills_cluster_details_from_moto_is_idempotent_and_kubectl_gets_in() {
    let env = Env::start();
    let (akid, secret, token) = env.role.clone();
    let creds = [
        ("AWS_ACCESS_KEY_ID", akid.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_SESSION_TOKEN", token.as_str()),
    ];
    let recorder = env.path("systemctl.sh");
    let calls = env.path("systemctl.calls");
    std::fs::write(
        &recorder,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &recorder,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cfg = env.node_config("node.yaml", |t| t);
    let root = env.root("root", "node.pem");
    let source = source_in(&root, &cfg);
    let mut run_env: Vec<(&str, &str)> = creds.to_vec();
    let eks = env.moto_endpoint.clone();
    let rec = recorder.display().to_string();
    run_env.push(("AWS_ENDPOINT_URL_EKS", &eks));
    run_env.push(("HYBRIDBOOT_SYSTEMCTL", &rec));
    let hybridboot = util::bin().display().to_string();
    let args = [
        "init",
        "--config-source",
        &source,
        "--root",
        &root.display().to_string(),
        "--kubelet-version",
        "v1.31.0",
        // --root implies --no-start; the recorder stands in for this root's systemd.
        "--start",
        // The lines init writes name where hybridboot is on the node: here, the test build.
        "--hybridboot-path",
        &hybridboot,
    ];
    let first = hb(&env, &args, &run_env);
    first.ok();

    // DescribeCluster filled endpoint and CA: the cluster's real CA and API server URL.
    assert_eq!(
        std::fs::read(root.join("etc/kubernetes/pki/ca.crt")).unwrap(),
        std::fs::read(env.path("ca.pem")).unwrap()
    );
    let kubeconfig = std::fs::read_to_string(root.join("var/lib/kubelet/kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains(&format!("server: https://127.0.0.1:{}", env.api_port)),
        "{kubeconfig}"
    );
    let aws_config = std::fs::read_to_string(root.join("etc/aws/hybrid/config")).unwrap();
    assert!(aws_config.contains("credential-process --certificate /etc/iam/pki/server.pem"));
    let kubelet_cfg: Value = serde_json::from_slice(
        &std::fs::read(root.join("etc/kubernetes/kubelet/config.json")).unwrap(),
    )
    .unwrap();
    // moto_setup's service CIDR 172.20.0.0/16 -> cluster DNS .10.
    assert_eq!(kubelet_cfg["clusterDNS"][0], "172.20.0.10", "{kubelet_cfg}");
    let recorded = std::fs::read_to_string(&calls).unwrap();
    for want in [
        "daemon-reload",
        "restart containerd.service",
        "restart kubelet.service",
        "restart systemd-sysctl.service",
    ] {
        assert!(recorded.lines().any(|l| l == want), "{want}: {recorded}");
    }
    // Both enabled, in one call.
    let enabled: Vec<&str> = recorded
        .lines()
        .filter_map(|l| l.strip_prefix("enable "))
        .flat_map(|l| l.split(' '))
        .collect();
    assert_eq!(
        recorded
            .lines()
            .filter(|l| l.starts_with("enable "))
            .count(),
        1,
        "{recorded}"
    );
    for unit in ["containerd.service", "kubelet.service"] {
        assert!(enabled.contains(&unit), "{unit} not enabled: {recorded}");
    }
    let before = snapshot(&root);

    // Second run: identical files, nothing restarted.
    let second = hb(&env, &args, &run_env);
    second.ok();
    assert_eq!(snapshot(&root), before);
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), recorded);
    assert!(
        second.stderr.contains("nothing changed"),
        "{}",
        second.stderr
    );

    // A kubelet-only change (to the node's NodeConfig, in the root) restarts the kubelet and
    // nothing else.
    let cfg = root.join("etc/eks/node.yaml");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace(
            "      - --node-ip=10.80.0.5\n",
            "      - --node-ip=10.80.0.5\n      - --node-labels=site=lab\n",
        ),
    )
    .unwrap();
    hb(&env, &args, &run_env).ok();
    let after = std::fs::read_to_string(&calls).unwrap();
    let new_calls: Vec<&str> = after[recorded.len()..].lines().collect();
    assert_eq!(
        new_calls,
        vec!["enable kubelet.service", "restart kubelet.service"],
        "{after}"
    );

    // kubectl with the kubelet's kubeconfig (CA path moved under the root) runs
    // `hybridboot token`, and the API server verifies the token with botocore.
    let copy = env.path("kubelet.kubeconfig");
    std::fs::write(
        &copy,
        kubeconfig.replace(
            "certificate-authority: /etc/kubernetes/pki/ca.crt",
            &format!(
                "certificate-authority: {}",
                root.join("etc/kubernetes/pki/ca.crt").display()
            ),
        ),
    )
    .unwrap();
    let k = kubectl(&copy, &env, &creds);
    k.ok();
    assert!(k.stdout.contains("v1.31.0-hybridboot-test"), "{}", k.stdout);
    // kubectl may ask more than once (it retries discovery-style requests); all were valid.
    let stats = env.api_stats();
    let ok = stats["ok"].as_u64().unwrap();
    assert!(ok >= 1, "{stats}");
    assert_eq!(stats["rejected"], 0, "{stats}");
    assert_eq!(stats["last_access_key_id"], akid.as_str());

    // A token signed with the wrong secret is refused by the server (kubectl fails).
    let bad = kubectl(
        &copy,
        &env,
        &[
            ("AWS_ACCESS_KEY_ID", akid.as_str()),
            ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
            ("AWS_SESSION_TOKEN", token.as_str()),
        ],
    );
    bad.failed();
    let stats = env.api_stats();
    assert!(stats["rejected"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["ok"].as_u64().unwrap(), ok, "{stats}");
    assert!(
        stats["last_error"]
            .as_str()
            .unwrap()
            .contains("signature mismatch"),
        "{stats}"
    );
    assert!(!bad.stderr.contains("wrong-secret"));
}

/// `--root R` with `R/etc/aws` and `R/var/lib/kubelet` linked to an absolute directory outside
/// R: init resolves them as a chroot to R would (the targets re-rooted inside R) and writes
/// nothing outside R.
#[test]
fn init_under_root_never_follows_a_link_out_of_the_root() {
    let env = Env::start();
    let (akid, secret, token) = env.role.clone();
    let eks = env.moto_endpoint.clone();
    let run_env: Vec<(&str, &str)> = vec![
        ("AWS_ACCESS_KEY_ID", &akid),
        ("AWS_SECRET_ACCESS_KEY", &secret),
        ("AWS_SESSION_TOKEN", &token),
        ("AWS_ENDPOINT_URL_EKS", &eks),
    ];
    let cfg = env.node_config("node.yaml", |t| t);
    let root = env.root("root", "node.pem");
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("etc/aws")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("var/lib/kubelet")).unwrap();
    let r = hb(
        &env,
        &[
            "init",
            "--config-source",
            &source_in(&root, &cfg),
            "--root",
            &root.display().to_string(),
            "--kubelet-version",
            "v1.31.0",
            "--no-start",
        ],
        &run_env,
    );
    r.ok();
    assert_eq!(
        util::dir_entries(&outside),
        Vec::<String>::new(),
        "init wrote outside the root: {}",
        r.stderr
    );
    // Where a chroot would have put them: the link targets taken inside the root.
    let rerooted = root.join(outside.strip_prefix("/").unwrap());
    assert!(
        rerooted.join("hybrid/config").is_file(),
        "{:?}",
        util::dir_entries(&rerooted)
    );
    assert!(rerooted.join("kubeconfig").is_file());
}

#[test]
fn token_credentials_from_shared_file_and_credential_process() {
    let env = Env::start();
    let (akid, secret, token) = env.role.clone();
    // Shared credentials file, profile chosen by AWS_PROFILE.
    let credfile = env.path("credentials");
    std::fs::write(
        &credfile,
        format!(
            "[node]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\naws_session_token = {token}\n"
        ),
    )
    .unwrap();
    let cf = credfile.display().to_string();
    let out = hb(
        &env,
        // -vv: the debug log names the source; it must still show no secret.
        &[
            "-vv",
            "token",
            "--cluster-name",
            "hybrid-test",
            "--region",
            "us-east-1",
        ],
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", &cf),
            ("AWS_PROFILE", "node"),
        ],
    );
    out.ok();
    let ec: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(ec["kind"], "ExecCredential");
    assert_eq!(ec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert!(ec["status"]["token"]
        .as_str()
        .unwrap()
        .starts_with("k8s-aws-v1."));
    assert!(out.stderr.contains("CredentialsFile"), "{}", out.stderr);
    assert!(!out.stderr.contains(&secret) && !out.stderr.contains(&token));
    assert!(!out.stderr.contains("k8s-aws-v1."), "{}", out.stderr);

    // A user kubeconfig from `hybridboot kubeconfig`, its plugin taking credentials from a
    // config file credential_process (a script, spawned like an SDK does).
    let script = env.path("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho '{{\"Version\":1,\"AccessKeyId\":\"{akid}\",\"SecretAccessKey\":\"{secret}\",\"SessionToken\":\"{token}\"}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = env.path("config");
    std::fs::write(
        &config,
        format!("[default]\ncredential_process = {}\n", script.display()),
    )
    .unwrap();
    let kc = env.path("user.kubeconfig");
    let server = format!("https://127.0.0.1:{}", env.api_port);
    hb(
        &env,
        &[
            "kubeconfig",
            "--cluster-name",
            "hybrid-test",
            "--region",
            "us-east-1",
            "--server",
            &server,
            "--certificate-authority",
            &env.path("ca.pem").display().to_string(),
            "--out",
            &kc.display().to_string(),
        ],
        &[],
    )
    .failed(); // the Roles Anywhere parameters are required
    assert!(!kc.exists());
    // With them: a kubeconfig kubectl reads, whose plugin is `hybridboot token` with the Roles
    // Anywhere parameters (the certificate path made absolute, the pkcs11 URI intact).
    let key_ref = "pkcs11:token=user;object=me?pin-source=file:/run/pin";
    let made = Command::new(util::bin())
        .current_dir(env.dir.path())
        .args([
            "kubeconfig",
            "--cluster-name",
            "hybrid-test",
            "--region",
            "us-east-1",
            "--server",
            &server,
            "--certificate-authority",
            &env.path("ca.pem").display().to_string(),
            "--out",
            &kc.display().to_string(),
            "--certificate",
            "node.pem",
            "--private-key",
            key_ref,
            "--trust-anchor-arn",
            "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta",
            "--profile-arn",
            "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p",
            "--role-arn",
            "arn:aws:iam::123456789012:role/hybrid-node",
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kc).unwrap().permissions())
            & 0o777,
        0o600
    );
    let view = util::tool(
        "kubectl",
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "json",
            "--kubeconfig",
            &kc.display().to_string(),
        ],
        &[],
    );
    assert_eq!(view.code, 0, "{}", view.stderr);
    let v: Value = serde_json::from_str(&view.stdout).unwrap();
    let exec = &v["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], util::bin().display().to_string());
    let args: Vec<&str> = exec["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let cert_abs = env.path("node.pem").display().to_string();
    assert_eq!(
        &args[..7],
        &[
            "token",
            "--cluster-name",
            "hybrid-test",
            "--region",
            "us-east-1",
            "--certificate",
            cert_abs.as_str()
        ]
    );
    assert_eq!(args[8], key_ref);
    assert_eq!(v["clusters"][0]["cluster"]["server"], server.as_str());
    let ca_data = v["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(ca_data)
            .unwrap(),
        std::fs::read(env.path("ca.pem")).unwrap()
    );

    // The node-style kubeconfig: plain `token` arguments, credentials via AWS_CONFIG_FILE.
    let plain = env.path("plain.kubeconfig");
    std::fs::write(
        &plain,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      args: [token, --cluster-name, hybrid-test, --region, us-east-1]\n      interactiveMode: Never\n",
            env.path("ca.pem").display(),
            util::bin().display()
        ),
    )
    .unwrap();
    let cfgs = config.display().to_string();
    let k = kubectl(&plain, &env, &[("AWS_CONFIG_FILE", &cfgs)]);
    k.ok();
    assert!(k.stdout.contains("v1.31.0-hybridboot-test"), "{}", k.stdout);
    let stats = env.api_stats();
    assert!(stats["ok"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["rejected"], 0, "{stats}");
}

#[test]
fn bad_inputs_fail_with_one_clear_error_and_write_nothing() {
    let env = Env::start();
    let (akid, secret, token) = env.role.clone();
    let eks = env.moto_endpoint.clone();
    let base: Vec<(&str, &str)> = vec![
        ("AWS_ACCESS_KEY_ID", &akid),
        ("AWS_SECRET_ACCESS_KEY", &secret),
        ("AWS_SESSION_TOKEN", &token),
        ("AWS_ENDPOINT_URL_EKS", &eks),
    ];
    // A DescribeCluster answer for a cluster that is still CREATING, served by a plain HTTP
    // server (moto makes every cluster ACTIVE).
    let inactive_dir = env.path("inactive/clusters");
    std::fs::create_dir_all(&inactive_dir).unwrap();
    std::fs::write(
        inactive_dir.join("hybrid-test"),
        r#"{"cluster":{"name":"hybrid-test","status":"CREATING"}}"#,
    )
    .unwrap();
    let port = util::free_port().to_string();
    let http = Command::new(util::python())
        .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(env.path("inactive"))
        .arg(&port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = util::Background(http);
    let inactive_url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let long_name = "n".repeat(65);
    type Case<'a> = (&'a str, Box<dyn Fn(String) -> String>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed",
            Box::new(|t| t.replace("    name: hybrid-test", "    name: [unclosed")),
            "node.pem",
            "yaml",
        ),
        (
            "no-region",
            Box::new(|t| t.replace("    region: us-east-1\n", "")),
            "node.pem",
            "region",
        ),
        (
            "long-name",
            Box::new(move |t| t.replace("nodeName: node-1", &format!("nodeName: {long_name}"))),
            "node.pem",
            "nodeName",
        ),
        (
            "cn-mismatch",
            Box::new(|t| t.replace("nodeName: node-1", "nodeName: node-2")),
            "node.pem",
            "does not match nodeName",
        ),
        (
            "inactive",
            Box::new(|t| t),
            "node.pem",
            "CREATING, not ACTIVE",
        ),
    ];
    for (name, edit, cert, want) in cases {
        let cfg = env.node_config(&format!("{name}.yaml"), edit);
        let root = env.root(&format!("root-{name}"), cert);
        let source = source_in(&root, &cfg);
        let before = snapshot(&root);
        let mut e = base.clone();
        if name == "inactive" {
            e.retain(|(k, _)| *k != "AWS_ENDPOINT_URL_EKS");
            e.push(("AWS_ENDPOINT_URL_EKS", &inactive_url));
        }
        let r = hb(
            &env,
            &[
                "init",
                "--config-source",
                &source,
                "--root",
                &root.display().to_string(),
                "--kubelet-version",
                "v1.31.0",
                "--no-start",
            ],
            &e,
        );
        assert_eq!(r.code, 3, "{name}: {}", r.stderr);
        let errors: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.to_lowercase().starts_with("error"))
            .collect();
        assert_eq!(errors.len(), 1, "{name}: {}", r.stderr);
        assert!(
            errors[0].to_lowercase().contains(&want.to_lowercase()),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(snapshot(&root), before, "{name}: something was written");
        assert!(!r.stderr.contains(&secret) && !r.stderr.contains(&token));
    }
}

/// A stand-in program that appends its arguments and its whole environment to `log`, then
/// prints `stdout` (a child hybridboot starts, as it sees the world).
fn env_dumper(path: &Path, log: &Path, stdout: &str) {
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\necho \"== $0 $*\" >> {log}\nenv >> {log}\nprintf '%s\\n' '{stdout}'\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Children used to inherit hybridboot's whole environment, `VAULT_TOKEN`, the PKCS#11 PIN and
/// the AWS keys included. `init` runs the image's `kubelet --version` and `systemctl`: both get
/// only what they need (the search path, locale), no secret.
#[test]
fn init_children_get_no_secret_from_the_environment() {
    let env = Env::start();
    let (akid, secret, token) = env.role.clone();
    let log = env.path("children.env");
    let systemctl = env.path("systemctl.sh");
    env_dumper(&systemctl, &log, "");
    let cfg = env.node_config("node.yaml", |t| t);
    let root = env.root("root", "node.pem");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    env_dumper(&root.join("usr/bin/kubelet"), &log, "Kubernetes v1.31.2");
    let source = source_in(&root, &cfg);
    let (eks, rec) = (env.moto_endpoint.clone(), systemctl.display().to_string());
    const VAULT_TOKEN: &str = "hvs.never-for-children-5811";
    const PIN: &str = "pin-never-for-children-5812";
    let r = hb(
        &env,
        &[
            "init",
            "--config-source",
            &source,
            "--root",
            &root.display().to_string(),
            // --root alone implies --no-start; systemctl is one of the children here.
            "--start",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", akid.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ("AWS_SESSION_TOKEN", token.as_str()),
            ("AWS_ENDPOINT_URL_EKS", &eks),
            ("HYBRIDBOOT_SYSTEMCTL", &rec),
            ("VAULT_TOKEN", VAULT_TOKEN),
            ("HYBRIDBOOT_PKCS11_PIN", PIN),
        ],
    );
    r.ok();
    let dumped = std::fs::read_to_string(&log).unwrap();
    assert!(dumped.contains("kubelet --version"), "{dumped}");
    assert!(dumped.contains("systemctl.sh daemon-reload"), "{dumped}");
    assert!(
        dumped.contains("\nPATH="),
        "children keep the search path: {dumped}"
    );
    for secret in [VAULT_TOKEN, PIN, secret.as_str(), token.as_str()] {
        assert!(!dumped.contains(secret), "a child saw a secret:\n{dumped}");
    }
    for name in [
        "VAULT_TOKEN=",
        "HYBRIDBOOT_PKCS11_PIN=",
        "AWS_SECRET_ACCESS_KEY=",
    ] {
        assert!(!dumped.contains(name), "a child saw {name}:\n{dumped}");
    }
}
