//! Vault PKI: enrollment (`hybridboot enroll`) and renewal (`hybridboot renew`, first boot).
//!
//! The node builds a CSR with its hardware key, authenticates to Vault (token, AppRole with an
//! optionally response-wrapped secret id, or TLS certificate auth with its current certificate),
//! asks `POST /v1/<mount>/sign/<role>` for a certificate, checks what comes back (node key, CN,
//! chain, validity, TTL), and only then replaces the certificate file atomically: leaf first,
//! then the CA chain without duplicates. On any failure the old file stays byte-for-byte intact.
//!
//! Wire format: docs/protocols.md §5. Tokens, secret ids and wrapping tokens are [`Secret`]s and
//! never appear in logs or errors.
//!
//! One file per concern:
//! - `error`: [`VaultError`], what can go wrong and whether it is worth retrying;
//! - `client`: [`Vault`], the HTTP API (one call with retries, logins, unwrap, `pki/sign`);
//! - `check`: [`verify_signed`], the pure checks of a signed answer;
//! - `enroll`: [`enroll`] and [`renew_certificate`], the orchestration;
//! - `device`: the login with the factory identity (IDevID), and [`Login`], who logged in;
//! - `settings`: [`Settings`], what enrollment needs, and the defaults.
//!
//! [`Secret`]: crate::secret::Secret

mod check;
mod client;
mod device;
mod enroll;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
mod error;
mod settings;

/// Durations, fractions and the renewal point live in [`crate::time`]; re-exported for callers.
pub use crate::time::{format_duration, parse_duration, parse_fraction, renewal_due};
pub use check::{verify_signed, Issued, SignRequest};
#[doc(hidden)]
pub use client::fuzz_answers;
pub use client::{Signed, Vault};
pub use device::{configured_login, Login};
pub use enroll::{enroll, renew_certificate, Renewal};
pub use error::VaultError;
pub use settings::{
    DeviceIdentity, SecretAuth, Settings, DEFAULT_APPROLE_MOUNT, DEFAULT_CERT_AUTH_MOUNT,
    DEFAULT_PKI_MOUNT, DEFAULT_RENEW_BEFORE, DEFAULT_TIMEOUT,
};
