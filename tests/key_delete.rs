//! `key delete`: a TPM handle holding a key of the wrong algorithm (swtpm, checked with
//! tpm2-tools) and a decommissioned token object (SoftHSM2, checked with pkcs11-tool). Without
//! `--yes` it only says what it would delete and changes nothing.

#![cfg(any(feature = "tpm", feature = "pkcs11"))]
use crate::util;

#[cfg(feature = "tpm")]
#[test]
fn tpm_wrong_algorithm_handle_is_listed_then_deleted_with_yes() {
    use util::swtpm::Swtpm;
    use util::{run, tool};
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let handle = "handle:0x81000010";
    let key = |extra: &[&str]| {
        let mut args = vec!["key"];
        args.extend_from_slice(extra);
        args.extend(["--key", handle, "--tcti", &tcti]);
        run(&args, &[])
    };
    // An RSA key where the node wants ECDSA: create refuses to reuse it.
    key(&["create", "--algorithm", "rsa-2048"]).ok();
    let refused = key(&["create", "--algorithm", "ecdsa-p256"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    let show = key(&["show"]);
    show.ok();
    let fingerprint = show
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("# sha256: "))
        .unwrap()
        .to_string();

    // Without --yes: named, with algorithm and fingerprint, and still there.
    let dry = key(&["delete"]);
    assert_eq!(dry.code, 3, "{}", dry.stderr);
    assert!(
        dry.stdout.starts_with("would delete TPM handle:0x81000010")
            && dry.stdout.contains("RSA 2048-bit signing key, rsa-2048")
            && dry.stdout.contains(&fingerprint),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stderr.contains("pass --yes to delete"),
        "{}",
        dry.stderr
    );
    let env = [("TPM2TOOLS_TCTI", tcti.as_str())];
    tool("tpm2_readpublic", &["-c", "0x81000010"], &env).ok();

    // With --yes: gone for tpm2-tools too; the right key can be created in its place.
    let del = key(&["delete", "--yes"]);
    del.ok();
    assert!(
        del.stdout.starts_with("deleted TPM handle:0x81000010"),
        "{}",
        del.stdout
    );
    let gone = tool("tpm2_readpublic", &["-c", "0x81000010"], &env);
    assert_ne!(gone.code, 0, "{}", gone.stdout);
    key(&["create", "--algorithm", "ecdsa-p256"]).ok();

    // Nothing at the handle: an operator error naming it.
    let absent = run(
        &[
            "key",
            "delete",
            "--key",
            "handle:0x81000020",
            "--tcti",
            &tcti,
            "--yes",
        ],
        &[],
    );
    assert_eq!(absent.code, 3, "{}", absent.stderr);
    assert!(
        absent.stderr.contains("handle:0x81000020 does not exist"),
        "{}",
        absent.stderr
    );

    // A storage key (the parent of other keys) is never deleted, even with --yes.
    tpm.persist_storage_primary("0x81000001");
    let srk = run(
        &[
            "key",
            "delete",
            "--key",
            "handle:0x81000001",
            "--tcti",
            &tcti,
            "--yes",
        ],
        &[],
    );
    assert_eq!(srk.code, 3, "{}", srk.stderr);
    assert!(srk.stderr.contains("storage key"), "{}", srk.stderr);
    tool("tpm2_readpublic", &["-c", "0x81000001"], &env).ok();
}

#[cfg(feature = "pkcs11")]
#[test]
fn pkcs11_decommissioned_objects_are_listed_then_destroyed_with_yes() {
    use util::run;
    use util::softhsm::{SoftHsm, MODULE};
    let hsm = SoftHsm::new();
    let pin = "del-pin-4242";
    hsm.init_token("node", "so-pin-1", pin);
    let pin_file = hsm.write_pin_file(pin);
    let login = ["--token-label", "node", "--login", "--pin", pin];
    // The old node's key pair (P-384: not even usable here) and its certificate, same label/id.
    let mut gen = login.to_vec();
    gen.extend([
        "--keypairgen",
        "--key-type",
        "EC:secp384r1",
        "--label",
        "old-node",
        "--id",
        "0a0b",
    ]);
    hsm.pkcs11_tool(&gen).ok();
    let cert_key = hsm.dir().join("c.key");
    let cert_pem = hsm.dir().join("c.pem");
    util::x509::self_signed_ec(&cert_pem, &cert_key, "old-node", 1);
    let cert_der = util::x509::cert_to_der(&cert_pem);
    let mut write = login.to_vec();
    write.extend([
        "--write-object",
        cert_der.to_str().unwrap(),
        "--type",
        "cert",
        "--label",
        "old-node",
        "--id",
        "0a0b",
    ]);
    hsm.pkcs11_tool(&write).ok();
    // The current node's key, which must survive.
    let mut keep = login.to_vec();
    keep.extend([
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "node-key",
    ]);
    hsm.pkcs11_tool(&keep).ok();

    let reference = format!(
        "pkcs11:token=node;object=old-node?pin-source=file:{}",
        pin_file.display()
    );
    let delete = |extra: &[&str]| {
        let mut args = vec!["key", "delete", "--key", &reference, "--pkcs11-lib", MODULE];
        args.extend_from_slice(extra);
        run(&args, &hsm.env())
    };
    let list = || {
        let mut l = login.to_vec();
        l.push("--list-objects");
        hsm.pkcs11_tool(&l).stdout
    };

    let dry = delete(&[]);
    assert_eq!(dry.code, 3, "{}", dry.stderr);
    for want in [
        "would delete PKCS#11 private key EC curve secp384r1",
        "would delete PKCS#11 public key EC curve secp384r1",
        "would delete PKCS#11 certificate label \"old-node\" id \"0a0b\"",
    ] {
        assert!(dry.stdout.contains(want), "{want}: {}", dry.stdout);
    }
    assert_eq!(dry.stdout.lines().count(), 3, "{}", dry.stdout);
    assert!(
        dry.stderr.contains("3 object(s) listed above): pass --yes"),
        "{}",
        dry.stderr
    );
    assert!(!dry.stderr.contains(pin) && !dry.stdout.contains(pin));
    assert_eq!(
        list().matches("label:      old-node").count(),
        3,
        "{}",
        list()
    );

    let del = delete(&["--yes"]);
    del.ok();
    assert_eq!(
        del.stdout.matches("deleted PKCS#11").count(),
        3,
        "{}",
        del.stdout
    );
    let after = list();
    assert!(!after.contains("old-node"), "{after}");
    assert!(after.contains("node-key"), "{after}");

    // Again: nothing there. A URI without object= or id= would match the whole token.
    let again = delete(&["--yes"]);
    assert_eq!(again.code, 3, "{}", again.stderr);
    assert!(again.stderr.contains("does not exist"), "{}", again.stderr);
    let whole = format!("pkcs11:token=node?pin-source=file:{}", pin_file.display());
    let r = run(
        &[
            "key",
            "delete",
            "--key",
            &whole,
            "--pkcs11-lib",
            MODULE,
            "--yes",
        ],
        &hsm.env(),
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("name the key with object="),
        "{}",
        r.stderr
    );
    assert!(list().contains("node-key"));
}
