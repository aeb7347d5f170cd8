//! X.509: certificate signing requests built through the key trait; later, chain ordering,
//! verification and certificate inspection.

pub mod chain;
mod csr;

pub use csr::{build_csr, build_csr_with_serial, CsrRequest};

use crate::key::Algorithm;

/// The X.509 signature algorithm identifier for a key algorithm with SHA-256.
pub fn signature_algorithm(alg: Algorithm) -> spki::AlgorithmIdentifierOwned {
    match alg {
        Algorithm::EcdsaP256 => spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
        Algorithm::Rsa2048 => spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(der::asn1::Any::null()),
        },
    }
}
