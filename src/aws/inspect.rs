//! `hybridboot credentials inspect`: what a certificate (and chain) presents to IAM Roles
//! Anywhere.

use std::path::Path;
use std::time::SystemTime;

use super::session::read_certs;
use super::{cache, sigv4x509};
use crate::error::ResultExt;
use crate::key::spki_algorithm;
use crate::x509::chain::{self, Cert};

/// The text `credentials inspect` prints.
pub fn inspect(certificate: &Path, intermediates: Option<&Path>) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let certs = read_certs(certificate, "certificate")?;
    let leaf = Cert::from_der(&certs[0]).classed()?;
    let info = leaf.info();
    let algorithm = spki_algorithm(&leaf.spki_der(), &certificate.display().to_string())
        .map(|a| a.to_string())
        .unwrap_or_else(|e| format!("unsupported ({e})"));
    let now = SystemTime::now();
    let status = if info.not_after < now {
        "EXPIRED"
    } else if info.not_before > now {
        "NOT YET VALID"
    } else {
        "valid"
    };
    let mut out = String::new();
    let _ = writeln!(out, "key type: {algorithm}");
    // The signer's view of the serial: decimal as in `Credential=`, hex without leading zeros
    // as the service's default session name.
    let serial = sigv4x509::leaf_info(leaf.der()).classed()?;
    let _ = writeln!(out, "serial (decimal): {}", serial.serial_decimal);
    let _ = writeln!(out, "serial (hex): {}", serial.serial_hex);
    let _ = writeln!(out, "subject: {}", info.subject);
    let _ = writeln!(out, "issuer: {}", info.issuer);
    let _ = writeln!(out, "not before: {}", chain::rfc3339(info.not_before));
    let _ = writeln!(out, "not after: {}", chain::rfc3339(info.not_after));
    let _ = writeln!(out, "status: {status}");
    let _ = writeln!(
        out,
        "sha256 fingerprint: {}",
        cache::certificate_fingerprint(leaf.der())
    );
    let mut chain_certs: Vec<Cert> = Vec::new();
    for der in certs.iter().skip(1) {
        chain_certs.push(Cert::from_der(der).classed()?);
    }
    if let Some(p) = intermediates {
        for der in read_certs(p, "intermediates file")? {
            chain_certs.push(Cert::from_der(&der).classed()?);
        }
    }
    let mut child = leaf.clone();
    for (i, c) in chain_certs.iter().enumerate() {
        let link = match child.verify_issued_by(c) {
            Ok(()) => "signs the previous".to_string(),
            Err(e) => format!("DOES NOT sign the previous: {e}"),
        };
        let _ = writeln!(
            out,
            "chain[{}]: {} (not after {}; {link})",
            i + 1,
            c.subject(),
            chain::rfc3339(c.not_after())
        );
        child = c.clone();
    }
    if chain_certs.is_empty() {
        let _ = writeln!(out, "chain: none (the trust anchor must be the issuer)");
    }
    Ok(out)
}
