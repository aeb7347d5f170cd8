//! PKCS#11 backend (cryptoki): a key pair generated on an HSM or smart card, found by token label
//! and object label / id, that signs on the token and never leaves it.
//!
//! Opening a key loads the module once per process, finds the token by label (slot numbers change
//! when tokens are re-initialised), logs in once with the user PIN, and keeps that session for the
//! key's lifetime. The cryptoki `Session` is not `Sync`, so it lives behind a `Mutex`. When the
//! token drops that session (re-inserted, restarted, logged out), the next signature reopens it,
//! logs in again and checks that the key still has the same public key before retrying once.
//!
//! Signing takes a SHA-256 digest computed on the host: ECDSA uses the raw `CKM_ECDSA` (SoftHSM
//! 2.6.1 and many smart cards lack `CKM_ECDSA_SHA256`), RSA uses `CKM_RSA_PKCS` over the DER
//! `DigestInfo`, so every caller (CSR, TLS client auth, SigV4-X509) can hand in a digest.
//!
//! A key that needs the PIN for every signature (`CKA_ALWAYS_AUTHENTICATE`, PIV slot 9c) signs
//! only with aws_signing_helper's `--reuse-pin`: `C_SignInit`, `C_Login(CKU_CONTEXT_SPECIFIC)`
//! with the user PIN, then the data. cryptoki 0.12 (the newest release) has no single-part
//! `C_Sign` after a separate `C_SignInit`, so the data goes in parts (`C_SignUpdate`,
//! `C_SignFinal`): with the token's own SHA-256 mechanism (`CKM_ECDSA_SHA256`,
//! `CKM_SHA256_RSA_PKCS`) over the message when the token lists it, else the raw mechanism over
//! the digest, which tokens that collect the parts accept (OpenSC's module does; SoftHSM2 does
//! not for `CKM_ECDSA`, and says so).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::uri::PinSource;
use super::{Algorithm, KeyError, KeyOptions, NodeKey, OpenMode, Pkcs11Uri};
use crate::secret::Secret;

/// DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of a P-256 key.
const P256_EC_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// DER `DigestInfo` prefix for SHA-256 (RFC 8017 section 9.2, note 1); `CKM_RSA_PKCS` signs
/// prefix || digest.
const SHA256_DIGEST_INFO_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Length of the random `CKA_ID` given to keys created without `id=`.
const GENERATED_ID_LEN: usize = 16;

/// A key pair on a PKCS#11 token.
pub struct Pkcs11Key {
    algorithm: Algorithm,
    spki: Vec<u8>,
    description: String,
    target: Target,
    /// Set when the key needs the PIN for every signature (`CKA_ALWAYS_AUTHENTICATE`).
    per_signature: Option<PerSignature>,
    inner: Mutex<Inner>,
}

/// How a key with `CKA_ALWAYS_AUTHENTICATE` signs.
#[derive(Debug, Clone, Copy)]
struct PerSignature {
    /// `--reuse-pin` was given: the user PIN serves for the per-signature login.
    reuse_pin: bool,
    /// The token lists the SHA-256 variant of the key's mechanism (it hashes the message
    /// itself, in parts); otherwise the raw mechanism gets the digest in parts.
    hash_on_token: bool,
}

/// What goes into one signature: the message (for a mechanism that hashes on the token), or
/// what the raw mechanism signs (the digest, or the RSA `DigestInfo`).
#[derive(Clone, Copy)]
enum ToSign<'a> {
    Message(&'a [u8]),
    Raw(&'a [u8]),
}

/// Everything needed to find the key again when the token drops the session (token re-inserted,
/// HSM restarted, another part of the process logged out).
struct Target {
    uri: Pkcs11Uri,
    reference: String,
    module: PathBuf,
    pin: Option<Secret>,
}

/// The context and the logged-in session: used by one thread at a time.
struct Inner {
    // Kept next to the session so the module stays loaded and initialised while the key lives
    // (the process-wide registry holds it too).
    _ctx: Pkcs11,
    session: OwnedSession,
    private: ObjectHandle,
}

/// A session closed on drop without cryptoki's error log: closing a session the token already
/// dropped fails, and that is expected here, not worth an error line.
struct OwnedSession(Option<Session>);

impl std::ops::Deref for OwnedSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.0.as_ref().expect("session present until drop")
    }
}

