//! The systemd guest of the VM test: a Debian bookworm root (tests/vm/build-debian-root.sh,
//! cached under ~/.cache/hybridboot/vm) booted under QEMU (x86_64, TCG) with systemd as PID 1, a
//! swtpm TPM (tpm-crb), the static hybridboot and the shipped units installed and enabled as
//! the Yocto recipe does (tests/vm/assemble-systemd-guest.sh), and the site's only way out an
//! HTTP proxy on the host (squid, which resolves the test's names to 127.0.0.1 and connects
//! nowhere else) plus the site's NTP server (chronyd on the host).
//!
//! One QEMU process, three boots of one disk: the first is hard-reset (QEMU `system_reset`)
//! right after enrollment wrote the certificate, the second while init is configuring the node;
//! the third reaches the joined stamp, then the renewal timer renews the certificate and the
//! kubelet stand-in's next token comes from a Roles Anywhere session of the new certificate. A
//! collector unit in the guest then writes the journal, `systemctl show`, `systemd-analyze
//! security`, `ctr images ls` and the installed unit files to a second disk and powers off; the
//! test unpacks them into target/vm-artifacts/systemd-x86_64/ and checks them there.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::openbao::OpenBao;
use crate::util::peers::{ApiServer, MiniCa, Moto, RaOptions, RolesAnywhere};
use crate::util::{self as common, free_port};

