//! `hybridboot enroll` / `renew` against a real OpenBao server (see tests/util/openbao.rs).
//!
//! Scenarios take a [`Backend`] so that TPM (swtpm) and PKCS#11 (SoftHSM2) keys can run the same
//! scenarios as file keys once those backends land.
use crate::util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use util::openbao::OpenBao;
use util::softhsm::SoftHsm;
use util::swtpm::Swtpm;
use util::{run, tool, Run};

const CN: &str = "node-1.example.com";

/// Where the node key lives.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // TPM and PKCS#11 scenarios exist only with their cargo features
enum Backend {
    File,
    Tpm,
    Pkcs11,
}

/// A node key plus whatever the backend needs (environment, helper processes).
struct NodeKey {
    reference: String,
    env: Vec<(String, String)>,
    _tpm: Option<Swtpm>,
    _hsm: Option<SoftHsm>,
}

impl NodeKey {
    fn create(backend: Backend, dir: &Path) -> NodeKey {
        Self::create_alg(backend, "ecdsa-p256", dir)
    }

    fn create_alg(backend: Backend, algorithm: &str, dir: &Path) -> NodeKey {
        std::fs::create_dir_all(dir).unwrap();
        // Keep loopback traffic off any proxy the CI environment may define.
        let mut env: Vec<(String, String)> = ["no_proxy", "NO_PROXY"]
            .iter()
            .map(|k| (k.to_string(), "127.0.0.1,localhost".to_string()))
            .collect();
        let k = match backend {
            Backend::File => NodeKey {
                reference: dir.join("node-key.pem").display().to_string(),
                env,
                _tpm: None,
                _hsm: None,
            },
            Backend::Tpm => {
                let tpm = Swtpm::start();
                env.push(("HYBRIDBOOT_TCTI".into(), tpm.tcti()));
                NodeKey {
                    reference: "handle:0x81000010".into(),
                    env,
                    _tpm: Some(tpm),
                    _hsm: None,
                }
            }
            Backend::Pkcs11 => {
                let hsm = SoftHsm::new();
                hsm.init_token("node", "so-pin-1234", "user-pin-5678");
                let pin = hsm.write_pin_file("user-pin-5678");
                env.extend(hsm.hybridboot_env());
                NodeKey {
                    reference: format!(
                        "pkcs11:token=node;object=node?pin-source=file:{}",
                        pin.display()
                    ),
                    env,
                    _tpm: None,
                    _hsm: Some(hsm),
                }
            }
        };
        k.hb(&[
            "key",
            "create",
            "--key",
            &k.reference,
            "--algorithm",
            algorithm,
        ])
        .ok();
        k
    }

    /// Runs hybridboot with this key's environment.
    fn hb(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        run(args, &env)
    }

    /// Runs hybridboot with this key's environment plus `extra` (later entries win).
    fn hb_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        env.extend_from_slice(extra);
        run(args, &env)
    }

    /// `key show` as PEM (comment lines dropped).
    fn public_pem(&self) -> String {
        let r = self.hb(&["key", "show", "--key", &self.reference]);
        r.ok();
        r.stdout
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// One node's files and the flags every call shares.
struct Node {
    dir: tempfile::TempDir,
    key: NodeKey,
    cert: PathBuf,
    ca: PathBuf,
}

impl Node {
    fn new(backend: Backend) -> Node {
        Self::with_algorithm(backend, "ecdsa-p256")
    }

    fn with_algorithm(backend: Backend, algorithm: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::create_alg(backend, algorithm, dir.path());
        Node {
            cert: dir.path().join("node.crt"),
            ca: dir.path().join("ca.crt"),
            key,
            dir,
        }
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }

    /// `hybridboot <cmd>` with the common flags over TLS plus `extra`.
    fn cmd(&self, bao: &OpenBao, cmd: &str, extra: &[&str]) -> Run {
        self.cmd_at(&Target::of(bao), cmd, extra)
    }

    /// Defaults for every flag; a flag given in `extra` replaces its default.
    fn cmd_at(&self, target: &Target, cmd: &str, extra: &[&str]) -> Run {
        let defaults = [
            ("--vault-addr", target.addr.clone()),
            ("--vault-ca", target.ca.display().to_string()),
            ("--pki-mount", "pki_int".into()),
            ("--pki-role", "node".into()),
            ("--key", self.key.reference.clone()),
            ("--common-name", CN.into()),
            ("--certificate", self.cert.display().to_string()),
            ("--ca-certificate", self.ca.display().to_string()),
            ("--timeout", "20s".into()),
        ];
        let mut args = vec![cmd.to_string()];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.push(flag.to_string());
                args.push(value);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.key.hb(&refs)
    }

    fn enroll_with_token(&self, bao: &OpenBao) -> Run {
        let tf = self.file("token", &bao.node_token());
        self.cmd(bao, "enroll", &["--vault-token-file", &tf])
    }

    fn cert_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.cert).unwrap()
    }
}

