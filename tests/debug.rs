//! `hybridboot debug` on a node first boot joined, against the real peers (swtpm, OpenBao,
//! the Roles Anywhere endpoint minting through moto's STS, moto's EKS, the test API server):
//! every check passes on the healthy node; then each failure in turn (clock years off, Vault
//! sealed, role refused, certificate expired, API server down, TPM gone) fails exactly its
//! check, with its remediation, and the exit code says who acts (3 operator, 4 peer). Nothing
//! under the root changes.
use crate::util;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use util::config::{firstboot_yaml, BootstrapConfig, NodeConfig, TOKEN_FILE_AUTH};
use util::openbao::OpenBao;
use util::peers::{ApiServer, MiniCa, Moto, RaOptions, RolesAnywhere};
use util::swtpm::Swtpm;
use util::{run, Run};

const CN: &str = "node-1.example.com";
const HANDLE: &str = "0x81000001";
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

struct Site {
    bao: OpenBao,
    tpm: Option<Swtpm>,
    moto: Moto,
    ra: RolesAnywhere,
    api: Option<ApiServer>,
    dir: tempfile::TempDir,
}

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cluster_ca = MiniCa::root(dir.path(), "cluster-ca");
        let issued = dir.path().join("issued.json");
        let api = ApiServer::start(&cluster_ca, &issued);
        let ca_file = cluster_ca.cert.display().to_string();
        let moto = Moto::start_configured(
            &["--eks-ca-file", &ca_file, "--eks-endpoint", &api.endpoint()],
            &["--remote-node-cidr", "127.0.0.0/8"],
        );
        let bao = OpenBao::start();
        let mut opts = RaOptions::new(&[&bao.pki_root]).sts(&moto);
        opts.extra = vec![
            "--issued-credentials-file".into(),
            issued.display().to_string(),
        ];
        let ra = RolesAnywhere::start(&opts);
        Site {
            bao,
            tpm: Some(Swtpm::start()),
            moto,
            ra,
            api: Some(api),
            dir,
        }
    }

    fn tcti(&self) -> String {
        self.tpm.as_ref().unwrap().tcti()
    }

    /// The configuration, the Vault token and the image's kubelet stand-in, under `root`.
    fn configure(&self, root: &Path) {
        let etc = root.join("etc/hybridboot");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("vault-token"), self.bao.node_token()).unwrap();
        std::fs::set_permissions(
            etc.join("vault-token"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        util::config::seed_image(root, &self.ra.tls_ca);
        let key = format!("handle:{HANDLE}");
        let node = NodeConfig {
            cluster: self.moto.cluster_name(),
            ..NodeConfig::moto_site(CN, &key).with_endpoint(&self.ra)
        };
        let boot = BootstrapConfig {
            auth: TOKEN_FILE_AUTH.into(),
            ..BootstrapConfig::site(
                &key,
                &self.tcti(),
                &self.bao.http_addr(),
                &self.ra.endpoint(),
                &self.moto.endpoint,
            )
        };
        std::fs::write(etc.join("config.yaml"), firstboot_yaml(&node, &boot)).unwrap();
        // The node's kernel: no swap.
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(
            root.join("proc/swaps"),
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        )
        .unwrap();
    }

    /// Stand-ins for the node's service manager (both units active) and containerd's client
    /// (lists the sandbox image init configured), in a directory put first on PATH.
    fn stubs(&self, root: &Path) -> PathBuf {
        let dir = self.dir.path().join("stubs");
        std::fs::create_dir_all(&dir).unwrap();
        let config = std::fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap();
        let image = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("sandbox_image = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        for (name, body) in [
            (
                "systemctl",
                "#!/bin/sh\n[ \"$1\" = is-active ] && echo active\n".to_string(),
            ),
            (
                "ctr",
                format!("#!/bin/sh\necho other/image:1\necho {image}\n"),
            ),
        ] {
            std::fs::write(dir.join(name), body).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        dir
    }
}

fn env(site: &Site, stubs: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("NO_PROXY", "127.0.0.1".into()),
        ("no_proxy", "127.0.0.1".into()),
        ("HTTPS_PROXY", String::new()),
        ("https_proxy", String::new()),
        ("HTTP_PROXY", String::new()),
        ("http_proxy", String::new()),
        (
            "HYBRIDBOOT_SYSTEMCTL",
            stubs.join("systemctl").display().to_string(),
        ),
        ("AWS_ENDPOINT_URL_STS", site.moto.endpoint.clone()),
        (
            "PATH",
            format!(
                "{}:{}",
                stubs.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
    ]
}

fn debug(root: &Path, env: &[(&str, String)], json: bool) -> Run {
    let mut args = vec![
        "debug",
        "--config-source",
        "file:///etc/hybridboot/config.yaml",
        "--root",
        root.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(&args, &env)
}

/// Name -> (outcome, detail, fix) of the JSON report.
fn checks(r: &Run) -> BTreeMap<String, (String, String, String)> {
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("name"), (s("outcome"), s("detail"), s("fix")))
        })
        .collect()
}

