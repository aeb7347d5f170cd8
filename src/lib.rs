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
//! Where each step lives, and what it takes (every domain module takes a plain settings struct;
//! only [`cli`] knows the command line):
//!
//! | step | module | settings |
//! |---|---|---|
//! | the node key | [`key`] | [`key::KeySettings`] |
//! | CSR, chain checks | [`x509`] | |
//! | Vault enroll / renew | [`vault`] | [`vault::Settings`] |
//! | Roles Anywhere session | [`aws::session`] | [`aws::session::RolesAnywhereSettings`] |
//! | EKS DescribeCluster, token | [`aws::eks`], [`aws::sts_token`], [`node::init`] | |
//! | install | [`node::install`] | [`node::install::InstallSettings`] |
//! | init | [`node::init`] | [`node::init::InitSettings`] |
//! | the mirror operator's `sync-artifacts` | [`node::install::mirror`] | [`node::install::mirror::MirrorSettings`] |
//! | `debug`: every check a join needs, read-only | [`debug`] | [`debug::DebugSettings`] |
//! | first boot, all of the above | [`firstboot`] (steps: [`firstboot::state::Step`]) | [`firstboot::ConfigSource`] |
//!
//! First boot builds each step's settings from the NodeConfig and BootstrapConfig
//! (`firstboot::plan`) and runs the steps through one runner that records each in the state
//! file. Every error states its class ([`error`]: operator, transient, bug); [`exit`]
//! documents the exit codes the classes map to.

// No unsafe code: system calls go through rustix and signal-hook's safe APIs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(unused_must_use)]

pub mod aws;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod awsauth;
pub mod cli;
pub mod debug;
pub mod error;
pub mod exit;
pub mod factory;
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
pub mod oci;
pub mod peer_fields;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod process;
pub mod retry;
pub mod secret;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod time;
pub mod vault;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod x509;
