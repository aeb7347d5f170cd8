//! What can go wrong talking to Vault.

use crate::error::{Class, Classify};
use crate::http::HttpError;
use crate::x509::chain;

/// Errors of the Vault conversation. One line, naming Vault's address and the cause.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Vault at {addr} is sealed: unseal it, then run again")]
    Sealed { addr: String },
    #[error("Vault at {addr} answered permission denied for {path}: the token is invalid, expired or revoked, or its policy does not allow this path")]
    PermissionDenied { addr: String, path: String },
    #[error("Vault at {addr} has no PKI role {role:?} at mount {mount:?}: check --pki-mount and --pki-role")]
    UnknownRole {
        addr: String,
        mount: String,
        role: String,
    },
    #[error("Vault at {addr}: PKI role {role:?} does not allow this certificate: {message}")]
    NotAllowed {
        addr: String,
        role: String,
        message: String,
    },
    #[error("Vault at {addr}: PKI role {role:?} requires {wanted} keys and the node key is not one ({message}): {fix}")]
    KeyTypeRefused {
        addr: String,
        role: String,
        /// The key type the role wants (`rsa`, `ec`, `ed25519`).
        wanted: String,
        message: String,
        /// Both ways out: another node key, or another role setting.
        fix: String,
    },
    #[error("Vault at {addr} issued a certificate valid for {issued} instead of the requested {requested}: the requested TTL is above the role's max_ttl; ask for --ttl {issued} or less")]
    TtlAboveMax {
        addr: String,
        requested: String,
        issued: String,
    },
    #[error("Vault at {addr}: the wrapping token in {file} is invalid, expired or already used (wrapping tokens work once): issue a new wrapped secret id")]
    BadWrappingToken { addr: String, file: String },
    #[error("Vault at {addr} returned a certificate that fails verification: {source}")]
    BadCertificate {
        addr: String,
        #[source]
        source: chain::ChainError,
    },
    #[error("Vault at {addr} answered {path} unexpectedly: {detail}")]
    BadResponse {
        addr: String,
        path: String,
        detail: String,
    },
    #[error("Vault at {addr} rejected {path} (HTTP {code}): {message}")]
    Api {
        addr: String,
        path: String,
        code: u16,
        message: String,
    },
    #[error("Vault request {path} failed: {source}")]
    Http {
        path: String,
        #[source]
        source: HttpError,
    },
}

impl Classify for VaultError {
    /// Transient: sealed, 429/5xx, and the HTTP failures that are (unreachable, timeouts).
    /// Everything else (permissions, roles, bad wrapping tokens, bad answers) needs an operator.
    fn class(&self) -> Class {
        match self {
            VaultError::Sealed { .. } => Class::Transient,
            VaultError::Api { code, .. } if *code == 429 || *code >= 500 => Class::Transient,
            VaultError::Http { source, .. } => source.class(),
            _ => Class::Operator,
        }
    }
}
