//! The PKCS#11 key backend against a real SoftHSM2 token, through the CLI; independent checks with
//! openssl, pkcs11-tool and (in a child process) cryptoki.
//!
//! Each test gets its own SoftHSM2 store (`SOFTHSM2_CONF` -> a fresh token directory). Checks that
//! load the module in-process run in a child process of this test binary (the `probe_*` helpers),
//! because SoftHSM reads `SOFTHSM2_CONF` once per process and tests run in parallel threads.
#![cfg(feature = "pkcs11")]

use crate::util;

use std::time::Instant;

use util::softhsm::{SoftHsm, MODULE};
use util::{dir_entries, run, tool, Run};

const SO_PIN: &str = "87654321";

/// Extra environment variables for one run.
type Env<'a> = &'a [(&'a str, &'a str)];

/// A store with one token `node` whose user PIN is `pin`, a PIN file holding it (with the
/// newline `echo` writes) and the key reference naming `object` through that file.
struct Fixture {
    hsm: SoftHsm,
    reference: String,
}

impl Fixture {
    fn new(pin: &str, object: &str) -> Fixture {
        let hsm = SoftHsm::new();
        hsm.init_token("node", SO_PIN, pin);
        let pin_file = hsm.write_pin_file(pin);
        let reference = format!(
            "pkcs11:token=node;object={object}?pin-source=file:{}",
            pin_file.display()
        );
        Fixture { hsm, reference }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["--key", &self.reference, "--pkcs11-lib", MODULE]);
        run(&all, &self.hsm.env())
    }
}

/// Writes a PIN file as an operator should: mode 0600.
fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The PEM block of a command's output (drops `# ...` comment lines).
fn pem_block(text: &str) -> String {
    let start = text
        .find("-----BEGIN PUBLIC KEY-----")
        .unwrap_or_else(|| panic!("no public key in {text:?}"));
    text[start..].trim().to_string()
}

/// Private key objects on the token, as pkcs11-tool lists them: (label, access line).
fn private_keys(hsm: &SoftHsm, pin: &str) -> Vec<(String, String)> {
    let r = hsm.pkcs11_tool(&[
        "--token-label",
        "node",
        "--login",
        "--pin",
        pin,
        "--list-objects",
        "--type",
        "privkey",
    ]);
    r.ok();
    let mut keys = Vec::new();
    let mut label = None;
    for line in r.stdout.lines().map(str::trim) {
        if let Some(l) = line.strip_prefix("label:") {
            label = Some(l.trim().to_string());
        }
        if let Some(access) = line.strip_prefix("Access:") {
            keys.push((label.take().unwrap_or_default(), access.trim().to_string()));
        }
    }
    keys
}

fn create_csr_and_reuse(algorithm: &str, openssl_alg: &str) {
    let fx = Fixture::new("246810", "nodekey");
    let first = fx.run(&["key", "create", "--algorithm", algorithm]);
    first.ok();
    let created = pem_block(&first.stdout);

    let out = fx.hsm.dir().join("req.pem");
    fx.run(&[
        "csr",
        "--common-name",
        "node-7",
        "--dns-name",
        "node-7.example.com",
        "--ip-address",
        "192.0.2.7",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    let req = out.to_str().unwrap();
    let v = tool(
        "openssl",
        &["req", "-in", req, "-verify", "-noout", "-text"],
        &[],
    );
    v.ok();
    assert!(
        format!("{}{}", v.stdout, v.stderr).contains("verify OK"),
        "{}\n{}",
        v.stdout,
        v.stderr
    );
    for needle in [
        "Subject: CN = node-7",
        "DNS:node-7.example.com",
        "IP Address:192.0.2.7",
        openssl_alg,
    ] {
        assert!(
            v.stdout.contains(needle),
            "CSR lacks {needle}:\n{}",
            v.stdout
        );
    }

    let csr_key = tool("openssl", &["req", "-in", req, "-noout", "-pubkey"], &[]);
    csr_key.ok();
    let show = fx.run(&["key", "show"]);
    show.ok();
    assert!(
        show.stdout.contains(&format!("# algorithm: {algorithm}")),
        "{}",
        show.stdout
    );
    assert_eq!(pem_block(&csr_key.stdout), pem_block(&show.stdout));
    assert_eq!(pem_block(&show.stdout), created);

    // Idempotent: same key, and no second key pair on the token.
    let second = fx.run(&["key", "create", "--algorithm", algorithm]);
    second.ok();
    assert_eq!(pem_block(&second.stdout), created);
    let keys = private_keys(&fx.hsm, "246810");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].0, "nodekey");

    // The other algorithm on the same reference is refused, and creates nothing.
    let other = if algorithm == "rsa-2048" {
        "ecdsa-p256"
    } else {
        "rsa-2048"
    };
    let r = fx.run(&["key", "create", "--algorithm", other]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("exists as {algorithm}")),
        "{}",
        r.stderr
    );
    assert_eq!(private_keys(&fx.hsm, "246810").len(), 1);
}

