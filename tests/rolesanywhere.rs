//! IAM Roles Anywhere against the real peers: hybridboot `credential-process`, `update`, `serve`
//! and `credentials inspect` with TPM (swtpm), PKCS#11 (SoftHSM2) and file keys, certificates
//! from OpenBao (or a test CA where OpenBao is not the point), the project's CreateSession
//! endpoint (tests/peers/rolesanywhere.py) and moto verifying the minted credentials' signatures.
#![cfg_attr(not(all(feature = "tpm", feature = "pkcs11")), allow(dead_code))]
use crate::util;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use util::openbao::OpenBao;
use util::peers::{MiniCa, Moto, RaOptions, RolesAnywhere};
use util::softhsm::SoftHsm;
use util::swtpm::Swtpm;
use util::{imds, run, Background, Run};

const CN: &str = "node-1.example.com";

#[derive(Debug, Clone, Copy)]
#[allow(dead_code)]
enum Backend {
    File,
    Tpm,
    Pkcs11,
}

/// Where node keys live, and the environment hybridboot needs to reach them.
struct Keys {
    env: Vec<(String, String)>,
    backend: Backend,
    dir: PathBuf,
    _tpm: Option<Swtpm>,
    _hsm: Option<SoftHsm>,
    pin_file: Option<PathBuf>,
}

impl Keys {
    fn new(backend: Backend, dir: &Path) -> Keys {
        let mut env: Vec<(String, String)> = ["no_proxy", "NO_PROXY"]
            .iter()
            .map(|k| (k.to_string(), "127.0.0.1,localhost".to_string()))
            .collect();
        let (tpm, hsm, pin_file) = match backend {
            Backend::File => (None, None, None),
            Backend::Tpm => {
                let tpm = Swtpm::start();
                env.push(("HYBRIDBOOT_TCTI".into(), tpm.tcti()));
                (Some(tpm), None, None)
            }
            Backend::Pkcs11 => {
                let hsm = SoftHsm::new();
                hsm.init_token("node", "so-pin-1234", "user-pin-5678");
                let pin = hsm.write_pin_file("user-pin-5678");
                env.extend(hsm.hybridboot_env());
                (None, Some(hsm), Some(pin))
            }
        };
        Keys {
            env,
            backend,
            dir: dir.to_path_buf(),
            _tpm: tpm,
            _hsm: hsm,
            pin_file,
        }
    }

    /// Creates key number `n` of `algorithm`; returns its reference.
    fn create(&self, n: u32, algorithm: &str) -> String {
        let reference = match self.backend {
            Backend::File => self.dir.join(format!("key-{n}.pem")).display().to_string(),
            Backend::Tpm => format!("handle:0x{:08x}", 0x8100_0010 + n),
            Backend::Pkcs11 => format!(
                "pkcs11:token=node;object=key-{n}?pin-source=file:{}",
                self.pin_file.as_ref().unwrap().display()
            ),
        };
        self.hb(
            &[
                "key",
                "create",
                "--key",
                &reference,
                "--algorithm",
                algorithm,
            ],
            &[],
        )
        .ok();
        reference
    }

    fn env_with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        env.extend_from_slice(extra);
        env
    }

    fn hb(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        run(args, &self.env_with(extra))
    }

    /// A CSR for `CN` signed by `key`, written to `out`.
    fn csr(&self, key: &str, out: &Path) {
        self.hb(
            &[
                "csr",
                "--key",
                key,
                "--common-name",
                CN,
                "--dns-name",
                CN,
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        )
        .ok();
    }
}

/// `credential-process` arguments for this endpoint, certificate and key.
fn ra_args(ra: &RolesAnywhere, cert: &Path, key: &str) -> Vec<String> {
    let mut a = vec![
        "credential-process".to_string(),
        "--certificate".into(),
        cert.display().to_string(),
        "--private-key".into(),
        key.into(),
        "--role-session-name".into(),
        CN.into(),
    ];
    a.extend(ra.flags());
    a
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The error lines of a run's stderr.
fn error_lines(r: &Run) -> Vec<String> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

/// Exactly one error line, containing every needle (case-insensitive); non-zero exit.
fn assert_one_clear_line(r: &Run, what: &str, needles: &[&str]) {
    assert_ne!(r.code, 0, "{what}: expected failure\n{}", r.stderr);
    assert!(
        r.stdout.is_empty(),
        "{what}: stdout must stay empty on failure"
    );
    let lines = error_lines(r);
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one error line:\n{}",
        r.stderr
    );
    let lower = lines[0].to_ascii_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_ascii_lowercase()),
            "{what}: {n:?} not in {:?}",
            lines[0]
        );
    }
    eprintln!("{what}: exit {} | {}", r.code, lines[0]);
}

