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

#![warn(missing_docs)]
#![deny(unused_must_use)]

pub mod aws;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod awsauth;
pub mod cli;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod exit;
pub mod firstboot;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzz_entry;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod http;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod irsa;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod key;
pub mod logging;
pub mod node;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod process;
pub mod retry;
pub mod secret;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod time;
pub mod vault;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod x509;