/// Where and how to reach Vault over TLS (owned, so a server can move to another thread).
struct Target {
    addr: String,
    ca: PathBuf,
}

impl Target {
    fn of(bao: &OpenBao) -> Target {
        Target {
            addr: bao.https_addr(),
            ca: bao.listener_ca.clone(),
        }
    }
}

/// `openssl x509` field of the first certificate in `path`.
fn openssl_x509(path: &Path, what: &str) -> String {
    util::x509::x509_field(path, what)
}

fn serial(path: &Path) -> String {
    openssl_x509(path, "-serial").trim().to_string()
}

/// Checks the certificate file: leaf first, chain verifies to the PKI root with openssl, key is
/// the node key, CN is right.
fn assert_good_certificate(node: &Node, bao: &OpenBao) {
    let text = std::fs::read_to_string(&node.cert).unwrap();
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
    let blocks: Vec<&str> = text
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(blocks.len(), 3, "leaf, issuing CA, root: {text}");
    let chain = node.dir.path().join("untrusted.pem");
    std::fs::write(&chain, blocks[1..].concat()).unwrap();
    let v = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            bao.pki_root.to_str().unwrap(),
            "-untrusted",
            chain.to_str().unwrap(),
            node.cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(v.code, 0, "openssl verify: {}{}", v.stdout, v.stderr);
    assert_eq!(openssl_x509(&node.cert, "-pubkey"), node.key.public_pem());
    assert!(
        openssl_x509(&node.cert, "-subject").contains(&format!("CN = {CN}")),
        "subject"
    );
    // No duplicate of the issuing CA; the CA file holds issuing CA then root.
    let issuing = std::fs::read_to_string(&bao.pki_issuing).unwrap();
    assert_eq!(text.matches(issuing.trim()).count(), 1);
    let ca = std::fs::read_to_string(&node.ca).unwrap();
    assert!(
        ca.starts_with(issuing.trim()),
        "CA file starts with the issuing CA"
    );
    assert_eq!(ca, blocks[1..].concat());
}

/// A one-line error (the last line of stderr) containing every needle.
fn assert_error(r: &Run, needles: &[&str]) {
    r.failed();
    let line = r.stderr.lines().last().unwrap_or_default();
    eprintln!("exit {}: {line}", r.code);
    for n in needles {
        assert!(
            line.contains(n),
            "error line lacks {n:?}:\n{line}\n(full stderr:\n{})",
            r.stderr
        );
    }
}

/// The `next-renewal:` time of `enroll`/`renew`'s labelled output (which also names the serial
/// in Vault's colon form and the expiry).
fn rfc3339_line(r: &Run) -> String {
    let labels: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.split_once(": ").map(|(k, _)| k).unwrap_or(l))
        .collect();
    assert_eq!(
        labels,
        ["serial", "not-after", "next-renewal"],
        "{}",
        r.stdout
    );
    let serial = r
        .stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("serial: ");
    assert!(
        serial
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit())),
        "serial in Vault's form: {serial}"
    );
    let line = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("next-renewal: "))
        .unwrap()
        .to_string();
    assert_eq!(line.len(), 20, "RFC 3339: {line:?}");
    assert!(line.ends_with('Z') && line.as_bytes()[10] == b'T', "{line}");
    line
}

