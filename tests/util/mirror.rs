//! A local HTTPS artifact mirror for `hybridboot install` (tests/peers/install_mirror.py with a
//! test CA made with openssl): a manifest in nodeadm's schema and real binaries from Debian
//! packages (kubectl, containerd, runc, the containernetworking-plugins tarball) plus stand-ins
//! where no real binary exists (kubelet, aws-iam-authenticator, ecr-credential-provider). The
//! mirror counts requests and can cut a body short or serve wrong bytes.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::x509::OpensslCa;

/// The releases in the store, by minor: 1.31 (what [`Mirror::start`] publishes), 1.28 (before
/// kubelet config drop-ins) and 1.29 for upgrade's tests.
pub const RELEASES: &[(&str, &[&str])] = &[
    ("1.31", &["1.31.1", "1.31.2"]),
    ("1.28", &["1.28.1"]),
    ("1.29", &["1.29.1"]),
];

pub const CNI_TGZ: &str = "cni-plugins-linux-amd64-v1.6.0.tgz";

pub fn sha256_hex(path: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

pub fn sh(dir: &Path, program: &str, args: &[&str]) {
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

pub fn write(path: &Path, data: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The artifact store shared by every test in this process (read-only once built): real
/// binaries, tarballs, checksum files, the test CA and the manifest signing keys.
pub fn store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        // Built once under target/ and reused by later runs (it only changes with this file's
        // STORE_VERSION); built in a private directory and renamed, so a half-built store is
        // never used.
        const STORE_VERSION: &str = "install-store-v2";
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
        for v in RELEASES.iter().flat_map(|(_, patches)| *patches) {
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
            // The older minors (upgrade's) carry their own kubectl stand-in.
            let kc = d.join(v).join("kubectl");
            write(
                &kc,
                format!("#!/bin/sh\necho Client Version: v{v}\n").as_bytes(),
                0o755,
            );
            std::fs::write(d.join(v).join("kubectl.sha256"), sha256_hex(&kc)).unwrap();
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
        // Test CA (`ca.pem`) and the mirror's certificate (127.0.0.1, `server.pem`).
        OpensslCa::new(&d, "ca", "install mirror test CA").server_cert(
            &d,
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
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
pub struct Mirror {
    child: Child,
    pub port: u16,
    pub overlay: tempfile::TempDir,
    /// The releases its manifest lists (1.31 unless started with more).
    releases: &'static [(&'static str, &'static [&'static str])],
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Manifest variants.
#[derive(Clone, Copy, PartialEq)]
pub enum Cni {
    Good,
    Evil,
}

impl Mirror {
    pub fn start() -> Mirror {
        Mirror::start_with_releases(&RELEASES[..1])
    }

    /// A mirror whose manifest lists `releases` (a part of [`RELEASES`]).
    pub fn start_with_releases(
        releases: &'static [(&'static str, &'static [&'static str])],
    ) -> Mirror {
        let overlay = tempfile::tempdir().unwrap();
        let mut m = Mirror::spawn(overlay, &[store()]);
        m.releases = releases;
        m.publish("https", Cni::Good, "sign");
        m
    }

    /// A mirror that serves `dir` alone (what a mirror operator publishes), over HTTPS with
    /// the store's test CA. The overlay is an empty directory searched first.
    pub fn serve(dir: &Path) -> Mirror {
        Mirror::spawn(tempfile::tempdir().unwrap(), &[dir])
    }

    fn spawn(overlay: tempfile::TempDir, dirs: &[&Path]) -> Mirror {
        let s = store();
        let mut cmd = Command::new("python3");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/install_mirror.py"))
            .args(["--cert", s.join("server.pem").to_str().unwrap()])
            .args(["--key", s.join("server.key").to_str().unwrap()])
            .args(["--dir", overlay.path().to_str().unwrap()]);
        for d in dirs {
            cmd.args(["--dir", d.to_str().unwrap()]);
        }
        let mut child = cmd
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
        Mirror {
            child,
            port,
            overlay,
            releases: &RELEASES[..1],
        }
    }

    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn manifest_url(&self) -> String {
        format!("{}/manifest.yaml", self.base())
    }

    /// Writes manifest.yaml (URLs under `scheme`: https to this mirror, or file:// to the
    /// store), its signed manifest (serial 1) and the legacy detached signature made with `key`
    /// ("sign", "other", or "" for neither).
    pub fn publish(&self, scheme: &str, cni: Cni, key: &str) {
        self.publish_with(scheme, cni, key, 1, |t| t);
    }

    /// [`Mirror::publish`] with the signed manifest's `serial` and an `edit` of the manifest
    /// text before it is signed.
    pub fn publish_with(
        &self,
        scheme: &str,
        cni: Cni,
        key: &str,
        serial: u64,
        edit: impl Fn(String) -> String,
    ) {
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
        let mut text = String::from("supported_eks_releases:\n");
        // The signed manifest's artifact lines, digests computed from the store as a mirror
        // operator computes them from the files they publish (gzip'd ones decompressed).
        let mut digests = String::new();
        for (minor, patches) in self.releases {
            // The last patch listed is the latest.
            let latest = patches[patches.len() - 1].rsplit('.').next().unwrap();
            text += &format!("- major_minor_version: \"{minor}\"\n  latest_patch_version: \"{latest}\"\n  patch_releases:\n");
            for v in *patches {
                let p = v.rsplit('.').next().unwrap();
                // 1.31 uses the distribution's real kubectl; the others their own stand-in.
                let kubectl_dir = if *minor == "1.31" { "common" } else { *v };
                text += &format!("  - version: {v}\n    patch_version: \"{p}\"\n    release_date: \"2026-11-01\"\n    artifacts:\n");
                text += &art("kubelet", v, "kubelet", false);
                text += &art("kubectl", kubectl_dir, "kubectl", false);
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
                for (name, file) in [
                    ("kubelet", s.join(v).join("kubelet")),
                    ("kubectl", s.join(kubectl_dir).join("kubectl")),
                    ("cni-plugins", s.join(cni_dir).join(CNI_TGZ)),
                    (
                        "aws-iam-authenticator",
                        s.join("common/aws-iam-authenticator"),
                    ),
                    (
                        "ecr-credential-provider",
                        s.join("common/ecr-credential-provider"),
                    ),
                    ("containerd", s.join("common/containerd")),
                    ("runc", s.join("common/runc")),
                ] {
                    digests += &format!("artifact {v} linux amd64 {name} {}\n", sha256_hex(&file));
                }
            }
        }
        text += "region_config:\n  us-east-1: {partition: aws}\nssm_releases: null\n";
        let text = edit(text);
        let dir = self.overlay.path();
        let m = dir.join("manifest.yaml");
        std::fs::write(&m, &text).unwrap();
        for f in ["manifest.yaml.sig", "manifest.yaml.signed"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        if key.is_empty() {
            return;
        }
        let key = s.join(format!("{key}.key"));
        let sign = |input: &str, output: &str| {
            sh(
                dir,
                "openssl",
                &[
                    "pkeyutl",
                    "-sign",
                    "-rawin",
                    "-inkey",
                    key.to_str().unwrap(),
                    "-in",
                    input,
                    "-out",
                    output,
                ],
            )
        };
        // The detached signature earlier versions checked (over the manifest bytes only): a
        // mirror in transition serves both; it must not be enough.
        sign("manifest.yaml", "manifest.yaml.sig");
        let body = format!(
            "hybridboot-signed-manifest 1\nserial {serial}\nmanifest-sha256 {}\n{digests}",
            sha256_hex(&m)
        );
        std::fs::write(dir.join("signed.body"), &body).unwrap();
        sign("signed.body", "signed.sig");
        let sig: [u8; 64] = std::fs::read(dir.join("signed.sig"))
            .unwrap()
            .try_into()
            .unwrap();
        std::fs::write(
            dir.join("manifest.yaml.signed"),
            hybridboot::node::install::signed::assemble(&body, &sig),
        )
        .unwrap();
        for f in ["signed.body", "signed.sig"] {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
    }

    pub fn control(&self, path_query: &str) {
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

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.get_json("/__counts")
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let out = Command::new("curl")
            .args(["-sf", "--cacert", store().join("ca.pem").to_str().unwrap()])
            .arg(format!("{}{path}", self.base()))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Credential headers the mirror saw, as `path: header` (see install_mirror.py `/__creds`).
    pub fn credentials_seen(&self) -> Vec<String> {
        self.get_json("/__creds")
    }

    /// Every artifact GET the mirror answered (`path`, `range`, `if_range`, `status`) and the
    /// most in flight at once (`max_active`); see install_mirror.py `/__log`.
    pub fn request_log(&self) -> serde_json::Value {
        self.get_json("/__log")
    }

    /// The artifact GETs of `path`, in order, as `(Range, If-Range, status)`.
    pub fn requests_of(&self, path: &str) -> Vec<(Option<String>, Option<String>, u64)> {
        let log = self.request_log();
        log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == path)
            .map(|r| {
                (
                    r["range"].as_str().map(String::from),
                    r["if_range"].as_str().map(String::from),
                    r["status"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// GETs of artifact bodies (not the manifest, signature or checksum files).
    pub fn artifact_gets(&self) -> u64 {
        self.counts()
            .iter()
            .filter(|(p, _)| !p.starts_with("/manifest") && !p.ends_with(".sha256"))
            .map(|(_, n)| n)
            .sum()
    }
}
