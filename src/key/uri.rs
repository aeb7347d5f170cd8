//! Key references: the strings operators write to name a key, in the forms aws_signing_helper
//! already uses.
//!
//! - `handle:0x81000001`: a TPM 2.0 persistent handle (owner range 0x81000000-0x81FFFFFF);
//! - `pkcs11:token=..;object=..[?pin-source=file:..|pin-value=..&module-path=..]` (RFC 7512);
//! - `file:/path/key.pem` or a plain path: a PEM key file (development only), or a TSS2 PEM file
//!   holding a TPM-wrapped key.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use super::KeyError;
use crate::secret::Secret;

/// A parsed key reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// TPM persistent handle.
    TpmHandle(u32),
    /// PKCS#11 object.
    Pkcs11(Pkcs11Uri),
    /// A file: a PEM private key, or a TSS2 PEM TPM-wrapped key (decided by its content).
    Path(PathBuf),
}

/// The lowest and highest TPM persistent handles in the owner hierarchy.
pub const PERSISTENT_MIN: u32 = 0x8100_0000;
pub const PERSISTENT_MAX: u32 = 0x81FF_FFFF;

impl KeyRef {
    /// Parses a reference. Anything that looks like `scheme:` with an unknown scheme is refused
    /// rather than taken for a relative path.
    pub fn parse(reference: &str) -> Result<KeyRef, KeyError> {
        let bad = |reason: &str| KeyError::BadReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        if reference.trim().is_empty() {
            return Err(bad("empty key reference"));
        }
        if let Some(rest) = reference.strip_prefix("handle:") {
            return parse_handle(rest).map(KeyRef::TpmHandle);
        }
        // URI schemes are case-insensitive (RFC 3986 section 3.1).
        if has_scheme(reference, "pkcs11:") {
            return Pkcs11Uri::parse(reference).map(KeyRef::Pkcs11);
        }
        if let Some(rest) = reference.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad(
                    "file:// URIs need an absolute path (file:///etc/key.pem)",
                ));
            }
            return Ok(KeyRef::Path(PathBuf::from(rest)));
        }
        if let Some(rest) = reference.strip_prefix("file:") {
            if rest.is_empty() {
                return Err(bad("file: needs a path"));
            }
            return Ok(KeyRef::Path(PathBuf::from(rest)));
        }
        if let Some(scheme) = uri_scheme(reference) {
            // A mistyped pkcs11 scheme may still carry a pin-value: redact like a PKCS#11 URI.
            return Err(KeyError::UnknownScheme {
                scheme: scheme.to_string(),
                reference: redact_pin_value(reference),
            });
        }
        Ok(KeyRef::Path(PathBuf::from(reference)))
    }
}

