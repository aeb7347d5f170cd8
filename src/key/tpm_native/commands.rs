//! Pure TPM 2.0 logic for the native backend: command frames (marshalled by `tpm2-protocol`),
//! response parsing, the key templates, public-area-to-SPKI conversion, signature conversion and
//! readable response codes. No I/O here, so all of it is unit-tested on bytes.
//!
//! Responses are untrusted input: every parse returns an error instead of panicking, whatever
//! the bytes.

use std::fmt;

use tpm2_protocol::basic::{TpmHandle, TpmList, TpmUint16, TpmUint32};
use tpm2_protocol::data::{
    Tpm2bAuth, Tpm2bDigest, Tpm2bPrivate, Tpm2bPublic, Tpm2bSensitiveCreate, TpmAlgId, TpmCc,
    TpmEccCurve, TpmRh, TpmSt, TpmaObject, TpmaSession, TpmsAuthCommand, TpmsEccParms,
    TpmsEccPoint, TpmsRsaParms, TpmsSchemeHash, TpmsSensitiveCreate, TpmtEccScheme, TpmtKdfScheme,
    TpmtPublic, TpmtRsaScheme, TpmtSigScheme, TpmtSignature, TpmtSymDef, TpmtTkHashcheck,
    TpmuAsymScheme, TpmuKdfScheme, TpmuPublicId, TpmuPublicParms, TpmuSigScheme, TpmuSignature,
    TpmuSymKeyBits, TpmuSymMode,
};
use tpm2_protocol::frame::{tpm_marshal_command, TpmFrame, TpmResponse, TpmUnmarshalBody};
use tpm2_protocol::{TpmMarshal, TpmUnmarshal, TpmWriter};
use zeroize::Zeroizing;

use super::super::Algorithm;
use super::transport::{HEADER_LEN, MAX_RESPONSE};

/// `TPM_RH_OWNER`: the owner (storage) hierarchy.
pub const RH_OWNER: u32 = 0x4000_0001;
/// `TPM_RS_PW`: the password authorization "session".
pub const RS_PW: u32 = 0x4000_0009;
/// Response code of a command naming a handle with no object behind it (handle 1).
pub const RC_HANDLE_1: u32 = 0x18b;
/// `TPM_RC_NV_DEFINED`: the persistent handle is already taken.
pub const RC_NV_DEFINED: u32 = 0x14c;
/// `TPM_RC_INITIALIZE`: the TPM has not received TPM2_Startup.
pub const RC_INITIALIZE: u32 = 0x100;

/// A failure of one TPM command, before it is turned into a [`super::super::KeyError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmCallError {
    /// The TPM answered with a non-zero response code.
    Rc(u32),
    /// The response could not be parsed (or the command could not be marshalled).
    Malformed(String),
}

impl fmt::Display for TpmCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TpmCallError::Rc(rc) => f.write_str(&describe_rc(*rc)),
            TpmCallError::Malformed(m) => write!(f, "malformed TPM response: {m}"),
        }
    }
}

/// A password authorization (TPM_RS_PW) for one handle. The password is the object's auth value
/// (empty for the owner hierarchy by default and for keys created without one).
pub fn password_session(password: &[u8]) -> Result<TpmsAuthCommand, TpmCallError> {
    let hmac = Tpm2bAuth::try_from(password).map_err(|_| {
        TpmCallError::Malformed(format!(
            "an auth value of {} bytes is longer than the TPM allows (64)",
            password.len()
        ))
    })?;
    Ok(TpmsAuthCommand {
        session_handle: TpmHandle::new(RS_PW),
        nonce: Default::default(),
        session_attributes: TpmaSession::CONTINUE_SESSION,
        hmac,
    })
}

/// Marshals a command frame. The buffer is zeroized on drop because it may carry passwords.
pub fn build_command<C: TpmFrame>(
    command: &C,
    sessions: &[TpmsAuthCommand],
) -> Result<Zeroizing<Vec<u8>>, TpmCallError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_RESPONSE]);
    let tag = if sessions.is_empty() {
        TpmSt::NoSessions
    } else {
        TpmSt::Sessions
    };
    let len = {
        let mut w = TpmWriter::new(&mut buf[..]);
        tpm_marshal_command(command, tag, sessions, &mut w)
            .map_err(|e| TpmCallError::Malformed(format!("marshalling {:?}: {e}", command.cc())))?;
        w.len()
    };
    buf.truncate(len);
    Ok(buf)
}

