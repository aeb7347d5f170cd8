//! CLI behaviour that needs no peer: file keys, unknown schemes, handle ranges, help.
use crate::util;

use std::os::unix::fs::PermissionsExt;
use util::{dir_entries, run};

#[test]
fn file_key_create_is_idempotent_and_csr_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.pem");
    let key = key.to_str().unwrap();
    let first = run(&["key", "create", "--key", key], &[]);
    first.ok();
    let second = run(&["key", "create", "--key", key], &[]);
    second.ok();
    assert_eq!(first.stdout, second.stdout);
    let out = dir.path().join("req.pem");
    run(
        &[
            "csr",
            "--key",
            key,
            "--common-name",
            "node-7",
            "--dns-name",
            "node-7.example.com",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    let v = util::tool(
        "openssl",
        &[
            "req",
            "-in",
            out.to_str().unwrap(),
            "-verify",
            "-noout",
            "-subject",
        ],
        &[],
    );
    v.ok();
    assert!(
        v.stdout.contains("CN = node-7") || v.stdout.contains("CN=node-7"),
        "{}",
        v.stdout
    );
}

#[test]
fn unknown_scheme_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&["key", "create", "--key", "tpm:0x81000001"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown key reference scheme \"tpm\""),
        "{}",
        r.stderr
    );
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn handle_outside_persistent_range_is_refused() {
    let r = run(&["key", "create", "--key", "handle:0x80000001"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("outside the persistent owner range"),
        "{}",
        r.stderr
    );
}

#[test]
fn world_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.pem");
    run(&["key", "create", "--key", key.to_str().unwrap()], &[]).ok();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(
        &["csr", "--key", key.to_str().unwrap(), "--common-name", "n"],
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(dir_entries(dir.path()), vec!["node.pem"]);
}

#[test]
fn help_teaches_key_references_and_exit_codes() {
    let r = run(&["--help"], &[]);
    r.ok();
    for needle in [
        "handle:0x81000001",
        "pkcs11:token=",
        "EXIT CODES",
        "needs an operator",
    ] {
        assert!(r.stdout.contains(needle), "--help lacks {needle}");
    }
    assert_eq!(run(&["no-such-command"], &[]).code, 2);
}