impl KeyRef {
    /// Refuses a reference that carries its PIN (`pkcs11:...?pin-value=`) where the reference
    /// comes from a configuration file: a configured reference is logged, stored in the state
    /// file and copied into world-readable files (the AWS config, units), so a PIN in it would
    /// leak. The reason says what to use instead; the caller names the field.
    pub fn refuse_pin_value(&self) -> Result<(), String> {
        match self {
            KeyRef::Pkcs11(Pkcs11Uri {
                pin: Some(PinSource::Value(_)),
                ..
            }) => Err("a PKCS#11 URI with pin-value would put the PIN in logs, the state file and world-readable files; use ?pin-source=file:/path/to/pin (mode 0600) or set HYBRIDBOOT_PKCS11_PIN instead".into()),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for KeyRef {
    /// The canonical, secret-free form (a PKCS#11 PIN value is never printed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::TpmHandle(h) => write!(f, "handle:0x{h:08x}"),
            KeyRef::Pkcs11(u) => write!(f, "{u}"),
            // `file://` is the authority form: a path starting with `//` needs it spelled out
            // (`file:////x`), or it would print as `file://x` and no longer parse back.
            KeyRef::Path(p) if p.to_string_lossy().starts_with("//") => {
                write!(f, "file://{}", p.display())
            }
            KeyRef::Path(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl std::str::FromStr for KeyRef {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        KeyRef::parse(s)
    }
}

/// Whether `s` starts with `scheme` (given lowercase, with its colon), ignoring ASCII case.
fn has_scheme(s: &str, scheme: &str) -> bool {
    s.get(..scheme.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
}

/// `scheme` of `scheme:rest` when the text looks like a URI (RFC 3986 scheme syntax, at least two
/// characters so that `C:` style or single letters stay paths).
fn uri_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if scheme.len() < 2 || !first.is_ascii_alphabetic() {
        return None;
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
        Some(scheme)
    } else {
        None
    }
}

fn parse_handle(text: &str) -> Result<u32, KeyError> {
    let t = text.trim();
    let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else {
        t.parse::<u32>()
    };
    let value = parsed.map_err(|_| KeyError::BadReference {
        reference: format!("handle:{text}"),
        reason: "the handle must be a number such as 0x81000001".into(),
    })?;
    if !(PERSISTENT_MIN..=PERSISTENT_MAX).contains(&value) {
        return Err(KeyError::HandleOutOfRange {
            handle: format!("0x{value:08x}"),
        });
    }
    Ok(value)
}

/// Where a PKCS#11 PIN comes from, per the URI.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-source=file:/path` (or a bare path).
    File(PathBuf),
    /// `pin-value=...` (discouraged: it ends up in process listings).
    Value(Secret),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "File({})", p.display()),
            PinSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// An RFC 7512 PKCS#11 URI, reduced to the attributes hybridboot uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pkcs11Uri {
    /// `token=`: the token label (required: tokens are found by label, never by slot number).
    pub token: String,
    /// `object=`: the key label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: CKA_ID bytes.
    pub id: Option<Vec<u8>>,
    /// `module-path=`: the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// `pin-source=` or `pin-value=`.
    pub pin: Option<PinSource>,
}

const PATH_ATTRS: &[&str] = &[
    "token",
    "object",
    "id",
    "type",
    "manufacturer",
    "model",
    "serial",
    "library-description",
    "library-manufacturer",
    "library-version",
    "slot-description",
    "slot-manufacturer",
    "slot-id",
];
const QUERY_ATTRS: &[&str] = &["pin-source", "pin-value", "module-path", "module-name"];

impl Pkcs11Uri {
    /// Parses `pkcs11:` path attributes (`;`-separated) and query attributes (`&`-separated),
    /// percent-decoding every value.
    pub fn parse(uri: &str) -> Result<Pkcs11Uri, KeyError> {
        let shown = redact_pin_value(uri);
        let bad = |reason: String| KeyError::BadReference {
            reference: shown.clone(),
            reason,
        };
        if !has_scheme(uri, "pkcs11:") {
            return Err(bad("a PKCS#11 URI starts with pkcs11:".into()));
        }
        let body = &uri["pkcs11:".len()..];
        let (path, query) = match body.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (body, None),
        };
        let mut out = Pkcs11Uri::default();
        let mut token = None;
        for (i, attr) in path.split(';').enumerate().filter(|(_, a)| !a.is_empty()) {
            // Never echo the attribute: a mistyped `pin-value:1234` would show the PIN.
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("path attribute number {} has no '='", i + 1)))?;
            if !PATH_ATTRS.contains(&name) {
                return Err(bad(format!(
                    "unknown path attribute {name:?} (known: {})",
                    PATH_ATTRS.join(", ")
                )));
            }
            let bytes = decode(value).map_err(|r| bad(format!("attribute {name}: {r}")))?;
            match name {
                "token" => token = Some(utf8(bytes, name).map_err(&bad)?),
                "object" => out.object = Some(utf8(bytes, name).map_err(&bad)?),
                "id" => out.id = Some(bytes),
                "type" => {
                    let t = utf8(bytes, name).map_err(&bad)?;
                    if !matches!(t.as_str(), "private" | "public" | "cert") {
                        return Err(bad(format!(
                            "type={t} is not a key type hybridboot can use"
                        )));
                    }
                }
                "slot-id" => {
                    log::warn!("ignoring slot-id in PKCS#11 URI: tokens are found by label");
                }
                _ => {}
            }
        }
        for (i, attr) in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .enumerate()
            .filter(|(_, a)| !a.is_empty())
        {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("query attribute number {} has no '='", i + 1)))?;
            if !QUERY_ATTRS.contains(&name) {
                return Err(bad(format!(
                    "unknown query attribute {name:?} (known: {})",
                    QUERY_ATTRS.join(", ")
                )));
            }
            let bytes = decode(value).map_err(|r| bad(format!("attribute {name}: {r}")))?;
            let text = utf8(bytes, name).map_err(&bad)?;
            match name {
                "pin-source" => {
                    let p = text.strip_prefix("file:").unwrap_or(&text);
                    let p = p.strip_prefix("//").unwrap_or(p);
                    out.pin = Some(PinSource::File(PathBuf::from(p)));
                }
                "pin-value" => out.pin = Some(PinSource::Value(Secret::new(text))),
                "module-path" => out.module_path = Some(PathBuf::from(text)),
                _ => {} // module-name: resolved by the platform loader; not used
            }
        }
        out.token = token.ok_or_else(|| {
            bad("token=<label> is required: tokens are found by label, never by slot number".into())
        })?;
        if out.token.is_empty() {
            return Err(bad("token label is empty".into()));
        }
        if out.object.is_none() && out.id.is_none() {
            return Err(bad("name the key with object=<label> (or id=)".into()));
        }
        Ok(out)
    }
}