impl Drop for OwnedSession {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            if let Err(e) = session.close() {
                log::debug!("closing PKCS#11 session: {e:?}");
            }
        }
    }
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("key", &self.description)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// Opens the key the URI names, generating it on the token when `mode` asks for it and it is
    /// absent.
    pub fn open(uri: &Pkcs11Uri, opts: &KeyOptions, mode: OpenMode) -> Result<Self, KeyError> {
        let target = Target::new(uri, opts)?;
        let reference = &target.reference;
        let (ctx, session) = target.connect(matches!(mode, OpenMode::CreateIfAbsent(_)), true)?;
        let private = match find_one(&session, &private_template(uri), reference)? {
            Some(handle) => handle,
            None => match mode {
                OpenMode::Existing => {
                    return Err(KeyError::NotFound {
                        reference: reference.clone(),
                    })
                }
                OpenMode::CreateIfAbsent(alg) => {
                    log::info!("generating {alg} key {reference} on the token");
                    generate(&session, uri, alg, reference)?
                }
            },
        };

        let (algorithm, spki, always_auth) = read_public(&session, private, reference)?;
        let per_signature = if always_auth {
            Some(PerSignature {
                reuse_pin: opts.pkcs11_reuse_pin,
                hash_on_token: lists_hash_mechanism(&ctx, &session, algorithm),
            })
        } else {
            None
        };
        if let OpenMode::CreateIfAbsent(requested) = mode {
            if requested != algorithm {
                return Err(KeyError::AlgorithmMismatch {
                    reference: reference.clone(),
                    existing: algorithm,
                    requested,
                });
            }
        }
        let description = format!("{reference} (module {})", target.module.display());
        log::debug!("opened {algorithm} key {description}");
        Ok(Pkcs11Key {
            algorithm,
            spki,
            description,
            target,
            per_signature,
            inner: Mutex::new(Inner {
                _ctx: ctx,
                session,
                private,
            }),
        })
    }

    /// One signature with the current session: in one call, or for a key that needs the PIN
    /// for every signature, `C_SignInit`, the per-signature login, then the data in parts.
    fn sign_with(&self, inner: &Inner, data: ToSign<'_>) -> Result<Vec<u8>, CkError> {
        let (mechanism, bytes) = match (self.algorithm, data) {
            (Algorithm::EcdsaP256, ToSign::Raw(d)) => (Mechanism::Ecdsa, d),
            (Algorithm::Rsa2048, ToSign::Raw(d)) => (Mechanism::RsaPkcs, d),
            (Algorithm::EcdsaP256, ToSign::Message(m)) => (Mechanism::EcdsaSha256, m),
            (Algorithm::Rsa2048, ToSign::Message(m)) => (Mechanism::Sha256RsaPkcs, m),
        };
        let Some(pin) = self.per_signature.and(self.target.pin.as_ref()) else {
            return inner.session.sign(&mechanism, inner.private, bytes);
        };
        let session = &inner.session;
        session.sign_init(&mechanism, inner.private)?;
        // AuthPin zeroizes its copy on drop; `pin` is a zeroizing Secret.
        let auth = AuthPin::new(pin.expose().into());
        let signed = session
            .login(UserType::ContextSpecific, Some(&auth))
            .and_then(|()| session.sign_update(bytes))
            .and_then(|()| session.sign_final());
        if signed.is_err() {
            // End the operation C_SignInit began (an error ends it on most tokens; this makes
            // sure), so the next signature can start one. Its own result says nothing new.
            let _ = session.sign_final();
        }
        signed
    }

    /// Signs `data` through [`Pkcs11Key::sign_with`], reopening a session the token dropped once,
    /// and returns the signature in the form [`NodeKey::sign_digest`] promises.
    fn sign_data(&self, data: ToSign<'_>) -> Result<Vec<u8>, KeyError> {
        let context = || format!("signing with PKCS#11 key {}", self.description);
        if let Some(per) = self.per_signature {
            self.check_per_signature(per)?;
        }
        // A panic while holding the lock leaves nothing half-done that matters: the session is
        // still a session, and a broken one is replaced below.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let signature = match self.sign_with(&inner, data) {
            Err(CkError::Pkcs11(rv, _)) if session_lost(rv) => {
                log::warn!(
                    "PKCS#11 session for {} lost ({}); reopening it",
                    self.description,
                    ckr_name(rv)
                );
                *inner = self.reconnect()?;
                self.sign_with(&inner, data)
            }
            other => other,
        }
        .map_err(|e| self.sign_error(context(), e, data))?;
        match self.algorithm {
            Algorithm::EcdsaP256 if signature.len() != 64 => Err(KeyError::backend(
                context(),
                format!(
                    "token returned a {}-byte ECDSA signature, expected 64",
                    signature.len()
                ),
            )),
            Algorithm::EcdsaP256 => super::ecdsa_raw_to_der(&signature),
            Algorithm::Rsa2048 => Ok(signature),
        }
    }

    /// A key that needs the PIN for every signature signs only with `--reuse-pin` and a PIN.
    fn check_per_signature(&self, per: PerSignature) -> Result<(), KeyError> {
        let context = || format!("PKCS#11 key {}", self.description);
        if !per.reuse_pin {
            return Err(KeyError::backend(
                context(),
                "the key needs the PIN for every signature (CKA_ALWAYS_AUTHENTICATE, e.g. PIV slot 9c): pass --reuse-pin to log in with the user PIN before each signature (aws_signing_helper's flag), or use a key without the attribute (PIV slot 9a)",
            ));
        }
        if self.target.pin.is_none() {
            return Err(KeyError::backend(
                context(),
                "the key needs the PIN for every signature (CKA_ALWAYS_AUTHENTICATE) and --reuse-pin reuses the user PIN, but none was given: add ?pin-source=file:/path/to/pin to the URI or set HYBRIDBOOT_PKCS11_PIN",
            ));
        }
        Ok(())
    }

    /// A failed signature in words; for the per-signature login, what the token refused.
    fn sign_error(&self, context: String, e: CkError, data: ToSign<'_>) -> KeyError {
        let Some(_) = self.per_signature else {
            return ck(context, e);
        };
        match e {
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login) => KeyError::WrongPin {
                label: self.target.uri.token.clone(),
            },
            CkError::Pkcs11(
                rv @ (RvError::OperationNotInitialized
                | RvError::FunctionNotSupported
                | RvError::FunctionFailed),
                function @ (Function::SignUpdate | Function::SignFinal),
            ) if matches!(data, ToSign::Raw(_)) => KeyError::backend(
                context,
                format!(
                    "C_{function:?} failed: {}: the token does not take a raw {} signature in parts, which the per-signature login (--reuse-pin) needs here, and lists no {} to hash on the token; use a key without CKA_ALWAYS_AUTHENTICATE (PIV slot 9a)",
                    ckr_name(rv),
                    match self.algorithm {
                        Algorithm::EcdsaP256 => "CKM_ECDSA",
                        Algorithm::Rsa2048 => "CKM_RSA_PKCS",
                    },
                    match self.algorithm {
                        Algorithm::EcdsaP256 => "CKM_ECDSA_SHA256",
                        Algorithm::Rsa2048 => "CKM_SHA256_RSA_PKCS",
                    },
                ),
            ),
            other => ck(format!("{context} (per-signature login, --reuse-pin)"), other),
        }
    }

    /// A new session on the same token, logged in, with the same key, which must still have the
    /// public key this `Pkcs11Key` was opened with (never sign silently with a different key).
    fn reconnect(&self) -> Result<Inner, KeyError> {
        let t = &self.target;
        let (ctx, session) = t.connect(false, true)?;
        let private =
            find_one(&session, &private_template(&t.uri), &t.reference)?.ok_or_else(|| {
                KeyError::NotFound {
                    reference: t.reference.clone(),
                }
            })?;
        let (_, spki, _) = read_public(&session, private, &t.reference)?;
        if spki != self.spki {
            return Err(KeyError::backend(
                format!("reopening PKCS#11 key {}", self.description),
                "the token now holds a different key under this reference; restart to use it",
            ));
        }
        Ok(Inner {
            _ctx: ctx,
            session,
            private,
        })
    }
}

