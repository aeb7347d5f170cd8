//! The TPM 2.0 backend against a real (software) TPM: swtpm, checked independently with
//! tpm2-tools, tpm2-openssl and openssl.
#![cfg(feature = "tpm")]
use crate::util;

use std::path::Path;
use std::time::{Duration, Instant};

use util::swtpm::Swtpm;
use util::{dir_entries, run, tool, Run};

const HANDLE: &str = "handle:0x81000010";

fn timed(args: &[&str], env: &[(&str, &str)]) -> (Run, Duration) {
    let t = Instant::now();
    let r = run(args, env);
    (r, t.elapsed())
}

/// The PEM public key lines of a `key show` / `key create` output (without `#` comments).
fn pem_only(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn csr_args<'a>(key: &'a str, tcti: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "csr",
        "--key",
        key,
        "--tcti",
        tcti,
        "--common-name",
        "node-1",
        "--dns-name",
        "node-1.example.com",
        "--ip-address",
        "10.1.2.3",
        "--out",
        out,
    ]
}

/// Checks a CSR file with openssl: signature, subject, SANs; returns its public key PEM.
fn check_csr(path: &Path) -> String {
    let p = path.to_str().unwrap();
    let v = tool(
        "openssl",
        &["req", "-in", p, "-verify", "-noout", "-text"],
        &[],
    );
    v.ok();
    let all = format!("{}{}", v.stdout, v.stderr);
    assert!(all.contains("verify OK"), "{all}");
    assert!(
        all.contains("CN = node-1") || all.contains("CN=node-1"),
        "{all}"
    );
    assert!(all.contains("DNS:node-1.example.com"), "{all}");
    assert!(all.contains("IP Address:10.1.2.3"), "{all}");
    let k = tool("openssl", &["req", "-in", p, "-noout", "-pubkey"], &[]);
    k.ok();
    pem_only(&k.stdout)
}

fn create_then_csr(algorithm: &str) {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let dir = tempfile::tempdir().unwrap();
    let create = [
        "key",
        "create",
        "--key",
        HANDLE,
        "--tcti",
        &tcti,
        "--algorithm",
        algorithm,
    ];
    let (first, t_create) = timed(&create, &[]);
    first.ok();
    let (second, t_reopen) = timed(&create, &[]);
    second.ok();
    assert_eq!(first.stdout, second.stdout, "key create is not idempotent");

    let out = dir.path().join("req.pem");
    let (csr, t_csr) = timed(&csr_args(HANDLE, &tcti, out.to_str().unwrap()), &[]);
    csr.ok();
    let csr_key = check_csr(&out);

    let show = run(&["key", "show", "--key", HANDLE, "--tcti", &tcti], &[]);
    show.ok();
    assert!(
        show.stdout.contains(&format!("# algorithm: {algorithm}")),
        "{}",
        show.stdout
    );
    assert_eq!(pem_only(&show.stdout).trim(), csr_key.trim());
    assert_eq!(pem_only(&first.stdout).trim(), csr_key.trim());
    eprintln!(
        "timing {algorithm}: key create {t_create:?}, reopen {t_reopen:?}, csr (open + sign) {t_csr:?} (whole process each)"
    );
}

#[test]
fn ecdsa_p256_key_create_csr_and_reuse() {
    create_then_csr("ecdsa-p256");
}

#[test]
fn rsa_2048_key_create_csr_and_reuse() {
    create_then_csr("rsa-2048");
}

#[test]
fn created_key_has_the_required_attributes() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    for (handle, alg) in [("0x81000010", "ecdsa-p256"), ("0x81000011", "rsa-2048")] {
        let key = format!("handle:{handle}");
        run(
            &[
                "key",
                "create",
                "--key",
                &key,
                "--tcti",
                &tcti,
                "--algorithm",
                alg,
            ],
            &[],
        )
        .ok();
        let r = tool(
            "tpm2_readpublic",
            &["-c", handle],
            &[("TPM2TOOLS_TCTI", &tcti)],
        );
        r.ok();
        let attrs = r
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("attributes:"))
            .nth(1)
            .unwrap_or_else(|| panic!("no attributes in {}", r.stdout))
            .trim()
            .trim_start_matches("value:")
            .trim()
            .to_string();
        let set: Vec<&str> = attrs.split('|').collect();
        for want in [
            "fixedtpm",
            "fixedparent",
            "sensitivedataorigin",
            "userwithauth",
            "sign",
            // Empty auth: nothing to guess, and power cuts must not lock the key out.
            "noda",
        ] {
            assert!(set.contains(&want), "{alg}: {want} missing from {attrs}");
        }
        for unwanted in ["decrypt", "restricted"] {
            assert!(!set.contains(&unwanted), "{alg}: {unwanted} set in {attrs}");
        }
        assert_eq!(set.len(), 6, "{alg}: unexpected attributes {attrs}");
    }
    // swtpm has no resource manager: nothing transient (SRK, loaded key) may be left loaded.
    let r = tool(
        "tpm2_getcap",
        &["handles-transient"],
        &[("TPM2TOOLS_TCTI", &tcti)],
    );
    r.ok();
    assert!(r.stdout.trim().is_empty(), "left loaded: {}", r.stdout);
}

