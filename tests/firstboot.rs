//! `hybridboot firstboot` against real peers: swtpm (the node key), OpenBao (Vault PKI), the IAM
//! Roles Anywhere test endpoint, moto (STS and EKS DescribeCluster with signature checking), a
//! fault-injecting TCP proxy, libfaketime (a wrong clock), SIGKILL (power cuts). The kubelet is
//! "baked into the image" as a stand-in that answers `--version`, and systemctl is a recorder.
use crate::util;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::config::{
    firstboot_yaml, BootstrapConfig, NodeConfig, TOKEN_FILE_AUTH, WRAPPED_APPROLE_AUTH,
};
use util::openbao::OpenBao;
use util::peers::{Moto, RaOptions, RolesAnywhere};
use util::swtpm::Swtpm;
use util::{run, tool, Run};

const CN: &str = "node-1.example.com";
const HANDLE: &str = "0x81000001";

/// One site: a Vault, the node's TPM, and the AWS side (Roles Anywhere, STS, EKS).
struct Site {
    bao: OpenBao,
    tpm: Swtpm,
    token: String,
    moto: Moto,
    ra: RolesAnywhere,
    /// The EKS cluster's CA (served by moto's DescribeCluster).
    cluster_ca: PathBuf,
    /// Holds the cluster CA.
    _dir: tempfile::TempDir,
}

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let (moto, cluster_ca) = Moto::loopback_cluster(dir.path());
        let bao = OpenBao::start();
        let token = bao.node_token();
        let ra = RolesAnywhere::start(&RaOptions::new(&[&bao.pki_root]).sts(&moto));
        Site {
            bao,
            tpm: Swtpm::start(),
            token,
            moto,
            ra,
            cluster_ca,
            _dir: dir,
        }
    }

    /// Writes the configuration (NodeConfig + BootstrapConfig) and the token file into `root`.
    fn configure(&self, root: &Path, node_name: &str, vault_addr: &str) {
        self.configure_auth(root, node_name, vault_addr, TOKEN_FILE_AUTH);
    }

    fn configure_auth(&self, root: &Path, node_name: &str, vault_addr: &str, auth: &str) {
        self.configure_full(
            root,
            node_name,
            vault_addr,
            auth,
            &self.ra.endpoint(),
            &self.moto.endpoint,
        );
    }

    /// Everything configurable: Vault auth and the AWS endpoints (a fault proxy goes there).
    fn configure_full(
        &self,
        root: &Path,
        node_name: &str,
        vault_addr: &str,
        auth: &str,
        ra_endpoint: &str,
        eks_endpoint: &str,
    ) {
        let etc = root.join("etc/hybridboot");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("vault-token"), format!("{}\n", self.token)).unwrap();
        std::fs::set_permissions(
            etc.join("vault-token"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        util::config::seed_image(root, &self.ra.tls_ca);
        let key = format!("handle:{HANDLE}");
        let node = NodeConfig {
            cluster: self.moto.cluster_name(),
            ..NodeConfig::moto_site(node_name, &key).with_endpoint(&self.ra)
        };
        let boot = BootstrapConfig {
            auth: auth.into(),
            ..BootstrapConfig::site(
                &key,
                &self.tpm.tcti(),
                vault_addr,
                ra_endpoint,
                eks_endpoint,
            )
        };
        std::fs::write(etc.join("config.yaml"), firstboot_yaml(&node, &boot)).unwrap();
    }

    /// moto's port (a fault proxy goes in front of it).
    fn moto_port(&self) -> u16 {
        self.moto
            .endpoint
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// What a power cut does to the TPM: a reset (transient objects and sessions are gone;
    /// persistent keys stay), then TPM2_Startup(CLEAR) as firmware would issue.
    fn power_cycle_tpm(&self) {
        let ctrl = format!("127.0.0.1:{}", self.tpm.port + 1);
        let r = tool("swtpm_ioctl", &["--tcp", &ctrl, "-i"], &[]);
        assert_eq!(r.code, 0, "swtpm_ioctl -i: {}{}", r.stdout, r.stderr);
        let tcti = self.tpm.tcti();
        let r = tool(
            "tpm2_startup",
            &["-c"],
            &[("TPM2TOOLS_TCTI", tcti.as_str())],
        );
        assert_eq!(r.code, 0, "tpm2_startup: {}{}", r.stdout, r.stderr);
        // No dictionary-attack counter is cleared here: the node key (empty auth) is noDA, so
        // these non-orderly shutdowns while it is in use must not lock it out.
    }

    /// Removes the node key from the TPM (and any transient object a killed run left).
    fn reset_tpm(&self) {
        let tcti = self.tpm.tcti();
        let env = [("TPM2TOOLS_TCTI", tcti.as_str())];
        tool("tpm2_flushcontext", &["-t"], &env);
        tool("tpm2_evictcontrol", &["-C", "o", "-c", HANDLE], &env);
    }
}

/// The environment of every firstboot run: loopback without proxy, and systemctl replaced by a
/// stand-in that does nothing ([`systemctl_recorder`] makes one that records).
fn env() -> Vec<(&'static str, &'static str)> {
    static RECORDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let recorder = RECORDER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hybridboot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("systemctl");
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    });
    vec![
        ("NO_PROXY", "127.0.0.1"),
        ("no_proxy", "127.0.0.1"),
        ("HYBRIDBOOT_SYSTEMCTL", recorder.as_str()),
    ]
}