impl fmt::Display for Pkcs11Uri {
    /// Canonical form without any PIN value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pkcs11:token={}", encode(self.token.as_bytes()))?;
        if let Some(o) = &self.object {
            write!(f, ";object={}", encode(o.as_bytes()))?;
        }
        if let Some(id) = &self.id {
            write!(f, ";id=")?;
            for b in id {
                write!(f, "%{b:02x}")?;
            }
        }
        let mut sep = '?';
        if let Some(m) = &self.module_path {
            write!(
                f,
                "{sep}module-path={}",
                encode_query(m.to_string_lossy().as_bytes())
            )?;
            sep = '&';
        }
        match &self.pin {
            Some(PinSource::File(p)) => write!(
                f,
                "{sep}pin-source=file:{}",
                encode_query(p.to_string_lossy().as_bytes())
            )?,
            Some(PinSource::Value(_)) => write!(f, "{sep}pin-value=<redacted>")?,
            None => {}
        }
        Ok(())
    }
}

/// Redacts what could be a PIN in a raw key reference, so that error messages never carry one:
/// the value of `pin-value=`, the value of any attribute hybridboot does not know (it may be a
/// misspelt `pin-value`), and any attribute without `=`. Known attributes stay readable.
pub fn redact_pin_value(uri: &str) -> String {
    let (scheme, body) = match uri_scheme(uri) {
        Some(scheme) => (&uri[..=scheme.len()], &uri[scheme.len() + 1..]),
        None => ("", uri),
    };
    let (path, query) = match body.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (body, None),
    };
    let mut out = format!("{scheme}{}", redact_attrs(path, ';', PATH_ATTRS));
    if let Some(q) = query {
        out.push('?');
        out.push_str(&redact_attrs(q, '&', QUERY_ATTRS));
    }
    out
}

fn redact_attrs(part: &str, sep: char, known: &[&str]) -> String {
    part.split(sep)
        .map(|attr| match attr.split_once('=') {
            Some((name, value)) => {
                let decoded = percent_decode_str(name).decode_utf8_lossy().to_lowercase();
                if decoded == "pin-value" || !known.contains(&decoded.as_str()) {
                    format!("{name}=<redacted>")
                } else {
                    format!("{name}={value}")
                }
            }
            // Query attributes without '=' are malformed (`pin-value:1234`?); in the path, keep
            // ordinary text such as a TPM handle.
            None if sep == '&' || attr.to_ascii_lowercase().contains("pin") => {
                "<redacted>".to_string()
            }
            None => attr.to_string(),
        })
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

fn decode(value: &str) -> Result<Vec<u8>, String> {
    // Reject malformed escapes instead of passing them through literally.
    let b = value.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'%'
            && !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
        {
            // The value itself is not shown: it may be a PIN.
            return Err("malformed percent-encoding (use %XX with two hex digits)".into());
        }
    }
    Ok(percent_decode_str(value).collect())
}

fn utf8(bytes: Vec<u8>, name: &str) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("attribute {name} is not UTF-8"))
}

/// Encodes a path attribute value: RFC 7512 allows unreserved characters unescaped (`/` is
/// reserved for the query part).
fn encode(bytes: &[u8]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::percent_encode(bytes, SET).to_string()
}