impl Target {
    /// The token, module and PIN a URI and the options name.
    fn new(uri: &Pkcs11Uri, opts: &KeyOptions) -> Result<Target, KeyError> {
        Ok(Target {
            uri: uri.clone(),
            reference: uri.to_string(),
            module: module_path(uri, opts)?,
            pin: resolve_pin(uri, opts)?,
        })
    }

    /// Loads the module, finds the token by label, opens a session and logs in (with a PIN;
    /// without one a token that requires login is an error only when `need_login`: public
    /// objects such as certificates are readable without it).
    fn connect(
        &self,
        read_write: bool,
        need_login: bool,
    ) -> Result<(Pkcs11, OwnedSession), KeyError> {
        let label = &self.uri.token;
        let ctx = context(&self.module)?;
        let slot = find_token(&ctx, label, &self.module)?;
        let token = ctx
            .get_token_info(slot)
            .map_err(|e| ck(format!("reading PKCS#11 token {label:?}"), e))?;
        // The _no_drop variants: OwnedSession closes without logging expected failures.
        let session = if read_write {
            ctx.open_rw_session_no_drop(slot)
        } else {
            ctx.open_ro_session_no_drop(slot)
        }
        .map_err(|e| ck(format!("opening a session on PKCS#11 token {label:?}"), e))?;
        let session = OwnedSession(Some(session));
        match &self.pin {
            Some(pin) => login(&session, label, pin)?,
            None if token.login_required() && need_login => {
                return Err(KeyError::backend(
                    format!("PKCS#11 token {label:?}"),
                    "needs the user PIN: add ?pin-source=file:/path/to/pin to the URI or set HYBRIDBOOT_PKCS11_PIN",
                ));
            }
            None => log::debug!("PKCS#11 token {label:?} needs no login"),
        }
        Ok((ctx, session))
    }
}

impl NodeKey for Pkcs11Key {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        let data = match self.algorithm {
            Algorithm::EcdsaP256 => digest.to_vec(),
            Algorithm::Rsa2048 => [SHA256_DIGEST_INFO_PREFIX, digest].concat(),
        };
        self.sign_data(ToSign::Raw(&data))
    }

    /// A key that needs the PIN for every signature, on a token that hashes with the key's
    /// mechanism itself, gets the message (the token takes that in parts); every other key
    /// signs the SHA-256 digest.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self.per_signature {
            Some(PerSignature {
                hash_on_token: true,
                ..
            }) => self.sign_data(ToSign::Message(message)),
            _ => {
                use sha2::{Digest, Sha256};
                self.sign_digest(&Sha256::digest(message).into())
            }
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// Return values after which a fresh session (and login) can succeed where the old one failed.
fn session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
    )
}

