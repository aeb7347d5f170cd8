//! The pure checks of a `pki/sign` answer: node key, CN, chain, validity, TTL.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::{format_duration, Signed, VaultError};
use crate::x509::chain::{self, Cert, CertInfo, LeafExpectation};

/// What to ask `pki/sign` for.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    /// CN (the CSR carries it too).
    pub common_name: &'a str,
    /// DNS SANs.
    pub dns_names: &'a [String],
    /// IP SANs.
    pub ip_addresses: &'a [IpAddr],
    /// Requested TTL.
    pub ttl: Option<Duration>,
}

/// A verified result: the file content and facts about the leaf.
#[derive(Debug)]
pub struct Issued {
    /// Leaf, then CA chain (PEM).
    pub certificate_pem: String,
    /// Issuing CA and its chain (PEM).
    pub ca_pem: String,
    /// The leaf's facts.
    pub info: CertInfo,
}

/// Checks a `pki/sign` answer against the node key, the CN, the chain, validity and the TTL, and
/// assembles the files. Pure apart from `now`.
pub fn verify_signed(
    addr: &str,
    signed: &Signed,
    node_spki: &[u8],
    req: &SignRequest<'_>,
    now: SystemTime,
) -> Result<Issued, VaultError> {
    let bad = |source| VaultError::BadCertificate {
        addr: addr.to_string(),
        source,
    };
    let leaf = chain::parse_pem_certs(&signed.certificate).map_err(bad)?;
    let [leaf] = <[Cert; 1]>::try_from(leaf).map_err(|v| {
        bad(chain::ChainError::Unlinked(format!(
            "{} certificates in the leaf field",
            v.len()
        )))
    })?;
    let issuing = chain::parse_pem_certs(&signed.issuing_ca).map_err(bad)?;
    let issuing = issuing
        .into_iter()
        .next()
        .expect("parse returns at least one");
    let mut cas = vec![issuing.clone()];
    for pem in &signed.ca_chain {
        cas.extend(chain::parse_pem_certs(pem).map_err(bad)?);
    }
    // Leaf first, then each issuer: the order Vault should give, enforced here, duplicates
    // (the issuing CA repeated in ca_chain) dropped.
    let mut all = vec![leaf.clone()];
    all.extend(cas);
    let ordered = chain::order_chain(all).map_err(bad)?;
    if ordered[0] != leaf || ordered.get(1) != Some(&issuing) {
        return Err(bad(chain::ChainError::Unlinked(leaf.subject())));
    }
    let info = chain::check_leaf(
        &leaf,
        &issuing,
        &ordered[2..],
        &LeafExpectation {
            spki_der: node_spki,
            common_name: req.common_name,
            now,
        },
    )
    .map_err(bad)?;
    if let Some(ttl) = req.ttl {
        let issued = info.not_after.duration_since(now).unwrap_or_default();
        // Vault back-dates notBefore by 30 s and rounds; a minute of slack absorbs both.
        if issued + Duration::from_secs(60) < ttl {
            return Err(VaultError::TtlAboveMax {
                addr: addr.to_string(),
                requested: format_duration(ttl),
                issued: format_duration(Duration::from_secs(issued.as_secs().div_ceil(60) * 60)),
            });
        }
    }
    let certificate_pem: String = ordered.iter().map(Cert::to_pem).collect();
    let ca_pem: String = ordered[1..].iter().map(Cert::to_pem).collect();
    Ok(Issued {
        certificate_pem,
        ca_pem,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = include_str!("../../tests/fixtures/x509/root.pem");
    const INT: &str = include_str!("../../tests/fixtures/x509/int.pem");
    const LEAF: &str = include_str!("../../tests/fixtures/x509/leaf.pem");
    const LEAF_PUB: &str = include_str!("../../tests/fixtures/x509/leaf.pub.pem");

    fn ders(pem: &str) -> Vec<Vec<u8>> {
        chain::parse_pem_bundle(pem).unwrap()
    }

    #[test]
    fn signed_answers_become_leaf_first_files_without_duplicates() {
        let spki = pem_rfc7468::decode_vec(LEAF_PUB.as_bytes()).unwrap().1;
        let req = SignRequest {
            common_name: "node-1.example.com",
            dns_names: &[],
            ip_addresses: &[],
            ttl: Some(Duration::from_secs(72 * 3600)),
        };
        let signed = Signed {
            certificate: LEAF.into(),
            issuing_ca: INT.into(),
            ca_chain: vec![INT.into(), ROOT.into()],
            serial_number: String::new(),
        };
        let issued = verify_signed("https://v", &signed, &spki, &req, SystemTime::now()).unwrap();
        let mut want = ders(LEAF);
        want.extend(ders(INT));
        want.extend(ders(ROOT));
        assert_eq!(ders(&issued.certificate_pem), want);
        assert_eq!(ders(&issued.ca_pem), want[1..].to_vec());

        // Vault sending no ca_chain: leaf and issuing CA.
        let bare = Signed {
            ca_chain: vec![],
            ..signed
        };
        let issued = verify_signed("https://v", &bare, &spki, &req, SystemTime::now()).unwrap();
        assert_eq!(ders(&issued.certificate_pem), want[..2].to_vec());

        // Asking for more than the certificate got (100 years): refused, both durations named.
        let long = SignRequest {
            ttl: Some(Duration::from_secs(200 * 365 * 86400)),
            ..req.clone()
        };
        let e = verify_signed("https://v", &bare, &spki, &long, SystemTime::now()).unwrap_err();
        assert!(matches!(e, VaultError::TtlAboveMax { .. }), "{e}");

        // Two certificates in the leaf field, or a leaf the issuing CA did not sign.
        let two = Signed {
            certificate: format!("{LEAF}{INT}"),
            ..bare
        };
        assert!(verify_signed("https://v", &two, &spki, &req, SystemTime::now()).is_err());
        let wrong_issuer = Signed {
            certificate: LEAF.into(),
            issuing_ca: ROOT.into(),
            ca_chain: vec![],
            serial_number: String::new(),
        };
        let e =
            verify_signed("https://v", &wrong_issuer, &spki, &req, SystemTime::now()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Vault at https://v returned a certificate"),
            "{e}"
        );
    }
}
