//! `hybridboot upgrade` against the real peers: the install tests' HTTPS artifact mirror (signed
//! manifest, faults on request), moto for eks:DescribeCluster (the control plane's version, with
//! SigV4 checking), a `--root` node that `install` and `init` set up, and a recording stand-in
//! for systemctl. Power cuts are SIGKILLs that strace injects at a chosen rename(2), the system
//! call every step of an upgrade commits with.

use crate::util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dry_run::tree;
use util::config::NodeConfig;
use util::mirror::{sha256_hex, store, write, Mirror};
use util::peers::{MiniCa, Moto};
use util::Run;

/// Every file with its bytes and mode, and every directory.
type Tree = BTreeMap<String, (Vec<u8>, u32)>;

/// A node under `--root` that install and init set up at one version, in a cluster at another.
struct Node {
    dir: tempfile::TempDir,
    root: PathBuf,
    source: String,
    mirror: Mirror,
    moto: Moto,
    recorder: PathBuf,
    calls: PathBuf,
    /// [`Node::env`] of its own cluster.
    env: Vec<(String, String)>,
}

/// moto with cluster `hybrid-test` at Kubernetes `version`, its endpoint on loopback (init's
/// node-IP check passes) and a real CA.
/// Exists while an upgrade moves binaries; the kubelet unit's guard drop-in keeps systemd from
/// starting the kubelet meanwhile.
const MARKER: &str = "var/lib/hybridboot/upgrade.replacing";

fn cluster(dir: &Path, version: &str) -> Moto {
    let ca = MiniCa::root(dir, &format!("cluster-ca-{version}")).cert;
    Moto::start_configured(
        &[
            "--eks-ca-file",
            ca.to_str().unwrap(),
            "--eks-endpoint",
            "https://127.0.0.1:6443",
        ],
        &[
            "--remote-node-cidr",
            "127.0.0.0/8",
            "--k8s-version",
            version,
        ],
    )
}

impl Node {
    fn new(cluster_version: &str, installed: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = d.join("root");
        write(&root.join("usr/sbin/iptables"), b"#!/bin/sh\n", 0o755);
        std::fs::create_dir_all(root.join("etc/iam/pki")).unwrap();
        util::x509::self_signed_ec(
            &root.join("etc/iam/pki/server.pem"),
            &root.join("etc/iam/pki/server.key"),
            "node-1",
            2,
        );
        let cfg = NodeConfig {
            certificate_path: Some("/etc/iam/pki/server.pem".into()),
            ..NodeConfig::moto_site("node-1", "/etc/iam/pki/server.key")
        };
        // --config-source is taken under --root, as every node path.
        write(
            &root.join("etc/eks/nodeconfig.yaml"),
            cfg.yaml().as_bytes(),
            0o644,
        );
        let (recorder, calls) = util::systemctl_recorder(d, false);
        let mut node = Node {
            source: "file:///etc/eks/nodeconfig.yaml".into(),
            moto: cluster(d, cluster_version),
            env: Vec::new(),
            mirror: Mirror::start_with_releases(util::mirror::RELEASES),
            root,
            dir,
            recorder,
            calls,
        };
        node.env = node.env(&node.moto);
        node.install(installed).ok();
        node.hb(&[
            "init",
            "--config-source",
            &node.source,
            "--root",
            node.root.to_str().unwrap(),
            "--hybridboot-path",
            "/usr/bin/hybridboot",
            "--skip",
            "sandbox-image",
            "--start",
        ])
        .ok();
        std::fs::write(&node.calls, "").unwrap();
        node
    }

    /// The node role's credentials (assumed in moto's STS) and the recorder.
    fn env(&self, moto: &Moto) -> Vec<(String, String)> {
        let (akid, secret, token) = moto.assume_role("node-1");
        vec![
            ("AWS_ACCESS_KEY_ID".into(), akid),
            ("AWS_SECRET_ACCESS_KEY".into(), secret),
            ("AWS_SESSION_TOKEN".into(), token),
            ("AWS_ENDPOINT_URL_EKS".into(), moto.endpoint.clone()),
            (
                "HYBRIDBOOT_SYSTEMCTL".into(),
                self.recorder.display().to_string(),
            ),
            ("HOME".into(), self.dir.path().display().to_string()),
        ]
    }