/// A cryptoki error as a one-line `KeyError` (cryptoki's `Display` of an RV is a paragraph from the
/// specification; the RV name is what operators search for).
fn ck(context: impl Into<String>, err: CkError) -> KeyError {
    let detail = match &err {
        CkError::Pkcs11(rv, function) => format!("C_{function:?} failed: {}", ckr_name(*rv)),
        other => other.to_string(),
    };
    KeyError::backend(context, detail)
}

/// The specification's name of a return value (`CKR_PIN_INCORRECT`), which is what operators
/// find in HSM manuals and forums; cryptoki's `Debug` gives the CamelCase form.
fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    if !camel.chars().all(|c| c.is_ascii_alphanumeric()) {
        return camel; // vendor-defined values carry a number: keep cryptoki's form
    }
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Where distributions install p11-kit's proxy module, which aws_signing_helper loads when no
/// module is given (it offers every module p11-kit is configured with).
pub const P11_KIT_PROXY_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
    "/usr/lib/p11-kit-proxy.so",
];

/// The module to load: the URI's `module-path`, else `--pkcs11-lib` / `HYBRIDBOOT_PKCS11_LIB`,
/// else p11-kit's proxy (as aws_signing_helper).
fn module_path(uri: &Pkcs11Uri, opts: &KeyOptions) -> Result<PathBuf, KeyError> {
    module_path_with(uri, opts, P11_KIT_PROXY_PATHS)
}

/// [`module_path`] with the places p11-kit's proxy may be.
fn module_path_with(
    uri: &Pkcs11Uri,
    opts: &KeyOptions,
    proxy_paths: &[&str],
) -> Result<PathBuf, KeyError> {
    let given = uri.module_path.clone().or_else(|| opts.pkcs11_lib.clone());
    let path = match given {
        Some(p) => p,
        None => proxy_paths
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| KeyError::BadReference {
                reference: uri.to_string(),
                reason: format!(
                    "no PKCS#11 module given and p11-kit's proxy (the default, as aws_signing_helper) is not installed ({}): install p11-kit's modules package, add ?module-path=/path/to/module.so to the URI, or pass --pkcs11-lib / set HYBRIDBOOT_PKCS11_LIB",
                    proxy_paths.join(", ")
                ),
            })?,
    };
    if uri.module_path.is_none() && opts.pkcs11_lib.is_none() {
        log::debug!(
            "no PKCS#11 module given: using p11-kit's proxy {}",
            path.display()
        );
    }
    if !path.is_file() {
        return Err(KeyError::backend(
            format!("PKCS#11 module {}", path.display()),
            "no such file (check --pkcs11-lib, HYBRIDBOOT_PKCS11_LIB or the URI's module-path)",
        ));
    }
    Ok(path)
}

/// Loads and initialises a module once per process. Modules stay loaded until exit: unloading an
/// initialised module (or finalising it while another key still uses it) breaks other users.
fn context(module: &Path) -> Result<Pkcs11, KeyError> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = loaded.get(module) {
        return Ok(ctx.clone());
    }
    let what = || format!("loading PKCS#11 module {}", module.display());
    let ctx = Pkcs11::new(module).map_err(|e| ck(what(), e))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another part of the process (or a library it uses) initialised the module already.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck(what(), e)),
    }
    loaded.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The slot holding the token with this label.
fn find_token(ctx: &Pkcs11, label: &str, module: &Path) -> Result<Slot, KeyError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| ck(format!("listing PKCS#11 tokens in {}", module.display()), e))?;
    let mut labels = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        match ctx.get_token_info(slot) {
            // SoftHSM (and card readers) show a free, uninitialised token: not a candidate.
            Ok(info) if !info.token_initialized() => {}
            Ok(info) => {
                if info.label() == label {
                    found.push(slot);
                }
                labels.push(info.label().to_string());
            }
            Err(e) => log::debug!("skipping PKCS#11 slot {slot}: {e}"),
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(KeyError::TokenNotFound {
            label: label.to_string(),
            module: module.display().to_string(),
            available: available_labels(&labels),
        }),
        many => Err(KeyError::backend(
            format!("PKCS#11 module {}", module.display()),
            format!(
                "{} tokens are labelled {label:?}: relabel all but one so that the node key is unambiguous",
                many.len()
            ),
        )),
    }
}

