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
//! - [`mirror`]: `sync-artifacts` (the mirror operator's);
//! - [`irsa`], [`awsauth`]: the files the cluster side publishes.

pub mod aws;
pub mod awsauth;
pub mod debug;
pub mod factory;
pub mod firstboot;
pub mod irsa;
pub mod key;
pub mod mirror;
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
        None => print_bytes(bytes)?,
    }
    Ok(())
}

/// Writes `text` to stdout: every command's output goes through here (not `print!`, which
/// panics on a closed pipe).
fn print(text: &str) -> anyhow::Result<()> {
    print_bytes(text.as_bytes())
}

/// Writes `bytes` to stdout and flushes. A reader that went away (`status --json | head -c1`:
/// EPIPE) wanted no more: the rest is dropped quietly and the command still succeeds, as
/// shell tools behave (they die of SIGPIPE, which Rust programs ignore).
fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}
