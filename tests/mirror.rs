//! `hybridboot sync-artifacts` between two real peers: the upstream is the install tests' HTTPS
//! artifact mirror (tests/peers/install_mirror.py: real Debian binaries, counts requests,
//! injects faults), the result is served by a second one that publishes only the mirror
//! directory; `hybridboot install --manifest-public-key` then installs from it, and openssl
//! checks the signature on its own.

use crate::util;

use std::path::{Path, PathBuf};

use base64::Engine;
use util::mirror::{sha256_hex, store, Cni, Mirror};
use util::{run, tool, Run};

const NO_PROXY: &[(&str, &str)] = &[("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")];

/// A scratch directory with a fresh signing key ([`signing_key`]) and where the mirror goes.
struct Scratch {
    _work: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
    dir: PathBuf,
}

fn scratch() -> Scratch {
    let work = tempfile::tempdir().unwrap();
    let (key, public) = signing_key(work.path());
    let dir = work.path().join("mirror");
    Scratch {
        _work: work,
        key,
        public,
        dir,
    }
}

/// A fresh Ed25519 signing key made as the docs say (openssl genpkey), and its public half.
fn signing_key(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("manifest-signing.key");
    let public = dir.join("manifest-signing.pub");
    tool(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    tool(
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    (key, public)
}

fn sync(upstream: &str, dir: &Path, mirror_url: &str, key: &Path, extra: &[&str]) -> Run {
    let ca = store().join("ca.pem").display().to_string();
    let mut args = vec![
        "sync-artifacts",
        "--manifest",
        upstream,
        "--ca-bundle",
        &ca,
        "--arch",
        "amd64",
        "--dir",
        dir.to_str().unwrap(),
        "--mirror-url",
        mirror_url,
        "--signing-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, NO_PROXY)
}

fn install_from(mirror: &Mirror, public: &Path, root: &Path) -> Run {
    let ca = store().join("ca.pem").display().to_string();
    let root_s = root.display().to_string();
    util::mirror::write(&root.join("usr/sbin/iptables"), b"#!/bin/sh\n", 0o755);
    run(
        &[
            "install",
            "1.31",
            "--credential-provider",
            "iam-ra",
            "--manifest",
            &mirror.manifest_url(),
            "--ca-bundle",
            &ca,
            "--manifest-public-key",
            public.to_str().unwrap(),
            "--root",
            &root_s,
            "--arch",
            "amd64",
            "--containerd-source",
            "none",
        ],
        NO_PROXY,
    )
}

/// The value of the `label: ` line of `sync-artifacts`' output.
fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label}: line in {out:?}"))
}

/// openssl, not hybridboot, checks the signed manifest's signature over the bytes before its
/// `signature` line.
fn openssl_verifies(signed: &Path, public: &Path) -> bool {
    let text = std::fs::read_to_string(signed).unwrap();
    let body_end = text.trim_end_matches('\n').rfind('\n').unwrap() + 1;
    let sig_b64 = text[body_end..]
        .trim_end()
        .strip_prefix("signature ")
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (body, sig) = (work.path().join("body"), work.path().join("sig"));
    std::fs::write(&body, &text[..body_end]).unwrap();
    std::fs::write(
        &sig,
        base64::engine::general_purpose::STANDARD
            .decode(sig_b64)
            .unwrap(),
    )
    .unwrap();
    let r = tool(
        "openssl",
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            public.to_str().unwrap(),
            "-rawin",
            "-in",
            body.to_str().unwrap(),
            "-sigfile",
            sig.to_str().unwrap(),
        ],
        &[],
    );
    r.code == 0 && r.stdout.contains("Signature Verified Successfully")
}

