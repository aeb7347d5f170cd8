//! Keys and certificates made with the openssl CLI: the one place the tests run `openssl` to
//! create them. (`peers::MiniCa`, through tests/peers/mini_ca.py, makes what openssl's CLI
//! cannot: certificates valid over any window, expired ones included.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl args...` in `dir`; panics with openssl's stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e} (did .ci/run install it?)"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key `key` and a self-signed certificate `cert` for `/CN=<cn>`, valid `days`.
pub fn self_signed_ec(cert: &Path, key: &Path, cn: &str, days: u32) {
    openssl(
        Path::new("."),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-days",
            &days.to_string(),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
}

/// A throwaway P-256 CA (self-signed, valid 2 days) that issues server certificates.
pub struct OpensslCa {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl OpensslCa {
    /// Creates `<name>.pem` and `<name>.key` in `dir`.
    pub fn new(dir: &Path, name: &str, cn: &str) -> OpensslCa {
        let ca = OpensslCa {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        self_signed_ec(&ca.cert, &ca.key, cn, 2);
        ca
    }

    /// A P-256 server certificate `<name>.pem` (key `<name>.key`) in `dir` for `/CN=<cn>`, valid
    /// 2 days, with the X.509v3 extension lines `ext` (e.g.
    /// `subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n`).
    pub fn server_cert(&self, dir: &Path, name: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
        let file = |suffix: &str| dir.join(format!("{name}.{suffix}"));
        let (cert, key, csr, ext_file) = (file("pem"), file("key"), file("csr"), file("ext"));
        let s = |p: &Path| p.to_str().unwrap().to_string();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &s(&key),
                "-out",
                &s(&csr),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        std::fs::write(&ext_file, ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(&self.cert),
                "-CAkey",
                &s(&self.key),
                "-CAcreateserial",
                "-out",
                &s(&cert),
                "-days",
                "2",
                "-extfile",
                &s(&ext_file),
            ],
        );
        (cert, key)
    }
}

/// The DER form of the PEM certificate `pem`, written next to it (`<pem>.der`); returns its path.
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
pub fn cert_to_der(pem: &Path) -> PathBuf {
    let der = pem.with_extension("der");
    openssl(
        Path::new("."),
        &[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ],
    );
    der
}

/// One field of the first certificate in `path` as `openssl x509 -noout <what>` prints it
/// (`-subject`, `-serial`, `-pubkey`, `-enddate`, ...).
pub fn x509_field(path: &Path, what: &str) -> String {
    let r = super::tool(
        "openssl",
        &["x509", "-in", path.to_str().unwrap(), "-noout", what],
        &[],
    );
    assert_eq!(r.code, 0, "openssl x509 {what}: {}", r.stderr);
    r.stdout
}
