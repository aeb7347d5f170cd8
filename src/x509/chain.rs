//! Certificate chains: PEM bundles, leaf-first ordering, signature and validity checks, and the
//! facts later steps need from a certificate (serial, validity, CN, public key).
//!
//! Signatures are verified with `ring` (already linked for TLS): ECDSA P-256/P-384 with
//! SHA-256/384 and RSA PKCS#1 v1.5 with SHA-256/384/512.

use crate::error::{Class, Classify};
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use x509_cert::Certificate;

/// Errors reading or checking certificates. One line each, naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("no PEM CERTIFICATE block found")]
    NoCertificates,
    #[error("malformed PEM block #{index}: {detail}")]
    Pem { index: usize, detail: String },
    #[error("certificate #{index} is not valid DER X.509: {detail}")]
    Der { index: usize, detail: String },
    #[error("the certificate's public key is not the node key (certificate key sha256 {found}, node key sha256 {expected})")]
    WrongKey { expected: String, found: String },
    #[error("the certificate's common name is {found:?}, not the requested {expected:?}")]
    WrongCommonName { expected: String, found: String },
    #[error("the certificate of {subject} is not signed by {issuer}: {detail}")]
    BadSignature {
        subject: String,
        issuer: String,
        detail: String,
    },
    #[error("unsupported signature algorithm {0} (supported: ECDSA P-256/P-384 with SHA-256/384, RSA PKCS#1 v1.5 with SHA-256/384/512)")]
    UnsupportedAlgorithm(String),
    #[error(
        "the certificate of {subject} is not valid now: valid from {not_before} to {not_after}"
    )]
    NotValidNow {
        subject: String,
        not_before: String,
        not_after: String,
    },
    #[error("the chain is not linked: nothing issued {0}")]
    Unlinked(String),
}

impl Classify for ChainError {
    /// A certificate that does not parse, verify or match needs an operator (or its issuer fixed).
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// One parsed certificate with its DER encoding.
#[derive(Clone)]
pub struct Cert {
    der: Vec<u8>,
    cert: Certificate,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cert({})", self.subject())
    }
}

impl PartialEq for Cert {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Cert {
    /// Parses DER.
    pub fn from_der(der: &[u8]) -> Result<Cert, ChainError> {
        Self::parse(der.to_vec(), 0)
    }

    fn parse(der: Vec<u8>, index: usize) -> Result<Cert, ChainError> {
        let cert = Certificate::from_der(&der).map_err(|e| ChainError::Der {
            index,
            detail: e.to_string(),
        })?;
        Ok(Cert { der, cert })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM `CERTIFICATE` block.
    pub fn to_pem(&self) -> String {
        pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &self.der)
            .expect("PEM encoding of DER cannot fail")
    }

    /// Subject as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Issuer as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    fn subject_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .subject
            .to_der()
            .unwrap_or_default()
    }

