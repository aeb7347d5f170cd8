//! The signed manifest (`<manifest>.signed`, docs/signed-manifest.md): one small text document,
//! Ed25519-signed, that binds every byte deciding what `install` places: the SHA-256 of the
//! manifest itself (so version selection and URLs are covered) and the SHA-256 of each artifact's
//! content, by release, OS, architecture and name (so a mirror cannot swap an artifact together
//! with its unsigned checksum file), plus a serial that only grows (so an older signed manifest
//! cannot be replayed onto a node that installed a newer one) and an optional expiry. Pure.
//!
//! ```text
//! hybridboot-signed-manifest 1
//! serial 2026120601
//! expires 2027-03-01T00:00:00Z
//! manifest-sha256 <64 hex digits>
//! artifact 1.31.2 linux amd64 kubelet <64 hex digits>
//! signature <base64 of the 64-byte Ed25519 signature>
//! ```
//!
//! The signature covers the exact bytes before the `signature` line. It is verified before any
//! other part is interpreted.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;

use super::signature::{PublicKey, SignatureError};
use crate::error::{Class, Classify};

/// The first line of every signed manifest of this format.
pub const MAGIC: &str = "hybridboot-signed-manifest 1";
/// Largest signed manifest accepted (a line per artifact: a whole mirror is a few KiB).
pub const MAX_SIGNED_BYTES: usize = 1024 * 1024;
/// Longest release, OS, architecture or artifact name.
const MAX_FIELD: usize = 128;

/// Why a signed manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[allow(missing_docs)] // fields: the names say it
pub enum SignedError {
    /// Not this format, or a line it does not allow.
    #[error(
        "signed manifest {source_name}: {detail} (see docs/signed-manifest.md for the format)"
    )]
    Format { source_name: String, detail: String },
    /// The signature does not verify with the configured key.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// It signs other manifest bytes than those fetched.
    #[error("signed manifest {source_name} is for a manifest with SHA-256 {signed}, but the manifest fetched has {got}: the mirror serves a manifest that was not signed")]
    ManifestMismatch {
        source_name: String,
        signed: String,
        got: String,
    },
    /// Past its `expires`.
    #[error("signed manifest {source_name} expired at {expires}; the mirror must publish a fresh one (or the clock is wrong)")]
    Expired {
        source_name: String,
        expires: String,
    },
    /// Older than the serial recorded by the last install.
    #[error("signed manifest {source_name} has serial {serial}, older than serial {installed} this node already installed from: refusing a replayed manifest (publish one with a serial >= {installed})")]
    Replay {
        source_name: String,
        serial: u64,
        installed: u64,
    },
}