/// The response code of a response frame, checking only the header.
pub fn response_code(frame: &[u8]) -> Result<u32, TpmCallError> {
    if frame.len() < HEADER_LEN {
        return Err(TpmCallError::Malformed(format!(
            "{} bytes is shorter than a response header",
            frame.len()
        )));
    }
    let tag = u16::from_be_bytes([frame[0], frame[1]]);
    if tag != 0x8001 && tag != 0x8002 {
        return Err(TpmCallError::Malformed(format!(
            "response tag 0x{tag:04x} is neither TPM_ST_NO_SESSIONS nor TPM_ST_SESSIONS"
        )));
    }
    let size = u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]) as usize;
    if size != frame.len() {
        return Err(TpmCallError::Malformed(format!(
            "response declares {size} bytes but has {}",
            frame.len()
        )));
    }
    Ok(u32::from_be_bytes([frame[6], frame[7], frame[8], frame[9]]))
}

/// Parses a response frame into the typed response `R`, or the TPM's error code.
pub fn parse_response<R: TpmUnmarshalBody>(frame: &[u8]) -> Result<R, TpmCallError> {
    let rc = response_code(frame)?;
    if rc != 0 {
        return Err(TpmCallError::Rc(rc));
    }
    let view = TpmResponse::cast(frame)
        .map_err(|e| TpmCallError::Malformed(format!("{:?} response: {e}", R::CC)))?;
    view.unmarshal::<R>()
        .map_err(|e| TpmCallError::Malformed(format!("{:?} response: {e}", R::CC)))
}

fn sym_null() -> TpmtSymDef {
    TpmtSymDef {
        algorithm: TpmAlgId::Null,
        key_bits: TpmuSymKeyBits::Null,
        mode: TpmuSymMode::Null,
    }
}

fn sha256_scheme() -> TpmuAsymScheme {
    TpmuAsymScheme::Hash(TpmsSchemeHash {
        hash_alg: TpmAlgId::Sha256,
    })
}

/// The storage root key template: ECC P-256, restricted decrypt, AES-128-CFB, SHA-256 name, no
/// DA, empty unique. This is the TCG provisioning-guidance SRK and exactly the primary
/// tpm2-openssl derives for TSS2 keys whose parent is TPM_RH_OWNER; with tpm2-tools it is
/// `tpm2_createprimary -C o -g sha256 -G ecc256:aes128cfb -a
/// 'restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda'` (tpm2-tools'
/// default attributes lack `noda`, which derives a different primary).
pub fn srk_template() -> TpmtPublic {
    TpmtPublic {
        object_type: TpmAlgId::Ecc,
        name_alg: TpmAlgId::Sha256,
        object_attributes: TpmaObject::FIXED_TPM
            | TpmaObject::FIXED_PARENT
            | TpmaObject::SENSITIVE_DATA_ORIGIN
            | TpmaObject::USER_WITH_AUTH
            | TpmaObject::NO_DA
            | TpmaObject::RESTRICTED
            | TpmaObject::DECRYPT,
        auth_policy: Tpm2bDigest::new(),
        parameters: TpmuPublicParms::Ecc(TpmsEccParms {
            symmetric: TpmtSymDef {
                algorithm: TpmAlgId::Aes,
                key_bits: TpmuSymKeyBits::Aes(TpmUint16::new(128)),
                mode: TpmuSymMode::Aes(TpmAlgId::Cfb),
            },
            scheme: TpmtEccScheme {
                scheme: TpmAlgId::Null,
                details: TpmuAsymScheme::Null,
            },
            curve_id: TpmEccCurve::NistP256,
            kdf: TpmtKdfScheme {
                scheme: TpmAlgId::Null,
                details: TpmuKdfScheme::Null,
            },
        }),
        unique: TpmuPublicId::Ecc(TpmsEccPoint::default()),
    }
}

/// Attributes of a node signing key: it never leaves this TPM, was generated inside it, and
/// signs with a password (empty by default) authorization.
pub fn signing_key_attributes() -> TpmaObject {
    TpmaObject::FIXED_TPM
        | TpmaObject::FIXED_PARENT
        | TpmaObject::SENSITIVE_DATA_ORIGIN
        | TpmaObject::USER_WITH_AUTH
        | TpmaObject::SIGN_ENCRYPT
}

