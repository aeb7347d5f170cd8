//! The README's main command (`make run` -> scripts/run-main.sh) works on the embedded default.
mod common;

#[test]
fn main_job_creates_a_tpm_key_and_prints_a_verifying_csr() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run-main.sh");
    let tmp = tempfile::tempdir().unwrap();
    let r = common::tool(
        "bash",
        &[script.to_str().unwrap()],
        &[
            ("HYBRIDBOOT_BIN", common::bin().to_str().unwrap()),
            ("TMPDIR", tmp.path().to_str().unwrap()),
        ],
    );
    assert_eq!(r.code, 0, "main job failed:\n{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("-----BEGIN CERTIFICATE REQUEST-----"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("self-signature verify OK"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("created TPM key handle:0x81000001"),
        "{}",
        r.stderr
    );
}
