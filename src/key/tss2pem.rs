//! The `TSS2 PRIVATE KEY` file format of tpm2-openssl and tpm2-tss-engine (the ASN.1 `TPMKey`
//! structure), parsed without touching a TPM.
//!
//! ```text
//! TPMKey ::= SEQUENCE {
//!     type        OBJECT IDENTIFIER,            -- 2.23.133.10.1.3: a loadable key
//!     emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
//!     policy      [1] EXPLICIT SEQUENCE OF TPMPolicy OPTIONAL,
//!     secret      [2] EXPLICIT OCTET STRING OPTIONAL,
//!     authPolicy  [3] EXPLICIT SEQUENCE OF TPMAuthPolicy OPTIONAL,
//!     parent      INTEGER,                       -- 0x40000001 (owner) or a persistent handle
//!     pubkey      OCTET STRING,                  -- TPM2B_PUBLIC
//!     privkey     OCTET STRING                   -- TPM2B_PRIVATE
//! }
//! ```

use crate::error::{Class, Classify};
use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Reader, SliceReader, TagNumber};

/// OID of a loadable key (`id-loadablekey`).
pub const OID_LOADABLE_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.3");
/// OID of an importable key (`id-importablekey`): wrapped for import, not loadable as is.
const OID_IMPORTABLE_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.4");
/// OID of sealed data (`id-sealedkey`).
const OID_SEALED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.5");

/// The owner hierarchy handle: a key with this parent lives under the owner SRK, which is
/// re-derived with `TPM2_CreatePrimary` (it is never stored).
pub const TPM_RH_OWNER: u32 = 0x4000_0001;

/// PEM label of the format.
pub const PEM_LABEL: &str = "TSS2 PRIVATE KEY";

/// A parsed loadable TPM key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tss2Key {
    /// Whether the key has no auth value (`emptyAuth`); absent means false.
    pub empty_auth: bool,
    /// The parent handle (0 in old files means the owner hierarchy).
    pub parent: u32,
    /// `TPMT_PUBLIC` (the `TPM2B_PUBLIC` contents without its size prefix).
    pub public: Vec<u8>,
    /// `TPM2B_PRIVATE` contents without its size prefix: the wrapped private area.
    pub private: Vec<u8>,
}

/// Why a file is not a usable TSS2 key. Messages are one line, without key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tss2Error {
    #[error("not a PEM `TSS2 PRIVATE KEY` block: {0}")]
    Pem(String),
    #[error("malformed TPMKey ASN.1: {0}")]
    Asn1(String),
    #[error("{0}")]
    Unsupported(String),
}

impl Classify for Tss2Error {
    /// An unusable key file needs an operator.
    fn class(&self) -> Class {
        Class::Operator
    }
}

impl From<der::Error> for Tss2Error {
    fn from(e: der::Error) -> Self {
        Tss2Error::Asn1(e.to_string())
    }
}

