//! A real OpenBao HA cluster for tests, as operators run Vault: three `bao server` processes on
//! loopback with integrated storage (raft, `retry_join`), TLS on every API listener (a test CA
//! made with openssl), initialised and unsealed with one key share, autopilot promoting joined
//! nodes to voters after 1 s (so that losing the active node leaves a quorum of two). Raft
//! timing stays at its default: `performance_multiplier = 1` (production's) made leadership
//! flap on this shared, loaded machine. PKI and auth are configured as for the single server
//! ([`super::openbao::configure`]).
//!
//! Standbys forward requests to the active node; a client that sends
//! `X-Vault-No-Request-Forwarding` gets a 307 to the active node's `api_addr` instead (OpenBao
//! refuses `disable_clustering` with raft storage, so that header is the way to redirects).
//!
//! [`Balancer`] is the load balancer operators put in front: one address, round robin over the
//! nodes that accept a connection (TCP passthrough, so TLS ends at the nodes).
//!
//! Processes are killed by PID on drop.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::openbao::{
    configure, make_listener_cert, run_bao, spawn_server, wait_listening, NODE_TOKEN,
};
use super::{free_port, Run};

/// One node of the cluster.
pub struct Node {
    pub api_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three OpenBao nodes in one raft cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub root_token: String,
    unseal_key: String,
    /// CA of every node's TLS listener certificate (give it as --vault-ca).
    pub listener_ca: PathBuf,
    /// PKI root CA (trust anchor of issued certificates).
    pub pki_root: PathBuf,
    /// PKI issuing CA.
    pub pki_issuing: PathBuf,
}

