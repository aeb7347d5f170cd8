//! The VM integration test (`make vm-test`): an aarch64 guest under qemu-system-aarch64 (TCG)
//! with swtpm attached as a TPM device runs the static aarch64 binary against peers on the host
//! (OpenBao), through QEMU user networking restricted to explicit loopback relays.
//!
//! Ignored by plain `cargo test` because it needs the static aarch64 build (`make static`) and
//! qemu-system-arm; `make vm-test` (part of `make test`) builds both and runs it with --ignored.
mod common;
#[path = "common/openbao.rs"]
mod openbao;

use std::path::PathBuf;
use std::time::Instant;

use openbao::OpenBao;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn static_binary() -> PathBuf {
    std::env::var_os("HYBRIDBOOT_STATIC_AARCH64")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/dist/hybridboot-aarch64-static"))
}

/// The guest's job: key in the TPM device through the native backend, CSR, enrollment with the
/// host's OpenBao over TLS, markers on the console.
const JOB: &str = r#"#!/bin/sh
set -u
export HYBRIDBOOT_TCTI=device:/dev/tpmrm0
mark() { echo "HB-MARK $*"; }
if hybridboot -v key create --key handle:0x81000001 > /tmp/pub.pem; then mark key-created; else mark key-failed; fi
if hybridboot key create --key handle:0x81000001 | cmp -s - /tmp/pub.pem; then mark key-idempotent; fi
if hybridboot enroll --vault-addr https://vault.hybridboot.test:8200 --vault-ca /etc/hybridboot/vault-ca.pem \
     --pki-mount pki_int --pki-role node --key handle:0x81000001 --common-name vm-node.example.com \
     --ttl 1h --vault-token-file /etc/hybridboot/token --certificate /var/lib/hybridboot/node.pem; then
  mark enrolled "$(grep -c 'BEGIN CERTIFICATE' /var/lib/hybridboot/node.pem)"
  echo "HB-CERT-BEGIN"; cat /var/lib/hybridboot/node.pem; echo "HB-CERT-END"
  echo "HB-PUB-BEGIN"; cat /tmp/pub.pem; echo "HB-PUB-END"
else
  mark enroll-failed
fi
"#;

fn between<'a>(text: &'a str, begin: &str, end: &str) -> &'a str {
    let start = text.find(begin).map(|i| i + begin.len()).unwrap_or(0);
    let stop = text[start..]
        .find(end)
        .map(|i| start + i)
        .unwrap_or(text.len());
    text[start..stop].trim_start_matches(['\r', '\n'])
}

#[test]
#[ignore = "needs the static aarch64 binary and qemu-system-arm: run `make vm-test`"]
fn aarch64_guest_creates_its_key_in_the_tpm_and_enrolls_with_vault() {
    let bin = static_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `make static`",
        bin.display()
    );
    let bao = OpenBao::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("job.sh"), JOB).unwrap();
    std::fs::write(w.join("token"), bao.node_token()).unwrap();
    std::fs::write(w.join("hosts"), "10.0.2.100 vault.hybridboot.test\n").unwrap();
    let extra = [
        format!("{}=/etc/hybridboot/vault-ca.pem", bao.listener_ca.display()),
        format!("{}=/etc/hybridboot/token", w.join("token").display()),
        format!("{}=/etc/hosts.vm", w.join("hosts").display()),
    ];
    let vm = w.join("vm");
    let mut args = vec![
        repo()
            .join("tests/vm/build-initramfs.sh")
            .to_string_lossy()
            .into_owned(),
        vm.to_string_lossy().into_owned(),
        bin.to_string_lossy().into_owned(),
        w.join("job.sh").to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = common::tool("bash", &refs, &[]);
    assert_eq!(
        b.code, 0,
        "building the guest failed:\n{}{}",
        b.stdout, b.stderr
    );

    let started = Instant::now();
    let forward = format!("8200={}", bao.tls_port);
    let r = common::tool(
        "bash",
        &[
            repo().join("tests/vm/run-vm.sh").to_str().unwrap(),
            vm.to_str().unwrap(),
            "300",
            &forward,
        ],
        &[],
    );
    let elapsed = started.elapsed();
    let console = std::fs::read_to_string(vm.join("console.log")).unwrap_or_default();
    println!(
        "vm: boot + job + poweroff in {:.1} s",
        elapsed.as_secs_f64()
    );
    for line in console.lines().filter(|l| l.starts_with("HB-MARK")) {
        println!("{line}");
    }
    assert_eq!(r.code, 0, "qemu failed:\n{}\nconsole:\n{console}", r.stderr);
    assert!(
        console.contains("HB-MARK tpm /dev/tpm0 /dev/tpmrm0"),
        "no TPM in the guest:\n{console}"
    );
    for mark in ["key-created", "key-idempotent", "enrolled 3", "job-exit 0"] {
        assert!(
            console.contains(&format!("HB-MARK {mark}")),
            "missing {mark}:\n{console}"
        );
    }
    // The host checks what the guest produced: the certificate chains to the PKI root and holds
    // the public key the guest's TPM reported.
    let cert = between(&console, "HB-CERT-BEGIN", "HB-CERT-END").replace('\r', "");
    let public = between(&console, "HB-PUB-BEGIN", "HB-PUB-END").replace('\r', "");
    std::fs::write(w.join("node.pem"), &cert).unwrap();
    let v = common::tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            bao.pki_root.to_str().unwrap(),
            "-untrusted",
            bao.pki_issuing.to_str().unwrap(),
            w.join("node.pem").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let k = common::tool(
        "openssl",
        &[
            "x509",
            "-in",
            w.join("node.pem").to_str().unwrap(),
            "-noout",
            "-pubkey",
        ],
        &[],
    );
    assert_eq!(k.stdout.trim(), public.trim());
}

#[test]
#[ignore = "needs the static aarch64 binary: run `make vm-test`"]
fn static_aarch64_binary_creates_a_tpm_key_under_qemu_user() {
    let bin = static_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `make static`",
        bin.display()
    );
    let file = common::tool("file", &[bin.to_str().unwrap()], &[]);
    assert!(file.stdout.contains("statically linked"), "{}", file.stdout);
    assert!(file.stdout.contains("aarch64"), "{}", file.stdout);
    let tpm = common::swtpm::Swtpm::start();
    let tcti = tpm.tcti();
    let work = tempfile::tempdir().unwrap();
    let csr = work.path().join("node.csr");
    let run = |args: &[&str]| {
        common::tool(
            "qemu-aarch64-static",
            &[&[bin.to_str().unwrap()], args].concat(),
            &[],
        )
    };
    let created = run(&[
        "key",
        "create",
        "--key",
        "handle:0x81000001",
        "--tcti",
        &tcti,
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let c = run(&[
        "csr",
        "--key",
        "handle:0x81000001",
        "--tcti",
        &tcti,
        "--common-name",
        "n1",
        "--out",
        csr.to_str().unwrap(),
    ]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let v = common::tool(
        "openssl",
        &[
            "req",
            "-in",
            csr.to_str().unwrap(),
            "-verify",
            "-noout",
            "-pubkey",
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert_eq!(v.stdout.trim(), created.stdout.trim());
    println!(
        "static aarch64 binary: {} bytes",
        std::fs::metadata(&bin).unwrap().len()
    );
}
