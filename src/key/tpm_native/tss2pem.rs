//! TSS2 PEM key files (`-----BEGIN TSS2 PRIVATE KEY-----`), as written by tpm2-openssl,
//! tpm2-tss-engine and `tpm2_encodeobject`: the ASN.1 `TPMKey` structure
//!
//! ```text
//! TPMKey ::= SEQUENCE {
//!     type        OBJECT IDENTIFIER,          -- 2.23.133.10.1.3 loadable key
//!     emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
//!     policy      [1] EXPLICIT SEQUENCE OF TPMPolicy OPTIONAL,
//!     secret      [2] EXPLICIT OCTET STRING OPTIONAL,
//!     authPolicy  [3] EXPLICIT SEQUENCE OF TPMAuthPolicy OPTIONAL,
//!     parent      INTEGER,                    -- a handle; 0x40000001 = owner SRK
//!     pubkey      OCTET STRING,               -- marshalled TPM2B_PUBLIC
//!     privkey     OCTET STRING }              -- marshalled TPM2B_PRIVATE
//! ```
//!
//! Only loadable keys without policies are supported: hybridboot signs with a password session.

use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode, Reader, SliceReader};

/// OID of a loadable TPM key (`id-loadablekey`).
pub const OID_LOADABLE_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.3");
const OID_IMPORTABLE_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.4");
const OID_SEALED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.5");
/// The PEM label.
pub const PEM_LABEL: &str = "TSS2 PRIVATE KEY";

/// The parts of a TSS2 key file the backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tss2Key {
    /// Whether the key's auth value is empty (no password needed to sign).
    pub empty_auth: bool,
    /// The parent handle: `0x40000001` (TPM_RH_OWNER, i.e. the SRK derived from the standard
    /// template) or a persistent handle.
    pub parent: u32,
    /// Marshalled TPM2B_PUBLIC.
    pub public: Vec<u8>,
    /// Marshalled TPM2B_PRIVATE (encrypted by the parent; useless outside this TPM).
    pub private: Vec<u8>,
}

/// Parses a TSS2 PEM file's text. Errors are one sentence about what is wrong.
pub fn parse_pem(text: &[u8]) -> Result<Tss2Key, String> {
    let (label, der) = pem_rfc7468::decode_vec(text).map_err(|e| format!("not valid PEM: {e}"))?;
    if label != PEM_LABEL {
        return Err(format!("PEM label is {label:?}, expected {PEM_LABEL:?}"));
    }
    parse_der(&der)
}