    fn issuer_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .issuer
            .to_der()
            .unwrap_or_default()
    }

    /// Whether subject and issuer are the same name (a root).
    pub fn is_self_issued(&self) -> bool {
        self.subject_der() == self.issuer_der()
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap_or_default()
    }

    /// The first subject common name, if any.
    pub fn common_name(&self) -> Option<String> {
        self.subject_attribute(const_oid::db::rfc4519::CN)
    }

    /// The subject's serialNumber attribute (X.520; a device's serial number in an IEEE 802.1AR
    /// IDevID), if any. Not the certificate's serial number.
    pub fn subject_serial_number(&self) -> Option<String> {
        self.subject_attribute(const_oid::db::rfc4519::SERIAL_NUMBER)
    }

    /// The first value of a string attribute of the subject.
    fn subject_attribute(&self, oid: const_oid::ObjectIdentifier) -> Option<String> {
        for rdn in self.cert.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == oid {
                    return std::str::from_utf8(atv.value.value())
                        .ok()
                        .map(str::to_string);
                }
            }
        }
        None
    }

    /// Serial number: big-endian bytes without leading zeros.
    pub fn serial_bytes(&self) -> Vec<u8> {
        let raw = self.cert.tbs_certificate.serial_number.as_bytes();
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        let v = raw[start..].to_vec();
        if v.is_empty() {
            vec![0]
        } else {
            v
        }
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_before
            .to_system_time()
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_after
            .to_system_time()
    }

    /// The facts later steps need.
    pub fn info(&self) -> CertInfo {
        let serial = self.serial_bytes();
        CertInfo {
            serial_hex: serial_colon_hex(&serial),
            serial_decimal: bytes_to_decimal(&serial),
            not_before: self.not_before(),
            not_after: self.not_after(),
            common_name: self.common_name(),
            subject: self.subject(),
            issuer: self.issuer(),
        }
    }

    /// Checks that `issuer` signed this certificate (names chain and the signature verifies).
    pub fn verify_issued_by(&self, issuer: &Cert) -> Result<(), ChainError> {
        let fail = |detail: &str| ChainError::BadSignature {
            subject: self.subject(),
            issuer: issuer.subject(),
            detail: detail.to_string(),
        };
        if self.issuer_der() != issuer.subject_der() {
            return Err(fail("the issuer name does not match the CA's subject"));
        }
        let alg = &self.cert.signature_algorithm;
        let spki = &issuer.cert.tbs_certificate.subject_public_key_info;
        let ring_alg = ring_algorithm(
            &alg.oid,
            &spki.algorithm.oid,
            spki.algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok()),
        )?;
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| fail(&e.to_string()))?;
        let sig = self
            .cert
            .signature
            .as_bytes()
            .ok_or_else(|| fail("signature has unused bits"))?;
        ring::signature::UnparsedPublicKey::new(ring_alg, spki.subject_public_key.raw_bytes())
            .verify(&tbs, sig)
            .map_err(|_| fail("signature does not verify"))
    }

    /// Checks `not_before <= now <= not_after`.
    pub fn check_valid_at(&self, now: SystemTime) -> Result<(), ChainError> {
        if now < self.not_before() || now > self.not_after() {
            return Err(ChainError::NotValidNow {
                subject: self.subject(),
                not_before: rfc3339(self.not_before()),
                not_after: rfc3339(self.not_after()),
            });
        }
        Ok(())
    }
}

fn ring_algorithm(
    sig_oid: &const_oid::ObjectIdentifier,
    key_oid: &const_oid::ObjectIdentifier,
    curve: Option<const_oid::ObjectIdentifier>,
) -> Result<&'static dyn ring::signature::VerificationAlgorithm, ChainError> {
    use const_oid::db::rfc5912 as o;
    use ring::signature as s;
    let p256 = curve == Some(o::SECP_256_R_1);
    let p384 = curve == Some(o::SECP_384_R_1);
    let alg: Option<&'static dyn s::VerificationAlgorithm> = if *key_oid == o::ID_EC_PUBLIC_KEY {
        match *sig_oid {
            o::ECDSA_WITH_SHA_256 if p256 => Some(&s::ECDSA_P256_SHA256_ASN1),
            o::ECDSA_WITH_SHA_384 if p256 => Some(&s::ECDSA_P256_SHA384_ASN1),
            o::ECDSA_WITH_SHA_256 if p384 => Some(&s::ECDSA_P384_SHA256_ASN1),
            o::ECDSA_WITH_SHA_384 if p384 => Some(&s::ECDSA_P384_SHA384_ASN1),
            _ => None,
        }
    } else if *key_oid == o::RSA_ENCRYPTION {
        match *sig_oid {
            o::SHA_256_WITH_RSA_ENCRYPTION => Some(&s::RSA_PKCS1_2048_8192_SHA256),
            o::SHA_384_WITH_RSA_ENCRYPTION => Some(&s::RSA_PKCS1_2048_8192_SHA384),
            o::SHA_512_WITH_RSA_ENCRYPTION => Some(&s::RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        }
    } else {
        None
    };
    alg.ok_or_else(|| ChainError::UnsupportedAlgorithm(format!("{sig_oid} with key {key_oid}")))
}