/// The token labels present, for the "token not found" message.
fn available_labels(labels: &[String]) -> String {
    if labels.is_empty() {
        return "none; initialise one, e.g. softhsm2-util --init-token --free --label <label>"
            .into();
    }
    labels
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user PIN: `pin-source` file, else `pin-value`, else `HYBRIDBOOT_PKCS11_PIN`.
fn resolve_pin(uri: &Pkcs11Uri, opts: &KeyOptions) -> Result<Option<Secret>, KeyError> {
    match &uri.pin {
        Some(PinSource::File(path)) => {
            let pin = Secret::from_file(path).map_err(|e| {
                KeyError::io(
                    format!(
                        "reading the PKCS#11 PIN file {} (pin-source)",
                        path.display()
                    ),
                    e,
                )
            })?;
            warn_if_exposed(path);
            Ok(Some(pin))
        }
        Some(PinSource::Value(pin)) => Ok(Some(pin.clone())),
        None => Ok(opts.pkcs11_pin.clone()),
    }
}

/// Warns when other users can read the PIN file (a warning, not an error: the PIN alone does not
/// give the key away, but it should be as private as the token).
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "PKCS#11 PIN file {} is readable by group or others (mode {mode:o}): run chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
}

fn login(session: &Session, token: &str, pin: &Secret) -> Result<(), KeyError> {
    // AuthPin zeroizes its copy on drop; `pin` is a zeroizing Secret.
    let auth = AuthPin::new(pin.expose().into());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) => Ok(()),
        // Another key of this process on the same token logged the application in already.
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(KeyError::WrongPin {
            label: token.to_string(),
        }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(KeyError::backend(
            format!("PKCS#11 token {token:?}"),
            "the user PIN is locked after too many wrong attempts: unlock it with the SO PIN",
        )),
        Err(e) => Err(ck(format!("logging in to PKCS#11 token {token:?}"), e)),
    }
}

/// The DER certificate a PKCS#11 URI names (aws_signing_helper's `--certificate pkcs11:...`):
/// exactly one certificate object with the URI's label and/or id. A PIN is used when the URI
/// or the environment gives one; certificates are normally readable without.
pub fn read_certificate(uri: &Pkcs11Uri, opts: &KeyOptions) -> Result<Vec<u8>, KeyError> {
    let target = Target::new(uri, opts)?;
    let reference = &target.reference;
    let (_ctx, session) = target.connect(false, false)?;
    let mut template = vec![Attribute::Class(ObjectClass::CERTIFICATE)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session.find_objects(&template).map_err(|e| {
        ck(
            format!("searching the token for certificate {reference}"),
            e,
        )
    })?;
    let object = match found.as_slice() {
        [] => {
            return Err(KeyError::backend(
                format!("certificate {reference}"),
                "no certificate object with this label/id on the token (store it with pkcs11-tool --write-object cert.der --type cert, or give the certificate as a file)",
            ))
        }
        [one] => *one,
        many => {
            return Err(KeyError::BadReference {
                reference: reference.clone(),
                reason: format!(
                    "{} certificates on the token match: add id= (CKA_ID) to name one",
                    many.len()
                ),
            })
        }
    };
    session
        .get_attributes(object, &[AttributeType::Value])
        .map_err(|e| ck(format!("reading certificate {reference}"), e))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) if !v.is_empty() => Some(v),
            _ => None,
        })
        .ok_or_else(|| {
            KeyError::backend(
                format!("reading certificate {reference}"),
                "the certificate object has no CKA_VALUE",
            )
        })
}

/// Whether the token signs with the SHA-256 variant of the key's mechanism (for the
/// per-signature login, which sends the data in parts). A token that cannot say has none.
/// (Asked for the one mechanism: cryptoki logs an error for every vendor mechanism a full
/// list holds.)
fn lists_hash_mechanism(ctx: &Pkcs11, session: &Session, algorithm: Algorithm) -> bool {
    let wanted = match algorithm {
        Algorithm::EcdsaP256 => MechanismType::ECDSA_SHA256,
        Algorithm::Rsa2048 => MechanismType::SHA256_RSA_PKCS,
    };
    session
        .get_session_info()
        .and_then(|info| ctx.get_mechanism_info(info.slot_id(), wanted))
        .map(|info| info.sign())
        .unwrap_or_else(|e| {
            log::debug!("the token has no {wanted}: {e}");
            false
        })
}

/// `key delete` of a token object: every object with the URI's CKA_LABEL and/or CKA_ID (the
/// private key, its public key, a certificate stored beside them), described, and destroyed
/// when `confirm`. (The URI parser refuses a URI naming neither label nor id, which would
/// match the whole token.)
pub fn delete(uri: &Pkcs11Uri, opts: &KeyOptions, confirm: bool) -> Result<Vec<String>, KeyError> {
    let reference = uri.to_string();
    let target = Target::new(uri, opts)?;
    let (_ctx, session) = target.connect(true, true)?;
    let mut template = Vec::new();
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&template)
        .map_err(|e| ck(format!("searching the token for {reference}"), e))?;
    if found.is_empty() {
        return Err(KeyError::NotFound { reference });
    }
    let mut described = Vec::new();
    for object in &found {
        described.push(describe_object(&session, *object, &reference)?);
    }
    if confirm {
        for (object, what) in found.iter().zip(&described) {
            session
                .destroy_object(*object)
                .map_err(|e| ck(format!("deleting {what}"), e))?;
            log::info!("deleted {what}");
        }
    }
    Ok(described)
}