#[test]
fn ecdsa_p256_key_create_csr_and_reuse() {
    create_csr_and_reuse("ecdsa-p256", "ecdsa-with-SHA256");
}

#[test]
fn rsa_2048_key_create_csr_and_reuse() {
    create_csr_and_reuse("rsa-2048", "sha256WithRSAEncryption");
}

#[test]
fn generated_keys_are_sensitive_and_never_extractable() {
    let pin = "135790";
    let fx = Fixture::new(pin, "eckey");
    fx.run(&["key", "create", "--algorithm", "ecdsa-p256"]).ok();
    let rsa_ref = fx.reference.replace("object=eckey", "object=rsakey");
    run(
        &[
            "key",
            "create",
            "--algorithm",
            "rsa-2048",
            "--key",
            &rsa_ref,
            "--pkcs11-lib",
            MODULE,
        ],
        &fx.hsm.env(),
    )
    .ok();

    // Independent reading: pkcs11-tool's view of the attributes.
    let keys = private_keys(&fx.hsm, pin);
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (label, access) in &keys {
        let flags: Vec<&str> = access.split(", ").collect();
        for want in ["sensitive", "always sensitive", "never extractable"] {
            assert!(flags.contains(&want), "{label}: {access}");
        }
        assert!(!flags.contains(&"extractable"), "{label}: {access}");
    }

    // C_GetAttributeValue on the secret parts must be refused (checked through cryptoki in a
    // child process that has this store's SOFTHSM2_CONF from the start).
    let mut env = fx.hsm.env();
    env.extend([
        ("HB_PROBE_TOKEN", "node"),
        ("HB_PROBE_PIN", pin),
        ("HB_PROBE_LABELS", "eckey,rsakey"),
    ]);
    let r = child("probe_private_key_attributes", &env);
    r.ok();
    for label in ["eckey", "rsakey"] {
        assert!(
            r.stdout.contains(&format!("PROBE-OK {label}")),
            "{}\n{}",
            r.stdout,
            r.stderr
        );
    }
}

#[test]
fn missing_token_label_is_one_clear_line_and_writes_nothing() {
    let fx = Fixture::new("112233", "nodekey");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("req.pem");
    let reference = fx.reference.replace("token=node", "token=edge-hsm");
    for args in [
        vec!["key", "create"],
        vec!["csr", "--common-name", "n", "--out", out.to_str().unwrap()],
    ] {
        let mut all = args.clone();
        all.extend(["--key", &reference, "--pkcs11-lib", MODULE]);
        let r = run(&all, &fx.hsm.env());
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("no PKCS#11 token with label \"edge-hsm\""),
            "{}",
            r.stderr
        );
        // Names the labels that are there (and not the free, uninitialised slot).
        assert!(
            r.stderr.contains("tokens present: \"node\")"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stdout, "");
    }
    assert!(dir_entries(out_dir.path()).is_empty());
    assert!(private_keys(&fx.hsm, "112233").is_empty());
}

