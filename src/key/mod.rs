//! The node key: one trait, three backends (TPM 2.0, PKCS#11, development key file), chosen once
//! from a key reference string (see [`KeyRef`]).
//!
//! Every later step (CSR, Vault mutual TLS, Roles Anywhere, EKS token) signs through
//! [`NodeKey::sign_digest`]; nothing outside a backend ever sees private key material.

mod file;
#[cfg(feature = "pkcs11")]
mod pkcs11;
#[cfg(feature = "tpm")]
mod tpm;
/// The TPM object templates (for the benchmark's floor, which drives tss-esapi directly).
#[cfg(feature = "tpm")]
#[doc(hidden)]
pub use tpm::{signing_key_template as tpm_signing_key_template, srk_template as tpm_srk_template};
mod settings;
#[cfg(feature = "tpm-native")]
pub mod tpm_native;
pub mod tss2pem;
pub mod uri;

use crate::error::{Class, Classify};
use std::fmt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

pub use settings::KeySettings;
pub use uri::{KeyRef, Pkcs11Uri};

use crate::secret::Secret;

/// The two signature algorithms hybridboot supports (what IAM Roles Anywhere and Vault accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on NIST P-256 with SHA-256; signatures are DER `Ecdsa-Sig-Value`.
    EcdsaP256,
    /// RSA 2048-bit, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa2048,
}

impl Algorithm {
    /// The name used on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Rsa2048 => "rsa-2048",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsa-p256" | "ecdsa" | "ec" | "p256" | "p-256" => Ok(Algorithm::EcdsaP256),
            "rsa-2048" | "rsa" | "rsa2048" => Ok(Algorithm::Rsa2048),
            _ => Err(format!(
                "unknown key algorithm {s:?}: use ecdsa-p256 or rsa-2048"
            )),
        }
    }
}

/// A private key held by a backend. Implementations never expose private key material.
pub trait NodeKey: Send + Sync + fmt::Debug {
    /// The key's algorithm.
    fn algorithm(&self) -> Algorithm;

    /// DER `SubjectPublicKeyInfo` of the public half.
    fn public_key_der(&self) -> &[u8];

    /// Signs a SHA-256 digest. ECDSA returns a DER `Ecdsa-Sig-Value` (backends that produce raw
    /// `r||s` convert with [`ecdsa_raw_to_der`]); RSA returns the PKCS#1 v1.5 signature over the
    /// SHA-256 `DigestInfo`.
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError>;

    /// A short, secret-free description of where the key lives (for logs and errors).
    fn describe(&self) -> String;

    /// Hashes `message` with SHA-256 and signs the digest.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        self.sign_digest(&digest)
    }

    /// The public key as a PEM `PUBLIC KEY` (SPKI) block.
    fn public_key_pem(&self) -> String {
        pem_rfc7468::encode_string(
            "PUBLIC KEY",
            pem_rfc7468::LineEnding::LF,
            self.public_key_der(),
        )
        .expect("PEM encoding of a DER buffer cannot fail")
    }

    /// SHA-256 of the DER SPKI, lowercase hex: a stable fingerprint for logs and status.
    fn fingerprint(&self) -> String {
        spki_fingerprint(self.public_key_der())
    }
}

/// SHA-256 of a DER SPKI, lowercase hex: [`NodeKey::fingerprint`] of a key not opened.
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// Options that apply to opening a key, gathered from flags, environment and configuration.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// TPM TCTI string (`device:/dev/tpmrm0`, `swtpm:host=..,port=..`).
    pub tcti: Option<String>,
    /// PKCS#11 module path, when the URI has no `module-path`.
    pub pkcs11_lib: Option<PathBuf>,
    /// PKCS#11 user PIN from the environment (`HYBRIDBOOT_PKCS11_PIN`), used when the URI has no
    /// `pin-source` / `pin-value`.
    pub pkcs11_pin: Option<Secret>,
    /// File holding the TPM key's auth value (read, used, zeroized).
    pub tpm_auth_file: Option<PathBuf>,
    /// The TPM key's auth value given directly (`--tpm-key-password`); wins over the file.
    pub tpm_auth: Option<crate::secret::Secret>,
    /// `--reuse-pin` was given (keys that need the PIN for every signature).
    pub pkcs11_reuse_pin: bool,
}

/// Whether to create the key when it does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The key must exist.
    Existing,
    /// Create the key with this algorithm when absent; an existing key of another algorithm is an
    /// error.
    CreateIfAbsent(Algorithm),
}