/// One token object in words: class, key type, label, id.
fn describe_object(
    session: &Session,
    object: ObjectHandle,
    reference: &str,
) -> Result<String, KeyError> {
    let attrs = session
        .get_attributes(
            object,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::EcParams,
                AttributeType::ModulusBits,
                AttributeType::Modulus,
            ],
        )
        .map_err(|e| ck(format!("reading the attributes of {reference}"), e))?;
    let (mut class, mut kind, mut label, mut id) = (None, None, String::new(), String::new());
    let (mut params, mut bits) = (None, None);
    for a in attrs {
        match a {
            Attribute::Class(c) => class = Some(c),
            Attribute::KeyType(t) => kind = Some(t),
            Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
            Attribute::Id(v) => id = hex::encode(v),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::ModulusBits(b) => bits = Some(u64::from(b)),
            Attribute::Modulus(m) if bits.is_none() && !m.is_empty() => {
                bits = Some(m.len() as u64 * 8)
            }
            _ => {}
        }
    }
    let class = match class {
        Some(c) if c == ObjectClass::PRIVATE_KEY => "private key".to_string(),
        Some(c) if c == ObjectClass::PUBLIC_KEY => "public key".to_string(),
        Some(c) if c == ObjectClass::CERTIFICATE => "certificate".to_string(),
        Some(c) => format!("object of class {c}"),
        None => "object".to_string(),
    };
    let kind = match kind {
        Some(t) if t == KeyType::EC => format!(" EC {}", curve_name(params.as_deref())),
        Some(t) if t == KeyType::RSA => match bits {
            Some(b) => format!(" RSA {b}-bit"),
            None => " RSA".to_string(),
        },
        Some(t) => format!(" {t}"),
        None => String::new(),
    };
    Ok(format!("PKCS#11 {class}{kind} label {label:?} id {id:?}"))
}

/// Search template for the private key: CKA_LABEL and/or CKA_ID, class private key.
fn private_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        t.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

/// At most one object matching `template`; several is an error (the URI must be unambiguous).
fn find_one(
    session: &Session,
    template: &[Attribute],
    reference: &str,
) -> Result<Option<ObjectHandle>, KeyError> {
    let found = session
        .find_objects(template)
        .map_err(|e| ck(format!("searching the token for {reference}"), e))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(KeyError::BadReference {
            reference: reference.to_string(),
            reason: format!(
                "{} private keys on the token match: add id= (CKA_ID) to name one",
                many.len()
            ),
        }),
    }
}

/// Generates a non-extractable, sensitive signing key pair on the token; returns the private key.
fn generate(
    session: &Session,
    uri: &Pkcs11Uri,
    alg: Algorithm,
    reference: &str,
) -> Result<ObjectHandle, KeyError> {
    let id = match &uri.id {
        Some(id) => id.clone(),
        None => random_id()?,
    };
    let mut common = vec![Attribute::Token(true), Attribute::Id(id)];
    if let Some(label) = &uri.object {
        common.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    let mut public = common.clone();
    public.extend([
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
    ]);
    let mut private = common;
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
    let mechanism = match alg {
        Algorithm::EcdsaP256 => {
            public.push(Attribute::EcParams(P256_EC_PARAMS.to_vec()));
            Mechanism::EccKeyPairGen
        }
        Algorithm::Rsa2048 => {
            public.extend([
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ]);
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    let (_, private) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| ck(format!("generating {alg} key {reference} on the token"), e))?;
    Ok(private)
}

fn random_id() -> Result<Vec<u8>, KeyError> {
    use rand_core::RngCore;
    let mut id = vec![0u8; GENERATED_ID_LEN];
    rand_core::OsRng
        .try_fill_bytes(&mut id)
        .map_err(|e| KeyError::backend("generating a CKA_ID for the new key", e))?;
    Ok(id)
}

/// The algorithm and DER SPKI of a private key, and whether it needs the PIN for every
/// signature (`CKA_ALWAYS_AUTHENTICATE`), from the key itself where the token exposes the
/// public parts there, else from the matching public key object.
fn read_public(
    session: &Session,
    private: ObjectHandle,
    reference: &str,
) -> Result<(Algorithm, Vec<u8>, bool), KeyError> {
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::KeyType,
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::EcParams,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::AlwaysAuthenticate,
            ],
        )
        .map_err(|e| ck(format!("reading the attributes of {reference}"), e))?;
    let mut key_type = None;
    let (mut id, mut label, mut params, mut modulus, mut exponent) = (None, None, None, None, None);
    let mut always_auth = false;
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Id(v) if !v.is_empty() => id = Some(v),
            Attribute::Label(v) if !v.is_empty() => label = Some(v),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::Modulus(v) if !v.is_empty() => modulus = Some(v),
            Attribute::PublicExponent(v) if !v.is_empty() => exponent = Some(v),
            Attribute::AlwaysAuthenticate(true) => always_auth = true,
            _ => {}
        }
    }
    let unsupported = |detail: String| KeyError::Unsupported {
        reference: reference.to_string(),
        detail,
    };
    match key_type {
        Some(t) if t == KeyType::EC => {
            if params.as_deref() != Some(P256_EC_PARAMS) {
                return Err(unsupported(format!(
                    "EC key on {}",
                    curve_name(params.as_deref())
                )));
            }
            let public = find_public(session, KeyType::EC, id, label, reference)?;
            let point = session
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(|e| ck(format!("reading the public key of {reference}"), e))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or_else(|| {
                    KeyError::backend(
                        format!("reading the public key of {reference}"),
                        "the public key object has no CKA_EC_POINT",
                    )
                })?;
            let (x, y) = ec_point_xy(&point).map_err(|detail| {
                KeyError::backend(format!("reading the public key of {reference}"), detail)
            })?;
            Ok((
                Algorithm::EcdsaP256,
                super::p256_spki_from_xy(x, y)?,
                always_auth,
            ))
        }
        Some(t) if t == KeyType::RSA => {
            // RSA private key objects carry the modulus and public exponent; fall back to the
            // public object for tokens that hide them.
            let (n, e) = match (modulus, exponent) {
                (Some(n), Some(e)) => (n, e),
                _ => {
                    let public = find_public(session, KeyType::RSA, id, label, reference)?;
                    rsa_parts(session, public, reference)?
                }
            };
            let spki = super::rsa_spki_from_parts(&n, &e)?;
            // Reject other sizes with the same wording as every other backend.
            super::spki_algorithm(&spki, reference)?;
            Ok((Algorithm::Rsa2048, spki, always_auth))
        }
        Some(t) => Err(unsupported(format!("PKCS#11 key type {t}"))),
        None => Err(unsupported("the token does not report CKA_KEY_TYPE".into())),
    }
}

