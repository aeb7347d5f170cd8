//! The sandbox-image step (`hybridboot sandbox-image`, init's last step) against real peers on
//! loopback: containerd (Debian's, with its own root, state and socket under a temp dir), the
//! CNCF distribution registry (Debian's `docker-registry`, htpasswd basic auth for user `AWS`
//! with the password moto's GetAuthorizationToken issues), moto's ECR with signature and IAM
//! policy checking, and tinyproxy as the site's proxy. The test builds a two-platform pause-like
//! image itself (tests/peers/oci_image.py) and pushes it with skopeo.
//!
//! What is proven: the pinned image is pulled for this node's platform and imported under its
//! pinned name; a second run sends no request at all; a refused token, a role without ECR
//! permission, a tampered blob and a registry that is down each end with their exit code, and
//! nothing is imported; the token never reaches a log line (-vvv), `ctr`'s or `containerd`'s
//! argv or environment, or a file; every request goes through the proxy (CONNECT for https,
//! absolute-form for http), and `NO_PROXY` with a CIDR block bypasses it.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::peers::{self, MiniCa, Moto};
use crate::util::{free_port, run, tool, Background, Run};

/// The image init pins for us-west-2 (nodeadm's registry table).
const IMAGE: &str = "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5";

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A docker-registry with htpasswd auth for `AWS:<password>`.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    _process: Background,
    tls: bool,
}

impl Registry {
    fn start(password: &str, tls: Option<&MiniCa>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        tool(
            "htpasswd",
            &["-Bbc", htpasswd.to_str().unwrap(), "AWS", password],
            &[],
        )
        .ok();
        let port = free_port();
        let tls_section = match tls {
            Some(ca) => {
                let (cert, key) = ca.tls(dir.path());
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                )
            }
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_section}auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                dir.path().join("data").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry; scripts/setup.sh)");
        let process = Background(child);
        wait_for("docker-registry", || port_open(port));
        Registry {
            dir,
            port,
            _process: process,
            tls: tls.is_some(),
        }
    }

    fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Pushes the test image as `eks/pause:3.5` with skopeo; returns oci_image.py's JSON.
    fn push(&self, password: &str, ca: Option<&MiniCa>) -> serde_json::Value {
        let layout = self.dir.path().join("layout");
        let out = tool(
            "python3",
            &[
                peers::peers_dir().join("oci_image.py").to_str().unwrap(),
                "--out",
                layout.to_str().unwrap(),
            ],
            &[],
        );
        out.ok();
        let info: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        let creds = format!("AWS:{password}");
        let src = format!("oci:{}:3.5", layout.display());
        let dst = format!("docker://127.0.0.1:{}/eks/pause:3.5", self.port);
        let mut args = vec!["copy", "--all", "--dest-creds", &creds];
        let certs_dir = self.dir.path().join("skopeo-certs");
        let certs = certs_dir.display().to_string();
        match ca {
            Some(ca) => {
                std::fs::create_dir_all(&certs_dir).unwrap();
                std::fs::copy(&ca.cert, certs_dir.join("ca.crt")).unwrap();
                args.extend(["--dest-cert-dir", &certs]);
            }
            None => args.push("--dest-tls-verify=false"),
        }
        args.extend([src.as_str(), dst.as_str()]);
        tool("skopeo", &args, &[]).ok();
        info
    }

    /// Requests the registry has answered so far (its access log).
    fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("response completed"))
            .count()
    }

    /// Overwrites a stored blob with other bytes of the same length.
    fn corrupt_blob(&self, digest: &str) {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let path = self
            .dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&path, data).unwrap();
    }
}

