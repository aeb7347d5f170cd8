//! aws_signing_helper's command lines, unchanged: the README's TPM command line (a child key
//! with a password under a tpm2-tools primary, made persistent) with `--tpm-key-password`,
//! `sign-string` checked with openssl over the fixed string computed here from openssl's view
//! of the public key, `read-certificate-data` against openssl, `version`, the p11-kit proxy as
//! the default PKCS#11 module, `--reuse-pin` with keys that need the PIN for every signature,
//! and `serve` exiting 0 on SIGTERM.
#![cfg(all(feature = "tpm", feature = "pkcs11"))]
use crate::util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use util::peers::{MiniCa, RaOptions, RolesAnywhere};
use util::softhsm::{SoftHsm, MODULE};
use util::swtpm::Swtpm;
use util::{run, tool, Run};

/// aws_signing_helper's fixed string, from the public key's bytes as openssl prints them.
fn fixed_string(public_key_bytes: &[u8]) -> Vec<u8> {
    let mut s = b"AWS Roles Anywhere Credential Helper Signing Test1".to_vec();
    s.extend(
        Sha256::new()
            .chain_update(b"IAM RA")
            .chain_update(public_key_bytes)
            .finalize(),
    );
    s
}

/// The public key bytes aws_signing_helper hashes, extracted by openssl from a PEM public
/// key: the uncompressed EC point, or the PKCS#1 RSAPublicKey.
fn public_key_bytes(dir: &Path, pub_pem: &Path) -> Vec<u8> {
    let der = dir.join("pub.der");
    let text = tool(
        "openssl",
        &[
            "pkey",
            "-pubin",
            "-in",
            pub_pem.to_str().unwrap(),
            "-noout",
            "-text",
        ],
        &[],
    );
    if text.stdout.contains("prime256v1") {
        util::x509::openssl(
            dir,
            &[
                "ec",
                "-pubin",
                "-in",
                pub_pem.to_str().unwrap(),
                "-outform",
                "DER",
                "-out",
                der.to_str().unwrap(),
            ],
        );
        let spki = std::fs::read(&der).unwrap();
        // The P-256 SPKI ends with the 65-byte uncompressed point.
        spki[spki.len() - 65..].to_vec()
    } else {
        util::x509::openssl(
            dir,
            &[
                "rsa",
                "-pubin",
                "-in",
                pub_pem.to_str().unwrap(),
                "-RSAPublicKey_out",
                "-outform",
                "DER",
                "-out",
                der.to_str().unwrap(),
            ],
        );
        std::fs::read(&der).unwrap()
    }
}

/// Verifies `signature` over the fixed string of `pub_pem` with openssl.
fn assert_signs_fixed_string(dir: &Path, pub_pem: &Path, signature: &[u8]) {
    let msg = dir.join("msg.bin");
    std::fs::write(&msg, fixed_string(&public_key_bytes(dir, pub_pem))).unwrap();
    let sig = dir.join("sig.bin");
    std::fs::write(&sig, signature).unwrap();
    let v = tool(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            pub_pem.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            msg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        v.stdout.contains("Verified OK"),
        "{} {}",
        v.stdout,
        v.stderr
    );
}

/// The PEM public key of a `key show`.
fn public_pem(show: &Run, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, util::public_key_block(&show.stdout)).unwrap();
    p
}