fn rsa_parts(
    session: &Session,
    public: ObjectHandle,
    reference: &str,
) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let (mut n, mut e) = (None, None);
    for a in session
        .get_attributes(
            public,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| ck(format!("reading the public key of {reference}"), e))?
    {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    match (n, e) {
        (Some(n), Some(e)) if !n.is_empty() => Ok((n, e)),
        _ => Err(KeyError::backend(
            format!("reading the public key of {reference}"),
            "the public key object has no CKA_MODULUS / CKA_PUBLIC_EXPONENT",
        )),
    }
}

/// The public key object that belongs to a private key: same CKA_ID (the PKCS#11 convention), else
/// same CKA_LABEL.
fn find_public(
    session: &Session,
    key_type: KeyType,
    id: Option<Vec<u8>>,
    label: Option<Vec<u8>>,
    reference: &str,
) -> Result<ObjectHandle, KeyError> {
    let base = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(key_type),
    ];
    let mut candidates = Vec::new();
    match (&id, &label) {
        (Some(id), Some(label)) => {
            candidates.push(vec![
                Attribute::Id(id.clone()),
                Attribute::Label(label.clone()),
            ]);
            candidates.push(vec![Attribute::Id(id.clone())]);
        }
        (Some(id), None) => candidates.push(vec![Attribute::Id(id.clone())]),
        (None, Some(label)) => candidates.push(vec![Attribute::Label(label.clone())]),
        (None, None) => {}
    }
    for extra in candidates {
        let mut template = base.clone();
        template.extend(extra);
        let found = session
            .find_objects(&template)
            .map_err(|e| ck(format!("searching the public key of {reference}"), e))?;
        if let [one] = found.as_slice() {
            return Ok(*one);
        }
    }
    Err(KeyError::backend(
        format!("reading the public key of {reference}"),
        "no single public key object with the private key's CKA_ID / CKA_LABEL on the token (import the public key with the same id)",
    ))
}

/// A readable name for `CKA_EC_PARAMS` (a named-curve OID, normally) in error messages.
fn curve_name(params: Option<&[u8]>) -> String {
    use der::Decode;
    let Some(params) = params else {
        return "an unknown curve (no CKA_EC_PARAMS)".into();
    };
    match const_oid::ObjectIdentifier::from_der(params) {
        Ok(oid) => match const_oid::db::DB.by_oid(&oid) {
            Some(name) => format!("curve {name} ({oid})"),
            None => format!("curve {oid}"),
        },
        Err(_) => format!("explicit curve parameters {}", hex::encode(params)),
    }
}

