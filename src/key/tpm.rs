//! TPM 2.0 backend (tss-esapi 7.7 over the system's libtss2).
//!
//! Two kinds of keys:
//! - a persistent handle (`handle:0x81000001`): created on demand as a child of the owner
//!   hierarchy's storage root key (SRK) and made persistent with `TPM2_EvictControl`;
//! - a `TSS2 PRIVATE KEY` PEM file (tpm2-openssl / tpm2-tss-engine): loaded under its parent.
//!
//! The SRK is always derived transiently with `TPM2_CreatePrimary` from the same template
//! tpm2-openssl uses (ECC P-256, restricted decrypt, AES-128-CFB, empty unique), so keys made by
//! either tool load under it; a persistent SRK may not exist, or may sit at the very handle we
//! were asked to use for the node key.
//!
//! swtpm has no resource manager, so every transient object is flushed as soon as it is not
//! needed. libtss2-esys 3.2.1 crashes when a password session is set while it reads an object's
//! public area, so the password session is set only around the commands that need
//! authorisation, and cleared right after.

use super::tss2pem;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCode;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    Signature, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::UnMarshall;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::{Algorithm, KeyError, KeyOptions, NodeKey, OpenMode};

/// TCTI used when neither `--tcti` nor the environment names one.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// The largest auth value a SHA-256 name-algorithm key accepts.
const MAX_AUTH_LEN: usize = 32;

/// A signing key inside a TPM.
pub struct TpmKey {
    /// The ESAPI context is not `Sync`; the mutex serialises every TPM command.
    ctx: Mutex<Context>,
    /// The ESAPI object to sign with: a persistent handle, or the loaded PEM key (flushed when
    /// the context is dropped).
    object: ObjectHandle,
    algorithm: Algorithm,
    spki: Vec<u8>,
    description: String,
}

impl std::fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No auth value is stored here (the ESAPI object holds it), so nothing secret to hide.
        f.debug_struct("TpmKey")
            .field("key", &self.description)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TpmKey {
    /// Opens the key at a persistent handle (0x81000000-0x81FFFFFF), creating it under the
    /// owner SRK when asked and absent.
    pub fn open_persistent(
        handle: u32,
        opts: &KeyOptions,
        mode: OpenMode,
    ) -> Result<Self, KeyError> {
        let reference = format!("handle:{handle:#010x}");
        let tpm_handle =
            PersistentTpmHandle::new(handle).map_err(|_| KeyError::HandleOutOfRange {
                handle: format!("{handle:#010x}"),
            })?;
        let auth = read_auth(opts)?;
        let tcti = tcti_of(opts);
        let mut ctx = connect(&tcti)?;

        let object = match find_persistent(&mut ctx, tpm_handle, &reference)? {
            Some(object) => {
                let public = read_public(&mut ctx, object, &reference)?;
                let (algorithm, spki) = describe_public(&public, &reference)?;
                check_requested(mode, algorithm, &reference)?;
                log::debug!("found existing TPM key {reference} ({algorithm})");
                return Self::finish(ctx, object, auth, algorithm, spki, reference, &tcti);
            }
            None => match mode {
                OpenMode::Existing => return Err(KeyError::NotFound { reference }),
                OpenMode::CreateIfAbsent(alg) => {
                    create_persistent(&mut ctx, tpm_handle, alg, auth.as_ref(), &reference)?
                }
            },
        };
        let public = read_public(&mut ctx, object, &reference)?;
        let (algorithm, spki) = describe_public(&public, &reference)?;
        check_requested(mode, algorithm, &reference)?;
        log::info!("created TPM key {reference} ({algorithm}) under the owner SRK");
        Self::finish(ctx, object, auth, algorithm, spki, reference, &tcti)
    }

    /// Loads a `TSS2 PRIVATE KEY` PEM file under its parent. Such files are made by
    /// tpm2-openssl (`openssl genpkey -provider tpm2`) or tpm2-tss-engine; hybridboot does not
    /// create them, so [`OpenMode::CreateIfAbsent`] only checks the algorithm.
    pub fn open_tss2_pem(path: &Path, opts: &KeyOptions, mode: OpenMode) -> Result<Self, KeyError> {
        let reference = path.display().to_string();
        // A TSS2 PEM key is ~1 KiB.
        let text = crate::fsutil::read_capped(path, 64 * 1024)
            .map_err(|e| KeyError::io(format!("reading TPM key file {reference}"), e))?;
        let parsed = tss2pem::parse_pem(&text).map_err(|e| match e {
            tss2pem::Tss2Error::Unsupported(detail) => KeyError::Unsupported {
                reference: reference.clone(),
                detail,
            },
            other => KeyError::backend(format!("reading TPM key file {reference}"), other),
        })?;
        let public = Public::unmarshall(&parsed.public).map_err(|e| KeyError::Unsupported {
            reference: reference.clone(),
            detail: format!("unreadable TPM public area: {e}"),
        })?;
        let (algorithm, spki) = describe_public(&public, &reference)?;
        check_requested(mode, algorithm, &reference)?;
        let private = Private::try_from(parsed.private).map_err(|e| KeyError::Unsupported {
            reference: reference.clone(),
            detail: format!("private blob too large: {e}"),
        })?;
        let auth = read_auth(opts)?;
        if !parsed.empty_auth && auth.is_none() {
            log::warn!(
                "TPM key file {reference} says it has an auth value; pass --tpm-key-auth-file if signing fails"
            );
        }
        let tcti = tcti_of(opts);
        let mut ctx = connect(&tcti)?;
        let object = load_under_parent(&mut ctx, parsed.parent, private, public, &reference)?;
        let description = format!("{reference} (parent {:#010x})", parsed.parent);
        Self::finish(ctx, object, auth, algorithm, spki, description, &tcti)
    }

    fn finish(
        mut ctx: Context,
        object: ObjectHandle,
        auth: Option<Auth>,
        algorithm: Algorithm,
        spki: Vec<u8>,
        reference: String,
        tcti: &str,
    ) -> Result<Self, KeyError> {
        if let Some(auth) = auth {
            ctx.tr_set_auth(object, auth)
                .map_err(|e| tpm_error(format!("setting the auth value of {reference}"), e))?;
        }
        Ok(TpmKey {
            ctx: Mutex::new(ctx),
            object,
            algorithm,
            spki,
            description: format!("TPM key {reference} via {tcti}"),
        })
    }
}

