//! The README's main command (`make run` -> scripts/run-main.sh) works on the embedded default:
//! a whole first boot into a temporary root with swtpm, a local OpenBao, the Roles Anywhere test
//! endpoint and moto.
use crate::util;

#[test]
fn main_job_runs_a_first_boot_into_a_temporary_root_and_shows_status() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run-main.sh");
    let tmp = tempfile::tempdir().unwrap();
    let r = util::tool(
        "bash",
        &[script.to_str().unwrap()],
        &[
            ("HYBRIDBOOT_BIN", util::bin().to_str().unwrap()),
            ("TMPDIR", tmp.path().to_str().unwrap()),
        ],
    );
    assert_eq!(r.code, 0, "main job failed:\n{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("created TPM key handle:0x81000001"),
        "{}",
        r.stderr
    );
    // The certificate chains to Vault's PKI root (openssl's own check).
    assert!(r.stderr.contains("server.pem: OK"), "{}", r.stderr);
    assert!(
        r.stderr.contains("subject=CN = node-1.hybrid.example.com"),
        "{}",
        r.stderr
    );
    // status on stdout: joined, the key and the certificate.
    for want in [
        "joined                 yes (/var/lib/hybridboot/joined)",
        "key                    handle:0x81000001 (ecdsa-p256)",
        "  subject              CN=node-1.hybrid.example.com",
        "step enroll            done",
        "step roles-anywhere    done",
        "step install           skipped: spec.install not set",
        "step init              done",
        "last error             -",
    ] {
        assert!(r.stdout.contains(want), "{want}:\n{}", r.stdout);
    }
    // One CreateSession (the Roles Anywhere endpoint verified it), init's DescribeCluster filled
    // the kubeconfig's server from moto, and systemd was asked to start the kubelet.
    for want in [
        "\"total\": 1, \"ok\": 1",
        "kubeconfig server: https://127.0.0.1:6443",
        "systemctl restart kubelet.service",
    ] {
        assert!(r.stderr.contains(want), "{want}:\n{}", r.stderr);
    }
}