/// The whole path: upstream -> sync-artifacts -> a mirror serving only its directory ->
/// install verified by the new signed manifest. A re-run fetches no artifact again; a file
/// tampered with on the mirror is refused by install and repaired by the next sync.
#[test]
fn a_synced_mirror_installs_verified_and_a_rerun_fetches_nothing_again() {
    let upstream = Mirror::start();
    // Without containerd and runc (nodes with `--containerd-source none`): the test moves
    // 55 MB less each round.
    upstream.publish_with("https", Cni::Good, "", 1, |text| {
        text.lines()
            .filter(|l| !l.contains("name: containerd") && !l.contains("name: runc"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let Scratch {
        _work,
        key,
        public,
        dir,
    } = scratch();
    let served = Mirror::serve(&dir);
    let s = store();

    let r = sync(
        &upstream.manifest_url(),
        &dir,
        &served.base(),
        &key,
        &["--serial", "5", "--expires", "30d", "-vvv"],
    );
    r.ok();
    assert_eq!(line(&r.stdout, "serial"), "5");
    assert_eq!(
        line(&r.stdout, "releases"),
        "1.31.2",
        "latest patch by default"
    );
    assert!(
        line(&r.stdout, "artifacts").starts_with("5 signed (5 downloaded, 0 already present)"),
        "{}",
        r.stdout
    );
    // The private key never shows, not even its base64 body at -vvv, nor in the mirror.
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap();
    assert!(!r.stdout.contains(key_body) && !r.stderr.contains(key_body));
    let out = tool("grep", &["-rlF", key_body, dir.to_str().unwrap()], &[]);
    assert_eq!(out.code, 1, "the key in {}", out.stdout);

    // Files at their URL paths, byte for byte; the gzip'd artifact fetched once, compressed,
    // and kept both ways.
    for (rel, src) in [
        ("1.31.2/kubelet", s.join("1.31.2/kubelet")),
        ("common/kubectl", s.join("common/kubectl")),
        (
            "common/ecr-credential-provider",
            s.join("common/ecr-credential-provider"),
        ),
        (
            "common/aws-iam-authenticator.gz",
            s.join("common/aws-iam-authenticator.gz"),
        ),
        (
            "common/aws-iam-authenticator",
            s.join("common/aws-iam-authenticator"),
        ),
        ("1.31.2/kubelet.sha256", s.join("1.31.2/kubelet.sha256")),
    ] {
        assert_eq!(sha256_hex(&dir.join(rel)), sha256_hex(&src), "{rel}");
    }
    assert!(!dir.join("1.31.1").exists(), "only the chosen release");
    assert!(
        !dir.join("common/runc").exists(),
        "only what the manifest names"
    );
    let counts = upstream.counts();
    assert!(
        !counts.contains_key("/common/aws-iam-authenticator"),
        "{counts:?}"
    );
    assert_eq!(upstream.artifact_gets(), 5, "{counts:?}");

    // The manifest names only the mirror; the signed manifest binds it and every artifact.
    let manifest = std::fs::read_to_string(dir.join("manifest.yaml")).unwrap();
    assert!(
        !manifest.contains(&upstream.base()) && !manifest.contains("nowhere.invalid"),
        "{manifest}"
    );
    assert!(manifest.contains(&format!("{}/1.31.2/kubelet", served.base())));
    let signed_path = dir.join("manifest.yaml.signed");
    let signed = std::fs::read_to_string(&signed_path).unwrap();
    assert!(signed.contains(&format!(
        "manifest-sha256 {}\n",
        sha256_hex(&dir.join("manifest.yaml"))
    )));
    assert!(signed.contains(&format!(
        "artifact 1.31.2 linux amd64 kubelet {}\n",
        sha256_hex(&s.join("1.31.2/kubelet"))
    )));
    assert!(signed.contains("\nexpires 20"), "{signed}");
    assert!(openssl_verifies(&signed_path, &public), "{signed}");

    // A node installs from the mirror alone, verified by the new signed manifest.
    let root = tempfile::tempdir().unwrap();
    let r = install_from(&served, &public, root.path());
    r.ok();
    assert!(r.stderr.contains("serial 5"), "{}", r.stderr);
    assert_eq!(
        sha256_hex(&root.path().join("usr/bin/kubelet")),
        sha256_hex(&s.join("1.31.2/kubelet"))
    );
    assert_eq!(
        sha256_hex(&root.path().join("usr/local/bin/aws-iam-authenticator")),
        sha256_hex(&s.join("common/aws-iam-authenticator"))
    );
    assert_eq!(
        upstream.artifact_gets(),
        5,
        "install never reached upstream"
    );

    // Again: nothing fetched again or rewritten, a higher serial (the UNIX time), still
    // verifying.
    let inode = |rel: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir.join(rel)).unwrap().ino()
    };
    let before = [
        inode("1.31.2/kubelet"),
        inode("common/aws-iam-authenticator"),
    ];
    let r = sync(&upstream.manifest_url(), &dir, &served.base(), &key, &[]);
    r.ok();
    assert!(
        line(&r.stdout, "artifacts").starts_with("5 signed (0 downloaded, 5 already present)"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("already present"), "{}", r.stderr);
    assert_eq!(
        [
            inode("1.31.2/kubelet"),
            inode("common/aws-iam-authenticator")
        ],
        before,
        "files that were right are not replaced"
    );
    assert!(!dir.join(".sync-artifacts.gunzip-check").exists());
    assert!(line(&r.stdout, "serial").parse::<u64>().unwrap() > 1_700_000_000);
    assert_eq!(upstream.artifact_gets(), 5, "{:?}", upstream.counts());
    assert!(openssl_verifies(&signed_path, &public));
    // A serial below the published one is refused: nodes would refuse it.
    let r = sync(
        &upstream.manifest_url(),
        &dir,
        &served.base(),
        &key,
        &["--serial", "6"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("--serial 6 is below serial"),
        "{}",
        r.stderr
    );

    // A file changed on the mirror: install refuses it, naming the signed manifest.
    let kubelet = dir.join("1.31.2/kubelet");
    let mut bytes = std::fs::read(&kubelet).unwrap();
    bytes.extend_from_slice(b"# tampered\n");
    std::fs::write(&kubelet, &bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let r = install_from(&served, &public, fresh.path());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("the signed manifest (serial") && r.stderr.contains("not installed"),
        "{}",
        r.stderr
    );
    assert!(!fresh.path().join("usr/bin/kubelet").exists());
    // The next sync notices and repairs it (one artifact fetched again).
    let r = sync(&upstream.manifest_url(), &dir, &served.base(), &key, &[]);
    r.ok();
    assert!(
        line(&r.stdout, "artifacts").starts_with("5 signed (1 downloaded, 4 already present)"),
        "{}",
        r.stdout
    );
    install_from(&served, &public, fresh.path()).ok();
}

/// Several releases and both architectures: both patches of 1.31 (`--kubernetes-version` and a
/// positional version agree), the artifacts they share fetched once.
#[test]
fn several_releases_and_architectures_share_their_common_artifacts() {
    let upstream = Mirror::start();
    // The arm64 kubelet upstream names a host that does not exist; here a real file.
    let arm64 = format!("{}/common/ecr-credential-provider", upstream.base());
    upstream.publish_with("https", Cni::Good, "", 1, |text| {
        text.replace("https://nowhere.invalid/k", &arm64)
    });
    let Scratch {
        _work,
        key,
        public,
        dir,
    } = scratch();
    let r = sync(
        &upstream.manifest_url(),
        &dir,
        "https://mirror.example/eks/",
        &key,
        &["1.31.1", "--kubernetes-version", "1.31", "--arch", "arm64"],
    );
    r.ok();
    assert_eq!(line(&r.stdout, "releases"), "1.31.1 1.31.2");
    assert!(
        line(&r.stdout, "artifacts").starts_with("16 signed (8 downloaded, 0 already present)"),
        "{}",
        r.stdout
    );
    assert_eq!(upstream.artifact_gets(), 8, "{:?}", upstream.counts());
    let manifest = std::fs::read_to_string(dir.join("manifest.yaml")).unwrap();
    assert!(
        manifest.contains("uri: https://mirror.example/eks/1.31.1/kubelet\n"),
        "{manifest}"
    );
    let signed = std::fs::read_to_string(dir.join("manifest.yaml.signed")).unwrap();
    assert!(
        signed.contains("artifact 1.31.1 linux amd64 kubectl "),
        "{signed}"
    );
    assert!(openssl_verifies(&dir.join("manifest.yaml.signed"), &public));
}

/// An upstream artifact that does not match its checksum: nothing of it is kept, no manifest
/// is written, exit 3 naming the artifact.
#[test]
fn an_artifact_with_a_bad_checksum_is_not_kept_and_ends_in_exit_3() {
    let upstream = Mirror::start();
    let Scratch {
        _work, key, dir, ..
    } = scratch();
    upstream.control("/__fault?path=/common/kubectl&mode=wrong");
    let r = sync(
        &upstream.manifest_url(),
        &dir,
        "https://m.example",
        &key,
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("artifact kubectl 1.31.2 linux/amd64") && r.stderr.contains("SHA-256 is"),
        "{}",
        r.stderr
    );
    assert_eq!(util::dir_entries(&dir.join("common")), Vec::<String>::new());
    assert!(
        dir.join("1.31.2/kubelet").exists(),
        "the one before it is kept"
    );
    for f in ["manifest.yaml", "manifest.yaml.signed"] {
        assert!(!dir.join(f).exists(), "{f}");
    }

    // A compressed artifact that does not decompress: the same bytes would come again, so it
    // is not retried until the deadline (it was, and ended in exit 4), and neither of its
    // files is kept.
    upstream.control("/__clear");
    upstream.control("/__fault?path=/common/aws-iam-authenticator.gz&mode=wrong");
    let r = sync(
        &upstream.manifest_url(),
        &dir,
        "https://m.example",
        &key,
        &["--retry-deadline", "5s"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("artifact aws-iam-authenticator 1.31.2 linux/amd64"),
        "{}",
        r.stderr
    );
    assert_eq!(upstream.counts()["/common/aws-iam-authenticator.gz"], 1);
    let kept = util::dir_entries(&dir.join("common"));
    assert!(
        kept.iter()
            .all(|f| !f.starts_with("aws-iam-authenticator")
                && !f.starts_with(".aws-iam-authenticator")),
        "{kept:?}"
    );
    assert!(!dir.join("manifest.yaml").exists());
}

/// The upstream unreachable, or failing on an artifact: exit 4 (run again later), nothing
/// published; a signing key that others can read: exit 3 before anything is fetched.
#[test]
fn an_upstream_outage_ends_in_exit_4_and_an_exposed_key_in_exit_3() {
    let Scratch {
        _work, key, dir, ..
    } = scratch();
    let down = format!("https://127.0.0.1:{}/manifest.yaml", util::free_port());
    let r = sync(
        &down,
        &dir,
        "https://m.example",
        &key,
        &["--retry-deadline", "1s"],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("fetching the manifest"), "{}", r.stderr);

    let upstream = Mirror::start();
    let again = || {
        sync(
            &upstream.manifest_url(),
            &dir,
            "https://m.example",
            &key,
            &[],
        )
    };
    upstream.control("/__fault?path=/common/kubectl&mode=503");
    let r = sync(
        &upstream.manifest_url(),
        &dir,
        "https://m.example",
        &key,
        &["--retry-deadline", "2s"],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("kubectl") && r.stderr.contains("503"),
        "{}",
        r.stderr
    );
    assert!(upstream.counts()["/common/kubectl"] > 1, "retried");
    assert!(!dir.join("manifest.yaml").exists());

    // Another run publishing into the same directory: this one waits for nothing and says so.
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".sync-artifacts.lock"))
        .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let r = again();
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("another sync-artifacts"), "{}", r.stderr);
    drop(held);

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    upstream.control("/__clear");
    let before = upstream.artifact_gets();
    let r = again();
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert_eq!(upstream.artifact_gets(), before);
}
