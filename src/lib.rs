//! hybridboot: turns factory hardware into an Amazon EKS hybrid node whose identity never leaves
//! its hardware (TPM 2.0 or PKCS#11).
//!
//! The data flows one way:
//!
//! ```text
//! key (TPM | PKCS#11 | file) -> csr -> vault (enroll, renew) -> rolesanywhere (credentials)
//!     -> eks (describe cluster, token) -> node (install, init: render files, start units)
//! ```
//!
//! Exit codes are documented in [`exit`].

pub mod aws;
pub mod awsauth;
pub mod cli;
pub mod exit;
pub mod firstboot;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod http;
pub mod irsa;
pub mod key;
pub mod logging;
pub mod node;
pub mod oci;
pub mod process;
pub mod retry;
pub mod secret;
pub mod time;
pub mod vault;
pub mod x509;
