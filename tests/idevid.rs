//! Zero-secret enrollment with a factory identity (IEEE 802.1AR IDevID), against real peers:
//! swtpm (the node key and the IDevID key in one TPM, a second TPM for a foreign key), OpenBao
//! over TLS (the factory CA as a PKI mount of its own, TLS certificate auth, and the PKI role
//! whose `allowed_domains` is templated from the cert auth identity: the binding), the IAM Roles
//! Anywhere test endpoint and moto (STS, EKS DescribeCluster).
//!
//! The line side runs `hybridboot factory request` / `factory store` as the README describes;
//! the device holds no token, secret id or wrapping token anywhere.
#![cfg(any(feature = "tpm", feature = "tpm-native"))]
use crate::util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use util::config::{firstboot_yaml, BootstrapConfig, NodeConfig};
use util::openbao::OpenBao;
use util::peers::{MiniCa, Moto, RaOptions, RolesAnywhere};
use util::swtpm::Swtpm;
use util::{run, tool, Run};

pub(crate) const SERIAL: &str = "hb-0001";
pub(crate) const NODE_KEY: &str = "handle:0x81000001";
pub(crate) const IDEVID_KEY: &str = "handle:0x81000002";
pub(crate) const IDEVID_PEM: &str = "/etc/hybridboot/idevid.pem";

/// One site: Vault with the factory set-up, the device's TPM, the AWS side.
pub(crate) struct Site {
    pub(crate) bao: OpenBao,
    pub(crate) tpm: Swtpm,
    moto: Moto,
    ra: RolesAnywhere,
    dir: tempfile::TempDir,
}

/// `spec.vault.auth` (and `renewal`) lines of a device with its IDevID key at `key_ref`.
fn device_auth(key_ref: &str) -> String {
    format!(
        "      deviceCertificate:\n        keyRef: {key_ref}\n        certificate: {IDEVID_PEM}\n        role: factory-devices\n        mount: cert\n    renewal:\n      certAuthRole: device-nodes\n"
    )
}

impl Site {
    pub(crate) fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let (moto, _) = Moto::loopback_cluster(dir.path());
        let bao = OpenBao::start();
        bao.configure_factory();
        let ra = RolesAnywhere::start(&RaOptions::new(&[&bao.pki_root]).sts(&moto));
        // systemctl for init: records nothing, restarts nothing.
        let systemctl = dir.path().join("systemctl");
        std::fs::write(&systemctl, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        Site {
            bao,
            tpm: Swtpm::start(),
            moto,
            ra,
            dir,
        }
    }

    /// Runs hybridboot with `tpm` as the TPM, loopback off any proxy.
    pub(crate) fn hb(&self, tpm: &Swtpm, args: &[&str]) -> Run {
        let systemctl = self.dir.path().join("systemctl");
        run(
            args,
            &[
                ("HYBRIDBOOT_TCTI", &tpm.tcti()),
                ("NO_PROXY", "127.0.0.1"),
                ("no_proxy", "127.0.0.1"),
                ("HYBRIDBOOT_SYSTEMCTL", systemctl.to_str().unwrap()),
            ],
        )
    }

    /// The line side, step by step as in the README: the IDevID key and its CSR from `tpm`,
    /// signed by the factory CA for `ttl`; returns the CSR file and the signed PEM.
    pub(crate) fn manufacture(
        &self,
        tpm: &Swtpm,
        work: &Path,
        serial: &str,
        ttl: &str,
    ) -> (PathBuf, String) {
        std::fs::create_dir_all(work).unwrap();
        let csr = work.join("idevid.csr");
        self.hb(
            tpm,
            &[
                "factory",
                "request",
                "--key",
                IDEVID_KEY,
                "--serial-number",
                serial,
                "--out",
                csr.to_str().unwrap(),
            ],
        )
        .ok();
        let signed = self.bao.factory_sign(&csr, ttl);
        (csr, signed)
    }