// --------------------------------------------------------------------------------------------

fn enroll_approle_then_renew_with_cert_auth(backend: Backend, algorithm: &str) {
    let bao = OpenBao::start();
    let node = Node::with_algorithm(backend, algorithm);
    let role_id = node.file("role-id", &bao.role_id);
    let secret = node.file("secret-id", &format!("{}\n", bao.wrapped_secret_id()));

    let t = Instant::now();
    let r = node.cmd(
        &bao,
        "enroll",
        &[
            "--approle-role-id-file",
            &role_id,
            "--approle-secret-id-file",
            &secret,
            "--secret-id-wrapped",
            "--ttl",
            "1h",
            "-v",
        ],
    );
    let wall = t.elapsed();
    r.ok();
    // One request each: unwrap, AppRole login, sign.
    let requests = r.stderr.matches(" -> 200 (").count();
    eprintln!(
        "enroll ({backend:?} {algorithm}, AppRole wrapped, TLS): {wall:?} wall, {requests} requests"
    );
    assert_eq!(requests, 3, "{}", r.stderr);
    rfc3339_line(&r);
    assert_good_certificate(&node, &bao);
    assert!(
        !Path::new(&secret).exists(),
        "one-time secret id file removed"
    );
    let first = serial(&node.cert);

    // Renew now (--renew-before 1.0), with only cert auth: no stored secret is left.
    let r = node.cmd(
        &bao,
        "renew",
        &[
            "--cert-auth-role",
            "node",
            "--renew-before",
            "1.0",
            "--ttl",
            "1h",
        ],
    );
    r.ok();
    rfc3339_line(&r);
    assert!(r.stderr.contains("TLS certificate auth"), "{}", r.stderr);
    assert_good_certificate(&node, &bao);
    assert_ne!(serial(&node.cert), first, "a new certificate");
}

#[test]
fn file_key_enroll_approle_wrapped_then_renew_with_cert_auth() {
    enroll_approle_then_renew_with_cert_auth(Backend::File, "ecdsa-p256");
}

/// RSA client keys sign PKCS#1 v1.5, so mutual TLS runs over TLS 1.2.
#[test]
fn file_rsa_key_enroll_approle_wrapped_then_renew_with_cert_auth() {
    enroll_approle_then_renew_with_cert_auth(Backend::File, "rsa-2048");
}

#[cfg(feature = "tpm")]
#[test]
fn tpm_key_enroll_approle_wrapped_then_renew_with_cert_auth() {
    enroll_approle_then_renew_with_cert_auth(Backend::Tpm, "ecdsa-p256");
}

#[cfg(feature = "pkcs11")]
#[test]
fn pkcs11_key_enroll_approle_wrapped_then_renew_with_cert_auth() {
    enroll_approle_then_renew_with_cert_auth(Backend::Pkcs11, "ecdsa-p256");
}

fn renew_is_a_no_op_while_young_and_renews_when_due(backend: Backend) {
    let bao = OpenBao::start();
    let node = Node::new(backend);
    let tf = node.file("token", &bao.node_token());
    node.cmd(&bao, "enroll", &["--vault-token-file", &tf, "--ttl", "1h"])
        .ok();
    let before = node.cert_bytes();
    let mtime = std::fs::metadata(&node.cert).unwrap().mtime_nsec();
    let first = serial(&node.cert);

    // Young: nothing changes, and the renewal time is ~40 minutes after issue (1/3 remaining).
    std::thread::sleep(Duration::from_millis(20));
    let r = node.cmd(&bao, "renew", &["--cert-auth-role", "node", "--ttl", "1h"]);
    r.ok();
    let due = rfc3339_line(&r);
    assert_eq!(node.cert_bytes(), before);
    assert_eq!(std::fs::metadata(&node.cert).unwrap().mtime_nsec(), mtime);
    let not_after = openssl_x509(&node.cert, "-enddate");
    assert!(!due.is_empty() && !not_after.is_empty());

    // Past its renewal point: a short-lived certificate (ttl 90s, renew when < 90% remains).
    node.cmd(&bao, "enroll", &["--vault-token-file", &tf, "--ttl", "90s"])
        .ok();
    let short = serial(&node.cert);
    assert_ne!(short, first);
    let r = node.cmd(
        &bao,
        "renew",
        &[
            "--cert-auth-role",
            "node",
            "--renew-before",
            "0.99",
            "--ttl",
            "90s",
        ],
    );
    r.ok();
    let renewed = serial(&node.cert);
    assert_ne!(renewed, short, "renewed");
    assert_good_certificate(&node, &bao);

    // Cert auth refused (no such cert role): renew falls back to the token also given.
    let r = node.cmd(
        &bao,
        "renew",
        &[
            "--cert-auth-role",
            "nosuchrole",
            "--vault-token-file",
            &tf,
            "--renew-before",
            "1.0",
        ],
    );
    r.ok();
    assert!(
        r.stderr.contains("trying the next configured auth method"),
        "{}",
        r.stderr
    );
    assert_ne!(serial(&node.cert), renewed);
    assert_good_certificate(&node, &bao);
}