impl NodeKey for TpmKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        let scheme = match self.algorithm {
            Algorithm::EcdsaP256 => SignatureScheme::EcDsa {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
            },
            Algorithm::Rsa2048 => SignatureScheme::RsaSsa {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
            },
        };
        let digest = Digest::try_from(digest.to_vec())
            .map_err(|e| tpm_error("preparing the digest to sign", e))?;
        // A null ticket: the digest was computed outside the TPM, which an unrestricted key
        // accepts.
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| tpm_error("preparing the hashcheck ticket", e))?;
        let mut ctx = self.ctx.lock().map_err(|_| {
            KeyError::backend(
                &self.description,
                "TPM context poisoned by an earlier panic",
            )
        })?;
        let started = std::time::Instant::now();
        let sig = with_password_session(&mut ctx, |c| {
            c.sign(self.object.into(), digest, scheme, ticket)
        })
        .map_err(|e| sign_error(&self.description, e))?;
        log::trace!("TPM signed in {:?}", started.elapsed());
        match (self.algorithm, sig) {
            (Algorithm::EcdsaP256, Signature::EcDsa(s)) => {
                super::ecdsa_scalars_to_der(s.signature_r().value(), s.signature_s().value())
            }
            (Algorithm::Rsa2048, Signature::RsaSsa(s)) => {
                let raw = s.signature().value();
                if raw.len() > 256 {
                    return Err(KeyError::backend(
                        format!("signing with {}", self.description),
                        "TPM returned an RSA signature longer than 256 bytes",
                    ));
                }
                let mut out = vec![0u8; 256 - raw.len()];
                out.extend_from_slice(raw);
                Ok(out)
            }
            (_, other) => Err(KeyError::backend(
                format!("signing with {}", self.description),
                format!(
                    "TPM returned an unexpected {:?} signature",
                    other.algorithm()
                ),
            )),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// Refuses an existing key of another algorithm than `key create --algorithm` asked for.
fn check_requested(mode: OpenMode, algorithm: Algorithm, reference: &str) -> Result<(), KeyError> {
    match mode {
        OpenMode::CreateIfAbsent(requested) if requested != algorithm => {
            Err(KeyError::AlgorithmMismatch {
                reference: reference.to_string(),
                existing: algorithm,
                requested,
            })
        }
        _ => Ok(()),
    }
}

/// The TCTI to use: the configured one or [`DEFAULT_TCTI`].
fn tcti_of(opts: &KeyOptions) -> String {
    opts.tcti
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TCTI.to_string())
}

