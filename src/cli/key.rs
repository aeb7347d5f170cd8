//! The key flags every signing command shares.

//! Also `key create`, `key show` and `csr`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::error::{self, ResultExt};
use crate::key::{Algorithm, KeySettings, NodeKey, OpenMode};
use crate::{fsutil, x509};

/// How to reach the key: `--key` and the flags that say where its TPM or module is.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Key reference: handle:0x81.., pkcs11:token=..;object=.., a TSS2 PEM file, or file:/path.
    #[arg(long, value_name = "REF", env = "HYBRIDBOOT_KEY")]
    pub key: String,
    /// Where its TPM or module is.
    #[command(flatten)]
    pub access: KeyAccessArgs,
}

/// Where the key's TPM or PKCS#11 module is, and its auth value: shared by `--key` commands and
/// the Roles Anywhere commands (whose key flag is aws_signing_helper's `--private-key`).
#[derive(Args, Debug, Clone)]
pub struct KeyAccessArgs {
    /// TPM TCTI, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321 [default: env
    /// HYBRIDBOOT_TCTI, then TPM2TOOLS_TCTI, then device:/dev/tpmrm0].
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// PKCS#11 module to load when the URI has no module-path.
    #[arg(long, value_name = "FILE", env = "HYBRIDBOOT_PKCS11_LIB")]
    pub pkcs11_lib: Option<PathBuf>,
    /// File holding the TPM key's auth value (password), if the key has one.
    #[arg(long, value_name = "FILE")]
    pub tpm_key_auth_file: Option<PathBuf>,
}

impl KeyAccessArgs {
    /// The settings of the key at `reference`.
    pub fn settings(&self, reference: &str) -> KeySettings {
        KeySettings {
            reference: reference.to_string(),
            tcti: self.tcti.clone(),
            pkcs11_lib: self.pkcs11_lib.clone(),
            tpm_key_auth_file: self.tpm_key_auth_file.clone(),
        }
    }
}

impl KeyArgs {
    /// The key settings these flags say.
    pub fn settings(&self) -> KeySettings {
        self.access.settings(&self.key)
    }

    /// Opens the key.
    pub fn open(&self, mode: OpenMode) -> anyhow::Result<Box<dyn NodeKey>> {
        self.settings().open(mode)
    }
}

/// `hybridboot key ...`.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create the key if it does not exist (an existing key is reused) and print its public key.
    ///
    /// Idempotent: running it again prints the same public key. A TPM key is created under the
    /// owner hierarchy's storage root key with fixedTPM, fixedParent and sensitiveDataOrigin, so
    /// its private part can never leave the TPM. A PKCS#11 key is generated on the token as
    /// sensitive and never extractable.
    Create(KeyCreateArgs),
    /// Print the public key (PEM SubjectPublicKeyInfo) and its algorithm.
    Show(KeyArgs),
}

/// `hybridboot key create`.
#[derive(Args, Debug)]
pub struct KeyCreateArgs {
    /// The key.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Algorithm of a new key. An existing key of another algorithm is an error.
    #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "rsa-2048"])]
    pub algorithm: String,
}

/// The subject of the node certificate: `csr` and the Vault commands.
#[derive(Args, Debug, Clone)]
pub struct SubjectArgs {
    /// Subject common name; for EKS hybrid nodes, the node name.
    #[arg(long, value_name = "CN")]
    pub common_name: String,
    /// DNS subject alternative name (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// IP subject alternative name (repeatable).
    #[arg(long = "ip-address", value_name = "IP")]
    pub ip_addresses: Vec<IpAddr>,
}

/// `hybridboot csr`.
#[derive(Args, Debug)]
pub struct CsrArgs {
    /// The signing key.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The subject.
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Write the CSR to this file (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `key create`.
pub fn key_create(args: KeyCreateArgs) -> anyhow::Result<()> {
    let alg: Algorithm = args.algorithm.parse().map_err(error::operator)?;
    let key = args.key.open(OpenMode::CreateIfAbsent(alg))?;
    log::info!(
        "{} ready: {} (sha256 {})",
        key.describe(),
        key.algorithm(),
        key.fingerprint()
    );
    super::print(&key.public_key_pem())
}

/// Runs `key show`.
pub fn key_show(args: KeyArgs) -> anyhow::Result<()> {
    let key = args.open(OpenMode::Existing)?;
    super::print(&format!(
        "# algorithm: {}\n# sha256: {}\n{}",
        key.algorithm(),
        key.fingerprint(),
        key.public_key_pem()
    ))
}

/// Runs `csr`.
pub fn csr(args: CsrArgs) -> anyhow::Result<()> {
    let key = args.key.open(OpenMode::Existing)?;
    let req = x509::CsrRequest {
        common_name: args.subject.common_name,
        dns_names: args.subject.dns_names,
        ip_addresses: args.subject.ip_addresses,
    };
    let pem = x509::build_csr(key.as_ref(), &req).classed()?;
    match args.out {
        Some(path) => {
            fsutil::atomic_write(&path, pem.as_bytes(), &fsutil::WriteOptions::public())
                .with_context(|| format!("writing CSR to {}", path.display()))?;
            log::info!(
                "CSR for CN={} written to {}",
                req.common_name,
                path.display()
            );
        }
        None => super::print(&pem)?,
    }
    Ok(())
}