#[test]
fn file_key_renew_is_a_no_op_while_young_and_renews_when_due() {
    renew_is_a_no_op_while_young_and_renews_when_due(Backend::File);
}

#[cfg(feature = "tpm")]
#[test]
fn tpm_key_renew_is_a_no_op_while_young_and_renews_when_due() {
    renew_is_a_no_op_while_young_and_renews_when_due(Backend::Tpm);
}

#[cfg(feature = "pkcs11")]
#[test]
fn pkcs11_key_renew_is_a_no_op_while_young_and_renews_when_due() {
    renew_is_a_no_op_while_young_and_renews_when_due(Backend::Pkcs11);
}

/// Negative cases against one server; each must leave the existing certificate intact.
fn refusals_leave_the_certificate_intact(backend: Backend) {
    let bao = OpenBao::start();
    let node = Node::new(backend);
    node.enroll_with_token(&bao).ok();
    let good = node.cert_bytes();
    let good_ca = std::fs::read(&node.ca).unwrap();
    let intact = |what: &str| {
        assert_eq!(node.cert_bytes(), good, "{what}: certificate changed");
        assert_eq!(
            std::fs::read(&node.ca).unwrap(),
            good_ca,
            "{what}: CA file changed"
        );
    };
    let tf = node.file("token2", &bao.node_token());

    // CN outside allowed_domains.
    let r = node.cmd(
        &bao,
        "enroll",
        &[
            "--vault-token-file",
            &tf,
            "--common-name",
            "node-1.evil.org",
        ],
    );
    assert_error(
        &r,
        &[
            "Vault at https://127.0.0.1",
            "does not allow",
            "node-1.evil.org",
        ],
    );
    assert_eq!(r.code, 3);
    intact("CN outside allowed_domains");

    // TTL above max_ttl (72h).
    let r = node.cmd(
        &bao,
        "enroll",
        &["--vault-token-file", &tf, "--ttl", "100h"],
    );
    assert_error(&r, &["max_ttl", "100h", "72h"]);
    intact("TTL above max_ttl");

    // Unknown role (asked with a token allowed everywhere: the policy is not what fails).
    let root = node.file("root-token", &bao.root_token);
    let r = node.cmd(
        &bao,
        "enroll",
        &["--vault-token-file", &root, "--pki-role", "nosuchrole"],
    );
    assert_error(&r, &["no PKI role \"nosuchrole\""]);
    // Without that permission, the same request is a permission error naming the path.
    let r = node.cmd(
        &bao,
        "enroll",
        &["--vault-token-file", &tf, "--pki-role", "nosuchrole"],
    );
    assert_error(&r, &["permission denied", "pki_int/sign/nosuchrole"]);
    intact("unknown role");

    // Revoked token, and a token that never existed.
    let revoked = bao.node_token();
    bao.revoke(&revoked);
    let rf = node.file("revoked", &revoked);
    let r = node.cmd(&bao, "enroll", &["--vault-token-file", &rf]);
    assert_error(&r, &["permission denied", "pki_int/sign/node"]);
    intact("revoked token");
    let bogus = node.file("bogus", "s.notarealtoken000000000000");
    let r = node.cmd(&bao, "enroll", &["--vault-token-file", &bogus]);
    assert_error(&r, &["permission denied"]);
    intact("invalid token");

    // Wrong CA bundle: the PKI root did not issue the listener's certificate.
    let r = node.cmd(
        &bao,
        "enroll",
        &[
            "--vault-token-file",
            &tf,
            "--vault-ca",
            bao.pki_root.to_str().unwrap(),
        ],
    );
    assert_error(&r, &["TLS certificate verification", "127.0.0.1"]);
    assert_eq!(r.code, 3, "not worth retrying");
    intact("wrong CA bundle");

    // A used-up wrapping token.
    let wrapped = bao.wrapped_secret_id();
    let unwrap = bao.ok(&["unwrap", "-field=secret_id", &wrapped]);
    assert!(!unwrap.trim().is_empty());
    let role_id = node.file("role-id", &bao.role_id);
    let sf = node.file("secret-id", &wrapped);
    let r = node.cmd(
        &bao,
        "enroll",
        &[
            "--approle-role-id-file",
            &role_id,
            "--approle-secret-id-file",
            &sf,
            "--secret-id-wrapped",
        ],
    );
    assert_error(&r, &["wrapping token", "already used"]);
    intact("used wrapping token");

    // Sealed: reported as such, exit 4 (retry later), after the retry deadline.
    bao.seal();
    let r = node.cmd(
        &bao,
        "enroll",
        &["--vault-token-file", &tf, "--timeout", "2s"],
    );
    assert_error(&r, &["is sealed"]);
    assert_eq!(r.code, 4);
    intact("sealed");
    bao.unseal();

    // Unreachable: nothing listens there.
    let port = util::free_port();
    let r = node.key.hb(&[
        "enroll",
        "--vault-addr",
        &format!("http://127.0.0.1:{port}"),
        "--pki-mount",
        "pki_int",
        "--pki-role",
        "node",
        "--key",
        &node.key.reference,
        "--common-name",
        CN,
        "--certificate",
        node.cert.to_str().unwrap(),
        "--vault-token-file",
        &tf,
        "--timeout",
        "2s",
    ]);
    assert_error(&r, &[&format!("127.0.0.1:{port}"), "Connection refused"]);
    assert_eq!(r.code, 4);
    intact("unreachable");
}