#[test]
fn missing_module_is_one_clear_line() {
    let fx = Fixture::new("121212", "nodekey");
    let lib = fx.hsm.dir().join("libnothing.so");
    // (No module at all means p11-kit's proxy module, as aws_signing_helper does: see
    // signing_helper::.) A named module that is not there is one line.
    let mut all = vec!["key", "create", "--key", fx.reference.as_str()];
    all.extend(["--pkcs11-lib", lib.to_str().unwrap()]);
    let r = run(&all, &fx.hsm.env());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("libnothing.so: no such file"),
        "{}",
        r.stderr
    );
    // The environment variable works as the flag does.
    let r = run(
        &["key", "create", "--key", &fx.reference],
        &[
            ("SOFTHSM2_CONF", fx.hsm.env()[0].1),
            ("HYBRIDBOOT_PKCS11_LIB", MODULE),
        ],
    );
    r.ok();
}

#[test]
fn wrong_pin_is_one_clear_line_and_writes_nothing() {
    let fx = Fixture::new("445566", "nodekey");
    fx.run(&["key", "create"]).ok();
    write_private(&fx.hsm.dir().join("pin"), "999999\n");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("req.pem");
    for args in [
        vec!["key", "create", "--key", fx.reference.as_str()],
        vec![
            "csr",
            "--common-name",
            "n",
            "--out",
            out.to_str().unwrap(),
            "--key",
            fx.reference.as_str(),
        ],
    ] {
        let mut all = args.clone();
        all.extend(["--pkcs11-lib", MODULE]);
        let r = run(&all, &fx.hsm.env());
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("PKCS#11 token \"node\" rejected the PIN"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stdout, "");
    }
    assert!(dir_entries(out_dir.path()).is_empty());
    assert_eq!(private_keys(&fx.hsm, "445566").len(), 1);
}

#[test]
fn readable_pin_file_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new("314159", "nodekey");
    let first = fx.run(&["key", "create"]);
    first.ok();
    assert!(!first.stderr.contains("warn"), "{}", first.stderr);
    let pin_file = fx.hsm.dir().join("pin");
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = fx.run(&["key", "show"]);
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "PIN file {} is readable by group or others (mode 644)",
            pin_file.display()
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("314159"), "{}", r.stderr);
}