/// Errors of the key layer. Messages are one line, name the reference, and never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key reference scheme {scheme:?} in {reference:?}: use handle:0x81000000-0x81FFFFFF, pkcs11:token=..;object=.., file:/path or a path to a PEM key")]
    UnknownScheme { scheme: String, reference: String },
    #[error("invalid key reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("TPM handle {handle} is outside the persistent owner range 0x81000000-0x81FFFFFF")]
    HandleOutOfRange { handle: String },
    #[error("cannot reach the TPM through TCTI {tcti:?}: {detail} (is the TPM device present, or swtpm running? set --tcti or HYBRIDBOOT_TCTI)")]
    TpmUnreachable { tcti: String, detail: String },
    #[error("no PKCS#11 token with label {label:?} in {module} (tokens present: {available})")]
    TokenNotFound {
        label: String,
        module: String,
        available: String,
    },
    #[error("PKCS#11 token {label:?} rejected the PIN (check pin-source / HYBRIDBOOT_PKCS11_PIN; repeated failures may lock the token)")]
    WrongPin { label: String },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}): run chmod 600 {path}"
    )]
    InsecureKeyFile { path: String, mode: u32 },
    #[error("key {reference} exists as {existing}, but {requested} was requested: use --algorithm {existing} or another reference")]
    AlgorithmMismatch {
        reference: String,
        existing: Algorithm,
        requested: Algorithm,
    },
    #[error(
        "key {reference} does not exist: create it with `hybridboot key create --key {reference}`"
    )]
    NotFound { reference: String },
    #[error(
        "key {reference} has an unsupported type: {detail} (supported: ECDSA P-256, RSA 2048)"
    )]
    Unsupported { reference: String, detail: String },
    #[error(
        "the {backend} key backend is not compiled into this binary (cargo feature `{feature}`)"
    )]
    BackendDisabled {
        backend: &'static str,
        feature: &'static str,
    },
    #[error("{context}: {detail}")]
    Backend { context: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Classify for KeyError {
    /// Transient: an unreachable TPM (it may still be starting). Everything else (a missing or
    /// mismatched key, a bad reference, a backend's refusal) needs an operator.
    fn class(&self) -> Class {
        match self {
            KeyError::TpmUnreachable { .. } => Class::Transient,
            _ => Class::Operator,
        }
    }
}

impl KeyError {
    pub(crate) fn backend(context: impl Into<String>, detail: impl fmt::Display) -> Self {
        KeyError::Backend {
            context: context.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        KeyError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Opens (and with [`OpenMode::CreateIfAbsent`] creates) the key a reference names.
pub fn open(
    reference: &KeyRef,
    opts: &KeyOptions,
    mode: OpenMode,
) -> Result<Box<dyn NodeKey>, KeyError> {
    match reference {
        KeyRef::TpmHandle(handle) => open_tpm_handle(*handle, opts, mode),
        KeyRef::Path(path) => {
            if file::is_tss2_pem(path)? {
                open_tss2_pem(path, opts, mode)
            } else {
                Ok(Box::new(file::FileKey::open(path, mode)?))
            }
        }
        KeyRef::Pkcs11(uri) => open_pkcs11(uri, opts, mode),
    }
}

/// What `key delete` found under a reference, and whether it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Each object, in words (type, algorithm, label / handle, fingerprint when readable).
    pub objects: Vec<String>,
    /// True when they were deleted; false when only described (no confirmation).
    pub deleted: bool,
}

/// `key delete`: finds what `reference` names, whatever its algorithm (a key of a wrong
/// algorithm, a decommissioned token object), describes it and, when `confirm`, deletes it: a
/// TPM persistent handle is evicted, token objects with the URI's label / id are destroyed, a
/// key file is removed. Without `confirm` nothing changes.
pub fn delete(reference: &KeyRef, opts: &KeyOptions, confirm: bool) -> Result<Deletion, KeyError> {
    let objects = match reference {
        KeyRef::TpmHandle(handle) => vec![delete_tpm_handle(*handle, opts, confirm)?],
        KeyRef::Path(path) => {
            let kind = if file::is_tss2_pem(path)? {
                "TSS2 PEM key file (the key exists only in this file)"
            } else {
                "private key file"
            };
            let what = format!("{kind} {}", path.display());
            if confirm {
                crate::fsutil::remove_file(path)
                    .map_err(|e| KeyError::io(format!("deleting {}", path.display()), e))?;
            }
            vec![what]
        }
        KeyRef::Pkcs11(uri) => delete_pkcs11(uri, opts, confirm)?,
    };
    Ok(Deletion {
        objects,
        deleted: confirm,
    })
}

#[cfg_attr(not(feature = "tpm"), allow(unused_variables))]
fn delete_tpm_handle(handle: u32, opts: &KeyOptions, confirm: bool) -> Result<String, KeyError> {
    #[cfg(feature = "tpm")]
    {
        tpm::delete_persistent(handle, opts, confirm)
    }
    #[cfg(not(feature = "tpm"))]
    {
        Err(KeyError::BackendDisabled {
            backend: "tss-esapi TPM (key delete)",
            feature: "tpm",
        })
    }
}

#[cfg(feature = "pkcs11")]
fn delete_pkcs11(
    uri: &Pkcs11Uri,
    opts: &KeyOptions,
    confirm: bool,
) -> Result<Vec<String>, KeyError> {
    pkcs11::delete(uri, opts, confirm)
}

#[cfg(not(feature = "pkcs11"))]
fn delete_pkcs11(_: &Pkcs11Uri, _: &KeyOptions, _: bool) -> Result<Vec<String>, KeyError> {
    Err(KeyError::BackendDisabled {
        backend: "PKCS#11",
        feature: "pkcs11",
    })
}

/// The DER certificate a `pkcs11:` URI names on its token (aws_signing_helper's
/// `--certificate pkcs11:...`).
pub fn read_token_certificate(uri: &str, opts: &KeyOptions) -> Result<Vec<u8>, KeyError> {
    let reference = KeyRef::parse(uri)?;
    let KeyRef::Pkcs11(uri) = reference else {
        return Err(KeyError::BadReference {
            reference: reference.to_string(),
            reason: "not a pkcs11: URI".into(),
        });
    };
    read_pkcs11_certificate(&uri, opts)
}

#[cfg(feature = "pkcs11")]
fn read_pkcs11_certificate(uri: &Pkcs11Uri, opts: &KeyOptions) -> Result<Vec<u8>, KeyError> {
    pkcs11::read_certificate(uri, opts)
}

#[cfg(not(feature = "pkcs11"))]
fn read_pkcs11_certificate(_: &Pkcs11Uri, _: &KeyOptions) -> Result<Vec<u8>, KeyError> {
    Err(KeyError::BackendDisabled {
        backend: "PKCS#11",
        feature: "pkcs11",
    })
}

/// The TPM backends a binary can contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmBackend {
    /// tss-esapi over the system's tpm2-tss (cargo feature `tpm`).
    Esapi,
    /// The native Rust client (cargo feature `tpm-native`), for the static binary.
    Native,
}

/// Environment variable choosing the TPM backend when both are compiled in.
pub const TPM_BACKEND_ENV: &str = "HYBRIDBOOT_TPM_BACKEND";

/// Chooses the TPM backend: `requested` is the value of [`TPM_BACKEND_ENV`] (`esapi` or
/// `native`); unset means esapi when it is compiled in, else native.
pub fn select_tpm_backend(
    requested: Option<&str>,
    esapi_built: bool,
    native_built: bool,
) -> Result<TpmBackend, KeyError> {
    let esapi = || {
        if esapi_built {
            Ok(TpmBackend::Esapi)
        } else {
            Err(KeyError::BackendDisabled {
                backend: "tss-esapi TPM",
                feature: "tpm",
            })
        }
    };
    let native = || {
        if native_built {
            Ok(TpmBackend::Native)
        } else {
            Err(KeyError::BackendDisabled {
                backend: "native TPM",
                feature: "tpm-native",
            })
        }
    };
    match requested.map(str::trim).filter(|r| !r.is_empty()) {
        None if esapi_built => esapi(),
        None if native_built => native(),
        None => Err(KeyError::BackendDisabled {
            backend: "TPM",
            feature: "tpm or tpm-native",
        }),
        Some(r) if r.eq_ignore_ascii_case("esapi") => esapi(),
        Some(r) if r.eq_ignore_ascii_case("native") => native(),
        Some(other) => Err(KeyError::backend(
            format!("{TPM_BACKEND_ENV}={other:?}"),
            "unknown TPM backend: use esapi or native",
        )),
    }
}

fn tpm_backend() -> Result<TpmBackend, KeyError> {
    select_tpm_backend(
        std::env::var(TPM_BACKEND_ENV).ok().as_deref(),
        cfg!(feature = "tpm"),
        cfg!(feature = "tpm-native"),
    )
}

#[cfg_attr(
    not(any(feature = "tpm", feature = "tpm-native")),
    allow(unused_variables)
)]
fn open_tpm_handle(
    handle: u32,
    opts: &KeyOptions,
    mode: OpenMode,
) -> Result<Box<dyn NodeKey>, KeyError> {
    match tpm_backend()? {
        #[cfg(feature = "tpm")]
        TpmBackend::Esapi => Ok(Box::new(tpm::TpmKey::open_persistent(handle, opts, mode)?)),
        #[cfg(feature = "tpm-native")]
        TpmBackend::Native => Ok(Box::new(tpm_native::NativeTpmKey::open_persistent(
            handle, opts, mode,
        )?)),
        #[allow(unreachable_patterns)]
        other => unreachable!("select_tpm_backend returned {other:?}, which is not compiled in"),
    }
}