/// The credential_process JSON.
fn parse_creds(r: &Run) -> serde_json::Value {
    r.ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON on stdout");
    assert_eq!(v["Version"], 1);
    for f in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(
            v[f].as_str().is_some_and(|s| !s.is_empty()),
            "{f} missing in credential_process output"
        );
    }
    v
}

fn assert_no_secrets(stderr: &str, creds: &serde_json::Value) {
    for f in ["SecretAccessKey", "SessionToken"] {
        let s = creds[f].as_str().unwrap();
        assert!(!stderr.contains(s), "{f} appears in stderr");
    }
}

const BOTO3_SCRIPT: &str = r#"
import sys, boto3
s = boto3.Session(profile_name="default")
sts = s.client("sts", endpoint_url=sys.argv[1])
eks = s.client("eks", endpoint_url=sys.argv[1])
print(sts.get_caller_identity()["Arn"])
print(eks.describe_cluster(name=sys.argv[2])["cluster"]["status"])
"#;

/// boto3, through an AWS config file whose `credential_process` runs hybridboot, calls STS
/// GetCallerIdentity and EKS DescribeCluster on moto (signatures checked).
fn boto3_via_config(keys: &Keys, moto: &Moto, dir: &Path, process_args: &[String]) -> Run {
    let line: Vec<String> = std::iter::once(util::bin().display().to_string())
        .chain(process_args.iter().cloned())
        .collect();
    let config = dir.join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = us-east-1\ncredential_process = {}\n",
            line.join(" ")
        ),
    )
    .unwrap();
    let mut cmd = Command::new(util::python());
    cmd.args(["-c", BOTO3_SCRIPT, &moto.endpoint, &moto.cluster_name()]);
    for v in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("AWS_CONFIG_FILE", &config)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-such-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in keys.env_with(&[]) {
        cmd.env(k, v);
    }
    cmd.output().expect("python").into()
}

