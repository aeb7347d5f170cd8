//! The factory step: giving a device its factory identity (IEEE 802.1AR IDevID) on the
//! production line, so that its first boot needs no secret.
//!
//! ```text
//! request: IDevID key created in the TPM (its own handle, never the node key's)
//!          -> CSR: CN = serial number, plus the subject's serialNumber attribute
//! (the factory CA signs the CSR: any CA; the tests use a Vault PKI mount)
//! store:   the signed certificate checked against the key in this TPM and written (public)
//! ```
//!
//! Both halves run on the device (or against its TPM); the CA stays on the line side.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;

use crate::error::{self, ResultExt};
use crate::fsutil;
use crate::key::{Algorithm, KeyRef, KeySettings, OpenMode};
use crate::x509::{self, chain};

/// The node key's reference unless told otherwise (the documented `spec.key.ref`).
pub const DEFAULT_NODE_KEY: &str = "handle:0x81000001";

/// What `factory request` needs.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// The IDevID key (created if absent).
    pub key: KeySettings,
    /// Algorithm of a key created now.
    pub algorithm: Algorithm,
    /// The node key's reference: the IDevID key must be another one.
    pub node_key: String,
    /// The device's serial number.
    pub serial_number: String,
}

/// Creates the IDevID key if absent and returns a CSR (PEM) for it with
/// `CN=<serial>, serialNumber=<serial>`.
pub fn request(s: &RequestSettings) -> anyhow::Result<String> {
    let own = KeyRef::parse(&s.key.reference).classed()?;
    let node = KeyRef::parse(&s.node_key).classed().context("--node-key")?;
    if own == node {
        return Err(error::operator(format!(
            "{} is the node key's reference (--node-key {}): the factory identity needs a key of its own, e.g. handle:0x81000002",
            s.key.reference, s.node_key
        )));
    }
    let key = s.key.open(OpenMode::CreateIfAbsent(s.algorithm))?;
    log::info!(
        "factory identity key {} ready: {} (sha256 {})",
        key.describe(),
        key.algorithm(),
        key.fingerprint()
    );
    let req = x509::CsrRequest {
        common_name: s.serial_number.clone(),
        ..x509::CsrRequest::default()
    };
    x509::build_csr_with_serial(key.as_ref(), &req, Some(&s.serial_number)).classed()
}

/// What `factory store` needs.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The IDevID key.
    pub key: KeySettings,
    /// The device's serial number the certificate must name.
    pub serial_number: String,
    /// PEM text from the factory CA: the leaf first, then any intermediates.
    pub certificate_pem: String,
    /// Where the device keeps it (`spec.vault.auth.deviceCertificate.certificate`).
    pub out: PathBuf,
}

/// Checks the factory CA's certificate against the key in this TPM, the serial number and the
/// clock, then writes it (mode 0644: it is public). Returns its subject and serial (hex).
pub fn store(s: &StoreSettings) -> anyhow::Result<(String, String)> {
    let certs = chain::parse_pem_certs(&s.certificate_pem)
        .classed()
        .context("the factory CA's certificate")?;
    let leaf = &certs[0];
    let key = s.key.open(OpenMode::Existing)?;
    if leaf.spki_der() != key.public_key_der() {
        return Err(error::operator(format!(
            "the certificate ({}) is not for the factory identity key {} in this TPM: store the certificate issued for this device's own CSR",
            leaf.subject(),
            key.describe()
        )));
    }
    let names_device = leaf.common_name().as_deref() == Some(s.serial_number.as_str())
        && leaf.subject_serial_number().as_deref() == Some(s.serial_number.as_str());
    if !names_device {
        return Err(error::operator(format!(
            "the certificate's subject is {}, not CN={} with serialNumber={}: the factory CA must keep the CSR's subject (a Vault PKI role needs allowed_serial_numbers and use_csr_common_name)",
            leaf.subject(),
            s.serial_number,
            s.serial_number
        )));
    }
    leaf.check_valid_at(SystemTime::now())
        .classed()
        .context("the factory CA's certificate")?;
    let pem: String = certs.iter().map(chain::Cert::to_pem).collect();
    fsutil::atomic_write(&s.out, pem.as_bytes(), &fsutil::WriteOptions::public())
        .with_context(|| format!("writing the device certificate {}", s.out.display()))?;
    Ok((leaf.subject(), leaf.info().serial_hex))
}