/// Reads the key's auth value from `--tpm-key-auth-file`, trimming one trailing newline (as
/// `echo` writes it). The bytes are zeroized; tss-esapi's `Auth` zeroizes its own copy.
fn read_auth(opts: &KeyOptions) -> Result<Option<Auth>, KeyError> {
    if let Some(password) = &opts.tpm_auth {
        let raw = password.expose().as_bytes();
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_AUTH_LEN {
            return Err(KeyError::backend(
                "--tpm-key-password",
                format!(
                    "the auth value is {} bytes long; a TPM key accepts at most {MAX_AUTH_LEN}",
                    raw.len()
                ),
            ));
        }
        return Auth::try_from(raw.to_vec())
            .map(Some)
            .map_err(|e| tpm_error("--tpm-key-password", e));
    }
    let Some(path) = &opts.tpm_auth_file else {
        return Ok(None);
    };
    let mut raw =
        Zeroizing::new(crate::fsutil::read_capped(path, 4096).map_err(|e| {
            KeyError::io(format!("reading TPM key auth file {}", path.display()), e)
        })?);
    if raw.last() == Some(&b'\n') {
        raw.pop();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
    }
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > MAX_AUTH_LEN {
        return Err(KeyError::backend(
            format!("TPM key auth file {}", path.display()),
            format!(
                "the auth value is {} bytes long; a TPM key accepts at most {MAX_AUTH_LEN}",
                raw.len()
            ),
        ));
    }
    Auth::try_from(raw.to_vec())
        .map(Some)
        .map_err(|e| tpm_error(format!("TPM key auth file {}", path.display()), e))
}

/// Opens an ESAPI context on the TCTI; any failure to reach the TPM is `TpmUnreachable`.
fn connect(tcti: &str) -> Result<Context, KeyError> {
    quiet_libtss2();
    let conf = TctiNameConf::from_str(tcti).map_err(|_| {
        KeyError::backend(
            format!("TPM TCTI {tcti:?}"),
            "not understood: use device:/dev/tpmrm0, swtpm:host=HOST,port=PORT, mssim:host=HOST,port=PORT or tabrmd:",
        )
    })?;
    if let TctiNameConf::Device(_) = conf {
        let path = PathBuf::from(tcti.strip_prefix("device:").unwrap_or("/dev/tpmrm0"));
        let path = if path.as_os_str().is_empty() {
            PathBuf::from("/dev/tpm0")
        } else {
            path
        };
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            return Err(match e.kind() {
                std::io::ErrorKind::PermissionDenied => KeyError::io(
                    format!(
                        "opening TPM device {} (run as root or as a member of the tss group)",
                        path.display()
                    ),
                    e,
                ),
                _ => KeyError::TpmUnreachable {
                    tcti: tcti.to_string(),
                    detail: format!("cannot open {}: {e}", path.display()),
                },
            });
        }
    }
    Context::new(conf).map_err(|e| KeyError::TpmUnreachable {
        tcti: tcti.to_string(),
        detail: match raw_rc(&e) {
            Some(rc) if rc & 0xffff == 0x000a => format!("connection failed (TSS2 rc {rc:#010x})"),
            Some(rc) => format!("TCTI initialisation failed (TSS2 rc {rc:#010x})"),
            None => format!("TCTI initialisation failed: {e}"),
        },
    })
}

/// libtss2 prints its own `ERROR:tcti:...` lines to stderr for conditions we report ourselves
/// (a refused connection, an absent handle). Silence it unless the operator asked for its logs.
fn quiet_libtss2() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
}