/// The template of a node signing key: ECDSA-SHA256 on P-256, or RSASSA-SHA256 with 2048 bits.
pub fn signing_key_template(alg: Algorithm) -> TpmtPublic {
    let (object_type, parameters, unique) = match alg {
        Algorithm::EcdsaP256 => (
            TpmAlgId::Ecc,
            TpmuPublicParms::Ecc(TpmsEccParms {
                symmetric: sym_null(),
                scheme: TpmtEccScheme {
                    scheme: TpmAlgId::Ecdsa,
                    details: sha256_scheme(),
                },
                curve_id: TpmEccCurve::NistP256,
                kdf: TpmtKdfScheme {
                    scheme: TpmAlgId::Null,
                    details: TpmuKdfScheme::Null,
                },
            }),
            TpmuPublicId::Ecc(TpmsEccPoint::default()),
        ),
        Algorithm::Rsa2048 => (
            TpmAlgId::Rsa,
            TpmuPublicParms::Rsa(TpmsRsaParms {
                symmetric: sym_null(),
                scheme: TpmtRsaScheme {
                    scheme: TpmAlgId::Rsassa,
                    details: sha256_scheme(),
                },
                key_bits: TpmUint16::new(2048),
                exponent: TpmUint32::new(0),
            }),
            TpmuPublicId::Rsa(Default::default()),
        ),
    };
    TpmtPublic {
        object_type,
        name_alg: TpmAlgId::Sha256,
        object_attributes: signing_key_attributes(),
        auth_policy: Tpm2bDigest::new(),
        parameters,
        unique,
    }
}

/// The sensitive-create part of a new object: its auth value, no data.
pub fn sensitive_create(user_auth: &[u8]) -> Result<Tpm2bSensitiveCreate, TpmCallError> {
    let user_auth = Tpm2bAuth::try_from(user_auth)
        .map_err(|_| TpmCallError::Malformed("auth value longer than 64 bytes".into()))?;
    Ok(Tpm2bSensitiveCreate {
        inner: TpmsSensitiveCreate {
            user_auth,
            data: Default::default(),
        },
    })
}

/// Wraps a public area for a command.
pub fn tpm2b_public(inner: TpmtPublic) -> Tpm2bPublic {
    Tpm2bPublic { inner }
}

/// The signing scheme to request for a key's algorithm (explicit, so keys created without a
/// scheme, as `tpm2_create -G ecc256` makes them, sign too).
pub fn sig_scheme(alg: Algorithm) -> TpmtSigScheme {
    TpmtSigScheme {
        scheme: match alg {
            Algorithm::EcdsaP256 => TpmAlgId::Ecdsa,
            Algorithm::Rsa2048 => TpmAlgId::Rsassa,
        },
        details: TpmuSigScheme::Hash(TpmsSchemeHash {
            hash_alg: TpmAlgId::Sha256,
        }),
    }
}

/// The "null" hash-check ticket: fine for unrestricted signing keys, which is all we sign with.
pub fn null_hashcheck() -> TpmtTkHashcheck {
    TpmtTkHashcheck {
        tag: TpmSt::HashCheck,
        hierarchy: TpmRh::Null,
        digest: Tpm2bDigest::new(),
    }
}

/// A digest as a TPM2B.
pub fn digest(d: &[u8; 32]) -> Tpm2bDigest {
    // 32 bytes always fit a 64-byte TPM2B_DIGEST.
    Tpm2bDigest::try_from(&d[..]).unwrap_or_default()
}

/// What a public area says about a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPublic {
    pub algorithm: Algorithm,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    pub attributes: u32,
}

/// Why a public area is not a usable node key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotASigningKey(pub String);

/// Reads the algorithm and public key from a public area, refusing anything that cannot sign
/// SHA-256 digests as ECDSA P-256 or RSA-2048 with a null ticket.
pub fn key_public(public: &TpmtPublic) -> Result<KeyPublic, NotASigningKey> {
    let attrs = public.object_attributes;
    if !attrs.contains(TpmaObject::SIGN_ENCRYPT) {
        return Err(NotASigningKey(
            "the object is not a signing key (no sign attribute)".into(),
        ));
    }
    if attrs.contains(TpmaObject::RESTRICTED) {
        return Err(NotASigningKey(
            "the key is a restricted signing key (attestation key); it cannot sign external data"
                .into(),
        ));
    }
    let (algorithm, spki) = match (&public.parameters, &public.unique) {
        (TpmuPublicParms::Ecc(p), TpmuPublicId::Ecc(point)) => {
            if p.curve_id != TpmEccCurve::NistP256 {
                return Err(NotASigningKey(format!(
                    "EC key on curve {:?}, not NIST P-256",
                    p.curve_id
                )));
            }
            check_scheme(p.scheme.scheme, &p.scheme.details, TpmAlgId::Ecdsa)?;
            let spki = super::super::p256_spki_from_xy(&point.x, &point.y)
                .map_err(|e| NotASigningKey(e.to_string()))?;
            (Algorithm::EcdsaP256, spki)
        }
        (TpmuPublicParms::Rsa(p), TpmuPublicId::Rsa(n)) => {
            if p.key_bits.value() != 2048 || n.len() != 256 {
                return Err(NotASigningKey(format!(
                    "RSA key of {} bits, not 2048",
                    p.key_bits.value()
                )));
            }
            check_scheme(p.scheme.scheme, &p.scheme.details, TpmAlgId::Rsassa)?;
            let e = p.exponent.value();
            let e = if e == 0 { 65537 } else { e };
            let spki = super::super::rsa_spki_from_parts(n, &e.to_be_bytes())
                .map_err(|e| NotASigningKey(e.to_string()))?;
            (Algorithm::Rsa2048, spki)
        }
        _ => {
            return Err(NotASigningKey(format!(
                "object type {:?} is neither ECC nor RSA",
                public.object_type
            )))
        }
    };
    Ok(KeyPublic {
        algorithm,
        spki,
        attributes: attrs.bits(),
    })
}

