//! Development key files: PEM PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
//!
//! The private key sits on disk, so this backend is for development and tests only; it refuses a
//! file that group or others can read.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Algorithm, KeyError, NodeKey, OpenMode};
use crate::fsutil;

const TSS2_LABEL: &str = "-----BEGIN TSS2 PRIVATE KEY-----";
/// Private key files are small; anything larger is not a key.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Whether `path` holds a TSS2 PEM (TPM-wrapped) key. A missing file is not one.
pub fn is_tss2_pem(path: &Path) -> Result<bool, KeyError> {
    match std::fs::File::open(path) {
        Ok(f) => {
            let mut head = Vec::new();
            f.take(4096)
                .read_to_end(&mut head)
                .map_err(|e| KeyError::io(format!("reading key file {}", path.display()), e))?;
            Ok(String::from_utf8_lossy(&head)
                .trim_start()
                .starts_with(TSS2_LABEL))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(KeyError::io(
            format!("opening key file {}", path.display()),
            e,
        )),
    }
}

enum Inner {
    Ec(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// A key held in a PEM file.
pub struct FileKey {
    path: PathBuf,
    inner: Inner,
    spki: Vec<u8>,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKey")
            .field("path", &self.path)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl FileKey {
    /// Opens the key file, creating it (mode 0600, atomically) when asked and absent.
    pub fn open(path: &Path, mode: OpenMode) -> Result<FileKey, KeyError> {
        let reference = format!("file:{}", path.display());
        let key = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match mode {
                OpenMode::Existing => return Err(KeyError::NotFound { reference }),
                OpenMode::CreateIfAbsent(alg) => {
                    log::warn!(
                        "creating a software key file {}: for development only, use a TPM or HSM in production",
                        path.display()
                    );
                    return FileKey::create(path, alg);
                }
            },
            Err(e) => {
                return Err(KeyError::io(
                    format!("reading key file {}", path.display()),
                    e,
                ))
            }
            Ok(_) => FileKey::load(path)?,
        };
        if let OpenMode::CreateIfAbsent(requested) = mode {
            if requested != key.algorithm() {
                return Err(KeyError::AlgorithmMismatch {
                    reference,
                    existing: key.algorithm(),
                    requested,
                });
            }
        }
        Ok(key)
    }

    fn load(path: &Path) -> Result<FileKey, KeyError> {
        let ctx = || format!("reading key file {}", path.display());
        let file = std::fs::File::open(path).map_err(|e| KeyError::io(ctx(), e))?;
        let meta = file.metadata().map_err(|e| KeyError::io(ctx(), e))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecureKeyFile {
                path: path.display().to_string(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| KeyError::io(ctx(), e))?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(KeyError::Unsupported {
                reference: format!("file:{}", path.display()),
                detail: "file is too large to be a key".into(),
            });
        }
        let inner = parse_pem(&text).map_err(|detail| KeyError::Unsupported {
            reference: format!("file:{}", path.display()),
            detail,
        })?;
        FileKey::from_inner(path, inner)
    }

    fn create(path: &Path, alg: Algorithm) -> Result<FileKey, KeyError> {
        use pkcs8::EncodePrivateKey;
        let inner = match alg {
            Algorithm::EcdsaP256 => {
                Inner::Ec(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
            }
            Algorithm::Rsa2048 => Inner::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                    .map_err(|e| KeyError::backend("generating RSA key", e))?,
            )),
        };
        let pem = match &inner {
            Inner::Ec(k) => k.to_pkcs8_pem(pkcs8::LineEnding::LF),
            Inner::Rsa(k) => k.to_pkcs8_pem(pkcs8::LineEnding::LF),
        }
        .map_err(|e| KeyError::backend("encoding key", e))?;
        fsutil::atomic_write(path, pem.as_bytes(), &fsutil::WriteOptions::private())
            .map_err(|e| KeyError::io(format!("writing key file {}", path.display()), e))?;
        FileKey::from_inner(path, inner)
    }

    fn from_inner(path: &Path, inner: Inner) -> Result<FileKey, KeyError> {
        use pkcs8::EncodePublicKey;
        let spki = match &inner {
            Inner::Ec(k) => k.verifying_key().to_public_key_der(),
            Inner::Rsa(k) => k.to_public_key().to_public_key_der(),
        }
        .map_err(|e| KeyError::backend("encoding public key", e))?
        .into_vec();
        let key = FileKey {
            path: path.to_path_buf(),
            inner,
            spki,
        };
        // Rejects RSA sizes other than 2048 with the common message.
        super::spki_algorithm(&key.spki, &key.describe())?;
        Ok(key)
    }
}

fn parse_pem(text: &str) -> Result<Inner, String> {
    use pkcs8::DecodePrivateKey;
    let label = text
        .lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
        })
        .ok_or("no PEM block found (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")?;
    match label {
        "PRIVATE KEY" => {
            if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(text) {
                Ok(Inner::Ec(k))
            } else {
                rsa::RsaPrivateKey::from_pkcs8_pem(text)
                    .map(|k| Inner::Rsa(Box::new(k)))
                    .map_err(|_| "PKCS#8 key is neither P-256 ECDSA nor RSA".to_string())
            }
        }
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(text)
            .map(|k| Inner::Ec(k.into()))
            .map_err(|e| format!("SEC1 key is not a P-256 key: {e}")),
        "RSA PRIVATE KEY" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            rsa::RsaPrivateKey::from_pkcs1_pem(text)
                .map(|k| Inner::Rsa(Box::new(k)))
                .map_err(|e| format!("unreadable PKCS#1 RSA key: {e}"))
        }
        "ENCRYPTED PRIVATE KEY" => {
            Err("encrypted key files are not supported; use a TPM or PKCS#11 key".into())
        }
        other => Err(format!("PEM block {other:?} is not a private key")),
    }
}

impl NodeKey for FileKey {
    fn algorithm(&self) -> Algorithm {
        match self.inner {
            Inner::Ec(_) => Algorithm::EcdsaP256,
            Inner::Rsa(_) => Algorithm::Rsa2048,
        }
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Ec(k) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner;
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash(digest)
                    .map_err(|e| KeyError::backend("ECDSA signing", e))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Inner::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest)
                .map_err(|e| KeyError::backend("RSA signing", e)),
        }
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_signs_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        let k = FileKey::open(&p, OpenMode::CreateIfAbsent(Algorithm::EcdsaP256)).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let d = [7u8; 32];
        let sig = k.sign_digest(&d).unwrap();
        assert!(super::super::verify_digest(k.public_key_der(), &d, &sig));
        let again = FileKey::open(&p, OpenMode::CreateIfAbsent(Algorithm::EcdsaP256)).unwrap();
        assert_eq!(again.public_key_der(), k.public_key_der());
        assert!(matches!(
            FileKey::open(&p, OpenMode::CreateIfAbsent(Algorithm::Rsa2048)),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn group_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        FileKey::open(&p, OpenMode::CreateIfAbsent(Algorithm::EcdsaP256)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = FileKey::open(&p, OpenMode::Existing).unwrap_err();
        assert!(matches!(err, KeyError::InsecureKeyFile { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }
}