/// The raw TSS2 response code of an error, if it came from the TSS or the TPM.
fn raw_rc(e: &tss_esapi::Error) -> Option<u32> {
    match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => Some(rc.0),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => Some(rc.0),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::Success) => Some(0),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

/// Whether a TPM answered `TPM_RC_HANDLE` (for any handle position): the object does not exist.
fn is_missing_handle(e: &tss_esapi::Error) -> bool {
    raw_rc(e).is_some_and(|rc| rc & !0xf00 == 0x08b)
}

/// Whether the TPM refused the auth value (`TPM_RC_AUTH_FAIL` or `TPM_RC_BAD_AUTH`).
fn is_auth_failure(e: &tss_esapi::Error) -> bool {
    raw_rc(e).is_some_and(|rc| matches!(rc & !0xf00, 0x08e | 0x0a2))
}

fn tpm_error(context: impl Into<String>, e: tss_esapi::Error) -> KeyError {
    let detail = match raw_rc(&e) {
        Some(rc) => format!("{e} (TPM rc {rc:#x})"),
        None => e.to_string(),
    };
    KeyError::backend(context, detail)
}

fn sign_error(description: &str, e: tss_esapi::Error) -> KeyError {
    if is_auth_failure(&e) {
        KeyError::backend(
            format!("signing with {description}"),
            "the TPM rejected the key's auth value (check --tpm-key-auth-file; repeated failures trigger dictionary-attack lockout)",
        )
    } else {
        tpm_error(format!("signing with {description}"), e)
    }
}

/// Runs `f` with a password session (for commands whose handles need authorisation) and
/// clears the session afterwards, whatever the outcome.
fn with_password_session<T>(
    ctx: &mut Context,
    f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
) -> tss_esapi::Result<T> {
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    let out = f(ctx);
    ctx.clear_sessions();
    out
}

/// The ESAPI object of a persistent handle, or `None` when nothing is stored there.
fn find_persistent(
    ctx: &mut Context,
    handle: PersistentTpmHandle,
    reference: &str,
) -> Result<Option<ObjectHandle>, KeyError> {
    // No session may be set here (libtss2-esys 3.2.1 crash, see the module docs).
    ctx.clear_sessions();
    match ctx.tr_from_tpm_public(TpmHandle::Persistent(handle)) {
        Ok(object) => Ok(Some(object)),
        Err(e) if is_missing_handle(&e) => Ok(None),
        Err(e) => Err(tpm_error(format!("looking up TPM key {reference}"), e)),
    }
}

fn read_public(
    ctx: &mut Context,
    object: ObjectHandle,
    reference: &str,
) -> Result<Public, KeyError> {
    ctx.clear_sessions();
    ctx.read_public(object.into())
        .map(|(public, _, _)| public)
        .map_err(|e| tpm_error(format!("reading the public area of TPM key {reference}"), e))
}

/// The algorithm and DER SPKI of a TPM public area, refusing anything that cannot sign CSRs
/// with a null ticket (restricted keys) or is not ECDSA P-256 / RSA 2048.
fn describe_public(public: &Public, reference: &str) -> Result<(Algorithm, Vec<u8>), KeyError> {
    let unsupported = |detail: String| KeyError::Unsupported {
        reference: reference.to_string(),
        detail,
    };
    let attrs = public.object_attributes();
    if !attrs.sign_encrypt() {
        let what = if attrs.restricted() && attrs.decrypt() {
            "a storage key (restricted decrypt), not a signing key"
        } else {
            "not a signing key"
        };
        return Err(unsupported(format!("the TPM object is {what}")));
    }
    if attrs.restricted() {
        return Err(unsupported(
            "the TPM key is restricted (an attestation key) and cannot sign external data".into(),
        ));
    }
    match public {
        Public::Ecc {
            parameters, unique, ..
        } => {
            if parameters.ecc_curve() != EccCurve::NistP256 {
                return Err(unsupported(format!(
                    "ECC key on curve {:?}",
                    parameters.ecc_curve()
                )));
            }
            let spki = super::p256_spki_from_xy(unique.x().value(), unique.y().value())?;
            Ok((Algorithm::EcdsaP256, spki))
        }
        Public::Rsa {
            parameters, unique, ..
        } => {
            if parameters.key_bits() != RsaKeyBits::Rsa2048 {
                return Err(unsupported(format!(
                    "RSA key of {} bits",
                    u16::from(parameters.key_bits())
                )));
            }
            let exponent = parameters.exponent().value().to_be_bytes();
            let spki = super::rsa_spki_from_parts(unique.value(), &exponent)?;
            Ok((Algorithm::Rsa2048, spki))
        }
        _ => Err(unsupported(
            "the TPM object is not an asymmetric key".into(),
        )),
    }
}

