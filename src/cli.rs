//! Command-line pieces shared by several subcommands (kept in the library so that each
//! subcommand's module can flatten them into its own `Args`).

use std::path::PathBuf;

use clap::Args;

use crate::key::{self, KeyOptions, KeyRef, NodeKey, OpenMode};
use crate::secret::Secret;

/// How to reach the key.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Key reference: handle:0x81.., pkcs11:token=..;object=.., a TSS2 PEM file, or file:/path.
    #[arg(long, value_name = "REF", env = "HYBRIDBOOT_KEY")]
    pub key: String,
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

impl KeyArgs {
    /// Key options from flags and environment.
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
        })
    }

    /// Opens the key.
    pub fn open(&self, mode: OpenMode) -> anyhow::Result<Box<dyn NodeKey>> {
        let reference = KeyRef::parse(&self.key)?;
        let opts = self.options()?;
        log::debug!("opening key {reference}");
        Ok(key::open(&reference, &opts, mode)?)
    }
}