/// What callers need to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial as Vault prints it (`serial_number`): lowercase hex bytes joined by colons.
    pub serial_hex: String,
    /// Serial in decimal (IAM Roles Anywhere `Credential=`).
    pub serial_decimal: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Subject CN.
    pub common_name: Option<String>,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Issuer (RFC 4514).
    pub issuer: String,
}

impl CertInfo {
    /// Total lifetime.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// DER certificates of every `CERTIFICATE` block in a PEM text, in order. Other block types
/// (keys, CSRs) are an error: a certificate file must not carry them.
pub fn parse_pem_bundle(pem: &str) -> Result<Vec<Vec<u8>>, ChainError> {
    let mut out = Vec::new();
    let mut rest = pem;
    let mut index = 0;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..].find("-----").ok_or(ChainError::Pem {
            index,
            detail: "unterminated BEGIN line".into(),
        })? + 11;
        let label = &block[11..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block.find(&end_marker).ok_or_else(|| ChainError::Pem {
            index,
            detail: format!("no {end_marker:?} line"),
        })? + end_marker.len();
        if label != "CERTIFICATE" {
            return Err(ChainError::Pem {
                index,
                detail: format!("unexpected {label:?} block (only CERTIFICATE blocks belong here)"),
            });
        }
        let (_, der) =
            pem_rfc7468::decode_vec(&block.as_bytes()[..end]).map_err(|e| ChainError::Pem {
                index,
                detail: e.to_string(),
            })?;
        out.push(der);
        index += 1;
        rest = &block[end..];
    }
    if out.is_empty() {
        return Err(ChainError::NoCertificates);
    }
    Ok(out)
}

/// Parses every certificate of a PEM bundle.
pub fn parse_pem_certs(pem: &str) -> Result<Vec<Cert>, ChainError> {
    parse_pem_bundle(pem)?
        .into_iter()
        .enumerate()
        .map(|(i, der)| Cert::parse(der, i))
        .collect()
}

/// Orders certificates leaf first, each followed by its issuer; duplicates are dropped.
/// The leaf is the certificate that issued none of the others; every later one must have issued
/// the one before it (by name), otherwise the set is not one chain.
pub fn order_chain(certs: Vec<Cert>) -> Result<Vec<Cert>, ChainError> {
    let mut unique: Vec<Cert> = Vec::new();
    for c in certs {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    if unique.is_empty() {
        return Err(ChainError::NoCertificates);
    }
    let issued_something = |c: &Cert| {
        unique
            .iter()
            .any(|o| o != c && !o.is_self_issued() && o.issuer_der() == c.subject_der())
    };
    let leaves: Vec<usize> = (0..unique.len())
        .filter(|&i| !issued_something(&unique[i]))
        .collect();
    let leaf = match leaves.as_slice() {
        [one] => *one,
        _ => {
            return Err(ChainError::Unlinked(format!(
                "{} certificates issue nothing else; expected exactly one leaf",
                leaves.len()
            )))
        }
    };
    let mut ordered = vec![unique.swap_remove(leaf)];
    while !unique.is_empty() {
        let last = ordered.last().expect("non-empty");
        if last.is_self_issued() {
            break;
        }
        let want = last.issuer_der();
        match unique.iter().position(|c| c.subject_der() == want) {
            Some(i) => ordered.push(unique.swap_remove(i)),
            None => break,
        }
    }
    if let Some(extra) = unique.first() {
        return Err(ChainError::Unlinked(extra.subject()));
    }
    Ok(ordered)
}

/// What a freshly issued leaf must satisfy.
#[derive(Debug, Clone)]
pub struct LeafExpectation<'a> {
    /// DER SPKI of the node key.
    pub spki_der: &'a [u8],
    /// The requested common name.
    pub common_name: &'a str,
    /// The time to check validity at.
    pub now: SystemTime,
}