impl Classify for SignedError {
    /// A bad, stale, replayed or mismatching signed manifest is the mirror operator's to fix.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// Which artifact a digest is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactKey {
    /// The patch release (`1.31.2`), as the manifest's `version`.
    pub release: String,
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`.
    pub arch: String,
    /// The manifest's artifact name (`kubelet`).
    pub name: String,
}

/// A verified signed manifest's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// Grows with every publication; a node refuses one older than what it installed from.
    pub serial: u64,
    /// After this instant the document is refused.
    pub expires: Option<SystemTime>,
    /// SHA-256 of the manifest's exact bytes.
    pub manifest_sha256: [u8; 32],
    /// SHA-256 of each artifact's content (decompressed for `gzip_uri` artifacts).
    pub artifacts: BTreeMap<ArtifactKey, [u8; 32]>,
}

/// Splits a signed manifest into the signed bytes and the signature (not yet verified).
pub fn split<'a>(bytes: &'a [u8], source: &str) -> Result<(&'a [u8], [u8; 64]), SignedError> {
    let bad = |detail: &str| SignedError::Format {
        source_name: source.to_string(),
        detail: detail.to_string(),
    };
    if bytes.len() > MAX_SIGNED_BYTES {
        return Err(bad("larger than 1 MiB"));
    }
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let at = match text.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => return Err(bad("no `signature` line after the signed lines")),
    };
    let last = &text[at..];
    let sig_text = last
        .strip_prefix(b"signature ")
        .ok_or_else(|| bad("the last line is not `signature <base64>`"))?;
    let sig: [u8; 64] = std::str::from_utf8(sig_text)
        .ok()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| bad("the signature is not the base64 of 64 bytes"))?;
    Ok((&bytes[..at], sig))
}

/// Verifies the signature with `key`, then parses the signed lines.
pub fn open(bytes: &[u8], key: &PublicKey, source: &str) -> Result<SignedManifest, SignedError> {
    let (body, sig) = split(bytes, source)?;
    key.verify(body, &sig, source)?;
    parse_body(body, source)
}

/// Parses the signed lines (everything before `signature`). Strict: every line known, none
/// twice (artifacts: no key twice), LF line ends, printable ASCII.
pub fn parse_body(body: &[u8], source: &str) -> Result<SignedManifest, SignedError> {
    let bad = |line: usize, detail: String| SignedError::Format {
        source_name: source.to_string(),
        detail: if line == 0 {
            detail
        } else {
            format!("line {line}: {detail}")
        },
    };
    if body.len() > MAX_SIGNED_BYTES {
        return Err(bad(0, "larger than 1 MiB".into()));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad(0, "not UTF-8".into()))?;
    if !text.ends_with('\n') {
        return Err(bad(0, "the signed lines must end with a line feed".into()));
    }
    let mut serial = None;
    let mut expires = None;
    let mut manifest_sha256 = None;
    let mut artifacts = BTreeMap::new();
    // `split`, not `lines`: a carriage return must be refused, not taken for a line end.
    for (i, line) in text[..text.len() - 1].split('\n').enumerate() {
        let n = i + 1;
        if !line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(bad(
                n,
                "only printable ASCII (no tabs or carriage returns)".into(),
            ));
        }
        if i == 0 {
            if line != MAGIC {
                return Err(bad(
                    n,
                    format!("expected {MAGIC:?} (a detached `.sig` of earlier versions does not bind the artifacts and is not accepted)"),
                ));
            }
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.iter().any(|f| f.is_empty()) {
            return Err(bad(n, "fields are separated by exactly one space".into()));
        }
        let dup = |what: &str| bad(n, format!("{what} given twice"));
        match fields.as_slice() {
            ["serial", v] => {
                if serial.is_some() {
                    return Err(dup("serial"));
                }
                serial = Some(decimal(v).ok_or_else(|| {
                    bad(n, format!("serial {v:?} is not a decimal number (u64)"))
                })?);
            }
            ["expires", v] => {
                if expires.is_some() {
                    return Err(dup("expires"));
                }
                expires = Some(crate::time::parse_rfc3339(v).ok_or_else(|| {
                    bad(
                        n,
                        format!("expires {v:?} is not RFC 3339 (2027-03-01T00:00:00Z)"),
                    )
                })?);
            }
            ["manifest-sha256", v] => {
                if manifest_sha256.is_some() {
                    return Err(dup("manifest-sha256"));
                }
                manifest_sha256 =
                    Some(hex32(v).ok_or_else(|| bad(n, "not 64 lowercase hex digits".into()))?);
            }
            ["artifact", release, os, arch, name, digest] => {
                for f in [release, os, arch, name] {
                    if f.len() > MAX_FIELD || f.contains('/') {
                        return Err(bad(
                            n,
                            format!("{f:?} is not a release, OS, architecture or name"),
                        ));
                    }
                }
                let key = ArtifactKey {
                    release: release.to_string(),
                    os: os.to_string(),
                    arch: arch.to_string(),
                    name: name.to_string(),
                };
                let digest =
                    hex32(digest).ok_or_else(|| bad(n, "not 64 lowercase hex digits".into()))?;
                if artifacts.insert(key, digest).is_some() {
                    return Err(dup(&format!("artifact {release} {os} {arch} {name}")));
                }
            }
            [other, ..] => {
                return Err(bad(
                    n,
                    format!("unknown or malformed line {:?}", truncate(other)),
                ))
            }
            [] => return Err(bad(n, "empty line".into())),
        }
    }
    Ok(SignedManifest {
        serial: serial.ok_or_else(|| bad(0, "no `serial` line".into()))?,
        expires,
        manifest_sha256: manifest_sha256
            .ok_or_else(|| bad(0, "no `manifest-sha256` line".into()))?,
        artifacts,
    })
}

impl SignedManifest {
    /// The signed lines of this content (what [`parse_body`] reads back to the same value).
    pub fn render_body(&self) -> String {
        let mut out = format!("{MAGIC}\nserial {}\n", self.serial);
        if let Some(t) = self.expires {
            out.push_str(&format!("expires {}\n", crate::time::rfc3339(t)));
        }
        out.push_str(&format!(
            "manifest-sha256 {}\n",
            hex::encode(self.manifest_sha256)
        ));
        for (k, d) in &self.artifacts {
            out.push_str(&format!(
                "artifact {} {} {} {} {}\n",
                k.release,
                k.os,
                k.arch,
                k.name,
                hex::encode(d)
            ));
        }
        out
    }

    /// Checks that it signs `manifest`, has not expired at `now`, and is not older than
    /// `installed` (the serial this node last installed from).
    pub fn check(
        &self,
        manifest: &[u8],
        now: SystemTime,
        installed: Option<u64>,
        source: &str,
    ) -> Result<(), SignedError> {
        use sha2::{Digest, Sha256};
        let got: [u8; 32] = Sha256::digest(manifest).into();
        if got != self.manifest_sha256 {
            return Err(SignedError::ManifestMismatch {
                source_name: source.to_string(),
                signed: hex::encode(self.manifest_sha256),
                got: hex::encode(got),
            });
        }
        if let Some(exp) = self.expires {
            if now > exp {
                return Err(SignedError::Expired {
                    source_name: source.to_string(),
                    expires: crate::time::rfc3339(exp),
                });
            }
        }
        if let Some(installed) = installed {
            if self.serial < installed {
                return Err(SignedError::Replay {
                    source_name: source.to_string(),
                    serial: self.serial,
                    installed,
                });
            }
        }
        Ok(())
    }

    /// The signed digest of one artifact, if the document has it.
    pub fn digest(&self, release: &str, os: &str, arch: &str, name: &str) -> Option<[u8; 32]> {
        self.artifacts
            .get(&ArtifactKey {
                release: release.to_string(),
                os: os.to_string(),
                arch: arch.to_string(),
                name: name.to_string(),
            })
            .copied()
    }
}

/// A whole signed manifest: `body` followed by its signature line (for tests and mirror tools).
pub fn assemble(body: &str, signature: &[u8; 64]) -> String {
    format!(
        "{body}signature {}\n",
        base64::engine::general_purpose::STANDARD.encode(signature)
    )
}

fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::super::signature::tests::keypair;
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn public(kp: &Ed25519KeyPair) -> PublicKey {
        let b64 = base64::engine::general_purpose::STANDARD.encode(kp.public_key());
        PublicKey::parse(b64.as_bytes(), "k").unwrap()
    }

    fn sample() -> SignedManifest {
        let mut artifacts = BTreeMap::new();
        artifacts.insert(
            ArtifactKey {
                release: "1.31.2".into(),
                os: "linux".into(),
                arch: "amd64".into(),
                name: "kubelet".into(),
            },
            [7u8; 32],
        );
        SignedManifest {
            serial: 42,
            expires: crate::time::parse_rfc3339("2027-03-01T00:00:00Z"),
            manifest_sha256: {
                use sha2::{Digest, Sha256};
                Sha256::digest(b"manifest").into()
            },
            artifacts,
        }
    }

    fn sign(kp: &Ed25519KeyPair, body: &str) -> String {
        let sig: [u8; 64] = kp.sign(body.as_bytes()).as_ref().try_into().unwrap();
        assemble(body, &sig)
    }

    #[test]
    fn round_trips_and_verifies() {
        let kp = keypair();
        let s = sample();
        let doc = sign(&kp, &s.render_body());
        let opened = open(doc.as_bytes(), &public(&kp), "m.signed").unwrap();
        assert_eq!(opened, s);
        assert_eq!(
            opened.digest("1.31.2", "linux", "amd64", "kubelet"),
            Some([7u8; 32])
        );
        assert_eq!(opened.digest("1.31.2", "linux", "arm64", "kubelet"), None);
        let now = crate::time::parse_rfc3339("2026-12-06T00:00:00Z").unwrap();
        opened.check(b"manifest", now, Some(42), "m").unwrap();
        opened.check(b"manifest", now, None, "m").unwrap();
        assert!(matches!(
            opened.check(b"manifest", now, Some(43), "m"),
            Err(SignedError::Replay {
                serial: 42,
                installed: 43,
                ..
            })
        ));
        assert!(matches!(
            opened.check(b"manifest!", now, None, "m"),
            Err(SignedError::ManifestMismatch { .. })
        ));
        let later = crate::time::parse_rfc3339("2027-03-01T00:00:01Z").unwrap();
        assert!(matches!(
            opened.check(b"manifest", later, None, "m"),
            Err(SignedError::Expired { .. })
        ));
    }

    #[test]
    fn any_change_to_the_signed_lines_or_another_key_is_refused() {
        let kp = keypair();
        let doc = sign(&kp, &sample().render_body());
        let altered = doc.replace("serial 42", "serial 43");
        assert!(matches!(
            open(altered.as_bytes(), &public(&kp), "m"),
            Err(SignedError::Signature(SignatureError::Mismatch(_)))
        ));
        assert!(matches!(
            open(doc.as_bytes(), &public(&keypair()), "m"),
            Err(SignedError::Signature(SignatureError::Mismatch(_)))
        ));
        // A legacy detached signature (base64 alone) is no signed manifest.
        let legacy = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
        assert!(matches!(
            open(legacy.as_bytes(), &public(&kp), "m"),
            Err(SignedError::Format { .. })
        ));
    }

    #[test]
    fn strict_lines() {
        let h = "ab".repeat(32);
        let ok = format!("{MAGIC}\nserial 1\nmanifest-sha256 {h}\n");
        parse_body(ok.as_bytes(), "m").unwrap();
        for bad in [
            format!("{MAGIC}\nserial +1\nmanifest-sha256 {h}\n"),
            format!("{MAGIC}\nserial 01\nmanifest-sha256 {h}\n"),
            format!("{MAGIC}\nserial 1\nserial 1\nmanifest-sha256 {h}\n"),
            format!("{MAGIC}\nserial 1\n"),
            format!("{MAGIC}\nmanifest-sha256 {h}\n"),
            format!("{MAGIC}\nserial 1\nmanifest-sha256 {}\n", h.to_uppercase()),
            format!("{MAGIC}\nserial 1\nmanifest-sha256 {h}\nartifact 1.31 linux amd64 {h}\n"),
            format!("{MAGIC}\nserial 1\nmanifest-sha256 {h}\nartifact 1.31 linux amd64 k {h}\nartifact 1.31 linux amd64 k {h}\n"),
            format!("{MAGIC}\nserial 1\nmanifest-sha256  {h}\n"),
            format!("{MAGIC}\r\nserial 1\nmanifest-sha256 {h}\n"),
            format!("{MAGIC}\nserial 1\nmanifest-sha256 {h}\nnext 2\n"),
            format!("{MAGIC}\nserial 1\nmanifest-sha256 {h}"),
            format!("hybridboot-signed-manifest 2\nserial 1\nmanifest-sha256 {h}\n"),
            format!("{MAGIC}\nserial 1\nexpires tomorrow\nmanifest-sha256 {h}\n"),
            format!("{MAGIC}\nserial 1\nmanifest-sha256 {h}\n\n"),
        ] {
            assert!(parse_body(bad.as_bytes(), "m").is_err(), "{bad:?}");
        }
    }
}
