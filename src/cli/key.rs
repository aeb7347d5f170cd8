//! The key flags every signing command shares.

//! Also `key create`, `key show` and `csr`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::error::{self, ResultExt};
use crate::key::{Algorithm, KeySettings, NodeKey, OpenMode};
use crate::secret::Secret;
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
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tpm_key_password", "no_tpm_key_password"])]
    pub tpm_key_auth_file: Option<PathBuf>,
    /// The TPM key's auth value (aws_signing_helper's flag). It shows in process listings and
    /// shell history: prefer --tpm-key-auth-file.
    #[arg(long, value_name = "PASSWORD", conflicts_with = "no_tpm_key_password", value_parser = secret_arg)]
    pub tpm_key_password: Option<Secret>,
    /// The TPM key has no auth value (aws_signing_helper requires it for a handle without
    /// one; for hybridboot it is the default and the flag is accepted as is).
    #[arg(long)]
    pub no_tpm_key_password: bool,
    /// For a PKCS#11 key that needs the PIN for every signature (CKA_ALWAYS_AUTHENTICATE, e.g.
    /// PIV slot 9c): log in again with the user PIN before each signature
    /// (C_Login CKU_CONTEXT_SPECIFIC), as aws_signing_helper's flag does. Without it such a key
    /// does not sign.
    #[arg(long)]
    pub reuse_pin: bool,
}

/// A secret flag value: kept out of Debug output.
fn secret_arg(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

impl KeyAccessArgs {
    /// The settings of the key at `reference`.
    pub fn settings(&self, reference: &str) -> KeySettings {
        KeySettings {
            reference: reference.to_string(),
            tcti: self.tcti.clone(),
            pkcs11_lib: self.pkcs11_lib.clone(),
            tpm_key_auth_file: self.tpm_key_auth_file.clone(),
            tpm_key_password: self.tpm_key_password.clone(),
            reuse_pin: self.reuse_pin,
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
    /// Delete a key that must not be used: a TPM handle holding a key of the wrong algorithm
    /// (key create refuses to reuse it), a token object of a decommissioned node, a key file.
    ///
    /// Without --yes it only says what it would delete (type, algorithm, label or handle,
    /// fingerprint) and exits 3. With --yes a TPM persistent handle is evicted
    /// (TPM2_EvictControl), every token object with the URI's object= / id= is destroyed
    /// (private key, public key, a certificate stored beside them), a key file is removed.
    /// Storage keys (the parent of other TPM keys) are never deleted. A certificate Vault
    /// issued for the key stays valid until it expires: revoke it in Vault.
    ///
    /// Example: hybridboot key delete --key handle:0x81000002 --tcti device:/dev/tpmrm0 --yes
    Delete(KeyDeleteArgs),
}

/// `hybridboot key delete`.
#[derive(Args, Debug)]
pub struct KeyDeleteArgs {
    /// The key.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Delete it. Without this flag nothing is deleted: the command lists what it would delete.
    #[arg(long)]
    pub yes: bool,
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

/// Runs `key delete`.
pub fn key_delete(args: KeyDeleteArgs) -> anyhow::Result<()> {
    let deletion = args.key.settings().delete(args.yes)?;
    if deletion.deleted {
        for what in &deletion.objects {
            super::print(&format!("deleted {what}\n"))?;
        }
        return Ok(());
    }
    for what in &deletion.objects {
        super::print(&format!("would delete {what}\n"))?;
    }
    Err(error::operator(format!(
        "nothing deleted ({} object(s) listed above): pass --yes to delete",
        deletion.objects.len()
    )))
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
