//! `hybridboot install` / `uninstall` against a local HTTPS mirror (tests/peers/install_mirror.py,
//! test CA made with openssl) serving a manifest and real binaries from Debian packages
//! (kubectl, containerd, runc, the containernetworking-plugins tarball) plus stand-ins where no
//! real binary exists (kubelet, aws-iam-authenticator, ecr-credential-provider). The mirror
//! counts requests and can cut a body short or serve wrong bytes.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use common::{run, Run};

const CNI_TGZ: &str = "cni-plugins-linux-amd64-v1.6.0.tgz";

fn sha256_hex(path: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

fn sh(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, data: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The artifact store shared by every test in this process (read-only once built): real
/// binaries, tarballs, checksum files, the test CA and the manifest signing keys.
fn store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        // Built once under target/ and reused by later runs (it only changes with this file's
        // STORE_VERSION); built in a private directory and renamed, so a half-built store is
        // never used.
        const STORE_VERSION: &str = "install-store-v1";
        let done = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(STORE_VERSION);
        if done.join("ca.pem").exists() {
            return done;
        }
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{STORE_VERSION}.building.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = d.join("common");
        for (src, name) in [
            ("/usr/bin/kubectl", "kubectl"),
            ("/usr/bin/containerd", "containerd"),
            ("/usr/sbin/runc", "runc"),
        ] {
            let real = std::fs::canonicalize(src)
                .unwrap_or_else(|e| panic!("{src}: {e} (install the Debian package: see .ci)"));
            std::fs::create_dir_all(&c).unwrap();
            std::fs::copy(real, c.join(name)).unwrap();
        }
        // The CNI tarball in the official layout (./bridge, ./host-local, ...), from the
        // containernetworking-plugins package.
        sh(
            Path::new("/usr/lib/cni"),
            "tar",
            &["czf", c.join(CNI_TGZ).to_str().unwrap(), "."],
        );
        write(
            &c.join("ecr-credential-provider"),
            b"#!/bin/sh\necho ecr-credential-provider stand-in\n",
            0o755,
        );
        // aws-iam-authenticator is served gzip'd (gzip_uri); its checksum is of the content.
        write(
            &c.join("aws-iam-authenticator"),
            &b"#!/bin/sh\necho aws-iam-authenticator stand-in\n".repeat(200),
            0o755,
        );
        sh(&c, "gzip", &["-k", "aws-iam-authenticator"]);
        for v in ["1.31.1", "1.31.2"] {
            let k = d.join(v).join("kubelet");
            write(
                &k,
                format!("#!/bin/sh\necho Kubernetes v{v}\n").as_bytes(),
                0o755,
            );
            let hex = sha256_hex(&k);
            std::fs::write(
                d.join(v).join("kubelet.sha256"),
                format!("{hex}  kubelet\n"),
            )
            .unwrap();
        }
        for name in [
            "kubectl",
            "containerd",
            "runc",
            "ecr-credential-provider",
            "aws-iam-authenticator",
        ] {
            std::fs::write(c.join(format!("{name}.sha256")), sha256_hex(&c.join(name))).unwrap();
        }
        std::fs::write(
            c.join(format!("{CNI_TGZ}.sha256")),
            format!("{}  {CNI_TGZ}\n", sha256_hex(&c.join(CNI_TGZ))),
        )
        .unwrap();
        // A CNI tarball with a path traversal entry (crafted with Python's tarfile, which
        // writes such names as given).
        let e = d.join("evil");
        std::fs::create_dir_all(&e).unwrap();
        sh(
            &e,
            "python3",
            &[
                "-c",
                &format!(
                    "import tarfile,io\n\
             t=tarfile.open('{CNI_TGZ}','w:gz')\n\
             for n,b in [('./bridge',b'ok'),('../../etc/cron.d/evil',b'* * * * * root sh')]:\n\
             \x20 i=tarfile.TarInfo(n); i.size=len(b); i.mode=0o755; t.addfile(i,io.BytesIO(b))\n\
             t.close()\n"
                ),
            ],
        );
        std::fs::write(
            e.join(format!("{CNI_TGZ}.sha256")),
            sha256_hex(&e.join(CNI_TGZ)),
        )
        .unwrap();
        // Test CA and the mirror's certificate (127.0.0.1).
        sh(
            &d,
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=install mirror test CA",
            ],
        );
        sh(
            &d,
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        sh(
            &d,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        // Manifest signing keys: the trusted one and another.
        for k in ["sign", "other"] {
            sh(
                &d,
                "openssl",
                &[
                    "genpkey",
                    "-algorithm",
                    "ed25519",
                    "-out",
                    &format!("{k}.key"),
                ],
            );
            sh(
                &d,
                "openssl",
                &[
                    "pkey",
                    "-in",
                    &format!("{k}.key"),
                    "-pubout",
                    "-out",
                    &format!("{k}.pub"),
                ],
            );
        }
        if std::fs::rename(&d, &done).is_err() {
            // Another test process finished first: use its store.
            let _ = std::fs::remove_dir_all(&d);
        }
        done
    })
}