/// Encodes a query attribute value, where `/` may stay as is (readable module and PIN paths).
fn encode_query(bytes: &[u8]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::percent_encode(bytes, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles() {
        assert_eq!(
            KeyRef::parse("handle:0x81000001").unwrap(),
            KeyRef::TpmHandle(0x8100_0001)
        );
        assert_eq!(
            KeyRef::parse("handle:2164260865").unwrap(),
            KeyRef::TpmHandle(0x8100_0001)
        );
        assert!(matches!(
            KeyRef::parse("handle:0x80000001"),
            Err(KeyError::HandleOutOfRange { .. })
        ));
        assert!(matches!(
            KeyRef::parse("handle:0x82000000"),
            Err(KeyError::HandleOutOfRange { .. })
        ));
        assert!(matches!(
            KeyRef::parse("handle:zz"),
            Err(KeyError::BadReference { .. })
        ));
    }

    #[test]
    fn paths_and_unknown_schemes() {
        assert_eq!(
            KeyRef::parse("/etc/k.pem").unwrap(),
            KeyRef::Path("/etc/k.pem".into())
        );
        assert_eq!(
            KeyRef::parse("k.pem").unwrap(),
            KeyRef::Path("k.pem".into())
        );
        assert_eq!(
            KeyRef::parse("file:/etc/k.pem").unwrap(),
            KeyRef::Path("/etc/k.pem".into())
        );
        assert_eq!(
            KeyRef::parse("file:///etc/k.pem").unwrap(),
            KeyRef::Path("/etc/k.pem".into())
        );
        assert!(matches!(
            KeyRef::parse("tpm:0x81000001"),
            Err(KeyError::UnknownScheme { .. })
        ));
        assert!(matches!(
            KeyRef::parse(""),
            Err(KeyError::BadReference { .. })
        ));
    }

    #[test]
    fn pkcs11_uri_with_percent_encoding_and_pin() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=node%20token;object=node-key;id=%01%02?pin-source=file:/run/pin&module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(u.token, "node token");
        assert_eq!(u.object.as_deref(), Some("node-key"));
        assert_eq!(u.id, Some(vec![1, 2]));
        assert_eq!(u.pin, Some(PinSource::File("/run/pin".into())));
        assert_eq!(
            u.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        let again = Pkcs11Uri::parse(&u.to_string()).unwrap();
        assert_eq!(again, u);
    }

    #[test]
    fn pkcs11_pin_value_never_displayed() {
        let u = Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-value=s3cr3t-1234").unwrap();
        assert!(!u.to_string().contains("s3cr3t"));
        assert!(!format!("{u:?}").contains("s3cr3t"));
        let err = Pkcs11Uri::parse("pkcs11:object=k?pin-value=s3cr3t-1234").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn pkcs11_scheme_is_case_insensitive() {
        let u = KeyRef::parse("PKCS11:token=t;object=k").unwrap();
        assert!(matches!(u, KeyRef::Pkcs11(ref p) if p.token == "t"));
        assert!(Pkcs11Uri::parse("Pkcs11:token=t;object=k").is_ok());
    }

    #[test]
    fn pins_are_redacted_from_every_error() {
        for uri in [
            // Mistyped scheme.
            "pkcs:token=t;object=k?pin-value=s3cr3t-1234",
            // Malformed percent-encoding inside the PIN.
            "pkcs11:token=t;object=k?pin-value=s3cr3t-1234%zz",
            // pin-value in the path part, misspelt, encoded name, without '=', repeated.
            "pkcs11:token=t;object=k;pin-value=s3cr3t-1234",
            "pkcs11:token=t;object=k?pin-valeu=s3cr3t-1234",
            "pkcs11:token=t;object=k?pin%2Dvalue=s3cr3t-1234",
            "pkcs11:token=t;object=k?pin-value:s3cr3t-1234",
            "pkcs11:token=t;object=k?pin-value=a&pin-value=s3cr3t-1234&bogus=1",
            "pkcs11:object=k?pin-value=s3cr3t-1234",
        ] {
            let err = KeyRef::parse(uri).unwrap_err().to_string();
            assert!(!err.contains("s3cr3t"), "{uri}: {err}");
        }
        // Known attributes stay readable in the redacted form.
        assert_eq!(
            redact_pin_value("pkcs11:token=t;object=k?pin-source=file:/run/pin&pin-value=x"),
            "pkcs11:token=t;object=k?pin-source=file:/run/pin&pin-value=<redacted>"
        );
        assert_eq!(redact_pin_value("tpm:0x81000001"), "tpm:0x81000001");
    }

    #[test]
    fn display_escapes_slash_in_path_but_not_query() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=a%2Fb;object=k?module-path=/usr/lib/m.so&pin-source=file:/run/pin",
        )
        .unwrap();
        assert_eq!(u.token, "a/b");
        assert_eq!(
            u.to_string(),
            "pkcs11:token=a%2Fb;object=k?module-path=/usr/lib/m.so&pin-source=file:/run/pin"
        );
        assert_eq!(Pkcs11Uri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn pkcs11_rejects_what_it_cannot_use() {
        for bad in [
            "pkcs11:object=k",
            "pkcs11:token=t",
            "pkcs11:token=t;object=k;color=red",
            "pkcs11:token=t;object=%zz",
            "pkcs11:token=t;object=k?frobnicate=1",
        ] {
            assert!(Pkcs11Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