#[cfg_attr(
    not(any(feature = "tpm", feature = "tpm-native")),
    allow(unused_variables)
)]
fn open_tss2_pem(
    path: &std::path::Path,
    opts: &KeyOptions,
    mode: OpenMode,
) -> Result<Box<dyn NodeKey>, KeyError> {
    match tpm_backend()? {
        #[cfg(feature = "tpm")]
        TpmBackend::Esapi => Ok(Box::new(tpm::TpmKey::open_tss2_pem(path, opts, mode)?)),
        #[cfg(feature = "tpm-native")]
        TpmBackend::Native => Ok(Box::new(tpm_native::NativeTpmKey::open_tss2_pem(
            path, opts, mode,
        )?)),
        #[allow(unreachable_patterns)]
        other => unreachable!("select_tpm_backend returned {other:?}, which is not compiled in"),
    }
}

#[cfg(feature = "pkcs11")]
fn open_pkcs11(
    uri: &Pkcs11Uri,
    opts: &KeyOptions,
    mode: OpenMode,
) -> Result<Box<dyn NodeKey>, KeyError> {
    Ok(Box::new(pkcs11::Pkcs11Key::open(uri, opts, mode)?))
}

#[cfg(not(feature = "pkcs11"))]
fn open_pkcs11(_: &Pkcs11Uri, _: &KeyOptions, _: OpenMode) -> Result<Box<dyn NodeKey>, KeyError> {
    Err(KeyError::BackendDisabled {
        backend: "PKCS#11",
        feature: "pkcs11",
    })
}

