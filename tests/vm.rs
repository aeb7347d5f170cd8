//! The VM integration test (`make vm-test`): an aarch64 guest under qemu-system-aarch64 (TCG)
//! with swtpm attached as a TPM device runs `hybridboot firstboot` (the static aarch64 binary)
//! against peers on the host (OpenBao, the IAM Roles Anywhere test endpoint, moto for STS and
//! EKS) through QEMU user networking restricted to explicit loopback relays, up to the joined
//! stamp.
//!
//! Ignored by plain `cargo test` because it needs the static aarch64 build (`make static`) and
//! qemu-system-arm; `make vm-test` (part of `make test`) builds both and runs it with --ignored.
use crate::util as common;
use crate::util::openbao;

mod systemd;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

use common::peers::{MiniCa, Moto, RaOptions, RolesAnywhere};
use openbao::OpenBao;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The static binary for `arch` (`make static`), or `HYBRIDBOOT_STATIC_<ARCH>`.
pub(crate) fn static_binary(arch: &str) -> PathBuf {
    let bin = std::env::var_os(format!("HYBRIDBOOT_STATIC_{}", arch.to_ascii_uppercase()))
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(format!("target/dist/hybridboot-{arch}-static")));
    assert!(
        bin.exists(),
        "{} is missing: run `make static`",
        bin.display()
    );
    bin
}

/// The guest's job: `hybridboot firstboot` from the BootstrapConfig (key in the TPM device
/// through the native backend, enrollment with the host's OpenBao over TLS, the Roles Anywhere
/// check, init with a systemctl recorder), then a second run that must find the node joined;
/// everything the host checks goes to the console between markers.
const JOB: &str = r#"#!/bin/sh
set -u
mark() { echo "HB-MARK $*"; }
block() { echo "HB-$1-BEGIN"; cat "$2"; echo "HB-$1-END"; }
export HYBRIDBOOT_SYSTEMCTL=/usr/bin/systemctl-recorder
hybridboot firstboot --config-source file:///etc/hybridboot/config.yaml
mark firstboot-exit $?
[ -f /var/lib/hybridboot/joined ] && mark joined
hybridboot firstboot --config-source file:///etc/hybridboot/config.yaml 2>/tmp/again.log
mark firstboot-again-exit $?
grep -q "already joined" /tmp/again.log && mark already-joined
hybridboot status --json > /tmp/status.json
mark status-exit $?
hybridboot key show --key handle:0x81000001 > /tmp/pub.pem
# The node's AWS config as written by init: its credential_process line yields credentials
# (only whether it did goes to the console, never the secret).
cmd=$(sed -n 's/^credential_process = //p' /etc/aws/hybrid/config | head -n 1)
$cmd > /tmp/creds.json
mark credential-process-exit $?
grep -q '"Version": *1' /tmp/creds.json && grep -q '"SecretAccessKey": *"[^"]' /tmp/creds.json &&
  mark credential-process-json
block JOINED /var/lib/hybridboot/joined
block STATUS /tmp/status.json
block SYSTEMCTL /run/systemctl.log
block CERT /etc/iam/pki/server.pem
block PUB /tmp/pub.pem
block KUBELET-KUBECONFIG /var/lib/kubelet/kubeconfig
block AWS-CONFIG /etc/aws/hybrid/config
"#;

/// The guest's stand-in for systemctl: init's unit actions, one line each.
const SYSTEMCTL_RECORDER: &str = "#!/bin/sh\necho \"$*\" >> /run/systemctl.log\n";

/// The image's kubelet (init only asks its version).
const KUBELET: &str = "#!/bin/sh\necho Kubernetes v1.31.2\n";

/// Guest-side ports of the host services, all at 10.0.2.100 (see run-vm.sh).
const VAULT_PORT: u16 = 8200;
const RA_PORT: u16 = 8443;
const EKS_PORT: u16 = 5000;
const NODE: &str = "vm-node.example.com";

