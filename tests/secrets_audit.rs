//! The secrets audit (issue 11): every command that touches a secret runs at `-vvv` against the
//! real peers with known, distinctive secret values, and no secret may appear
//!
//! - in stderr (logs, warnings, errors, panic messages: a panic prints to stderr, and any
//!   `panicked at` fails the audit by itself);
//! - in stdout, except the documented machine output, checked field by field:
//!   * `credential-process`: the credential_process JSON carries the AWS secret key and session
//!     token in `SecretAccessKey` / `SessionToken` (that is its purpose: the SDK reads them);
//!     nothing else in it may be a secret;
//!   * `token`: the ExecCredential's `status.token` is an EKS bearer token, `k8s-aws-v1.` +
//!     base64url(presigned STS GetCallerIdentity URL). Like every EKS token (aws-iam-authenticator,
//!     `aws eks get-token`) the URL carries the session token (`X-Amz-Security-Token`) and the
//!     access key id; the secret access key only as the signature derived from it. So: the
//!     decoded URL without its `X-Amz-Security-Token` parameter holds no secret, and the rest of
//!     the JSON holds none;
//!   * `serve` answers credentials over HTTP (its purpose); its own stdout/stderr hold none;
//! - in any file under the directories hybridboot was given (work dir, `--root`s, HOME, the
//!   session cache dir), nor in `/run/hybridboot`, `/dev/shm` or new files directly in `/tmp`,
//!   except the documented credential files, which must be mode 0600:
//!   * the inputs the operator provides (Vault token file, AppRole role-id/secret-id files, PIN
//!     file, TPM auth value file);
//!   * the shared credentials file `update` writes (`--credentials-file`);
//!   * the Roles Anywhere session cache entries (`--cache-dir`, `*.json`).
//!
//! Each secret is searched raw, percent-encoded and base64-encoded.
//!
//! Secrets: a Vault token with a chosen id (token file and `VAULT_TOKEN`), a chosen AppRole
//! secret id (plain, and response-wrapped: the wrapping token too), the role id, OpenBao's root
//! token, a PKCS#11 PIN (SoftHSM2: from a `pin-source` file and from `HYBRIDBOOT_PKCS11_PIN`), a
//! TPM key auth value (swtpm, `--tpm-key-auth-file`), and every AWS secret access key and session
//! token the run sees (moto's STS via the Roles Anywhere endpoint, learnt from the documented
//! outputs above, so later commands are checked against every session minted so far).
//!
//! The Debug output of the secret-holding public types is checked at the end of this file.
#![cfg(all(feature = "tpm", feature = "pkcs11"))]
use crate::util;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use util::config::{firstboot_yaml, BootstrapConfig, NodeConfig, WRAPPED_APPROLE_AUTH};
use util::openbao::OpenBao;
use util::peers::{MiniCa, Moto, RaOptions, RolesAnywhere};
use util::softhsm::SoftHsm;
use util::swtpm::Swtpm;
use util::{imds, Background, Run};

const CN: &str = "node-1.example.com";
const PIN: &str = "audit-pin-Mv52LqZ8";
const TPM_AUTH: &str = "audit-tpm-auth-Rw8NpK3";
const VAULT_TOKEN: &str = "audit-vault-token-Kq93Zr4T";
const SECRET_ID: &str = "audit-secret-id-Jx7Wd2Pm";
const WRAPPED_SECRET_ID: &str = "audit-wrapped-secret-id-Hn4Vb8Qs";
const FIRSTBOOT_SECRET_ID: &str = "audit-firstboot-secret-id-Gc6Ty1Lo";

/// The secrets of one audit and the documented places they may be.
struct Audit {
    /// (name, value).
    secrets: Vec<(String, String)>,
    /// Every run so far: (what, result, how its stdout is checked).
    runs: Vec<(String, Run, Stdout)>,
    /// Directories walked at the end.
    dirs: Vec<PathBuf>,
    /// Documented credential files (may hold secrets; must be 0600).
    credential_files: Vec<PathBuf>,
    /// Directories whose `*.json` files are session cache entries (credential files).
    cache_dirs: Vec<PathBuf>,
    started: SystemTime,
}

/// How a command's stdout is checked.
#[derive(Clone, Copy, Debug)]
enum Stdout {
    /// No secret at all.
    Plain,
    /// credential_process JSON: `SecretAccessKey` and `SessionToken` are the documented output.
    CredentialProcess,
    /// An ExecCredential: `status.token` is an EKS token (may carry the session token).
    ExecCredential,
}