/// Checks a returned leaf: its key is the node key, its CN the requested one, it is signed by
/// `issuing_ca`, each further CA in `chain` signs the one before, and leaf and CAs are valid now.
pub fn check_leaf(
    leaf: &Cert,
    issuing_ca: &Cert,
    chain: &[Cert],
    expect: &LeafExpectation<'_>,
) -> Result<CertInfo, ChainError> {
    let found = leaf.spki_der();
    if found != expect.spki_der {
        use sha2::Digest;
        return Err(ChainError::WrongKey {
            expected: hex::encode(sha2::Sha256::digest(expect.spki_der)),
            found: hex::encode(sha2::Sha256::digest(&found)),
        });
    }
    let cn = leaf.common_name().unwrap_or_default();
    if cn != expect.common_name {
        return Err(ChainError::WrongCommonName {
            expected: expect.common_name.to_string(),
            found: cn,
        });
    }
    leaf.verify_issued_by(issuing_ca)?;
    leaf.check_valid_at(expect.now)?;
    issuing_ca.check_valid_at(expect.now)?;
    // Each further CA must have issued the one before it; a self-signed root ends the chain
    // and must verify against itself.
    let mut child = issuing_ca;
    for ca in chain.iter().filter(|c| *c != issuing_ca) {
        if child.is_self_issued() {
            break;
        }
        child.verify_issued_by(ca)?;
        ca.check_valid_at(expect.now)?;
        child = ca;
    }
    if child.is_self_issued() {
        child.verify_issued_by(child)?;
    }
    Ok(leaf.info())
}

pub use crate::time::rfc3339;

/// A big-endian unsigned integer in lowercase hex without leading zeros (`0` for zero).
pub fn serial_hex(bytes: &[u8]) -> String {
    let h = hex::encode(bytes);
    match h.trim_start_matches('0') {
        "" => "0".into(),
        t => t.to_string(),
    }
}

