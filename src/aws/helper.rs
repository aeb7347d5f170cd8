//! aws_signing_helper's diagnostic commands, with its output formats so that scripts written
//! for it keep working: `sign-string` (a signature over its fixed test string, proving the key
//! signs) and `read-certificate-data` (the JSON the helper prints for a certificate file).

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::session::read_certs;
use crate::error::ResultExt;
use crate::key::{spki_algorithm, Algorithm, NodeKey};
use crate::x509::chain::{bytes_to_decimal, Cert};

/// The version of aws_signing_helper's fixed test string.
const SIGN_STRING_TEST_VERSION: u16 = 1;

/// aws_signing_helper's fixed string for a key with this DER SubjectPublicKeyInfo:
/// `"AWS Roles Anywhere Credential Helper Signing Test" || "1" || SHA256("IAM RA" || public
/// key)`, the public key being the uncompressed EC point or the PKCS#1 RSAPublicKey, which is
/// exactly the SPKI's subjectPublicKey bit string.
pub fn fixed_string_to_sign(spki_der: &[u8]) -> anyhow::Result<Vec<u8>> {
    use der::Decode;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| {
        crate::error::message(
            crate::error::Class::Bug,
            format!("the key's public key does not parse: {e}"),
        )
    })?;
    let public = spki.subject_public_key.raw_bytes();
    let digest = Sha256::new()
        .chain_update(b"IAM RA")
        .chain_update(public)
        .finalize();
    let mut out =
        format!("AWS Roles Anywhere Credential Helper Signing Test{SIGN_STRING_TEST_VERSION}")
            .into_bytes();
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Output of `sign-string` (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignFormat {
    /// A JSON string of the hex signature (the reference's default).
    Json,
    /// The hex signature.
    Text,
    /// The signature bytes.
    Bin,
}

/// `sign-string`: signs the fixed string with SHA-256 (ECDSA signatures in DER, RSA
/// PKCS#1 v1.5, as the reference) and formats it. Nothing is printed with a newline, as the
/// reference.
pub fn sign_string(key: &dyn NodeKey, format: SignFormat) -> anyhow::Result<Vec<u8>> {
    let message = fixed_string_to_sign(key.public_key_der())?;
    let signature = key.sign(&message).classed()?;
    Ok(match format {
        SignFormat::Bin => signature,
        SignFormat::Text => hex::encode(&signature).into_bytes(),
        SignFormat::Json => serde_json::to_vec(&hex::encode(&signature)).expect("a string"),
    })
}

/// What `read-certificate-data --certificate FILE` prints (the reference's field names).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertificateData {
    /// `EC` or `RSA`.
    #[serde(rename = "keyType")]
    pub key_type: String,
    /// The certificate, base64 DER (what goes into `X-Amz-X509`).
    #[serde(rename = "certificateData")]
    pub certificate_data: String,
    /// The serial number, decimal (as in the `Credential=` of the Authorization header).
    #[serde(rename = "serialNumber")]
    pub serial_number: String,
    /// The signing algorithms of the key type, e.g. `ECSHA256`.
    #[serde(rename = "supportedAlgorithms")]
    pub supported_algorithms: Vec<String>,
}

/// Reads the leaf certificate of `path` (PEM or DER) as the reference does.
pub fn read_certificate_data(path: &Path) -> anyhow::Result<CertificateData> {
    use base64::Engine as _;
    let certs = read_certs(path, "certificate")?;
    let leaf = Cert::from_der(&certs[0]).classed()?;
    let key_type = match spki_algorithm(&leaf.spki_der(), &path.display().to_string()) {
        Ok(Algorithm::EcdsaP256) => "EC",
        Ok(Algorithm::Rsa2048) => "RSA",
        Err(_) => "",
    }
    .to_string();
    Ok(CertificateData {
        supported_algorithms: ["SHA256", "SHA384", "SHA512"]
            .iter()
            .map(|d| format!("{key_type}{d}"))
            .collect(),
        key_type,
        certificate_data: base64::engine::general_purpose::STANDARD.encode(leaf.der()),
        serial_number: bytes_to_decimal(&leaf.serial_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_string_has_the_reference_prefix_and_a_key_bound_suffix() {
        let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let spki = {
            use p256::pkcs8::EncodePublicKey;
            key.public_key().to_public_key_der().unwrap().into_vec()
        };
        let s = fixed_string_to_sign(&spki).unwrap();
        let prefix = b"AWS Roles Anywhere Credential Helper Signing Test1";
        assert_eq!(&s[..prefix.len()], prefix);
        let point = key.public_key().to_sec1_bytes();
        let mut h = Sha256::new();
        h.update(b"IAM RA");
        h.update(&point);
        assert_eq!(&s[prefix.len()..], &h.finalize()[..]);
    }
}
