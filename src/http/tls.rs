//! TLS: trust roots and the client identity whose signatures come from the node key (TPM, HSM
//! or file), so the private key never leaves its backend.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::HttpError;
use crate::key::{Algorithm, NodeKey};

/// A TLS client identity whose private key stays in its backend (TPM, HSM or file).
#[derive(Clone)]
pub struct ClientIdentity {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The key of the leaf.
    pub key: Arc<dyn NodeKey>,
}

/// Which trust roots verify servers.
#[derive(Debug, Clone)]
pub(super) enum Roots {
    WebPki,
    Bundle(Vec<Vec<u8>>),
}

/// A `rustls` signing key whose signatures come from a [`NodeKey`] (TPM, HSM or file): rustls
/// hands over the handshake transcript, the key hashes it with SHA-256 and signs the digest.
#[derive(Debug)]
struct NodeSigningKey {
    key: Arc<dyn NodeKey>,
}

impl NodeSigningKey {
    fn scheme(&self) -> SignatureScheme {
        match self.key.algorithm() {
            Algorithm::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            Algorithm::Rsa2048 => SignatureScheme::RSA_PKCS1_SHA256,
        }
    }
}

impl SigningKey for NodeSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.scheme();
        if offered.contains(&scheme) {
            Some(Box::new(NodeSigner {
                key: self.key.clone(),
                scheme,
            }))
        } else {
            log::warn!(
                "the TLS server accepts none of our key's signature schemes ({scheme:?}); offered: {offered:?}"
            );
            None
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.algorithm() {
            Algorithm::EcdsaP256 => SignatureAlgorithm::ECDSA,
            Algorithm::Rsa2048 => SignatureAlgorithm::RSA,
        }
    }
}

#[derive(Debug)]
struct NodeSigner {
    key: Arc<dyn NodeKey>,
    scheme: SignatureScheme,
}

impl Signer for NodeSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(message).map_err(|e| {
            rustls::Error::General(format!("signing with {}: {e}", self.key.describe()))
        })
    }
    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Always presents the one identity (the servers we talk to want exactly this certificate).
#[derive(Debug)]
struct FixedIdentity(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedIdentity {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.key.choose_scheme(schemes)?;
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The rustls configuration: these trust roots, and the client identity if any.
pub(super) fn client_config(
    trusted: &Roots,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match trusted {
        Roots::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::Bundle(certs) => {
            for der in certs {
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| HttpError::Config(format!("unusable CA certificate: {e}")))?;
            }
        }
    }
    // RSA client keys sign PKCS#1 v1.5 only, which TLS 1.3 forbids in CertificateVerify:
    // such identities speak TLS 1.2.
    let versions: &[&rustls::SupportedProtocolVersion] = match identity {
        Some(id) if id.key.algorithm() == Algorithm::Rsa2048 => &[&rustls::version::TLS12],
        _ => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| HttpError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => {
            let signing: Arc<dyn SigningKey> = Arc::new(NodeSigningKey {
                key: id.key.clone(),
            });
            let chain = id
                .chain
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect();
            builder.with_client_cert_resolver(Arc::new(FixedIdentity(Arc::new(CertifiedKey::new(
                chain, signing,
            )))))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}