#[test]
fn file_key_refusals_leave_the_certificate_intact() {
    refusals_leave_the_certificate_intact(Backend::File);
}

fn stopped_then_restarted_vault_is_retried(backend: Backend) {
    let mut bao = OpenBao::start();
    let node = Node::new(backend);
    node.enroll_with_token(&bao).ok();
    let old_serial = serial(&node.cert);
    let tf = node.file("token2", &bao.node_token());
    let target = Target::of(&bao);
    bao.stop();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        bao.restart();
        bao
    });
    let t = Instant::now();
    let r = node.cmd_at(
        &target,
        "enroll",
        &["--vault-token-file", &tf, "--timeout", "45s", "-v"],
    );
    let took = t.elapsed();
    let bao = restarter.join().unwrap();
    r.ok();
    assert!(r.stderr.contains("attempt"), "retried: {}", r.stderr);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(45),
        "{took:?}"
    );
    eprintln!("enroll across a restart took {took:?}");
    assert_ne!(serial(&node.cert), old_serial);
    assert_good_certificate(&node, &bao);
}

#[test]
fn file_key_stopped_then_restarted_vault_is_retried() {
    stopped_then_restarted_vault_is_retried(Backend::File);
}

/// A plain-http proxy in front of OpenBao that swaps the CSR of every sign request for another
/// key's CSR: Vault then returns a genuine certificate, correctly chained, for the wrong key.
struct ForgingProxy {
    port: u16,
}