/// A key's own scheme must be empty (we pick per signature) or the one we use with SHA-256.
fn check_scheme(
    scheme: TpmAlgId,
    details: &TpmuAsymScheme,
    wanted: TpmAlgId,
) -> Result<(), NotASigningKey> {
    if scheme == TpmAlgId::Null {
        return Ok(());
    }
    let hash_ok = matches!(details, TpmuAsymScheme::Hash(h) if h.hash_alg == TpmAlgId::Sha256);
    if scheme == wanted && hash_ok {
        return Ok(());
    }
    Err(NotASigningKey(format!(
        "the key is bound to scheme {scheme:?} ({details:?}); hybridboot signs with {wanted:?}/SHA-256"
    )))
}

/// Converts a TPM signature to the trait's form: DER ECDSA or the raw PKCS#1 v1.5 signature.
pub fn signature_bytes(sig: &TpmtSignature, alg: Algorithm) -> Result<Vec<u8>, String> {
    match (&sig.signature, alg) {
        (TpmuSignature::Ecdsa(s), Algorithm::EcdsaP256) => {
            super::super::ecdsa_scalars_to_der(&s.signature_r, &s.signature_s)
                .map_err(|e| e.to_string())
        }
        (TpmuSignature::Rsassa(s), Algorithm::Rsa2048) => {
            if s.sig.len() != 256 {
                return Err(format!(
                    "RSA signature of {} bytes, expected 256",
                    s.sig.len()
                ));
            }
            Ok(s.sig.to_vec())
        }
        (other, _) => Err(format!(
            "the TPM returned a {:?} signature for a {alg} key",
            sig_kind(other)
        )),
    }
}

fn sig_kind(s: &TpmuSignature) -> &'static str {
    match s {
        TpmuSignature::Rsassa(_) => "RSASSA",
        TpmuSignature::Rsapss(_) => "RSAPSS",
        TpmuSignature::Ecdsa(_) => "ECDSA",
        TpmuSignature::Ecdaa(_) => "ECDAA",
        TpmuSignature::Sm2(_) => "SM2",
        TpmuSignature::Ecschnorr(_) => "EC-Schnorr",
        TpmuSignature::Hmac(_) => "HMAC",
        TpmuSignature::Null => "null",
    }
}

/// Unmarshals a TPM2B_PUBLIC (as stored in TSS2 PEM files and tpm2-tools `.pub` files), refusing
/// trailing bytes.
pub fn unmarshal_public(bytes: &[u8]) -> Result<Tpm2bPublic, String> {
    let (public, rest) = Tpm2bPublic::unmarshal(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after TPM2B_PUBLIC", rest.len()));
    }
    Ok(public)
}

/// Unmarshals a TPM2B_PRIVATE, refusing trailing bytes.
pub fn unmarshal_private(bytes: &[u8]) -> Result<Tpm2bPrivate, String> {
    let (private, rest) = Tpm2bPrivate::unmarshal(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after TPM2B_PRIVATE", rest.len()));
    }
    if private.is_empty() {
        return Err("empty TPM2B_PRIVATE".into());
    }
    Ok(private)
}

/// Marshals a TPM2B_PUBLIC (for tests and for comparing public areas).
pub fn marshal_public(public: &Tpm2bPublic) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; MAX_RESPONSE];
    let mut w = TpmWriter::new(&mut buf);
    public.marshal(&mut w).map_err(|e| e.to_string())?;
    let n = w.len();
    buf.truncate(n);
    Ok(buf)
}