    fn hb(&self, args: &[&str]) -> Run {
        self.hb_with(&self.moto, args)
    }

    fn hb_with(&self, moto: &Moto, args: &[&str]) -> Run {
        let env = if std::ptr::eq(moto, &self.moto) {
            self.env.clone()
        } else {
            self.env(moto)
        };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        util::run(args, &env)
    }

    /// `command VERSION` with this node's mirror (signed manifest) and root, then `extra`.
    fn mirror_args(&self, command: &str, version: &str, extra: &[&str]) -> Vec<String> {
        let s = store();
        let mut args: Vec<String> = [
            command,
            version,
            "--manifest",
            &self.mirror.manifest_url(),
            "--ca-bundle",
            s.join("ca.pem").to_str().unwrap(),
            "--manifest-public-key",
            s.join("sign.pub").to_str().unwrap(),
            "--root",
            self.root.to_str().unwrap(),
            "--arch",
            "amd64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn install(&self, version: &str) -> Run {
        // containerd is the distribution's business; leaving it out keeps each run from
        // hashing its 46 MB again.
        let extra = [
            "--credential-provider",
            "iam-ra",
            "--containerd-source",
            "none",
        ];
        let args = self.mirror_args("install", version, &extra);
        self.hb(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `upgrade VERSION` as an operator runs it against this node (units through the recorder).
    fn upgrade_args(&self, version: &str) -> Vec<String> {
        let extra = [
            "--config-source",
            &self.source,
            "--hybridboot-path",
            "/usr/bin/hybridboot",
            "--skip",
            "sandbox-image",
            "--start",
        ];
        self.mirror_args("upgrade", version, &extra)
    }

    fn upgrade(&self, version: &str) -> Run {
        self.upgrade_with(&self.moto, version)
    }

    fn upgrade_with(&self, moto: &Moto, version: &str) -> Run {
        let args = self.upgrade_args(version);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.hb_with(moto, &args)
    }

    fn record(&self) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(self.root.join("var/lib/hybridboot/installed.json")).unwrap(),
        )
        .unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap_or_default()
    }

    fn environment(&self) -> String {
        std::fs::read_to_string(self.root.join("etc/eks/kubelet/environment")).unwrap()
    }
}

/// `root` is as `before` was: on failure, the paths that differ (not their bytes).
fn assert_unchanged(root: &Path, before: &Tree, what: &str) {
    let after = tree(root);
    let differ: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(differ.is_empty(), "{what}: changed {differ:?}");
}

/// The node runs `version`'s kubelet and kubectl, records it, and holds nothing half-done.
fn assert_upgraded_to(node: &Node, version: &str) {
    let s = store();
    for (rel, file) in [
        ("usr/bin/kubelet", "kubelet"),
        ("usr/local/bin/kubectl", "kubectl"),
    ] {
        assert_eq!(
            sha256_hex(&node.root.join(rel)),
            sha256_hex(&s.join(version).join(file)),
            "{rel} is not {version}'s"
        );
    }
    let record = node.record();
    assert_eq!(record["kubernetes_version"], version);
    assert_eq!(
        record["files"]["/usr/bin/kubelet"]["sha256"],
        sha256_hex(&s.join(version).join("kubelet"))
    );
    assert!(
        std::fs::read_to_string(node.root.join("var/lib/hybridboot/tracker"))
            .unwrap()
            .contains("Kubelet: true")
    );
    assert!(!node.root.join("var/lib/hybridboot/upgrade.json").exists());
    let leftovers: Vec<String> = tree(&node.root)
        .into_keys()
        .filter(|p| p.contains(".hb-upgrade") || p.contains(".hbtmp."))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// 1.28 -> 1.29: the new kubelet and kubectl, the recorded version, and init's kubelet files for
/// the new version (1.29 drops `--pod-infra-container-image`); kubelet stopped before and
/// started after. The same command again is a no-op that says so.
#[test]
fn upgrade_replaces_the_binaries_records_the_version_and_rerenders_the_kubelet_files() {
    let node = Node::new("1.29", "1.28.1");
    let before = node.environment();
    assert!(
        before.contains("--pod-infra-container-image="),
        "1.28's flags: {before}"
    );
    let r = node.upgrade("1.29");
    r.ok();
    assert!(
        r.stdout.contains("upgraded Kubernetes 1.28.1 -> 1.29.1"),
        "{}",
        r.stdout
    );
    assert_upgraded_to(&node, "1.29.1");
    let after = node.environment();
    assert!(
        !after.contains("--pod-infra-container-image"),
        "1.29 has no such flag: {after}"
    );
    // The kubelet guard first (systemd reads the new drop-in), then kubelet stopped before the
    // files moved, started last; init restarted it for its new flags.
    let calls = node.calls();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(
        lines.get(..2),
        Some(&["daemon-reload", "stop kubelet.service"][..]),
        "{calls}"
    );
    assert_eq!(lines.last(), Some(&"start kubelet.service"), "{calls}");
    let guard = std::fs::read_to_string(
        node.root
            .join("etc/systemd/system/kubelet.service.d/90-hybridboot-upgrade.conf"),
    )
    .unwrap();
    assert!(
        guard.contains("ConditionPathExists=!/var/lib/hybridboot/upgrade.replacing"),
        "{guard}"
    );
    assert!(
        !node.root.join(MARKER).exists(),
        "the marker outlived the upgrade"
    );
    assert!(lines.contains(&"restart kubelet.service"), "{calls}");
    // The artifacts that did not change between the releases were not downloaded again.
    let counts = node.mirror.counts();
    assert_eq!(
        counts.get("/common/aws-iam-authenticator.gz"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(counts.get("/1.29.1/kubelet"), Some(&1), "{counts:?}");

    // Again: nothing to do, nothing touched, no unit.
    std::fs::write(&node.calls, "").unwrap();
    let snapshot = tree(&node.root);
    let again = node.upgrade("1.29.1");
    again.ok();
    assert!(
        again
            .stdout
            .contains("Kubernetes 1.29.1 is already installed: nothing to do"),
        "{}",
        again.stdout
    );
    assert_unchanged(&node.root, &snapshot, "a no-op");
    assert_eq!(node.calls(), "");
}

/// A lower version, or a kubelet the control plane does not allow, is the operator's to fix:
/// exit 3, a message naming the versions and what to do, and nothing changed (no download, no
/// unit touched).
#[test]
fn downgrade_and_version_skew_are_refused_before_anything_changes() {
    let node = Node::new("1.28", "1.29.1");
    let snapshot = tree(&node.root);
    let r = node.upgrade("1.28");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Kubernetes 1.28.1 is older than the installed 1.29.1"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hybridboot uninstall"), "{}", r.stderr);
    assert_unchanged(&node.root, &snapshot, "refused downgrade");
    assert_eq!(node.calls(), "", "no unit touched");

    // Installed 1.28.1 in a 1.28 cluster: 1.29 would be newer than the control plane.
    node.install("1.28.1").ok();
    let snapshot_128 = tree(&node.root);
    let gets = node.mirror.artifact_gets();
    let r = node.upgrade("1.29");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "kubelet 1.29.1 would be newer than the control plane of cluster hybrid-test (1.28)"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Upgrade the cluster first"),
        "{}",
        r.stderr
    );
    assert_unchanged(&node.root, &snapshot_128, "refused skew");

    // A 1.33 control plane: 1.29 would lag 4 minors behind.
    let newer = cluster(node.dir.path(), "1.33");
    let r = node.upgrade_with(&newer, "1.29");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "would be 4 minor versions older than the control plane of cluster hybrid-test (1.33)"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Choose 1.30 or newer"), "{}", r.stderr);
    assert_unchanged(&node.root, &snapshot_128, "refused skew");
    assert_eq!(node.mirror.artifact_gets(), gets, "nothing downloaded");
    assert_eq!(node.calls(), "", "no unit touched");
}

/// One artifact of the new release with wrong bytes (here kubectl, which comes after kubelet):
/// the upgrade fails before any installed file changes, so the node keeps its whole old set;
/// once the mirror is fixed the same command upgrades.
#[test]
fn a_bad_digest_leaves_the_old_version_whole() {
    let node = Node::new("1.29", "1.28.1");
    let snapshot = tree(&node.root);
    node.mirror
        .control("/__fault?path=/1.29.1/kubectl&mode=wrong");
    let r = node.upgrade("1.29");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("SHA-256 is"), "{}", r.stderr);
    assert_eq!(
        node.mirror.counts().get("/1.29.1/kubelet"),
        Some(&1),
        "kubelet was downloaded and verified first"
    );
    assert_unchanged(&node.root, &snapshot, "nothing replaced, nothing left");
    assert_eq!(node.calls(), "", "kubelet never stopped");