/// Converts a raw ECDSA P-256 signature `r||s` (64 bytes, as TPMs and PKCS#11 return it) to DER.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let sig = p256::ecdsa::Signature::from_slice(raw)
        .map_err(|e| KeyError::backend("malformed raw ECDSA signature", e))?;
    Ok(sig.to_der().as_bytes().to_vec())
}

/// Converts scalars `r` and `s` of any length (TPMs may strip leading zeros) to a DER signature.
pub fn ecdsa_scalars_to_der(r: &[u8], s: &[u8]) -> Result<Vec<u8>, KeyError> {
    fn pad(v: &[u8]) -> Result<[u8; 32], KeyError> {
        let v = match v.iter().position(|b| *b != 0) {
            Some(i) => &v[i..],
            None => &[][..],
        };
        if v.len() > 32 {
            return Err(KeyError::backend(
                "malformed ECDSA signature",
                "scalar longer than 32 bytes",
            ));
        }
        let mut out = [0u8; 32];
        out[32 - v.len()..].copy_from_slice(v);
        Ok(out)
    }
    let mut raw = [0u8; 64];
    raw[..32].copy_from_slice(&pad(r)?);
    raw[32..].copy_from_slice(&pad(s)?);
    ecdsa_raw_to_der(&raw)
}

/// Builds the DER SPKI of a P-256 public key from its affine coordinates.
pub fn p256_spki_from_xy(x: &[u8], y: &[u8]) -> Result<Vec<u8>, KeyError> {
    use p256::pkcs8::EncodePublicKey;
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    for c in [x, y] {
        if c.len() > 32 {
            return Err(KeyError::backend(
                "malformed EC point",
                "coordinate too long",
            ));
        }
        sec1.extend(std::iter::repeat_n(0u8, 32 - c.len()));
        sec1.extend_from_slice(c);
    }
    let pk = p256::PublicKey::from_sec1_bytes(&sec1)
        .map_err(|e| KeyError::backend("EC point is not on P-256", e))?;
    Ok(pk
        .to_public_key_der()
        .map_err(|e| KeyError::backend("encoding EC public key", e))?
        .as_bytes()
        .to_vec())
}