#[test]
fn pins_never_reach_stderr_even_at_trace() {
    const FILE_PIN: &str = "pinfile-7f3a9c";
    const ENV_PIN: &str = "pinenv-51d2e8";
    const URI_PIN: &str = "pinuri-c40b17";
    let hsm = SoftHsm::new();
    hsm.init_token("by-file", SO_PIN, FILE_PIN);
    hsm.init_token("by-env", SO_PIN, ENV_PIN);
    hsm.init_token("by-uri", SO_PIN, URI_PIN);
    let right_file = hsm.dir().join("right");
    write_private(&right_file, &format!("{FILE_PIN}\n"));
    let wrong_file = hsm.dir().join("wrong");
    write_private(&wrong_file, &format!("{ENV_PIN}\n"));
    let file_ref = |token: &str, object: &str, file: &std::path::Path| {
        format!(
            "pkcs11:token={token};object={object}?pin-source=file:{}",
            file.display()
        )
    };
    let env_ref = |token: &str, object: &str| format!("pkcs11:token={token};object={object}");
    let uri_ref =
        |pin: &str, object: &str| format!("pkcs11:token=by-uri;object={object}?pin-value={pin}");

    let base = hsm.env();
    let mut with_env = hsm.env();
    with_env.push(("HYBRIDBOOT_PKCS11_PIN", ENV_PIN));
    let mut wrong_env = hsm.env();
    wrong_env.push(("HYBRIDBOOT_PKCS11_PIN", FILE_PIN));

    // (arguments, environment, should succeed)
    let cases: Vec<(Vec<String>, Env, bool)> = vec![
        // Success paths.
        (
            vec![
                "key".into(),
                "create".into(),
                "--key".into(),
                file_ref("by-file", "k", &right_file),
            ],
            &base,
            true,
        ),
        (
            vec![
                "csr".into(),
                "--common-name".into(),
                "n".into(),
                "--key".into(),
                file_ref("by-file", "k", &right_file),
            ],
            &base,
            true,
        ),
        (
            vec![
                "key".into(),
                "create".into(),
                "--key".into(),
                env_ref("by-env", "k"),
            ],
            &with_env,
            true,
        ),
        (
            vec![
                "csr".into(),
                "--common-name".into(),
                "n".into(),
                "--key".into(),
                env_ref("by-env", "k"),
            ],
            &with_env,
            true,
        ),
        (
            vec![
                "key".into(),
                "create".into(),
                "--key".into(),
                uri_ref(URI_PIN, "k"),
            ],
            &base,
            true,
        ),
        // Error paths: wrong PIN from each source, missing token, missing key.
        (
            vec![
                "key".into(),
                "show".into(),
                "--key".into(),
                file_ref("by-file", "k", &wrong_file),
            ],
            &base,
            false,
        ),
        (
            vec![
                "key".into(),
                "show".into(),
                "--key".into(),
                env_ref("by-env", "k"),
            ],
            &wrong_env,
            false,
        ),
        (
            vec![
                "key".into(),
                "show".into(),
                "--key".into(),
                uri_ref(ENV_PIN, "k"),
            ],
            &base,
            false,
        ),
        (
            vec![
                "key".into(),
                "show".into(),
                "--key".into(),
                env_ref("absent", "k"),
            ],
            &with_env,
            false,
        ),
        (
            vec![
                "key".into(),
                "show".into(),
                "--key".into(),
                env_ref("by-env", "nokey"),
            ],
            &with_env,
            false,
        ),
        (
            vec![
                "key".into(),
                "show".into(),
                "--key".into(),
                uri_ref(URI_PIN, "nokey"),
            ],
            &base,
            false,
        ),
    ];
    for (args, env, succeeds) in cases {
        let mut all: Vec<&str> = vec!["-vvv"];
        all.extend(args.iter().map(String::as_str));
        all.extend(["--pkcs11-lib", MODULE]);
        let r = run(&all, env);
        assert_eq!(r.code == 0, succeeds, "{all:?}\n{}", r.stderr);
        // Proves the logging really was verbose, so the absence below means something.
        assert!(
            r.stderr.contains("debug: opening key"),
            "{all:?}\n{}",
            r.stderr
        );
        for pin in [FILE_PIN, ENV_PIN, URI_PIN] {
            assert!(
                !r.stderr.contains(pin) && !r.stdout.contains(pin),
                "PIN {pin} leaked by {all:?}:\n{}{}",
                r.stdout,
                r.stderr
            );
        }
    }
}

/// pkcs11-tool's view of a public key, as PEM (independent of hybridboot's attribute parsing).
fn pkcs11_tool_public_pem(hsm: &SoftHsm, label: &str) -> String {
    let der = hsm.dir().join(format!("{label}.pub.der"));
    hsm.pkcs11_tool(&[
        "--token-label",
        "node",
        "--read-object",
        "--type",
        "pubkey",
        "--label",
        label,
        "-o",
        der.to_str().unwrap(),
    ])
    .ok();
    let pem = tool(
        "openssl",
        &[
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
        ],
        &[],
    );
    pem.ok();
    pem_block(&pem.stdout)
}

