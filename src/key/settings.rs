//! Where the node key is and how to reach it: the settings every command that signs starts from.

use std::path::PathBuf;

use super::{KeyOptions, KeyRef, NodeKey, OpenMode};
use crate::error::ResultExt;
use crate::secret::Secret;

/// How to reach the node key. Built by the command line (`--key`, `--tcti`, ...) or by first
/// boot from the BootstrapConfig's `spec.key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySettings {
    /// Key reference: `handle:0x81..`, `pkcs11:token=..;object=..`, a TSS2 PEM file, or
    /// `file:/path` (see [`KeyRef`]).
    pub reference: String,
    /// TPM TCTI [default: env `HYBRIDBOOT_TCTI`, then `TPM2TOOLS_TCTI`, then the device].
    pub tcti: Option<String>,
    /// PKCS#11 module to load when the URI has no `module-path`.
    pub pkcs11_lib: Option<PathBuf>,
    /// File holding the TPM key's auth value, if the key has one.
    pub tpm_key_auth_file: Option<PathBuf>,
    /// The TPM key's auth value itself (aws_signing_helper's `--tpm-key-password`); wins over
    /// the file.
    pub tpm_key_password: Option<Secret>,
    /// aws_signing_helper's `--reuse-pin`: the user PIN would also serve as the per-signature
    /// PIN of a `CKA_ALWAYS_AUTHENTICATE` key.
    pub reuse_pin: bool,
}

impl KeySettings {
    /// A key at `reference` with every other setting at its default.
    pub fn new(reference: impl Into<String>) -> KeySettings {
        KeySettings {
            reference: reference.into(),
            ..KeySettings::default()
        }
    }

    /// Key options from these settings and the environment (`HYBRIDBOOT_TCTI`,
    /// `TPM2TOOLS_TCTI`, `HYBRIDBOOT_PKCS11_PIN`).
    pub fn options(&self) -> anyhow::Result<KeyOptions> {
        let tcti = self
            .tcti
            .clone()
            .or_else(|| std::env::var("HYBRIDBOOT_TCTI").ok())
            .or_else(|| std::env::var("TPM2TOOLS_TCTI").ok())
            .filter(|t| !t.is_empty());
        let pin = std::env::var("HYBRIDBOOT_PKCS11_PIN").ok().map(Secret::new);
        Ok(KeyOptions {
            tcti,
            pkcs11_lib: self.pkcs11_lib.clone(),
            pkcs11_pin: pin,
            tpm_auth_file: self.tpm_key_auth_file.clone(),
            tpm_auth: self.tpm_key_password.clone(),
            pkcs11_reuse_pin: self.reuse_pin,
        })
    }

    /// `key delete`: describes what the reference names and, with `confirm`, deletes it.
    pub fn delete(&self, confirm: bool) -> anyhow::Result<super::Deletion> {
        let reference = KeyRef::parse(&self.reference).classed()?;
        let opts = self.options()?;
        super::delete(&reference, &opts, confirm).classed()
    }

    /// Opens the key.
    pub fn open(&self, mode: OpenMode) -> anyhow::Result<Box<dyn NodeKey>> {
        let reference = KeyRef::parse(&self.reference).classed()?;
        let opts = self.options()?;
        log::debug!("opening key {reference}");
        super::open(&reference, &opts, mode).classed()
    }
}