/// A serial as Vault prints it (`serial_number`): lowercase hex bytes joined by colons, leading
/// zero bytes dropped.
pub fn serial_colon_hex(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes
        .get(first..)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A big-endian unsigned integer in decimal.
pub fn bytes_to_decimal(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new(); // little-endian decimal digits
    for &b in bytes {
        let mut carry = b as u32;
        for d in digits.iter_mut() {
            let v = (*d as u32) * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    if digits.is_empty() {
        return "0".into();
    }
    digits.iter().rev().map(|d| (b'0' + d) as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_conversion() {
        assert_eq!(bytes_to_decimal(&[]), "0");
        assert_eq!(bytes_to_decimal(&[0]), "0");
        assert_eq!(bytes_to_decimal(&[1, 0]), "256");
        assert_eq!(
            bytes_to_decimal(&hex::decode("3241e7dad334f342e11f56126de8599903973ff5").unwrap()),
            "286919284379444732568942904604506144371304251381"
        );
    }

    #[test]
    fn rfc3339_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(rfc3339(t), "1994-11-06T08:49:37Z");
    }

    #[test]
    fn pem_bundles() {
        assert!(matches!(
            parse_pem_bundle("nothing here"),
            Err(ChainError::NoCertificates)
        ));
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(parse_pem_bundle(key)
            .unwrap_err()
            .to_string()
            .contains("PRIVATE KEY"));
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(parse_pem_bundle(bad), Err(ChainError::Pem { .. })));
    }

    const ROOT: &str = include_str!("../../tests/fixtures/x509/root.pem");
    const INT: &str = include_str!("../../tests/fixtures/x509/int.pem");
    const LEAF: &str = include_str!("../../tests/fixtures/x509/leaf.pem");
    const LEAF_PUB: &str = include_str!("../../tests/fixtures/x509/leaf.pub.pem");
    const OTHER_PUB: &str = include_str!("../../tests/fixtures/x509/other.pub.pem");

    fn one(pem: &str) -> Cert {
        parse_pem_certs(pem).unwrap().remove(0)
    }

    fn spki(pem: &str) -> Vec<u8> {
        pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn orders_any_permutation_leaf_first() {
        let (root, int, leaf) = (one(ROOT), one(INT), one(LEAF));
        for input in [
            vec![root.clone(), int.clone(), leaf.clone()],
            vec![int.clone(), leaf.clone(), root.clone(), int.clone()],
            vec![leaf.clone(), root.clone(), int.clone()],
        ] {
            let ordered = order_chain(input).unwrap();
            assert_eq!(ordered, vec![leaf.clone(), int.clone(), root.clone()]);
        }
        // Two unrelated leaves are not one chain.
        let err = order_chain(vec![leaf.clone(), root.clone()]).unwrap_err();
        assert!(matches!(err, ChainError::Unlinked(_)), "{err}");
    }

    #[test]
    fn accepts_the_fixture_chain_with_p384_and_rsa_signatures() {
        let (root, int, leaf) = (one(ROOT), one(INT), one(LEAF));
        let leaf_spki = spki(LEAF_PUB);
        let info = check_leaf(
            &leaf,
            &int,
            std::slice::from_ref(&root),
            &LeafExpectation {
                spki_der: &leaf_spki,
                common_name: "node-1.example.com",
                now: now(),
            },
        )
        .unwrap();
        assert_eq!(info.serial_hex, "c0:ff:ee:01:23:45:67:89");
        assert_eq!(serial_colon_hex(&[0x00, 0x0d, 0x9c]), "0d:9c");
        assert_eq!(serial_hex(&[0x00, 0x0d, 0x9c]), "d9c");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(info.serial_decimal, "13907095862997510025");
        assert_eq!(info.common_name.as_deref(), Some("node-1.example.com"));
        assert_eq!(info.issuer, "CN=Fixture Issuing CA");
        assert!(info.lifetime() > Duration::from_secs(99 * 365 * 86400));
        // RSA PKCS#1 SHA-256 (leaf by issuing CA) and ECDSA P-384 SHA-384 (CA by root, root by
        // itself).
        leaf.verify_issued_by(&int).unwrap();
        int.verify_issued_by(&root).unwrap();
        root.verify_issued_by(&root).unwrap();
    }

    #[test]
    fn refuses_wrong_key_cn_issuer_signature_and_time() {
        let (root, int, leaf) = (one(ROOT), one(INT), one(LEAF));
        let leaf_spki = spki(LEAF_PUB);
        let other = spki(OTHER_PUB);
        let expect = |spki: &'static [u8], cn: &'static str, now: SystemTime| LeafExpectation {
            spki_der: spki,
            common_name: cn,
            now,
        };
        let leaf_spki: &'static [u8] = Box::leak(leaf_spki.into_boxed_slice());
        let other: &'static [u8] = Box::leak(other.into_boxed_slice());

        let e = check_leaf(
            &leaf,
            &int,
            &[],
            &expect(other, "node-1.example.com", now()),
        )
        .unwrap_err();
        assert!(matches!(e, ChainError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains("not the node key"));

        let e = check_leaf(
            &leaf,
            &int,
            &[],
            &expect(leaf_spki, "node-2.example.com", now()),
        )
        .unwrap_err();
        assert!(matches!(e, ChainError::WrongCommonName { .. }), "{e}");

        // Not issued by the root directly.
        let e = check_leaf(
            &leaf,
            &root,
            &[],
            &expect(leaf_spki, "node-1.example.com", now()),
        )
        .unwrap_err();
        assert!(matches!(e, ChainError::BadSignature { .. }), "{e}");

        // A flipped bit in the signature.
        let mut der = leaf.der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        let tampered = Cert::from_der(&der).unwrap();
        let e = tampered.verify_issued_by(&int).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");

        // Expired (checked 200 years from now) and not yet valid (before 2000).
        let later = now() + Duration::from_secs(200 * 365 * 86400);
        let e = check_leaf(
            &leaf,
            &int,
            &[],
            &expect(leaf_spki, "node-1.example.com", later),
        )
        .unwrap_err();
        assert!(matches!(e, ChainError::NotValidNow { .. }), "{e}");
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(946684800);
        assert!(leaf.check_valid_at(early).is_err());

        // A CA chain whose next element did not issue the issuing CA.
        let e = check_leaf(
            &leaf,
            &int,
            std::slice::from_ref(&leaf),
            &expect(leaf_spki, "node-1.example.com", now()),
        )
        .unwrap_err();
        assert!(matches!(e, ChainError::BadSignature { .. }), "{e}");
    }
}