/// The forms a leaked value would take: raw, percent-encoded, base64 (standard and URL-safe).
fn forms(value: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value);
    // The first 3n bytes encode to a stable prefix wherever the value sits in a base64 stream
    // aligned to its start; longer than 12 characters so that it stays distinctive.
    let cut = |s: &str| s[..(s.len() / 4) * 4].to_string();
    let mut v = vec![
        value.to_string(),
        percent_encode(value),
        cut(&b64),
        cut(&b64url),
    ];
    v.retain(|s| s.len() >= 12);
    v.dedup();
    v
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Audit {
    fn new() -> Audit {
        Audit {
            secrets: Vec::new(),
            runs: Vec::new(),
            dirs: Vec::new(),
            credential_files: Vec::new(),
            cache_dirs: Vec::new(),
            started: SystemTime::now(),
        }
    }

    fn secret(&mut self, name: &str, value: &str) {
        assert!(value.len() >= 12, "{name} is too short to search for");
        if !self.secrets.iter().any(|(_, v)| v == value) {
            self.secrets.push((name.to_string(), value.to_string()));
        }
    }

    /// Writes an operator-provided secret file (0600) and records it as a credential file.
    fn secret_file(&mut self, path: &Path, content: &str) -> String {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.credential_files.push(path.to_path_buf());
        path.display().to_string()
    }

    /// Names of the secrets found in `data`.
    fn found_in(&self, data: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(data);
        self.secrets
            .iter()
            .filter(|(_, v)| forms(v).iter().any(|f| text.contains(f.as_str())))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn record(&mut self, what: &str, run: Run, stdout: Stdout) -> Run {
        let copy = Run {
            code: run.code,
            stdout: run.stdout.clone(),
            stderr: run.stderr.clone(),
        };
        self.runs.push((what.to_string(), run, stdout));
        copy
    }

    /// Learns the AWS secrets of a credential_process JSON document.
    fn learn_credential_process(&mut self, json: &str) {
        let v: serde_json::Value = serde_json::from_str(json.trim()).expect("credential JSON");
        self.secret(
            "AWS secret access key",
            v["SecretAccessKey"].as_str().unwrap(),
        );
        self.secret("AWS session token", v["SessionToken"].as_str().unwrap());
    }

    /// Learns the AWS secrets of a shared credentials file.
    fn learn_credentials_file(&mut self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "aws_secret_access_key" => self.secret("AWS secret access key", v.trim()),
                    "aws_session_token" => self.secret("AWS session token", v.trim()),
                    _ => {}
                }
            }
        }
    }

    /// The stdout left after removing what the rule documents, plus any problem with its form.
    fn stdout_without_documented(&self, run: &Run, rule: Stdout) -> String {
        match rule {
            Stdout::Plain => run.stdout.clone(),
            Stdout::CredentialProcess => {
                let mut v: serde_json::Value =
                    serde_json::from_str(run.stdout.trim()).expect("credential_process JSON");
                let obj = v.as_object_mut().unwrap();
                obj.remove("SecretAccessKey").expect("SecretAccessKey");
                obj.remove("SessionToken").expect("SessionToken");
                v.to_string()
            }
            Stdout::ExecCredential => {
                let mut v: serde_json::Value =
                    serde_json::from_str(run.stdout.trim()).expect("ExecCredential JSON");
                let token = v["status"]["token"].as_str().unwrap().to_string();
                v["status"].as_object_mut().unwrap().remove("token");
                let b64 = token.strip_prefix("k8s-aws-v1.").expect("EKS token prefix");
                let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(b64)
                    .expect("base64url token");
                let url = String::from_utf8(url).expect("a URL");
                let (base, query) = url.split_once('?').expect("presigned URL");
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|p| !p.starts_with("X-Amz-Security-Token="))
                    .collect();
                assert_eq!(
                    kept.len() + 1,
                    query.split('&').count(),
                    "the token carries one X-Amz-Security-Token"
                );
                format!("{v}\n{base}?{}", kept.join("&"))
            }
        }
    }

    /// Checks every run and every file; panics with every finding.
    fn finish(self) {
        let mut findings = Vec::new();
        for (what, run, rule) in &self.runs {
            // `-vvv` took effect (`status` only reads state files and logs nothing; a refusal
            // before any work prints just its error).
            let logged = run.stderr.contains("trace") || run.stderr.contains("debug");
            if !logged && run.code == 0 && what != "status" {
                findings.push(format!("{what}: no -vvv output:\n{}", run.stderr));
            }
            if run.stderr.contains("panicked at") {
                findings.push(format!("{what}: panicked:\n{}", run.stderr));
            }
            for name in self.found_in(run.stderr.as_bytes()) {
                findings.push(format!("{what}: {name} in stderr"));
            }
            let rest = self.stdout_without_documented(run, *rule);
            for name in self.found_in(rest.as_bytes()) {
                findings.push(format!("{what}: {name} in stdout ({rule:?})"));
            }
        }
        let mut files = 0;
        let mut credential_files = 0;
        let mut roots = self.dirs.clone();
        for d in ["/run/hybridboot", "/dev/shm"] {
            if Path::new(d).is_dir() {
                roots.push(d.into());
            }
        }
        let mut all = Vec::new();
        for d in &roots {
            walk(d, &mut all);
        }
        // New files directly in /tmp (not other tests' directories).
        if let Ok(rd) = std::fs::read_dir("/tmp") {
            for e in rd.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_file() && meta.modified().is_ok_and(|m| m >= self.started) {
                    all.push(e.path());
                }
            }
        }
        for path in all {
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            files += 1;
            let found = self.found_in(&data);
            if found.is_empty() {
                continue;
            }
            let documented = self.credential_files.contains(&path)
                || (path.extension().is_some_and(|e| e == "json")
                    && path
                        .parent()
                        .is_some_and(|p| self.cache_dirs.iter().any(|c| c == p)));
            if !documented {
                findings.push(format!("{}: holds {found:?}", path.display()));
                continue;
            }
            credential_files += 1;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if mode != 0o600 {
                findings.push(format!("{}: credential file mode {mode:o}", path.display()));
            }
        }
        eprintln!(
            "audit: {} secrets, {} runs, {files} files ({credential_files} documented credential files)",
            self.secrets.len(),
            self.runs.len()
        );
        for (what, run, _) in &self.runs {
            eprintln!("  {what}: exit {}", run.code);
        }
        assert!(findings.is_empty(), "leaks:\n{}", findings.join("\n"));
    }
}