/// What a persistent object is, in words (`key delete` names what it would remove).
fn describe_object(public: &Public) -> String {
    let attrs = public.object_attributes();
    let role = if attrs.restricted() && attrs.decrypt() {
        "storage key"
    } else if attrs.restricted() && attrs.sign_encrypt() {
        "restricted signing key"
    } else if attrs.sign_encrypt() {
        "signing key"
    } else if attrs.decrypt() {
        "decryption key"
    } else {
        "object"
    };
    let kind = match public {
        Public::Ecc { parameters, .. } => format!("ECC {:?}", parameters.ecc_curve()),
        Public::Rsa { parameters, .. } => {
            format!("RSA {}-bit", u16::from(parameters.key_bits()))
        }
        Public::KeyedHash { .. } => "keyed-hash".to_string(),
        Public::SymCipher { .. } => "symmetric".to_string(),
    };
    format!("{kind} {role}")
}

/// `key delete` of a persistent handle: what is stored there, removed from the TPM with
/// `TPM2_EvictControl` when `confirm`. A storage key (the parent of other keys) is refused:
/// deleting it would orphan every key made under it.
pub fn delete_persistent(
    handle: u32,
    opts: &KeyOptions,
    confirm: bool,
) -> Result<String, KeyError> {
    let reference = format!("handle:{handle:#010x}");
    let tpm_handle = PersistentTpmHandle::new(handle).map_err(|_| KeyError::HandleOutOfRange {
        handle: format!("{handle:#010x}"),
    })?;
    let tcti = tcti_of(opts);
    let mut ctx = connect(&tcti)?;
    let object =
        find_persistent(&mut ctx, tpm_handle, &reference)?.ok_or_else(|| KeyError::NotFound {
            reference: reference.clone(),
        })?;
    let public = read_public(&mut ctx, object, &reference)?;
    let mut what = format!("TPM {reference} ({tcti}): {}", describe_object(&public));
    if let Ok((alg, spki)) = describe_public(&public, &reference) {
        what += &format!(", {alg}, sha256 {}", super::spki_fingerprint(&spki));
    }
    let attrs = public.object_attributes();
    if attrs.restricted() && attrs.decrypt() {
        return Err(KeyError::Unsupported {
            reference,
            detail: format!(
                "{what}: the parent of other keys; hybridboot deletes only signing keys (use tpm2_evictcontrol if you mean it)"
            ),
        });
    }
    if confirm {
        with_password_session(&mut ctx, |c| {
            c.evict_control(Provision::Owner, object, Persistent::Persistent(tpm_handle))
        })
        .map_err(|e| {
            tpm_error(
                format!("deleting TPM key {reference} (TPM2_EvictControl)"),
                e,
            )
        })?;
        log::info!("deleted {what}");
    }
    Ok(what)
}

/// The owner-hierarchy SRK template shared with tpm2-openssl and the TCG provisioning
/// guidance: ECC NIST P-256, restricted decrypt, AES-128-CFB, noDA, empty unique.
pub fn srk_template() -> tss_esapi::Result<Public> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// The node key template: a non-duplicable, TPM-generated, unrestricted signing key; `no_da`
/// for a key without an auth value (see `create_persistent`).
pub fn signing_key_template(alg: Algorithm, no_da: bool) -> tss_esapi::Result<Public> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(no_da)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_restricted(false)
        .build()?;
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs);
    match alg {
        Algorithm::EcdsaP256 => builder
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_unrestricted_signing_key(
                    EccScheme::EcDsa(sha256),
                    EccCurve::NistP256,
                )
                .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build(),
        Algorithm::Rsa2048 => builder
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_unrestricted_signing_key(
                    RsaScheme::RsaSsa(sha256),
                    RsaKeyBits::Rsa2048,
                    RsaExponent::default(),
                )
                .build()?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build(),
    }
}