/// The main scenario for one hardware backend: OpenBao issues the certificate from its issuing
/// CA, the trust anchor is OpenBao's root; for ECDSA and RSA keys: without --intermediates the
/// endpoint does not trust it; with them, boto3 uses our credential_process to call moto.
fn hardware_scenario(backend: Backend) {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let bao = OpenBao::start();
    let moto = Moto::start();
    let ra = RolesAnywhere::start(&RaOptions::new(&[&bao.pki_root]).sts(&moto));
    eprintln!("{backend:?}: peers up in {:?}", t0.elapsed());
    let keys = Keys::new(backend, dir.path());
    let cache = dir.path().join("cache");
    let cache_s = cache.display().to_string();
    for (n, algorithm) in [(0, "ecdsa-p256"), (1, "rsa-2048")] {
        let key = keys.create(n, algorithm);
        let csr = dir.path().join(format!("node-{n}.csr"));
        keys.csr(&key, &csr);
        let cert_pem = bao.ok(&[
            "write",
            "-field=certificate",
            "pki_int/sign/node",
            &format!("csr=@{}", csr.display()),
            &format!("common_name={CN}"),
            "ttl=2h",
        ]);
        let cert = dir.path().join(format!("node-{n}.crt"));
        std::fs::write(&cert, cert_pem).unwrap();

        // inspect: key type, serials, subject, chain link to OpenBao's issuing CA.
        let inspect = keys.hb(
            &[
                "credentials",
                "inspect",
                "--certificate",
                cert.to_str().unwrap(),
                "--intermediates",
                bao.pki_issuing.to_str().unwrap(),
            ],
            &[],
        );
        inspect.ok();
        let openssl_serial = util::tool(
            "openssl",
            &["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()],
            &[],
        );
        let hex = openssl_serial.stdout.trim().trim_start_matches("serial=");
        let hex = hex.trim_start_matches('0').to_ascii_lowercase();
        assert!(
            inspect.stdout.contains(&format!("serial (hex): {hex}")),
            "{}",
            inspect.stdout
        );
        let alg_name = if n == 0 { "ecdsa" } else { "rsa" };
        assert!(inspect.stdout.to_ascii_lowercase().contains(alg_name));
        assert!(inspect.stdout.contains(CN));
        assert!(inspect
            .stdout
            .contains("Hybridboot Test Issuing CA (not after"));
        assert!(inspect.stdout.contains("signs the previous"));

        // Without the intermediate, the root alone cannot vouch for the leaf.
        let mut args = ra_args(&ra, &cert, &key);
        args.push("--no-cache".into());
        let r = keys.hb(&refs(&args), &[]);
        assert_one_clear_line(
            &r,
            &format!("{backend:?} {algorithm} without --intermediates"),
            &["does not trust", "--intermediates"],
        );

        // With it: boto3 consumes our output and moto accepts the signatures.
        let mut args = ra_args(&ra, &cert, &key);
        args.extend([
            "--intermediates".to_string(),
            bao.pki_issuing.display().to_string(),
            "--cache-dir".into(),
            cache_s.clone(),
        ]);
        let before = ra.stats()["ok"].as_u64().unwrap();
        let t = Instant::now();
        let r = boto3_via_config(&keys, &moto, dir.path(), &args);
        assert_eq!(
            r.code,
            0,
            "boto3 failed:\n{}\n{}",
            r.stderr,
            ra.process.log_text()
        );
        let mut lines = r.stdout.lines();
        let arn = lines.next().unwrap();
        assert!(
            arn.contains("assumed-role/hybrid-node/") && arn.contains(CN),
            "caller identity {arn}"
        );
        assert_eq!(lines.next(), Some("ACTIVE"));
        let after = ra.stats()["ok"].as_u64().unwrap();
        assert_eq!(after, before + 1, "boto3's calls share one CreateSession");
        eprintln!(
            "{backend:?} {algorithm}: boto3 STS+EKS via credential_process in {:?}",
            t.elapsed()
        );

        // update --once with the hardware key writes the shared credentials file.
        let file = dir.path().join(format!("credentials-{n}"));
        let mut args = ra_args(&ra, &cert, &key);
        args[0] = "update".into();
        args.extend([
            "--intermediates".to_string(),
            bao.pki_issuing.display().to_string(),
            "--once".into(),
            "--profile".into(),
            "hybrid".into(),
            "--credentials-file".into(),
            file.display().to_string(),
        ]);
        keys.hb(&refs(&args), &[]).ok();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("[hybrid]\naws_access_key_id = ASIA"),
            "{text}"
        );

        // Highest verbosity, new session: no secret in stderr.
        let mut args = ra_args(&ra, &cert, &key);
        args.extend([
            "--intermediates".to_string(),
            bao.pki_issuing.display().to_string(),
            "--no-cache".into(),
            "-vvv".into(),
        ]);
        let r = keys.hb(&refs(&args), &[]);
        let creds = parse_creds(&r);
        assert!(
            r.stderr.contains("canonical request"),
            "-vvv shows the trace"
        );
        assert_no_secrets(&r.stderr, &creds);
    }
    eprintln!("{backend:?}: scenario took {:?}", t0.elapsed());
}

#[cfg(feature = "tpm")]
#[test]
fn tpm_keys_openbao_certificates_boto3_describe_cluster() {
    hardware_scenario(Backend::Tpm);
}

#[cfg(feature = "pkcs11")]
#[test]
fn pkcs11_keys_openbao_certificates_boto3_describe_cluster() {
    hardware_scenario(Backend::Pkcs11);
}

/// A file key, a certificate from a test CA, an endpoint trusting it (local credentials).
struct Simple {
    dir: tempfile::TempDir,
    keys: Keys,
    ca: MiniCa,
    ra: RolesAnywhere,
    key: String,
    cert: PathBuf,
}

impl Simple {
    fn new(extra: &[&str]) -> Simple {
        let dir = tempfile::tempdir().unwrap();
        let ca = MiniCa::root(dir.path(), "test-root");
        let mut opts = RaOptions::new(&[&ca.cert]);
        opts.extra = extra.iter().map(|s| s.to_string()).collect();
        let ra = RolesAnywhere::start(&opts);
        let keys = Keys::new(Backend::File, dir.path());
        let key = keys.create(0, "ecdsa-p256");
        let csr = dir.path().join("node.csr");
        keys.csr(&key, &csr);
        let cert = dir.path().join("node.crt");
        ca.issue(&csr, &cert, -60, 7200);
        Simple {
            dir,
            keys,
            ca,
            ra,
            key,
            cert,
        }
    }