/// Every regular file under `dir` (not following symbolic links).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            walk(&e.path(), out);
        } else if meta.is_file() {
            out.push(e.path());
        }
    }
}

/// Runs hybridboot with no inherited AWS/Vault/hybridboot settings, HOME and the session cache
/// in `home`, loopback off any proxy, plus `env`.
fn hb(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    hb_command(home, args, env)
        .output()
        .expect("running hybridboot")
        .into()
}

fn hb_command(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(util::bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_")
            || k.starts_with("HYBRIDBOOT_")
            || k.starts_with("VAULT_")
            || k.starts_with("TPM2TOOLS_")
            || k == "KUBERNETES_EXEC_INFO"
            || k == "RUNTIME_DIRECTORY"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home)
        .env("HYBRIDBOOT_CACHE_DIR", home.join("cache"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

/// A PKCS#11 token in SoftHSM2 with PIN [`PIN`] and its environment.
fn hsm_with_token(audit: &mut Audit, dir: &Path) -> (SoftHsm, String, Vec<(String, String)>) {
    let hsm = SoftHsm::new();
    hsm.init_token("node", "audit-so-pin-Xe31", PIN);
    audit.secret("PKCS#11 PIN", PIN);
    let pin_file = audit.secret_file(&dir.join("pin"), &format!("{PIN}\n"));
    let env = hsm.hybridboot_env();
    (hsm, pin_file, env)
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[test]
fn vault_commands_at_vvv_never_show_tokens_secret_ids_pins_or_tpm_auth() {
    let mut audit = Audit::new();
    let bao = OpenBao::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    audit.dirs.push(w.to_path_buf());
    audit.cache_dirs.push(w.join("cache"));
    audit.secret("OpenBao root token", &bao.root_token);
    audit.secret("AppRole role id", &bao.role_id);

    // Known values: a token with a chosen id, chosen secret ids (one response-wrapped).
    bao.ok(&[
        "token",
        "create",
        &format!("-id={VAULT_TOKEN}"),
        "-policy=node",
        "-ttl=10m",
    ]);
    audit.secret("Vault token", VAULT_TOKEN);
    let custom_secret_id = |id: &str, wrap: bool| -> String {
        let mut args = vec!["write"];
        if wrap {
            args.extend(["-wrap-ttl=5m", "-field=wrapping_token"]);
        } else {
            args.push("-field=secret_id");
        }
        let kv = format!("secret_id={id}");
        args.extend(["auth/approle/role/node/custom-secret-id", kv.as_str()]);
        bao.ok(&args).trim().to_string()
    };
    assert_eq!(custom_secret_id(SECRET_ID, false), SECRET_ID);
    audit.secret("AppRole secret id", SECRET_ID);
    let wrapping = custom_secret_id(WRAPPED_SECRET_ID, true);
    audit.secret("AppRole secret id (wrapped)", WRAPPED_SECRET_ID);
    audit.secret("response-wrapping token", &wrapping);

    let role_id = audit.secret_file(&w.join("role-id"), &bao.role_id);
    let token_file = audit.secret_file(&w.join("vault-token"), &format!("{VAULT_TOKEN}\n"));
    let vault = |cert: &str, key: &str| -> Vec<String> {
        [
            "--vault-addr",
            &bao.https_addr(),
            "--vault-ca",
            &bao.listener_ca.display().to_string(),
            "--pki-mount",
            "pki_int",
            "--pki-role",
            "node",
            "--key",
            key,
            "--common-name",
            CN,
            "--certificate",
            &w.join(cert).display().to_string(),
            "--timeout",
            "30s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |audit: &mut Audit,
               what: &str,
               cmd: &str,
               base: &[String],
               extra: &[&str],
               env: &[(&str, &str)]| {
        let mut args = vec!["-vvv", cmd];
        args.extend(base.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let r = hb(w, &args, env);
        audit.record(what, r, Stdout::Plain)
    };

    // 1. File key, token file; then VAULT_TOKEN from the environment; then a refused token.
    let file_key = w.join("file-key.pem").display().to_string();
    hb(w, &["key", "create", "--key", &file_key], &[]).ok();
    let base = vault("file.crt", &file_key);
    run(
        &mut audit,
        "enroll (token file)",
        "enroll",
        &base,
        &["--vault-token-file", &token_file],
        &[],
    )
    .ok();
    run(
        &mut audit,
        "enroll (VAULT_TOKEN)",
        "enroll",
        &base,
        &[],
        &[("VAULT_TOKEN", VAULT_TOKEN)],
    )
    .ok();
    let bad = "audit-refused-token-Pz83Yw";
    audit.secret("refused Vault token", bad);
    let bad_file = audit.secret_file(&w.join("bad-token"), bad);
    run(
        &mut audit,
        "enroll (refused token)",
        "enroll",
        &base,
        &["--vault-token-file", &bad_file],
        &[],
    )
    .failed();

    // 2. PKCS#11 key (PIN from a pin-source file), plain AppRole secret id; then renew with
    //    TLS certificate auth, PIN from HYBRIDBOOT_PKCS11_PIN.
    let (_hsm, pin_file, hsm_env) = hsm_with_token(&mut audit, w);
    let p11 = format!("pkcs11:token=node;object=node?pin-source=file:{pin_file}");
    hb(
        w,
        &["-vvv", "key", "create", "--key", &p11],
        &pairs(&hsm_env),
    )
    .ok();
    let secret_id = audit.secret_file(&w.join("secret-id"), SECRET_ID);
    let base = vault("p11.crt", &p11);
    run(
        &mut audit,
        "enroll (PKCS#11, AppRole)",
        "enroll",
        &base,
        &[
            "--approle-role-id-file",
            &role_id,
            "--approle-secret-id-file",
            &secret_id,
        ],
        &pairs(&hsm_env),
    )
    .ok();
    let p11_env_pin = "pkcs11:token=node;object=node";
    let mut env = pairs(&hsm_env);
    env.push(("HYBRIDBOOT_PKCS11_PIN", PIN));
    run(
        &mut audit,
        "renew (PKCS#11 PIN from env, cert auth)",
        "renew",
        &vault("p11.crt", p11_env_pin),
        &["--cert-auth-role", "node", "--renew-before", "1.0"],
        &env,
    )
    .ok();

    // 3. TPM key with an auth value, wrapped secret id; then renew with cert auth.
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let auth_file = audit.secret_file(&w.join("tpm-auth"), TPM_AUTH);
    audit.secret("TPM key auth value", TPM_AUTH);
    let tpm_env = [("HYBRIDBOOT_TCTI", tcti.as_str())];
    let handle = "handle:0x81000020";
    audit
        .record(
            "key create (TPM auth)",
            hb(
                w,
                &[
                    "-vvv",
                    "key",
                    "create",
                    "--key",
                    handle,
                    "--tpm-key-auth-file",
                    &auth_file,
                ],
                &tpm_env,
            ),
            Stdout::Plain,
        )
        .ok();
    let wrapped_file = audit.secret_file(&w.join("wrapped-secret-id"), &wrapping);
    let base = vault("tpm.crt", handle);
    run(
        &mut audit,
        "enroll (TPM auth, wrapped AppRole)",
        "enroll",
        &base,
        &[
            "--tpm-key-auth-file",
            &auth_file,
            "--approle-role-id-file",
            &role_id,
            "--approle-secret-id-file",
            &wrapped_file,
            "--secret-id-wrapped",
        ],
        &tpm_env,
    )
    .ok();
    assert!(
        !Path::new(&wrapped_file).exists(),
        "spent secret id removed"
    );
    run(
        &mut audit,
        "renew (TPM auth, cert auth)",
        "renew",
        &base,
        &[
            "--tpm-key-auth-file",
            &auth_file,
            "--cert-auth-role",
            "node",
            "--renew-before",
            "1.0",
        ],
        &tpm_env,
    )
    .ok();
    // A wrong auth value: refused, and neither value shown.
    let wrong = audit.secret_file(&w.join("tpm-auth-wrong"), "audit-wrong-tpm-auth-Fb27");
    audit.secret("wrong TPM auth value", "audit-wrong-tpm-auth-Fb27");
    run(
        &mut audit,
        "renew (wrong TPM auth)",
        "renew",
        &base,
        &[
            "--tpm-key-auth-file",
            &wrong,
            "--vault-token-file",
            &token_file,
            "--renew-before",
            "1.0",
        ],
        &tpm_env,
    )
    .failed();

    drop(tpm);
    audit.finish();
}

/// The whole first boot at -vvv: TPM key, enrollment with a response-wrapped AppRole secret
/// id, the Roles Anywhere session (moto's STS), DescribeCluster (moto) and init; then status.
#[test]
fn firstboot_at_vvv_never_shows_secret_ids_wrapping_tokens_or_aws_secrets() {
    let mut audit = Audit::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    audit.dirs.push(w.to_path_buf());
    let (moto, _) = Moto::loopback_cluster(w);
    audit.secret(
        "moto minter secret key",
        moto.setup["secret_access_key"].as_str().unwrap(),
    );
    let bao = OpenBao::start();
    audit.secret("OpenBao root token", &bao.root_token);
    audit.secret("AppRole role id", &bao.role_id);
    let ra = RolesAnywhere::start(&RaOptions::new(&[&bao.pki_root]).sts(&moto));
    let tpm = Swtpm::start();

    let root = w.join("root");
    let etc = root.join("etc/hybridboot");
    std::fs::create_dir_all(&etc).unwrap();
    // As under systemd: no HYBRIDBOOT_CACHE_DIR, so the session cache is <root>/run/hybridboot.
    let cache = root.join("run/hybridboot");
    audit.cache_dirs.push(cache.clone());
    let wrapping = bao
        .ok(&[
            "write",
            "-wrap-ttl=5m",
            "-field=wrapping_token",
            "auth/approle/role/node/custom-secret-id",
            &format!("secret_id={FIRSTBOOT_SECRET_ID}"),
        ])
        .trim()
        .to_string();
    audit.secret("AppRole secret id (firstboot)", FIRSTBOOT_SECRET_ID);
    audit.secret("response-wrapping token (firstboot)", &wrapping);
    audit.secret_file(&etc.join("role-id"), &bao.role_id);
    audit.secret_file(&etc.join("secret-id"), &wrapping);
    // The image's kubelet and CA, and a systemctl that does nothing.
    util::config::seed_image(&root, &ra.tls_ca);
    let systemctl = w.join("systemctl.sh");
    std::fs::write(&systemctl, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = "handle:0x81000021";
    let node = NodeConfig {
        cluster: moto.cluster_name(),
        ..NodeConfig::moto_site(CN, key).with_endpoint(&ra)
    };
    let boot = BootstrapConfig {
        auth: WRAPPED_APPROLE_AUTH.into(),
        ..BootstrapConfig::site(
            key,
            &tpm.tcti(),
            &bao.http_addr(),
            &ra.endpoint(),
            &moto.endpoint,
        )
    };
    std::fs::write(etc.join("config.yaml"), firstboot_yaml(&node, &boot)).unwrap();
    let root_s = root.display().to_string();
    let fb = hb(
        w,
        &[
            &[
                "-vvv",
                "firstboot",
                "--config-source",
                "file:///etc/hybridboot/config.yaml",
                "--root",
                &root_s,
            ][..],
            &util::as_on_the_node()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ]
        .concat(),
        &[
            ("HYBRIDBOOT_SYSTEMCTL", systemctl.to_str().unwrap()),
            ("HYBRIDBOOT_CACHE_DIR", ""),
        ],
    );
    audit.record("firstboot", fb, Stdout::Plain).ok();
    assert!(root.join("var/lib/hybridboot/joined").exists());
    // The session firstboot got (cached: a documented credential file) joins the secrets.
    let mut sessions = 0;
    for name in util::dir_entries(&cache) {
        if name.ends_with(".json") {
            audit.learn_credential_process(&std::fs::read_to_string(cache.join(name)).unwrap());
            sessions += 1;
        }
    }
    assert_eq!(sessions, 1, "firstboot cached its Roles Anywhere session");
    let st = hb(w, &["-vvv", "status", "--json", "--root", &root_s], &[]);
    audit.record("status", st, Stdout::Plain).ok();
    drop(tpm);
    audit.finish();
}

/// Zero-secret enrollment at -vvv: the line side (`factory request`, `factory store`), first
/// boot logging in with the factory identity (IDevID), `renew` with the node certificate, and
/// `status`. Every Vault token the server issued (learnt from its raw audit log) and any PEM
/// private key block are searched in the logs and in every file of the device.
#[test]
fn factory_identity_first_boot_and_renewal_at_vvv_never_show_vault_tokens_or_private_keys() {
    use crate::idevid::{Site, IDEVID_KEY, SERIAL};
    let mut audit = Audit::new();
    let site = Site::start();
    audit.secret("OpenBao root token", &site.bao.root_token);
    audit.secret("PEM private key block", "PRIVATE KEY-----");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    audit.dirs.push(w.to_path_buf());
    let root = w.join("root");
    let root_s = root.display().to_string();
    let cache = root.join("run/hybridboot");
    audit.cache_dirs.push(cache.clone());
    let tcti = site.tpm.tcti();
    let systemctl = w.join("systemctl.sh");
    std::fs::write(&systemctl, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = [
        ("HYBRIDBOOT_TCTI", tcti.as_str()),
        ("HYBRIDBOOT_SYSTEMCTL", systemctl.to_str().unwrap()),
        ("HYBRIDBOOT_CACHE_DIR", ""),
    ];

    let csr = w.join("idevid.csr");
    let r = hb(
        w,
        &[
            "-vvv",
            "factory",
            "request",
            "--key",
            IDEVID_KEY,
            "--serial-number",
            SERIAL,
            "--out",
            csr.to_str().unwrap(),
        ],
        &env,
    );
    audit.record("factory request", r, Stdout::Plain).ok();
    let signed = w.join("idevid-signed.pem");
    std::fs::write(&signed, site.bao.factory_sign(&csr, "8760h")).unwrap();
    let idevid = root.join("etc/hybridboot/idevid.pem");
    std::fs::create_dir_all(idevid.parent().unwrap()).unwrap();
    let r = hb(
        w,
        &[
            "-vvv",
            "factory",
            "store",
            "--key",
            IDEVID_KEY,
            "--serial-number",
            SERIAL,
            "--signed",
            signed.to_str().unwrap(),
            "--out",
            idevid.to_str().unwrap(),
        ],
        &env,
    );
    audit.record("factory store", r, Stdout::Plain).ok();

    site.configure(&root, SERIAL, IDEVID_KEY, "24h");
    let source = [
        "--config-source",
        "file:///etc/hybridboot/config.yaml",
        "--root",
        root_s.as_str(),
    ];
    let node = util::as_on_the_node();
    let node: Vec<&str> = node.iter().map(String::as_str).collect();
    let fb = hb(
        w,
        &[&["-vvv", "firstboot"][..], &source, &node].concat(),
        &env,
    );
    audit.record("firstboot (IDevID)", fb, Stdout::Plain).ok();
    assert!(root.join("var/lib/hybridboot/joined").exists());
    let renew = hb(
        w,
        &[&["-vvv", "renew", "--renew-before", "1.0"][..], &source].concat(),
        &env,
    );
    audit
        .record("renew (node certificate)", renew, Stdout::Plain)
        .ok();
    let st = hb(w, &["-vvv", "status", "--json", "--root", &root_s], &[]);
    audit.record("status", st, Stdout::Plain).ok();

    let tokens = site.bao.issued_tokens();
    // The IDevID login, the node certificate's login; the root token is not in the log.
    assert!(
        tokens.len() >= 2,
        "tokens in the audit log: {}",
        tokens.len()
    );
    for t in &tokens {
        audit.secret("Vault token (issued at login)", t);
    }
    for name in util::dir_entries(&cache) {
        if name.ends_with(".json") {
            audit.learn_credential_process(&std::fs::read_to_string(cache.join(name)).unwrap());
        }
    }
    audit.finish();
}

#[test]
fn aws_commands_at_vvv_never_show_secret_keys_session_tokens_or_pins() {
    let mut audit = Audit::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    audit.dirs.push(w.to_path_buf());
    audit.cache_dirs.push(w.join("cache"));

    // The node's PKCS#11 key and a certificate for it from a test CA (the trust anchor).
    let (_hsm, pin_file, hsm_env) = hsm_with_token(&mut audit, w);
    let key = format!("pkcs11:token=node;object=node?pin-source=file:{pin_file}");
    hb(w, &["key", "create", "--key", &key], &pairs(&hsm_env)).ok();
    let csr = w.join("node.csr");
    let csr_s = csr.display().to_string();
    hb(
        w,
        &["csr", "--key", &key, "--common-name", CN, "--out", &csr_s],
        &pairs(&hsm_env),
    )
    .ok();
    let ca = MiniCa::root(w, "audit-root");
    let cert = w.join("node.crt");
    ca.issue(&csr, &cert, -60, 7200);
    let ca_s = ca.cert.display().to_string();

    // moto (STS mints the sessions; EKS answers DescribeCluster for init) and the endpoint.
    let moto = Moto::start_with(&[
        "--eks-ca-file",
        &ca_s,
        "--eks-endpoint",
        "https://127.0.0.1:9",
    ]);
    audit.secret(
        "moto minter secret key",
        moto.setup["secret_access_key"].as_str().unwrap(),
    );
    let ra = RolesAnywhere::start(&RaOptions::new(&[&ca.cert]).sts(&moto));
    let cert_s = cert.display().to_string();
    let mut ra_args = vec![
        "--certificate".to_string(),
        cert_s.clone(),
        "--private-key".into(),
        key.clone(),
    ];
    ra_args.extend(ra.flags());
    let with = |cmd: &str, extra: &[&str]| -> Vec<String> {
        let mut a = vec!["-vvv".to_string(), cmd.to_string()];
        a.extend(ra_args.iter().cloned());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let env = pairs(&hsm_env);
    // `token` and `kubeconfig` take the Roles Anywhere parameters without --endpoint and
    // --ca-bundle (the endpoint comes from the environment); with the same cache key they use
    // the session credential-process cached.
    let token_ra: Vec<&str> = ra_args[..10].iter().map(String::as_str).collect();
    assert_eq!(token_ra[8], "--role-arn");
    let ra_endpoint = ra.endpoint();
    let mut token_env = env.clone();
    token_env.push(("AWS_ENDPOINT_URL_ROLESANYWHERE", &ra_endpoint));

    // credential-process (a fresh session, then the cached one).
    for what in ["credential-process", "credential-process (cached)"] {
        let args = with("credential-process", &[]);
        let r = hb(
            w,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &env,
        );
        let r = audit.record(what, r, Stdout::CredentialProcess);
        r.ok();
        audit.learn_credential_process(&r.stdout);
    }
    let cache_entries = util::dir_entries(&w.join("cache"));
    assert!(!cache_entries.is_empty(), "the session cache was used");
    for e in &cache_entries {
        let p = w.join("cache").join(e);
        if p.extension().is_some_and(|x| x == "json") {
            audit.learn_credential_process(&std::fs::read_to_string(&p).unwrap());
        }
    }

    // update --once into a shared credentials file (a documented credential file).
    let credfile = w.join("aws-credentials");
    let cf = credfile.display().to_string();
    let args = with("update", &["--once", "--credentials-file", &cf]);
    let r = hb(
        w,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    );
    audit.record("update --once", r, Stdout::Plain).ok();
    audit.credential_files.push(credfile.clone());
    audit.learn_credentials_file(&credfile);

    // serve, queried like an SDK; its stderr goes to a file in the work dir (walked).
    let port = util::free_port();
    let args = with("serve", &["--port", &port.to_string()]);
    let serve_log = w.join("serve.stderr");
    let mut cmd = hb_command(
        w,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    );
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(w.join("serve.stdout")).unwrap())
        .stderr(std::fs::File::create(&serve_log).unwrap());
    let serve = Background(cmd.spawn().unwrap());
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let imds_token = util::imds_token(port);
    let auth = [("X-aws-ec2-metadata-token", imds_token.as_str())];
    let (st, role) = imds(
        port,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &auth,
    );
    assert_eq!(st, 200);
    let mut served = serde_json::Value::Null;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let (st, body) = imds(
            port,
            "GET",
            &format!("/latest/meta-data/iam/security-credentials/{}", role.trim()),
            &auth,
        );
        if st == 200 {
            served = serde_json::from_str(&body).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    audit.secret(
        "AWS secret access key",
        served["SecretAccessKey"].as_str().expect("served"),
    );
    audit.secret("AWS session token", served["Token"].as_str().unwrap());
    drop(serve);
    let serve_run = Run {
        code: 0,
        stdout: std::fs::read_to_string(w.join("serve.stdout")).unwrap(),
        stderr: std::fs::read_to_string(&serve_log).unwrap(),
    };
    assert!(serve_run.stderr.contains("debug") || serve_run.stderr.contains("trace"));
    audit.record("serve", serve_run, Stdout::Plain);

    // token, Roles Anywhere in-process (the cached session).
    let cluster = moto.cluster_name();
    let mut args = vec![
        "-vvv",
        "token",
        "--cluster-name",
        &cluster,
        "--region",
        "us-east-1",
    ];
    args.extend(&token_ra);
    let r = hb(w, &args, &token_env);
    audit
        .record("token (Roles Anywhere)", r, Stdout::ExecCredential)
        .ok();
    // token from the shared credentials file `update` wrote.
    let r = hb(
        w,
        &[
            "-vvv",
            "token",
            "--cluster-name",
            &cluster,
            "--region",
            "us-east-1",
        ],
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", &cf),
            ("AWS_PROFILE", "default"),
        ],
    );
    audit
        .record("token (shared credentials file)", r, Stdout::ExecCredential)
        .ok();

    // kubeconfig: from DescribeCluster (Roles Anywhere credentials, PIN from the file), then with
    // a PIN given in the key reference itself, which must not end up in the file.
    let kc = w.join("user.kubeconfig");
    let kc_s = kc.display().to_string();
    let mut args = vec![
        "-vvv",
        "kubeconfig",
        "--cluster-name",
        &cluster,
        "--region",
        "us-east-1",
        "--out",
        &kc_s,
    ];
    args.extend(&token_ra);
    let mut kenv = token_env.clone();
    kenv.push(("AWS_ENDPOINT_URL_EKS", &moto.endpoint));
    let r = hb(w, &args, &kenv);
    audit
        .record("kubeconfig (DescribeCluster)", r, Stdout::Plain)
        .ok();
    let pin_value_key = "pkcs11:token=node;object=node?pin-value=audit-pin-Mv52LqZ8";
    let kc2 = w.join("user2.kubeconfig");
    let kc2_s = kc2.display().to_string();
    let mut args = vec![
        "-vvv",
        "kubeconfig",
        "--cluster-name",
        &cluster,
        "--region",
        "us-east-1",
        "--server",
        "https://127.0.0.1:9",
        "--certificate-authority",
        &ca_s,
        "--out",
        &kc2_s,
    ];
    let mut ra2 = token_ra.clone();
    ra2[3] = pin_value_key;
    args.extend(ra2);
    let r = hb(w, &args, &env);
    let r = audit.record(
        "kubeconfig (pin-value in the key reference)",
        r,
        Stdout::Plain,
    );
    assert_eq!(
        r.code, 3,
        "refused: the PIN would be stored in clear\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("pin-source"), "{}", r.stderr);
    assert!(!kc2.exists());

    // init with the node role's credentials from the environment (the last session served).
    let root = w.join("root");
    std::fs::create_dir_all(root.join("etc/iam/pki")).unwrap();
    std::fs::copy(&cert, root.join("etc/iam/pki/server.pem")).unwrap();
    let recorder = w.join("systemctl.sh");
    std::fs::write(&recorder, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The node's NodeConfig, read under --root.
    std::fs::create_dir_all(root.join("etc/eks")).unwrap();
    let cfg = root.join("etc/eks/node.yaml");
    std::fs::write(
        &cfg,
        NodeConfig {
            cluster: cluster.clone(),
            node_ip: Some("10.80.0.5".into()),
            certificate_path: Some("/etc/iam/pki/server.pem".into()),
            ..NodeConfig::moto_site(CN, &key).with_endpoint(&ra)
        }
        .yaml(),
    )
    .unwrap();
    let source = "file:///etc/eks/node.yaml".to_string();
    let root_s = root.display().to_string();
    let r = hb(
        w,
        &[
            "-vvv",
            "init",
            "--config-source",
            &source,
            "--root",
            &root_s,
            "--kubelet-version",
            "v1.31.0",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", served["AccessKeyId"].as_str().unwrap()),
            (
                "AWS_SECRET_ACCESS_KEY",
                served["SecretAccessKey"].as_str().unwrap(),
            ),
            ("AWS_SESSION_TOKEN", served["Token"].as_str().unwrap()),
            ("AWS_ENDPOINT_URL_EKS", &moto.endpoint),
            ("HYBRIDBOOT_SYSTEMCTL", recorder.to_str().unwrap()),
        ],
    );
    audit
        .record("init (credentials from env)", r, Stdout::Plain)
        .ok();
    assert!(root.join("var/lib/kubelet/kubeconfig").is_file());
    audit.finish();
}

/// The Debug (and Display, where there is one) output of every public type that holds a secret
/// shows none of it, also pretty-printed. (Unit tests in src/ cover the private ones: the TPM
/// auth value, the SSM activation code field.)
#[test]
fn debug_output_of_secret_holding_types_never_shows_the_secret() {
    use hybridboot::aws::credentials::Credentials;
    use hybridboot::aws::imds;
    use hybridboot::key::uri::KeyRef;
    use hybridboot::key::KeyOptions;
    use hybridboot::secret::Secret;
    const S: &str = "audit-debug-secret-Tq84Xv";
    let check = |what: &str, shown: Vec<String>| {
        for s in shown {
            assert!(!s.contains(S), "{what} shows the secret: {s}");
            assert!(
                !s.contains("Tq84Xv"),
                "{what} shows part of the secret: {s}"
            );
        }
    };
    let secret = Secret::new(S);
    check(
        "Secret",
        vec![
            format!("{secret:?}"),
            format!("{secret:#?}"),
            secret.to_string(),
        ],
    );
    let creds = Credentials {
        access_key_id: "ASIAAUDIT".into(),
        secret_access_key: Secret::new(S),
        session_token: Some(Secret::new(S)),
        expiration: None,
    };
    check(
        "Credentials",
        vec![format!("{creds:?}"), format!("{creds:#?}")],
    );
    let r = KeyRef::parse(&format!("pkcs11:token=t;object=k?pin-value={S}")).unwrap();
    check(
        "KeyRef",
        vec![format!("{r:?}"), format!("{r:#?}"), r.to_string()],
    );
    // Misspelt: the value is still redacted in the error.
    let e = KeyRef::parse(&format!("pkcs11:token=t;object=k?pin-valeu={S}")).unwrap_err();
    check("KeyRef error", vec![format!("{e:?}"), e.to_string()]);
    let opts = KeyOptions {
        pkcs11_pin: Some(Secret::new(S)),
        ..KeyOptions::default()
    };
    check(
        "KeyOptions",
        vec![format!("{opts:?}"), format!("{opts:#?}")],
    );
    let resp = imds::Response {
        status: 200,
        headers: vec![],
        body: Secret::new(format!("{{\"SecretAccessKey\":\"{S}\"}}")),
    };
    check(
        "imds::Response",
        vec![format!("{resp:?}"), format!("{resp:#?}")],
    );
    let ssm = format!(
        "apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster: {{name: c, region: us-west-2}}
  hybrid:
    ssm: {{activationCode: {S}, activationId: id-1}}
"
    );
    // SSM is refused (hybridboot needs a hardware key); the refusal must not echo the code.
    let e = hybridboot::node::config::parse(Path::new("/x.yaml"), &ssm).unwrap_err();
    check("node config error", vec![format!("{e:?}"), e.to_string()]);
}