#[test]
fn tss2_pem_keys_from_tpm2_openssl_sign_csrs() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let env = [("TPM2OPENSSL_TCTI", tcti.as_str())];
    let dir = tempfile::tempdir().unwrap();
    for (alg, opt) in [("EC", "group:P-256"), ("RSA", "bits:2048")] {
        let key = dir.path().join(format!("{alg}.pem"));
        let key = key.to_str().unwrap();
        tool(
            "openssl",
            &[
                "genpkey",
                "-provider",
                "tpm2",
                "-provider",
                "default",
                "-algorithm",
                alg,
                "-pkeyopt",
                opt,
                "-out",
                key,
            ],
            &env,
        )
        .ok();
        let text = std::fs::read_to_string(key).unwrap();
        assert!(
            text.starts_with("-----BEGIN TSS2 PRIVATE KEY-----"),
            "{text}"
        );
        let expected = tool(
            "openssl",
            &[
                "pkey",
                "-provider",
                "tpm2",
                "-provider",
                "default",
                "-in",
                key,
                "-pubout",
            ],
            &env,
        );
        expected.ok();

        let out = dir.path().join(format!("{alg}.csr"));
        run(&csr_args(key, &tcti, out.to_str().unwrap()), &[]).ok();
        assert_eq!(check_csr(&out).trim(), pem_only(&expected.stdout).trim());

        let show = run(&["key", "show", "--key", key, "--tcti", &tcti], &[]);
        show.ok();
        assert_eq!(
            pem_only(&show.stdout).trim(),
            pem_only(&expected.stdout).trim()
        );
    }
}

/// One line on stderr, the expected exit code and message, and nothing written.
fn assert_clean_failure(r: &Run, code: i32, needle: &str, dir: &Path) {
    assert_eq!(r.code, code, "stderr: {}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "stderr: {}", r.stderr);
    assert!(r.stderr.contains(needle), "stderr: {}", r.stderr);
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
    assert!(dir_entries(dir).is_empty(), "{:?}", dir_entries(dir));
}

#[test]
fn unreachable_tpm_is_one_line_and_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on (bound, then released).
    let tcti = format!("swtpm:host=127.0.0.1,port={}", util::free_port());
    let out = dir.path().join("req.pem");
    let r = run(&csr_args(HANDLE, &tcti, out.to_str().unwrap()), &[]);
    assert_clean_failure(&r, 4, "cannot reach the TPM through TCTI", dir.path());
    assert!(r.stderr.contains(&tcti), "{}", r.stderr);
    let r = run(
        &["key", "create", "--key", HANDLE],
        &[("HYBRIDBOOT_TCTI", &tcti)],
    );
    assert_clean_failure(&r, 4, "cannot reach the TPM", dir.path());
}

#[test]
fn wrong_algorithm_and_absent_handle_are_operator_errors() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let dir = tempfile::tempdir().unwrap();
    run(&["key", "create", "--key", HANDLE, "--tcti", &tcti], &[]).ok();
    let r = run(
        &[
            "key",
            "create",
            "--key",
            HANDLE,
            "--tcti",
            &tcti,
            "--algorithm",
            "rsa-2048",
        ],
        &[],
    );
    assert_clean_failure(
        &r,
        3,
        "exists as ecdsa-p256, but rsa-2048 was requested",
        dir.path(),
    );

    let absent = "handle:0x81000020";
    let r = run(&["key", "show", "--key", absent, "--tcti", &tcti], &[]);
    assert_clean_failure(&r, 3, "key handle:0x81000020 does not exist", dir.path());
    let out = dir.path().join("req.pem");
    let r = run(&csr_args(absent, &tcti, out.to_str().unwrap()), &[]);
    assert_clean_failure(&r, 3, "does not exist", dir.path());
    // Looking did not create anything: tpm2-tools still finds no object there.
    let r = tool(
        "tpm2_readpublic",
        &["-c", "0x81000020"],
        &[("TPM2TOOLS_TCTI", &tcti)],
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
}

#[test]
fn storage_key_at_the_handle_is_refused() {
    // A persistent SRK made by tpm2-tools sits where a node key is expected.
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let dir = tempfile::tempdir().unwrap();
    tpm.persist_storage_primary("0x81000001");
    let r = run(
        &[
            "key",
            "create",
            "--key",
            "handle:0x81000001",
            "--tcti",
            &tcti,
        ],
        &[],
    );
    assert_clean_failure(&r, 3, "storage key", dir.path());
}

