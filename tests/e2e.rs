//! End to end on loopback, hardware key to `kubectl`, with nothing between the real peers but
//! hybridboot and kubectl:
//!
//! - issue #5 (node): swtpm key, certificate from OpenBao (`hybridboot enroll`), `hybridboot
//!   init` with a NodeConfig without endpoint and CA: Roles Anywhere (tests/peers/rolesanywhere.py,
//!   trust anchor OpenBao's root CA, credentials minted by moto's STS) -> moto EKS
//!   DescribeCluster (signature checking on) -> the written kubeconfig and AWS config -> `kubectl`
//!   -> `hybridboot token` -> credential_process of the written config -> Roles Anywhere -> the
//!   test API server (tests/peers/apiserver.py) recomputes the token signature with botocore.
//! - issue #9 (person): SoftHSM2 key, certificate from a test CA with an intermediate,
//!   `hybridboot kubeconfig` (DescribeCluster for server and CA) -> `kubectl` -> `hybridboot
//!   token --certificate ...` -> Roles Anywhere over TLS -> the API server.
//!
//! The API server knows only the key pairs the Roles Anywhere endpoint minted
//! (`--issued-credentials-file`), so a 200 proves the token was signed with a Roles Anywhere
//! session. No AWS credentials are in any environment: every process starts from an empty one.
#![cfg(all(feature = "tpm", feature = "pkcs11"))]

use crate::util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use util::config::NodeConfig;
use util::openbao::OpenBao;
use util::peers::{ApiServer, MiniCa, Moto, RaOptions, RolesAnywhere};
use util::softhsm::{self, SoftHsm};
use util::swtpm::Swtpm;
use util::Run;