#[test]
fn keys_provisioned_by_other_tools_are_used_by_label_or_id() {
    let pin = "102938";
    let fx = Fixture::new(pin, "unused");
    let pin_file = fx.hsm.dir().join("pin");
    for (label, id, key_type) in [
        ("factory-ec", "0a0b", "EC:prime256v1"),
        ("factory-rsa", "0c0d", "rsa:2048"),
    ] {
        fx.hsm
            .pkcs11_tool(&[
                "--token-label",
                "node",
                "--login",
                "--pin",
                pin,
                "--keypairgen",
                "--key-type",
                key_type,
                "--label",
                label,
                "--id",
                id,
            ])
            .ok();
        let expected = pkcs11_tool_public_pem(&fx.hsm, label);
        let by_id = format!("id=%{}%{}", &id[..2], &id[2..]);
        for naming in [
            format!("object={label}"),
            by_id.clone(),
            format!("object={label};{by_id}"),
        ] {
            let reference = format!(
                "pkcs11:token=node;{naming}?pin-source=file:{}",
                pin_file.display()
            );
            let show = run(
                &["key", "show", "--key", &reference, "--pkcs11-lib", MODULE],
                &fx.hsm.env(),
            );
            show.ok();
            assert_eq!(pem_block(&show.stdout), expected, "{naming}");
            // And it signs: a CSR that openssl verifies.
            let out = fx.hsm.dir().join("req.pem");
            run(
                &[
                    "csr",
                    "--common-name",
                    "factory",
                    "--out",
                    out.to_str().unwrap(),
                    "--key",
                    &reference,
                    "--pkcs11-lib",
                    MODULE,
                ],
                &fx.hsm.env(),
            )
            .ok();
            tool(
                "openssl",
                &["req", "-in", out.to_str().unwrap(), "-verify", "-noout"],
                &[],
            )
            .ok();
        }
    }
}