fn between<'a>(text: &'a str, begin: &str, end: &str) -> &'a str {
    let start = text
        .find(begin)
        .map(|i| i + begin.len())
        .unwrap_or_else(|| panic!("no {begin} in the console"));
    let stop = text[start..]
        .find(end)
        .map(|i| start + i)
        .unwrap_or(text.len());
    text[start..stop].trim_start_matches(['\r', '\n'])
}

/// The text the guest printed between `HB-<name>-BEGIN` and `HB-<name>-END`.
fn block(console: &str, name: &str) -> String {
    between(
        console,
        &format!("HB-{name}-BEGIN"),
        &format!("HB-{name}-END"),
    )
    .replace('\r', "")
}

#[test]
#[ignore = "needs the static aarch64 binary and qemu-system-arm: run `make vm-test`"]
fn aarch64_guest_first_boot_reaches_the_joined_stamp_against_host_peers() {
    guest_first_boot("aarch64");
}

#[test]
#[ignore = "needs the static x86_64 binary and qemu-system-x86: run `make vm-test`"]
fn x86_64_guest_first_boot_reaches_the_joined_stamp_against_host_peers() {
    guest_first_boot("x86_64");
}

/// Boots a guest of `arch` (aarch64: -M virt + tpm-tis-device; x86_64: -M q35 + tpm-crb) whose
/// job is [`JOB`], against fresh host peers, and checks what it printed.
fn guest_first_boot(arch: &str) {
    let bin = static_binary(arch);
    let vm_env = [("VM_ARCH", arch)];
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // The peers: OpenBao (PKI), moto (STS for the Roles Anywhere endpoint, EKS DescribeCluster
    // for init, both with signature checking), the Roles Anywhere endpoint trusting OpenBao's
    // PKI root. The cluster's endpoint and remote node network are the guest's side of QEMU's
    // user network, so init's node-IP check sees the guest inside it.
    let bao = OpenBao::start();
    let cluster_ca = MiniCa::root(w, "cluster-ca").cert;
    let moto = Moto::start_configured(
        &[
            "--eks-ca-file",
            cluster_ca.to_str().unwrap(),
            "--eks-endpoint",
            "https://10.0.2.100:6443",
        ],
        &["--remote-node-cidr", "10.0.2.0/24"],
    );
    // The endpoint's TLS certificate also names the guest's view of it, so the guest checks it
    // against spec.aws.caBundle like a private (VPC) endpoint.
    let ra = RolesAnywhere::start(
        &RaOptions::new(&[&bao.pki_root])
            .sts(&moto)
            .tls_names(&["rolesanywhere.hybridboot.test"]),
    );
    let moto_port = moto
        .endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/');

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
---
apiVersion: hybridboot/v1alpha1
kind: BootstrapConfig
spec:
  key:
    ref: handle:0x81000001
    tcti: device:/dev/tpmrm0
  vault:
    address: https://vault.hybridboot.test:{VAULT_PORT}
    caBundle: /etc/hybridboot/vault-ca.pem
    pkiMount: pki_int
    role: node
    ttl: 24h
    auth:
      tokenFile: /etc/hybridboot/vault-token
  aws:
    rolesAnywhereEndpoint: https://rolesanywhere.hybridboot.test:{RA_PORT}
    eksEndpoint: http://eks.hybridboot.test:{EKS_PORT}
    caBundle: /etc/hybridboot/aws-ca.pem
  timeouts:
    overall: 3m
    timeSync: 5s
",
        cluster = moto.cluster_name(),
        role = ra.role_arn,
        profile = ra.profile_arn,
        ta = ra.trust_anchor_arn,
    );
    // (host file, contents, guest path, mode)
    let hosts =
        "10.0.2.100 vault.hybridboot.test rolesanywhere.hybridboot.test eks.hybridboot.test\n";
    let files = [
        ("config.yaml", config, "/etc/hybridboot/config.yaml", 0o644),
        (
            "token",
            format!("{}\n", bao.node_token()),
            "/etc/hybridboot/vault-token",
            0o600,
        ),
        ("hosts", hosts.to_string(), "/etc/hosts.vm", 0o644),
        (
            "systemctl",
            SYSTEMCTL_RECORDER.to_string(),
            "/usr/bin/systemctl-recorder",
            0o755,
        ),
        ("kubelet", KUBELET.to_string(), "/usr/bin/kubelet", 0o755),
    ];
    let mut extra = vec![
        format!("{}=/etc/hybridboot/vault-ca.pem", bao.listener_ca.display()),
        format!("{}=/etc/hybridboot/aws-ca.pem", ra.tls_ca.display()),
    ];
    for (name, text, guest, mode) in &files {
        let host = w.join(name);
        std::fs::write(&host, text).unwrap();
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(*mode)).unwrap();
        extra.push(format!("{}={guest}", host.display()));
    }
    std::fs::write(w.join("job.sh"), JOB).unwrap();
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
    let b = common::tool("bash", &refs, &vm_env);
    assert_eq!(
        b.code, 0,
        "building the guest failed:\n{}{}",
        b.stdout, b.stderr
    );

    let started = Instant::now();
    let forwards = [
        format!("{VAULT_PORT}={}", bao.tls_port),
        format!("{RA_PORT}={}", ra.https_port),
        format!("{EKS_PORT}={moto_port}"),
    ];
    let mut run_args = vec![
        repo()
            .join("tests/vm/run-vm.sh")
            .to_string_lossy()
            .into_owned(),
        vm.to_string_lossy().into_owned(),
        "300".to_string(),
    ];
    run_args.extend(forwards.iter().cloned());
    let run_refs: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let r = common::tool("bash", &run_refs, &vm_env);
    let elapsed = started.elapsed();
    let console = std::fs::read_to_string(vm.join("console.log")).unwrap_or_default();
    if std::env::var_os("HB_VM_SHOW_CONSOLE").is_some() {
        println!("{console}");
    }
    println!(
        "vm {arch}: boot + first boot (key, enroll, Roles Anywhere, init) + poweroff in {:.1} s",
        elapsed.as_secs_f64()
    );
    for line in console.lines().filter(|l| l.starts_with("HB-MARK")) {
        println!("{line}");
    }
    if let Some(line) = console.lines().find(|l| l.contains("first boot done in")) {
        println!(
            "vm {arch}: {}",
            &line[line.find("first boot done").unwrap()..]
        );
    }
    assert_eq!(r.code, 0, "qemu failed:\n{}\nconsole:\n{console}", r.stderr);
    assert!(
        console.contains("HB-MARK tpm /dev/tpm0 /dev/tpmrm0"),
        "no TPM in the guest:\n{console}"
    );
    for mark in [
        "firstboot-exit 0",
        "joined",
        "firstboot-again-exit 0",
        "already-joined",
        "status-exit 0",
        "credential-process-exit 0",
        "credential-process-json",
        "job-exit 0",
    ] {
        assert!(
            console
                .lines()
                .any(|l| l.trim_end() == format!("HB-MARK {mark}")
                    || l.starts_with(&format!("HB-MARK {mark} "))),
            "missing {mark}:\n{console}"
        );
    }

    // The certificate chains to the PKI root and holds the key the guest's TPM reports.
    let cert = block(&console, "CERT");
    std::fs::write(w.join("node.pem"), &cert).unwrap();
    let node_pem = w.join("node.pem");
    let v = common::tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            bao.pki_root.to_str().unwrap(),
            "-untrusted",
            node_pem.to_str().unwrap(),
            node_pem.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let x509 = |what: &str| {
        common::tool(
            "openssl",
            &["x509", "-in", node_pem.to_str().unwrap(), "-noout", what],
            &[],
        )
        .stdout
    };
    let public = block(&console, "PUB");
    assert!(
        public.trim_end().ends_with(x509("-pubkey").trim_end()),
        "{public}"
    );
    assert!(x509("-subject").contains(NODE));

    // The stamp names the node and the certificate's serial.
    let serial = x509("-serial");
    let serial = serial
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let joined = block(&console, "JOINED");
    assert!(joined.starts_with(&format!("node {NODE}\n")), "{joined}");
    let stamped = joined
        .lines()
        .find_map(|l| l.strip_prefix("certificate serial "))
        .unwrap_or_else(|| panic!("no serial in the stamp: {joined}"))
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(
        stamped.trim_start_matches('0'),
        serial.trim_start_matches('0'),
        "{joined}"
    );

    // status: joined, every step done except install (binaries in the image), no error.
    let status: serde_json::Value =
        serde_json::from_str(&block(&console, "STATUS")).expect("status --json");
    assert_eq!(status["joined"], true, "{status}");
    assert!(status["lastError"].is_null(), "{status}");
    let steps: Vec<String> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["step"].as_str().unwrap(),
                s["state"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "key done",
            "enroll done",
            "roles-anywhere done",
            "install skipped",
            "init done"
        ]
    );

    // init started the node's units through the recorder, and its kubeconfig points at the
    // cluster endpoint DescribeCluster returned.
    let actions = block(&console, "SYSTEMCTL");
    assert!(
        actions.starts_with("daemon-reload\n") && actions.ends_with("restart kubelet.service\n"),
        "{actions}"
    );
    let aws_config = block(&console, "AWS-CONFIG");
    assert!(
        aws_config.contains(&format!(
            "--endpoint https://rolesanywhere.hybridboot.test:{RA_PORT} --ca-bundle /etc/hybridboot/aws-ca.pem"
        )),
        "{aws_config}"
    );
    let kubeconfig = block(&console, "KUBELET-KUBECONFIG");
    assert!(
        kubeconfig.contains("https://10.0.2.100:6443"),
        "{kubeconfig}"
    );

    // The peers saw the node: a successful CreateSession at the Roles Anywhere endpoint.
    let stats = ra.stats();
    assert!(stats["ok"].as_u64().unwrap_or(0) >= 1, "{stats}");

    write_busybox_timings(arch, &console, elapsed);
}

