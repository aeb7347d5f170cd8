//! Orchestration: log in (token, AppRole, TLS certificate auth), sign a fresh CSR, verify, write
//! the files; `renew_certificate` decides whether a new certificate is needed at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;

use super::device::{self, Login};
use super::settings::DEFAULT_RENEW_BEFORE;
use super::{renewal_due, verify_signed, DeviceIdentity, SecretAuth, Settings, SignRequest, Vault};
use crate::error::{self, ResultExt};
use crate::http::{Client, ClientIdentity};
use crate::key::{NodeKey, OpenMode};
use crate::secret::Secret;
use crate::x509::chain::{self, Cert, CertInfo};
use crate::{fsutil, x509};

/// How the node authenticates this time.
enum Auth {
    Token(Secret),
    AppRole {
        role_id: Secret,
        secret_id_file: PathBuf,
        wrapped: bool,
    },
    Cert(String),
    /// The factory identity (IDevID) at TLS certificate auth.
    Device(DeviceIdentity),
}

impl Settings {
    fn base_client(&self) -> anyhow::Result<Client> {
        let mut b = Client::builder();
        if let Some(ca) = &self.ca_bundle {
            b = b.ca_bundle_file(ca).classed()?;
        }
        b.build().classed()
    }

    /// The non-certificate auth method configured, if any.
    fn secret_auth(&self) -> anyhow::Result<Option<Auth>> {
        match &self.auth {
            None => Ok(None),
            Some(SecretAuth::Token(t)) => Ok(Some(Auth::Token(t.clone()))),
            Some(SecretAuth::DeviceCertificate(d)) => Ok(Some(Auth::Device(d.clone()))),
            Some(SecretAuth::TokenFile(f)) => {
                let t = Secret::from_file(f)
                    .with_context(|| format!("reading the Vault token file {}", f.display()))?;
                if t.is_empty() {
                    return Err(crate::error::operator(format!(
                        "the Vault token file {} is empty",
                        f.display()
                    )));
                }
                Ok(Some(Auth::Token(t)))
            }
            Some(SecretAuth::AppRole {
                role_id_file,
                secret_id_file,
                wrapped,
            }) => {
                let role_id = Secret::from_file(role_id_file).with_context(|| {
                    format!(
                        "reading the AppRole role id file {}",
                        role_id_file.display()
                    )
                })?;
                Ok(Some(Auth::AppRole {
                    role_id,
                    secret_id_file: secret_id_file.clone(),
                    wrapped: *wrapped,
                }))
            }
        }
    }

    fn sign_request(&self) -> SignRequest<'_> {
        SignRequest {
            common_name: &self.common_name,
            dns_names: &self.dns_names,
            ip_addresses: &self.ip_addresses,
            ttl: self.ttl,
        }
    }
}

/// Logs in with `auth`; returns the token and, for AppRole, the secret-id file to remove after
/// success.
fn login(
    vault: &Vault,
    args: &Settings,
    auth: &Auth,
    key: &Arc<dyn NodeKey>,
) -> anyhow::Result<(Secret, Option<PathBuf>)> {
    match auth {
        Auth::Token(t) => Ok((t.clone(), None)),
        Auth::AppRole {
            role_id,
            secret_id_file,
            wrapped,
        } => {
            let raw = Secret::from_file(secret_id_file).with_context(|| {
                format!(
                    "reading the AppRole secret id file {}",
                    secret_id_file.display()
                )
            })?;
            if raw.is_empty() {
                return Err(crate::error::operator(format!(
                    "the AppRole secret id file {} is empty",
                    secret_id_file.display()
                )));
            }
            let secret_id = if *wrapped {
                log::debug!(
                    "unwrapping the AppRole secret id from {}",
                    secret_id_file.display()
                );
                let s = vault.unwrap_secret_id(&raw, secret_id_file).classed()?;
                log::warn!(
                    "the wrapping token in {} is now used up; if this enrollment fails, issue a new one",
                    secret_id_file.display()
                );
                s
            } else {
                raw
            };
            let token = vault
                .approle_login(&args.approle_mount, role_id, &secret_id)
                .classed()?;
            log::info!("logged in to Vault with AppRole");
            Ok((token, Some(secret_id_file.clone())))
        }
        Auth::Cert(role) => {
            let current = current_chain(&args.certificate, key.as_ref())?;
            let mut b = Client::builder().client_identity(ClientIdentity {
                chain: current.iter().map(|c| c.der().to_vec()).collect(),
                key: key.clone(),
            });
            if let Some(ca) = &args.ca_bundle {
                b = b.ca_bundle_file(ca).classed()?;
            }
            let mtls = vault.with_http(b.build().classed()?);
            let token = mtls.cert_login(&args.cert_auth_mount, role).classed()?;
            log::info!("logged in to Vault with TLS certificate auth (role {role})");
            Ok((token, None))
        }
        Auth::Device(d) => device::login(vault, args, d).map(|(token, _)| (token, None)),
    }
}