/// An empty PCR selection (no creation PCRs).
pub fn no_pcrs() -> tpm2_protocol::data::TpmlPcrSelection {
    TpmList::new()
}

/// The name of a command, for error messages.
pub fn command_name(cc: TpmCc) -> String {
    format!("TPM2_{cc:?}")
}

/// The base of a response code: the error number without the handle/parameter/session index.
pub fn rc_base(rc: u32) -> u32 {
    rc_parts(rc).0
}

/// Splits a response code into its base code and the handle/parameter/session it refers to.
fn rc_parts(rc: u32) -> (u32, Option<String>) {
    if rc & 0x80 != 0 {
        // Format one: error number in bits 0-5, then parameter (bit 6) or handle/session number.
        let base = 0x80 | (rc & 0x3f);
        let n = (rc >> 8) & 0xf;
        let which = if rc & 0x40 != 0 {
            Some(format!("parameter {n}"))
        } else if n & 0x8 != 0 {
            Some(format!("session {}", n & 0x7))
        } else if n != 0 {
            Some(format!("handle {n}"))
        } else {
            None
        };
        (base, which)
    } else {
        (rc & 0xfff, None)
    }
}

/// Name and plain-language explanation of the response codes hybridboot can meet.
fn rc_name(base: u32) -> Option<(&'static str, &'static str)> {
    Some(match base {
        0x081 => ("TPM_RC_ASYMMETRIC", "asymmetric algorithm not supported or not correct"),
        0x082 => ("TPM_RC_ATTRIBUTES", "inconsistent object attributes"),
        0x083 => ("TPM_RC_HASH", "hash algorithm not supported or not appropriate"),
        0x084 => ("TPM_RC_VALUE", "value out of range or not correct for the context"),
        0x085 => ("TPM_RC_HIERARCHY", "the hierarchy is disabled or not valid here"),
        0x087 => ("TPM_RC_KEY_SIZE", "key size not supported by this TPM"),
        0x089 => ("TPM_RC_MODE", "mode not supported"),
        0x08a => ("TPM_RC_TYPE", "the object type is wrong for this command"),
        0x08b => ("TPM_RC_HANDLE", "no object at this handle"),
        0x08e => ("TPM_RC_AUTH_FAIL", "wrong authorization value (check --tpm-key-auth-file or the owner password); repeated failures trigger dictionary-attack lockout"),
        0x08f => ("TPM_RC_NONCE", "invalid nonce"),
        0x092 => ("TPM_RC_SCHEME", "signing scheme not supported or not allowed for this key"),
        0x095 => ("TPM_RC_SIZE", "structure is the wrong size"),
        0x096 => ("TPM_RC_SYMMETRIC", "symmetric algorithm not supported"),
        0x097 => ("TPM_RC_TAG", "incorrect structure tag"),
        0x098 => ("TPM_RC_SELECTOR", "union selector is incorrect"),
        0x09a => ("TPM_RC_INSUFFICIENT", "the TPM could not unmarshal a value (input too short)"),
        0x09b => ("TPM_RC_SIGNATURE", "the signature is not valid"),
        0x09c => ("TPM_RC_KEY", "key fields are not compatible with the selected use"),
        0x09d => ("TPM_RC_POLICY_FAIL", "a policy check failed"),
        0x09f => ("TPM_RC_INTEGRITY", "integrity check failed: the key blob does not belong to this TPM or parent key"),
        0x0a0 => ("TPM_RC_TICKET", "invalid ticket"),
        0x0a1 => ("TPM_RC_RESERVED_BITS", "reserved bits not set to zero"),
        0x0a2 => ("TPM_RC_BAD_AUTH", "authorization failure without dictionary-attack implications (wrong auth value)"),
        0x0a6 => ("TPM_RC_CURVE", "curve not supported by this TPM"),
        0x0a7 => ("TPM_RC_ECC_POINT", "point is not on the required curve"),
        0x100 => ("TPM_RC_INITIALIZE", "the TPM has not been started (TPM2_Startup)"),
        0x101 => ("TPM_RC_FAILURE", "the TPM is in failure mode"),
        0x10b => ("TPM_RC_PRIVATE", "this command cannot use a public-only object"),
        0x120 => ("TPM_RC_DISABLED", "the command is disabled"),
        0x124 => ("TPM_RC_AUTH_TYPE", "authorization type not allowed for this handle"),
        0x125 => ("TPM_RC_AUTH_MISSING", "the command needs an authorization session"),
        0x126 => ("TPM_RC_POLICY", "policy failure"),
        0x12e => ("TPM_RC_TOO_MANY_CONTEXTS", "too many saved contexts"),
        0x12f => ("TPM_RC_AUTH_UNAVAILABLE", "the key has no usable authorization (userWithAuth clear, needs a policy)"),
        0x130 => ("TPM_RC_REBOOT", "the TPM needs a reset"),
        0x142 => ("TPM_RC_COMMAND_SIZE", "command size does not match"),
        0x143 => ("TPM_RC_COMMAND_CODE", "command not supported by this TPM"),
        0x144 => ("TPM_RC_AUTHSIZE", "authorization area size is wrong"),
        0x145 => ("TPM_RC_AUTH_CONTEXT", "this command cannot take an authorization session"),
        0x14b => ("TPM_RC_NV_SPACE", "no room in TPM non-volatile memory for another persistent object"),
        0x14c => ("TPM_RC_NV_DEFINED", "the persistent handle is already in use"),
        0x152 => ("TPM_RC_PARENT", "the parent is not a storage key"),
        0x153 => ("TPM_RC_NEEDS_TEST", "the TPM needs a self test"),
        0x155 => ("TPM_RC_SENSITIVE", "the sensitive area did not unmarshal correctly"),
        0x901 => ("TPM_RC_CONTEXT_GAP", "context gap"),
        0x902 => ("TPM_RC_OBJECT_MEMORY", "no room for another transient object (flush with tpm2_flushcontext -t, or use /dev/tpmrm0)"),
        0x903 => ("TPM_RC_SESSION_MEMORY", "no room for another session"),
        0x904 => ("TPM_RC_MEMORY", "the TPM is out of memory"),
        0x905 => ("TPM_RC_SESSION_HANDLES", "no session handle available"),
        0x906 => ("TPM_RC_OBJECT_HANDLES", "no object handle available"),
        0x907 => ("TPM_RC_LOCALITY", "bad locality"),
        0x908 => ("TPM_RC_YIELDED", "the TPM suspended the command; retry"),
        0x909 => ("TPM_RC_CANCELED", "the command was cancelled"),
        0x90a => ("TPM_RC_TESTING", "the TPM is running self tests; retry"),
        0x920 => ("TPM_RC_NV_RATE", "NV writes are rate-limited; retry later"),
        0x921 => ("TPM_RC_LOCKOUT", "the TPM is in dictionary-attack lockout; wait for the lockout to expire or reset it with the lockout authorization (tpm2_dictionarylockout -c)"),
        0x922 => ("TPM_RC_RETRY", "the TPM was busy; retry"),
        0x923 => ("TPM_RC_NV_UNAVAILABLE", "TPM non-volatile memory is unavailable; retry later"),
        _ => return None,
    })
}