#[test]
fn key_auth_file_protects_the_key_and_is_never_logged() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let dir = tempfile::tempdir().unwrap();
    let secret = "Tr0ub4dor-and-3-horses";
    let auth = dir.path().join("auth");
    std::fs::write(&auth, format!("{secret}\n")).unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-auth-value\n").unwrap();
    let auth = auth.to_str().unwrap();
    let outdir = tempfile::tempdir().unwrap();
    let out = outdir.path().join("req.pem");
    let out = out.to_str().unwrap();

    let r = run(
        &[
            "-vvv",
            "key",
            "create",
            "--key",
            HANDLE,
            "--tcti",
            &tcti,
            "--tpm-key-auth-file",
            auth,
        ],
        &[],
    );
    r.ok();
    assert!(!r.stderr.contains(secret), "{}", r.stderr);
    // A key with an auth value keeps dictionary-attack protection (only empty-auth keys are noDA).
    let handle = HANDLE.trim_start_matches("handle:");
    let public = tool(
        "tpm2_readpublic",
        &["-c", handle],
        &[("TPM2TOOLS_TCTI", &tcti)],
    );
    public.ok();
    assert!(public.stdout.contains("userwithauth"), "{}", public.stdout);
    assert!(!public.stdout.contains("noda"), "{}", public.stdout);

    let mut args = csr_args(HANDLE, &tcti, out);
    args.insert(0, "-vvv");
    args.extend(["--tpm-key-auth-file", auth]);
    let r = run(&args, &[]);
    r.ok();
    assert!(!r.stderr.contains(secret), "{}", r.stderr);
    check_csr(Path::new(out));
    std::fs::remove_file(out).unwrap();

    // Without the auth value, or with a wrong one, the TPM refuses to sign.
    let r = run(&csr_args(HANDLE, &tcti, out), &[]);
    assert_clean_failure(&r, 3, "rejected the key's auth value", outdir.path());
    let mut args = csr_args(HANDLE, &tcti, out);
    args.insert(0, "-vvv");
    args.extend(["--tpm-key-auth-file", wrong.to_str().unwrap()]);
    let r = run(&args, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("rejected the key's auth value"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not-the-auth-value"), "{}", r.stderr);
    assert!(dir_entries(outdir.path()).is_empty());
}

#[test]
fn tss2_pem_key_under_a_persistent_parent_and_from_another_tpm() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let env = [
        ("TPM2TOOLS_TCTI", tcti.as_str()),
        ("TPM2OPENSSL_TCTI", tcti.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("parent.ctx");
    let ctx = ctx.to_str().unwrap();
    tool(
        "tpm2_createprimary",
        &["-C", "o", "-G", "ecc", "-c", ctx],
        &env,
    )
    .ok();
    tool(
        "tpm2_evictcontrol",
        &["-C", "o", "-c", ctx, "0x81000005"],
        &env,
    )
    .ok();
    tool("tpm2_flushcontext", &["-t"], &env).ok();
    let key = dir.path().join("k.pem");
    let key = key.to_str().unwrap();
    tool(
        "openssl",
        &[
            "genpkey",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "group:P-256",
            "-pkeyopt",
            "parent:0x81000005",
            "-out",
            key,
        ],
        &env,
    )
    .ok();
    let expected = tool(
        "openssl",
        &[
            "pkey",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-in",
            key,
            "-pubout",
        ],
        &env,
    );
    expected.ok();
    let outdir = tempfile::tempdir().unwrap();
    let out = outdir.path().join("req.pem");
    run(&csr_args(key, &tcti, out.to_str().unwrap()), &[]).ok();
    assert_eq!(check_csr(&out).trim(), pem_only(&expected.stdout).trim());
    std::fs::remove_file(&out).unwrap();

    // The same file on another TPM: its parent does not exist there.
    let other = Swtpm::start();
    let r = run(&csr_args(key, &other.tcti(), out.to_str().unwrap()), &[]);
    assert_clean_failure(
        &r,
        3,
        "its parent key 0x81000005 does not exist in this TPM",
        outdir.path(),
    );
}

#[test]
fn tss2_pem_key_from_another_tpm_is_refused_clearly() {
    let made_here = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let key = key.to_str().unwrap();
    tool(
        "openssl",
        &[
            "genpkey",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "group:P-256",
            "-out",
            key,
        ],
        &[("TPM2OPENSSL_TCTI", &made_here.tcti())],
    )
    .ok();
    drop(made_here);
    let elsewhere = Swtpm::start();
    let outdir = tempfile::tempdir().unwrap();
    let out = outdir.path().join("req.pem");
    let r = run(
        &csr_args(key, &elsewhere.tcti(), out.to_str().unwrap()),
        &[],
    );
    assert_clean_failure(&r, 3, "was not made under this TPM", outdir.path());
}
