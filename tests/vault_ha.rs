//! Enrollment against Vault as operators run it: a three-node OpenBao HA cluster (raft, TLS)
//! behind one load-balanced address, and the active node killed while a fleet enrolls. Every
//! node must end with one valid certificate, none may fail or hang, whether the standbys
//! forward our requests to the active node or redirect (307) us to it.
//!
//! No timing assertions: deadlines are generous (two shared cores under a full test run) and
//! only catch a node that hangs.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::openbao_cluster::{Balancer, Cluster};
use util::tool;

/// Nodes per fleet: enough that some are in flight when the active node dies.
const FLEET: usize = 14;

struct Enrolling {
    dir: PathBuf,
    child: Child,
}

fn key_create(dir: &Path) {
    let key = format!("file:{}", dir.join("key.pem").display());
    util::run(&["key", "create", "--key", &key], &[]).ok();
}

fn spawn_enroll(
    i: usize,
    dir: &Path,
    lb: &str,
    ca: &Path,
    token: &Path,
    redirect: bool,
) -> Enrolling {
    let log = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut cmd = Command::new(util::bin());
    cmd.args(["enroll", "--vault-addr", lb, "--vault-ca"])
        .arg(ca)
        .args(["--pki-mount", "pki_int", "--pki-role", "node", "--key"])
        .arg(format!("file:{}", dir.join("key.pem").display()))
        .args(["--common-name", &format!("node{i:02}.example.com")])
        .arg("--certificate")
        .arg(dir.join("cert.pem"))
        .arg("--vault-token-file")
        .arg(token)
        // Generous: a failover plus a loaded machine. A node that still has no certificate
        // by then has failed (exit 4), which the test reports.
        .args(["--timeout", "240s"]);
    if redirect {
        cmd.arg("--vault-no-request-forwarding");
    }
    let child = cmd
        .env_remove("VAULT_TOKEN")
        .env_remove("HYBRIDBOOT_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting hybridboot enroll");
    Enrolling {
        dir: dir.to_path_buf(),
        child,
    }
}

/// Waits for every enrollment (killing any still running after the deadline) and returns
/// (exit code, stderr) per node.
fn wait_all(fleet: &mut [Enrolling]) -> Vec<(Option<i32>, String)> {
    let until = Instant::now() + Duration::from_secs(300);
    fleet
        .iter_mut()
        .map(|e| {
            let code = loop {
                if let Some(s) = e.child.try_wait().unwrap() {
                    break s.code();
                }
                if Instant::now() > until {
                    let _ = e.child.kill();
                    let _ = e.child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let stderr = std::fs::read_to_string(e.dir.join("stderr")).unwrap_or_default();
            (code, stderr)
        })
        .collect()
}

/// One leaf for node `i`'s own key, then the chain, which openssl verifies to the PKI root.
fn assert_one_valid_certificate(i: usize, dir: &Path, cluster: &Cluster) {
    let cert = dir.join("cert.pem");
    let text =
        std::fs::read_to_string(&cert).unwrap_or_else(|e| panic!("node {i}: no certificate: {e}"));
    let blocks: Vec<&str> = text
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(blocks.len(), 3, "node {i}: leaf, issuing CA, root: {text}");
    let chain = dir.join("chain.pem");
    std::fs::write(&chain, blocks[1..].concat()).unwrap();
    let v = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            cluster.pki_root.to_str().unwrap(),
            "-untrusted",
            chain.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        v.code, 0,
        "node {i}: openssl verify: {}{}",
        v.stdout, v.stderr
    );
    let subject = tool(
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"],
        &[],
    );
    assert!(
        subject.stdout.contains(&format!("node{i:02}.example.com")),
        "node {i}: {}",
        subject.stdout
    );
    let leaf_key = tool(
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"],
        &[],
    );
    let own_key = tool(
        "openssl",
        &[
            "pkey",
            "-in",
            dir.join("key.pem").to_str().unwrap(),
            "-pubout",
        ],
        &[],
    );
    assert_eq!(
        leaf_key.stdout, own_key.stdout,
        "node {i}: the leaf is for its own key"
    );
}

/// Half the fleet starts; once the first certificate is written, the active node is killed
/// (SIGKILL) and the other half starts into the failover.
fn fleet_survives_losing_the_active_node(redirect: bool) {
    let mut cluster = Cluster::start();
    let lb = Balancer::start(cluster.api_ports());
    let work = tempfile::tempdir().unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, cluster.node_token()).unwrap();
    let dirs: Vec<PathBuf> = (0..FLEET)
        .map(|i| {
            let d = work.path().join(format!("node{i:02}"));
            std::fs::create_dir(&d).unwrap();
            key_create(&d);
            d
        })
        .collect();
    let first = cluster.wait_active();
    let ca = cluster.listener_ca.clone();
    let spawn = |i: usize| spawn_enroll(i, &dirs[i], &lb.addr(), &ca, &token, redirect);
    let mut fleet: Vec<Enrolling> = (0..FLEET / 2).map(spawn).collect();
    let until = Instant::now() + Duration::from_secs(240);
    while !dirs.iter().any(|d| d.join("cert.pem").exists()) {
        assert!(
            Instant::now() < until,
            "no node enrolled before the failover"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.kill(first);
    fleet.extend((FLEET / 2..FLEET).map(spawn));
    let results = wait_all(&mut fleet);

    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, (code, _))| *code != Some(0))
        .map(|(i, (code, err))| format!("node {i}: exit {code:?}: {}", err.trim()))
        .collect();
    assert!(failed.is_empty(), "failed or stuck:\n{}", failed.join("\n"));
    let retried = results
        .iter()
        .filter(|(_, e)| e.contains("attempt 2"))
        .count();
    eprintln!("{retried} of {FLEET} nodes retried through the failover");
    for (i, d) in dirs.iter().enumerate() {
        assert_one_valid_certificate(i, d, &cluster);
    }
    // The cluster did fail over: another node is active now.
    let second = cluster.wait_active();
    assert_ne!(second, first);
    if redirect {
        // Round robin over the nodes sends some requests to a standby, which redirects.
        assert!(
            results
                .iter()
                .any(|(_, e)| e.contains("answered HTTP 307: following")),
            "no standby redirected: {:?}",
            results.iter().map(|(_, e)| e).collect::<Vec<_>>()
        );
    }
}

#[test]
fn fleet_enrolls_through_a_failover_with_standbys_forwarding() {
    fleet_survives_losing_the_active_node(false);
}

#[test]
fn fleet_enrolls_through_a_failover_with_standbys_redirecting() {
    fleet_survives_losing_the_active_node(true);
}
