//! The Python test peers of tests/peers as subprocesses: moto (STS, IAM, EKS with signature
//! checking), its setup, and the IAM Roles Anywhere `CreateSession` endpoint; plus a small test
//! CA (tests/peers/mini_ca.py) for TLS and for certificates OpenBao cannot make (expired ones).
//!
//! Each server gets fresh state in its own tempdir, binds 127.0.0.1 on a port it picks itself
//! (reported on its first stdout line), runs with `--exit-on-stdin-eof` while this guard holds its
//! stdin, and is killed by PID on drop. Use from any topic module:
//!
//! ```ignore
//! use crate::util::peers::{Moto, RaOptions, RolesAnywhere};
//! let moto = Moto::start();
//! let ra = RolesAnywhere::start(&RaOptions::new(&[root_ca]).sts(&moto));
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub use super::{peers_dir, python};

/// Runs a script of tests/peers with the venv's Python to completion; panics on failure.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(peers_dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A long-running peer: killed by PID (and reaped) on drop.
pub struct PeerProcess {
    child: Child,
    /// Held open: the peer exits when it closes (`--exit-on-stdin-eof`), e.g. if the test dies.
    _stdin: Option<ChildStdin>,
    /// Its first stdout line.
    pub ready: serde_json::Value,
    /// Its log file.
    pub log: PathBuf,
}

impl PeerProcess {
    /// Starts `python tests/peers/<script> args...`, waits up to 60 s for the JSON ready line.
    pub fn spawn(script: &str, args: &[String], log: &Path) -> PeerProcess {
        let stderr = std::fs::File::create(log.with_extension("stderr")).unwrap();
        let mut child = Command::new(python())
            .arg(peers_dir().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {script}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the peer never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let mut guard = PeerProcess {
            child,
            _stdin: stdin,
            ready: serde_json::Value::Null,
            log: log.to_path_buf(),
        };
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        guard.ready = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            let err = std::fs::read_to_string(log.with_extension("stderr")).unwrap_or_default();
            panic!("{script} did not start (first line {line:?}):\n{err}")
        });
        guard
    }

    /// The peer's log so far (log file and stderr).
    pub fn log_text(&self) -> String {
        let a = std::fs::read_to_string(&self.log).unwrap_or_default();
        let b = std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default();
        format!("{a}{b}")
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        super::terminate(self.child.id());
        let _ = self.child.wait();
    }
}

/// moto with the signed-GET fix, populated by moto_setup.py (IAM user, role `hybrid-node`,
/// ACTIVE cluster `hybrid-test` in us-east-1) and with signature checking on.
pub struct Moto {
    /// Holds the peer's state until drop.
    _dir: tempfile::TempDir,
    pub process: PeerProcess,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// moto_setup.py's JSON (holds a secret key: do not print it).
    pub setup: serde_json::Value,
    /// The same JSON as a 0600 file (rolesanywhere.py `--sts-credentials-file`).
    pub setup_file: PathBuf,
}

impl Moto {
    /// Starts and populates a fresh moto.
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// Starts moto with extra moto_server.py arguments (e.g. `--eks-ca-file`), then runs setup.
    pub fn start_with(extra: &[&str]) -> Moto {
        Self::start_configured(extra, &[])
    }