const ARCH: &str = "x86_64";
const NODE: &str = "vm-node.example.com";
/// The registry of the sandbox image init pins for a us-east-1 node (nodeadm's: the us-west-2
/// registry of the commercial account), and the image.
const ECR_REGISTRY: &str = "602401143452.dkr.ecr.us-west-2.amazonaws.com";
const SANDBOX_IMAGE: &str = "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5";
/// Guest side of the host services: 10.0.2.100:<port> (QEMU guestfwd relays to 127.0.0.1).
const PROXY_GUEST_PORT: u16 = 3128;
const NTP_GUEST_PORT: u16 = 123;
/// Whether the guest reaches the peers only through the proxy (spec.proxy) or through one relay
/// per peer (before first boot honoured a proxy).
const VIA_PROXY: bool = true;
/// The certificate lifetime Vault issues: first boot (three boots here, minutes each under TCG on
/// a busy machine) keeps it as long as it is young (renewal due with a third left). Once the node
/// joined, the guest's site configuration moves the renewal point to 99/100 of the lifetime left
/// (tests/vm/systemd-guest/usr/local/sbin/hb-test-finish), so the renewal timer's next run
/// renews, whatever the boots cost.
const CERT_TTL: &str = "1h";
/// What the firmware prints on the serial console at every (re)boot.
const BOOT_BANNER: &str = "SeaBIOS (version";
/// Seconds of guest uptime the collector waits for everything before it gives up.
const GUEST_DEADLINE_S: u64 = 1500;
/// How long the host waits for the whole run.
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kills a child by PID (SIGTERM, then SIGKILL) and reaps it on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { child, name }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..50 {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_tcp(port: u16, what: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The site's HTTP proxy: squid on 127.0.0.1, resolving only the test's names (its hosts file
/// maps each to 127.0.0.1), refusing every other destination, and connecting from 127.0.0.1 to
/// 127.0.0.1 only.
struct Squid {
    _proc: Proc,
    port: u16,
    dir: PathBuf,
}

impl Squid {
    fn start(dir: &Path, names: &[String]) -> Squid {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let d = dir.display();
        let hosts: String = names.iter().map(|n| format!("127.0.0.1 {n}\n")).collect();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        let conf = format!(
            "http_port 127.0.0.1:{port}
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log stdio:{d}/access.log squid
cache deny all
cache_mem 8 MB
hosts_file {d}/hosts
# Every name the guest may use is in hosts_file; nothing is resolved through DNS.
dns_nameservers 127.0.0.1
pinger_enable off
acl test_names dstdomain {names}
acl loopback dst 127.0.0.1/32
acl from_relay src 127.0.0.1/32
http_access deny !from_relay
http_access deny !test_names
http_access deny !loopback
http_access allow all
tcp_outgoing_address 127.0.0.1
coredump_dir {d}
shutdown_lifetime 0 seconds
",
            names = names.join(" ")
        );
        std::fs::write(dir.join("squid.conf"), conf).unwrap();
        // squid drops root for its `proxy` user, which must write its logs here.
        if running_as_root() {
            common::tool(
                "chown",
                &["-R", "proxy:proxy", &dir.display().to_string()],
                &[],
            );
        }
        let proc = Proc::spawn(
            "squid",
            Command::new("squid")
                .args(["-N", "-f"])
                .arg(dir.join("squid.conf"))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
                .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap()),
        );
        wait_tcp(port, "squid");
        Squid {
            _proc: proc,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

/// The site's NTP server: chronyd serving the host clock on 127.0.0.1 (UDP), never adjusting
/// the host's clock (`-x`) and asking no server itself. tests/vm/setup.sh unpacks Debian's
/// chrony into the cache rather than installing a time daemon on the build machine.
struct Chrony {
    _proc: Proc,
    port: u16,
}

impl Chrony {
    fn start(dir: &Path) -> Chrony {
        let bin = cache_dir().join("chrony/usr/sbin/chronyd");
        assert!(
            bin.exists(),
            "{} missing: run tests/vm/setup.sh",
            bin.display()
        );
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\npidfile {}/chronyd.pid\n",
            dir.display()
        );
        std::fs::write(dir.join("chrony.conf"), conf).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.args(["-d", "-x", "-f"]).arg(dir.join("chrony.conf"));
        if running_as_root() {
            cmd.args(["-u", "root"]);
        }
        let proc = Proc::spawn(
            "chronyd",
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("chronyd.log")).unwrap()),
        );
        Chrony { _proc: proc, port }
    }
}

/// The ECR registry stand-in: Debian's docker-registry over TLS (a certificate for the ECR
/// registry's own name), htpasswd basic auth for user `AWS` with the password moto's
/// GetAuthorizationToken issues; holds the pause-like test image as `eks/pause:3.5`.
struct Registry {
    _proc: Proc,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    fn start(dir: &Path, password: &str, ca: &MiniCa) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let htpasswd = dir.join("htpasswd");
        common::tool(
            "htpasswd",
            &["-Bbc", htpasswd.to_str().unwrap(), "AWS", password],
            &[],
        )
        .ok();
        let (cert, key) = ca.tls_with_names(dir, &[ECR_REGISTRY.to_string()]);
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: ecr\n    path: {}\n",
                dir.join("data").display(),
                cert.display(),
                key.display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let proc = Proc::spawn(
            "docker-registry",
            Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        wait_tcp(port, "docker-registry");
        // The image: a two-platform pause-like OCI layout, pushed with skopeo.
        let layout = dir.join("layout");
        let out = common::tool(
            "python3",
            &[
                crate::util::peers::peers_dir()
                    .join("oci_image.py")
                    .to_str()
                    .unwrap(),
                "--out",
                layout.to_str().unwrap(),
            ],
            &[],
        );
        out.ok();
        let certs = dir.join("skopeo-certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(&ca.cert, certs.join("ca.crt")).unwrap();
        common::tool(
            "skopeo",
            &[
                "copy",
                "--all",
                "--dest-creds",
                &format!("AWS:{password}"),
                "--dest-cert-dir",
                certs.to_str().unwrap(),
                &format!("oci:{}:3.5", layout.display()),
                &format!("docker://127.0.0.1:{port}/eks/pause:3.5"),
            ],
            &[],
        )
        .ok();
        Registry {
            _proc: proc,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// ~/.cache/hybridboot/vm (HYBRIDBOOT_VM_CACHE).
fn cache_dir() -> PathBuf {
    std::env::var_os("HYBRIDBOOT_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/hybridboot/vm")
        })
}

/// Sends one HMP command to QEMU's monitor socket and waits for the next prompt: the monitor
/// echoes input character by character, and a client that hangs up early loses the command.
fn monitor(sock: &Path, command: &str) {
    let mut s = UnixStream::connect(sock).expect("QEMU monitor");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut seen = Vec::new();
    // Reads until `done(text since from)` or 20 s.
    let mut read_until = |seen: &mut Vec<u8>, from: usize, done: &dyn Fn(&str) -> bool| {
        let mut buf = [0u8; 4096];
        let t = Instant::now();
        while !done(&String::from_utf8_lossy(&seen[from..])) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "QEMU monitor: no answer to {command}"
            );
            if let Ok(n) = s.read(&mut buf) {
                seen.extend_from_slice(&buf[..n]);
            }
        }
    };
    read_until(&mut seen, 0, &|t| t.contains("(qemu)"));
    let mark = seen.len();
    writer.write_all(format!("{command}\n").as_bytes()).unwrap();
    // The echo ends with the newline; the command runs before the next prompt.
    read_until(&mut seen, mark, &|t| {
        t.split_once('\n')
            .is_some_and(|(_, rest)| rest.contains("(qemu)"))
    });
}

/// The console so far (lossy: the serial line carries what the guest prints).
fn console(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "")
}

/// The line side of the factory identity against the TPM state in `tpmdir` (served over TCP
/// for the time of it): `factory request`, the factory CA's signature, `factory store`.
/// Returns the stored certificate.
fn manufacture(bao: &OpenBao, tpmdir: &Path, line: &Path) -> String {
    std::fs::create_dir_all(line).unwrap();
    let port = free_port();
    let pid_file = line.join("swtpm.pid");
    let r = common::tool(
        "swtpm",
        &[
            "socket",
            "--tpm2",
            "--tpmstate",
            &format!("dir={}", tpmdir.display()),
            "--server",
            &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            "--ctrl",
            &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            "--flags",
            "not-need-init,startup-clear",
            "--daemon",
            "--pid",
            &format!("file={}", pid_file.display()),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "swtpm for the line: {}", r.stderr);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let env = [("HYBRIDBOOT_TCTI", tcti.as_str())];
    let csr = line.join("idevid.csr");
    common::run(
        &[
            "factory",
            "request",
            "--key",
            "handle:0x81000002",
            "--serial-number",
            NODE,
            "--out",
            csr.to_str().unwrap(),
        ],
        &env,
    )
    .ok();
    let signed = line.join("idevid-signed.pem");
    std::fs::write(&signed, bao.factory_sign(&csr, "8760h")).unwrap();
    let stored = line.join("idevid.pem");
    common::run(
        &[
            "factory",
            "store",
            "--key",
            "handle:0x81000002",
            "--serial-number",
            NODE,
            "--signed",
            signed.to_str().unwrap(),
            "--out",
            stored.to_str().unwrap(),
        ],
        &env,
    )
    .ok();
    // Stopped before the guest's swtpm takes the same state.
    common::terminate(pid);
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the line's swtpm did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(stored).unwrap()
}

/// Searches the raw disk image (every block, so deleted files and the journal too) for each
/// token, and for PEM private keys with their body beyond those Debian's own root ships (the
/// header alone is a string in many binaries, and libgnutls embeds a whole test key).
fn no_secret_on_disk(disk: &Path, debian_root: &Path, tokens: &[String]) {
    assert!(
        !tokens.is_empty(),
        "the audit log shows no token issued: the search would prove nothing"
    );
    let d = disk.to_str().unwrap();
    for token in tokens {
        let r = common::tool("grep", &["-c", "-a", "-F", "-e", token, d], &[]);
        assert_eq!(
            r.stdout.trim(),
            "0",
            "a Vault token issued during the run is on the guest's disk {d} (grep exit {})",
            r.code
        );
    }
    let pem = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/]{40}";
    let keys = |args: &[&str]| -> std::collections::BTreeSet<String> {
        let mut all = vec!["-a", "-z", "-P", "-o", "-h", "-e", pem];
        all.extend_from_slice(args);
        let r = common::tool("grep", &all, &[]);
        assert!(r.code <= 1, "grep for PEM keys: {}", r.stderr);
        r.stdout
            .split('\0')
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect()
    };
    let shipped = keys(&["-r", debian_root.to_str().unwrap()]);
    let found = keys(&[d]);
    let ours: Vec<&String> = found.difference(&shipped).collect();
    assert!(
        ours.is_empty(),
        "{} PEM private key(s) on the guest's disk {d} that Debian's root does not ship: {:?}",
        ours.len(),
        ours.iter()
            .map(|k| k.lines().next().unwrap_or(""))
            .collect::<Vec<_>>()
    );
}

/// Number of OpenBao certificates in the node's PKI mount.
fn certificate_count(bao: &OpenBao) -> usize {
    let r = bao.bao(&["list", "-format=json", "pki_int/certs"]);
    if r.code != 0 {
        return 0;
    }
    serde_json::from_str::<Vec<String>>(&r.stdout)
        .map(|v| v.len())
        .unwrap_or(0)
}

fn show(artifacts: &Path, unit: &str) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(artifacts.join(format!("show-{unit}.txt")))
        .unwrap_or_else(|e| panic!("show-{unit}.txt: {e}"));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A hex number of any length in decimal (certificate serials are up to 160 bits).
fn hex_to_decimal(hex: &str) -> String {
    // Little-endian base-10^9 limbs.
    let mut limbs: Vec<u64> = vec![0];
    for c in hex.chars() {
        let mut carry = c.to_digit(16).expect("hex digit") as u64;
        for l in limbs.iter_mut() {
            let v = *l * 16 + carry;
            *l = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut out = limbs.last().unwrap().to_string();
    for l in limbs.iter().rev().skip(1) {
        out.push_str(&format!("{l:09}"));
    }
    out
}

fn serial_of(pem: &Path) -> String {
    let out = common::tool(
        "openssl",
        &["x509", "-in", pem.to_str().unwrap(), "-noout", "-serial"],
        &[],
    );
    out.stdout
        .trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_ascii_lowercase()
}

#[test]
#[ignore = "needs the static x86_64 binary, qemu-system-x86, debootstrap and squid: run `make vm-test`"]
fn systemd_guest_joins_under_the_shipped_units_through_a_proxy_survives_power_cuts_and_renews() {
    let bin = super::static_binary(ARCH);
    let artifacts = repo().join(format!("target/vm-artifacts/systemd-{ARCH}"));
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let fail_hint = format!(
        "artifacts (journal, systemctl show, security, console) in {}",
        artifacts.display()
    );

    // The Debian root (cached; built once per version of its script).
    let t_root = Instant::now();
    let b = common::tool(
        "bash",
        &[repo()
            .join("tests/vm/build-debian-root.sh")
            .to_str()
            .unwrap()],
        &[],
    );
    assert_eq!(b.code, 0, "building the Debian root failed:\n{}", b.stderr);
    let root_cache = PathBuf::from(b.stdout.trim());
    let root_build_s = t_root.elapsed().as_secs_f64();

    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // Peers. Names the guest uses; squid resolves each to 127.0.0.1.
    let vault_name = "vault.hybridboot.test";
    let ra_name = "rolesanywhere.hybridboot.test";
    let eks_name = "eks.hybridboot.test";
    let api_name = "api.hybridboot.test";
    let bao = OpenBao::start();
    bao.configure_factory();
    let cluster_ca = MiniCa::root(w, "cluster-ca");
    let issued = w.join("issued.json");
    std::fs::write(&issued, r#"{"credentials": []}"#).unwrap();
    let api = ApiServer::start_with_names(&cluster_ca, &issued, &[api_name]);
    let moto = Moto::start_configured(
        &[
            "--eks-ca-file",
            cluster_ca.cert.to_str().unwrap(),
            "--eks-endpoint",
            &format!("https://{api_name}:{}", api.port),
        ],
        &["--remote-node-cidr", "10.0.2.0/24"],
    );
    let mut ra_opts = RaOptions::new(&[&bao.pki_root])
        .sts(&moto)
        .tls_names(&[ra_name]);
    ra_opts.extra = vec![
        "--issued-credentials-file".into(),
        issued.display().to_string(),
    ];
    let ra = RolesAnywhere::start(&ra_opts);
    let moto_port: u16 = moto
        .endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let ecr_api_name = "api.ecr.us-west-2.amazonaws.com";
    let registry_ca = MiniCa::root(w, "registry-ca");
    let password = format!("{}-auth-token", moto.setup["account_id"].as_str().unwrap());
    let registry = Registry::start(&w.join("registry"), &password, &registry_ca);
    let names: Vec<String> = [
        vault_name,
        ra_name,
        eks_name,
        api_name,
        ecr_api_name,
        ECR_REGISTRY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let squid = Squid::start(&w.join("squid"), &names);
    let chrony = Chrony::start(&w.join("chrony"));

    // The guest's files: the site tree of the repository plus this run's configuration.
    let files = w.join("files");
    common::tool(
        "cp",
        &[
            "-a",
            repo().join("tests/vm/systemd-guest").to_str().unwrap(),
            files.to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    let put = |path: &str, text: &str, mode: u32| {
        let p = files.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // The production line: the factory identity (IDevID) made in the TPM the guest will have,
    // certified by the factory CA and stored in the guest. Nothing in the guest is a secret.
    let tpmdir = w.join("tpm");
    std::fs::create_dir_all(&tpmdir).unwrap();
    let idevid = manufacture(&bao, &tpmdir, &w.join("line"));
    put("/etc/hybridboot/idevid.pem", &idevid, 0o644);
    let proxy = format!("http://10.0.2.100:{PROXY_GUEST_PORT}");
    let config = format!(
        "\
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: {cluster}
    region: us-east-1
  hybrid:
    iamRolesAnywhere:
      nodeName: {NODE}
      roleArn: {role}
      profileArn: {profile}
      trustAnchorArn: {ta}
      privateKeyPath: handle:0x81000001
  # No --node-ip: the site has no DNS (the proxy resolves names), so init takes the default
  # route's address, as nodeadm does.
---
apiVersion: hybridboot/v1alpha1
kind: BootstrapConfig
spec:
  key:
    ref: handle:0x81000001
    tcti: device:/dev/tpmrm0
  vault:
    address: https://{vault_name}:{vault_port}
    caBundle: /etc/hybridboot/vault-ca.pem
    pkiMount: pki_int
    role: device
    ttl: {CERT_TTL}
    auth:
      deviceCertificate:
        keyRef: handle:0x81000002
        certificate: /etc/hybridboot/idevid.pem
        role: factory-devices
    renewal:
      certAuthRole: device-nodes
      renewBefore: 1/3
  aws:
    rolesAnywhereEndpoint: https://{ra_name}:{ra_port}
    eksEndpoint: http://{eks_name}:{moto_port}
    ecrEndpoint: http://{ecr_api_name}:{moto_port}
    ecrRegistryEndpoint: https://{ECR_REGISTRY}:{registry_port}
    caBundle: /etc/hybridboot/aws-ca.pem
{proxy_section}  timeouts:
    overall: 20m
",
        cluster = moto.cluster_name(),
        role = ra.role_arn,
        profile = ra.profile_arn,
        ta = ra.trust_anchor_arn,
        vault_port = bao.tls_port,
        ra_port = ra.https_port,
        registry_port = registry.port,
        proxy_section = if VIA_PROXY {
            format!("  proxy:\n    httpsProxy: {proxy}\n    httpProxy: {proxy}\n")
        } else {
            String::new()
        },
    );
    put("/etc/hybridboot/config.yaml", &config, 0o644);
    put(
        "/etc/hybridboot/vault-ca.pem",
        &std::fs::read_to_string(&bao.listener_ca).unwrap(),
        0o644,
    );
    // The CAs of the AWS-side endpoints: Roles Anywhere's and the registry's.
    put(
        "/etc/hybridboot/aws-ca.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(&ra.tls_ca).unwrap(),
            std::fs::read_to_string(&registry_ca.cert).unwrap()
        ),
        0o644,
    );
    let mut hosts = "127.0.0.1 localhost vm-node\n".to_string();
    if !VIA_PROXY {
        hosts.push_str(&format!("10.0.2.100 {}\n", names.join(" ")));
    }
    put("/etc/hosts", &hosts, 0o644);
    put(
        "/etc/hb-test/deadline",
        &format!("{GUEST_DEADLINE_S}\n"),
        0o644,
    );

    // The disk.
    let vm = w.join("vm");
    let t_asm = Instant::now();
    let a = common::tool(
        "bash",
        &[
            repo()
                .join("tests/vm/assemble-systemd-guest.sh")
                .to_str()
                .unwrap(),
            root_cache.to_str().unwrap(),
            vm.to_str().unwrap(),
            bin.to_str().unwrap(),
            files.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        a.code, 0,
        "assembling the guest failed:\n{}{}",
        a.stdout, a.stderr
    );
    let assemble_s = t_asm.elapsed().as_secs_f64();
    let results = vm.join("results.img");
    let f = std::fs::File::create(&results).unwrap();
    f.set_len(256 << 20).unwrap();
    drop(f);

    // TPM and QEMU. One swtpm for all boots: the node key lives in it, beside the IDevID key
    // the line made.
    let tpm_sock = tpmdir.join("sock");
    let _swtpm = Proc::spawn(
        "swtpm",
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", tpmdir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", tpm_sock.display()))
            .args(["--flags", "startup-clear", "--log"])
            .arg(format!("file={}", tpmdir.join("log").display()))
            .stdin(Stdio::null()),
    );
    let t = Instant::now();
    while !tpm_sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "swtpm did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut netdev = format!(
        "user,id=n0,restrict=on,net=10.0.2.0/24,host=10.0.2.2,\
guestfwd=tcp:10.0.2.100:{PROXY_GUEST_PORT}-cmd:socat - TCP:127.0.0.1:{},\
guestfwd=tcp:10.0.2.100:{NTP_GUEST_PORT}-cmd:socat -T 5 - UDP4:127.0.0.1:{}",
        squid.port, chrony.port
    );
    if !VIA_PROXY {
        for port in [
            bao.tls_port,
            ra.https_port,
            moto_port,
            api.port,
            registry.port,
        ] {
            netdev.push_str(&format!(
                ",guestfwd=tcp:10.0.2.100:{port}-cmd:socat - TCP:127.0.0.1:{port}"
            ));
        }
    }
    let console_log = vm.join("console.log");
    let mon = vm.join("monitor.sock");
    let started = Instant::now();
    let mut qemu = Proc::spawn(
        "qemu",
        Command::new("qemu-system-x86_64")
            .args(["-M", "q35", "-cpu", "max", "-accel", "tcg", "-m", "1024"])
            .args(["-smp", "2", "-nodefaults", "-nographic"])
            .arg("-kernel")
            .arg(vm.join("vmlinuz"))
            .arg("-initrd")
            .arg(vm.join("initrd.img"))
            // No crypto self-tests, no Spectre barriers and no boot status lines: the guest is
            // emulated instruction by instruction (TCG), and they cost it most of a minute.
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 loglevel=4 panic=-1 cryptomgr.notests \
                 mitigations=off audit=0 systemd.show_status=false",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio",
                vm.join("disk.img").display()
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", results.display()))
            .arg("-serial")
            .arg(format!("file:{}", console_log.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", mon.display()))
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", tpm_sock.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
            .args(["-device", "tpm-crb,tpmdev=tpm0"])
            .args(["-netdev", &netdev])
            .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
            .args(["-device", "virtio-rng-pci"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(vm.join("qemu.log")).unwrap())
            .stderr(std::fs::File::create(vm.join("qemu.err")).unwrap()),
    );
    let certs_before = certificate_count(&bao);

    // Wait for `pattern` in the console after byte `from`; returns its end offset.
    let keep = |why: &str| {
        let _ = std::fs::copy(&console_log, artifacts.join("console.log"));
        let _ = std::fs::write(artifacts.join("squid-access.log"), squid.access_log());
        why.to_string()
    };
    let wait_for = |pattern: &str, from: usize, qemu: &mut Proc| -> usize {
        loop {
            let c = console(&console_log);
            if let Some(i) = c.get(from..).and_then(|s| s.find(pattern)) {
                return from + i + pattern.len();
            }
            if let Some(st) = qemu.exited() {
                panic!(
                    "{}",
                    keep(&format!(
                        "the guest stopped ({st}) before '{pattern}'; {fail_hint}; console tail:\n{}",
                        &c[c.len().saturating_sub(6000)..]
                    ))
                );
            }
            if started.elapsed() > RUN_TIMEOUT {
                panic!(
                    "{}",
                    keep(&format!(
                        "no '{pattern}' within {RUN_TIMEOUT:?}; {fail_hint}; console tail:\n{}",
                        &c[c.len().saturating_sub(6000)..]
                    ))
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // Power cut 1: enrollment wrote the certificate; the Roles Anywhere step and init follow.
    let enrolled = wait_for("written to /etc/iam/pki/server.pem", 0, &mut qemu);
    monitor(&mon, "system_reset");
    let cut1 = started.elapsed();
    let certs_after_cut1 = certificate_count(&bao);
    // Power cut 2: the second boot's init has written the node's files and is starting units.
    let boot2 = wait_for(BOOT_BANNER, enrolled, &mut qemu);
    let init_files = wait_for("files: ", boot2, &mut qemu);
    monitor(&mon, "system_reset");
    let cut2 = started.elapsed();
    // Third boot: joined (the collector says when), then renewal, then the collector's end.
    let boot3 = wait_for(BOOT_BANNER, init_files, &mut qemu);
    let joined_at = wait_for("HB-MARK joined at uptime", boot3, &mut qemu);
    let certs_at_joined = certificate_count(&bao);
    let joined_wall = started.elapsed();
    wait_for("HB-MARK collected", joined_at, &mut qemu);
    let t = Instant::now();
    while qemu.exited().is_none() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let total = started.elapsed();
    drop(qemu);
    let certs_final = certificate_count(&bao);

    // Unpack the collector's archive next to the console and the proxy's log.
    keep("");
    let x = common::tool(
        "tar",
        &[
            "-xf",
            results.to_str().unwrap(),
            "-C",
            artifacts.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(x.code, 0, "unpacking the guest's results: {}", x.stderr);
    std::fs::copy(vm.join("unit-files.txt"), artifacts.join("unit-files.txt")).ok();
    let _ = std::fs::write(artifacts.join("ra.log"), ra.process.log_text());
    let _ = std::fs::write(artifacts.join("apiserver.log"), api.process.log_text());
    let _ = std::fs::write(artifacts.join("registry.log"), registry.log());

    // Zero-secret enrollment: nothing on the guest's disk (files, the journal, free blocks) is a
    // Vault token OpenBao issued during the run, or a private key in the clear.
    no_secret_on_disk(
        &vm.join("disk.img"),
        &root_cache.join("root"),
        &bao.issued_tokens(),
    );
    let c = console(&console_log);
    println!(
        "systemd guest: root {:.1} s, assemble {:.1} s, cut 1 at {:.1} s, cut 2 at {:.1} s, joined at {:.1} s, done at {:.1} s",
        root_build_s,
        assemble_s,
        cut1.as_secs_f64(),
        cut2.as_secs_f64(),
        joined_wall.as_secs_f64(),
        total.as_secs_f64()
    );
    for line in c.lines().filter(|l| l.contains("HB-MARK")) {
        println!("{}", &line[line.find("HB-MARK").unwrap()..]);
    }
    let result = std::fs::read_to_string(artifacts.join("result.txt")).unwrap_or_default();
    assert_eq!(
        result.trim(),
        "result ok=1",
        "the guest did not see joined, renewal and a token after it; {fail_hint}"
    );

    // Three boots, two of them cut short.
    assert_eq!(c.matches(BOOT_BANNER).count(), 3, "{fail_hint}");

    // One certificate for the node through both power cuts; the renewal made the second.
    assert_eq!(certs_after_cut1, certs_before + 1, "{fail_hint}");
    assert_eq!(
        certs_at_joined,
        certs_before + 1,
        "a power cut made first boot enroll again; {fail_hint}"
    );
    assert_eq!(certs_final, certs_before + 2, "{fail_hint}");

    // The shipped units ran unmodified, under their own sandbox, and succeeded.
    for (unit, file) in [
        (
            "hybridboot-firstboot.service",
            "hybridboot-firstboot.service",
        ),
        ("hybridboot-renew.service", "hybridboot-renew.service"),
        ("hybridboot-renew.timer", "hybridboot-renew.timer"),
    ] {
        let installed =
            std::fs::read(artifacts.join(format!("installed/lib/systemd/system/{file}")))
                .unwrap_or_else(|e| panic!("installed {file}: {e}; {fail_hint}"));
        assert_eq!(
            installed,
            std::fs::read(repo().join("systemd").join(file)).unwrap(),
            "{file} differs from the shipped one"
        );
        let s = show(&artifacts, unit);
        assert_eq!(
            s["FragmentPath"],
            format!("/lib/systemd/system/{file}"),
            "{unit}"
        );
        // The renewal service has no [Install]: the timer starts it.
        let state = if unit == "hybridboot-renew.service" {
            "static"
        } else {
            "enabled"
        };
        assert_eq!(s["UnitFileState"], state, "{unit}");
        if unit.ends_with(".service") {
            assert_eq!(
                s.get("DropInPaths").map(String::as_str).unwrap_or(""),
                "",
                "{unit} must run without drop-ins"
            );
        }
    }
    let fb = show(&artifacts, "hybridboot-firstboot.service");
    assert_eq!(fb["ActiveState"], "active", "{fail_hint}");
    assert_eq!(fb["Result"], "success", "{fail_hint}");
    assert_eq!(fb["ExecMainStatus"], "0", "{fail_hint}");
    assert_eq!(fb["ProtectSystem"], "strict");
    assert_eq!(fb["DevicePolicy"], "closed");
    let rn = show(&artifacts, "hybridboot-renew.service");
    assert_eq!(rn["Result"], "success", "{fail_hint}");
    assert_eq!(rn["ExecMainStatus"], "0", "{fail_hint}");
    assert_eq!(rn["ProtectSystem"], "strict");
    let timer = show(&artifacts, "hybridboot-renew.timer");
    assert_eq!(
        timer["DropInPaths"],
        "/etc/systemd/system/hybridboot-renew.timer.d/test-schedule.conf"
    );
    // The preset enabled the wait for NTP, and the clock was synchronised by it.
    let tws = show(&artifacts, "systemd-time-wait-sync.service");
    assert_eq!(tws["UnitFileState"], "enabled");
    assert_eq!(tws["Result"], "success");
    let timedate = std::fs::read_to_string(artifacts.join("timedatectl.txt")).unwrap();
    assert!(timedate.contains("NTPSynchronized=yes"), "{timedate}");
    let security =
        std::fs::read_to_string(artifacts.join("security-hybridboot-firstboot.txt")).unwrap();
    assert!(security.contains("Overall exposure level"), "{security}");

    // The joined stamp names the node and the first certificate; the renewed one differs.
    let joined = std::fs::read_to_string(artifacts.join("installed/var/lib/hybridboot/joined"))
        .unwrap_or_else(|e| panic!("joined stamp: {e}; {fail_hint}"));
    assert!(joined.starts_with(&format!("node {NODE}\n")), "{joined}");
    let cert = artifacts.join("installed/etc/iam/pki/server.pem");
    let renewed_serial = serial_of(&cert);
    let stamped = joined
        .lines()
        .find_map(|l| l.strip_prefix("certificate serial "))
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_ne!(
        stamped.trim_start_matches('0'),
        renewed_serial,
        "the renewal did not replace the certificate"
    );
    let v = common::tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            bao.pki_root.to_str().unwrap(),
            "-untrusted",
            cert.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);

    // The last Roles Anywhere session came from the renewed certificate (its serial is the
    // Credential's first field), and the API server accepted tokens without a rejection.
    let last = ra.control("last", None);
    let auth = last["headers"]
        .as_array()
        .and_then(|h| {
            h.iter().find_map(|kv| {
                (kv[0].as_str()?.eq_ignore_ascii_case("authorization"))
                    .then(|| kv[1].as_str())
                    .flatten()
            })
        })
        .unwrap_or_default()
        .to_string();
    let serial_dec = auth
        .split("Credential=")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_default();
    assert_eq!(
        serial_dec,
        hex_to_decimal(&renewed_serial),
        "the last CreateSession did not use the renewed certificate: {last}"
    );
    assert_eq!(last["status"], 200, "{last}");
    let stats = api.stats();
    assert_eq!(stats["rejected"], 0, "{stats}");
    assert!(stats["ok"].as_u64().unwrap_or(0) >= 2, "{stats}");

    // containerd runs with the config init wrote; the kubelet unit runs the stand-in, which
    // read init's files and had its tokens accepted.
    let ctd = show(&artifacts, "containerd.service");
    assert_eq!(ctd["ActiveState"], "active", "{fail_hint}");
    let dump = std::fs::read_to_string(artifacts.join("containerd-config-dump.toml")).unwrap();
    let written =
        std::fs::read_to_string(artifacts.join("installed/etc/containerd/config.toml")).unwrap();
    assert!(
        written.contains(&format!("sandbox_image = \"{SANDBOX_IMAGE}\"")),
        "{written}"
    );
    assert!(
        dump.contains(&format!("sandbox_image = \"{SANDBOX_IMAGE}\"")),
        "{dump}"
    );
    // The sandbox image containerd's config names is in its k8s.io namespace, pulled from the
    // registry (with the ECR token as the registry's password) during first boot.
    let images = std::fs::read_to_string(artifacts.join("ctr-images.txt")).unwrap();
    assert!(
        images.lines().any(|l| l.starts_with(SANDBOX_IMAGE)),
        "{SANDBOX_IMAGE} not in containerd's k8s.io namespace:\n{images}; {fail_hint}"
    );
    assert!(
        registry.log().contains("/v2/eks/pause/manifests/"),
        "the registry saw no manifest request"
    );
    let kubelet = show(&artifacts, "kubelet.service");
    assert_eq!(kubelet["ActiveState"], "active", "{fail_hint}");
    assert_eq!(
        kubelet["FragmentPath"],
        "/etc/systemd/system/kubelet.service"
    );
    let journal = std::fs::read_to_string(artifacts.join("journal.txt")).unwrap();
    assert!(
        journal.contains("kubelet-stand-in: command line and files OK"),
        "{fail_hint}"
    );
    assert!(!journal.contains("kubelet-stand-in: FAIL"), "{fail_hint}");

    // Every request went through the proxy: Vault (CONNECT), Roles Anywhere (CONNECT), EKS
    // (plain http through the proxy), the API server (CONNECT).
    let access = squid.access_log();
    for (what, needle) in [
        ("Vault", format!("CONNECT {vault_name}:{}", bao.tls_port)),
        (
            "Roles Anywhere",
            format!("CONNECT {ra_name}:{}", ra.https_port),
        ),
        ("EKS", format!("http://{eks_name}:{moto_port}/clusters/")),
        ("API server", format!("CONNECT {api_name}:{}", api.port)),
        ("ECR", format!("POST http://{ecr_api_name}:{moto_port}/")),
        (
            "the registry",
            format!("CONNECT {ECR_REGISTRY}:{}", registry.port),
        ),
    ] {
        assert!(
            !VIA_PROXY || access.contains(&needle),
            "no {what} request in the proxy's log:\n{access}"
        );
    }

    // Timings for `make bench`.
    let times: std::collections::BTreeMap<String, String> =
        std::fs::read_to_string(artifacts.join("firstboot-times.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let us = |k: &str| {
        times
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let unit_s =
        (us("ExecMainExitTimestampMonotonic") - us("ExecMainStartTimestampMonotonic")) / 1e6;
    let boot_to_joined_s = us("ActiveEnterTimestampMonotonic") / 1e6;
    let timings = serde_json::json!({
        "guest": format!("systemd-{ARCH}"),
        "boot_to_joined_s": boot_to_joined_s,
        "firstboot_unit_s": unit_s,
        "note": "third boot (resumed after two power cuts); times from systemd's monotonic clock",
        "power_cut_1_s": cut1.as_secs_f64(),
        "power_cut_2_s": cut2.as_secs_f64(),
        "joined_wall_s": joined_wall.as_secs_f64(),
        "whole_run_s": total.as_secs_f64(),
        "root_build_s": root_build_s,
        "assemble_s": assemble_s,
    });
    std::fs::write(
        repo().join(format!("target/vm-artifacts/systemd-{ARCH}.json")),
        serde_json::to_string_pretty(&timings).unwrap(),
    )
    .unwrap();
    println!("systemd guest timings: {timings}");
}

#[test]
fn certificate_serials_convert_to_decimal_at_any_length() {
    assert_eq!(hex_to_decimal("0"), "0");
    assert_eq!(hex_to_decimal("ff"), "255");
    assert_eq!(hex_to_decimal("3b9aca00"), "1000000000");
    assert_eq!(
        hex_to_decimal("5907748dfc0d64e1c7c1a098b40d279d42579ee5"),
        "508266437159728252985753193500689097778305408741"
    );
}