/// target/vm-artifacts/busybox-<arch>.json for `make bench`: the guest's uptime when its job
/// started, first boot's own time (its "first boot done in" line), their sum (boot to joined)
/// and the whole QEMU run.
fn write_busybox_timings(arch: &str, console: &str, elapsed: std::time::Duration) {
    let uptime_start = console
        .lines()
        .find_map(|l| l.split("uptime-start ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let firstboot_s = console
        .lines()
        .find_map(|l| l.split("first boot done in ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| ms / 1000.0);
    let timings = serde_json::json!({
        "guest": format!("busybox-{arch}"),
        "boot_to_joined_s": uptime_start.zip(firstboot_s).map(|(a, b)| a + b),
        "firstboot_s": firstboot_s,
        "boot_to_job_s": uptime_start,
        "whole_run_s": elapsed.as_secs_f64(),
        "note": "busybox initramfs, PID 1 a shell script; first boot run directly, systemctl recorded",
    });
    let dir = repo().join("target/vm-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("busybox-{arch}.json")),
        serde_json::to_string_pretty(&timings).unwrap(),
    )
    .unwrap();
}

#[test]
#[ignore = "needs the static aarch64 binary: run `make vm-test`"]
fn static_aarch64_binary_creates_a_tpm_key_under_qemu_user() {
    let bin = static_binary("aarch64");
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
    assert_eq!(
        common::verify_csr(&csr),
        common::public_key_block(&created.stdout)
    );
    println!(
        "static aarch64 binary: {} bytes",
        std::fs::metadata(&bin).unwrap().len()
    );
}