/// Parses the DER `TPMKey` structure.
pub fn parse_der(der: &[u8]) -> Result<Tss2Key, String> {
    let err = |e: der::Error| format!("malformed TPMKey ASN.1: {e}");
    let mut reader = SliceReader::new(der).map_err(err)?;
    let key = reader
        .sequence(|r| {
            let oid = ObjectIdentifier::decode(r)?;
            let mut empty_auth = None;
            let mut unsupported = None;
            // The optional context-specific fields, in any order we might meet them.
            while let Some(tag) = r.peek_tag().ok().filter(|t| t.is_context_specific()) {
                let field = AnyRef::decode(r)?;
                match tag.number().value() {
                    0 => {
                        // tpm2-openssl encodes TRUE as 0x01 (BER, not DER), so the BOOLEAN
                        // is read by hand: any non-zero content octet is true.
                        match field.value() {
                            [0x01, 0x01, v] => empty_auth = Some(*v != 0),
                            _ => return Err(der::Tag::Boolean.value_error()),
                        }
                    }
                    1 => unsupported = Some("the key requires a policy session (policy field)"),
                    2 => unsupported = Some("the key is an importable blob (secret field)"),
                    3 => unsupported = Some("the key requires a signed policy (authPolicy field)"),
                    _ => unsupported = Some("unknown optional field"),
                }
            }
            let parent = UintRef::decode(r)?;
            let public = OctetStringRef::decode(r)?;
            let private = OctetStringRef::decode(r)?;
            Ok((
                oid,
                empty_auth,
                unsupported,
                parent.as_bytes().to_vec(),
                public.as_bytes().to_vec(),
                private.as_bytes().to_vec(),
            ))
        })
        .map_err(err)?;
    let (oid, empty_auth, unsupported, parent, public, private) =
        reader.finish(key).map_err(err)?;
    if oid != OID_LOADABLE_KEY {
        let what = if oid == OID_IMPORTABLE_KEY {
            "an importable key (2.23.133.10.1.4): import it with tpm2_import first"
        } else if oid == OID_SEALED_DATA {
            "sealed data (2.23.133.10.1.5), not a key"
        } else {
            "an unknown TPM object type"
        };
        return Err(format!("type {oid} is {what}"));
    }
    if let Some(why) = unsupported {
        return Err(format!(
            "{why}; hybridboot supports only password-authorised keys"
        ));
    }
    if parent.len() > 4 {
        return Err("parent handle is larger than 32 bits".into());
    }
    let parent = parent
        .iter()
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Ok(Tss2Key {
        empty_auth: empty_auth.unwrap_or(false),
        // tpm2-openssl writes 0 for "owner"; read it the same way.
        parent: if parent == 0 { 0x4000_0001 } else { parent },
        public,
        private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    /// Builds a TPMKey DER the way tpm2-openssl does, with the given optional fields.
    fn tpm_key(oid: &str, empty_auth: Option<bool>, extra: &[u8], parent: u32) -> Vec<u8> {
        let mut body = ObjectIdentifier::new_unwrap(oid).to_der().unwrap();
        if let Some(b) = empty_auth {
            let inner = b.to_der().unwrap();
            body.push(0xa0);
            body.push(inner.len() as u8);
            body.extend_from_slice(&inner);
        }
        body.extend_from_slice(extra);
        body.extend(
            der::asn1::Uint::new(&parent.to_be_bytes())
                .unwrap()
                .to_der()
                .unwrap(),
        );
        body.extend(OctetStringRef::new(b"PUB").unwrap().to_der().unwrap());
        body.extend(OctetStringRef::new(b"PRIV").unwrap().to_der().unwrap());
        let mut out = vec![0x30, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn loadable_key_fields_are_read() {
        let der = tpm_key("2.23.133.10.1.3", Some(true), &[], 0x4000_0001);
        let k = parse_der(&der).unwrap();
        assert_eq!(
            k,
            Tss2Key {
                empty_auth: true,
                parent: 0x4000_0001,
                public: b"PUB".to_vec(),
                private: b"PRIV".to_vec(),
            }
        );
        let pem = pem_rfc7468::encode_string(PEM_LABEL, pem_rfc7468::LineEnding::LF, &der).unwrap();
        assert_eq!(parse_pem(pem.as_bytes()).unwrap(), k);
        // emptyAuth absent means the key has an auth value; parent 0 means owner.
        let k = parse_der(&tpm_key("2.23.133.10.1.3", None, &[], 0)).unwrap();
        assert!(!k.empty_auth);
        assert_eq!(k.parent, 0x4000_0001);
        let k = parse_der(&tpm_key("2.23.133.10.1.3", None, &[], 0x8100_0001)).unwrap();
        assert_eq!(k.parent, 0x8100_0001);
        // BER TRUE (0x01), as tpm2-openssl writes it.
        let mut ber = tpm_key("2.23.133.10.1.3", Some(true), &[], 0x8100_0001);
        let at = ber
            .windows(5)
            .position(|w| w == [0xa0, 0x03, 0x01, 0x01, 0xff])
            .unwrap();
        ber[at + 4] = 0x01;
        let k = parse_der(&ber).unwrap();
        assert!(k.empty_auth);
        assert_eq!(k.parent, 0x8100_0001);
    }

    #[test]
    fn unsupported_keys_say_why() {
        let e = parse_der(&tpm_key("2.23.133.10.1.4", Some(true), &[], 1)).unwrap_err();
        assert!(e.contains("importable"), "{e}");
        let e = parse_der(&tpm_key("2.23.133.10.1.5", Some(true), &[], 1)).unwrap_err();
        assert!(e.contains("sealed"), "{e}");
        // [1] policy: SEQUENCE OF (empty here)
        let e = parse_der(&tpm_key(
            "2.23.133.10.1.3",
            Some(true),
            &[0xa1, 0x02, 0x30, 0x00],
            1,
        ))
        .unwrap_err();
        assert!(e.contains("policy"), "{e}");
        let e = parse_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert!(e.contains("TSS2 PRIVATE KEY"), "{e}");
    }

    #[test]
    fn garbage_and_truncations_are_errors() {
        let der = tpm_key("2.23.133.10.1.3", Some(true), &[], 0x4000_0001);
        for cut in 0..der.len() {
            assert!(parse_der(&der[..cut]).is_err());
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(parse_der(&trailing).is_err());
        for i in 0..der.len() {
            let mut d = der.clone();
            d[i] ^= 0xff;
            let _ = parse_der(&d);
        }
        // A parent wider than 32 bits.
        let mut body = ObjectIdentifier::new_unwrap("2.23.133.10.1.3")
            .to_der()
            .unwrap();
        body.extend(
            der::asn1::Uint::new(&[1, 0, 0, 0, 0])
                .unwrap()
                .to_der()
                .unwrap(),
        );
        body.extend(OctetStringRef::new(b"P").unwrap().to_der().unwrap());
        body.extend(OctetStringRef::new(b"Q").unwrap().to_der().unwrap());
        let mut d = vec![0x30, body.len() as u8];
        d.extend(body);
        assert!(parse_der(&d).unwrap_err().contains("32 bits"));
    }
}