/// containerd with its own root, state and socket, and `ctr`/`containerd` wrappers on PATH that
/// record their argv and environment before running the real programs.
struct Containerd {
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
    bin: PathBuf,
    _process: Background,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{IMAGE}\"\n",
                dir.path().join("root").display(),
                dir.path().join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package containerd)");
        let process = Background(child);
        wait_for("containerd", || socket.exists());
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, real) in [
            ("ctr", "/usr/bin/ctr"),
            ("containerd", "/usr/bin/containerd"),
        ] {
            let record = dir.path().join(format!("{name}.calls"));
            let script = format!(
                "#!/bin/sh\n{{ printf 'ARGV:'; printf ' %s' \"$@\"; echo; env; }} >> '{}'\nexec {real} \"$@\"\n",
                record.display()
            );
            let path = bin.join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Containerd {
            dir,
            config,
            socket,
            bin,
            _process: process,
        }
    }

    fn ctr(&self, args: &[&str]) -> Run {
        let mut all = vec!["--address", self.socket.to_str().unwrap(), "-n", "k8s.io"];
        all.extend_from_slice(args);
        tool("/usr/bin/ctr", &all, &[])
    }

    /// `name digest` of the images in k8s.io.
    fn images(&self) -> Vec<(String, String)> {
        let r = self.ctr(&["images", "ls"]);
        r.ok();
        r.stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2).then(|| (f[0].to_string(), f[2].to_string()))
            })
            .collect()
    }

    fn calls(&self) -> String {
        ["ctr", "containerd"]
            .iter()
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("{n}.calls")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Temporary credentials of the node role (moto's STS AssumeRole as the minter user).
fn role_credentials(moto: &Moto) -> [(String, String); 3] {
    let script = r#"
import json, sys, boto3
s = json.load(open(sys.argv[1]))
sts = boto3.client("sts", endpoint_url=s["endpoint"], region_name="us-east-1",
                   aws_access_key_id=s["access_key_id"], aws_secret_access_key=s["secret_access_key"])
c = sts.assume_role(RoleArn=s["role_arn"], RoleSessionName="node")["Credentials"]
print(json.dumps([c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]]))
"#;
    let out = Command::new(peers::python())
        .args(["-c", script, moto.setup_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    [
        ("AWS_ACCESS_KEY_ID".into(), v[0].clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), v[1].clone()),
        ("AWS_SESSION_TOKEN".into(), v[2].clone()),
    ]
}

/// The minter user's own key: it may assume the role but has no ECR permission.
fn user_credentials(moto: &Moto) -> [(String, String); 2] {
    [
        (
            "AWS_ACCESS_KEY_ID".into(),
            moto.setup["access_key_id"].as_str().unwrap().into(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            moto.setup["secret_access_key"].as_str().unwrap().into(),
        ),
    ]
}

/// moto's token for its account: the registry password.
fn moto_password(moto: &Moto) -> String {
    format!("{}-auth-token", moto.setup["account_id"].as_str().unwrap())
}

fn moto_requests(moto: &Moto) -> usize {
    moto.process
        .log_text()
        .lines()
        .filter(|l| l.contains("\"POST / HTTP"))
        .count()
}

/// `hybridboot -vvv sandbox-image` with `ctr`/`containerd` from the recording wrappers.
fn sandbox_image(
    ctd: &Containerd,
    moto: &Moto,
    registry_endpoint: &str,
    creds: &[(String, String)],
    extra_args: &[&str],
    extra_env: &[(&str, &str)],
) -> Run {
    let path = format!(
        "{}:{}",
        ctd.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env: Vec<(&str, &str)> = vec![("PATH", &path)];
    for (k, v) in creds {
        env.push((k, v));
    }
    for v in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        if !extra_env.iter().any(|(k, _)| *k == v) {
            env.push((v, ""));
        }
    }
    env.extend_from_slice(extra_env);
    let mut args = vec![
        "-vvv",
        "sandbox-image",
        "--containerd-config",
        ctd.config.to_str().unwrap(),
        "--ecr-endpoint",
        &moto.endpoint,
        "--ecr-registry-endpoint",
        registry_endpoint,
    ];
    args.extend_from_slice(extra_args);
    run(&args, &env)
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let mut data = Vec::new();
                if std::fs::File::open(&p)
                    .and_then(|mut f| f.read_to_end(&mut data))
                    .is_ok()
                    && data.windows(needle.len()).any(|w| w == needle)
                {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

#[test]
fn pulls_the_pinned_image_for_this_platform_then_sends_no_request() {
    let moto = Moto::start();
    let password = moto_password(&moto);
    let registry = Registry::start(&password, None);
    let pushed = registry.push(&password, None);
    let ctd = Containerd::start();
    let creds = role_credentials(&moto);

    let (reg0, moto0) = (registry.requests(), moto_requests(&moto));
    let r = sandbox_image(&ctd, &moto, &registry.endpoint(), &creds, &[], &[]);
    r.ok();
    let want = pushed["manifests"][arch()].as_str().unwrap();
    assert!(
        r.stdout.contains(&format!("{IMAGE}: pulled {want}")),
        "{}",
        r.stdout
    );
    // Named as the config pins it, with this platform's manifest (not the index, not the
    // other architecture).
    assert!(
        ctd.images()
            .contains(&(IMAGE.to_string(), want.to_string())),
        "{:?}",
        ctd.images()
    );
    let check = ctd.ctr(&["images", "check"]);
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.starts_with(IMAGE) && l.contains("complete")),
        "{}",
        check.stdout
    );
    assert!(
        moto_requests(&moto) > moto0,
        "GetAuthorizationToken went to moto"
    );
    assert!(
        registry.requests() >= reg0 + 4,
        "index, manifest, config, layer"
    );

    // The token: never in a log line at -vvv, an argv or environment of ctr/containerd, or a
    // file of containerd's or this test's temp dirs.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    for secret in [password.as_str(), basic.as_str()] {
        assert!(
            !r.stderr.contains(secret) && !r.stdout.contains(secret),
            "token in the output:\n{}",
            r.stderr
        );
        assert!(
            !ctd.calls().contains(secret),
            "token passed to ctr/containerd"
        );
        assert!(
            files_containing(ctd.dir.path(), secret.as_bytes()).is_empty(),
            "token written to a file: {:?}",
            files_containing(ctd.dir.path(), secret.as_bytes())
        );
    }
    assert!(ctd.calls().contains("ARGV: --address"), "the wrappers ran");

    // Present: the second run asks neither ECR nor the registry anything.
    let (reg1, moto1) = (registry.requests(), moto_requests(&moto));
    let again = sandbox_image(&ctd, &moto, &registry.endpoint(), &creds, &[], &[]);
    again.ok();
    assert!(
        again.stdout.contains(&format!("{IMAGE}: present")),
        "{}",
        again.stdout
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        registry.requests(),
        reg1,
        "no registry request when present"
    );
    assert_eq!(moto_requests(&moto), moto1, "no ECR request when present");
}

#[test]
fn refusals_tampering_and_outages_import_nothing_and_exit_with_their_class() {
    let moto = Moto::start();
    let password = moto_password(&moto);
    let ctd = Containerd::start();
    let role = role_credentials(&moto);

    // The registry does not take moto's token: exit 3 naming the registry and the permissions.
    let wrong = Registry::start("not-the-token", None);
    wrong.push("not-the-token", None);
    let r = sandbox_image(&ctd, &moto, &wrong.endpoint(), &role, &[], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("602401143452.dkr.ecr.us-west-2.amazonaws.com")
            && r.stderr.contains("HTTP 401")
            && r.stderr.contains(
                "ecr:GetAuthorizationToken, ecr:BatchGetImage and ecr:GetDownloadUrlForLayer"
            ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(&password), "{}", r.stderr);

    // A principal without ECR permission: moto refuses GetAuthorizationToken, exit 3.
    let good = Registry::start(&password, None);
    let pushed = good.push(&password, None);
    let r = sandbox_image(
        &ctd,
        &moto,
        &good.endpoint(),
        &user_credentials(&moto),
        &[],
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("denied GetAuthorizationToken")
            && r.stderr.contains("ecr:GetAuthorizationToken"),
        "{}",
        r.stderr
    );

    // The registry is down: retried, then exit 4 (retry later).
    let closed = format!("http://127.0.0.1:{}", free_port());
    let t = Instant::now();
    let r = sandbox_image(
        &ctd,
        &moto,
        &closed,
        &role,
        &["--retry-deadline", "3s"],
        &[],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("retrying"), "retried: {}", r.stderr);
    assert!(r.stderr.contains(&closed[7..]), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(30));

    // A tampered layer: refused (exit 3), nothing imported.
    good.corrupt_blob(pushed["layers"][arch()].as_str().unwrap());
    let r = sandbox_image(&ctd, &moto, &good.endpoint(), &role, &[], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("refused, nothing was imported"),
        "{}",
        r.stderr
    );
    assert!(ctd.images().is_empty(), "{:?}", ctd.images());
    // (Not even the content: the archive is only built once every digest matched.)
    let content = ctd.ctr(&["content", "ls", "-q"]);
    assert!(content.stdout.trim().is_empty(), "{}", content.stdout);
}

/// tinyproxy on loopback, logging every connection it opens.
struct TinyProxy {
    dir: tempfile::TempDir,
    port: u16,
    _process: Background,
}

impl TinyProxy {
    fn start(connect_ports: &[u16]) -> TinyProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\nMaxClients 20\n",
            dir.path().join("tinyproxy.log").display()
        );
        for p in connect_ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        let path = dir.path().join("tinyproxy.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (Debian package tinyproxy; scripts/setup.sh)");
        let process = Background(child);
        wait_for("tinyproxy", || port_open(port));
        TinyProxy {
            dir,
            port,
            _process: process,
        }
    }

    /// Connections the proxy opened to 127.0.0.1:`port`.
    fn connections_to(&self, port: u16) -> usize {
        let needle = format!("opening connection to 127.0.0.1:{port}");
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Request lines it saw (`CONNECT host:port`, `GET http://...`).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

#[test]
fn every_request_goes_through_the_proxy_unless_no_proxy_names_it() {
    let moto = Moto::start();
    let password = moto_password(&moto);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = MiniCa::root(ca_dir.path(), "registry-ca");
    let registry = Registry::start(&password, Some(&ca));
    registry.push(&password, Some(&ca));
    let ctd = Containerd::start();
    let role = role_credentials(&moto);
    let moto_port: u16 = moto.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = TinyProxy::start(&[registry.port]);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let ca_arg = ca.cert.to_str().unwrap().to_string();

    // Through the proxy: ECR (plain http, absolute-form) and the registry (https, CONNECT).
    let r = sandbox_image(
        &ctd,
        &moto,
        &registry.endpoint(),
        &role,
        &["--aws-ca-bundle", &ca_arg],
        &[
            ("HTTPS_PROXY", &proxy_url),
            ("HTTP_PROXY", &proxy_url),
            ("NO_PROXY", "localhost"),
        ],
    );
    r.ok();
    assert!(proxy.connections_to(moto_port) >= 1, "{}", proxy.log());
    assert!(proxy.connections_to(registry.port) >= 4, "{}", proxy.log());
    let log = proxy.log();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{}", registry.port)),
        "https went through a CONNECT tunnel: {log}"
    );
    assert!(
        log.contains(&format!("POST http://127.0.0.1:{moto_port}/")),
        "http went in absolute form: {log}"
    );

    // NO_PROXY with a CIDR block: the same pull goes direct.
    ctd.ctr(&["images", "rm", IMAGE]).ok();
    let (to_moto, to_registry) = (
        proxy.connections_to(moto_port),
        proxy.connections_to(registry.port),
    );
    let r = sandbox_image(
        &ctd,
        &moto,
        &registry.endpoint(),
        &role,
        &["--aws-ca-bundle", &ca_arg],
        &[
            ("HTTPS_PROXY", &proxy_url),
            ("HTTP_PROXY", &proxy_url),
            ("NO_PROXY", "127.0.0.0/8"),
        ],
    );
    r.ok();
    assert!(r.stdout.contains("pulled"), "{}", r.stdout);
    assert_eq!(proxy.connections_to(moto_port), to_moto, "{}", proxy.log());
    assert_eq!(
        proxy.connections_to(registry.port),
        to_registry,
        "{}",
        proxy.log()
    );
}

/// `init` with a proxy in its environment (what first boot exports from `spec.proxy`) writes the
/// containerd and kubelet drop-ins and puts the proxy on the credential_process line; without a
/// proxy, neither.
#[test]
fn init_writes_the_proxy_where_the_node_needs_it_later() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: c1\n    region: us-west-2\n    apiServerEndpoint: https://example.eks.amazonaws.com\n    certificateAuthority: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n    cidr: 172.20.0.0/16\n  hybrid:\n    iamRolesAnywhere:\n      nodeName: node-1\n      roleArn: arn:aws:iam::123456789012:role/hybrid-node\n      profileArn: arn:aws:rolesanywhere:us-west-2:123456789012:profile/p\n      trustAnchorArn: arn:aws:rolesanywhere:us-west-2:123456789012:trust-anchor/t\n",
    )
    .unwrap();
    let init = |root: &Path, env: &[(&str, &str)]| {
        // The node's NodeConfig, read under --root.
        std::fs::create_dir_all(root.join("etc/eks")).unwrap();
        std::fs::copy(&config, root.join("etc/eks/node.yaml")).unwrap();
        run(
            &[
                "init",
                "--config-source",
                "file:///etc/eks/node.yaml",
                "--root",
                root.to_str().unwrap(),
                "--no-start",
                "--skip",
                "certificate-validation",
                "--kubelet-version",
                "v1.31.2",
                "--hybridboot-path",
                "/usr/bin/hybridboot",
            ],
            env,
        )
    };
    let proxied = dir.path().join("proxied");
    init(
        &proxied,
        &[
            ("https_proxy", ""),
            ("HTTPS_PROXY", "http://proxy.example.com:3128"),
            ("HTTP_PROXY", "http://proxy.example.com:3128"),
            ("NO_PROXY", ".corp.example,10.0.0.0/8"),
        ],
    )
    .ok();
    let want = "[Service]\nEnvironment=\"HTTP_PROXY=http://proxy.example.com:3128\"\nEnvironment=\"HTTPS_PROXY=http://proxy.example.com:3128\"\nEnvironment=\"NO_PROXY=.corp.example,10.0.0.0/8,localhost,127.0.0.1,172.20.0.0/16\"\n";
    for unit in ["containerd", "kubelet"] {
        let path = proxied.join(format!(
            "etc/systemd/system/{unit}.service.d/http-proxy.conf"
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(want), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
    let aws = std::fs::read_to_string(proxied.join("etc/aws/hybrid/config")).unwrap();
    assert!(
        aws.contains("--role-session-name node-1 --https-proxy http://proxy.example.com:3128 --http-proxy http://proxy.example.com:3128 --no-proxy .corp.example,10.0.0.0/8\n"),
        "{aws}"
    );

    let direct = dir.path().join("direct");
    init(
        &direct,
        &[
            ("https_proxy", ""),
            ("HTTPS_PROXY", ""),
            ("http_proxy", ""),
            ("HTTP_PROXY", ""),
        ],
    )
    .ok();
    assert!(!direct
        .join("etc/systemd/system/containerd.service.d")
        .exists());
    assert!(!direct.join("etc/systemd/system/kubelet.service.d").exists());
    let aws = std::fs::read_to_string(direct.join("etc/aws/hybrid/config")).unwrap();
    assert!(!aws.contains("proxy"), "{aws}");
}

/// The config init renders, dumped by the real containerd, names the pinned image and socket
/// where the sandbox step looks for them.
#[test]
fn the_rendered_containerd_config_dumps_to_the_pinned_image() {
    use hybridboot::node::render::containerd::{base_config, sandbox_image};
    use hybridboot::node::sandbox::parse_config_dump;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, base_config(&sandbox_image("eu-central-1"))).unwrap();
    let dump = tool(
        "containerd",
        &["--config", config.to_str().unwrap(), "config", "dump"],
        &[],
    );
    dump.ok();
    let info = parse_config_dump(&dump.stdout).unwrap();
    assert_eq!(info.version, 2);
    assert_eq!(info.sandbox_image, IMAGE);
    assert_eq!(info.grpc_address, "/run/containerd/containerd.sock");
}