/// The affine coordinates of an uncompressed P-256 point as `CKA_EC_POINT` gives it: a DER
/// OCTET STRING around `04||X||Y` (PKCS#11 2.40), or the bare point (some older tokens).
fn ec_point_xy(point: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let raw = match point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        [0x04, rest @ ..] if rest.len() == 64 => point,
        _ => {
            return Err(format!(
                "CKA_EC_POINT of {} bytes is not an uncompressed P-256 point",
                point.len()
            ))
        }
    };
    if raw[0] != 0x04 {
        return Err("CKA_EC_POINT is not an uncompressed point".into());
    }
    Ok((&raw[1..33], &raw[33..65]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_wrapped_and_bare() {
        let mut bare = vec![0x04];
        bare.extend((1..=64).collect::<Vec<u8>>());
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&bare);
        for p in [&bare, &wrapped] {
            let (x, y) = ec_point_xy(p).unwrap();
            assert_eq!(x, &bare[1..33]);
            assert_eq!(y, &bare[33..]);
        }
        // Compressed point, truncated input, wrapped non-uncompressed point.
        assert!(ec_point_xy(&[0x02; 33]).is_err());
        assert!(ec_point_xy(&wrapped[..40]).is_err());
        let mut odd = wrapped.clone();
        odd[2] = 0x03;
        assert!(ec_point_xy(&odd).is_err());
    }

    #[test]
    fn ec_params_are_the_p256_oid() {
        use der::Encode;
        let der = const_oid::db::rfc5912::SECP_256_R_1.to_der().unwrap();
        assert_eq!(der, P256_EC_PARAMS);
    }

    #[test]
    fn return_values_use_specification_names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::ObjectHandleInvalid),
            "CKR_OBJECT_HANDLE_INVALID"
        );
        let e = ck(
            "signing",
            CkError::Pkcs11(
                RvError::MechanismInvalid,
                cryptoki::context::Function::SignInit,
            ),
        );
        assert_eq!(
            e.to_string(),
            "signing: C_SignInit failed: CKR_MECHANISM_INVALID"
        );
    }

    #[test]
    fn curve_names_for_errors() {
        // secp384r1, as SoftHSM stores it for pkcs11-tool --key-type EC:secp384r1.
        let p384 = hex::decode("06052b81040022").unwrap();
        assert_eq!(curve_name(Some(&p384)), "curve secp384r1 (1.3.132.0.34)");
        assert!(curve_name(Some(&[0x30, 0x00])).starts_with("explicit"));
        assert!(curve_name(None).contains("no CKA_EC_PARAMS"));
    }

    #[test]
    fn digest_info_prefix_is_sha256() {
        // DigestInfo ::= SEQUENCE { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING(32) }
        use der::Encode;
        let oid = const_oid::db::rfc5912::ID_SHA_256.to_der().unwrap();
        assert_eq!(&SHA256_DIGEST_INFO_PREFIX[4..4 + oid.len()], &oid[..]);
        assert_eq!(SHA256_DIGEST_INFO_PREFIX.len() + 32, 0x33);
        assert_eq!(SHA256_DIGEST_INFO_PREFIX[1] as usize + 2, 0x33);
    }

    #[test]
    fn missing_module_is_a_clear_error() {
        let uri = Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-value=s3cr3t-77").unwrap();
        let absent = ["/nonexistent/p11-kit-proxy.so"];
        let err = module_path_with(&uri, &KeyOptions::default(), &absent).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--pkcs11-lib"), "{text}");
        assert!(
            text.contains("p11-kit's proxy") && text.contains(absent[0]),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
        // The proxy, where installed, is the default (as aws_signing_helper).
        let proxy = tempfile::NamedTempFile::new().unwrap();
        let proxy_path = proxy.path().to_str().unwrap();
        assert_eq!(
            module_path_with(&uri, &KeyOptions::default(), &[absent[0], proxy_path]).unwrap(),
            proxy.path()
        );
        let opts = KeyOptions {
            pkcs11_lib: Some("/nonexistent/libnothing.so".into()),
            ..Default::default()
        };
        let text = module_path(&uri, &opts).unwrap_err().to_string();
        assert!(text.contains("/nonexistent/libnothing.so"), "{text}");
    }

    #[test]
    fn pin_precedence_file_then_value_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = KeyOptions {
            pkcs11_pin: Some(Secret::new("from-env")),
            ..Default::default()
        };
        let with_file = Pkcs11Uri::parse(&format!(
            "pkcs11:token=t;object=k?pin-source=file:{}",
            file.display()
        ))
        .unwrap();
        let pin = resolve_pin(&with_file, &env).unwrap().unwrap();
        assert_eq!(pin.expose(), "from-file");
        let with_value = Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-value=from-uri").unwrap();
        let pin = resolve_pin(&with_value, &env).unwrap().unwrap();
        assert_eq!(pin.expose(), "from-uri");
        let bare = Pkcs11Uri::parse("pkcs11:token=t;object=k").unwrap();
        assert_eq!(
            resolve_pin(&bare, &env).unwrap().unwrap().expose(),
            "from-env"
        );
        assert!(resolve_pin(&bare, &KeyOptions::default())
            .unwrap()
            .is_none());
        let missing =
            Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-source=file:/nonexistent/pin").unwrap();
        let err = resolve_pin(&missing, &env).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/pin"), "{err}");
    }
}
