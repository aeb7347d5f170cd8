//! The command-line layer: clap's flags for every subcommand, turned into the plain settings
//! structs the domain modules take (`vault::Settings`, `RolesAnywhereSettings`,
//! `InitSettings`, `InstallSettings`, `firstboot::ConfigSource`, ...). Nothing outside this
//! module and `main.rs` knows clap. One file per command group:
//!
//! - [`key`]: the key flags every signing command shares;
//! - [`factory`]: `factory request`, `factory store` (the production line's IDevID steps);
//! - [`vault`]: `enroll`, `renew`;
//! - [`firstboot`]: `firstboot`, `status`;
//! - [`debug`](mod@debug): `debug`;
//! - [`aws`]: `credential-process`, `update`, `serve`, `credentials inspect`;
//! - [`token`]: `token`, `kubeconfig`;
//! - [`node`]: `config check`, `install`, `uninstall`, `init`;
//! - [`irsa`], [`awsauth`]: the files the cluster side publishes.

pub mod aws;
pub mod awsauth;
pub mod debug;
pub mod factory;
pub mod firstboot;
pub mod irsa;
pub mod key;
pub mod node;
pub mod token;
pub mod vault;

use std::path::PathBuf;

use anyhow::Context;

pub use key::{KeyAccessArgs, KeyArgs, SubjectArgs};

/// Writes `bytes` to `out` (atomically, mode 0644) or to stdout.
fn emit(out: Option<&PathBuf>, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            crate::fsutil::atomic_write(path, bytes, &crate::fsutil::WriteOptions::public())
                .with_context(|| format!("writing {what} to {}", path.display()))?;
            log::info!("{what} written to {}", path.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(bytes)
                .context("writing to stdout")?;
        }
    }
    Ok(())
}