#[test]
fn unusable_keys_are_refused_with_one_clear_line() {
    let pin = "564738";
    let fx = Fixture::new(pin, "unused");
    let pin_file = fx.hsm.dir().join("pin");
    for (label, args, needle) in [
        (
            "p384",
            vec!["--key-type", "EC:secp384r1"],
            "EC key on curve secp384r1",
        ),
        (
            "rsa1024",
            vec!["--key-type", "rsa:1024"],
            "RSA key of 1024 bits",
        ),
    ] {
        let mut all = vec![
            "--token-label",
            "node",
            "--login",
            "--pin",
            pin,
            "--keypairgen",
            "--label",
            label,
        ];
        all.extend(args);
        fx.hsm.pkcs11_tool(&all).ok();
        let reference = format!(
            "pkcs11:token=node;object={label}?pin-source=file:{}",
            pin_file.display()
        );
        for cmd in [vec!["key", "show"], vec!["key", "create"]] {
            let mut all = cmd.clone();
            all.extend(["--key", &reference, "--pkcs11-lib", MODULE]);
            let r = run(&all, &fx.hsm.env());
            assert_eq!(r.code, 3, "{all:?}: {}", r.stderr);
            assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
            assert!(r.stderr.contains(needle), "{all:?}: {}", r.stderr);
            assert_eq!(r.stdout, "");
        }
    }
    // A key that needs the PIN for every signature opens (its public key shows), but signs
    // only with --reuse-pin: without it, one line saying to pass the flag.
    fx.hsm
        .pkcs11_tool(&[
            "--token-label",
            "node",
            "--login",
            "--pin",
            pin,
            "--keypairgen",
            "--label",
            "always",
            "--key-type",
            "EC:prime256v1",
            "--always-auth",
        ])
        .ok();
    let reference = format!(
        "pkcs11:token=node;object=always?pin-source=file:{}",
        pin_file.display()
    );
    let key = ["--key", &reference, "--pkcs11-lib", MODULE];
    let show = run(&[&["key", "show"][..], &key].concat(), &fx.hsm.env());
    show.ok();
    let csr = [&["csr", "--common-name", "node-1"][..], &key].concat();
    let r = run(&csr, &fx.hsm.env());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("CKA_ALWAYS_AUTHENTICATE") && r.stderr.contains("pass --reuse-pin"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn open_and_sign_latency_and_concurrent_signatures() {
    let fx = Fixture::new("dbg-pin-778899", "eckey");
    fx.run(&["key", "create", "--algorithm", "ecdsa-p256"]).ok();
    let rsa_ref = fx.reference.replace("object=eckey", "object=rsakey");
    run(
        &[
            "key",
            "create",
            "--algorithm",
            "rsa-2048",
            "--key",
            &rsa_ref,
            "--pkcs11-lib",
            MODULE,
        ],
        &fx.hsm.env(),
    )
    .ok();
    let mut env = fx.hsm.env();
    env.extend([
        ("HB_PROBE_KEYS", fx.reference.as_str()),
        ("HB_PROBE_KEYS2", rsa_ref.as_str()),
        ("HB_PROBE_PIN", "dbg-pin-778899"),
    ]);
    let r = child("probe_open_and_sign", &env);
    r.ok();
    for alg in ["first open", "ecdsa-p256", "rsa-2048"] {
        let line = r
            .stdout
            .lines()
            .find_map(|l| l.find(&format!("LATENCY {alg}")).map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("no latency for {alg}:\n{}\n{}", r.stdout, r.stderr));
        println!("{line}");
    }
}

/// Runs one `probe_*` helper of this test binary in a child process with `env`.
fn child(name: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = util::helper_test(&format!("pkcs11::{name}"));
    cmd.arg("--nocapture").envs(env.iter().copied());
    cmd.output().expect("running the test binary").into()
}

/// Child-process helper of `generated_keys_are_sensitive_and_never_extractable`: reads the
/// private keys' attributes with cryptoki and tries to read their secret values.
#[test]
#[ignore = "helper: run in a child process by generated_keys_are_sensitive_and_never_extractable"]
fn probe_private_key_attributes() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let (Ok(token), Ok(pin), Ok(labels)) = (
        std::env::var("HB_PROBE_TOKEN"),
        std::env::var("HB_PROBE_PIN"),
        std::env::var("HB_PROBE_LABELS"),
    ) else {
        eprintln!("probe_private_key_attributes: not started by its parent test; nothing to do");
        return;
    };
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == token)
        .expect("token");
    let session = ctx.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(pin.into())))
        .unwrap();
    for label in labels.split(',') {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "{label}");
        let key = found[0];
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Private,
                    AttributeType::Token,
                    AttributeType::Sign,
                ],
            )
            .unwrap();
        let mut seen = 0;
        for a in attrs {
            match a {
                Attribute::Sensitive(v)
                | Attribute::AlwaysSensitive(v)
                | Attribute::NeverExtractable(v)
                | Attribute::Private(v)
                | Attribute::Token(v)
                | Attribute::Sign(v) => assert!(v, "{label}: {a:?}"),
                Attribute::Extractable(v) => assert!(!v, "{label}: extractable"),
                other => panic!("{label}: unexpected {other:?}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 7, "{label}: some attributes missing");
        // EC keys keep the secret in CKA_VALUE, RSA keys in CKA_PRIVATE_EXPONENT (and primes).
        let secret_types = [
            AttributeType::Value,
            AttributeType::PrivateExponent,
            AttributeType::Prime1,
        ];
        let info = session.get_attribute_info(key, &secret_types).unwrap();
        assert!(
            info.iter().any(|i| matches!(i, AttributeInfo::Sensitive)),
            "{label}: {info:?}"
        );
        assert!(
            info.iter()
                .all(|i| matches!(i, AttributeInfo::Sensitive | AttributeInfo::TypeInvalid)),
            "{label}: secret attribute readable: {info:?}"
        );
        let values = session.get_attributes(key, &secret_types).unwrap();
        assert!(values.is_empty(), "{label}: read {values:?}");
        println!("PROBE-OK {label}");
    }
}

/// Child-process helper of `open_and_sign_latency_and_concurrent_signatures`: opens each key
/// in-process, times open and sign, and signs from several threads at once, verifying every
/// signature against the public key.
#[test]
#[ignore = "helper: run in a child process by open_and_sign_latency_and_concurrent_signatures"]
fn probe_open_and_sign() {
    use hybridboot::key::{self, KeyOptions, KeyRef, OpenMode};

    let keys: Vec<String> = ["HB_PROBE_KEYS", "HB_PROBE_KEYS2"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    if keys.is_empty() {
        eprintln!("probe_open_and_sign: not started by its parent test; nothing to do");
        return;
    }
    let opts = KeyOptions {
        pkcs11_lib: Some(MODULE.into()),
        ..Default::default()
    };
    // A PIN given in the URI is not in the key's Debug or description.
    let pin = std::env::var("HB_PROBE_PIN").unwrap();
    let by_value =
        KeyRef::parse(&format!("pkcs11:token=node;object=eckey?pin-value={pin}")).unwrap();
    let t = Instant::now();
    let k = key::open(&by_value, &opts, OpenMode::Existing).unwrap();
    println!(
        "LATENCY first open (loads and initialises the module) {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    for text in [
        format!("{k:?}"),
        k.describe(),
        format!("{by_value:?}"),
        by_value.to_string(),
    ] {
        assert!(!text.contains(&pin), "{text}");
    }
    assert!(k.sign(b"hello").is_ok());
    drop(k);

    for reference in keys {
        let r = KeyRef::parse(&reference).unwrap();
        let t = Instant::now();
        let k = key::open(&r, &opts, OpenMode::Existing).unwrap();
        let open = t.elapsed();
        let digest = [7u8; 32];
        let t = Instant::now();
        let sig = k.sign_digest(&digest).unwrap();
        let first_sign = t.elapsed();
        assert!(key::verify_digest(k.public_key_der(), &digest, &sig));

        // Time the token alone: verifying (debug-built p256/rsa) is slower than signing.
        let n = 20u32;
        let digests: Vec<[u8; 32]> = (0..n).map(|i| [i as u8; 32]).collect();
        let t = Instant::now();
        let sigs: Vec<Vec<u8>> = digests.iter().map(|d| k.sign_digest(d).unwrap()).collect();
        let per_sign = t.elapsed() / n;
        for (d, s) in digests.iter().zip(&sigs) {
            assert!(key::verify_digest(k.public_key_der(), d, s));
        }

        // The session is shared behind a mutex: concurrent callers must all get valid signatures.
        std::thread::scope(|scope| {
            for t in 0..4u8 {
                let k = &k;
                scope.spawn(move || {
                    for i in 0..5u8 {
                        let d = [t * 16 + i; 32];
                        let s = k.sign_digest(&d).unwrap();
                        assert!(key::verify_digest(k.public_key_der(), &d, &s));
                    }
                });
            }
        });
        // Another part of the process logs the application out of the token (C_Logout ends
        // the login of every session): the key must log in again by itself and keep signing.
        {
            use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
            use cryptoki::session::SessionState;
            let ctx = Pkcs11::new(MODULE).unwrap();
            let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
            let slot = ctx
                .get_slots_with_token()
                .unwrap()
                .into_iter()
                .find(|s| ctx.get_token_info(*s).unwrap().label() == "node")
                .unwrap();
            let other = ctx.open_ro_session(slot).unwrap();
            assert!(matches!(
                other.get_session_info().unwrap().session_state(),
                SessionState::RoUser
            ));
            other.logout().unwrap();
            assert!(matches!(
                other.get_session_info().unwrap().session_state(),
                SessionState::RoPublic
            ));
            let d = [0x5a; 32];
            let s = k.sign_digest(&d).unwrap();
            assert!(key::verify_digest(k.public_key_der(), &d, &s));
        }
        println!(
            "LATENCY {} open {:.1} ms, first sign {:.1} ms, sign {:.2} ms (mean of {n})",
            k.algorithm(),
            open.as_secs_f64() * 1e3,
            first_sign.as_secs_f64() * 1e3,
            per_sign.as_secs_f64() * 1e3
        );
    }
}