/// Derives the owner SRK as a transient object. The caller must flush it.
fn create_srk(ctx: &mut Context) -> Result<KeyHandle, KeyError> {
    let template = srk_template().map_err(|e| tpm_error("building the SRK template", e))?;
    let started = std::time::Instant::now();
    let srk = with_password_session(ctx, |c| {
        c.create_primary(Hierarchy::Owner, template, None, None, None, None)
    })
    .map_err(|e| {
        if is_auth_failure(&e) {
            KeyError::backend(
                "creating the owner storage root key",
                "the TPM owner hierarchy has a password; hybridboot needs it empty",
            )
        } else {
            tpm_error("creating the owner storage root key", e)
        }
    })?;
    log::debug!("derived the owner SRK in {:?}", started.elapsed());
    Ok(srk.key_handle)
}

/// Flushes a transient object, logging (not failing) if that goes wrong: the key operation
/// already succeeded, and the context's drop retries.
fn flush(ctx: &mut Context, handle: impl Into<ObjectHandle>) {
    ctx.clear_sessions();
    if let Err(e) = ctx.flush_context(handle.into()) {
        log::debug!("flushing a transient TPM object failed: {e}");
    }
}

/// Creates a signing key under the owner SRK and makes it persistent at `handle`.
fn create_persistent(
    ctx: &mut Context,
    handle: PersistentTpmHandle,
    alg: Algorithm,
    auth: Option<&Auth>,
    reference: &str,
) -> Result<ObjectHandle, KeyError> {
    // noDA exactly when the key has no auth value: there is nothing to guess, and with DA
    // protection every power cut while the key was in use counts as a failed try, so an
    // appliance that loses power a few times locks its own identity out.
    let template = signing_key_template(alg, auth.is_none())
        .map_err(|e| tpm_error("building the key template", e))?;
    let srk = create_srk(ctx)?;
    let result = (|| {
        let started = std::time::Instant::now();
        let created = with_password_session(ctx, |c| {
            c.create(srk, template, auth.cloned(), None, None, None)
        })
        .map_err(|e| tpm_error(format!("creating {alg} key {reference} in the TPM"), e))?;
        log::debug!("TPM created the {alg} key in {:?}", started.elapsed());
        let loaded = with_password_session(ctx, |c| {
            c.load(srk, created.out_private, created.out_public)
        })
        .map_err(|e| tpm_error(format!("loading the new key {reference}"), e))?;
        let persisted = with_password_session(ctx, |c| {
            c.evict_control(
                Provision::Owner,
                loaded.into(),
                Persistent::Persistent(handle),
            )
        });
        flush(ctx, loaded);
        match persisted {
            Ok(object) => Ok(object),
            // TPM_RC_NV_DEFINED: another process made a key persistent there since we looked
            // (two first-boot runs racing). Use theirs; the caller checks its algorithm.
            Err(e) if raw_rc(&e) == Some(0x14c) => {
                log::warn!(
                    "TPM key {reference} appeared while creating it; using the existing key"
                );
                find_persistent(ctx, handle, reference)?.ok_or_else(|| {
                    tpm_error(format!("making the new key persistent at {reference}"), e)
                })
            }
            Err(e) => Err(tpm_error(
                format!("making the new key persistent at {reference}"),
                e,
            )),
        }
    })();
    flush(ctx, srk);
    result
}