    fn args(&self) -> Vec<String> {
        ra_args(&self.ra, &self.cert, &self.key)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn twenty_concurrent_calls_with_a_cold_cache_make_one_create_session() {
    let s = Simple::new(&[]);
    let cache = s.path("cache");
    let mut args = s.args();
    args.extend(["--cache-dir".to_string(), cache.display().to_string()]);
    let t = Instant::now();
    let children: Vec<Child> = (0..20)
        .map(|_| {
            let mut c = Command::new(util::bin());
            c.args(&args).stdout(Stdio::piped()).stderr(Stdio::piped());
            for (k, v) in s.keys.env_with(&[]) {
                c.env(k, v);
            }
            c.spawn().unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().into())
        .collect();
    let elapsed = t.elapsed();
    let ids: Vec<String> = runs
        .iter()
        .map(|r| parse_creds(r)["AccessKeyId"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "all callers share one session"
    );
    let stats = s.ra.stats();
    assert_eq!(stats["total"], 1, "exactly one CreateSession: {stats}");
    assert_eq!(stats["ok"], 1);
    eprintln!("20 concurrent cold-cache credential-process calls: {elapsed:?}, 1 CreateSession");
    // The cache entry is private.
    for name in util::dir_entries(&cache) {
        let mode = std::fs::metadata(cache.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is mode {mode:o}");
    }
    // A warm call is served from the cache; --no-cache makes a new session.
    let t = Instant::now();
    let warm = s.keys.hb(&refs(&args), &[]);
    assert_eq!(parse_creds(&warm)["AccessKeyId"].as_str().unwrap(), ids[0]);
    eprintln!("warm credential-process: {:?}", t.elapsed());
    assert_eq!(s.ra.stats()["total"], 1);
    let mut fresh = s.args();
    fresh.push("--no-cache".into());
    let r = s.keys.hb(&refs(&fresh), &[]);
    assert_ne!(parse_creds(&r)["AccessKeyId"].as_str().unwrap(), ids[0]);
    assert_eq!(s.ra.stats()["total"], 2);
}

/// A rate limit is not a failure: credential-process (4 attempts for errors) outlasts more
/// throttled answers than that within its deadline, while as many 503s make it give up.
/// `credential-process` with its cache left unfinished by a bounded wait: a hang (a FIFO
/// opened for reading blocks until a writer comes) fails the test instead of stalling it.
fn hb_bounded(keys: &Keys, args: &[String], dir: &Path) -> Run {
    let (out, err) = (dir.join("bounded.out"), dir.join("bounded.err"));
    let mut c = Command::new(util::bin());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in keys.env_with(&[]) {
        c.env(k, v);
    }
    let mut child = Background(c.spawn().unwrap());
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "credential-process hangs: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

/// The session cache through the binary: a FIFO or a symbolic link in place of the entry, and a
/// group-writable cache directory, are refused with a warning saying so, and the caller gets a
/// fresh session (never a hang, never the linked file's credentials).
#[test]
fn credential_cache_refuses_fifos_links_and_loose_directories() {
    let s = Simple::new(&[]);
    let cache = s.path("cache");
    let mut args = s.args();
    args.extend(["--cache-dir".to_string(), cache.display().to_string()]);
    let first = parse_creds(&s.keys.hb(&refs(&args), &[]));
    let entries: Vec<String> = util::dir_entries(&cache)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = cache.join(&entries[0]);
    let sessions = || s.ra.stats()["ok"].as_u64().unwrap();
    let before = sessions();

    // A FIFO: no hang, a fresh session, the entry a regular file again.
    std::fs::remove_file(&entry).unwrap();
    let st = Command::new("mkfifo").arg(&entry).status().unwrap();
    assert!(st.success());
    let r = hb_bounded(&s.keys, &args, s.dir.path());
    let fresh = parse_creds(&r);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert_ne!(fresh["AccessKeyId"], first["AccessKeyId"]);
    assert_eq!(sessions(), before + 1);
    assert!(std::fs::symlink_metadata(&entry).unwrap().is_file());

    // A symbolic link to a valid entry of ours elsewhere: not followed.
    let planted = s.path("planted.json");
    std::fs::copy(&entry, &planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&planted, &entry).unwrap();
    let r = hb_bounded(&s.keys, &args, s.dir.path());
    let again = parse_creds(&r);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_ne!(
        again["AccessKeyId"], fresh["AccessKeyId"],
        "the link was followed"
    );
    assert_eq!(sessions(), before + 2);

    // A group-writable directory: not used, and the warning says what to fix.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o770)).unwrap();
    let r = hb_bounded(&s.keys, &args, s.dir.path());
    parse_creds(&r);
    assert!(
        r.stderr.contains("group- or world-writable")
            && r.stderr.contains(&cache.display().to_string()),
        "{}",
        r.stderr
    );
    assert_eq!(sessions(), before + 3);
    let r = hb_bounded(&s.keys, &args, s.dir.path());
    parse_creds(&r);
    assert_eq!(
        sessions(),
        before + 4,
        "a loose cache directory is never used"
    );
}

/// Throttled waits grow with each throttle in a row (about 2, 3.5, 6, 9 and 14 s here), so
/// the call is given `--retry-deadline 2m`, as a fleet behind a rate limit would be.
#[test]
fn throttling_does_not_use_up_attempts_but_errors_do() {
    let s = Simple::new(&[]);
    let mut args = s.args();
    args.push("--no-cache".into());
    args.extend(["--retry-deadline".to_string(), "2m".to_string()]);
    s.ra.control(
        "fault",
        Some(serde_json::json!({"mode": "429", "count": 5})),
    );
    let r = s.keys.hb(&refs(&args), &[]);
    parse_creds(&r);
    let stats = s.ra.stats();
    assert_eq!(
        (stats["faulted"].as_u64(), stats["ok"].as_u64()),
        (Some(5), Some(1)),
        "{stats}"
    );

    s.ra.control("reset", Some(serde_json::json!({})));
    s.ra.control(
        "fault",
        Some(serde_json::json!({"mode": "503", "count": 6})),
    );
    let r = s.keys.hb(&refs(&args), &[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let stats = s.ra.stats();
    assert_eq!(
        (stats["faulted"].as_u64(), stats["ok"].as_u64()),
        (Some(4), Some(0)),
        "{stats}"
    );
}

#[test]
fn endpoint_from_environment_and_region_checks() {
    let s = Simple::new(&[]);
    // No --endpoint: AWS_ENDPOINT_URL_ROLESANYWHERE wins over AWS_ENDPOINT_URL.
    let args = s.args();
    let mut without = Vec::new();
    let mut skip = false;
    for a in &args {
        if skip {
            skip = false;
            continue;
        }
        if a == "--endpoint" {
            skip = true;
            continue;
        }
        without.push(a.clone());
    }
    without.push("--no-cache".into());
    let ep = s.ra.endpoint();
    let r = s.keys.hb(
        &refs(&without),
        &[
            ("AWS_ENDPOINT_URL_ROLESANYWHERE", &ep),
            ("AWS_ENDPOINT_URL", "https://127.0.0.1:1"),
        ],
    );
    parse_creds(&r);
    let r = s.keys.hb(&refs(&without), &[("AWS_ENDPOINT_URL", &ep)]);
    parse_creds(&r);
    // Trust anchor and profile in different regions.
    let mut bad = without.clone();
    let i = bad.iter().position(|a| a == "--profile-arn").unwrap();
    bad[i + 1] = bad[i + 1].replace("us-east-1", "eu-west-1");
    let r = s.keys.hb(&refs(&bad), &[("AWS_ENDPOINT_URL", &ep)]);
    assert_one_clear_line(&r, "region mismatch", &["same region"]);
    assert_eq!(r.code, 3);
}

#[test]
fn negatives_fail_with_one_clear_line_each() {
    let s = Simple::new(&[]);
    let mut base = s.args();
    base.push("--no-cache".into());
    // The setup works.
    parse_creds(&s.keys.hb(&refs(&base), &[]));

    let with_cert = |cert: &Path| -> Vec<String> {
        let mut a = base.clone();
        let i = a.iter().position(|x| x == "--certificate").unwrap();
        a[i + 1] = cert.display().to_string();
        a
    };

    // Tampered certificate: one bit of the CA's signature flipped.
    let pem = std::fs::read_to_string(&s.cert).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let last = der.len() - 3;
    der[last] ^= 0x01;
    let tampered = s.path("tampered.crt");
    std::fs::write(&tampered, &der).unwrap();
    let r = s.keys.hb(&refs(&with_cert(&tampered)), &[]);
    assert_one_clear_line(&r, "tampered certificate", &["does not trust"]);
    assert_eq!(r.code, 3);

    // Wrong key for the certificate.
    let other_key = s.keys.create(1, "ecdsa-p256");
    let mut a = base.clone();
    let i = a.iter().position(|x| x == "--private-key").unwrap();
    a[i + 1] = other_key;
    let r = s.keys.hb(&refs(&a), &[]);
    assert_one_clear_line(&r, "wrong key", &["does not belong to the certificate"]);
    assert_eq!(r.code, 3);

    // Untrusted issuer: another CA.
    let rogue = MiniCa::root(s.dir.path(), "rogue-root");
    let rogue_cert = s.path("rogue.crt");
    rogue.issue(&s.path("node.csr"), &rogue_cert, -60, 3600);
    let r = s.keys.hb(&refs(&with_cert(&rogue_cert)), &[]);
    assert_one_clear_line(&r, "untrusted issuer", &["does not trust", "rogue-root"]);
    assert_eq!(r.code, 3);

    // Expired certificate.
    let expired = s.path("expired.crt");
    s.ca.issue(&s.path("node.csr"), &expired, -7200, -3600);
    let r = s.keys.hb(&refs(&with_cert(&expired)), &[]);
    assert_one_clear_line(&r, "expired certificate", &["expired", "renew"]);
    assert_eq!(r.code, 3);

    // AccessDenied: a session name other than the CN (the usual trust policy condition).
    let mut a = base.clone();
    let i = a.iter().position(|x| x == "--role-session-name").unwrap();
    a[i + 1] = "other-node".into();
    let r = s.keys.hb(&refs(&a), &[]);
    assert_one_clear_line(
        &r,
        "access denied",
        &["denied CreateSession", "other-node", "trust policy", "CN"],
    );
    assert_eq!(r.code, 3);

    // Skewed clock: the service's clock (and Date header) is an hour ahead of ours.
    s.ra.control("clock", Some(serde_json::json!({"offset_seconds": 3600})));
    let r = s.keys.hb(&refs(&base), &[]);
    assert_one_clear_line(&r, "skewed clock", &["clock is off by -3", "Date header"]);
    s.ra.control("clock", Some(serde_json::json!({"offset_seconds": 0})));
    parse_creds(&s.keys.hb(&refs(&base), &[]));
}

fn spawn_bg(keys: &Keys, args: &[String], stderr: &Path) -> Background {
    let mut c = Command::new(util::bin());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap());
    for (k, v) in keys.env_with(&[]) {
        c.env(k, v);
    }
    Background(c.spawn().unwrap())
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            eprintln!("{what}: after {:?}", t.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {limit:?}");
}

/// botocore's credential chain with nothing but IMDS at `endpoint` (the instance-role
/// provider, IMDSv2): its "method access_key" line and its stderr.
fn botocore_imds(s: &Simple, endpoint: &str) -> (String, String) {
    let out = Command::new(util::python())
        .args([
            "-c",
            "import boto3; c = boto3.Session().get_credentials(); print(c.method, c.access_key)",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", s.path("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", s.path("no-credentials"))
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
        // A loaded test machine must not make botocore give up on a served request.
        .env("AWS_METADATA_SERVICE_TIMEOUT", "10")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One raw request to serve on `port` with `host` as the Host header: status and body.
fn imds_with_host(port: u16, host: &str, head: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "{head}Host: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// `n` slowloris clients: connections that send half a request head and then nothing, kept
/// open (reopened as soon as the server closes one) until the returned flag is set.
fn idle_connections(
    port: u16,
    n: usize,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<usize>,
) {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let open = move || -> Option<TcpStream> {
        let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .ok()?;
        c.set_nonblocking(true).ok()?;
        Some(c)
    };
    let handle = std::thread::spawn(move || {
        let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
        let mut reopened = 0usize;
        while !flag.load(Ordering::SeqCst) {
            for slot in conns.iter_mut() {
                let alive = slot.as_mut().is_some_and(|c| {
                    let mut b = [0u8; 64];
                    matches!(c.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock)
                });
                if !alive {
                    *slot = open();
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        reopened
    });
    (stop, handle)
}

/// `serve` answers only loopback hosts with its port and the IMDS address (DNS rebinding), and
/// a client that sends its request is served while 100 idle connections are held open.
#[test]
fn serve_refuses_foreign_hosts_and_outlasts_idle_connections() {
    let s = Simple::new(&[]);
    let port = util::free_port();
    let mut args = s.args();
    args[0] = "serve".into();
    args.extend(["--port".to_string(), port.to_string(), "-vv".to_string()]);
    let log = s.path("serve.log");
    let _serve = spawn_bg(&s.keys, &args, &log);
    let creds_path = "/latest/meta-data/iam/security-credentials/hybrid-node";
    wait_until("serve has credentials", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && {
            let token = util::imds_token(port);
            imds(
                port,
                "GET",
                creds_path,
                &[("X-aws-ec2-metadata-token", &token)],
            )
            .0 == 200
        }
    });

    // A page rebound to 127.0.0.1 sends its own name as Host: no token, no credentials.
    let put = "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n";
    for host in [
        format!("rebound.example:{port}"),
        "rebound.example".to_string(),
        "127.0.0.1:1".to_string(),
        format!("169.254.169.254:{port}"),
    ] {
        let (st, body) = imds_with_host(port, &host, put);
        assert_eq!(st, 403, "{host}: {body}");
        assert!(body.contains("Host not allowed"), "{host}: {body}");
    }
    let token = util::imds_token(port);
    let get = format!("GET {creds_path} HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n");
    let (st, body) = imds_with_host(port, &format!("rebound.example:{port}"), &get);
    assert_eq!(st, 403, "{body}");
    assert!(!body.contains("AccessKeyId"), "{body}");
    let (st, body) = imds_with_host(port, &format!("localhost:{port}"), &get);
    assert_eq!(st, 200, "{body}");
    let key = serde_json::from_str::<serde_json::Value>(&body).unwrap()["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_string();

    // botocore pointed at serve, by address and by name.
    for endpoint in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        let (line, err) = botocore_imds(&s, &endpoint);
        assert_eq!(line, format!("iam-role {key}"), "{endpoint}: {err}");
    }

    // Slowloris: 100 idle connections held open; botocore is still served, three times.
    let (stop, idle) = idle_connections(port, 100);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let (line, err) = botocore_imds(&s, &format!("http://127.0.0.1:{port}/"));
        assert_eq!(
            line,
            format!("iam-role {key}"),
            "while idle clients wait: {err}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reopened = idle.join().unwrap();
    eprintln!("idle connections reopened by the attacker: {reopened}");
}

fn access_key_in(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    // The key of profile [default] (other profiles may come first).
    let section = text.split("[default]").nth(1)?;
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("aws_access_key_id = ").map(str::to_string))
}

/// A CreateSession answer whose session token carries a line break and an INI section
/// (`[evil]`, `credential_process = ...`): refused as an operator error (exit 3) before anything
/// is written, the shared credentials file byte for byte as it was, nothing cached, no forged
/// log line.
#[test]
fn a_session_token_with_a_line_break_is_refused_before_anything_is_written() {
    let s = Simple::new(&[]);
    let file = s.path("credentials");
    let cache = s.path("cache");
    let mut update = s.args();
    update[0] = "update".into();
    update.extend([
        "--credentials-file".to_string(),
        file.display().to_string(),
        "--once".to_string(),
    ]);
    s.keys.hb(&refs(&update), &[]).ok();
    let good = std::fs::read(&file).unwrap();

    s.ra.control(
        "fault",
        Some(serde_json::json!({"mode": "newline-token", "forever": true})),
    );
    let injected =
        |r: &Run| r.stderr.contains("[evil]") || r.stderr.contains("credential_process =");
    let r = s.keys.hb(&refs(&update), &[]);
    assert_one_clear_line(
        &r,
        "update",
        &["invalid credential set", "sessionToken", "line break"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!injected(&r), "{}", r.stderr);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        good,
        "credentials file changed"
    );

    let mut process = s.args();
    process.extend(["--cache-dir".to_string(), cache.display().to_string()]);
    let r = s.keys.hb(&refs(&process), &[]);
    assert_one_clear_line(&r, "credential-process", &["sessionToken", "line break"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!injected(&r), "{}", r.stderr);
    let cached: Vec<String> = util::dir_entries(&cache)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(cached.is_empty(), "cached: {cached:?}");
    // The endpoint did answer (200) each time: the refusal is ours.
    assert!(
        s.ra.stats()["ok"].as_u64().unwrap() >= 3,
        "{}",
        s.ra.stats()
    );
}

#[test]
fn update_keeps_the_last_good_credentials_and_serve_never_serves_empty_keys() {
    let s = Simple::new(&[]);
    let file = s.path("credentials");
    std::fs::write(
        &file,
        "# managed by ops\n[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other\n",
    )
    .unwrap();
    let update_args = |extra: &[&str]| -> Vec<String> {
        let mut a = s.args();
        a[0] = "update".into();
        let i = a.iter().position(|x| x == "--role-session-name").unwrap();
        a.drain(i..i + 2); // the session name is optional: the endpoint then uses the serial
        a.extend(["--credentials-file".to_string(), file.display().to_string()]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };

    // A good update, at the highest verbosity: no secret in stderr.
    let r = s.keys.hb(&refs(&update_args(&["--once", "-vvv"])), &[]);
    r.ok();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# managed by ops\n[other]\naws_access_key_id = AKIAOTHER\n"));
    let secret = text
        .lines()
        .filter_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .nth(1)
        .unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("aws_session_token = "))
        .unwrap();
    assert!(!r.stderr.contains(secret) && !r.stderr.contains(token));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let good = std::fs::read(&file).unwrap();
    let first_key = access_key_in(&file).unwrap();

    // The endpoint starts failing: --once fails (retry-later), the file is untouched.
    s.ra.control(
        "fault",
        Some(serde_json::json!({"mode": "503", "forever": true})),
    );
    let r = s.keys.hb(&refs(&update_args(&["--once"])), &[]);
    assert_one_clear_line(&r, "update --once while failing", &["503"]);
    assert_eq!(r.code, 4);
    assert_eq!(std::fs::read(&file).unwrap(), good);

    // The long-running update keeps the file and retries with backoff until it recovers.
    let log = s.path("update.log");
    let _update = spawn_bg(&s.keys, &update_args(&[]), &log);
    wait_until("update logged the failure", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("keeps whatever credentials it had")
    });
    assert_eq!(std::fs::read(&file).unwrap(), good, "old credentials kept");

    // Recovery: the next retry writes new credentials (other profile intact).
    s.ra.control("recover", Some(serde_json::json!({})));
    wait_until(
        "update wrote new credentials",
        Duration::from_secs(30),
        || access_key_in(&file).is_some_and(|k| k != first_key),
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("[other]\naws_access_key_id = AKIAOTHER\n"));
    eprintln!("update log:\n{}", std::fs::read_to_string(&log).unwrap());
    drop(_update);

    // serve, started while failing: an error status, never empty keys.
    s.ra.control(
        "fault",
        Some(serde_json::json!({"mode": "503", "forever": true})),
    );
    let port = util::free_port();
    let mut serve_args = s.args();
    serve_args[0] = "serve".into();
    serve_args.extend(["--port".to_string(), port.to_string()]);
    let serve_log = s.path("serve.log");
    let _serve = spawn_bg(&s.keys, &serve_args, &serve_log);
    wait_until("serve listening", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let token = util::imds_token(port);
    let auth = [("X-aws-ec2-metadata-token", token.as_str())];
    let (st, role) = imds(
        port,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &auth,
    );
    assert_eq!((st, role.as_str()), (200, "hybrid-node"));
    let creds_path = "/latest/meta-data/iam/security-credentials/hybrid-node";
    wait_until("serve tried once", Duration::from_secs(20), || {
        std::fs::read_to_string(&serve_log)
            .unwrap_or_default()
            .contains("serving the previous credentials")
    });
    let (st, body) = imds(port, "GET", creds_path, &auth);
    assert!(
        st >= 500,
        "error status while no credentials, got {st} {body}"
    );
    assert!(!body.contains("AccessKeyId"), "no keys in {body}");
    // No IMDSv1, no proxied requests.
    assert_eq!(imds(port, "GET", creds_path, &[]).0, 401);
    let mut proxied = auth.to_vec();
    proxied.push(("X-Forwarded-For", "10.0.0.1"));
    assert_eq!(imds(port, "GET", creds_path, &proxied).0, 403);

    // Recovery: serve's next retry gets a session and serves it.
    s.ra.control("recover", Some(serde_json::json!({})));
    let mut served = serde_json::Value::Null;
    wait_until("serve has credentials", Duration::from_secs(30), || {
        let (st, body) = imds(port, "GET", creds_path, &auth);
        if st == 200 {
            served = serde_json::from_str(&body).unwrap();
        }
        st == 200
    });
    assert_eq!(served["Code"], "Success");
    assert_eq!(served["Type"], "AWS-HMAC");
    for f in [
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
        "LastUpdated",
    ] {
        assert!(served[f].as_str().is_some_and(|v| !v.is_empty()), "{f}");
    }
    // An SDK (botocore's IMDSv2 provider) takes them from serve.
    let (line, err) = botocore_imds(&s, &format!("http://127.0.0.1:{port}/"));
    assert_eq!(
        line,
        format!("iam-role {}", served["AccessKeyId"].as_str().unwrap()),
        "botocore: {err}"
    );
    let serve_stderr = std::fs::read_to_string(&serve_log).unwrap();
    assert!(!serve_stderr.contains(served["SecretAccessKey"].as_str().unwrap()));
    assert!(!serve_stderr.contains(served["Token"].as_str().unwrap()));
}