/// Builds the DER SPKI of an RSA public key from modulus and public exponent (big-endian).
pub fn rsa_spki_from_parts(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, KeyError> {
    use rsa::pkcs8::EncodePublicKey;
    let n = rsa::BigUint::from_bytes_be(modulus);
    let e = if exponent.is_empty() || exponent.iter().all(|b| *b == 0) {
        rsa::BigUint::from(65537u32)
    } else {
        rsa::BigUint::from_bytes_be(exponent)
    };
    let pk =
        rsa::RsaPublicKey::new(n, e).map_err(|e| KeyError::backend("invalid RSA public key", e))?;
    Ok(pk
        .to_public_key_der()
        .map_err(|e| KeyError::backend("encoding RSA public key", e))?
        .as_bytes()
        .to_vec())
}

/// The algorithm of a DER SPKI, or a clear error for anything else.
pub fn spki_algorithm(spki_der: &[u8], reference: &str) -> Result<Algorithm, KeyError> {
    use der::Decode;
    let spki =
        spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| KeyError::Unsupported {
            reference: reference.to_string(),
            detail: format!("unreadable public key: {e}"),
        })?;
    if spki.algorithm.oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
        if curve == Some(const_oid::db::rfc5912::SECP_256_R_1) {
            return Ok(Algorithm::EcdsaP256);
        }
        return Err(KeyError::Unsupported {
            reference: reference.to_string(),
            detail: "EC key on a curve other than P-256".into(),
        });
    }
    if spki.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
        use rsa::pkcs8::DecodePublicKey;
        use rsa::traits::PublicKeyParts;
        let pk = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| {
            KeyError::Unsupported {
                reference: reference.to_string(),
                detail: format!("unreadable RSA key: {e}"),
            }
        })?;
        if pk.size() == 256 {
            return Ok(Algorithm::Rsa2048);
        }
        return Err(KeyError::Unsupported {
            reference: reference.to_string(),
            detail: format!("RSA key of {} bits", pk.size() * 8),
        });
    }
    Err(KeyError::Unsupported {
        reference: reference.to_string(),
        detail: format!("public key algorithm {}", spki.algorithm.oid),
    })
}

/// Verifies a signature made by a [`NodeKey`] against its SPKI (used to check backends and
/// certificates returned by peers).
pub fn verify_digest(spki_der: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
    use der::Decode;
    let Ok(spki) = spki::SubjectPublicKeyInfoRef::from_der(spki_der) else {
        return false;
    };
    if spki.algorithm.oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let Ok(vk) =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        else {
            return false;
        };
        let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else {
            return false;
        };
        vk.verify_prehash(digest, &sig).is_ok()
    } else {
        use rsa::pkcs8::DecodePublicKey;
        let Ok(pk) = rsa::RsaPublicKey::from_public_key_der(spki_der) else {
            return false;
        };
        pk.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), digest, signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_scalar_forms_give_the_same_der() {
        let mut raw = [0u8; 64];
        raw[1] = 0x80; // r has a leading zero byte and a high bit after it
        raw[31] = 1;
        raw[32] = 0x7f;
        raw[63] = 2;
        let a = ecdsa_raw_to_der(&raw).unwrap();
        let b = ecdsa_scalars_to_der(&raw[1..32], &raw[32..]).unwrap();
        assert_eq!(a, b);
        // SEQUENCE, INTEGER r (0x00 prefix because of the high bit), INTEGER s
        assert_eq!(a[0], 0x30);
        let back = p256::ecdsa::Signature::from_der(&a).unwrap();
        assert_eq!(&back.to_bytes()[..], &raw[..]);
    }

    #[test]
    fn tpm_backend_selection() {
        use TpmBackend::*;
        assert_eq!(select_tpm_backend(None, true, true).unwrap(), Esapi);
        assert_eq!(select_tpm_backend(Some(""), true, true).unwrap(), Esapi);
        assert_eq!(select_tpm_backend(None, false, true).unwrap(), Native);
        assert_eq!(
            select_tpm_backend(Some("native"), true, true).unwrap(),
            Native
        );
        assert_eq!(
            select_tpm_backend(Some("ESAPI"), true, true).unwrap(),
            Esapi
        );
        assert_eq!(
            select_tpm_backend(Some("native"), false, true).unwrap(),
            Native
        );
        let e = select_tpm_backend(Some("native"), true, false).unwrap_err();
        assert!(e.to_string().contains("tpm-native"), "{e}");
        let e = select_tpm_backend(Some("esapi"), false, true).unwrap_err();
        assert!(e.to_string().contains("`tpm`"), "{e}");
        assert!(select_tpm_backend(None, false, false).is_err());
        let e = select_tpm_backend(Some("tabrmd"), true, true).unwrap_err();
        assert!(e.to_string().contains("use esapi or native"), "{e}");
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [Algorithm::EcdsaP256, Algorithm::Rsa2048] {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
        }
        assert!("dsa".parse::<Algorithm>().is_err());
    }
}
