//! The native Rust TPM backend against a real swtpm, cross-checked with tpm2-tools,
//! tpm2-openssl and openssl. Each test starts its own swtpm on free loopback ports.
//!
//! Run: `cargo test --features tpm-native --test tests tpm_native::`
#![cfg(feature = "tpm-native")]

use crate::util;

use std::path::{Path, PathBuf};
use std::time::Instant;

use util::swtpm::Swtpm;
use util::{free_port, run, tool, Run};

/// A private swtpm (the shared harness) plus a scratch directory for one test.
struct Tpm {
    sw: Swtpm,
    dir: tempfile::TempDir,
}

impl Tpm {
    fn start() -> Tpm {
        Tpm {
            sw: Swtpm::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn tcti(&self) -> String {
        self.sw.tcti()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs hybridboot with the native backend selected and this TPM as TCTI.
    fn hb(&self, args: &[&str]) -> Run {
        self.hb_with("native", args)
    }

    /// Runs hybridboot with the given TPM backend (`native` or `esapi`) and this TPM as TCTI.
    fn hb_with(&self, backend: &str, args: &[&str]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        let tcti = self.tcti();
        all.extend(["--tcti", &tcti]);
        run(&all, &[("HYBRIDBOOT_TPM_BACKEND", backend)])
    }

    /// Runs a tpm2-tools command against this TPM.
    fn tools(&self, prog: &str, args: &[&str]) -> Run {
        let r = tool(prog, args, &[("TPM2TOOLS_TCTI", &self.tcti())]);
        assert_eq!(
            r.code, 0,
            "{prog} {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r
    }

    /// Runs a tpm2-tools command, then flushes the transient objects it left in the TPM:
    /// without a resource manager, tools that load `.ctx` files leave them loaded and swtpm
    /// runs out of object slots after three.
    fn tools_flushed(&self, prog: &str, args: &[&str]) -> Run {
        let r = self.tools(prog, args);
        self.tools("tpm2_flushcontext", &["-t"]);
        r
    }

    /// The transient object handles currently loaded (the backend must leave none).
    fn transient_handles(&self) -> String {
        self.tools("tpm2_getcap", &["handles-transient"])
            .stdout
            .trim()
            .to_string()
    }
}

fn openssl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let r = tool("openssl", args, env);
    assert_eq!(
        r.code, 0,
        "openssl {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r
}

/// Writes `pem` (a CSR) to `path`, checks its self-signature with openssl, returns its public
/// key PEM as openssl prints it.
fn verify_csr(pem: &str, path: &Path) -> String {
    std::fs::write(path, pem).unwrap();
    let p = path.to_str().unwrap();
    let r = openssl(&["req", "-in", p, "-verify", "-noout"], &[]);
    assert!(
        r.stderr.contains("verify OK") || r.stdout.contains("verify OK"),
        "openssl did not verify the CSR: {}{}",
        r.stdout,
        r.stderr
    );
    openssl(&["req", "-in", p, "-pubkey", "-noout"], &[]).stdout
}

/// The `-----BEGIN PUBLIC KEY-----` block of some output.
fn pem_block(text: &str) -> String {
    let start = text
        .find("-----BEGIN PUBLIC KEY-----")
        .unwrap_or_else(|| panic!("no public key in {text:?}"));
    let end = text.find("-----END PUBLIC KEY-----").unwrap() + "-----END PUBLIC KEY-----".len();
    text[start..end].to_string()
}

fn create_and_check(alg: &str) {
    let tpm = Tpm::start();
    let key = "handle:0x81000020";
    let first = tpm.hb(&["key", "create", "--key", key, "--algorithm", alg]);
    first.ok();
    let public = pem_block(&first.stdout);

    // Idempotent: the second create returns the same key.
    let second = tpm.hb(&["key", "create", "--key", key, "--algorithm", alg]);
    second.ok();
    assert_eq!(pem_block(&second.stdout), public);

    let show = tpm.hb(&["key", "show", "--key", key]);
    show.ok();
    assert!(show.stdout.contains(&format!("# algorithm: {alg}")));
    assert_eq!(pem_block(&show.stdout), public);

    let csr = tpm.hb(&["csr", "--key", key, "--common-name", "node-1"]);
    csr.ok();
    let csr_key = verify_csr(&csr.stdout, &tpm.path("node.csr"));
    assert_eq!(pem_block(&csr_key), public);

    // tpm2-tools sees a non-duplicable signing key with the same public key.
    let rp = tpm.tools("tpm2_readpublic", &["-c", "0x81000020"]);
    let attrs = rp
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("attributes:"))
        .nth(1)
        .unwrap()
        .to_string();
    for a in [
        "fixedtpm",
        "fixedparent",
        "sensitivedataorigin",
        "userwithauth",
        "sign",
    ] {
        assert!(attrs.contains(a), "{a} missing from {attrs}");
    }
    assert!(
        !attrs.contains("decrypt") && !attrs.contains("restricted"),
        "{attrs}"
    );
    let pem_path = tpm.path("readpublic.pem");
    tpm.tools(
        "tpm2_readpublic",
        &[
            "-c",
            "0x81000020",
            "-f",
            "pem",
            "-o",
            pem_path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        pem_block(&std::fs::read_to_string(&pem_path).unwrap()),
        public
    );
    assert_eq!(tpm.transient_handles(), "", "transient objects left behind");
}

#[test]
fn native_ecdsa_key_create_show_csr() {
    create_and_check("ecdsa-p256");
}

#[test]
fn native_rsa_key_create_show_csr() {
    create_and_check("rsa-2048");
}

#[test]
fn native_signs_with_keys_made_by_tpm2_tools() {
    let tpm = Tpm::start();
    let p = |n: &str| tpm.path(n).to_str().unwrap().to_string();
    // The SRK template the native backend uses (tpm2-tools' default attributes lack noda).
    tpm.tools_flushed(
        "tpm2_createprimary",
        &[
            "-Q",
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            "ecc256:aes128cfb",
            "-a",
            "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
            "-c",
            &p("primary.ctx"),
        ],
    );
    for (alg, galg, handle) in [
        ("ecdsa-p256", "ecc256", "0x81000021"),
        ("rsa-2048", "rsa2048", "0x81000022"),
    ] {
        let (pubf, privf, ctx) = (
            p(&format!("{alg}.pub")),
            p(&format!("{alg}.priv")),
            p(&format!("{alg}.ctx")),
        );
        tpm.tools_flushed(
            "tpm2_create",
            &[
                "-Q",
                "-C",
                &p("primary.ctx"),
                "-G",
                galg,
                "-u",
                &pubf,
                "-r",
                &privf,
                "-a",
                "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
            ],
        );
        tpm.tools_flushed(
            "tpm2_load",
            &[
                "-Q",
                "-C",
                &p("primary.ctx"),
                "-u",
                &pubf,
                "-r",
                &privf,
                "-c",
                &ctx,
            ],
        );
        tpm.tools("tpm2_evictcontrol", &["-Q", "-C", "o", "-c", &ctx, handle]);
        tpm.tools("tpm2_flushcontext", &["-t"]);

        // The same blob as a TSS2 PEM file (parent: owner SRK), with an empty auth file because
        // tpm2_encodeobject marks it as needing auth.
        let tss2 = p(&format!("{alg}.tss2.pem"));
        tpm.tools_flushed(
            "tpm2_encodeobject",
            &[
                "-C",
                &p("primary.ctx"),
                "-u",
                &pubf,
                "-r",
                &privf,
                "-o",
                &tss2,
            ],
        );
        tpm.tools("tpm2_flushcontext", &["-t"]);

        let exported = p(&format!("{alg}.readpublic.pem"));
        tpm.tools(
            "tpm2_readpublic",
            &["-c", handle, "-f", "pem", "-o", &exported],
        );
        let tools_public = pem_block(&std::fs::read_to_string(&exported).unwrap());

        let key = format!("handle:{handle}");
        let show = tpm.hb(&["key", "show", "--key", &key]);
        show.ok();
        assert!(
            show.stdout.contains(&format!("# algorithm: {alg}")),
            "{}",
            show.stdout
        );
        assert_eq!(pem_block(&show.stdout), tools_public);
        let csr = tpm.hb(&["csr", "--key", &key, "--common-name", "tools-key"]);
        csr.ok();
        assert_eq!(
            pem_block(&verify_csr(&csr.stdout, &tpm.path("t.csr"))),
            tools_public
        );

        // The TSS2 file says it needs auth (tpm2_encodeobject's default): without an auth file
        // the empty value is tried, with a warning, as the tss-esapi backend does.
        let r = tpm.hb(&["csr", "--key", &tss2, "--common-name", "tools-tss2"]);
        r.ok();
        assert!(r.stderr.contains("--tpm-key-auth-file"), "{}", r.stderr);
        verify_csr(&r.stdout, &tpm.path("t1.csr"));
        let empty = p("empty.auth");
        std::fs::write(&empty, "").unwrap();
        let csr = tpm.hb(&[
            "csr",
            "--key",
            &tss2,
            "--tpm-key-auth-file",
            &empty,
            "--common-name",
            "tools-tss2",
        ]);
        csr.ok();
        assert_eq!(
            pem_block(&verify_csr(&csr.stdout, &tpm.path("t2.csr"))),
            tools_public
        );
    }
    assert_eq!(tpm.transient_handles(), "");
}

#[test]
fn native_loads_tpm2_openssl_tss2_keys() {
    let tpm = Tpm::start();
    let tcti = tpm.tcti();
    let env = [("TPM2OPENSSL_TCTI", tcti.as_str())];
    for (alg, gen) in [
        (
            "ecdsa-p256",
            ["-algorithm", "EC", "-pkeyopt", "group:P-256"],
        ),
        ("rsa-2048", ["-algorithm", "RSA", "-pkeyopt", "bits:2048"]),
    ] {
        let key_path = tpm.path(&format!("{alg}.pem"));
        let k = key_path.to_str().unwrap();
        let mut args = vec!["genpkey", "-provider", "tpm2", "-provider", "default"];
        args.extend(gen);
        args.extend(["-out", k]);
        openssl(&args, &env);
        assert!(std::fs::read_to_string(&key_path)
            .unwrap()
            .starts_with("-----BEGIN TSS2 PRIVATE KEY-----"));
        let ossl_public = openssl(
            &[
                "pkey",
                "-provider",
                "tpm2",
                "-provider",
                "default",
                "-in",
                k,
                "-pubout",
            ],
            &env,
        )
        .stdout;

        let show = tpm.hb(&["key", "show", "--key", k]);
        show.ok();
        assert!(show.stdout.contains(&format!("# algorithm: {alg}")));
        assert_eq!(pem_block(&show.stdout), pem_block(&ossl_public));
        let csr = tpm.hb(&["csr", "--key", k, "--common-name", "tss2-node"]);
        csr.ok();
        assert_eq!(
            pem_block(&verify_csr(&csr.stdout, &tpm.path("tss2.csr"))),
            pem_block(&ossl_public)
        );
        // `key create` on an existing TSS2 file of the other algorithm is refused.
        let other = if alg == "rsa-2048" {
            "ecdsa-p256"
        } else {
            "rsa-2048"
        };
        let r = tpm.hb(&["key", "create", "--key", k, "--algorithm", other]);
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(r.stderr.contains("exists as"), "{}", r.stderr);
    }
    assert_eq!(tpm.transient_handles(), "");
}

#[test]
fn unreachable_tpm_exits_4_with_one_clear_line() {
    let port = free_port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let r = run(
        &["key", "show", "--key", "handle:0x81000020", "--tcti", &tcti],
        &[("HYBRIDBOOT_TPM_BACKEND", "native")],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    let lines: Vec<_> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(lines[0].contains("cannot reach the TPM"), "{}", lines[0]);
    assert!(lines[0].contains(&tcti), "{}", lines[0]);

    let r = run(
        &[
            "key",
            "show",
            "--key",
            "handle:0x81000020",
            "--tcti",
            "device:/nonexistent/tpmrm0",
        ],
        &[("HYBRIDBOOT_TPM_BACKEND", "native")],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);

    // The simulator framing is refused with what to use instead.
    let r = run(
        &[
            "key",
            "show",
            "--key",
            "handle:0x81000020",
            "--tcti",
            "mssim:host=127.0.0.1,port=2321",
        ],
        &[("HYBRIDBOOT_TPM_BACKEND", "native")],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("swtpm:host="), "{}", r.stderr);
}

#[test]
fn wrong_algorithm_missing_key_and_unknown_backend_exit_3() {
    let tpm = Tpm::start();
    tpm.hb(&["key", "create", "--key", "handle:0x81000020"])
        .ok();
    let r = tpm.hb(&[
        "key",
        "create",
        "--key",
        "handle:0x81000020",
        "--algorithm",
        "rsa-2048",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("exists as ecdsa-p256"), "{}", r.stderr);

    let r = tpm.hb(&["key", "show", "--key", "handle:0x81000099"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(r.stderr.contains("key create"), "{}", r.stderr);

    let tcti = tpm.tcti();
    let r = run(
        &["key", "show", "--key", "handle:0x81000020", "--tcti", &tcti],
        &[("HYBRIDBOOT_TPM_BACKEND", "pkcs11")],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("use esapi or native"), "{}", r.stderr);

    // The SRK is not a signing key.
    let p = tpm.path("srk.ctx");
    tpm.tools(
        "tpm2_createprimary",
        &[
            "-Q",
            "-C",
            "o",
            "-G",
            "ecc256:aes128cfb",
            "-c",
            p.to_str().unwrap(),
        ],
    );
    tpm.tools(
        "tpm2_evictcontrol",
        &["-Q", "-C", "o", "-c", p.to_str().unwrap(), "0x81000001"],
    );
    tpm.tools("tpm2_flushcontext", &["-t"]);
    let r = tpm.hb(&["key", "show", "--key", "handle:0x81000001"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not a signing key"), "{}", r.stderr);
}

#[test]
fn key_auth_value_is_used_and_never_shown() {
    let tpm = Tpm::start();
    let secret = "tpm-key-auth-Zq81";
    let auth = tpm.path("key.auth");
    std::fs::write(&auth, format!("{secret}\n")).unwrap();
    let a = auth.to_str().unwrap();
    let key = "handle:0x81000030";
    let created = tpm.hb(&[
        "-vv",
        "key",
        "create",
        "--key",
        key,
        "--tpm-key-auth-file",
        a,
    ]);
    created.ok();
    let csr = tpm.hb(&[
        "-vv",
        "csr",
        "--key",
        key,
        "--tpm-key-auth-file",
        a,
        "--common-name",
        "auth-node",
    ]);
    csr.ok();
    verify_csr(&csr.stdout, &tpm.path("auth.csr"));
    for r in [&created, &csr] {
        assert!(!r.stderr.contains(secret) && !r.stdout.contains(secret));
    }
    // Without the auth value the TPM refuses, and the message says what to check.
    let r = tpm.hb(&["csr", "--key", key, "--common-name", "x"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("TPM_RC_AUTH_FAIL") || r.stderr.contains("TPM_RC_BAD_AUTH"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--tpm-key-auth-file"), "{}", r.stderr);
}

/// Measures in-process latency of the native backend (printed; run with --nocapture) and
/// checks every signature.
#[test]
fn native_latency() {
    use hybridboot::key::tpm_native::NativeTpmKey;
    use hybridboot::key::{verify_digest, Algorithm, KeyOptions, NodeKey, OpenMode};
    let tpm = Tpm::start();
    let opts = KeyOptions {
        tcti: Some(tpm.tcti()),
        ..Default::default()
    };
    let mut report = Vec::new();
    for (alg, handle) in [
        (Algorithm::EcdsaP256, 0x8100_0040u32),
        (Algorithm::Rsa2048, 0x8100_0041),
    ] {
        let t = Instant::now();
        let key =
            NativeTpmKey::open_persistent(handle, &opts, OpenMode::CreateIfAbsent(alg)).unwrap();
        let create = t.elapsed();
        let t = Instant::now();
        NativeTpmKey::open_persistent(handle, &opts, OpenMode::Existing).unwrap();
        let open = t.elapsed();
        // Each signature timed alone: the first one after swtpm starts pays a one-time cost
        // inside swtpm (tens of ms), so it is reported apart from the steady state.
        let n = 20;
        let digests: Vec<[u8; 32]> = (0..n).map(|i| [i as u8; 32]).collect();
        let mut times = Vec::new();
        let mut sigs = Vec::new();
        for d in &digests {
            let t = Instant::now();
            sigs.push(key.sign_digest(d).unwrap());
            times.push(t.elapsed());
        }
        for (d, sig) in digests.iter().zip(&sigs) {
            assert!(verify_digest(key.public_key_der(), d, sig));
        }
        let first = times[0];
        let mut rest = times[1..].to_vec();
        rest.sort();
        let median = rest[rest.len() / 2];
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        report.push(format!(
            "{alg}: create {:.1} ms, open existing {:.1} ms, first sign {:.2} ms, sign median {:.2} ms (of {}; each opens its own connection)",
            ms(create),
            ms(open),
            ms(first),
            ms(median),
            n - 1
        ));
    }
    eprintln!(
        "native TPM backend latency against swtpm:\n  {}",
        report.join("\n  ")
    );
    assert_eq!(tpm.transient_handles(), "");
}

/// Signs a CSR with `backend` and checks it with openssl; returns the CSR's public key.
#[cfg(feature = "tpm")]
fn csr_with(tpm: &Tpm, backend: &str, key: &str, extra: &[&str], name: &str) -> String {
    let mut args = vec!["csr", "--key", key, "--common-name", name];
    args.extend(extra);
    let r = tpm.hb_with(backend, &args);
    r.ok();
    pem_block(&verify_csr(&r.stdout, &tpm.path(&format!("{name}.csr"))))
}

/// A key created by one backend is found, shown and used by the other, both ways, for both
/// algorithms; every signature verifies with openssl.
#[cfg(feature = "tpm")]
#[test]
fn differential_persistent_keys_both_ways() {
    let tpm = Tpm::start();
    for (alg, creator, user, handle) in [
        ("ecdsa-p256", "native", "esapi", "handle:0x81000060"),
        ("ecdsa-p256", "esapi", "native", "handle:0x81000061"),
        ("rsa-2048", "native", "esapi", "handle:0x81000062"),
        ("rsa-2048", "esapi", "native", "handle:0x81000063"),
    ] {
        let created = tpm.hb_with(
            creator,
            &["key", "create", "--key", handle, "--algorithm", alg],
        );
        created.ok();
        let public = pem_block(&created.stdout);
        // `key create` by the other backend finds the existing key instead of making one.
        let again = tpm.hb_with(
            user,
            &["key", "create", "--key", handle, "--algorithm", alg],
        );
        again.ok();
        assert_eq!(
            pem_block(&again.stdout),
            public,
            "{creator} -> {user} {alg}"
        );
        let show = tpm.hb_with(user, &["key", "show", "--key", handle]);
        show.ok();
        assert!(show.stdout.contains(&format!("# algorithm: {alg}")));
        assert_eq!(pem_block(&show.stdout), public);
        for backend in [creator, user] {
            let name = format!("{}-{backend}", &handle[7..]);
            assert_eq!(csr_with(&tpm, backend, handle, &[], &name), public);
        }
        // Both refuse the other algorithm the same way.
        let other = if alg == "rsa-2048" {
            "ecdsa-p256"
        } else {
            "rsa-2048"
        };
        for backend in [creator, user] {
            let r = tpm.hb_with(
                backend,
                &["key", "create", "--key", handle, "--algorithm", other],
            );
            assert_eq!(r.code, 3, "{backend}: {}", r.stderr);
            assert!(
                r.stderr.contains(&format!("exists as {alg}")),
                "{backend}: {}",
                r.stderr
            );
        }
    }
    assert_eq!(tpm.transient_handles(), "");
}

/// Both backends derive the same SRK: a tpm2-openssl TSS2 key loads and signs through each,
/// and the key created by one backend with an auth value is usable by the other with it.
#[cfg(feature = "tpm")]
#[test]
fn differential_tss2_keys_and_auth_values() {
    let tpm = Tpm::start();
    let tcti = tpm.tcti();
    let k = tpm.path("ec.pem");
    let k = k.to_str().unwrap();
    openssl(
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
            k,
        ],
        &[("TPM2OPENSSL_TCTI", tcti.as_str())],
    );
    let native = csr_with(&tpm, "native", k, &[], "tss2-native");
    let esapi = csr_with(&tpm, "esapi", k, &[], "tss2-esapi");
    assert_eq!(native, esapi);

    let auth = tpm.path("auth");
    std::fs::write(&auth, "differential-auth\n").unwrap();
    let a = auth.to_str().unwrap();
    for (creator, user, handle) in [
        ("native", "esapi", "handle:0x81000070"),
        ("esapi", "native", "handle:0x81000071"),
    ] {
        tpm.hb_with(
            creator,
            &["key", "create", "--key", handle, "--tpm-key-auth-file", a],
        )
        .ok();
        let flag = ["--tpm-key-auth-file", a];
        let x = csr_with(&tpm, user, handle, &flag, &format!("auth-{user}"));
        let y = csr_with(&tpm, creator, handle, &flag, &format!("auth-{creator}"));
        assert_eq!(x, y);
        // Without the auth value both backends fail as operator errors.
        for backend in [creator, user] {
            let r = tpm.hb_with(backend, &["csr", "--key", handle, "--common-name", "x"]);
            assert_eq!(r.code, 3, "{backend}: {}", r.stderr);
        }
    }
    assert_eq!(tpm.transient_handles(), "");
}

/// A TSS2 key whose parent is a persistent key is loaded under that handle (here a primary
/// with tpm2-tools' default attributes, which differs from the owner SRK); the same blob
/// claiming the owner SRK as parent fails with a clear integrity error.
#[test]
fn native_tss2_key_under_a_persistent_parent() {
    let tpm = Tpm::start();
    let p = |n: &str| tpm.path(n).to_str().unwrap().to_string();
    tpm.tools_flushed(
        "tpm2_createprimary",
        &[
            "-Q",
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            "ecc256:aes128cfb",
            "-c",
            &p("parent.ctx"),
        ],
    );
    tpm.tools_flushed(
        "tpm2_evictcontrol",
        &["-Q", "-C", "o", "-c", &p("parent.ctx"), "0x81000001"],
    );
    tpm.tools_flushed(
        "tpm2_create",
        &[
            "-Q",
            "-C",
            "0x81000001",
            "-G",
            "ecc256",
            "-u",
            &p("k.pub"),
            "-r",
            &p("k.priv"),
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        ],
    );
    tpm.tools_flushed(
        "tpm2_encodeobject",
        &[
            "-C",
            "0x81000001",
            "-u",
            &p("k.pub"),
            "-r",
            &p("k.priv"),
            "-o",
            &p("k.pem"),
        ],
    );
    // The public key as tpm2-tools sees it once loaded under the persistent parent.
    tpm.tools_flushed(
        "tpm2_load",
        &[
            "-Q",
            "-C",
            "0x81000001",
            "-u",
            &p("k.pub"),
            "-r",
            &p("k.priv"),
            "-c",
            &p("k.ctx"),
        ],
    );
    tpm.tools_flushed(
        "tpm2_readpublic",
        &["-Q", "-c", &p("k.ctx"), "-f", "pem", "-o", &p("k.pub.pem")],
    );
    let tools_public = std::fs::read_to_string(p("k.pub.pem")).unwrap();
    let r = tpm.hb(&[
        "csr",
        "--key",
        &p("k.pem"),
        "--common-name",
        "persistent-parent",
    ]);
    r.ok();
    assert_eq!(
        pem_block(&verify_csr(&r.stdout, &tpm.path("pp.csr"))),
        pem_block(&tools_public)
    );

    // The same blob presented as a child of the owner SRK.
    tpm.tools_flushed(
        "tpm2_encodeobject",
        &[
            "-C",
            &p("parent.ctx"),
            "-u",
            &p("k.pub"),
            "-r",
            &p("k.priv"),
            "-o",
            &p("owner.pem"),
        ],
    );
    let r = tpm.hb(&["key", "show", "--key", &p("owner.pem")]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("TPM_RC_INTEGRITY"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("does not belong to this TPM or parent key"),
        "{}",
        r.stderr
    );
    assert_eq!(tpm.transient_handles(), "");
}