    /// Starts moto with extra moto_server.py arguments, then runs moto_setup.py with extra
    /// arguments (e.g. `--remote-node-cidr 127.0.0.0/8` for a node on loopback).
    pub fn start_configured(extra: &[&str], setup_extra: &[&str]) -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let mut args: Vec<String> = ["--port", "0", "--exit-on-stdin-eof", "--log-file"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(log.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let process = PeerProcess::spawn("moto_server.py", &args, &log);
        let endpoint = process.ready["endpoint"].as_str().unwrap().to_string();
        let setup_file = dir.path().join("moto-setup.json");
        let mut setup_args = vec![
            "--endpoint",
            &endpoint,
            "--out",
            setup_file.to_str().unwrap(),
        ];
        setup_args.extend_from_slice(setup_extra);
        let out = run_script("moto_setup.py", &setup_args);
        let setup: serde_json::Value = serde_json::from_str(out.trim()).expect("moto_setup JSON");
        Moto {
            _dir: dir,
            process,
            endpoint,
            setup,
            setup_file,
        }
    }

    /// The node role's ARN.
    pub fn role_arn(&self) -> String {
        self.setup["role_arn"].as_str().unwrap().to_string()
    }

    /// Credentials of the node role (`access key id, secret, session token`), assumed through
    /// moto's STS with the setup user's key by boto3 (not by hybridboot).
    pub fn assume_role(&self, session_name: &str) -> (String, String, String) {
        let out = Command::new(python())
            .arg("-c")
            .arg(
                "import boto3,json,sys\n\
                 s=json.load(open(sys.argv[1]))\n\
                 c=boto3.client('sts',endpoint_url=s['endpoint'],region_name='us-east-1',\
                 aws_access_key_id=s['access_key_id'],aws_secret_access_key=s['secret_access_key'])\n\
                 r=c.assume_role(RoleArn=s['role_arn'],RoleSessionName=sys.argv[2])['Credentials']\n\
                 print(json.dumps([r['AccessKeyId'],r['SecretAccessKey'],r['SessionToken']]))",
            )
            .arg(&self.setup_file)
            .arg(session_name)
            .output()
            .expect("running the venv's python");
        assert!(
            out.status.success(),
            "assume_role: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("assume_role JSON")
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> String {
        self.setup["cluster"]["name"].as_str().unwrap().to_string()
    }
}

/// A test CA made by tests/peers/mini_ca.py (P-256, SHA-256).
pub struct MiniCa {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl MiniCa {
    /// A new root CA in `dir` (files `<name>.pem`, `<name>.key`).
    pub fn root(dir: &Path, name: &str) -> MiniCa {
        let ca = MiniCa {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        run_script(
            "mini_ca.py",
            &[
                "ca",
                ca.cert.to_str().unwrap(),
                ca.key.to_str().unwrap(),
                name,
            ],
        );
        ca
    }

    /// An intermediate CA signed by this one.
    // Only e2e, which needs both key backends, uses it.
    #[cfg_attr(not(all(feature = "tpm", feature = "pkcs11")), allow(dead_code))]
    pub fn intermediate(&self, dir: &Path, name: &str) -> MiniCa {
        let ca = MiniCa {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        run_script(
            "mini_ca.py",
            &[
                "ca",
                ca.cert.to_str().unwrap(),
                ca.key.to_str().unwrap(),
                name,
                self.cert.to_str().unwrap(),
                self.key.to_str().unwrap(),
            ],
        );
        ca
    }

    /// Signs a CSR (PEM file) into `out`, valid from now+`start_s` to now+`end_s`.
    pub fn issue(&self, csr: &Path, out: &Path, start_s: i64, end_s: i64) {
        run_script(
            "mini_ca.py",
            &[
                "leaf",
                csr.to_str().unwrap(),
                self.cert.to_str().unwrap(),
                self.key.to_str().unwrap(),
                out.to_str().unwrap(),
                &start_s.to_string(),
                &end_s.to_string(),
            ],
        );
    }

    /// A TLS server certificate and key for 127.0.0.1 (files `tls.pem`, `tls.key` in `dir`).
    pub fn tls(&self, dir: &Path) -> (PathBuf, PathBuf) {
        self.tls_with_names(dir, &[])
    }

    /// [`MiniCa::tls`] that also names these DNS names (how a VM guest reaches the server).
    pub fn tls_with_names(&self, dir: &Path, dns_names: &[String]) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join("tls.pem"), dir.join("tls.key"));
        let mut args = vec![
            "tls",
            self.cert.to_str().unwrap(),
            self.key.to_str().unwrap(),
            c.to_str().unwrap(),
            k.to_str().unwrap(),
        ];
        args.extend(dns_names.iter().map(String::as_str));
        run_script("mini_ca.py", &args);
        (c, k)
    }
}

/// moto's account and the test endpoint's ARNs.
pub const ACCOUNT: &str = "123456789012";
/// Region of the test endpoint and its ARNs.
pub const REGION: &str = "us-east-1";

/// How to start the Roles Anywhere endpoint.
pub struct RaOptions {
    /// CA certificates of the one trust anchor.
    pub trust_anchor_cas: Vec<PathBuf>,
    /// Role the profile allows.
    pub role_arn: String,
    /// moto_setup.py JSON file: mint credentials through moto's STS (else local random ones).
    pub sts_credentials_file: Option<PathBuf>,
    /// More rolesanywhere.py arguments.
    pub extra: Vec<String>,
    /// DNS names the TLS certificate holds besides 127.0.0.1 and localhost.
    pub tls_names: Vec<String>,
}

impl RaOptions {
    /// Trust anchor from these CA files, role `hybrid-node`, local credentials.
    pub fn new(trust_anchor_cas: &[&Path]) -> RaOptions {
        RaOptions {
            trust_anchor_cas: trust_anchor_cas.iter().map(|p| p.to_path_buf()).collect(),
            role_arn: format!("arn:aws:iam::{ACCOUNT}:role/hybrid-node"),
            sts_credentials_file: None,
            extra: Vec::new(),
            tls_names: Vec::new(),
        }
    }

    /// Also name these DNS names in the TLS certificate.
    pub fn tls_names(mut self, names: &[&str]) -> RaOptions {
        self.tls_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Mint credentials through this moto.
    pub fn sts(mut self, moto: &Moto) -> RaOptions {
        self.sts_credentials_file = Some(moto.setup_file.clone());
        self.role_arn = moto.role_arn();
        self
    }
}

/// The Roles Anywhere test endpoint (HTTPS for clients, plain HTTP for the control API).
pub struct RolesAnywhere {
    /// Holds the peer's state until drop.
    _dir: tempfile::TempDir,
    pub process: PeerProcess,
    pub https_port: u16,
    pub http_port: u16,
    /// CA of the endpoint's TLS certificate (give it as `--ca-bundle`).
    pub tls_ca: PathBuf,
    pub trust_anchor_arn: String,
    pub profile_arn: String,
    pub role_arn: String,
}

impl RolesAnywhere {
    /// Starts a fresh endpoint.
    pub fn start(opts: &RaOptions) -> RolesAnywhere {
        let dir = tempfile::tempdir().unwrap();
        let tls_ca = MiniCa::root(dir.path(), "ra-tls-ca");
        let (tls_cert, tls_key) = tls_ca.tls_with_names(dir.path(), &opts.tls_names);
        let trust_anchor_arn = format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/ta");
        let profile_arn = format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/p");
        let cas: Vec<String> = opts
            .trust_anchor_cas
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let log = dir.path().join("ra.log");
        let mut args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--http-port".into(),
            "0".into(),
            "--tls-cert".into(),
            tls_cert.display().to_string(),
            "--tls-key".into(),
            tls_key.display().to_string(),
            "--region".into(),
            REGION.into(),
            "--trust-anchor".into(),
            format!("{trust_anchor_arn}={}", cas.join(",")),
            "--profile".into(),
            format!("{profile_arn}={}", opts.role_arn),
            "--exit-on-stdin-eof".into(),
            "--log-file".into(),
            log.display().to_string(),
        ];
        if let Some(f) = &opts.sts_credentials_file {
            args.push("--sts-credentials-file".into());
            args.push(f.display().to_string());
        }
        args.extend(opts.extra.iter().cloned());
        let process = PeerProcess::spawn("rolesanywhere.py", &args, &log);
        let https_port = process.ready["https_port"].as_u64().unwrap() as u16;
        let http_port = process.ready["http_port"].as_u64().unwrap() as u16;
        RolesAnywhere {
            tls_ca: tls_ca.cert,
            _dir: dir,
            process,
            https_port,
            http_port,
            trust_anchor_arn,
            profile_arn,
            role_arn: opts.role_arn.clone(),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// Calls the control API (`GET` without body, else `POST`); returns its JSON.
    pub fn control(&self, op: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).expect("control connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = match &body {
            None => format!(
                "GET /_control/{op} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            ),
            Some(b) => {
                let b = b.to_string();
                format!(
                    "POST /_control/{op} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    b.len()
                )
            }
        };
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "control {op}: {head}"
        );
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    /// `/_control/stats`.
    pub fn stats(&self) -> serde_json::Value {
        self.control("stats", None)
    }

    /// The flags hybridboot needs for this endpoint (ARNs, endpoint, CA bundle).
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--trust-anchor-arn".into(),
            self.trust_anchor_arn.clone(),
            "--profile-arn".into(),
            self.profile_arn.clone(),
            "--role-arn".into(),
            self.role_arn.clone(),
            "--endpoint".into(),
            self.endpoint(),
            "--ca-bundle".into(),
            self.tls_ca.display().to_string(),
        ]
    }
}

/// The test EKS API server (tests/peers/apiserver.py): HTTPS with a certificate from `ca`,
/// `GET /version` answers 200 only for an EKS token whose signature botocore recomputes with
/// a secret from `credentials_file` (re-read on every request).
pub struct ApiServer {
    /// Holds the peer's state until drop.
    _dir: tempfile::TempDir,
    /// The peer (its log, for a failing test's report).
    pub process: PeerProcess,
    pub port: u16,
    /// The CA of its TLS certificate (the cluster CA).
    pub ca: PathBuf,
}

impl ApiServer {
    /// Starts it for cluster `hybrid-test` in [`REGION`], TLS certificate signed by `ca`.
    pub fn start(ca: &MiniCa, credentials_file: &Path) -> ApiServer {
        Self::start_with_names(ca, credentials_file, &[])
    }

    /// [`ApiServer::start`] with a TLS certificate that also names these DNS names (how a VM
    /// guest reaches it).
    pub fn start_with_names(ca: &MiniCa, credentials_file: &Path, names: &[&str]) -> ApiServer {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (cert, key) = ca.tls_with_names(dir.path(), &names);
        let log = dir.path().join("apiserver.log");
        let args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--cluster-name".into(),
            "hybrid-test".into(),
            "--region".into(),
            REGION.into(),
            "--credentials-file".into(),
            credentials_file.display().to_string(),
            "--exit-on-stdin-eof".into(),
            "--log-file".into(),
            log.display().to_string(),
        ];
        let process = PeerProcess::spawn("apiserver.py", &args, &log);
        let port = process.ready["port"].as_u64().unwrap() as u16;
        ApiServer {
            _dir: dir,
            process,
            port,
            ca: ca.cert.clone(),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `/_control/stats`: `ok`, `rejected`, `last_error`, `last_access_key_id`.
    pub fn stats(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca)
            .arg(format!("{}/_control/stats", self.endpoint()))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "apiserver stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("apiserver stats JSON")
    }
}