/// Who a successful `login` with `auth` was, for the record.
fn who(args: &Settings, auth: &Auth, key: &dyn NodeKey) -> Login {
    match auth {
        Auth::Token(_) => Login::plain("token", None),
        Auth::AppRole { .. } => Login::plain("approle", None),
        Auth::Cert(role) => match current_chain(&args.certificate, key) {
            Ok(certs) => Login::with_certificate("certificate", role, &certs[0]),
            Err(_) => Login::plain("certificate", Some(role.clone())),
        },
        Auth::Device(d) => Login::plain("device-certificate", Some(d.role.clone())),
    }
}

/// The current certificate chain, if it belongs to the node key and is valid now.
fn current_chain(path: &Path, key: &dyn NodeKey) -> anyhow::Result<Vec<Cert>> {
    let text = fsutil::read_capped_string(path, fsutil::MAX_TEXT_FILE)
        .with_context(|| format!("reading the current certificate {}", path.display()))?;
    let certs = chain::parse_pem_certs(&text)
        .classed()
        .with_context(|| format!("parsing the current certificate {}", path.display()))?;
    let leaf = &certs[0];
    if leaf.spki_der() != key.public_key_der() {
        return Err(crate::error::operator(format!(
            "the certificate {} does not belong to the key {}",
            path.display(),
            key.describe()
        )));
    }
    leaf.check_valid_at(SystemTime::now())
        .classed()
        .with_context(|| format!("the current certificate {}", path.display()))?;
    Ok(certs)
}

/// Signs a fresh CSR with `auth`, verifies, writes. Returns the new leaf's facts and who logged
/// in. `key` is the only handle on the node key: it is closed while the factory identity's key
/// is in use.
fn issue(
    args: &Settings,
    auths: Vec<Auth>,
    key: Arc<dyn NodeKey>,
) -> anyhow::Result<(CertInfo, Login)> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    let addr = args.address.clone();
    let vault = Vault::new(
        args.base_client()?,
        addr.clone(),
        args.namespace.clone().filter(|n| !n.is_empty()),
        deadline,
    )
    .request_forwarding(args.request_forwarding);
    let req = args.sign_request();
    let csr = x509::build_csr(
        key.as_ref(),
        &x509::CsrRequest {
            common_name: args.common_name.clone(),
            dns_names: args.dns_names.clone(),
            ip_addresses: args.ip_addresses.clone(),
        },
    )
    .classed()?;
    let node_spki = key.public_key_der().to_vec();
    let mut node_key = Some(key);

    // Try the methods in order of preference; a later one only if an earlier one fails.
    let mut logged_in = None;
    let count = auths.len();
    for (i, auth) in auths.iter().enumerate() {
        let attempt = match auth {
            Auth::Device(d) => {
                // Without a resource manager (/dev/tpm0) a TPM admits one open connection: the
                // node key's is closed before the factory identity's key opens (the node key is
                // not needed again unless a later method is tried, which reopens it).
                node_key = None;
                device::login(&vault, args, d).map(|(token, who)| (token, None, who))
            }
            other => {
                let key = match &node_key {
                    Some(k) => k.clone(),
                    None => node_key.insert(open_key(args)?).clone(),
                };
                login(&vault, args, other, &key)
                    .map(|(token, file)| (token, file, who(args, other, key.as_ref())))
            }
        };
        match attempt {
            Ok(v) => {
                logged_in = Some(v);
                break;
            }
            Err(e) if i + 1 < count => {
                log::warn!(
                    "{}; trying the next configured auth method",
                    error::cause_chain(&e)
                );
            }
            Err(e) => return Err(e),
        }
    }
    drop(node_key);
    let Some((token, consumed_secret, who)) = logged_in else {
        return Err(crate::error::operator(
            "no Vault auth method: give --vault-token-file, --approle-role-id-file with --approle-secret-id-file, --cert-auth-role, or set VAULT_TOKEN",
        ));
    };

    let signed = vault
        .sign(&token, &args.pki_mount, &args.pki_role, &csr, &req)
        .classed()?;
    let issued =
        verify_signed(&addr.origin(), &signed, &node_spki, &req, SystemTime::now()).classed()?;

    fsutil::atomic_write(
        &args.certificate,
        issued.certificate_pem.as_bytes(),
        &fsutil::WriteOptions::public(),
    )
    .with_context(|| format!("writing the certificate {}", args.certificate.display()))?;
    if let Some(ca) = &args.ca_certificate {
        fsutil::atomic_write(
            ca,
            issued.ca_pem.as_bytes(),
            &fsutil::WriteOptions::public(),
        )
        .with_context(|| format!("writing the CA certificate {}", ca.display()))?;
    }
    if let Some(f) = consumed_secret {
        match fsutil::remove_file(&f) {
            Ok(_) => log::info!("removed the one-time secret id file {}", f.display()),
            Err(e) => log::warn!("could not remove the secret id file {}: {e}", f.display()),
        }
    }
    log::info!(
        "certificate for CN={} serial {} valid until {} written to {} ({} ms)",
        args.common_name,
        issued.info.serial_hex,
        chain::rfc3339(issued.info.not_after),
        args.certificate.display(),
        started.elapsed().as_millis()
    );
    Ok((issued.info, who))
}