impl ForgingProxy {
    fn start(upstream: u16, foreign_csr: String) -> ForgingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut client) = conn else { return };
                let csr = foreign_csr.clone();
                std::thread::spawn(move || {
                    let _ = forward(&mut client, upstream, &csr);
                });
            }
        });
        ForgingProxy { port }
    }
}

fn forward(client: &mut TcpStream, upstream: u16, csr: &str) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut body = buf[head_end..].to_vec();
    let mut head_out = head.clone();
    if head.lines().next().unwrap_or("").contains("/sign/") {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["csr"] = serde_json::Value::String(csr.to_string());
        body = serde_json::to_vec(&v).unwrap();
        head_out = head
            .lines()
            .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("content-length:"))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
            + &format!("Content-Length: {}\r\n\r\n", body.len());
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(head_out.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    client.write_all(&resp)?;
    Ok(())
}

fn certificate_for_another_key_is_refused(backend: Backend) {
    let bao = OpenBao::start();
    let node = Node::new(backend);
    node.enroll_with_token(&bao).ok();
    let good = node.cert_bytes();
    let other = NodeKey::create(Backend::File, &node.dir.path().join("other"));
    let csr = other.hb(&["csr", "--key", &other.reference, "--common-name", CN]);
    csr.ok();
    let proxy = ForgingProxy::start(bao.http_port, csr.stdout.clone());
    let tf = node.file("token2", &bao.node_token());
    let r = node.key.hb(&[
        "enroll",
        "--vault-addr",
        &format!("http://127.0.0.1:{}", proxy.port),
        "--pki-mount",
        "pki_int",
        "--pki-role",
        "node",
        "--key",
        &node.key.reference,
        "--common-name",
        CN,
        "--certificate",
        node.cert.to_str().unwrap(),
        "--vault-token-file",
        &tf,
    ]);
    assert_error(&r, &["public key is not the node key"]);
    assert_eq!(node.cert_bytes(), good);
}

#[test]
fn file_key_certificate_for_another_key_is_refused() {
    certificate_for_another_key_is_refused(Backend::File);
}

fn no_secret_in_stderr_at_highest_verbosity(backend: Backend) {
    let bao = OpenBao::start();
    let node = Node::new(backend);
    let role_id = node.file("role-id", &bao.role_id);
    let mut secrets = vec![bao.role_id.clone(), bao.root_token.clone()];

    // Wrapped secret id.
    let wrapping = bao.wrapped_secret_id();
    secrets.push(wrapping.clone());
    let sf = node.file("secret-id", &wrapping);
    let r1 = node.cmd(
        &bao,
        "enroll",
        &[
            "-vvv",
            "--approle-role-id-file",
            &role_id,
            "--approle-secret-id-file",
            &sf,
            "--secret-id-wrapped",
        ],
    );
    r1.ok();
    // Plain secret id.
    let plain = bao.secret_id();
    secrets.push(plain.clone());
    let sf = node.file("secret-id", &plain);
    let r2 = node.cmd(
        &bao,
        "enroll",
        &[
            "-vvv",
            "--approle-role-id-file",
            &role_id,
            "--approle-secret-id-file",
            &sf,
        ],
    );
    r2.ok();
    // Token file, and a failing token (errors must not echo it either).
    let token = bao.node_token();
    secrets.push(token.clone());
    let tf = node.file("token", &token);
    let r3 = node.cmd(&bao, "enroll", &["-vvv", "--vault-token-file", &tf]);
    r3.ok();
    let bad = "s.thisIsAnInvalidTokenValue42";
    secrets.push(bad.to_string());
    let bf = node.file("bad", bad);
    let r4 = node.cmd(&bao, "enroll", &["-vvv", "--vault-token-file", &bf]);
    r4.failed();
    // Cert auth renewal at -vvv.
    let r5 = node.cmd(
        &bao,
        "renew",
        &["-vvv", "--cert-auth-role", "node", "--renew-before", "1.0"],
    );
    r5.ok();
    for r in [&r1, &r2, &r3, &r4, &r5] {
        assert!(
            r.stderr.contains("debug") || r.stderr.contains("trace"),
            "verbose output expected: {}",
            r.stderr
        );
        for s in &secrets {
            assert!(
                !r.stderr.contains(s.as_str()),
                "secret leaked in stderr:\n{}",
                r.stderr
            );
            assert!(!r.stdout.contains(s.as_str()), "secret leaked in stdout");
        }
    }
}

