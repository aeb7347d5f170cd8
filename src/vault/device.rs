//! Logging in with the factory identity (IEEE 802.1AR IDevID): the key the factory created in
//! the device's TPM and the certificate the factory CA issued for it, presented to Vault's TLS
//! certificate auth (`POST /v1/auth/<mount>/login {"name": <role>}` over mutual TLS, the
//! handshake signed by the TPM). Nothing the device stores for it is a secret.
//!
//! Before anything is sent, the certificate is checked here so that the operator reads what is
//! wrong with the device rather than Vault's generic refusal: it must belong to the key at
//! `keyRef` (a certificate copied from another device does not), and be valid now (an expired
//! factory identity). Whether it comes from the factory CA is Vault's decision (the cert auth
//! role trusts that CA); its refusal is explained in the same terms.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;

use super::{DeviceIdentity, SecretAuth, Settings, Vault};
use crate::error::{self, Class, Classify, ResultExt};
use crate::fsutil;
use crate::http::{Client, ClientIdentity};
use crate::key::{NodeKey, OpenMode};
use crate::secret::Secret;
use crate::x509::chain::{self, Cert};

/// Which identity logged in to Vault for the last certificate (`status` shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// `token`, `approle`, `certificate` (the node certificate) or `device-certificate` (the
    /// factory identity).
    pub method: &'static str,
    /// The auth role, when the method has one.
    pub role: Option<String>,
    /// The presented certificate's subject (RFC 4514), for the certificate methods.
    pub subject: Option<String>,
    /// The presented certificate's serial number (hex), for the certificate methods.
    pub serial: Option<String>,
    /// The device's serial number: the subject's serialNumber attribute, when present.
    pub device_serial: Option<String>,
}

impl Login {
    /// A login that presented no certificate.
    pub(super) fn plain(method: &'static str, role: Option<String>) -> Login {
        Login {
            method,
            role,
            subject: None,
            serial: None,
            device_serial: None,
        }
    }

    /// A login with `leaf` as the client certificate.
    pub(super) fn with_certificate(method: &'static str, role: &str, leaf: &Cert) -> Login {
        Login {
            method,
            role: Some(role.to_string()),
            subject: Some(leaf.subject()),
            serial: Some(leaf.info().serial_hex),
            device_serial: leaf.subject_serial_number(),
        }
    }
}

/// The login the configured first-enrollment method makes (no current certificate), as far as
/// it can be told without logging in: what a first certificate found on disk came from. First
/// boot records it when a power cut fell between writing that certificate and recording who
/// logged in for it, so the record converges to the uninterrupted run's.
pub fn configured_login(settings: &Settings) -> Option<Login> {
    Some(match settings.auth.as_ref()? {
        SecretAuth::Token(_) | SecretAuth::TokenFile(_) => Login::plain("token", None),
        SecretAuth::AppRole { .. } => Login::plain("approle", None),
        SecretAuth::DeviceCertificate(d) => {
            let leaf = fsutil::read_capped_string(&d.certificate, fsutil::MAX_TEXT_FILE)
                .ok()
                .and_then(|t| chain::parse_pem_certs(&t).ok())
                .map(|certs| certs[0].clone());
            match leaf {
                Some(leaf) => Login::with_certificate("device-certificate", &d.role, &leaf),
                None => Login::plain("device-certificate", Some(d.role.clone())),
            }
        }
    })
}

/// The factory identity's chain, checked against its key and the clock.
fn checked_chain(device: &DeviceIdentity, key: &dyn NodeKey) -> anyhow::Result<Vec<Cert>> {
    let path = &device.certificate;
    let text = fsutil::read_capped_string(path, fsutil::MAX_TEXT_FILE)
        .with_context(|| format!("reading the device certificate (IDevID) {}", path.display()))?;
    let certs = chain::parse_pem_certs(&text)
        .classed()
        .with_context(|| format!("parsing the device certificate (IDevID) {}", path.display()))?;
    let leaf = &certs[0];
    if leaf.spki_der() != key.public_key_der() {
        return Err(error::operator(format!(
            "the device certificate {} ({}) does not belong to the factory identity key {} in this TPM: its key is elsewhere (a certificate from another device?); the factory must store the certificate issued for this device's own IDevID key",
            path.display(),
            leaf.subject(),
            key.describe()
        )));
    }
    leaf.check_valid_at(SystemTime::now())
        .classed()
        .with_context(|| {
            format!(
                "the device certificate {} has expired or is not yet valid: the factory identity cannot log in; check the clock, or have the device re-certified by the factory CA",
                path.display()
            )
        })?;
    Ok(certs)
}

/// Logs in to `auth/<mount>/login` with the factory identity; returns the token and who
/// logged in.
pub(super) fn login(
    vault: &Vault,
    settings: &Settings,
    device: &DeviceIdentity,
) -> anyhow::Result<(Secret, Login)> {
    let key: Arc<dyn NodeKey> = Arc::from(
        device
            .key
            .open(OpenMode::Existing)
            .with_context(|| {
                format!(
                    "the factory identity key {} (spec.vault.auth.deviceCertificate.keyRef) is not usable in this TPM (the production line creates it with `hybridboot factory request`)",
                    device.key.reference
                )
            })?,
    );
    let certs = checked_chain(device, key.as_ref())?;
    let identity = Login::with_certificate("device-certificate", &device.role, &certs[0]);
    log::debug!(
        "logging in to Vault with the device certificate {} ({}, serial {})",
        device.certificate.display(),
        certs[0].subject(),
        certs[0].info().serial_hex
    );
    let mut b = Client::builder().client_identity(ClientIdentity {
        chain: certs.iter().map(|c| c.der().to_vec()).collect(),
        key,
    });
    if let Some(ca) = &settings.ca_bundle {
        b = b.ca_bundle_file(ca).classed()?;
    }
    let mtls = vault.with_http(b.build().classed()?);
    let token = mtls
        .cert_login(&device.mount, &device.role)
        .map_err(|e| refused(e, device, &certs[0]))?;
    log::info!(
        "logged in to Vault with the device certificate (IDevID {}, role {})",
        certs[0].subject(),
        device.role
    );
    Ok((token, identity))
}

/// Vault's refusal of the factory identity, in the device's terms (outages keep their class).
fn refused(e: super::VaultError, device: &DeviceIdentity, leaf: &Cert) -> anyhow::Error {
    let class = e.class();
    let e = e.classed();
    if class != Class::Operator {
        return e;
    }
    e.context(format!(
        "Vault refused the device certificate {} ({}) at auth/{}/login, role {:?}: the role must trust the CA that issued it (the factory CA) and its constraints must match",
        device.certificate.display(),
        leaf.subject(),
        device.mount,
        device.role
    ))
}