    /// `factory store` of `signed` into the device's `root`.
    pub(crate) fn store(&self, tpm: &Swtpm, root: &Path, serial: &str, signed: &str) -> Run {
        let file = root.with_extension("signed.pem");
        std::fs::write(&file, signed).unwrap();
        let out = root.join(IDEVID_PEM.trim_start_matches('/'));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        self.hb(
            tpm,
            &[
                "factory",
                "store",
                "--key",
                IDEVID_KEY,
                "--serial-number",
                serial,
                "--signed",
                file.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
    }

    /// The device's configuration: node `node_name`, Vault over TLS with the IDevID auth at
    /// `idevid_key`, PKI role `device`, certificates of `ttl`. No secret file anywhere.
    pub(crate) fn configure(&self, root: &Path, node_name: &str, idevid_key: &str, ttl: &str) {
        let etc = root.join("etc/hybridboot");
        std::fs::create_dir_all(&etc).unwrap();
        util::config::seed_image(root, &self.ra.tls_ca);
        std::fs::copy(&self.bao.listener_ca, etc.join("vault-ca.pem")).unwrap();
        let node = NodeConfig {
            cluster: self.moto.cluster_name(),
            ..NodeConfig::moto_site(node_name, NODE_KEY).with_endpoint(&self.ra)
        };
        let boot = BootstrapConfig {
            vault_ca_bundle: Some("/etc/hybridboot/vault-ca.pem".into()),
            role: "device".into(),
            ttl: Some(ttl.into()),
            auth: device_auth(idevid_key),
            ..BootstrapConfig::site(
                NODE_KEY,
                &self.tpm.tcti(),
                &self.bao.https_addr(),
                &self.ra.endpoint(),
                &self.moto.endpoint,
            )
        };
        std::fs::write(etc.join("config.yaml"), firstboot_yaml(&node, &boot)).unwrap();
    }

    fn firstboot(&self, root: &Path) -> Run {
        let args = util::firstboot_args(root);
        let args: Vec<&str> = std::iter::once("-v")
            .chain(args.iter().map(String::as_str))
            .collect();
        self.hb(&self.tpm, &args)
    }

    fn renew(&self, root: &Path) -> Run {
        self.hb(
            &self.tpm,
            &[
                "-v",
                "renew",
                "--config-source",
                "file:///etc/hybridboot/config.yaml",
                "--root",
                root.to_str().unwrap(),
            ],
        )
    }
}

fn cert_path(root: &Path) -> PathBuf {
    root.join("etc/iam/pki/server.pem")
}

fn openssl_x509(path: &Path, what: &str) -> String {
    util::x509::x509_field(path, what).trim().to_string()
}

/// A serial in one form whatever the writer's (openssl's `serial=0A1B..`, Vault's `0a:1b:..`):
/// lowercase hex digits without separators or leading zeros.
fn plain_serial(s: &str) -> String {
    s.trim_start_matches("serial=")
        .replace(':', "")
        .trim_start_matches('0')
        .to_ascii_lowercase()
}

/// The serial of the first certificate in `path`.
fn serial_hex(path: &Path) -> String {
    plain_serial(&openssl_x509(path, "-serial"))
}

/// The last line of stderr, which must hold every needle; exit code 3.
fn assert_operator_error(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 3, "exit 3 expected\nstderr:\n{}", r.stderr);
    let line = r.stderr.lines().last().unwrap_or_default();
    eprintln!("exit {}: {line}", r.code);
    for n in needles {
        assert!(line.contains(n), "error line lacks {n:?}:\n{line}");
    }
}

fn status_json(root: &Path) -> serde_json::Value {
    let r = run(&["status", "--json", "--root", root.to_str().unwrap()], &[]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn factory_identity_first_boot_joins_without_any_secret_and_status_names_it() {
    let site = Site::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");

    // The line refuses the node key's handle for the factory identity.
    let r = site.hb(
        &site.tpm,
        &[
            "factory",
            "request",
            "--key",
            NODE_KEY,
            "--serial-number",
            SERIAL,
        ],
    );
    assert_operator_error(&r, &["is the node key's reference", "a key of its own"]);

    let (csr, signed) = site.manufacture(&site.tpm, work.path(), SERIAL, "8760h");
    let subject = tool(
        "openssl",
        &["req", "-in", csr.to_str().unwrap(), "-noout", "-subject"],
        &[],
    );
    assert!(
        subject.stdout.contains(&format!("CN = {SERIAL}"))
            && subject.stdout.contains(&format!("serialNumber = {SERIAL}")),
        "{}",
        subject.stdout
    );
    // Stored only for the serial it names.
    let r = site.store(&site.tpm, &root, "hb-0002", &signed);
    assert_operator_error(&r, &["not CN=hb-0002 with serialNumber=hb-0002"]);
    site.store(&site.tpm, &root, SERIAL, &signed).ok();
    let idevid = root.join(IDEVID_PEM.trim_start_matches('/'));
    let mode = std::fs::metadata(&idevid).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "a certificate is public");

    site.configure(&root, SERIAL, IDEVID_KEY, "24h");
    let started = Instant::now();
    let r = site.firstboot(&root);
    r.ok();
    println!(
        "first boot with the factory identity took {} ms",
        started.elapsed().as_millis()
    );
    assert!(root.join("var/lib/hybridboot/joined").exists());
    assert!(
        r.stderr
            .contains("logged in to Vault with the device certificate"),
        "{}",
        r.stderr
    );

    // The node certificate: for the node key (not the IDevID key), the device's own name,
    // chained to the PKI root.
    let cert = cert_path(&root);
    assert!(openssl_x509(&cert, "-subject").contains(&format!("CN = {SERIAL}")));
    let v = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            site.bao.pki_root.to_str().unwrap(),
            "-untrusted",
            cert.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let show = |key: &str| {
        let r = site.hb(&site.tpm, &["key", "show", "--key", key]);
        r.ok();
        util::public_key_block(&r.stdout)
    };
    assert_eq!(openssl_x509(&cert, "-pubkey"), show(NODE_KEY));
    assert_eq!(openssl_x509(&idevid, "-pubkey"), show(IDEVID_KEY));
    assert_ne!(show(NODE_KEY), show(IDEVID_KEY));

    // status names the identity that logged in.
    let s = status_json(&root);
    let login = &s["vaultLogin"];
    assert_eq!(login["method"], "device-certificate", "{s:#}");
    assert_eq!(login["role"], "factory-devices");
    assert_eq!(login["deviceSerialNumber"], SERIAL);
    assert_eq!(
        plain_serial(login["serial"].as_str().unwrap()),
        serial_hex(&idevid)
    );
    let subject = login["subject"].as_str().unwrap();
    assert!(subject.contains(&format!("CN={SERIAL}")), "{subject}");
    let text = run(&["status", "--root", root.to_str().unwrap()], &[]);
    text.ok();
    assert!(
        text.stdout
            .contains("vault login            device-certificate (role factory-devices)\n"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains(&format!("  device serial        {SERIAL}\n")),
        "{}",
        text.stdout
    );

    // Nothing on the device is a secret: no token, secret id or key file; /etc/hybridboot holds
    // the configuration, two CA bundles and the IDevID certificate.
    let mut etc = util::dir_entries(&root.join("etc/hybridboot"));
    etc.sort();
    assert_eq!(
        etc,
        ["aws-ca.pem", "config.yaml", "idevid.pem", "vault-ca.pem"],
        "{etc:?}"
    );
    for f in files(&root) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains("PRIVATE KEY"), "{}", f.display());
    }
}

#[test]
fn factory_identity_refusals_exit_3_naming_the_cause() {
    let site = Site::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (csr, signed) = site.manufacture(&site.tpm, &w.join("line"), SERIAL, "8760h");

    // Its own IDevID, another device's name: the PKI role's binding refuses.
    let other = w.join("other-name");
    site.store(&site.tpm, &other, SERIAL, &signed).ok();
    site.configure(&other, "hb-0002", IDEVID_KEY, "24h");
    let r = site.firstboot(&other);
    assert_operator_error(
        &r,
        &[
            "refuses CN \"hb-0002\" to the factory identity",
            "binds each device to its own name",
            "allowed_domains templated from the certificate-auth identity",
            "not allowed by this role",
        ],
    );
    assert!(!cert_path(&other).exists());
    assert_eq!(status_json(&other)["lastError"]["exitCode"], 3);

    // An IDevID from a CA that is not the factory CA (same key, same subject).
    let rogue = MiniCa::root(w, "rogue-factory-ca");
    let rogue_pem = w.join("rogue.pem");
    rogue.issue(&csr, &rogue_pem, -60, 86400);
    let not_factory = w.join("not-factory");
    let target = not_factory.join(IDEVID_PEM.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&rogue_pem, &target).unwrap();
    site.configure(&not_factory, SERIAL, IDEVID_KEY, "24h");
    let r = site.firstboot(&not_factory);
    assert_operator_error(
        &r,
        &[
            "Vault refused the device certificate",
            "role \"factory-devices\"",
            "the factory CA",
        ],
    );
    assert!(!cert_path(&not_factory).exists());

    // An expired IDevID from the factory CA itself.
    let expired = w.join("expired");
    let short = site.bao.factory_sign(&csr, "2s");
    let target = expired.join(IDEVID_PEM.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, &short).unwrap();
    let until = SystemTime::now() + Duration::from_secs(3);
    while SystemTime::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    site.configure(&expired, SERIAL, IDEVID_KEY, "24h");
    let r = site.firstboot(&expired);
    assert_operator_error(&r, &["has expired or is not yet valid", "not valid now"]);
    assert!(!cert_path(&expired).exists());

    // A factory certificate whose key is in another TPM (copied from another device).
    let elsewhere = Swtpm::start();
    let (_, foreign) = site.manufacture(&elsewhere, &w.join("line-2"), SERIAL, "8760h");
    let copied = w.join("copied");
    let target = copied.join(IDEVID_PEM.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, &foreign).unwrap();
    // (factory store refuses it too.)
    let r = site.store(&site.tpm, &w.join("copied-store"), SERIAL, &foreign);
    assert_operator_error(&r, &["is not for the factory identity key"]);
    site.configure(&copied, SERIAL, IDEVID_KEY, "24h");
    let r = site.firstboot(&copied);
    assert_operator_error(
        &r,
        &[
            "does not belong to the factory identity key",
            "another device",
        ],
    );
    assert!(!cert_path(&copied).exists());

    // No IDevID key at the configured handle in this TPM.
    let absent = w.join("absent");
    site.store(&site.tpm, &absent, SERIAL, &signed).ok();
    site.configure(&absent, SERIAL, "handle:0x81000003", "24h");
    let r = site.firstboot(&absent);
    assert_operator_error(
        &r,
        &[
            "the factory identity key handle:0x81000003",
            "not usable in this TPM",
        ],
    );
    assert!(!cert_path(&absent).exists());
}

#[test]
fn renewal_uses_the_node_certificate_and_falls_back_to_the_factory_identity_once_it_expired() {
    let site = Site::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let (_, signed) = site.manufacture(&site.tpm, &work.path().join("line"), SERIAL, "8760h");
    site.store(&site.tpm, &root, SERIAL, &signed).ok();
    // Short-lived node certificates: an appliance left off past their end.
    site.configure(&root, SERIAL, IDEVID_KEY, "10s");
    site.firstboot(&root).ok();
    let first = serial_hex(&cert_path(&root));

    // Due (a third of 40 s left at once) and valid: the node certificate logs in, no IDevID.
    let r = site.renew(&root);
    r.ok();
    assert!(
        r.stderr
            .contains("logged in to Vault with TLS certificate auth (role device-nodes)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("device certificate"), "{}", r.stderr);
    let second = serial_hex(&cert_path(&root));
    assert_ne!(first, second);
    // status: the node certificate that logged in was the first one.
    let login = status_json(&root)["vaultLogin"].clone();
    assert_eq!(login["method"], "certificate", "{login:#}");
    assert_eq!(login["role"], "device-nodes");
    assert_eq!(plain_serial(login["serial"].as_str().unwrap()), first);

    // Expired: the node certificate cannot log in any more; the factory identity does.
    let end = openssl_x509(&cert_path(&root), "-enddate");
    let end = end.trim_start_matches("notAfter=");
    let r = tool("date", &["-u", "-d", end, "+%s"], &[]);
    let end: u64 = r.stdout.trim().parse().unwrap();
    loop {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now > end + 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let r = site.renew(&root);
    r.ok();
    assert!(r.stderr.contains("no valid certificate"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("logged in to Vault with the device certificate"),
        "{}",
        r.stderr
    );
    let third = serial_hex(&cert_path(&root));
    assert_ne!(third, second);
    let login = status_json(&root)["vaultLogin"].clone();
    assert_eq!(login["method"], "device-certificate", "{login:#}");
    assert_eq!(login["deviceSerialNumber"], SERIAL);
    assert!(openssl_x509(&cert_path(&root), "-subject").contains(&format!("CN = {SERIAL}")));
    let check = tool(
        "openssl",
        &[
            "x509",
            "-in",
            cert_path(&root).to_str().unwrap(),
            "-noout",
            "-checkend",
            "0",
        ],
        &[],
    );
    assert_eq!(
        check.code, 0,
        "the new certificate is valid: {}",
        check.stdout
    );
}