/// A systemctl stand-in that appends its arguments to `log` (children get no test variable
/// from the environment, so the path is in the script); its path.
fn systemctl_recorder(log: &Path) -> String {
    let path = log.with_extension("systemctl.sh");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"$*\" >>'{}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

use util::firstboot_args;

fn firstboot(root: &Path, extra: &[(&str, &str)]) -> Run {
    let args = firstboot_args(root);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut e = env();
    e.extend_from_slice(extra);
    run(&args, &e)
}

fn spawn_firstboot(root: &Path) -> Child {
    Command::new(util::bin())
        .args(firstboot_args(root))
        .envs(env())
        .env_remove("HYBRIDBOOT_TCTI")
        .env_remove("TPM2TOOLS_TCTI")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn status_json(root: &Path) -> serde_json::Value {
    let r = run(&["status", "--json", "--root", root.to_str().unwrap()], &[]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}

fn cert_path(root: &Path) -> PathBuf {
    root.join("etc/iam/pki/server.pem")
}

fn stamp(root: &Path) -> PathBuf {
    root.join("var/lib/hybridboot/joined")
}

fn state_file(root: &Path) -> PathBuf {
    root.join("var/lib/hybridboot/firstboot.json")
}

/// True once the state file lists `step` as completed.
fn recorded(root: &Path, step: &str) -> bool {
    std::fs::read(state_file(root))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| {
            v["completed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == step))
        })
}

/// The subject and serial of the leaf, via openssl.
fn leaf_facts(root: &Path) -> String {
    tool(
        "openssl",
        &[
            "x509",
            "-in",
            cert_path(root).to_str().unwrap(),
            "-noout",
            "-subject",
            "-serial",
        ],
        &[],
    )
    .stdout
}

#[test]
fn firstboot_enrolls_stamps_last_reports_status_and_renews_from_the_same_config() {
    let site = Site::start();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    site.configure(root, CN, &site.bao.http_addr());

    // sd_notify messages, collected from a datagram socket as systemd would.
    let sock_path = root.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let systemctl_log = root.with_extension("systemctl.log");
    let recorder = systemctl_recorder(&systemctl_log);
    let started = Instant::now();
    let r = firstboot(
        root,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("HYBRIDBOOT_SYSTEMCTL", &recorder),
        ],
    );
    r.ok();
    println!("first boot took {} ms", started.elapsed().as_millis());
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    std::fs::remove_file(&sock_path).unwrap();
    for want in [
        "STATUS=checking the system clock",
        "STATUS=opening the node key",
        "STATUS=enrolling certificate with Vault",
        "STATUS=getting AWS credentials from IAM Roles Anywhere",
        "STATUS=configuring the node (init)",
        "READY=1",
    ] {
        assert!(messages.iter().any(|m| m == want), "{want}: {messages:?}");
    }
    assert!(
        messages.iter().any(|m| m.starts_with("STATUS=joined: ")),
        "{messages:?}"
    );

    // The certificate is for the TPM key and chains to the PKI root.
    let facts = leaf_facts(root);
    assert!(facts.contains(&format!("CN = {CN}")), "{facts}");
    let v = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            site.bao.pki_root.to_str().unwrap(),
            "-untrusted",
            cert_path(root).to_str().unwrap(),
            cert_path(root).to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let pubkey = run(
        &[
            "key",
            "show",
            "--key",
            &format!("handle:{HANDLE}"),
            "--tcti",
            &site.tpm.tcti(),
        ],
        &[],
    );
    pubkey.ok();
    let cert_pub = tool(
        "openssl",
        &[
            "x509",
            "-in",
            cert_path(root).to_str().unwrap(),
            "-noout",
            "-pubkey",
        ],
        &[],
    );
    assert!(
        pubkey.stdout.ends_with(&cert_pub.stdout),
        "{}\n{}",
        pubkey.stdout,
        cert_pub.stdout
    );

    let stamp_text = std::fs::read_to_string(stamp(root)).unwrap();
    assert!(
        stamp_text.starts_with(&format!("node {CN}\n")),
        "{stamp_text}"
    );

    // status: key, fingerprint, certificate, steps (the gaps named), no error.
    let s = status_json(root);
    assert_eq!(s["joined"], true);
    assert_eq!(s["key"]["ref"], format!("handle:{HANDLE}"));
    assert!(pubkey.stdout.contains(&format!(
        "# sha256: {}",
        s["key"]["fingerprint"].as_str().unwrap()
    )));
    assert!(s["certificate"]["subject"].as_str().unwrap().contains(CN));
    assert_eq!(s["certificate"]["valid"], true);
    assert!(s["lastError"].is_null());
    let steps: Vec<(String, String)> = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["step"].as_str().unwrap().into(),
                x["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    let done = |n: &str| (n.to_string(), "done".to_string());
    assert_eq!(
        steps,
        vec![
            done("key"),
            done("enroll"),
            done("roles-anywhere"),
            ("install".into(), "skipped".into()),
            done("init")
        ]
    );
    assert!(
        s["credentialsExpiry"]
            .as_str()
            .is_some_and(|e| e.ends_with('Z')),
        "{s}"
    );

    // Roles Anywhere: one CreateSession, verified by the endpoint (chain to the Vault CA);
    // init's DescribeCluster reused that session through the cache.
    let stats = site.ra.stats();
    assert_eq!(
        (stats["ok"].as_u64(), stats["total"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    // init: DescribeCluster (moto, signature checked) filled the endpoint and the CA.
    let kubeconfig = std::fs::read_to_string(root.join("var/lib/kubelet/kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains("server: https://127.0.0.1:6443"),
        "{kubeconfig}"
    );
    assert_eq!(
        std::fs::read(root.join("etc/kubernetes/pki/ca.crt")).unwrap(),
        std::fs::read(&site.cluster_ca).unwrap()
    );
    let moto_log = site.moto.process.log_text();
    assert!(moto_log.contains("/clusters/hybrid-test"), "{moto_log}");
    // The node's credential_process goes where first boot went.
    let aws_config = std::fs::read_to_string(root.join("etc/aws/hybrid/config")).unwrap();
    assert!(
        aws_config.contains(&format!("--endpoint {}", site.ra.endpoint()))
            && aws_config.contains("--ca-bundle /etc/hybridboot/aws-ca.pem")
            && aws_config.contains(&format!("--tcti {}", site.tpm.tcti())),
        "{aws_config}"
    );
    // systemd was asked to start the node's services, kubelet last.
    let actions = std::fs::read_to_string(&systemctl_log).unwrap();
    assert!(
        actions.starts_with("daemon-reload\n") && actions.ends_with("restart kubelet.service\n"),
        "{actions}"
    );
    let text = run(&["status", "--root", root.to_str().unwrap()], &[]);
    assert!(
        text.stdout.contains("joined                 yes"),
        "{}",
        text.stdout
    );
    println!("{}", text.stdout);

    // Again: nothing to do, nothing changed.
    let before = std::fs::read(cert_path(root)).unwrap();
    let r = firstboot(root, &[]);
    r.ok();
    assert!(r.stderr.contains("already joined"), "{}", r.stderr);
    assert_eq!(std::fs::read(cert_path(root)).unwrap(), before);

    // The renew unit's command line: a young certificate is kept; --renew-before 1 renews.
    let renew = |extra: &[&str]| {
        let mut args = vec![
            "renew",
            "--config-source",
            "file:///etc/hybridboot/config.yaml",
            "--root",
            root.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, &env())
    };
    let r = renew(&[]);
    r.ok();
    assert!(r.stdout.trim().ends_with('Z'), "{}", r.stdout);
    assert_eq!(std::fs::read(cert_path(root)).unwrap(), before);
    let r = renew(&["--renew-before", "1"]);
    r.ok();
    assert_ne!(std::fs::read(cert_path(root)).unwrap(), before);
}

/// What a finished root looks like: every file with its mode, and its content where content is
/// the same whichever key and certificate the run got.
fn shape(root: &Path) -> BTreeMap<String, (u32, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, (u32, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(format!("{rel}/"), (mode, String::new()));
                walk(&p, base, out);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let content = if rel.ends_with("server.pem") {
                format!("{} certificates", text.matches("BEGIN CERTIFICATE").count())
            } else if rel.ends_with("firstboot.json") {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                for field in ["credentials_expiry", "durations_ms"] {
                    v[field] = serde_json::Value::Null;
                }
                v["key"]["fingerprint"] = serde_json::Value::Null;
                v.to_string()
            } else if let Some(name) = rel.strip_prefix("run/hybridboot/rolesanywhere-") {
                // The session cache: named after the certificate, holding a session.
                let kind = name.rsplit('.').next().unwrap_or_default();
                out.insert(
                    format!("run/hybridboot/<session>.{kind}"),
                    (mode, String::new()),
                );
                continue;
            } else if rel.ends_with("joined") {
                text.lines().next().unwrap_or_default().to_string()
            } else {
                text
            };
            out.insert(rel, (mode, content));
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn power_cuts_at_28_points_converge_to_the_uninterrupted_result() {
    let site = Site::start();
    // The uninterrupted run, three times: the shortest duration spreads the timed kills, so
    // that they land mid-run also when this machine is busier during the kills than during
    // the reference runs.
    let mut duration = Duration::MAX;
    let mut want = BTreeMap::new();
    for _ in 0..3 {
        site.reset_tpm();
        let reference_dir = tempfile::tempdir().unwrap();
        let reference = reference_dir.path();
        site.configure(reference, CN, &site.bao.http_addr());
        let t0 = Instant::now();
        firstboot(reference, &[]).ok();
        duration = duration.min(t0.elapsed());
        let shape_now = shape(reference);
        assert!(
            want.is_empty() || want == shape_now,
            "uninterrupted runs differ"
        );
        want = shape_now;
    }
    println!(
        "uninterrupted run: {} ms, {} entries",
        duration.as_millis(),
        want.len()
    );

    // Kill points: right at the start, after each recorded transition, and spread in time.
    enum Point {
        When(&'static str, fn(&Path) -> bool),
        After(Duration),
    }
    let mut points = vec![
        Point::After(Duration::ZERO),
        Point::When("state file written (key step done)", |r| {
            state_file(r).exists()
        }),
        Point::When("certificate written", |r| cert_path(r).exists()),
        Point::When("enroll recorded", |r| recorded(r, "enroll")),
        Point::When("roles-anywhere recorded", |r| recorded(r, "roles-anywhere")),
        Point::When("init's first file written", |r| {
            r.join("etc/aws/hybrid/config").exists()
        }),
        Point::When("kubeconfig written", |r| {
            r.join("var/lib/kubelet/kubeconfig").exists()
        }),
        Point::When("all steps recorded", |r| recorded(r, "init")),
        Point::When("stamp written", |r| stamp(r).exists()),
    ];
    // Spread over the first 80% of the reference run (the last stretch is covered by the
    // transition points), so that nearly all of them land mid-run.
    for k in 1..=22u32 {
        points.push(Point::After(duration * 8 * k / (10 * 23)));
    }
    assert!(points.len() >= 28);

    let mut killed_mid_run = 0;
    for (i, point) in points.iter().enumerate() {
        site.reset_tpm();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        site.configure(root, CN, &site.bao.http_addr());
        let mut child = spawn_firstboot(root);
        let label = match point {
            Point::After(d) => {
                std::thread::sleep(*d);
                format!("after {} ms", d.as_millis())
            }
            Point::When(label, cond) => {
                let until = Instant::now() + Duration::from_secs(30);
                while !cond(root) && Instant::now() < until {
                    if child.try_wait().unwrap().is_some() && !cond(root) {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                label.to_string()
            }
        };
        // SIGKILL: a power cut gives the process no chance to clean up.
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_mid_run += 1;
            site.power_cycle_tpm();
        }
        let cert_after_kill = std::fs::read(cert_path(root)).ok();

        let r = firstboot(root, &[]);
        assert_eq!(r.code, 0, "point {i} ({label}): rerun failed\n{}", r.stderr);
        let got = shape(root);
        assert_eq!(got, want, "point {i} ({label}): final root differs");
        let leftovers: Vec<&String> = got.keys().filter(|k| k.contains(".hbtmp.")).collect();
        assert!(leftovers.is_empty(), "point {i}: {leftovers:?}");
        // A certificate that was already there is kept (it was not due for renewal).
        if let Some(c) = cert_after_kill {
            assert_eq!(
                std::fs::read(cert_path(root)).unwrap(),
                c,
                "point {i} ({label}): certificate re-issued"
            );
        }
        println!(
            "point {i:2} ({label}): killed={} ok",
            status.code().is_none()
        );
    }
    println!(
        "{killed_mid_run} of {} runs were killed before they finished",
        points.len()
    );
    assert!(
        killed_mid_run >= 20,
        "only {killed_mid_run} kills landed mid-run"
    );
}

#[test]
fn firstboot_with_spec_install_installs_verified_binaries_then_joins() {
    use util::mirror::{sha256_hex, store, Mirror};
    let site = Site::start();
    let mirror = Mirror::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    site.configure(root, CN, &site.bao.http_addr());
    // The image has no kubelet: install brings it (iptables comes with the distribution).
    std::fs::remove_file(root.join("usr/bin/kubelet")).unwrap();
    util::mirror::write(&root.join("usr/sbin/iptables"), b"#!/bin/sh\n", 0o755);
    let etc = root.join("etc/hybridboot");
    std::fs::copy(store().join("sign.pub"), etc.join("manifest.pub")).unwrap();
    std::fs::copy(store().join("ca.pem"), etc.join("mirror-ca.pem")).unwrap();
    let config = etc.join("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  timeouts:\n",
        &format!(
            "  install:\n    kubernetesVersion: \"1.31\"\n    manifest: {}\n    manifestPublicKey: /etc/hybridboot/manifest.pub\n    caBundle: /etc/hybridboot/mirror-ca.pem\n  timeouts:\n",
            mirror.manifest_url()
        ),
    );
    std::fs::write(&config, text).unwrap();

    let r = firstboot(root, &[]);
    r.ok();
    assert!(stamp(root).exists());
    // The kubelet the manifest's latest 1.31 patch names, verified, then used by init.
    assert_eq!(
        sha256_hex(&root.join("usr/bin/kubelet")),
        sha256_hex(&store().join("1.31.2/kubelet"))
    );
    let kubelet_config =
        std::fs::read_to_string(root.join("etc/kubernetes/kubelet/config.json")).unwrap();
    assert!(kubelet_config.contains("KubeletConfiguration"));
    assert!(mirror.artifact_gets() > 0);
    let s = status_json(root);
    assert!(
        s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["step"] == "install" && x["state"] == "done"),
        "{s}"
    );
    assert_eq!(s["install"]["present"], true, "{s}");

    // A rerun after a power cut between install and the stamp verifies offline: no download.
    std::fs::remove_file(stamp(root)).unwrap();
    let before = mirror.artifact_gets();
    let r = firstboot(root, &[]);
    r.ok();
    assert!(stamp(root).exists());
    assert_eq!(mirror.artifact_gets(), before, "{}", r.stderr);
}

#[test]
fn a_role_that_refuses_the_node_name_needs_an_operator_and_says_which_field() {
    let site = Site::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A pass-through proxy counts the requests: the refusal is not retried.
    let proxy = FaultProxy::start(site.bao.http_port, Vec::new());
    site.configure(
        root,
        "node-1.elsewhere.org",
        &format!("http://127.0.0.1:{}", proxy.port),
    );
    let r = firstboot(root, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    println!("{}", r.stderr.trim_end());
    // The clock check's health request and one sign request.
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("spec.hybrid.iamRolesAnywhere.nodeName")
            && r.stderr.contains("spec.vault.role"),
        "{}",
        r.stderr
    );
    assert!(!stamp(root).exists());
    assert!(!cert_path(root).exists());
    let s = status_json(root);
    assert_eq!(s["joined"], false);
    assert_eq!(s["lastError"]["exitCode"], 3);
    assert_eq!(s["lastError"]["step"], "enroll");
    // The token never shows up anywhere.
    assert!(!r.stderr.contains(&site.token));
    let state = std::fs::read_to_string(state_file(root)).unwrap();
    assert!(!state.contains(&site.token));
}

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn a_wrong_clock_is_refused_with_the_clock_message() {
    assert!(
        Path::new(FAKETIME).exists(),
        "libfaketime missing: apt-get install faketime"
    );
    let site = Site::start();
    for (fake, want) in [
        // Years in the past: before this build.
        ("-1100d", "before this hybridboot build"),
        // After the build but two days ahead of Vault.
        ("+2d", "(48h ahead)"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        site.configure(root, CN, &site.bao.http_addr());
        let r = firstboot(
            root,
            &[
                ("LD_PRELOAD", FAKETIME),
                ("FAKETIME", fake),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        );
        assert_eq!(r.code, 4, "{fake}: {}", r.stderr);
        assert!(r.stderr.contains("the system clock reads"), "{}", r.stderr);
        assert!(r.stderr.contains(want), "{fake}: {}", r.stderr);
        assert!(!cert_path(root).exists());
        assert!(!stamp(root).exists());
        println!("{fake}: {}", r.stderr.lines().last().unwrap_or_default());
    }
}

/// What the proxy does with one connection.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Accept and close at once.
    Drop,
    /// Answer this status without forwarding.
    Status(u16),
    /// Wait, then forward.
    Delay(Duration),
    /// Forward.
    Pass,
}

/// A TCP proxy in front of `target` applying `script` to successive connections (then Pass).
struct FaultProxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    fn start(target: u16, script: Vec<Fault>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (connections.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut client) = stream else { continue };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let fault = script.get(n).copied().unwrap_or(Fault::Pass);
                l.lock().unwrap().push(format!("{fault:?}"));
                std::thread::spawn(move || match fault {
                    Fault::Drop => drop(client),
                    Fault::Status(code) => {
                        let mut buf = [0u8; 65536];
                        let _ = client.read(&mut buf);
                        let extra = if code == 429 {
                            "Retry-After: 1\r\n"
                        } else {
                            ""
                        };
                        let _ = write!(
                            client,
                            "HTTP/1.1 {code} Fault\r\nContent-Type: application/json\r\nContent-Length: 2\r\n{extra}Connection: close\r\n\r\n{{}}"
                        );
                    }
                    Fault::Delay(d) => {
                        std::thread::sleep(d);
                        forward(client, target);
                    }
                    Fault::Pass => forward(client, target),
                });
            }
        });
        FaultProxy {
            port,
            connections,
            log,
        }
    }
}

fn forward(client: TcpStream, target: u16) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    pipe(client, upstream);
}

/// Copies both ways until each side has closed.
fn pipe(client: TcpStream, upstream: TcpStream) {
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let (mut c, mut u) = (client, upstream);
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

#[test]
fn network_faults_in_front_of_vault_roles_anywhere_and_eks_are_ridden_out_within_the_retry_policy()
{
    let site = Site::start();
    let vault_script = vec![
        // The clock check's health request: two failures, then a slow success.
        Fault::Drop,
        Fault::Status(503),
        Fault::Delay(Duration::from_millis(1500)),
        // The sign request: 500, 429 with Retry-After, a drop, then it passes.
        Fault::Status(500),
        Fault::Status(429),
        Fault::Drop,
    ];
    let vault_faults = vault_script.len();
    let vault = FaultProxy::start(site.bao.http_port, vault_script);
    // DescribeCluster (plain HTTP to moto): a drop, 500, 429, then through.
    let moto_port = site.moto_port();
    let eks_script = vec![Fault::Drop, Fault::Status(500), Fault::Status(429)];
    let eks_faults = eks_script.len();
    let eks = FaultProxy::start(moto_port, eks_script);
    // CreateSession (TLS, so the endpoint injects its faults itself): two 503s and a drop.
    site.ra.control(
        "fault",
        Some(serde_json::json!({"mode": "503", "count": 2})),
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    site.configure_full(
        root,
        CN,
        &format!("http://127.0.0.1:{}", vault.port),
        TOKEN_FILE_AUTH,
        &site.ra.endpoint(),
        &format!("http://127.0.0.1:{}", eks.port),
    );
    let started = Instant::now();
    let r = firstboot(root, &[]);
    let took = started.elapsed();
    r.ok();
    assert!(stamp(root).exists());
    let vault_connections = vault.connections.load(Ordering::SeqCst);
    let eks_connections = eks.connections.load(Ordering::SeqCst);
    let ra = site.ra.stats();
    println!(
        "completed in {} ms; Vault: {vault_connections} connections {:?}; EKS: {eks_connections} connections {:?}; Roles Anywhere: {ra}",
        took.as_millis(),
        vault.log.lock().unwrap(),
        eks.log.lock().unwrap(),
    );
    // Each fault cost exactly one attempt, then the request passed: no extra attempts and
    // none given up early.
    assert_eq!(vault_connections, vault_faults + 1, "{}", r.stderr);
    assert_eq!(eks_connections, eks_faults + 1, "{}", r.stderr);
    assert_eq!(
        (ra["faulted"].as_u64(), ra["ok"].as_u64()),
        (Some(2), Some(1)),
        "{ra}"
    );
}

/// Each peer's outage ends in exit 4 (retry later; the unit's `RestartPreventExitStatus=3` lets
/// systemd try again), recorded as such in the state, and the run after the outage joins:
/// Vault, IAM Roles Anywhere, STS behind Roles Anywhere, and EKS DescribeCluster each answering
/// 503 for as long as `spec.timeouts.overall` lets first boot retry. (Refusals, exit 3, are
/// the tests around this one; Vault sealed or unreachable is in tests/vault.rs.)
#[test]
fn each_peers_outage_ends_in_exit_4_and_the_run_after_it_joins() {
    let site = Site::start();
    let dir = tempfile::tempdir().unwrap();
    let outage = || vec![Fault::Status(503); 100_000];
    let moto_port = site.moto_port();
    let vault_down = FaultProxy::start(site.bao.http_port, outage());
    let eks_down = FaultProxy::start(moto_port, outage());
    // A second Roles Anywhere endpoint whose STS (moto, behind a proxy) is down.
    let sts_down = FaultProxy::start(moto_port, outage());
    let mut sts_setup: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&site.moto.setup_file).unwrap()).unwrap();
    sts_setup["endpoint"] = format!("http://127.0.0.1:{}", sts_down.port).into();
    let sts_file = dir.path().join("sts-down.json");
    std::fs::write(&sts_file, sts_setup.to_string()).unwrap();
    std::fs::set_permissions(&sts_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut opts = RaOptions::new(&[&site.bao.pki_root]).sts(&site.moto);
    opts.sts_credentials_file = Some(sts_file);
    let ra_sts_down = RolesAnywhere::start(&opts);

    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path();
    let configure = |vault: &str, ra: &RolesAnywhere, eks: &str| {
        site.configure_full(
            root,
            CN,
            vault,
            "      tokenFile: /etc/hybridboot/vault-token\n",
            &ra.endpoint(),
            eks,
        );
        std::fs::copy(&ra.tls_ca, root.join("etc/hybridboot/aws-ca.pem")).unwrap();
        let config = root.join("etc/hybridboot/config.yaml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, text.replace("overall: 2m", "overall: 12s")).unwrap();
    };
    let outage_run = |peer: &str, step: &str, says: &str| {
        let r = firstboot(root, &[]);
        println!(
            "{peer}: exit {}: {}",
            r.code,
            r.stderr.lines().last().unwrap_or_default()
        );
        assert_eq!(r.code, 4, "{peer}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{peer}: {}", r.stderr);
        let s = status_json(root);
        assert_eq!(s["lastError"]["exitCode"], 4, "{peer}: {s}");
        assert_eq!(s["lastError"]["step"], step, "{peer}: {s}");
        assert!(!stamp(root).exists());
    };
    let vault = site.bao.http_addr();
    let eks = site.moto.endpoint.clone();

    configure(
        &format!("http://127.0.0.1:{}", vault_down.port),
        &site.ra,
        &eks,
    );
    outage_run("Vault", "clock", "HTTP 503");

    configure(&vault, &site.ra, &eks);
    site.ra.control(
        "fault",
        Some(serde_json::json!({"mode": "503", "forever": true})),
    );
    outage_run(
        "Roles Anywhere",
        "roles-anywhere",
        "IAM Roles Anywhere is throttling or failing (HTTP 503)",
    );
    site.ra.control("recover", Some(serde_json::json!({})));
    assert!(cert_path(root).exists(), "enrolled before Roles Anywhere");

    configure(&vault, &ra_sts_down, &eks);
    outage_run(
        "STS",
        "roles-anywhere",
        "IAM Roles Anywhere is throttling or failing (HTTP 500)",
    );
    assert!(
        sts_down.connections.load(Ordering::SeqCst) > 0,
        "STS was asked"
    );

    configure(
        &vault,
        &site.ra,
        &format!("http://127.0.0.1:{}", eks_down.port),
    );
    outage_run("EKS", "init", "EKS is throttling or failing (HTTP 503)");
    assert!(eks_down.connections.load(Ordering::SeqCst) > 1, "retried");

    configure(&vault, &site.ra, &eks);
    firstboot(root, &[]).ok();
    assert!(stamp(root).exists());
    assert!(status_json(root)["lastError"].is_null());
}

#[test]
fn roles_anywhere_access_denied_needs_an_operator_and_names_the_fields() {
    let site = Site::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    site.configure(root, CN, &site.bao.http_addr());
    // A role the profile does not allow: the service answers 403 AccessDeniedException.
    let config = root.join("etc/hybridboot/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &site.ra.role_arn,
        "arn:aws:iam::123456789012:role/not-in-profile",
    );
    std::fs::write(&config, text).unwrap();
    let r = firstboot(root, &[]);
    println!("{}", r.stderr.trim_end());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("spec.hybrid.iamRolesAnywhere.trustAnchorArn")
            && r.stderr.contains("roleArn")
            && r.stderr.contains("not part of profile"),
        "{}",
        r.stderr
    );
    // One refused attempt, no retry; enrolled, but no stamp.
    let stats = site.ra.stats();
    assert_eq!(stats["total"].as_u64(), Some(1), "{stats}");
    assert!(cert_path(root).exists() && !stamp(root).exists());
    let s = status_json(root);
    assert_eq!(s["lastError"]["step"], "roles-anywhere");
    assert_eq!(s["lastError"]["exitCode"], 3);
}

#[test]
fn a_run_killed_after_an_approle_enrollment_does_not_need_the_spent_secret_id_again() {
    let site = Site::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    site.configure_auth(root, CN, &site.bao.http_addr(), WRAPPED_APPROLE_AUTH);
    let etc = root.join("etc/hybridboot");
    let wrapping = wrapped_approle_files(&site, root);
    // Killed as soon as the certificate exists: the wrapping token and the secret id are spent.
    let mut child = spawn_firstboot(root);
    let until = Instant::now() + Duration::from_secs(30);
    while !cert_path(root).exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_micros(300));
    }
    // SIGKILL: the process gets no chance to clean up.
    let _ = child.kill();
    child.wait().unwrap();
    let cert = std::fs::read(cert_path(root)).unwrap();
    let r = firstboot(root, &[]);
    r.ok();
    assert!(r.stderr.contains("nothing to do"), "{}", r.stderr);
    assert_eq!(std::fs::read(cert_path(root)).unwrap(), cert);
    assert!(stamp(root).exists());
    // The spent secret id file and the kept login are gone either way; the wrapping token
    // never reached a log.
    assert!(!kept_login(root).exists());
    assert!(!etc.join("secret-id").exists());
    assert!(!r.stderr.contains(&wrapping));
}

#[test]
fn configuration_errors_stop_before_any_work_and_name_the_line_or_field() {
    // No peers needed: nothing may be contacted or written.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let etc = root.join("etc/hybridboot");
    std::fs::create_dir_all(&etc).unwrap();
    let key = "handle:0x81000001";
    let base = firstboot_yaml(
        &NodeConfig::example("node-1.example.com", key),
        &BootstrapConfig::new(key, "swtpm:host=127.0.0.1,port=1", "http://127.0.0.1:1"),
    );
    let cases = [
        (
            base.replace("    role: node\n", "    role: node\n    rolee: x\n"),
            "config.yaml:24:5: spec.vault: unknown field `rolee`",
        ),
        (
            format!(
                "{base}  install:\n    kubernetesVersion: \"1.31\"\n    containerdSource: eks\n"
            ),
            "spec.install.containerdSource: \"eks\": use distro",
        ),
        (
            format!("{base}  aws:\n    eksEndpoint: eks.example.com\n"),
            "spec.aws.eksEndpoint",
        ),
        (
            base.replace(TOKEN_FILE_AUTH, ""),
            "spec.vault.auth: missing",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(etc.join("config.yaml"), &text).unwrap();
        let started = Instant::now();
        let r = firstboot(root, &[]);
        assert_eq!(r.code, 3, "{want}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!stamp(root).exists() && !cert_path(root).exists());
    }
}

#[test]
fn a_role_that_wants_rsa_keys_says_so_and_both_fixes_not_the_node_name() {
    // Vault's roles default to key_type=rsa (the blog's role); hybridboot's key is ECDSA P-256.
    let site = Site::start();
    site.bao.ok(&[
        "write",
        "pki_int/roles/node",
        "allowed_domains=example.com",
        "allow_subdomains=true",
        "max_ttl=72h",
        "ttl=24h",
        "key_type=rsa",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    site.configure(root, CN, &site.bao.http_addr());
    let r = firstboot(root, &[]);
    println!("{}", r.stderr.trim_end());
    assert_eq!(r.code, 3, "{}", r.stderr);
    for want in [
        "requires rsa keys",
        "spec.key.algorithm: rsa-2048",
        "a new `spec.key.ref`",
        "vault write pki_int/roles/node key_type=any",
        "spec.hybrid.iamRolesAnywhere.nodeName is not the problem",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
    assert!(
        !r.stderr
            .contains("fix spec.hybrid.iamRolesAnywhere.nodeName"),
        "{}",
        r.stderr
    );
    assert!(!cert_path(root).exists());
}

/// What [`GateProxy`] does with a request whose path contains its pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Forward it.
    Open,
    /// Never forward it nor answer (the test kills the client meanwhile: a power cut before
    /// the request reached Vault); reports the request line.
    Hold,
    /// Answer with this status, without forwarding.
    Fail(u16),
}

/// A plain-HTTP proxy in front of Vault that gates the requests whose path contains `pattern`
/// (hybridboot sends one request per connection); everything else passes.
struct GateProxy {
    port: u16,
    gate: Arc<Mutex<Gate>>,
    held: std::sync::mpsc::Receiver<String>,
}

impl GateProxy {
    fn start(target: u16, pattern: &'static str, gate: Gate) -> GateProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Arc::new(Mutex::new(gate));
        let (tx, held) = std::sync::mpsc::channel();
        let g = gate.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(client) = stream else { continue };
                let (g, tx) = (g.clone(), tx.clone());
                std::thread::spawn(move || Self::serve(client, target, pattern, &g, &tx));
            }
        });
        GateProxy { port, gate, held }
    }

    fn serve(
        mut client: TcpStream,
        target: u16,
        pattern: &str,
        gate: &Mutex<Gate>,
        held: &std::sync::mpsc::Sender<String>,
    ) {
        // The request line first (it names the path), then decide.
        let mut head = Vec::new();
        let mut buf = [0u8; 65536];
        while !head.windows(2).any(|w| w == b"\r\n") {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let action = {
            let g = gate.lock().unwrap();
            match *g {
                _ if !line.contains(pattern) => Gate::Open,
                other => other,
            }
        };
        match action {
            Gate::Open => {
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                if upstream.write_all(&head).is_err() {
                    return;
                }
                pipe(client, upstream);
            }
            Gate::Hold => {
                let _ = held.send(line);
                // Keep the connection open and silent until the client is gone.
                while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
            }
            Gate::Fail(code) => {
                let _ = write!(
                    client,
                    "HTTP/1.1 {code} Gateway\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
            }
        }
    }
}

/// Writes the AppRole role id and a fresh wrapped secret id under `root`; the wrapping token.
fn wrapped_approle_files(site: &Site, root: &Path) -> String {
    let etc = root.join("etc/hybridboot");
    std::fs::write(etc.join("role-id"), &site.bao.role_id).unwrap();
    let wrapping = site.bao.wrapped_secret_id();
    std::fs::write(etc.join("secret-id"), &wrapping).unwrap();
    for f in ["role-id", "secret-id"] {
        std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    wrapping
}

fn kept_login(root: &Path) -> PathBuf {
    root.join("var/lib/hybridboot/approle-login.json")
}

/// After a converged run with a wrapped AppRole secret id: joined, the one-time secrets gone
/// (secret id file and kept login), the wrapping token in no output.
fn assert_joined_and_secrets_gone(root: &Path, r: &Run, wrapping: &str, label: &str) {
    assert_eq!(
        r.code, 0,
        "{label}: the next run did not converge\n{}",
        r.stderr
    );
    assert!(stamp(root).exists(), "{label}");
    assert!(!root.join("etc/hybridboot/secret-id").exists(), "{label}");
    assert!(!kept_login(root).exists(), "{label}: the kept login stays");
    assert!(!r.stderr.contains(wrapping), "{label}");
}

/// Power cuts between the unwrap, the login and the sign of a wrapped AppRole secret id: the
/// request after each step is held at a proxy (it never reaches Vault) and the run is killed
/// (SIGKILL) there. The wrapping token is spent after the unwrap and the secret id after the
/// login; the next run used to exit 3 ("wrapping token already used", which the unit never
/// retries). It resumes from what the earlier run kept and joins.
#[test]
fn power_cuts_between_unwrap_login_and_sign_of_a_wrapped_secret_id_converge() {
    let site = Site::start();
    for (label, pattern) in [
        ("before the unwrap", "/v1/sys/wrapping/unwrap"),
        (
            "after the unwrap, before the login",
            "/v1/auth/approle/login",
        ),
        ("after the login, before the sign", "/v1/pki_int/sign/"),
    ] {
        site.reset_tpm();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let proxy = GateProxy::start(site.bao.http_port, pattern, Gate::Hold);
        let addr = format!("http://127.0.0.1:{}", proxy.port);
        site.configure_auth(root, CN, &addr, WRAPPED_APPROLE_AUTH);
        let wrapping = wrapped_approle_files(&site, root);
        let mut child = spawn_firstboot(root);
        let line = proxy.held.recv_timeout(Duration::from_secs(120));
        // SIGKILL: a power cut gives the process no chance to clean up.
        let _ = child.kill();
        child.wait().unwrap();
        site.power_cycle_tpm();
        let line = line.unwrap_or_else(|_| panic!("{label}: the run never reached {pattern}"));
        println!("{label}: killed while Vault had not seen {line:?}");
        if label.contains("after the login") {
            let mode = std::fs::metadata(kept_login(root)).unwrap().permissions();
            assert_eq!(mode.mode() & 0o777, 0o600, "{label}");
        }
        *proxy.gate.lock().unwrap() = Gate::Open;
        let r = firstboot(root, &[]);
        assert_joined_and_secrets_gone(root, &r, &wrapping, label);
    }
}

/// A first boot with a wrapped AppRole secret id under `root` whose every sign answers 503
/// until the gate is opened, with the shortest deadline first boot accepts (the outage
/// outlasts it): the proxy, the wrapping token, the run (exit 4) and the login it kept.
fn run_through_a_sign_outage(
    site: &Site,
    root: &Path,
) -> (GateProxy, String, Run, serde_json::Value) {
    let proxy = GateProxy::start(site.bao.http_port, "/v1/pki_int/sign/", Gate::Fail(503));
    let addr = format!("http://127.0.0.1:{}", proxy.port);
    site.configure_auth(root, CN, &addr, WRAPPED_APPROLE_AUTH);
    let wrapping = wrapped_approle_files(site, root);
    let config = root.join("etc/hybridboot/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("overall: 2m"));
    std::fs::write(&config, text.replace("overall: 2m", "overall: 15s")).unwrap();
    let first = firstboot(root, &[]);
    assert_eq!(first.code, 4, "{}", first.stderr);
    assert!(first.stderr.contains("503"), "{}", first.stderr);
    assert!(!cert_path(root).exists());
    let kept = serde_json::from_slice(&std::fs::read(kept_login(root)).unwrap()).unwrap();
    (proxy, wrapping, first, kept)
}

/// A sign that keeps failing transiently after the unwrap and the login (503 for as long as
/// the run's deadline lets it retry): exit 4, recorded; the next run used to exit 3 with the
/// spent wrapping token. It resumes with the kept login and joins.
#[test]
fn a_sign_failing_after_the_unwrap_exits_4_and_the_next_run_joins() {
    let site = Site::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (proxy, wrapping, first, kept) = run_through_a_sign_outage(&site, root);
    assert!(!first.stderr.contains(&wrapping));
    for field in ["secret_id", "token"] {
        let value = kept[field].as_str().unwrap();
        assert!(
            !first.stderr.contains(value),
            "the kept {field} is never logged"
        );
    }
    let s = status_json(root);
    assert_eq!(s["lastError"]["exitCode"], 4, "{s}");
    *proxy.gate.lock().unwrap() = Gate::Open;
    let second = firstboot(root, &[]);
    assert_joined_and_secrets_gone(root, &second, &wrapping, "after a failed sign");
}

/// The token kept from an earlier run no longer works (expired or revoked while the node was
/// off): the next run logs in again with the kept secret id (here one with a use left) and
/// joins.
#[test]
fn a_kept_token_that_vault_refuses_is_replaced_by_a_login_with_the_kept_secret_id() {
    let site = Site::start();
    // Secret ids with two uses: the first login, and the one after the token is revoked.
    site.bao.ok(&[
        "write",
        "auth/approle/role/node",
        "token_policies=node",
        "secret_id_num_uses=2",
        "secret_id_ttl=10m",
        "token_ttl=10m",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (proxy, wrapping, _, kept) = run_through_a_sign_outage(&site, root);
    site.bao
        .ok(&["token", "revoke", kept["token"].as_str().unwrap()]);
    *proxy.gate.lock().unwrap() = Gate::Open;
    let second = firstboot(root, &[]);
    assert!(
        second.stderr.contains("kept Vault token was refused"),
        "{}",
        second.stderr
    );
    assert_joined_and_secrets_gone(root, &second, &wrapping, "after a revoked kept token");
}