#[test]
fn file_key_no_secret_in_stderr_at_highest_verbosity() {
    no_secret_in_stderr_at_highest_verbosity(Backend::File);
}

/// A CONNECT-only proxy on loopback that records the tunnels it opened.
struct ConnectProxy {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(client) = conn else { return };
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = tunnel(client, &log);
                });
            }
        });
        ConnectProxy { port, seen }
    }
}

fn tunnel(mut client: TcpStream, log: &std::sync::Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    log.lock().unwrap().push(line.clone());
    let target = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    // Loopback only.
    if !line.starts_with("CONNECT 127.0.0.1:") {
        client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")?;
        return Ok(());
    }
    let upstream = TcpStream::connect(&target)?;
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let (mut u, mut c) = (upstream, client);
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
    Ok(())
}

/// HTTPS_PROXY: the TLS session to Vault is tunnelled with CONNECT (and verified end to end);
/// NO_PROXY still bypasses it.
#[test]
fn file_key_enroll_through_an_https_proxy() {
    let bao = OpenBao::start();
    let node = Node::new(Backend::File);
    let proxy = ConnectProxy::start();
    let tf = node.file("token", &bao.node_token());
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let args = [
        "enroll",
        "--vault-addr",
        &bao.https_addr(),
        "--vault-ca",
        bao.listener_ca.to_str().unwrap(),
        "--pki-mount",
        "pki_int",
        "--pki-role",
        "node",
        "--key",
        &node.key.reference,
        "--common-name",
        CN,
        "--certificate",
        node.cert.to_str().unwrap(),
        "--ca-certificate",
        node.ca.to_str().unwrap(),
        "--vault-token-file",
        &tf,
    ];
    node.key
        .hb_env(
            &args,
            &[
                ("HTTPS_PROXY", &proxy_url),
                ("no_proxy", ""),
                ("NO_PROXY", ""),
            ],
        )
        .ok();
    assert_good_certificate(&node, &bao);
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![format!("CONNECT 127.0.0.1:{} HTTP/1.1", bao.tls_port)],
        "one tunnel for the one sign request"
    );
    // NO_PROXY naming the host: direct connection, the proxy sees nothing more.
    node.key
        .hb_env(
            &args,
            &[("HTTPS_PROXY", &proxy_url), ("no_proxy", "127.0.0.1")],
        )
        .ok();
    assert_eq!(proxy.seen.lock().unwrap().len(), 1);
}

/// Vault's own environment variables are the defaults of the flags.
#[test]
fn file_key_enroll_from_vault_environment_variables() {
    let bao = OpenBao::start();
    let node = Node::new(Backend::File);
    let token = bao.node_token();
    let r = node.key.hb_env(
        &[
            "enroll",
            "--pki-mount",
            "pki_int",
            "--pki-role",
            "node",
            "--key",
            &node.key.reference,
            "--common-name",
            CN,
            "--certificate",
            node.cert.to_str().unwrap(),
            "--ca-certificate",
            node.ca.to_str().unwrap(),
        ],
        &[
            ("VAULT_ADDR", &bao.https_addr()),
            ("VAULT_CACERT", bao.listener_ca.to_str().unwrap()),
            ("VAULT_TOKEN", &token),
            ("VAULT_NAMESPACE", ""),
        ],
    );
    r.ok();
    assert_good_certificate(&node, &bao);
    // Without any auth method: a clear operator error, no network needed.
    let r = node.key.hb_env(
        &[
            "enroll",
            "--pki-role",
            "node",
            "--key",
            &node.key.reference,
            "--common-name",
            CN,
            "--certificate",
            node.cert.to_str().unwrap(),
        ],
        &[("VAULT_ADDR", "https://127.0.0.1:1"), ("VAULT_TOKEN", "")],
    );
    assert_error(&r, &["no Vault auth method"]);
    assert_eq!(r.code, 3);
}
