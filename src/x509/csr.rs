//! PKCS#10 certificate signing requests, signed through a [`NodeKey`] so the private key never
//! leaves its backend.

use crate::error::{Class, Classify};
use std::net::IpAddr;

use der::asn1::{BitString, Ia5String, OctetString, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

use crate::key::NodeKey;

/// What the CSR asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrRequest {
    /// Subject common name (the node name for Roles Anywhere session names).
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

/// Errors building a CSR.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("invalid common name {0:?}: it must be 1..64 characters")]
    CommonName(String),
    #[error("invalid DNS name {0:?}: use letters, digits, '-', '.' and an optional leading '*.'")]
    DnsName(String),
    #[error("invalid serial number {0:?}: 1..64 printable characters (letters, digits, space and '()+,-./:=?)")]
    SerialNumber(String),
    #[error("encoding the CSR: {0}")]
    Encoding(#[from] der::Error),
    #[error("signing the CSR with {key}")]
    Sign {
        key: String,
        #[source]
        source: crate::key::KeyError,
    },
}

impl Classify for CsrError {
    /// Names are the operator's; the key's failure has the key's class; a CSR we cannot encode
    /// is our bug.
    fn class(&self) -> Class {
        match self {
            CsrError::CommonName(_) | CsrError::DnsName(_) | CsrError::SerialNumber(_) => {
                Class::Operator
            }
            CsrError::Encoding(_) => Class::Bug,
            CsrError::Sign { source, .. } => source.class(),
        }
    }
}

/// Builds a PEM `CERTIFICATE REQUEST` signed by `key`.
pub fn build_csr(key: &dyn NodeKey, req: &CsrRequest) -> Result<String, CsrError> {
    build_csr_with_serial(key, req, None)
}

/// [`build_csr`] whose subject also carries the X.520 serialNumber attribute (a device's serial
/// number, as an IEEE 802.1AR IDevID names its device): `CN=<cn>, serialNumber=<serial>`.
pub fn build_csr_with_serial(
    key: &dyn NodeKey,
    req: &CsrRequest,
    serial_number: Option<&str>,
) -> Result<String, CsrError> {
    let cn = req.common_name.as_str();
    if cn.is_empty() || cn.chars().count() > 64 {
        return Err(CsrError::CommonName(cn.to_string()));
    }
    let cn_value = der::asn1::Any::encode_from(&Utf8StringRef::new(cn)?)?;
    let rdn = |oid, value| -> Result<RelativeDistinguishedName, CsrError> {
        Ok(RelativeDistinguishedName(SetOfVec::try_from(vec![
            AttributeTypeAndValue { oid, value },
        ])?))
    };
    let mut rdns = vec![rdn(const_oid::db::rfc4519::CN, cn_value)?];
    if let Some(serial) = serial_number {
        // X.520: serialNumber is a PrintableString of at most 64 characters.
        let printable = der::asn1::PrintableStringRef::new(serial)
            .ok()
            .filter(|_| (1..=64).contains(&serial.len()))
            .ok_or_else(|| CsrError::SerialNumber(serial.to_string()))?;
        rdns.push(rdn(
            const_oid::db::rfc4519::SERIAL_NUMBER,
            der::asn1::Any::encode_from(&printable)?,
        )?);
    }
    let subject: Name = RdnSequence(rdns);

    let mut sans = Vec::new();
    for d in &req.dns_names {
        if !valid_dns_name(d) {
            return Err(CsrError::DnsName(d.clone()));
        }
        sans.push(GeneralName::DnsName(Ia5String::new(d)?));
    }
    for ip in &req.ip_addresses {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        sans.push(GeneralName::IpAddress(OctetString::new(bytes)?));
    }
    let mut attributes = SetOfVec::new();
    if !sans.is_empty() {
        let ext: Extension = SubjectAltName(sans).to_extension(&subject, &[])?;
        attributes.insert(ExtensionReq(vec![ext]).try_into()?)?;
    }

    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(key.public_key_der())?,
        attributes,
    };
    let tbs = info.to_der()?;
    let signature = key.sign(&tbs).map_err(|source| CsrError::Sign {
        key: key.describe(),
        source,
    })?;
    let csr = CertReq {
        info,
        algorithm: super::signature_algorithm(key.algorithm()),
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(pem_rfc7468::encode_string(
        "CERTIFICATE REQUEST",
        pem_rfc7468::LineEnding::LF,
        &csr.to_der()?,
    )
    .expect("PEM encoding of DER cannot fail"))
}

fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{self, Algorithm, KeyRef, OpenMode};

    fn file_key(dir: &std::path::Path) -> Box<dyn NodeKey> {
        let r = KeyRef::Path(dir.join("k.pem"));
        key::open(
            &r,
            &Default::default(),
            OpenMode::CreateIfAbsent(Algorithm::EcdsaP256),
        )
        .unwrap()
    }

    #[test]
    fn csr_is_self_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let k = file_key(dir.path());
        let pem = build_csr(
            k.as_ref(),
            &CsrRequest {
                common_name: "node-1.example.com".into(),
                dns_names: vec!["node-1.example.com".into()],
                ip_addresses: vec!["10.1.2.3".parse().unwrap()],
            },
        )
        .unwrap();
        let (label, der) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
        assert_eq!(label, "CERTIFICATE REQUEST");
        let csr = CertReq::from_der(&der).unwrap();
        let tbs = csr.info.to_der().unwrap();
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&tbs).into();
        assert!(key::verify_digest(
            k.public_key_der(),
            &digest,
            csr.signature.raw_bytes()
        ));
        assert_eq!(csr.info.subject.to_string(), "CN=node-1.example.com");
    }

    #[test]
    fn a_device_csr_names_its_serial_number_twice() {
        let dir = tempfile::tempdir().unwrap();
        let k = file_key(dir.path());
        let req = CsrRequest {
            common_name: "hb-0001".into(),
            ..CsrRequest::default()
        };
        let pem = build_csr_with_serial(k.as_ref(), &req, Some("hb-0001")).unwrap();
        let der = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1;
        let csr = CertReq::from_der(&der).unwrap();
        assert_eq!(
            csr.info.subject.to_string(),
            "SERIALNUMBER=hb-0001,CN=hb-0001"
        );
        for bad in ["", "a_b", "é", &"1".repeat(65)] {
            let e = build_csr_with_serial(k.as_ref(), &req, Some(bad)).unwrap_err();
            assert!(matches!(e, CsrError::SerialNumber(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(valid_dns_name("a.b-c.example"));
        assert!(valid_dns_name("*.example.com"));
        assert!(!valid_dns_name("a..b"));
        assert!(!valid_dns_name("-a.b"));
        assert!(!valid_dns_name("a b"));
    }
}