/// One test's mirror process with its own manifest overlay and request counters.
struct Mirror {
    child: Child,
    port: u16,
    overlay: tempfile::TempDir,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Manifest variants.
#[derive(Clone, Copy, PartialEq)]
enum Cni {
    Good,
    Evil,
}

impl Mirror {
    fn start() -> Mirror {
        let s = store();
        let overlay = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/install_mirror.py"))
            .args(["--cert", s.join("server.pem").to_str().unwrap()])
            .args(["--key", s.join("server.key").to_str().unwrap()])
            .args(["--dir", overlay.path().to_str().unwrap()])
            .args(["--dir", s.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("mirror said {line:?}"))
            .parse()
            .unwrap();
        let m = Mirror {
            child,
            port,
            overlay,
        };
        m.publish("https", Cni::Good, "sign");
        m
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn manifest_url(&self) -> String {
        format!("{}/manifest.yaml", self.base())
    }

    /// Writes manifest.yaml (URLs under `scheme`: https to this mirror, or file:// to the
    /// store) and its signature made with `key` ("sign", "other", or "" for none).
    fn publish(&self, scheme: &str, cni: Cni, key: &str) {
        let s = store();
        let base = if scheme == "https" {
            self.base()
        } else {
            format!("file://{}", s.display())
        };
        let art = |name: &str, dir: &str, file: &str, gzip: bool| {
            let gz = if gzip {
                format!(", gzip_uri: \"{base}/{dir}/{file}.gz\"")
            } else {
                String::new()
            };
            format!("    - {{name: {name}, arch: amd64, os: linux, uri: \"{base}/{dir}/{file}\", checksum_uri: \"{base}/{dir}/{file}.sha256\"{gz}}}\n")
        };
        let cni_dir = if cni == Cni::Evil { "evil" } else { "common" };
        let mut text = String::from("supported_eks_releases:\n- major_minor_version: \"1.31\"\n  latest_patch_version: \"2\"\n  patch_releases:\n");
        for (v, p) in [("1.31.1", "1"), ("1.31.2", "2")] {
            text += &format!("  - version: {v}\n    patch_version: \"{p}\"\n    release_date: \"2026-11-01\"\n    artifacts:\n");
            text += &art("kubelet", v, "kubelet", false);
            text += &art("kubectl", "common", "kubectl", false);
            text += &art("cni-plugins", cni_dir, CNI_TGZ, false);
            text += &art(
                "aws-iam-authenticator",
                "common",
                "aws-iam-authenticator",
                true,
            );
            text += &art(
                "ecr-credential-provider",
                "common",
                "ecr-credential-provider",
                false,
            );
            text += &art("containerd", "common", "containerd", false);
            text += &art("runc", "common", "runc", false);
            // Another architecture, never to be picked.
            text += "    - {name: kubelet, arch: arm64, os: linux, uri: \"https://nowhere.invalid/k\", checksum_uri: \"https://nowhere.invalid/k.sha256\"}\n";
        }
        text += "region_config:\n  us-east-1: {partition: aws}\nssm_releases: null\n";
        let m = self.overlay.path().join("manifest.yaml");
        std::fs::write(&m, &text).unwrap();
        let sig = self.overlay.path().join("manifest.yaml.sig");
        let _ = std::fs::remove_file(&sig);
        if !key.is_empty() {
            sh(
                self.overlay.path(),
                "openssl",
                &[
                    "pkeyutl",
                    "-sign",
                    "-rawin",
                    "-inkey",
                    s.join(format!("{key}.key")).to_str().unwrap(),
                    "-in",
                    "manifest.yaml",
                    "-out",
                    "manifest.yaml.sig",
                ],
            );
        }
    }

    fn control(&self, path_query: &str) {
        // A tiny client of our own binary would be circular; curl is test tooling only.
        let out = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                "--cacert",
                store().join("ca.pem").to_str().unwrap(),
            ])
            .arg(format!("{}{path_query}", self.base()))
            .output()
            .unwrap();
        assert!(out.status.success(), "mirror control {path_query}");
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        let out = Command::new("curl")
            .args(["-sf", "--cacert", store().join("ca.pem").to_str().unwrap()])
            .arg(format!("{}/__counts", self.base()))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// GETs of artifact bodies (not the manifest, signature or checksum files).
    fn artifact_gets(&self) -> u64 {
        self.counts()
            .iter()
            .filter(|(p, _)| !p.starts_with("/manifest") && !p.ends_with(".sha256"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// A node image root: iptables from the distribution, the node's key and certificate.
fn image_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("usr/sbin/iptables"),
        b"#!/bin/sh\n",
        0o755,
    );
    write(
        &root.path().join("etc/iam/pki/server.key"),
        b"-----BEGIN TSS2 PRIVATE KEY-----\n",
        0o600,
    );
    write(
        &root.path().join("etc/iam/pki/server.pem"),
        b"-----BEGIN CERTIFICATE-----\n",
        0o644,
    );
    root
}

fn install(m: &Mirror, root: &Path, version: &str, extra: &[&str]) -> Run {
    let s = store();
    let manifest = m.manifest_url();
    let ca = s.join("ca.pem").display().to_string();
    let key = s.join("sign.pub").display().to_string();
    let root = root.display().to_string();
    let mut args = vec![
        "install",
        version,
        "--credential-provider",
        "iam-ra",
        "--manifest",
        &manifest,
        "--ca-bundle",
        &ca,
        "--manifest-public-key",
        &key,
        "--root",
        &root,
        "--arch",
        "amd64",
    ];
    args.extend_from_slice(extra);
    run(&args, &[])
}

/// Every installed file with the hash the mirror's checksum file gives and mode 0755.
fn assert_installed(root: &Path, kubelet_version: &str) {
    let s = store();
    let c = s.join("common");
    let expect = [
        ("usr/bin/kubelet", s.join(kubelet_version).join("kubelet")),
        ("usr/local/bin/kubectl", c.join("kubectl")),
        ("usr/bin/containerd", c.join("containerd")),
        ("usr/sbin/runc", c.join("runc")),
        (
            "usr/local/bin/aws-iam-authenticator",
            c.join("aws-iam-authenticator"),
        ),
        (
            "etc/eks/image-credential-provider/ecr-credential-provider",
            c.join("ecr-credential-provider"),
        ),
    ];
    for (rel, src) in expect {
        let p = root.join(rel);
        assert_eq!(sha256_hex(&p), sha256_hex(&src), "{rel}");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o755,
            "{rel}"
        );
    }
    for plugin in std::fs::read_dir("/usr/lib/cni").unwrap() {
        let plugin = plugin.unwrap();
        let p = root.join("opt/cni/bin").join(plugin.file_name());
        assert_eq!(
            sha256_hex(&p),
            sha256_hex(&plugin.path()),
            "{}",
            p.display()
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
}

/// All regular files under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(base, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn installs_from_https_mirror_then_reruns_without_downloading_then_uninstalls() {
    let m = Mirror::start();
    let root = image_root();
    let started = std::time::Instant::now();
    let r = install(&m, root.path(), "1.31", &[]);
    r.ok();
    let first = started.elapsed();
    assert_installed(root.path(), "1.31.2");
    let tracker = std::fs::read_to_string(root.path().join("var/lib/hybridboot/tracker")).unwrap();
    assert_eq!(
        tracker,
        include_str!("fixtures/nodeadm/expected-nodeadm-tracker")
    );
    assert!(r.stderr.contains("manifest signature"), "{}", r.stderr);
    // One line per artifact in logs (stderr is not a terminal here).
    assert!(
        r.stderr.contains("kubelet: installed /usr/bin/kubelet"),
        "{}",
        r.stderr
    );
    let counts = m.counts();
    assert_eq!(counts["/1.31.2/kubelet"], 1);
    assert_eq!(
        counts["/common/aws-iam-authenticator.gz"], 1,
        "gzip_uri preferred"
    );
    assert!(!counts.contains_key("/1.31.1/kubelet"));
    assert_eq!(m.artifact_gets(), 7, "{counts:?}");
    // No temporary or staging file is left anywhere.
    let all = files_under(root.path());
    assert!(
        all.iter()
            .all(|f| !f.contains(".hbtmp.") && !f.ends_with(".tgz")),
        "{all:?}"
    );

    // Re-run: everything matches, nothing is downloaded.
    let inode = std::fs::metadata(root.path().join("usr/bin/kubelet")).unwrap();
    let started = std::time::Instant::now();
    install(&m, root.path(), "1.31.2", &[]).ok();
    let second = started.elapsed();
    assert_eq!(
        m.artifact_gets(),
        7,
        "re-run downloaded something: {:?}",
        m.counts()
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.path().join("usr/bin/kubelet"))
            .unwrap()
            .ino(),
        inode.ino()
    );
    eprintln!("install: first run {first:?}, re-run {second:?}");

    // Offline verification of the image passes, then catches a tampered file.
    install(&m, root.path(), "1.31.2", &["--offline"]).ok();
    write(&root.path().join("opt/cni/bin/bridge"), b"tampered", 0o755);
    let r = install(&m, root.path(), "1.31.2", &["--offline"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("/opt/cni/bin/bridge has sha256"),
        "{}",
        r.stderr
    );
    assert_eq!(m.artifact_gets(), 7);

    // init's files, then uninstall: only the node identity (and the file changed after
    // install, which uninstall reports) remain.
    write(
        &root.path().join("etc/systemd/system/kubelet.service"),
        b"[Unit]\n",
        0o644,
    );
    write(
        &root.path().join("etc/eks/kubelet/environment"),
        b"X=1\n",
        0o644,
    );
    let r = run(&["uninstall", "--root", root.path().to_str().unwrap()], &[]);
    r.ok();
    assert!(
        r.stdout.contains("removed /usr/bin/kubelet"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("removed /etc/systemd/system/kubelet.service"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("kept /etc/iam/pki/server.key (node private key)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("kept /opt/cni/bin/bridge (changed since"),
        "{}",
        r.stdout
    );
    let left = files_under(root.path());
    let kept: Vec<String> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("kept /"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .chain(["usr/sbin/iptables".to_string()])
        .collect();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(left, kept_sorted, "uninstall left {left:?}");
}

#[test]
fn wrong_bytes_are_never_placed() {
    let m = Mirror::start();
    let root = image_root();
    // First install 1.31.1 (a verified kubelet in place), then 1.31.2 whose kubelet the mirror
    // corrupts: install fails and the 1.31.1 kubelet stays.
    install(&m, root.path(), "1.31.1", &[]).ok();
    m.control("/__fault?path=/1.31.2/kubelet&mode=wrong");
    let r = install(&m, root.path(), "1.31.2", &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("SHA-256 is"), "{}", r.stderr);
    assert_eq!(
        sha256_hex(&root.path().join("usr/bin/kubelet")),
        sha256_hex(&store().join("1.31.1/kubelet"))
    );
    assert_eq!(
        m.counts()["/1.31.2/kubelet"],
        1,
        "a checksum mismatch is not retried"
    );
    // On a fresh root the final path stays absent.
    let fresh = image_root();
    assert_eq!(install(&m, fresh.path(), "1.31.2", &[]).code, 3);
    assert!(!fresh.path().join("usr/bin/kubelet").exists());
    assert!(files_under(fresh.path())
        .iter()
        .all(|f| !f.contains(".hbtmp.")));
    assert!(!fresh.path().join("var/lib/hybridboot/tracker").exists());
}

#[test]
fn connection_cut_mid_body_is_retried() {
    let m = Mirror::start();
    let root = image_root();
    m.control("/__fault?path=/common/containerd&mode=cut&times=2");
    let r = install(&m, root.path(), "1.31", &[]);
    r.ok();
    assert_eq!(
        m.counts()["/common/containerd"],
        3,
        "two cut attempts, then success"
    );
    assert!(r.stderr.contains("retrying"), "{}", r.stderr);
    assert_installed(root.path(), "1.31.2");
}

#[test]
fn bad_or_missing_manifest_signature_is_refused_before_any_download() {
    let m = Mirror::start();
    let root = image_root();
    m.publish("https", Cni::Good, "other");
    let r = install(&m, root.path(), "1.31", &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("does not verify"), "{}", r.stderr);
    m.publish("https", Cni::Good, "");
    let r = install(&m, root.path(), "1.31", &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("signature required"), "{}", r.stderr);
    let counts = m.counts();
    assert!(
        counts.keys().all(|p| p.starts_with("/manifest.yaml")),
        "{counts:?}"
    );
    assert_eq!(files_under(root.path()).len(), 3, "nothing placed");
}

#[test]
fn cni_tarball_with_path_traversal_is_rejected() {
    let m = Mirror::start();
    let root = image_root();
    m.publish("https", Cni::Evil, "sign");
    let r = install(&m, root.path(), "1.31", &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("escapes the target directory"),
        "{}",
        r.stderr
    );
    assert!(!root.path().join("etc/cron.d/evil").exists());
    assert!(
        !root.path().join("opt/cni/bin/bridge").exists(),
        "nothing extracted from a bad tarball"
    );
    assert!(!root
        .path()
        .join("var/lib/hybridboot/cni-plugins.tgz")
        .exists());
}

#[test]
fn installs_from_a_file_mirror() {
    // A mirror baked into the image as files: no network at all.
    let m = Mirror::start();
    m.publish("file", Cni::Good, "sign");
    let root = image_root();
    let s = store();
    let manifest = format!(
        "file://{}",
        m.overlay.path().join("manifest.yaml").display()
    );
    let r = run(
        &[
            "install",
            "1.31.2",
            "--credential-provider",
            "iam-ra",
            "--manifest",
            &manifest,
            "--manifest-public-key",
            s.join("sign.pub").to_str().unwrap(),
            "--root",
            root.path().to_str().unwrap(),
            "--arch",
            "amd64",
            "--containerd-source",
            "none",
        ],
        &[],
    );
    r.ok();
    assert!(
        !root.path().join("usr/bin/containerd").exists(),
        "--containerd-source none"
    );
    let tracker = std::fs::read_to_string(root.path().join("var/lib/hybridboot/tracker")).unwrap();
    assert!(tracker.contains("  Containerd: none\n"), "{tracker}");
    assert_eq!(m.counts().len(), 0);
    let _ = std::io::stderr().flush();
}