    node.mirror.control("/__clear");
    node.upgrade("1.29").ok();
    assert_upgraded_to(&node, "1.29.1");
}

/// Copies `from` to `to` (a fresh directory), keeping modes and symlinks.
fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    util::tool(
        "cp",
        &["-a", from.to_str().unwrap(), to.to_str().unwrap()],
        &[],
    )
    .ok();
}

/// A power cut before each rename(2) of an upgrade (staging, journal, moves, install record,
/// init's files), in turn: the next run of the same command finishes the upgrade, with the
/// whole new set of binaries and the kubelet started.
#[test]
fn a_run_killed_at_any_step_is_finished_by_the_next_run() {
    let node = Node::new("1.29", "1.28.1");
    let pristine = node.dir.path().join("pristine");
    copy_tree(&node.root, &pristine);
    let args = node.upgrade_args("1.29");
    let env: Vec<(&str, &str)> = node
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let bin = util::bin().display().to_string();
    let mut killed = 0;
    for n in 1.. {
        assert!(n < 100, "the upgrade never finished under strace");
        std::fs::write(&node.calls, "").unwrap();
        let inject = format!("inject=rename:signal=KILL:when={n}");
        let mut argv = vec!["-o", "/dev/null", "-e", "trace=rename", "-e", &inject, &bin];
        argv.extend(args.iter().map(String::as_str));
        let cut = util::tool("strace", &argv, &env);
        if cut.code == 0 {
            // No n-th rename: the uninterrupted run.
            assert_upgraded_to(&node, "1.29.1");
            break;
        }
        killed += 1;
        // A journal, when there is one, is whole.
        let journal_kept = node.root.join("var/lib/hybridboot/upgrade.json").exists();
        let journal = node.root.join("var/lib/hybridboot/upgrade.json");
        let mut step = None;
        if let Ok(bytes) = std::fs::read(&journal) {
            let j = serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("rename {n}: journal {e}"));
            step = j["step"].as_str().map(str::to_string);
        }
        // Once kubelet was stopped for the moves and until they are all done, a boot would not
        // start it: the marker and the guard on the kubelet unit are in place.
        if step.as_deref() == Some("staged") && node.calls().contains("stop kubelet.service") {
            assert!(node.root.join(MARKER).exists(), "rename {n}: no marker");
            assert!(
                node.root
                    .join("etc/systemd/system/kubelet.service.d/90-hybridboot-upgrade.conf")
                    .exists(),
                "rename {n}: no kubelet guard"
            );
        }
        let rerun = node.upgrade("1.29");
        assert_eq!(rerun.code, 0, "rename {n}: {}", rerun.stderr);
        assert_upgraded_to(&node, "1.29.1");
        assert!(
            !node.environment().contains("--pod-infra-container-image"),
            "rename {n}"
        );
        assert_eq!(
            node.calls().lines().last(),
            Some("start kubelet.service"),
            "rename {n}"
        );
        assert!(!node.root.join(MARKER).exists(), "rename {n}: marker left");
        println!(
            "killed before rename {n} ({}): finished by the next run",
            if journal_kept {
                "journal"
            } else {
                "no journal"
            }
        );
        copy_tree(&pristine, &node.root);
    }
    assert!(killed >= 8, "only {killed} crash points");
}
