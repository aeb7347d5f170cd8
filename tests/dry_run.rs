//! `init --dry-run` and `firstboot --dry-run`: the listing says what the real run then does
//! (files new / changed / unchanged, the systemctl actions), and the dry run writes nothing:
//! the whole root is byte-for-byte the same before and after.

use crate::util;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use util::config::{firstboot_yaml, BootstrapConfig, NodeConfig};

/// Every file under `root` with its bytes and mode, and every directory: what "wrote nothing"
/// is compared on (upgrade's "changed nothing" too).
pub fn tree(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let name = p.strip_prefix(root).unwrap().display().to_string();
            if meta.is_dir() {
                out.insert(format!("{name}/"), (Vec::new(), meta.permissions().mode()));
                stack.push(p);
            } else {
                out.insert(
                    name,
                    (std::fs::read(&p).unwrap(), meta.permissions().mode()),
                );
            }
        }
    }
    out
}

/// The paths a listing gives one word (`new`, `changed`, `unchanged`, `remove`), and its
/// `unit` lines as the recorder would log them (without `systemctl `).
fn listing(stdout: &str, word: &str) -> Vec<String> {
    let mut v: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(w, rest)| (w, rest.trim())))
        .filter(|(w, _)| *w == word)
        .map(|(_, rest)| rest.trim_start_matches("systemctl ").to_string())
        .collect();
    if word != "unit" {
        v.sort();
    }
    v
}

/// Files (not directories) whose bytes or mode differ between two trees, as node paths.
fn changed_files(
    before: &BTreeMap<String, (Vec<u8>, u32)>,
    after: &BTreeMap<String, (Vec<u8>, u32)>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(k, v)| !k.ends_with('/') && before.get(*k) != Some(v))
        .map(|(k, _)| format!("/{k}"))
        .collect()
}

struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    recorder: PathBuf,
    calls: PathBuf,
}

impl Site {
    /// A root with the node certificate in place, and a NodeConfig that names every cluster
    /// detail (no DescribeCluster, so no peer is needed). `boot` appends a BootstrapConfig.
    fn new(boot: bool) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = d.join("root");
        std::fs::create_dir_all(root.join("etc/iam/pki")).unwrap();
        let cert = root.join("etc/iam/pki/server.pem");
        util::x509::self_signed_ec(&cert, &d.join("node.key"), "node-1", 2);
        let ca = util::tool(
            "openssl",
            &["base64", "-A", "-in", cert.to_str().unwrap()],
            &[],
        );
        ca.ok();
        let node = NodeConfig {
            node_ip: Some("10.80.0.5".into()),
            certificate_path: Some("/etc/iam/pki/server.pem".into()),
            ..NodeConfig::example("node-1", "/etc/iam/pki/server.key")
        };
        let mut text = if boot {
            firstboot_yaml(
                &node,
                &BootstrapConfig::new(
                    "/etc/iam/pki/server.key",
                    "device:/dev/null",
                    "https://127.0.0.1:1",
                ),
            )
        } else {
            node.yaml()
        };
        let region = "    region: us-west-2\n";
        assert!(text.contains(region));
        text = text.replacen(
            region,
            &format!(
                "{region}    apiServerEndpoint: https://127.0.0.1:6443\n    certificateAuthority: {}\n    cidr: 10.100.0.0/16\n",
                ca.stdout.trim()
            ),
            1,
        );
        // First boot and init read their configuration under the root.
        let config = if boot {
            root.join("etc/hybridboot/config.yaml")
        } else {
            root.join("etc/eks/nodeconfig.yaml")
        };
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, text).unwrap();
        let (recorder, calls) = util::systemctl_recorder(d, false);
        Site {
            dir,
            root,
            config,
            recorder,
            calls,
        }
    }

    /// The configuration's path on the node (under `--root`).
    fn source(&self) -> String {
        let node_path = self.config.strip_prefix(&self.root).unwrap();
        format!("file:///{}", node_path.display())
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap_or_default()
    }

    fn hb(&self, args: &[&str]) -> util::Run {
        let rec = self.recorder.display().to_string();
        let home = self.dir.path().display().to_string();
        util::run(args, &[("HYBRIDBOOT_SYSTEMCTL", &rec), ("HOME", &home)])
    }

    fn init(&self, dry_run: bool) -> util::Run {
        let source = self.source();
        let root = self.root.display().to_string();
        let mut args = vec![
            "init",
            "--config-source",
            &source,
            "--root",
            &root,
            "--kubelet-version",
            "v1.31.0",
            "--hybridboot-path",
            "/usr/bin/hybridboot",
            // --root implies --no-start; the recorder stands in for this root's systemd.
            "--start",
        ];
        if dry_run {
            args.push("--dry-run");
        }
        self.hb(&args)
    }
}