impl Cluster {
    /// Starts, initialises, unseals and configures three nodes; returns once all three are
    /// unsealed raft voters with one active node.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        make_listener_cert(&d);
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let nodes = (0..3)
            .map(|i| {
                let (api, cluster) = ports[i];
                let joins: String = (0..3)
                    .filter(|&j| j != i)
                    .map(|j| {
                        format!(
                            "  retry_join {{\n    leader_api_addr = \"https://127.0.0.1:{}\"\n    leader_ca_cert_file = \"{}\"\n  }}\n",
                            ports[j].0,
                            d.join("listener-ca.pem").display()
                        )
                    })
                    .collect();
                let data = d.join(format!("n{i}"));
                std::fs::create_dir(&data).unwrap();
                let cfg = format!(
                    r#"storage "raft" {{
  path = "{data}"
  node_id = "n{i}"
{joins}}}
listener "tcp" {{
  address = "127.0.0.1:{api}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_cert_file = "{d}/listener.pem"
  tls_key_file = "{d}/listener.key"
}}
api_addr = "https://127.0.0.1:{api}"
cluster_addr = "https://127.0.0.1:{cluster}"
log_level = "warn"
"#,
                    data = data.display(),
                    d = d.display()
                );
                let config = d.join(format!("n{i}.hcl"));
                std::fs::write(&config, cfg).unwrap();
                Node {
                    api_port: api,
                    config,
                    log: d.join(format!("n{i}.log")),
                    child: None,
                }
            })
            .collect();
        let mut c = Cluster {
            listener_ca: d.join("listener-ca.pem"),
            dir,
            nodes,
            root_token: String::new(),
            unseal_key: String::new(),
            pki_root: PathBuf::new(),
            pki_issuing: PathBuf::new(),
        };
        // The first node alone: initialise it, unseal it, let autopilot promote quickly.
        c.nodes[0].spawn();
        c.nodes[0].wait_listening();
        let init = c.bao_at(
            0,
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
            None,
        );
        assert_eq!(init.code, 0, "bao operator init: {}", init.stderr);
        let v: serde_json::Value = serde_json::from_str(&init.stdout).unwrap();
        c.unseal_key = v["unseal_keys_b64"][0].as_str().unwrap().to_string();
        c.root_token = v["root_token"].as_str().unwrap().to_string();
        c.unseal(0);
        c.wait_for("node 0 to become active", |c| c.active() == Some(0));
        let r = c.bao_at(
            0,
            &[
                "operator",
                "raft",
                "autopilot",
                "set-config",
                "-server-stabilization-time=1s",
            ],
            None,
        );
        assert_eq!(r.code, 0, "autopilot: {}", r.stderr);
        for i in 1..3 {
            c.nodes[i].spawn();
            c.nodes[i].wait_listening();
        }
        // A joining node takes the key share once it has joined (the unseal is retried until
        // the join is through).
        for i in 1..3 {
            c.wait_for("a joining node to unseal", |c| {
                c.unseal(i);
                c.sealed(i) == Some(false)
            });
        }
        c.wait_for("three raft voters", |c| c.voters() == 3);
        let configured = configure(c.dir.path(), &|args, stdin| c.bao(args, stdin));
        c.pki_root = configured.pki_root;
        c.pki_issuing = configured.pki_issuing;
        c
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut(&Cluster) -> bool) {
        // Generous: two shared cores under a full test run are slow.
        let until = Instant::now() + Duration::from_secs(120);
        while !done(self) {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// `https://127.0.0.1:<port>` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.nodes[i].api_port)
    }

    /// The API ports of all nodes.
    pub fn api_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.api_port).collect()
    }

    /// Runs `bao` against node `i` with the root token.
    pub fn bao_at(&self, i: usize, args: &[&str], stdin: Option<&str>) -> Run {
        let ca = self.listener_ca.display().to_string();
        let env = [
            ("BAO_ADDR", self.addr(i)),
            ("BAO_CACERT", ca),
            ("BAO_TOKEN", self.root_token.clone()),
            ("BAO_CLIENT_TIMEOUT", "30s".to_string()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_bao(&env, args, stdin)
    }

    /// Runs `bao` against the active node (any running node when none is known).
    pub fn bao(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let i = self.active().or_else(|| self.running().first().copied());
        self.bao_at(i.unwrap_or(0), args, stdin)
    }

    /// Runs `bao` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.bao(args, None);
        assert_eq!(r.code, 0, "bao {args:?} failed: {}", r.stderr);
        r.stdout
    }

    fn status(&self, i: usize) -> Option<serde_json::Value> {
        let r = self.bao_at(i, &["status", "-format=json"], None);
        serde_json::from_str(&r.stdout).ok()
    }

    fn sealed(&self, i: usize) -> Option<bool> {
        self.status(i)?["sealed"].as_bool()
    }

    fn unseal(&self, i: usize) {
        let _ = self.bao_at(i, &["operator", "unseal", &self.unseal_key], None);
    }

    fn voters(&self) -> usize {
        let r = self.bao(&["operator", "raft", "list-peers", "-format=json"], None);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        v["data"]["config"]["servers"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["voter"] == true).count())
    }

    /// Indices of the nodes whose process runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// The node that says it is the active one, if any.
    pub fn active(&self) -> Option<usize> {
        self.running().into_iter().find(|&i| {
            self.status(i)
                .is_some_and(|s| s["is_self"] == true && s["sealed"] == false)
        })
    }

    /// Waits for an active node among the running ones and returns it.
    pub fn wait_active(&self) -> usize {
        let mut found = None;
        self.wait_for("an active node", |c| {
            found = c.active();
            found.is_some()
        });
        found.unwrap()
    }

    /// Kills node `i` (SIGKILL, by PID): an abrupt loss of that server.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// A token with the `node` policy.
    pub fn node_token(&self) -> String {
        self.ok(&[&NODE_TOKEN[..], &["-ttl=30m"]].concat())
            .trim()
            .to_string()
    }
}

impl Node {
    fn spawn(&mut self) {
        self.child = Some(spawn_server(&self.config, &self.log));
    }

    fn wait_listening(&mut self) {
        wait_listening(&mut self.child, self.api_port, &self.log);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP load balancer on one loopback address: each connection goes to the next backend in
/// turn that accepts it (a dead node is skipped, as a health-checked balancer would). Bytes are
/// copied both ways untouched, so TLS ends at the backend.
pub struct Balancer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    pub fn start(backends: Vec<u16>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (backends, next) = (backends.clone(), next.clone());
                std::thread::spawn(move || {
                    let start = next.fetch_add(1, Ordering::SeqCst);
                    let upstream = (0..backends.len()).find_map(|k| {
                        let port = backends[(start + k) % backends.len()];
                        TcpStream::connect(("127.0.0.1", port)).ok()
                    });
                    if let Some(upstream) = upstream {
                        splice(client, upstream);
                    }
                });
            }
        });
        Balancer { port, stop }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies bytes both ways until either side closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (a2, b2) = match (a.try_clone(), b.try_clone()) {
        (Ok(a2), Ok(b2)) => (a2, b2),
        _ => return,
    };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    };
    let t = std::thread::spawn(move || one_way(a, b2));
    one_way(b, a2);
    let _ = t.join();
}
