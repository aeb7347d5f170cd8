//! Manifest authenticity beyond TLS: Ed25519 signatures checked against a public key baked into
//! the image ([`PublicKey`]), and made by the mirror operator's private key ([`SigningKey`],
//! `sync-artifacts`). Pure, but for reading the key file.

use crate::error::{Class, Classify};
use base64::Engine;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Errors of signature checking.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("manifest public key {0}: expected a PEM `PUBLIC KEY` (Ed25519 SubjectPublicKeyInfo) or the 32-byte key in base64")]
    BadKey(String),
    #[error("manifest signature {0}: expected 64 raw bytes or their base64")]
    BadSignature(String),
    #[error("manifest signature {0} does not verify with the configured public key (manifest altered or signed with another key)")]
    Mismatch(String),
}

impl Classify for SignatureError {
    /// A bad key, a bad signature or a mismatch needs an operator (or a mirror fixed).
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses a PEM SubjectPublicKeyInfo or a base64 raw key; `source` names it in errors.
    pub fn parse(text: &[u8], source: &str) -> Result<PublicKey, SignatureError> {
        let bad = || SignatureError::BadKey(source.to_string());
        let text = std::str::from_utf8(text).map_err(|_| bad())?.trim();
        let raw: Vec<u8> = if text.starts_with("-----BEGIN") {
            let (label, der) = pem_rfc7468::decode_vec(text.as_bytes()).map_err(|_| bad())?;
            if label != "PUBLIC KEY" || der.len() != 44 || der[..12] != ED25519_SPKI_PREFIX {
                return Err(bad());
            }
            der[12..].to_vec()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| bad())?
        };
        Ok(PublicKey(raw.try_into().map_err(|_| bad())?))
    }

    /// Verifies `signature` (raw 64 bytes, or base64 text) over `message`.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
        source: &str,
    ) -> Result<(), SignatureError> {
        let sig = decode_signature(signature)
            .ok_or_else(|| SignatureError::BadSignature(source.to_string()))?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(message, &sig)
            .map_err(|_| SignatureError::Mismatch(source.to_string()))
    }
}

/// Why a manifest signing key could not be used. Never shows key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningKeyError {
    /// Not an unencrypted PEM PKCS#8 Ed25519 private key.
    #[error("signing key {0}: expected an unencrypted PEM `PRIVATE KEY` (PKCS#8 Ed25519), as `openssl genpkey -algorithm ed25519` writes it")]
    BadKey(String),
    /// It cannot be read.
    #[error("signing key {path}: {detail}")]
    Unreadable { path: String, detail: String },
    /// Group or others may read it.
    #[error(
        "signing key {path}: mode {mode:04o} lets group or others read it; `chmod 600 {path}`"
    )]
    Exposed { path: String, mode: u32 },
}

impl Classify for SigningKeyError {
    /// The operator gives the key file.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// An Ed25519 private key that signs manifests (the mirror operator's). Its `Debug` shows only
/// the public key.
pub struct SigningKey(ring::signature::Ed25519KeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ring::signature::KeyPair;
        write!(
            f,
            "SigningKey(public {})",
            base64::engine::general_purpose::STANDARD.encode(self.0.public_key())
        )
    }
}

impl SigningKey {
    /// Parses PEM PKCS#8 (v1 as openssl writes it, or v2); `source` names it in errors.
    pub fn parse(pem: &[u8], source: &str) -> Result<SigningKey, SigningKeyError> {
        let bad = || SigningKeyError::BadKey(source.to_string());
        let (label, der) = pem_rfc7468::decode_vec(pem).map_err(|_| bad())?;
        let der = zeroize::Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(bad());
        }
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map(SigningKey)
            .map_err(|_| bad())
    }

    /// Reads and parses a key file, refusing one that group or others can read.
    pub fn from_file(path: &std::path::Path) -> Result<SigningKey, SigningKeyError> {
        use std::os::unix::fs::PermissionsExt;
        let source = path.display().to_string();
        let unreadable = |e: std::io::Error| SigningKeyError::Unreadable {
            path: source.clone(),
            detail: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SigningKeyError::Exposed { path: source, mode });
        }
        let pem = zeroize::Zeroizing::new(
            crate::fsutil::read_capped(path, 64 * 1024).map_err(unreadable)?,
        );
        SigningKey::parse(&pem, &source)
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.0.sign(message).as_ref());
        out
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        use ring::signature::KeyPair;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(raw)
    }
}

fn decode_signature(bytes: &[u8]) -> Option<[u8; 64]> {
    if bytes.len() == 64 {
        return bytes.try_into().ok();
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?
        .try_into()
        .ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// A fresh Ed25519 key pair (also for `signed`'s tests).
    pub(in crate::node::install) fn keypair() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn pem(pk: &[u8]) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(pk);
        pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, &der).unwrap()
    }

    #[test]
    fn verifies_raw_and_base64_signatures_with_pem_or_raw_keys() {
        let kp = keypair();
        let msg = b"supported_eks_releases: []\n";
        let sig = kp.sign(msg);
        let b64 = base64::engine::general_purpose::STANDARD;
        for key_text in [pem(kp.public_key().as_ref()), b64.encode(kp.public_key())] {
            let key = PublicKey::parse(key_text.as_bytes(), "k").unwrap();
            key.verify(msg, sig.as_ref(), "s").unwrap();
            key.verify(msg, format!("{}\n", b64.encode(sig)).as_bytes(), "s")
                .unwrap();
            assert_eq!(
                key.verify(b"supported_eks_releases: [x]\n", sig.as_ref(), "s"),
                Err(SignatureError::Mismatch("s".into()))
            );
            assert_eq!(
                key.verify(msg, b"not a signature", "s"),
                Err(SignatureError::BadSignature("s".into()))
            );
        }
        // Another key's signature does not verify.
        let other = PublicKey::parse(b64.encode(keypair().public_key()).as_bytes(), "k").unwrap();
        assert!(matches!(
            other.verify(msg, sig.as_ref(), "s"),
            Err(SignatureError::Mismatch(_))
        ));
    }

    #[test]
    fn signing_key_signs_what_the_public_key_verifies() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let private =
            pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, pkcs8.as_ref())
                .unwrap();
        let key = SigningKey::parse(private.as_bytes(), "k.pem").unwrap();
        let sig = key.sign(b"body\n");
        key.public_key().verify(b"body\n", &sig, "s").unwrap();
        assert!(key.public_key().verify(b"body!\n", &sig, "s").is_err());
        // Debug shows the public half only.
        let debug = format!("{key:?}");
        let b64 = base64::engine::general_purpose::STANDARD;
        assert!(debug.contains(&b64.encode(key.public_key().0)), "{debug}");
        assert!(!debug.contains(&b64.encode(pkcs8.as_ref())), "{debug}");
        // A public key, or garbage, is no signing key; the error names the file only.
        let public = pem(&key.public_key().0);
        for bad in [
            public.as_str(),
            "",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert_eq!(
                SigningKey::parse(bad.as_bytes(), "k.pem").unwrap_err(),
                SigningKeyError::BadKey("k.pem".into())
            );
        }
    }

    #[test]
    fn rejects_non_ed25519_keys() {
        // A P-256 SPKI is a PUBLIC KEY too, but not Ed25519.
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            PublicKey::parse(p256.as_bytes(), "k"),
            Err(SignatureError::BadKey(_))
        ));
        assert!(PublicKey::parse(b"AAAA", "k").is_err());
        assert!(PublicKey::parse(b"", "k").is_err());
    }
}