#[test]
fn init_dry_run_lists_what_init_then_does_and_writes_nothing() {
    let site = Site::new(false);

    // Fresh root: everything new, nothing written, no unit touched.
    let before = tree(&site.root);
    let dry = site.init(true);
    dry.ok();
    assert_eq!(tree(&site.root), before, "the dry run changed the root");
    assert_eq!(site.calls(), "", "the dry run called systemctl");
    let new = listing(&dry.stdout, "new");
    assert!(
        new.contains(&"/var/lib/kubelet/kubeconfig".to_string()),
        "{}",
        dry.stdout
    );
    assert!(listing(&dry.stdout, "changed").is_empty(), "{}", dry.stdout);
    assert!(
        listing(&dry.stdout, "unchanged").is_empty(),
        "{}",
        dry.stdout
    );
    let units = listing(&dry.stdout, "unit");
    assert!(dry.stdout.contains("nothing was written"), "{}", dry.stdout);

    // The real init writes exactly the files listed as new, and runs exactly the listed actions.
    site.init(false).ok();
    let after_init = tree(&site.root);
    assert_eq!(changed_files(&before, &after_init), new);
    let recorded: Vec<String> = site.calls().lines().map(str::to_string).collect();
    assert_eq!(recorded, units);

    // Same inputs: all unchanged, no action.
    let dry = site.init(true);
    dry.ok();
    assert_eq!(listing(&dry.stdout, "unchanged"), new, "{}", dry.stdout);
    assert!(listing(&dry.stdout, "unit").is_empty(), "{}", dry.stdout);
    assert!(listing(&dry.stdout, "new").is_empty(), "{}", dry.stdout);

    // One input changed (a kubelet flag): the dry run names the kubelet's files only and the
    // kubelet restart, and still writes nothing ...
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        text.replace(
            "      - --node-ip=10.80.0.5\n",
            "      - --node-ip=10.80.0.5\n      - --node-labels=site=lab\n",
        ),
    )
    .unwrap();
    // (The NodeConfig is the node's own file, in the root.)
    let after_init = tree(&site.root);
    let dry = site.init(true);
    dry.ok();
    assert_eq!(tree(&site.root), after_init, "the dry run changed the root");
    let changed = listing(&dry.stdout, "changed");
    assert!(!changed.is_empty(), "{}", dry.stdout);
    assert!(
        changed.iter().all(|p| p.contains("kubelet")),
        "{}",
        dry.stdout
    );
    assert_eq!(
        listing(&dry.stdout, "unit"),
        vec!["enable kubelet.service", "restart kubelet.service"],
        "{}",
        dry.stdout
    );
    // ... and the real init then changes exactly those files, with exactly those actions.
    let calls_before = site.calls();
    site.init(false).ok();
    assert_eq!(changed_files(&after_init, &tree(&site.root)), changed);
    let new_calls: Vec<String> = site.calls()[calls_before.len()..]
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(new_calls, listing(&dry.stdout, "unit"));
}

#[test]
fn firstboot_dry_run_lists_steps_and_init_files_and_writes_nothing() {
    let site = Site::new(true);
    let source = "file:///etc/hybridboot/config.yaml".to_string();
    let root = site.root.display().to_string();
    let node = util::as_on_the_node();
    let args: Vec<&str> = [
        "firstboot",
        "--config-source",
        &source,
        "--root",
        &root,
        "--dry-run",
    ]
    .into_iter()
    .chain(node.iter().map(String::as_str))
    .collect();

    // No kubelet in the image and no spec.install: init's files cannot be rendered, and the
    // dry run says why.
    let dry = site.hb(&args);
    dry.ok();
    assert!(
        dry.stdout.contains(
            "init files not compared: /usr/bin/kubelet is missing, and spec.install is not set"
        ),
        "{}",
        dry.stdout
    );
    // A kubelet that knows its version, as in an image.
    let kubelet = site.root.join("usr/bin/kubelet");
    std::fs::create_dir_all(kubelet.parent().unwrap()).unwrap();
    std::fs::write(&kubelet, "#!/bin/sh\necho Kubernetes v1.31.0\n").unwrap();
    std::fs::set_permissions(&kubelet, std::fs::Permissions::from_mode(0o755)).unwrap();

    let before = tree(&site.root);
    let dry = site.hb(&args);
    dry.ok();
    assert_eq!(tree(&site.root), before, "the dry run changed the root");
    assert_eq!(site.calls(), "");
    assert!(!site.root.join("var/lib/hybridboot").exists());
    for step in [
        "key",
        "enroll",
        "roles-anywhere",
        "install",
        "init",
        "stamp",
    ] {
        assert!(
            dry.stdout
                .lines()
                .any(|l| l.starts_with(&format!("step {step} "))),
            "{step}: {}",
            dry.stdout
        );
    }
    assert!(
        dry.stdout.contains("skipped: spec.install not set"),
        "{}",
        dry.stdout
    );
    // The certificate exists, so init's files are compared; the kubelet is absent under this
    // root, which is not an install step's concern here (no spec.install).
    assert!(
        listing(&dry.stdout, "new").contains(&"/var/lib/kubelet/kubeconfig".to_string()),
        "{}",
        dry.stdout
    );
    // First boot restarts units until init is recorded done.
    assert!(
        listing(&dry.stdout, "unit").contains(&"restart kubelet.service".to_string()),
        "{}",
        dry.stdout
    );
    // The --root rule: without --start, first boot under a root starts no unit (init's own
    // test shows the lines then name the node's /usr/bin/hybridboot: the same rule).
    let rooted = site.hb(&args[..6]);
    rooted.ok();
    assert!(
        listing(&rooted.stdout, "unit").is_empty(),
        "{}",
        rooted.stdout
    );
    assert_eq!(tree(&site.root), before, "the dry run changed the root");

    // Without the certificate: the steps, and why init's files are not compared.
    std::fs::remove_file(site.root.join("etc/iam/pki/server.pem")).unwrap();
    let before = tree(&site.root);
    let dry = site.hb(&args);
    dry.ok();
    assert_eq!(tree(&site.root), before);
    assert!(
        dry.stdout.contains(
            "init files not compared: the certificate /etc/iam/pki/server.pem does not exist yet"
        ),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("would request /etc/iam/pki/server.pem"),
        "{}",
        dry.stdout
    );
}