#[test]
fn version_and_read_certificate_data_as_the_reference() {
    let v = run(&["version"], &[]);
    v.ok();
    assert_eq!(v.stdout.trim(), env!("CARGO_PKG_VERSION"));
    let flag = run(&["--version"], &[]);
    assert!(flag.stdout.contains(v.stdout.trim()), "{}", flag.stdout);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = d.join("c.pem");
    util::x509::self_signed_ec(&cert, &d.join("c.key"), "node-1", 2);
    let r = run(
        &[
            "read-certificate-data",
            "--certificate",
            cert.to_str().unwrap(),
        ],
        &[],
    );
    r.ok();
    let data: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(data["keyType"], "EC");
    assert_eq!(
        data["supportedAlgorithms"],
        serde_json::json!(["ECSHA256", "ECSHA384", "ECSHA512"])
    );
    // openssl's view: the DER, base64; the serial, hex -> decimal.
    let der = util::x509::cert_to_der(&cert);
    let b64 = tool(
        "openssl",
        &["base64", "-A", "-in", der.to_str().unwrap()],
        &[],
    );
    assert_eq!(data["certificateData"], b64.stdout.trim());
    let serial = tool(
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"],
        &[],
    );
    let hex = serial.stdout.trim().trim_start_matches("serial=");
    // Up to 20 bytes: decimal by repeated multiply-add on a digit vector.
    let mut digits = vec![0u8];
    for c in hex.chars() {
        let mut carry = c.to_digit(16).unwrap();
        for d in digits.iter_mut().rev() {
            let v = u32::from(*d) * 16 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }
    let decimal: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    assert_eq!(data["serialNumber"], decimal.trim_start_matches('0'));
}

#[test]
fn sign_string_file_and_pkcs11_through_the_p11_kit_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A file key (development form), json output (the reference's default).
    let key = d.join("k.pem");
    util::x509::self_signed_ec(&d.join("k-cert.pem"), &key, "dev", 1);
    let out = run(
        &["sign-string", "--private-key", key.to_str().unwrap()],
        &[],
    );
    out.ok();
    let hex: String = serde_json::from_str(&out.stdout).unwrap();
    let show = run(&["key", "show", "--key", key.to_str().unwrap()], &[]);
    show.ok();
    let pub_pem = public_pem(&show, d, "file.pub");
    assert_signs_fixed_string(d, &pub_pem, &hex_decode(&hex));
    let r = run(
        &[
            "sign-string",
            "--private-key",
            key.to_str().unwrap(),
            "--digest",
            "SHA384",
        ],
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("SHA-256 digests only"), "{}", r.stderr);

    // An RSA key on SoftHSM2, found through p11-kit's proxy: no --pkcs11-lib, no
    // HYBRIDBOOT_PKCS11_LIB, no module-path (SoftHSM2 registers itself with p11-kit).
    let hsm = SoftHsm::new();
    hsm.init_token("ra-token", "so-1234", "pin-5678");
    let pin = hsm.write_pin_file("pin-5678");
    let reference = format!(
        "pkcs11:token=ra-token;object=ra-key?pin-source=file:{}",
        pin.display()
    );
    run(
        &[
            "key",
            "create",
            "--key",
            &reference,
            "--algorithm",
            "rsa-2048",
            "--pkcs11-lib",
            MODULE,
        ],
        &hsm.env(),
    )
    .ok();
    let show = run(&["key", "show", "--key", &reference, "-v"], &hsm.env());
    show.ok();
    assert!(show.stderr.contains("p11-kit-proxy.so"), "{}", show.stderr);
    let pub_pem = public_pem(&show, d, "rsa.pub");
    let out = run(
        &[
            "sign-string",
            "--private-key",
            &reference,
            "--format",
            "text",
        ],
        &hsm.env(),
    );
    out.ok();
    assert_signs_fixed_string(d, &pub_pem, &hex_decode(&out.stdout));
    let bin = std::process::Command::new(util::bin())
        .args([
            "sign-string",
            "--private-key",
            &reference,
            "--format",
            "bin",
        ])
        .envs(hsm.env())
        .env_remove("HYBRIDBOOT_PKCS11_LIB")
        .output()
        .unwrap();
    assert!(bin.status.success());
    // RSA PKCS#1 v1.5 is deterministic: the raw form is the hex form's bytes.
    assert_eq!(bin.stdout, hex_decode(&out.stdout));
}

fn hex_decode(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The README's TPM flow: a primary and a password-protected child key made with tpm2-tools,
/// persisted with tpm2_evictcontrol; then `credential-process --private-key handle:X` with
/// `--tpm-key-password`, against the Roles Anywhere endpoint. `serve` stops with exit 0 on
/// SIGTERM.
#[test]
fn readme_tpm_command_line_with_tpm_key_password_and_serve_sigterm() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env = [("TPM2TOOLS_TCTI", tcti.as_str())];
    let p = |n: &str| d.join(n).display().to_string();
    // swtpm has no resource manager: flush the transient objects each tool leaves.
    let flush = || {
        tool("tpm2_flushcontext", &["-t"], &env).ok();
    };
    tool(
        "tpm2_createprimary",
        &[
            "-G",
            "rsa",
            "-g",
            "sha256",
            "-p",
            "primary-pw",
            "-c",
            &p("parent.ctx"),
        ],
        &env,
    )
    .ok();
    flush();
    tool(
        "tpm2_create",
        &[
            "-C",
            &p("parent.ctx"),
            "-u",
            &p("child.pub"),
            "-r",
            &p("child.priv"),
            "-P",
            "primary-pw",
            "-p",
            "child-pw",
            "-G",
            "ecc256:ecdsa",
        ],
        &env,
    )
    .ok();
    flush();
    tool(
        "tpm2_load",
        &[
            "-C",
            &p("parent.ctx"),
            "-u",
            &p("child.pub"),
            "-r",
            &p("child.priv"),
            "-c",
            &p("child.ctx"),
            "-P",
            "primary-pw",
        ],
        &env,
    )
    .ok();
    flush();
    let evict = tool("tpm2_evictcontrol", &["-c", &p("child.ctx")], &env);
    evict.ok();
    flush();
    let handle = evict
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let key = format!("handle:{handle}");

    // Without the password the key cannot sign; with the reference's flag it does.
    let hb = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--tcti", &tcti]);
        run(
            &all,
            &[("no_proxy", "127.0.0.1"), ("NO_PROXY", "127.0.0.1")],
        )
    };
    let ca = MiniCa::root(d, "ra-ca");
    let csr = d.join("node.csr");
    let r = hb(&[
        "csr",
        "--key",
        &key,
        "--common-name",
        "node-1",
        "--out",
        csr.to_str().unwrap(),
        "--no-tpm-key-password",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    hb(&[
        "csr",
        "--key",
        &key,
        "--common-name",
        "node-1",
        "--out",
        csr.to_str().unwrap(),
        "--tpm-key-password",
        "child-pw",
    ])
    .ok();
    let cert = d.join("node.pem");
    ca.issue(&csr, &cert, -60, 3600);
    let both = hb(&[
        "sign-string",
        "--private-key",
        &key,
        "--tpm-key-password",
        "x",
        "--no-tpm-key-password",
    ]);
    assert_eq!(both.code, 2, "{}", both.stderr);

    let ra = RolesAnywhere::start(&RaOptions::new(&[&ca.cert]));
    let mut args: Vec<String> = [
        "credential-process",
        "--certificate",
        cert.to_str().unwrap(),
        "--private-key",
        &key,
        "--tpm-key-password",
        "child-pw",
        "--role-session-name",
        "node-1",
        "--session-duration",
        "900",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(ra.flags());
    args.push("--no-cache".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = hb(&refs);
    out.ok();
    let creds: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(creds["Version"], 1);
    assert!(!out.stderr.contains("child-pw"), "{}", out.stderr);
    // --session-duration reached CreateSession: the session ends 900 s from now.
    let expiry = tool(
        "date",
        &["-d", creds["Expiration"].as_str().unwrap(), "+%s"],
        &[],
    );
    let now = tool("date", &["+%s"], &[]);
    let left: i64 =
        expiry.stdout.trim().parse::<i64>().unwrap() - now.stdout.trim().parse::<i64>().unwrap();
    assert!((800..=900).contains(&left), "session lasts {left} s");

    // serve: up, then SIGTERM ends it with exit code 0.
    let port = util::free_port();
    args[0] = "serve".into();
    args.retain(|a| a != "--no-cache");
    args.extend([
        "--port".into(),
        port.to_string(),
        "--tcti".into(),
        tcti.clone(),
    ]);
    let mut child = std::process::Command::new(util::bin())
        .args(&args)
        .env("no_proxy", "127.0.0.1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    util::terminate(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "serve on SIGTERM: {status:?}");
}

/// The reference's PKCS#11 form: `--certificate pkcs11:...` read from the token, the key on the
/// same token, no module named (p11-kit's proxy finds SoftHSM2), against the Roles Anywhere
/// endpoint.
#[test]
fn pkcs11_certificate_read_from_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hsm = SoftHsm::new();
    hsm.init_token("ra-token", "so-1234", "pin-5678");
    let pin = hsm.write_pin_file("pin-5678");
    let key = format!(
        "pkcs11:token=ra-token;object=ra-key?pin-source=file:{}",
        pin.display()
    );
    let env = hsm.env();
    run(&["key", "create", "--key", &key], &env).ok();
    let csr = d.join("node.csr");
    run(
        &[
            "csr",
            "--key",
            &key,
            "--common-name",
            "node-1",
            "--out",
            csr.to_str().unwrap(),
        ],
        &env,
    )
    .ok();
    let (_ra, mut args) =
        certificate_on_the_token(&hsm, d, &csr, ("ra-token", "pin-5678", "ra-cert"), &key);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let env_np = no_proxy(&env);
    let out = run(&refs, &env_np);
    out.ok();
    let creds: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(creds["Version"], 1);

    // A label that names no certificate: one clear line, exit 3.
    args[2] = "pkcs11:token=ra-token;object=no-such-cert".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&refs, &env_np);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("no certificate object with this label/id"),
        "{}",
        r.stderr
    );
}

/// A key that needs the PIN for every signature (`CKA_ALWAYS_AUTHENTICATE`, as PIV slot 9c),
/// made with pkcs11-tool: the reference's PKCS#11 command line with `--reuse-pin` (certificate
/// and key on the token, the PIN in the URI) gets a session from the Roles Anywhere endpoint,
/// which checks the signature; without the flag one clear line says to pass it. SoftHSM2 has
/// no `CKM_ECDSA_SHA256` and signs raw ECDSA only in one call, so an EC key there is refused
/// saying why. The PIN shows nowhere, not even at -vvv.
#[test]
fn reuse_pin_signs_with_a_key_that_needs_the_pin_for_every_signature() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hsm = SoftHsm::new();
    let pin = "pin-9c-5678";
    hsm.init_token("piv", "so-1234", pin);
    for (label, key_type) in [("piv-9c", "rsa:2048"), ("piv-9c-ec", "EC:prime256v1")] {
        hsm.pkcs11_tool(&[
            "--token-label",
            "piv",
            "--login",
            "--pin",
            pin,
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--always-auth",
        ])
        .ok();
    }
    let key = format!("pkcs11:token=piv;object=piv-9c?pin-value={pin}");
    let env = hsm.hybridboot_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();

    // The public key needs no signature: shown without the flag.
    let show = run(&["key", "show", "--key", &key], &env);
    show.ok();
    assert!(show.stdout.contains("rsa-2048"), "{}", show.stdout);

    // Without --reuse-pin: no signature, and the error says what to pass.
    let csr = d.join("node.csr");
    let csr_args = [
        "csr",
        "--key",
        &key,
        "--common-name",
        "node-1",
        "--out",
        csr.to_str().unwrap(),
    ];
    let r = run(&csr_args, &env);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("CKA_ALWAYS_AUTHENTICATE") && r.stderr.contains("pass --reuse-pin"),
        "{}",
        r.stderr
    );
    assert!(!csr.exists());
    let mut with_flag = csr_args.to_vec();
    with_flag.push("--reuse-pin");
    run(&with_flag, &env).ok();

    let (ra, mut args) = certificate_on_the_token(&hsm, d, &csr, ("piv", pin, "piv-9c-cert"), &key);
    let env_np = no_proxy(&env);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&refs, &env_np);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("pass --reuse-pin"), "{}", r.stderr);
    assert!(!r.stderr.contains(pin), "{}", r.stderr);
    assert_eq!(ra.stats()["ok"], 0, "{}", ra.stats());

    args.extend(["--reuse-pin".to_string(), "-vvv".to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs, &env_np);
    out.ok();
    let creds: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(creds["Version"], 1);
    assert!(!out.stderr.contains(pin), "PIN in the log: {}", out.stderr);
    assert_eq!(ra.stats()["ok"], 1, "{}", ra.stats());

    // The EC key: SoftHSM2 cannot take its signature in parts, and the error says so.
    let ec = format!("pkcs11:token=piv;object=piv-9c-ec?pin-value={pin}");
    let r = run(
        &["sign-string", "--private-key", &ec, "--reuse-pin", "-vvv"],
        &env,
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("raw CKM_ECDSA signature in parts") && r.stderr.contains("PIV slot 9a"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(pin), "{}", r.stderr);
}

/// The node certificate for `csr`, issued by a test CA, stored on the token as `label` (the
/// reference's `--certificate pkcs11:` form); returns a Roles Anywhere endpoint trusting that
/// CA and the credential-process arguments that read the certificate from the token and sign
/// with `key` (argument 2 is the certificate URI).
fn certificate_on_the_token(
    hsm: &SoftHsm,
    d: &Path,
    csr: &Path,
    (token, pin, label): (&str, &str, &str),
    key: &str,
) -> (RolesAnywhere, Vec<String>) {
    let ca = MiniCa::root(d, "ra-ca");
    let cert = d.join("node.pem");
    ca.issue(csr, &cert, -60, 3600);
    let der = util::x509::cert_to_der(&cert);
    hsm.pkcs11_tool(&[
        "--token-label",
        token,
        "--login",
        "--pin",
        pin,
        "--write-object",
        der.to_str().unwrap(),
        "--type",
        "cert",
        "--label",
        label,
    ])
    .ok();
    let ra = RolesAnywhere::start(&RaOptions::new(&[&ca.cert]));
    let uri = format!("pkcs11:token={token};object={label}");
    let mut args: Vec<String> = [
        "credential-process",
        "--certificate",
        &uri,
        "--private-key",
        key,
        "--no-cache",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(ra.flags());
    (ra, args)
}

/// `env` with the loopback peers exempt from any proxy of the environment.
fn no_proxy<'a>(env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut e = env.to_vec();
    e.extend([("no_proxy", "127.0.0.1"), ("NO_PROXY", "127.0.0.1")]);
    e
}