fn open_key(settings: &Settings) -> anyhow::Result<Arc<dyn NodeKey>> {
    Ok(Arc::from(settings.key.open(OpenMode::Existing)?))
}

/// Enrollment: a new certificate from Vault whatever is on disk (the configured secret auth
/// first, then TLS certificate auth). The renewal point is at [`DEFAULT_RENEW_BEFORE`].
pub fn enroll(settings: &Settings) -> anyhow::Result<Renewal> {
    let key = open_key(settings)?;
    let mut auths = Vec::new();
    if let Some(auth) = settings.secret_auth()? {
        auths.push(auth);
    }
    if let Some(role) = &settings.cert_auth_role {
        auths.push(Auth::Cert(role.clone()));
    }
    let (info, login) = issue(settings, auths, key)?;
    let due = renewal_due(info.not_before, info.not_after, DEFAULT_RENEW_BEFORE);
    Ok(Renewal {
        info,
        due,
        issued: true,
        login: Some(login),
    })
}

/// What [`renew_certificate`] found or did.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// The leaf now on disk.
    pub info: CertInfo,
    /// When it is due for renewal.
    pub due: SystemTime,
    /// Whether a new certificate was issued (false: the current one was still young).
    pub issued: bool,
    /// Who logged in to Vault for it (`None`: nothing was issued).
    pub login: Option<Login>,
}

/// The library side of `renew` (also first boot's enroll step): nothing while a certificate for
/// this key and CN is valid and young; otherwise a new one from the same key, TLS certificate
/// auth preferred when the current one is usable.
pub fn renew_certificate(a: &Settings, renew_before: f64) -> anyhow::Result<Renewal> {
    let key = open_key(a)?;
    let now = SystemTime::now();
    let current = match fsutil::read_capped_string(&a.certificate, fsutil::MAX_TEXT_FILE) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            // Not fatal: a certificate we cannot use is replaced by a new enrollment.
            log::warn!(
                "cannot use the current certificate {}: {e}; enrolling anew",
                a.certificate.display()
            );
            None
        }
    };
    let current = current
        .and_then(|t| chain::parse_pem_certs(&t).ok())
        .map(|c| c[0].clone());
    let usable = current.as_ref().filter(|c| {
        c.spki_der() == key.public_key_der()
            && c.common_name().as_deref() == Some(a.common_name.as_str())
            && c.check_valid_at(now).is_ok()
    });
    if let Some(c) = usable {
        let due = renewal_due(c.not_before(), c.not_after(), renew_before);
        if now < due {
            log::info!(
                "certificate {} (serial {}) is valid until {}; renewal due at {}: nothing to do",
                a.certificate.display(),
                c.info().serial_hex,
                chain::rfc3339(c.not_after()),
                chain::rfc3339(due)
            );
            return Ok(Renewal {
                info: c.info(),
                due,
                issued: false,
                login: None,
            });
        }
        log::info!("certificate {} is due for renewal", a.certificate.display());
    } else {
        log::info!(
            "no valid certificate for this key and CN at {}: enrolling",
            a.certificate.display()
        );
    }
    let mut auths = Vec::new();
    if let (Some(role), Some(_)) = (&a.cert_auth_role, usable) {
        auths.push(Auth::Cert(role.clone()));
    }
    if let Some(auth) = a.secret_auth()? {
        auths.push(auth);
    }
    if auths.is_empty() && a.cert_auth_role.is_some() {
        return Err(crate::error::operator(format!(
            "TLS certificate auth needs a current, valid certificate for this key and CN at {}: enroll first (token or AppRole)",
            a.certificate.display()
        )));
    }
    let (info, login) = issue(a, auths, key)?;
    let due = renewal_due(info.not_before, info.not_after, renew_before);
    Ok(Renewal {
        info,
        due,
        issued: true,
        login: Some(login),
    })
}