/// A process with an empty environment except `PATH`, `HOME` and `env`: no AWS or hybridboot
/// setting of the machine or the test runner leaks in.
fn clean(program: &Path, home: &Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn hb(home: &Path, env: &[(&str, String)], args: &[&str]) -> Run {
    clean(&util::bin(), home, env)
        .args(args)
        .output()
        .expect("running hybridboot")
        .into()
}

/// `kubectl get --raw /version` with this kubeconfig (and CA file, if given).
fn kubectl(home: &Path, env: &[(&str, String)], kubeconfig: &Path, ca: Option<&Path>) -> Run {
    let mut cmd = clean(Path::new("kubectl"), home, env);
    cmd.arg("--kubeconfig").arg(kubeconfig);
    if let Some(ca) = ca {
        cmd.arg("--certificate-authority").arg(ca);
    }
    cmd.args(["get", "--raw", "/version"])
        .output()
        .expect("kubectl")
        .into()
}

/// The cluster side: cluster CA, API server, moto (EKS answers with the API server's endpoint
/// and CA) and the Roles Anywhere endpoint trusting `trust_anchor`, minting through moto.
struct Cluster {
    dir: tempfile::TempDir,
    api: ApiServer,
    moto: Moto,
    ra: RolesAnywhere,
}

impl Cluster {
    /// Starts the cluster side while `trust` runs on another thread; `trust` returns what the
    /// test keeps (its CA) and the trust anchor's CA file.
    fn start<T: Send>(trust: impl FnOnce() -> (T, PathBuf) + Send) -> (Cluster, T) {
        std::thread::scope(|scope| {
            let trust = scope.spawn(trust);
            let dir = tempfile::tempdir().unwrap();
            let cluster_ca = MiniCa::root(dir.path(), "cluster-ca");
            let issued = dir.path().join("issued.json");
            let api = ApiServer::start(&cluster_ca, &issued);
            let ca_file = cluster_ca.cert.display().to_string();
            let moto =
                Moto::start_with(&["--eks-ca-file", &ca_file, "--eks-endpoint", &api.endpoint()]);
            let (kept, trust_anchor) = trust.join().expect("trust anchor set-up");
            let mut opts = RaOptions::new(&[&trust_anchor]).sts(&moto);
            opts.extra = vec![
                "--issued-credentials-file".into(),
                issued.display().to_string(),
            ];
            let ra = RolesAnywhere::start(&opts);
            (Cluster { dir, api, moto, ra }, kept)
        })
    }

    /// Successful CreateSession calls so far.
    fn sessions(&self) -> u64 {
        let s = self.ra.stats();
        assert_eq!(s["failed"], 0, "Roles Anywhere refused a request: {s}");
        s["ok"].as_u64().unwrap()
    }

    /// The access key ids the endpoint minted.
    fn issued_key_ids(&self) -> Vec<String> {
        let doc: Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("issued.json")).unwrap())
                .unwrap();
        doc["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["access_key_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// DescribeCluster calls moto answered with 200 (signature checking is on; moto_setup.py
    /// makes one too).
    fn describe_cluster_200s(&self) -> usize {
        self.moto
            .process
            .log_text()
            .lines()
            .filter(|l| l.contains("\"GET /clusters/hybrid-test HTTP/1.1\" 200"))
            .count()
    }

    /// moto checks signatures: a DescribeCluster signed with a wrong secret (by curl) is
    /// refused as such, so its 200s above were correctly signed ones.
    fn assert_moto_checks_signatures(&self) {
        let akid = self.moto.setup["access_key_id"].as_str().unwrap();
        let r = util::tool(
            "curl",
            &[
                "-sS",
                "--aws-sigv4",
                "aws:amz:us-east-1:eks",
                "--user",
                &format!("{akid}:not-the-secret"),
                &format!("{}/clusters/hybrid-test", self.moto.endpoint),
            ],
            &[],
        );
        assert!(r.stdout.contains("SignatureDoesNotMatch"), "{}", r.stdout);
    }

    /// A successful kubectl call: 200 with the API server's version, every token accepted
    /// (kubectl may send the request more than once); returns the access key id used.
    fn assert_kubectl_ok(&self, r: &Run, ok_before: u64) -> (u64, String) {
        r.ok();
        let version: Value = serde_json::from_str(&r.stdout).expect("version JSON");
        assert_eq!(version["gitVersion"], "v1.31.0-hybridboot-test");
        let stats = self.api.stats();
        assert_eq!(stats["rejected"], 0, "{stats}");
        let ok = stats["ok"].as_u64().unwrap();
        assert!(ok > ok_before, "{stats}");
        (
            ok,
            stats["last_access_key_id"].as_str().unwrap().to_string(),
        )
    }
}

const NODE: &str = "node-1.example.com";

/// Issue #5: a node joins with nothing but its TPM key and an OpenBao certificate.
#[test]
fn node_tpm_openbao_roles_anywhere_describe_cluster_init_kubectl() {
    let t0 = Instant::now();
    let (cluster, bao) = Cluster::start(|| {
        let bao = OpenBao::start();
        let root = bao.pki_root.clone();
        (bao, root)
    });
    let tpm = Swtpm::start();
    eprintln!("peers up in {:?}", t0.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();
    let key = "handle:0x81000001";
    let tpm_env = [("HYBRIDBOOT_TCTI", tpm.tcti())];

    // Key in the TPM, certificate from OpenBao's issuing CA; enroll writes the leaf and then
    // the chain, which is how the trust anchor (the root) is reached without --intermediates.
    hb(d, &tpm_env, &["key", "create", "--key", key]).ok();
    // Paths in the NodeConfig are absolute: `X/...` is the same file inside the root (where
    // init's checks and writes go) and outside it (what the written credential_process line
    // and kubeconfig name), because X is a symlink to ROOT/X.
    let root = d.join("root");
    let x = d.join("node");
    let x_in_root = root.join(x.strip_prefix("/").unwrap());
    std::fs::create_dir_all(x_in_root.join("pki")).unwrap();
    std::os::unix::fs::symlink(&x_in_root, &x).unwrap();
    let cert = x.join("pki/server.pem");
    let token_file = d.join("vault-token");
    std::fs::write(&token_file, bao.node_token()).unwrap();
    hb(
        d,
        &tpm_env,
        &[
            "enroll",
            "--vault-addr",
            &bao.https_addr(),
            "--vault-ca",
            &s(&bao.listener_ca),
            "--pki-mount",
            "pki_int",
            "--pki-role",
            "node",
            "--key",
            key,
            "--common-name",
            NODE,
            "--certificate",
            &s(&cert),
            "--vault-token-file",
            &s(&token_file),
        ],
    )
    .ok();
    eprintln!("key and certificate in {:?}", t0.elapsed());

    // A NodeConfig without apiServerEndpoint, certificateAuthority and cidr.
    let ra = &cluster.ra;
    // Under the root (init reads --config-source there), through X.
    let config = x.join("nodeconfig.yaml");
    std::fs::write(
        &config,
        NodeConfig {
            node_ip: Some("10.80.0.5".into()),
            certificate_path: Some(s(&cert)),
            aws_config_path: Some(s(&x.join("aws/config"))),
            ..NodeConfig::moto_site(NODE, key).with_endpoint(ra)
        }
        .yaml(),
    )
    .unwrap();
    let ra_http = format!("http://127.0.0.1:{}", ra.http_port);
    let node_env = |cache: &str| {
        vec![
            tpm_env[0].clone(),
            ("AWS_ENDPOINT_URL_ROLESANYWHERE", ra_http.clone()),
            ("HYBRIDBOOT_CACHE_DIR", s(&d.join(cache))),
        ]
    };
    let mut init_env = node_env("cache-init");
    init_env.push(("AWS_ENDPOINT_URL_EKS", cluster.moto.endpoint.clone()));
    let describes = cluster.describe_cluster_200s();
    let t_init = Instant::now();
    let init = hb(
        d,
        &init_env,
        &[
            "init",
            "--config-source",
            &s(&config),
            "--root",
            &s(&root),
            "--no-start",
            "--kubelet-version",
            "v1.31.0",
            // The lines init writes name where hybridboot is on the node: here, the test build.
            "--hybridboot-path",
            &s(&util::bin()),
        ],
    );
    init.ok();
    eprintln!("init in {:?}", t_init.elapsed());
    assert_eq!(cluster.sessions(), 1, "init's CreateSession");
    assert_eq!(
        cluster.describe_cluster_200s(),
        describes + 1,
        "{}",
        init.stderr
    );
    cluster.assert_moto_checks_signatures();

    // DescribeCluster filled endpoint and CA.
    let kubeconfig = root.join("var/lib/kubelet/kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        text.contains(&format!("server: {}", cluster.api.endpoint())),
        "{text}"
    );
    let ca_written = root.join("etc/kubernetes/pki/ca.crt");
    assert_eq!(
        std::fs::read(&ca_written).unwrap(),
        std::fs::read(&cluster.api.ca).unwrap()
    );
    let aws_config = std::fs::read_to_string(x.join("aws/config")).unwrap();
    assert!(
        aws_config.contains(&format!(
            "credential-process --certificate {} --private-key {key}",
            s(&cert)
        )),
        "{aws_config}"
    );
    assert!(text.contains(&s(&x.join("aws/config"))), "{text}");

    // kubectl with the written kubeconfig, unchanged; only its CA path (/etc/kubernetes/pki,
    // fixed like nodeadm's) is given on the command line as the written file under the root.
    // Its plugin finds credentials through the written AWS config alone (the kubeconfig sets
    // AWS_CONFIG_FILE); a fresh cache, so the token's session is its own.
    let kube_env = node_env("cache-kubelet");
    let first = kubectl(d, &kube_env, &kubeconfig, Some(&ca_written));
    let (ok, akid) = cluster.assert_kubectl_ok(&first, 0);
    assert_eq!(
        cluster.sessions(),
        2,
        "the token made its own CreateSession"
    );
    let issued = cluster.issued_key_ids();
    assert_eq!(issued.len(), 2);
    assert_eq!(akid, issued[1], "token signed with the token's own session");

    // The second call uses the cached session: no CreateSession.
    let second = kubectl(d, &kube_env, &kubeconfig, Some(&ca_written));
    let (_, akid) = cluster.assert_kubectl_ok(&second, ok);
    assert_eq!(cluster.sessions(), 2, "second kubectl call: cache");
    assert_eq!(akid, issued[1]);
    eprintln!("total {:?}", t0.elapsed());
}

/// Issue #9: a person's kubeconfig with a SoftHSM2 key; the certificate from an intermediate CA
/// under the root trust anchor.
#[test]
fn person_softhsm_kubeconfig_kubectl_one_create_session() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();
    let (cluster, issuing) = Cluster::start(|| {
        let root_ca = MiniCa::root(d, "people-root");
        (root_ca.intermediate(d, "people-issuing"), root_ca.cert)
    });
    let hsm = SoftHsm::new();
    hsm.init_token("alice-card", "so-pin-1234", "user-pin-5678");
    eprintln!("peers up in {:?}", t0.elapsed());
    let pin = d.join("pin");
    std::fs::write(&pin, "user-pin-5678\n").unwrap();
    // The key reference names its module: the kubeconfig needs no environment for it.
    let key = format!(
        "pkcs11:token=alice-card;object=alice?module-path={}&pin-source=file:{}",
        softhsm::MODULE,
        s(&pin)
    );
    let hsm_env: Vec<(&str, String)> = hsm
        .env()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    hb(d, &hsm_env, &["key", "create", "--key", &key]).ok();
    let csr = d.join("alice.csr");
    hb(
        d,
        &hsm_env,
        &[
            "csr",
            "--key",
            &key,
            "--common-name",
            "alice",
            "--out",
            &s(&csr),
        ],
    )
    .ok();
    let cert = d.join("alice.pem");
    issuing.issue(&csr, &cert, -60, 3600);

    // The kubeconfig: server and CA from DescribeCluster (moto), with Roles Anywhere over TLS.
    let ra = &cluster.ra;
    let kubeconfig = d.join("alice.kubeconfig");
    let mut kc_env = hsm_env.clone();
    kc_env.push(("AWS_ENDPOINT_URL_EKS", cluster.moto.endpoint.clone()));
    kc_env.push(("HYBRIDBOOT_CACHE_DIR", s(&d.join("cache-kubeconfig"))));
    let describes = cluster.describe_cluster_200s();
    let made = hb(
        d,
        &kc_env,
        &[
            "kubeconfig",
            "--cluster-name",
            "hybrid-test",
            "--region",
            "us-east-1",
            "--certificate",
            &s(&cert),
            "--private-key",
            &key,
            "--intermediates",
            &s(&issuing.cert),
            "--trust-anchor-arn",
            &ra.trust_anchor_arn,
            "--profile-arn",
            &ra.profile_arn,
            "--role-arn",
            &ra.role_arn,
            "--endpoint",
            &ra.endpoint(),
            "--ca-bundle",
            &s(&ra.tls_ca),
            "--out",
            &s(&kubeconfig),
        ],
    );
    made.ok();
    assert_eq!(
        cluster.describe_cluster_200s(),
        describes + 1,
        "{}",
        made.stderr
    );
    cluster.assert_moto_checks_signatures();
    assert_eq!(
        cluster.sessions(),
        1,
        "kubeconfig's DescribeCluster session"
    );

    // kubectl as the person: their login session's runtime directory holds the cache; the
    // kubeconfig carries everything else (no endpoint or module variables).
    let xdg = d.join("run-user");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut person_env = hsm_env.clone();
    person_env.push(("XDG_RUNTIME_DIR", s(&xdg)));
    let first = kubectl(d, &person_env, &kubeconfig, None);
    let (ok, akid) = cluster.assert_kubectl_ok(&first, 0);
    assert_eq!(
        cluster.sessions(),
        2,
        "the token made its own CreateSession"
    );
    let issued = cluster.issued_key_ids();
    assert_eq!(akid, issued[1], "token signed with the token's own session");
    let cached: Vec<PathBuf> = std::fs::read_dir(xdg.join("hybridboot"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        !cached.is_empty(),
        "no cache entry in $XDG_RUNTIME_DIR/hybridboot"
    );

    let second = kubectl(d, &person_env, &kubeconfig, None);
    let (_, akid) = cluster.assert_kubectl_ok(&second, ok);
    assert_eq!(
        cluster.sessions(),
        2,
        "two kubectl calls, one CreateSession"
    );
    assert_eq!(akid, issued[1]);
    eprintln!("total {:?}", t0.elapsed());
}