/// Every file under `dir`: mode, size, mtime and content (what "changes nothing" means).
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u32, i64, i64, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u32, i64, i64, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let content = if m.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            out.insert(e.path(), (m.mode(), m.mtime(), m.mtime_nsec(), content));
            if m.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Asserts that exactly `failed` failed, with `fix` in its remediation, and the exit code.
fn assert_fails(r: &Run, failed: &str, detail: &str, fix: &str, code: i32) {
    let c = checks(r);
    println!("--- {failed}:\n{}", r.stderr.trim_end());
    let fails: Vec<&String> = c
        .iter()
        .filter(|(_, v)| v.0 == "fail")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(fails, vec![failed], "{c:#?}");
    let (_, d, f) = &c[failed];
    assert!(d.contains(detail), "{failed} detail: {d}");
    assert!(f.contains(fix), "{failed} fix: {f}");
    assert_eq!(r.code, code, "{}", r.stderr);
}

#[test]
fn debug_passes_on_a_joined_node_and_names_the_fix_of_each_failure_in_turn() {
    let mut site = Site::start();
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path();
    site.configure(root);
    let systemctl_log = site.dir.path().join("systemctl.log");
    // First boot joins the node (systemctl a recorder here; children get no test variable
    // from the environment, so the log's path is in the script).
    let recorder = site.dir.path().join("recorder");
    std::fs::write(
        &recorder,
        format!("#!/bin/sh\necho \"$*\" >>'{}'\n", systemctl_log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = util::firstboot_args(root);
    run(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            ("NO_PROXY", "127.0.0.1"),
            ("HYBRIDBOOT_SYSTEMCTL", recorder.to_str().unwrap()),
        ],
    )
    .ok();
    let stubs = site.stubs(root);
    let e = env(&site, &stubs);

    // Healthy: every check passes, in the order a join needs them; nothing under the root
    // changes.
    let before = tree(root);
    let r = debug(root, &e, false);
    println!("{}", r.stdout);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let names: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| {
            assert!(l.starts_with("PASS "), "{l}");
            l.split_whitespace().nth(1).unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "config",
            "clock",
            "vault",
            "clock-vault",
            "clock-aws",
            "key",
            "certificate",
            "vault-auth",
            "roles-anywhere",
            "sts",
            "eks",
            "apiserver",
            "node-ip",
            "proxy",
            "swap",
            "containerd",
            "kubelet",
            "sandbox-image"
        ]
    );
    assert!(r.stdout.contains("ecdsa-p256"), "{}", r.stdout);
    assert!(
        r.stdout.contains("may sign at pki_int/sign/node"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("assumed-role/hybrid-node"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("accepts the node's token"),
        "{}",
        r.stdout
    );
    let c = checks(&debug(root, &e, true));
    assert!(c.values().all(|v| v.0 == "pass"), "{c:#?}");
    assert_eq!(tree(root), before, "debug changed something under --root");

    // AWS's clock 20 s behind ours: works (signatures allow 5 minutes), but a warning with
    // the fix, and exit 0. Past the 60 s threshold: a failure.
    site.ra
        .control("clock", Some(serde_json::json!({"offset_seconds": -20})));
    let r = debug(root, &e, true);
    let c = checks(&r);
    assert_eq!(c["clock-aws"].0, "warn", "{c:#?}");
    assert!(c["clock-aws"].1.contains("ahead of AWS at"), "{c:#?}");
    assert!(c["clock-aws"].1.contains("within the 60s"), "{c:#?}");
    assert!(
        c["clock-aws"].2.contains("timedatectl set-ntp true"),
        "{c:#?}"
    );
    assert_eq!(c["clock-vault"].0, "pass", "{c:#?}");
    assert!(c.values().all(|v| v.0 != "fail"), "{c:#?}");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = debug(root, &e, false);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("WARN clock-aws") && l.contains("-> fix: synchronise the clock")),
        "{}",
        text.stdout
    );
    site.ra
        .control("clock", Some(serde_json::json!({"offset_seconds": 120})));
    let r = debug(root, &e, true);
    site.ra
        .control("clock", Some(serde_json::json!({"offset_seconds": 0})));
    assert_fails(&r, "clock-aws", "behind", "timedatectl set-ntp true", 3);

    // A proxy in the environment, but no drop-ins: containerd and the kubelet would not use it.
    let proxied = |extra: &[(&'static str, &str)]| {
        let mut v = e.clone();
        v.retain(|(k, _)| !extra.iter().any(|(x, _)| x == k));
        v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
        v
    };
    let pe = proxied(&[
        ("HTTPS_PROXY", "http://proxy.example.com:3128"),
        ("NO_PROXY", "127.0.0.1,.corp.example"),
        ("no_proxy", "127.0.0.1,.corp.example"),
    ]);
    let r = debug(root, &pe, true);
    assert_fails(
        &r,
        "proxy",
        "containerd.service.d/http-proxy.conf is missing",
        "run `hybridboot init --config-source file:///etc/hybridboot/config.yaml` again",
        3,
    );
    let f = &checks(&r)["proxy"].2;
    assert!(
        f.contains("HTTPS_PROXY=http://proxy.example.com:3128"),
        "{f}"
    );
    assert!(f.contains("daemon-reload"), "{f}");
    // The drop-ins as init writes them: passes. One that names another proxy, or lacks a
    // NO_PROXY entry: fails naming the file and the difference.
    let drop_in = |unit: &str, text: &str| {
        let d = root.join(format!("etc/systemd/system/{unit}.service.d"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("http-proxy.conf"), text).unwrap();
    };
    let good_drop_in = "[Service]\nEnvironment=\"HTTPS_PROXY=http://proxy.example.com:3128\"\nEnvironment=\"NO_PROXY=127.0.0.1,.corp.example,localhost,172.20.0.0/16\"\n";
    drop_in("containerd", good_drop_in);
    drop_in("kubelet", good_drop_in);
    let r = debug(root, &pe, true);
    let c = checks(&r);
    assert_eq!(c["proxy"].0, "pass", "{c:#?}");
    assert_eq!(r.code, 0, "{}", r.stderr);
    drop_in(
        "kubelet",
        "[Service]\nEnvironment=\"HTTPS_PROXY=http://old-proxy:8080\" \"NO_PROXY=127.0.0.1\"\n",
    );
    let r = debug(root, &pe, true);
    assert_fails(
        &r,
        "proxy",
        "kubelet.service.d/http-proxy.conf: HTTPS_PROXY is http://old-proxy:8080 instead of http://proxy.example.com:3128",
        "restart containerd and kubelet",
        3,
    );
    assert!(
        checks(&r)["proxy"]
            .1
            .contains("NO_PROXY lacks .corp.example"),
        "{:#?}",
        checks(&r)
    );
    // BootstrapConfig spec.proxy is the configuration (it wins over the environment); a
    // password in it is never shown.
    let config = root.join("etc/hybridboot/config.yaml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replacen(
            "kind: BootstrapConfig\nspec:\n",
            "kind: BootstrapConfig\nspec:\n  proxy:\n    httpsProxy: http://site:pw-9931@proxy.example.com:3128\n    noProxy: [127.0.0.1]\n",
            1,
        ),
    )
    .unwrap();
    let r = debug(root, &pe, true);
    std::fs::write(&config, &good).unwrap();
    assert_fails(
        &r,
        "proxy",
        "BootstrapConfig spec.proxy",
        "from BootstrapConfig spec.proxy",
        3,
    );
    assert!(
        !r.stdout.contains("pw-9931") && !r.stderr.contains("pw-9931"),
        "{}",
        r.stdout
    );
    // No proxy configured, but drop-ins that set one: a warning.
    let r = debug(root, &e, true);
    let c = checks(&r);
    assert_eq!(c["proxy"].0, "warn", "{c:#?}");
    assert!(c["proxy"].1.contains("no proxy configured"), "{c:#?}");
    assert!(c["proxy"].2.contains("remove those drop-ins"), "{c:#?}");
    assert_eq!(r.code, 0, "{}", r.stderr);
    for unit in ["containerd", "kubelet"] {
        std::fs::remove_dir_all(root.join(format!("etc/systemd/system/{unit}.service.d"))).unwrap();
    }

    // The clock years off.
    let mut off = e.clone();
    off.extend([
        ("LD_PRELOAD", FAKETIME.to_string()),
        ("FAKETIME", "-1100d".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]);
    let r = debug(root, &off, true);
    let c = checks(&r);
    assert_eq!(c["clock"].0, "fail", "{c:#?}");
    assert!(
        c["clock"].1.contains("before this hybridboot build"),
        "{c:#?}"
    );
    assert!(c["clock"].2.contains("timedatectl set-ntp true"), "{c:#?}");
    assert_eq!(r.code, 3, "{}", r.stderr);

    // Vault sealed: a peer's state, not the node's (exit 4); the rest still passes.
    site.bao.seal();
    let r = debug(root, &e, true);
    site.bao.unseal();
    let c = checks(&r);
    assert_eq!(c["vault-auth"].0, "skip", "{c:#?}");
    let c: Vec<_> = c.iter().filter(|(_, v)| v.0 == "fail").collect();
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_fails(&r, "vault", "is sealed", "operator unseal", 4);

    // The role refused by Roles Anywhere: the fix names the three fields.
    let config = root.join("etc/hybridboot/config.yaml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace(
            &site.ra.role_arn,
            "arn:aws:iam::123456789012:role/not-in-profile",
        ),
    )
    .unwrap();
    let r = debug(root, &e, true);
    std::fs::write(&config, &good).unwrap();
    assert_fails(
        &r,
        "roles-anywhere",
        "not part of profile",
        "roleArn (arn:aws:iam::123456789012:role/not-in-profile)",
        3,
    );
    let f = &checks(&r)["roles-anywhere"].2;
    assert!(
        f.contains("trustAnchorArn") && f.contains("profileArn"),
        "{f}"
    );

    // The certificate expired: a 2-second certificate from the same Vault and key.
    let cert = root.join("etc/iam/pki/server.pem");
    let good_cert = std::fs::read(&cert).unwrap();
    let token_file = root.join("etc/hybridboot/vault-token");
    let tcti = site.tcti();
    run(
        &[
            "enroll",
            "--vault-addr",
            &site.bao.http_addr(),
            "--pki-mount",
            "pki_int",
            "--pki-role",
            "node",
            "--key",
            &format!("handle:{HANDLE}"),
            "--tcti",
            &tcti,
            "--common-name",
            CN,
            "--certificate",
            cert.to_str().unwrap(),
            "--vault-token-file",
            token_file.to_str().unwrap(),
            "--ttl",
            "2s",
        ],
        &[("NO_PROXY", "127.0.0.1")],
    )
    .ok();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = debug(root, &e, true);
    std::fs::write(&cert, &good_cert).unwrap();
    let c = checks(&r);
    assert_eq!(c["roles-anywhere"].0, "skip", "{c:#?}");
    assert_fails(
        &r,
        "certificate",
        "expired at",
        "hybridboot renew --config-source",
        3,
    );

    // The API server down: unreachable is a peer's outage (exit 4).
    let api_port = site.api.as_ref().unwrap().port;
    drop(site.api.take());
    let r = debug(root, &e, true);
    assert_fails(
        &r,
        "apiserver",
        &format!("127.0.0.1:{api_port}"),
        "is unreachable from this node",
        4,
    );

    // The TPM gone (swtpm stopped): the key check says so; what needs the key is skipped.
    drop(site.tpm.take());
    let r = debug(root, &e, true);
    let c = checks(&r);
    assert_eq!(c["roles-anywhere"].0, "skip", "{c:#?}");
    assert_fails(
        &r,
        "key",
        "cannot reach the TPM",
        "the TPM is unreachable",
        4,
    );

    // Still nothing written by any of these runs (the restored files aside).
    assert!(!root.join("run/hybridboot/debug").exists());
}

#[test]
fn sandbox_image_check_says_when_ctr_is_missing_or_containerd_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A configuration is not even needed for the node-local checks.
    let args = [
        "debug",
        "--config-source",
        "file:///etc/hybridboot/config.yaml",
        "--root",
        root.to_str().unwrap(),
        "--json",
    ];
    std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
    std::fs::write(
        root.join("etc/containerd/config.toml"),
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n    sandbox_image = \"localhost/pause:3.10\"\n",
    )
    .unwrap();
    // The real ctr, with nothing listening on the (rooted) socket.
    let r = run(&args, &[]);
    let c = checks(&r);
    assert_eq!(c["config"].0, "fail", "{c:#?}");
    assert!(c["config"].2.contains("hybridboot config check"), "{c:#?}");
    assert_eq!(c["sandbox-image"].0, "fail", "{c:#?}");
    assert!(
        c["sandbox-image"]
            .1
            .contains("containerd is not running at")
            && c["sandbox-image"].1.contains(root.to_str().unwrap()),
        "{c:#?}"
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    // No ctr at all.
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let r = run(&args, &[("PATH", empty.to_str().unwrap())]);
    let c = checks(&r);
    assert!(
        c["sandbox-image"].1.contains("cannot run ctr")
            && c["sandbox-image"].2.contains("not installed"),
        "{c:#?}"
    );
}