/// Parses a PEM `TSS2 PRIVATE KEY` file.
pub fn parse_pem(text: &[u8]) -> Result<Tss2Key, Tss2Error> {
    let (label, der) =
        pem_rfc7468::decode_vec(trim_ascii(text)).map_err(|e| Tss2Error::Pem(e.to_string()))?;
    if label != PEM_LABEL {
        return Err(Tss2Error::Pem(format!("label is {label:?}")));
    }
    parse_der(&der)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

/// Parses the DER `TPMKey` structure.
pub fn parse_der(der: &[u8]) -> Result<Tss2Key, Tss2Error> {
    let mut reader = SliceReader::new(der)?;
    let key = reader.sequence(|r| {
        let oid = ObjectIdentifier::decode(r)?;
        let empty_auth = read_empty_auth(r)?;
        // Optional [1] policy, [2] secret, [3] authPolicy: noted (to refuse later) and skipped.
        let mut extras = Vec::new();
        while let Ok(der::Tag::ContextSpecific { number, .. }) = r.peek_tag() {
            extras.push(match number.value() {
                1 => "a TPM policy",
                2 => "an imported secret",
                3 => "an auth policy",
                _ => "an unknown optional field",
            });
            AnyRef::decode(r)?;
        }
        let parent = u32::decode(r)?;
        let public = OctetStringRef::decode(r)?.as_bytes().to_vec();
        let private = OctetStringRef::decode(r)?.as_bytes().to_vec();
        // Later versions of the format may append fields; they do not change how to load.
        while !r.is_finished() {
            AnyRef::decode(r)?;
        }
        Ok((oid, empty_auth, extras, parent, public, private))
    })?;
    reader.finish(())?;
    let (oid, empty_auth, extras, parent, public, private) = key;
    if oid != OID_LOADABLE_KEY {
        let what = if oid == OID_IMPORTABLE_KEY {
            "an importable key (import it with tpm2_import first)".to_string()
        } else if oid == OID_SEALED_DATA {
            "sealed data, not a key".to_string()
        } else {
            format!("of unknown type {oid}")
        };
        return Err(Tss2Error::Unsupported(format!("the key file is {what}")));
    }
    if !extras.is_empty() {
        return Err(Tss2Error::Unsupported(format!(
            "the key requires {}, which hybridboot does not support",
            extras.join(" and ")
        )));
    }
    let parent = if parent == 0 { TPM_RH_OWNER } else { parent };
    if parent != TPM_RH_OWNER && !(0x8100_0000..=0x81FF_FFFF).contains(&parent) {
        return Err(Tss2Error::Unsupported(format!(
            "parent handle {parent:#010x} is neither the owner hierarchy nor a persistent key"
        )));
    }
    Ok(Tss2Key {
        empty_auth: empty_auth.unwrap_or(false),
        parent,
        public: strip_tpm2b(&public, "pubkey")?,
        private: strip_tpm2b(&private, "privkey")?,
    })
}

/// Reads the optional `[0] EXPLICIT BOOLEAN emptyAuth`. OpenSSL (and so tpm2-openssl) writes
/// TRUE as 0x01, which strict DER rejects; BER's "any non-zero octet is TRUE" is accepted here.
fn read_empty_auth<'a, R: Reader<'a>>(r: &mut R) -> der::Result<Option<bool>> {
    match r.peek_tag() {
        Ok(der::Tag::ContextSpecific { number, .. }) if number == TagNumber::N0 => {}
        _ => return Ok(None),
    }
    let outer = AnyRef::decode(r)?;
    let inner = AnyRef::from_der(outer.value())?;
    if der::Tagged::tag(&inner) != der::Tag::Boolean || inner.value().len() != 1 {
        return Err(der::Tag::Boolean.value_error());
    }
    Ok(Some(inner.value()[0] != 0))
}

/// The contents of a `TPM2B_*` (a big-endian u16 size, then that many bytes).
fn strip_tpm2b(b: &[u8], field: &str) -> Result<Vec<u8>, Tss2Error> {
    if b.len() < 2 {
        return Err(Tss2Error::Asn1(format!("{field} is too short")));
    }
    let size = u16::from_be_bytes([b[0], b[1]]) as usize;
    if size != b.len() - 2 || size == 0 {
        return Err(Tss2Error::Asn1(format!(
            "{field} declares {size} bytes but holds {}",
            b.len() - 2
        )));
    }
    Ok(b[2..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::asn1::ContextSpecific;
    use der::{Encode, TagMode};

    fn tpm2b(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// Encodes a TPMKey the way tpm2-openssl writes it.
    fn encode(oid: &str, empty_auth: Option<bool>, parent: u32, extra_policy: bool) -> Vec<u8> {
        let mut body = Vec::new();
        ObjectIdentifier::new_unwrap(oid)
            .encode_to_vec(&mut body)
            .unwrap();
        if let Some(e) = empty_auth {
            ContextSpecific {
                tag_number: TagNumber::N0,
                tag_mode: TagMode::Explicit,
                value: e,
            }
            .encode_to_vec(&mut body)
            .unwrap();
        }
        if extra_policy {
            ContextSpecific {
                tag_number: TagNumber::N1,
                tag_mode: TagMode::Explicit,
                value: OctetStringRef::new(b"p").unwrap(),
            }
            .encode_to_vec(&mut body)
            .unwrap();
        }
        parent.encode_to_vec(&mut body).unwrap();
        OctetStringRef::new(&tpm2b(b"PUBLIC"))
            .unwrap()
            .encode_to_vec(&mut body)
            .unwrap();
        OctetStringRef::new(&tpm2b(b"PRIVATE"))
            .unwrap()
            .encode_to_vec(&mut body)
            .unwrap();
        let mut out = vec![0x30];
        der::Length::try_from(body.len())
            .unwrap()
            .encode_to_vec(&mut out)
            .unwrap();
        out.extend(body);
        out
    }

    #[test]
    fn parses_a_loadable_key_under_the_owner() {
        let k = parse_der(&encode("2.23.133.10.1.3", Some(true), TPM_RH_OWNER, false)).unwrap();
        assert_eq!(
            k,
            Tss2Key {
                empty_auth: true,
                parent: TPM_RH_OWNER,
                public: b"PUBLIC".to_vec(),
                private: b"PRIVATE".to_vec(),
            }
        );
    }

    #[test]
    fn high_bit_persistent_parent_and_absent_empty_auth() {
        // 0x81000001 has its top bit set: DER encodes it with a leading zero byte.
        let der = encode("2.23.133.10.1.3", None, 0x8100_0001, false);
        let k = parse_der(&der).unwrap();
        assert_eq!(k.parent, 0x8100_0001);
        assert!(!k.empty_auth);
    }

    #[test]
    fn accepts_openssl_ber_boolean_true() {
        // What tpm2-openssl 1.1 writes: [0] { BOOLEAN 0x01 }.
        let der = encode("2.23.133.10.1.3", Some(true), TPM_RH_OWNER, false);
        let at = der
            .windows(3)
            .position(|w| w == [0x01, 0x01, 0xff])
            .unwrap();
        let mut ber = der.clone();
        ber[at + 2] = 0x01;
        assert!(parse_der(&ber).unwrap().empty_auth);
        ber[at + 2] = 0x00;
        assert!(!parse_der(&ber).unwrap().empty_auth);
    }

    #[test]
    fn parent_zero_means_owner() {
        let k = parse_der(&encode("2.23.133.10.1.3", Some(true), 0, false)).unwrap();
        assert_eq!(k.parent, TPM_RH_OWNER);
    }

    #[test]
    fn refuses_other_types_policies_and_odd_parents() {
        let e = parse_der(&encode("2.23.133.10.1.4", Some(true), TPM_RH_OWNER, false)).unwrap_err();
        assert!(e.to_string().contains("importable"), "{e}");
        let e = parse_der(&encode("2.23.133.10.1.5", Some(true), TPM_RH_OWNER, false)).unwrap_err();
        assert!(e.to_string().contains("sealed"), "{e}");
        let e = parse_der(&encode("2.23.133.10.1.3", Some(true), TPM_RH_OWNER, true)).unwrap_err();
        assert!(e.to_string().contains("policy"), "{e}");
        let e = parse_der(&encode("2.23.133.10.1.3", Some(true), 0x8000_0001, false)).unwrap_err();
        assert!(e.to_string().contains("parent handle 0x80000001"), "{e}");
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        let der = encode("2.23.133.10.1.3", Some(true), TPM_RH_OWNER, false);
        assert!(matches!(
            parse_der(&der[..der.len() - 1]),
            Err(Tss2Error::Asn1(_))
        ));
        assert!(parse_der(b"\x30\x00").is_err());
        assert!(matches!(
            parse_pem(b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"),
            Err(Tss2Error::Pem(_))
        ));
    }

    #[test]
    fn pem_round_trip() {
        let der = encode("2.23.133.10.1.3", Some(true), TPM_RH_OWNER, false);
        let pem = pem_rfc7468::encode_string(PEM_LABEL, pem_rfc7468::LineEnding::LF, &der).unwrap();
        let k = parse_pem(format!("\n{pem}\n").as_bytes()).unwrap();
        assert_eq!(k.private, b"PRIVATE");
    }

    #[test]
    fn size_prefix_must_match() {
        assert!(strip_tpm2b(&[0, 3, 1, 2], "pubkey").is_err());
        assert!(strip_tpm2b(&[0], "pubkey").is_err());
        assert_eq!(strip_tpm2b(&[0, 2, 1, 2], "pubkey").unwrap(), vec![1, 2]);
    }
}