/// Whether a response code means "send the same command again" (TPM busy, yielded, testing).
pub fn is_retry_rc(rc: u32) -> bool {
    matches!(rc, 0x908 | 0x90a | 0x922)
}

/// A readable one-line description of a TPM response code, e.g.
/// `TPM_RC_HANDLE (0x18b, handle 1): no object at this handle`.
pub fn describe_rc(rc: u32) -> String {
    let layer = rc >> 16;
    if layer != 0 {
        let who = match layer {
            0x01 => "TSS tpm2-tss",
            0x06 => "the resource manager (tabrmd)",
            0x0a => "the TCTI",
            _ => "a TSS layer",
        };
        return format!("error 0x{rc:08x} from {who}");
    }
    let (base, which) = rc_parts(rc);
    match (rc_name(base), which) {
        (Some((name, text)), Some(w)) => format!("{name} (0x{rc:03x}, {w}): {text}"),
        (Some((name, text)), None) => format!("{name} (0x{rc:03x}): {text}"),
        (None, Some(w)) => format!("TPM error 0x{rc:03x} ({w})"),
        (None, None) => format!("TPM error 0x{rc:03x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tpm2_protocol::frame::{
        TpmCreatePrimaryCommand, TpmReadPublicCommand, TpmReadPublicResponse, TpmSignResponse,
    };

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    #[test]
    fn read_public_command_is_the_standard_frame() {
        let cmd = TpmReadPublicCommand {
            handles: [TpmHandle::new(0x8100_0020)],
        };
        let bytes = build_command(&cmd, &[]).unwrap();
        assert_eq!(&bytes[..], &hex("8001 0000000e 00000173 81000020")[..]);
    }

    #[test]
    fn create_primary_carries_a_password_session_and_the_srk_template() {
        let cmd = TpmCreatePrimaryCommand {
            handles: [TpmHandle::new(RH_OWNER)],
            in_sensitive: sensitive_create(b"").unwrap(),
            in_public: tpm2b_public(srk_template()),
            outside_info: Default::default(),
            creation_pcr: no_pcrs(),
        };
        let bytes = build_command(&cmd, &[password_session(b"").unwrap()]).unwrap();
        let expected = hex("8002 00000043 00000131 40000001
             00000009 40000009 0000 01 0000
             0004 0000 0000
             001a 0023 000b 00030472 0000 0006 0080 0043 0010 0003 0010 0000 0000
             0000
             00000000");
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn template_attributes_match_the_brief() {
        let t = signing_key_template(Algorithm::EcdsaP256);
        // fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign
        assert_eq!(t.object_attributes.bits(), 0x0004_0072);
        let r = signing_key_template(Algorithm::Rsa2048);
        assert_eq!(r.object_attributes.bits(), 0x0004_0072);
        assert_eq!(srk_template().object_attributes.bits(), 0x0003_0472);
    }

    #[test]
    fn error_responses_give_the_code() {
        let frame = hex("8001 0000000a 0000018b");
        assert_eq!(
            parse_response::<TpmReadPublicResponse>(&frame).unwrap_err(),
            TpmCallError::Rc(0x18b)
        );
        let text = describe_rc(0x18b);
        assert!(
            text.contains("TPM_RC_HANDLE") && text.contains("handle 1"),
            "{text}"
        );
        assert!(describe_rc(0x9a2).contains("TPM_RC_BAD_AUTH"));
        assert!(describe_rc(0x98e).contains("session 1"));
        assert!(describe_rc(0x2c4).contains("parameter 2"));
        assert!(describe_rc(0x921).contains("lockout"));
        assert!(describe_rc(0x14c).contains("already in use"));
        assert_eq!(describe_rc(0x17f), "TPM error 0x17f");
        assert_eq!(describe_rc(0x1ff), "TPM error 0x1ff (parameter 1)");
        assert!(describe_rc(0x000a_000a).contains("TCTI"));
        assert!(is_retry_rc(0x922) && !is_retry_rc(0x18b));
    }

    const SWTPM_EC: &[u8] = include_bytes!("testdata/readpublic-ecdsa-p256.bin");
    const SWTPM_EC_SPKI: &[u8] = include_bytes!("testdata/ecdsa-p256.spki.der");
    const SWTPM_RSA: &[u8] = include_bytes!("testdata/readpublic-rsa-2048.bin");
    const SWTPM_RSA_SPKI: &[u8] = include_bytes!("testdata/rsa-2048.spki.der");

    #[test]
    fn responses_captured_from_swtpm_parse() {
        for (frame, spki, alg) in [
            (SWTPM_EC, SWTPM_EC_SPKI, Algorithm::EcdsaP256),
            (SWTPM_RSA, SWTPM_RSA_SPKI, Algorithm::Rsa2048),
        ] {
            let resp = parse_response::<TpmReadPublicResponse>(frame).unwrap();
            let kp = key_public(&resp.out_public.inner).unwrap();
            assert_eq!(kp.algorithm, alg);
            assert_eq!(kp.spki, spki);
            assert_eq!(kp.attributes, 0x0004_0072);
            // Re-marshalling the public area gives the TPM's bytes back.
            let public = marshal_public(&resp.out_public).unwrap();
            assert_eq!(&frame[10..10 + public.len()], &public[..]);
        }
    }

    /// A synthetic TPM2_ReadPublic response for an ECC P-256 ECDSA signing key.
    fn ecc_read_public_response() -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        // Built by marshalling a public area, so the test does not depend on a fixture file.
        let mut t = signing_key_template(Algorithm::EcdsaP256);
        let point = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key()
            .to_encoded_point(false);
        t.unique = TpmuPublicId::Ecc(TpmsEccPoint {
            x: (&point.x().unwrap()[..]).try_into().unwrap(),
            y: (&point.y().unwrap()[..]).try_into().unwrap(),
        });
        let public = marshal_public(&tpm2b_public(t)).unwrap();
        let name = hex("0022 000b")
            .into_iter()
            .chain([0xaa; 32])
            .collect::<Vec<_>>();
        let mut body = Vec::new();
        body.extend_from_slice(&public);
        body.extend_from_slice(&name);
        body.extend_from_slice(&name);
        let mut frame = hex("8001 00000000 00000000");
        frame.extend_from_slice(&body);
        let len = frame.len() as u32;
        frame[2..6].copy_from_slice(&len.to_be_bytes());
        frame
    }

    #[test]
    fn read_public_response_gives_the_spki() {
        let frame = ecc_read_public_response();
        let resp = parse_response::<TpmReadPublicResponse>(&frame).unwrap();
        let kp = key_public(&resp.out_public.inner).unwrap();
        assert_eq!(kp.algorithm, Algorithm::EcdsaP256);
        let expected = {
            use p256::pkcs8::EncodePublicKey;
            p256::SecretKey::from_slice(&[7u8; 32])
                .unwrap()
                .public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        assert_eq!(kp.spki, expected);
    }

    #[test]
    fn truncated_or_garbage_responses_are_errors_not_panics() {
        for good in [
            ecc_read_public_response(),
            SWTPM_EC.to_vec(),
            SWTPM_RSA.to_vec(),
        ] {
            mangle(&good);
        }
    }

    fn mangle(good: &[u8]) {
        // Every truncation, with the size field fixed up or not.
        for cut in 0..good.len() {
            let mut frame = good[..cut].to_vec();
            assert!(parse_response::<TpmReadPublicResponse>(&frame).is_err());
            if frame.len() >= 6 {
                let len = frame.len() as u32;
                frame[2..6].copy_from_slice(&len.to_be_bytes());
                assert!(
                    parse_response::<TpmReadPublicResponse>(&frame).is_err(),
                    "truncated at {cut} parsed"
                );
            }
        }
        // Every single-byte corruption: may parse (if harmless) but must never panic.
        for i in 0..good.len() {
            for v in [0x00, 0xff, 0x80] {
                let mut frame = good.to_vec();
                frame[i] = v;
                if let Ok(resp) = parse_response::<TpmReadPublicResponse>(&frame) {
                    let _ = key_public(&resp.out_public.inner);
                }
                let _ = parse_response::<TpmSignResponse>(&frame);
            }
        }
        // Pseudo-random garbage with a valid-looking header.
        let mut x: u32 = 0x1234_5678;
        for round in 0..2000 {
            let len = 10 + (round % 300);
            let mut frame: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            frame[0] = 0x80;
            frame[1] = if round % 2 == 0 { 0x01 } else { 0x02 };
            frame[2..6].copy_from_slice(&(len as u32).to_be_bytes());
            frame[6..10].copy_from_slice(&[0, 0, 0, 0]);
            if let Ok(resp) = parse_response::<TpmReadPublicResponse>(&frame) {
                let _ = key_public(&resp.out_public.inner);
            }
            if let Ok(resp) = parse_response::<TpmSignResponse>(&frame) {
                let _ = signature_bytes(&resp.signature, Algorithm::EcdsaP256);
                let _ = signature_bytes(&resp.signature, Algorithm::Rsa2048);
            }
        }
        // Wrong tag, short header, size mismatch.
        assert!(response_code(&hex("c001 0000000a 00000000")).is_err());
        assert!(response_code(&hex("8001 0000")).is_err());
        assert!(response_code(&hex("8001 0000000b 00000000")).is_err());
    }

    #[test]
    fn non_signing_keys_are_refused() {
        let mut t = srk_template();
        t.unique = TpmuPublicId::Ecc(TpmsEccPoint::default());
        assert!(key_public(&t).unwrap_err().0.contains("not a signing key"));
        let mut t = signing_key_template(Algorithm::EcdsaP256);
        t.object_attributes |= TpmaObject::RESTRICTED;
        assert!(key_public(&t).unwrap_err().0.contains("restricted"));
        // An EC key whose point is not on the curve.
        let mut t = signing_key_template(Algorithm::EcdsaP256);
        t.unique = TpmuPublicId::Ecc(TpmsEccPoint {
            x: [1u8; 32][..].try_into().unwrap(),
            y: [2u8; 32][..].try_into().unwrap(),
        });
        assert!(key_public(&t).is_err());
    }

    #[test]
    fn ecdsa_signature_converts_to_der() {
        use tpm2_protocol::data::TpmsSignatureEcc;
        let sig = TpmtSignature {
            sig_alg: TpmAlgId::Ecdsa,
            signature: TpmuSignature::Ecdsa(TpmsSignatureEcc {
                hash: TpmAlgId::Sha256,
                signature_r: [0x11u8; 31][..].try_into().unwrap(),
                signature_s: [0x22u8; 32][..].try_into().unwrap(),
            }),
        };
        let der = signature_bytes(&sig, Algorithm::EcdsaP256).unwrap();
        assert_eq!(der[0], 0x30);
        assert!(signature_bytes(&sig, Algorithm::Rsa2048).is_err());
    }
}