/// Loads a PEM key's blobs under its parent: the owner SRK (re-derived) or a persistent key.
fn load_under_parent(
    ctx: &mut Context,
    parent: u32,
    private: Private,
    public: Public,
    reference: &str,
) -> Result<ObjectHandle, KeyError> {
    if parent == tss2pem::TPM_RH_OWNER {
        let srk = create_srk(ctx)?;
        let loaded = with_password_session(ctx, |c| c.load(srk, private, public));
        flush(ctx, srk);
        return loaded
            .map(ObjectHandle::from)
            .map_err(|e| load_error(reference, parent, e));
    }
    let parent_handle = PersistentTpmHandle::new(parent)
        .map_err(|e| tpm_error(format!("parent handle {parent:#010x} of {reference}"), e))?;
    let parent_reference = format!("handle:{parent:#010x}");
    let Some(parent_object) = find_persistent(ctx, parent_handle, &parent_reference)? else {
        return Err(KeyError::backend(
            format!("loading TPM key file {reference}"),
            format!("its parent key {parent:#010x} does not exist in this TPM"),
        ));
    };
    with_password_session(ctx, |c| c.load(parent_object.into(), private, public))
        .map(ObjectHandle::from)
        .map_err(|e| load_error(reference, parent, e))
}

fn load_error(reference: &str, parent: u32, e: tss_esapi::Error) -> KeyError {
    // TPM_RC_INTEGRITY (0x9a / 0x29a...) means the blob was wrapped by another parent: the file
    // belongs to another TPM, or the TPM was cleared.
    let foreign = raw_rc(&e).is_some_and(|rc| rc & 0x3f == 0x1f && rc & 0x80 != 0);
    if foreign {
        KeyError::backend(
            format!("loading TPM key file {reference}"),
            format!("it was not made under this TPM's parent {parent:#010x} (another TPM, or the TPM was cleared)"),
        )
    } else {
        tpm_error(format!("loading TPM key file {reference}"), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_template_has_exactly_the_required_attributes() {
        for (alg, no_da) in [
            (Algorithm::EcdsaP256, true),
            (Algorithm::Rsa2048, true),
            (Algorithm::EcdsaP256, false),
        ] {
            let t = signing_key_template(alg, no_da).unwrap();
            let a = t.object_attributes();
            assert!(a.fixed_tpm() && a.fixed_parent() && a.sensitive_data_origin());
            assert!(a.user_with_auth() && a.sign_encrypt());
            assert!(!a.decrypt() && !a.restricted());
            assert_eq!(a.no_da(), no_da);
            assert!(!a.admin_with_policy() && !a.encrypted_duplication());
            assert_eq!(t.name_hashing_algorithm(), HashingAlgorithm::Sha256);
        }
    }

    #[test]
    fn srk_template_is_a_restricted_p256_storage_key() {
        let t = srk_template().unwrap();
        let a = t.object_attributes();
        assert!(a.restricted() && a.decrypt() && !a.sign_encrypt());
        assert!(a.fixed_tpm() && a.fixed_parent() && a.sensitive_data_origin() && a.no_da());
        match t {
            Public::Ecc {
                parameters, unique, ..
            } => {
                assert_eq!(parameters.ecc_curve(), EccCurve::NistP256);
                assert_eq!(
                    parameters.symmetric_definition_object(),
                    SymmetricDefinitionObject::AES_128_CFB
                );
                assert_eq!(parameters.ecc_scheme(), EccScheme::Null);
                assert!(unique.x().value().is_empty() && unique.y().value().is_empty());
            }
            other => panic!("SRK template is not ECC: {other:?}"),
        }
    }

    #[test]
    fn describe_refuses_storage_keys() {
        let e = describe_public(&srk_template().unwrap(), "handle:0x81000001").unwrap_err();
        assert!(e.to_string().contains("storage key"), "{e}");
    }

    #[test]
    fn auth_file_is_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth");
        std::fs::write(&p, "s3cret\n").unwrap();
        let opts = KeyOptions {
            tpm_auth_file: Some(p.clone()),
            ..Default::default()
        };
        assert_eq!(read_auth(&opts).unwrap().unwrap().value(), b"s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_auth(&opts).unwrap().is_none());
        std::fs::write(&p, [b'x'; 33]).unwrap();
        let e = read_auth(&opts).unwrap_err().to_string();
        assert!(e.contains("at most 32") && !e.contains("xxxx"), "{e}");
    }

    #[test]
    fn missing_handle_codes() {
        let e = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x18b));
        assert!(is_missing_handle(&e));
        let e = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x28b));
        assert!(is_missing_handle(&e));
        let e = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x98e));
        assert!(!is_missing_handle(&e) && is_auth_failure(&e));
    }
}
