//! `factory request` and `factory store`: the production line's two steps that give a device
//! its factory identity (IEEE 802.1AR IDevID). See [`crate::factory`].

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::KeyArgs;
use crate::error;
use crate::factory::{self, RequestSettings, StoreSettings, DEFAULT_NODE_KEY};
use crate::fsutil;

/// `hybridboot factory ...`.
#[derive(Subcommand, Debug)]
pub enum FactoryCommand {
    /// Create the factory identity key (if absent) and print its CSR: CN and serialNumber are
    /// the device's serial number.
    ///
    /// The key gets its own TPM handle: the node key's (--node-key) is refused. The factory CA
    /// signs the CSR; `factory store` then puts the certificate on the device.
    ///
    /// Example: hybridboot factory request --key handle:0x81000002 --serial-number hb-0001 --out idevid.csr
    Request(FactoryRequestArgs),
    /// Check the factory CA's certificate against the key in this TPM and the serial number,
    /// then store it on the device (mode 0644: a certificate is public).
    ///
    /// Example: hybridboot factory store --key handle:0x81000002 --serial-number hb-0001 --signed idevid-signed.pem --out /etc/hybridboot/idevid.pem
    Store(FactoryStoreArgs),
}

/// `hybridboot factory request`.
#[derive(Args, Debug)]
pub struct FactoryRequestArgs {
    /// The factory identity key (IDevID), e.g. handle:0x81000002.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The device's serial number (subject CN and serialNumber; 1..64 printable characters).
    /// With the recommended Vault set-up it is also the node name.
    #[arg(long, value_name = "SERIAL")]
    pub serial_number: String,
    /// The node key's reference (BootstrapConfig spec.key.ref), which the factory identity
    /// must not share.
    #[arg(long, value_name = "REF", default_value = DEFAULT_NODE_KEY)]
    pub node_key: String,
    /// Algorithm of a new key.
    #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "rsa-2048"])]
    pub algorithm: String,
    /// Write the CSR to this file (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `hybridboot factory store`.
#[derive(Args, Debug)]
pub struct FactoryStoreArgs {
    /// The factory identity key (IDevID) the certificate must be for.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The device's serial number the certificate must name (CN and serialNumber).
    #[arg(long, value_name = "SERIAL")]
    pub serial_number: String,
    /// The certificate from the factory CA (PEM: leaf first, then any intermediates).
    #[arg(long, value_name = "FILE")]
    pub signed: PathBuf,
    /// Where the device keeps it (BootstrapConfig spec.vault.auth.deviceCertificate.certificate).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/hybridboot/idevid.pem"
    )]
    pub out: PathBuf,
}

/// Runs `factory ...`.
pub fn run_factory(command: FactoryCommand) -> anyhow::Result<()> {
    match command {
        FactoryCommand::Request(a) => {
            let pem = factory::request(&RequestSettings {
                key: a.key.settings(),
                algorithm: a.algorithm.parse().map_err(error::operator)?,
                node_key: a.node_key,
                serial_number: a.serial_number,
            })?;
            super::emit(a.out.as_ref(), pem.as_bytes(), "the factory identity CSR")
        }
        FactoryCommand::Store(a) => {
            let text = fsutil::read_capped_string(&a.signed, fsutil::MAX_TEXT_FILE)
                .with_context(|| format!("reading {}", a.signed.display()))?;
            let (subject, serial) = factory::store(&StoreSettings {
                key: a.key.settings(),
                serial_number: a.serial_number,
                certificate_pem: text,
                out: a.out.clone(),
            })?;
            log::info!(
                "device certificate {subject} (serial {serial}) stored in {}",
                a.out.display()
            );
            println!("{subject}");
            Ok(())
        }
    }
}
