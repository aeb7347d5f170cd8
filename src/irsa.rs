//! IAM Roles for Service Accounts (IRSA) on clusters outside EKS: the two public documents an
//! OpenID Connect provider in IAM reads (docs/protocols.md §6).
//!
//! * `keys.json`: the JWKS of the cluster's service-account signing keys. Each key's `kid` is
//!   `base64url_nopad(sha256(DER SubjectPublicKeyInfo))`, exactly what kube-apiserver puts in the
//!   header of the tokens it signs, so STS can pick the right key.
//! * `.well-known/openid-configuration`: the discovery document, whose `issuer` must be
//!   byte-for-byte the API server's `--service-account-issuer`.
//!
//! Everything here is pure (bytes in, bytes out); the CLI wrappers at the bottom read the key
//! files and write the output through [`crate::fsutil`].

use std::path::PathBuf;

use anyhow::Context;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use der::{Decode, Encode};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{exit, fsutil};

/// Why a service-account key or an issuer was refused. Every variant names the input.
#[derive(Debug, thiserror::Error)]
pub enum IrsaError {
    /// The file holds a key that is not RSA (IRSA tokens are RS256 only).
    #[error("{source_name}: {algorithm} key: IRSA needs the cluster's RSA service-account key (kube-apiserver --service-account-key-file); STS accepts only RS256 tokens")]
    NotRsa {
        source_name: String,
        algorithm: String,
    },
    /// The file holds a private key; only the public half belongs in a public JWKS.
    #[error("{source_name}: this is a private key ({label}); pass the public key instead (openssl pkey -in FILE -pubout, or the tls.crt of the <cluster>-sa secret)")]
    PrivateKey { source_name: String, label: String },
    /// The content is not a public key, certificate, or base64 of one.
    #[error("{source_name}: {detail}")]
    Unreadable { source_name: String, detail: String },
    /// The issuer URL cannot be an OIDC issuer for IAM.
    #[error("issuer {issuer:?}: {detail}")]
    BadIssuer { issuer: String, detail: String },
    /// The issuer and the value the API server uses differ.
    #[error("issuer {issuer:?} differs from --service-account-issuer {api_server:?}: {detail}")]
    IssuerMismatch {
        issuer: String,
        api_server: String,
        detail: String,
    },
}

/// One JSON Web Key, fields in the order the upstream `hack/self-hosted` generator writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    #[serde(rename = "use")]
    pub use_: String,
    pub kty: String,
    pub kid: String,
    pub alg: String,
    pub n: String,
    pub e: String,
}

/// A JSON Web Key Set (`{"keys": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The RSA public keys found in one input, as canonical DER SPKI.
///
/// Accepts PEM `PUBLIC KEY` (SPKI), PEM `RSA PUBLIC KEY` (PKCS#1), PEM `CERTIFICATE`, several of
/// those in one file, the base64 of such a PEM (what the `<cluster>-sa` secret's `data.tls.crt`
/// holds before `base64 -d`), or bare DER. `source_name` names the input in errors.
pub fn rsa_keys_from_bytes(data: &[u8], source_name: &str) -> Result<Vec<Vec<u8>>, IrsaError> {
    let unreadable = |detail: String| IrsaError::Unreadable {
        source_name: source_name.to_string(),
        detail,
    };
    let text = std::str::from_utf8(data).ok();
    if let Some(text) = text {
        if text.contains("-----BEGIN ") {
            return keys_from_pem(text, source_name);
        }
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if compact.is_empty() {
            return Err(unreadable(
                "empty file; expected a PEM public key or certificate".into(),
            ));
        }
        if compact
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        {
            // Pasted `data.tls\.crt` without `base64 -d`: decode once and try again.
            let decoded = STANDARD.decode(compact.as_bytes()).map_err(|e| {
                unreadable(format!(
                    "neither PEM nor valid base64 ({e}); expected a PEM public key or certificate"
                ))
            })?;
            if let Ok(inner) = std::str::from_utf8(&decoded) {
                if inner.contains("-----BEGIN ") {
                    return keys_from_pem(inner, source_name);
                }
            }
            return key_from_der(&decoded, source_name).map(|k| vec![k]);
        }
    }
    key_from_der(data, source_name).map(|k| vec![k])
}

/// Every PEM block of a text, in order: `(label, DER)`.
fn keys_from_pem(text: &str, source_name: &str) -> Result<Vec<Vec<u8>>, IrsaError> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            return Err(IrsaError::Unreadable {
                source_name: source_name.to_string(),
                detail: format!("PEM block {label:?} has no END line"),
            });
        };
        let block = &rest[start..start + end + end_marker.len()];
        rest = &rest[start + end + end_marker.len()..];
        if label.contains("PRIVATE KEY") {
            return Err(IrsaError::PrivateKey {
                source_name: source_name.to_string(),
                label: label.to_string(),
            });
        }
        let (label, der) =
            pem_rfc7468::decode_vec(block.as_bytes()).map_err(|e| IrsaError::Unreadable {
                source_name: source_name.to_string(),
                detail: format!("bad PEM: {e}"),
            })?;
        let spki = match label {
            "PUBLIC KEY" => der,
            "RSA PUBLIC KEY" => pkcs1_to_spki(&der, source_name)?,
            "CERTIFICATE" => {
                let cert = x509_cert::Certificate::from_der(&der).map_err(|e| {
                    IrsaError::Unreadable {
                        source_name: source_name.to_string(),
                        detail: format!("unreadable certificate: {e}"),
                    }
                })?;
                cert.tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .map_err(|e| IrsaError::Unreadable {
                        source_name: source_name.to_string(),
                        detail: format!("certificate public key: {e}"),
                    })?
            }
            other => {
                return Err(IrsaError::Unreadable {
                    source_name: source_name.to_string(),
                    detail: format!("PEM block {other:?} is not a public key; expected PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE"),
                })
            }
        };
        keys.push(canonical_rsa_spki(&spki, source_name)?);
    }
    if keys.is_empty() {
        return Err(IrsaError::Unreadable {
            source_name: source_name.to_string(),
            detail: "no PEM block found".into(),
        });
    }
    Ok(keys)
}

fn pkcs1_to_spki(der: &[u8], source_name: &str) -> Result<Vec<u8>, IrsaError> {
    let pk = rsa::RsaPublicKey::from_pkcs1_der(der).map_err(|e| IrsaError::Unreadable {
        source_name: source_name.to_string(),
        detail: format!("unreadable RSA PUBLIC KEY: {e}"),
    })?;
    encode_spki(&pk, source_name)
}

/// Bare DER: an SPKI, a certificate or a PKCS#1 key.
fn key_from_der(der: &[u8], source_name: &str) -> Result<Vec<u8>, IrsaError> {
    if spki::SubjectPublicKeyInfoRef::from_der(der).is_ok() {
        return canonical_rsa_spki(der, source_name);
    }
    if let Ok(cert) = x509_cert::Certificate::from_der(der) {
        if let Ok(spki) = cert.tbs_certificate.subject_public_key_info.to_der() {
            return canonical_rsa_spki(&spki, source_name);
        }
    }
    if rsa::RsaPublicKey::from_pkcs1_der(der).is_ok() {
        return pkcs1_to_spki(der, source_name);
    }
    Err(IrsaError::Unreadable {
        source_name: source_name.to_string(),
        detail: "not a PEM or DER public key, certificate, or base64 of one".into(),
    })
}

/// Checks that an SPKI is RSA and re-encodes it the way Go's `x509.MarshalPKIXPublicKey` does
/// (NULL algorithm parameters, minimal integers): kube-apiserver derives the token `kid` from
/// that encoding, not from the bytes in the file.
fn canonical_rsa_spki(spki_der: &[u8], source_name: &str) -> Result<Vec<u8>, IrsaError> {
    let info =
        spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| IrsaError::Unreadable {
            source_name: source_name.to_string(),
            detail: format!("unreadable public key: {e}"),
        })?;
    let oid = info.algorithm.oid;
    if oid != const_oid::db::rfc5912::RSA_ENCRYPTION {
        let algorithm = if oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
            "EC (ECDSA)".to_string()
        } else if let Some(name) = const_oid::db::DB.by_oid(&oid) {
            name.to_string()
        } else {
            format!("OID {oid}")
        };
        return Err(IrsaError::NotRsa {
            source_name: source_name.to_string(),
            algorithm,
        });
    }
    let pk =
        rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| IrsaError::Unreadable {
            source_name: source_name.to_string(),
            detail: format!("unreadable RSA key: {e}"),
        })?;
    encode_spki(&pk, source_name)
}

fn encode_spki(pk: &rsa::RsaPublicKey, source_name: &str) -> Result<Vec<u8>, IrsaError> {
    Ok(pk
        .to_public_key_der()
        .map_err(|e| IrsaError::Unreadable {
            source_name: source_name.to_string(),
            detail: format!("encoding RSA key: {e}"),
        })?
        .as_bytes()
        .to_vec())
}

/// The key id kube-apiserver (1.16 and later) writes into token headers:
/// `base64url_nopad(sha256(DER SPKI))`.
pub fn key_id(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}

/// The JWK of one RSA SPKI (as returned by [`rsa_keys_from_bytes`]).
pub fn jwk_from_spki(spki_der: &[u8]) -> Result<Jwk, IrsaError> {
    let pk =
        rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| IrsaError::Unreadable {
            source_name: "public key".into(),
            detail: format!("unreadable RSA key: {e}"),
        })?;
    Ok(Jwk {
        use_: "sig".into(),
        kty: "RSA".into(),
        kid: key_id(spki_der),
        alg: "RS256".into(),
        // BigUint::to_bytes_be is minimal (no leading zero), as RFC 7518 §6.3.1 requires.
        n: URL_SAFE_NO_PAD.encode(pk.n().to_bytes_be()),
        e: URL_SAFE_NO_PAD.encode(pk.e().to_bytes_be()),
    })
}

/// Builds the JWKS of several keys: every distinct key once, in the order given (rotation: old
/// and new keys are both published). With `legacy_empty_kid`, each key is added a second time
/// with `"kid": ""`, which tokens issued before Kubernetes 1.16 (no kid header) are matched
/// against.
pub fn build_jwks(spkis: &[Vec<u8>], legacy_empty_kid: bool) -> Result<Jwks, IrsaError> {
    let mut keys: Vec<Jwk> = Vec::new();
    for spki in spkis {
        let jwk = jwk_from_spki(spki)?;
        if !keys.iter().any(|k| k.kid == jwk.kid) {
            keys.push(jwk);
        }
    }
    if legacy_empty_kid {
        let copies: Vec<Jwk> = keys
            .iter()
            .map(|k| Jwk {
                kid: String::new(),
                ..k.clone()
            })
            .collect();
        keys.extend(copies);
    }
    Ok(Jwks { keys })
}

/// The OpenID discovery document of docs/protocols.md §6, fields in that order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: String,
    pub response_types_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub claims_supported: Vec<String>,
}

/// Longest OIDC provider URL IAM accepts (`OpenIDConnectProviderUrlType`).
const IAM_MAX_URL: usize = 255;

/// Checks an issuer URL: `https`, a host, no user info, query or fragment, no empty path
/// segment, at most 255 characters. The issuer is never rewritten: it must stay byte-identical
/// to the API server's `--service-account-issuer`.
pub fn validate_issuer(issuer: &str) -> Result<(), IrsaError> {
    let bad = |detail: &str| IrsaError::BadIssuer {
        issuer: issuer.to_string(),
        detail: detail.to_string(),
    };
    if issuer.is_empty() {
        return Err(bad("empty; pass the API server's --service-account-issuer"));
    }
    if issuer
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(bad(
            "contains whitespace, control or non-ASCII characters; it must be a plain https URL",
        ));
    }
    let Some(rest) = issuer.strip_prefix("https://") else {
        if issuer.to_ascii_lowercase().starts_with("https://") {
            return Err(bad(
                "write the scheme in lower case (https://): the issuer is compared byte for byte",
            ));
        }
        return Err(bad(
            "must start with https:// (OIDC issuers and IAM identity providers are https only)",
        ));
    };
    if issuer.contains('?') || issuer.contains('#') {
        return Err(bad(
            "must not have a query (?) or fragment (#) (OpenID Connect Discovery 1.0 §3)",
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') {
        return Err(bad("must not contain user information (user@host)"));
    }
    if let Some((host, port)) = authority.rsplit_once(':') {
        if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("has an invalid host or port"));
        }
    }
    // An empty segment ("//" in the path) makes `<issuer>/.well-known/...` ambiguous and is
    // almost always a doubled slash from string concatenation.
    let inner = path.strip_suffix('/').unwrap_or(path);
    if !inner.is_empty() && inner[1..].split('/').any(|s| s.is_empty()) {
        return Err(bad("has an empty path segment (//)"));
    }
    if issuer.len() > IAM_MAX_URL {
        return Err(bad(&format!(
            "is {} characters long; IAM accepts at most {IAM_MAX_URL}",
            issuer.len()
        )));
    }
    Ok(())
}

/// `<issuer>/keys.json` without a doubled slash when the issuer ends with `/`.
pub fn jwks_uri(issuer: &str) -> String {
    format!("{}/keys.json", issuer.strip_suffix('/').unwrap_or(issuer))
}

/// Builds the discovery document for a validated issuer. With `api_server_issuer` (the value of
/// kube-apiserver's `--service-account-issuer`), the two must be identical.
pub fn discovery(issuer: &str, api_server_issuer: Option<&str>) -> Result<Discovery, IrsaError> {
    validate_issuer(issuer)?;
    if let Some(api) = api_server_issuer {
        if api != issuer {
            let detail = if api.trim_end_matches('/') == issuer.trim_end_matches('/') {
                "they differ only in the trailing slash; tokens carry iss exactly as the API server has it, so use that exact string".to_string()
            } else {
                "tokens carry iss exactly as the API server has it; use that exact string"
                    .to_string()
            };
            return Err(IrsaError::IssuerMismatch {
                issuer: issuer.to_string(),
                api_server: api.to_string(),
                detail,
            });
        }
    }
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(Discovery {
        issuer: issuer.to_string(),
        jwks_uri: jwks_uri(issuer),
        authorization_endpoint: "urn:kubernetes:programmatic_authorization".into(),
        response_types_supported: list(&["id_token"]),
        subject_types_supported: list(&["public"]),
        id_token_signing_alg_values_supported: list(&["RS256"]),
        claims_supported: list(&["sub", "iss"]),
    })
}

/// Pretty JSON with a final newline, as uploaded to the bucket.
fn to_json<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value).context("encoding JSON")?;
    out.push(b'\n');
    Ok(out)
}

fn emit(out: Option<&PathBuf>, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            fsutil::atomic_write(path, bytes, &fsutil::WriteOptions::public())
                .with_context(|| format!("writing {what} to {}", path.display()))?;
            log::info!("{what} written to {}", path.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(bytes)
                .context("writing to stdout")?;
        }
    }
    Ok(())
}

/// Arguments of `hybridboot irsa keys`.
#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    /// Service-account public key: PEM PUBLIC KEY, PEM RSA PUBLIC KEY, a certificate PEM (the
    /// <cluster>-sa secret's tls.crt), or the base64 of one. Repeat for rotation: every key is
    /// published.
    #[arg(long = "service-account-key", value_name = "FILE", required = true, num_args = 1..)]
    pub service_account_keys: Vec<PathBuf>,
    /// Write keys.json to this file (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also publish each key with an empty kid, for tokens issued by Kubernetes before 1.16.
    #[arg(long)]
    pub legacy_empty_kid: bool,
}

/// Arguments of `hybridboot irsa discovery`.
#[derive(clap::Args, Debug)]
pub struct DiscoveryArgs {
    /// The issuer URL, exactly as kube-apiserver's --service-account-issuer (trailing slash
    /// included or not, the same way), e.g. https://s3.eu-west-1.amazonaws.com/my-bucket.
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// The API server's --service-account-issuer, to check that --issuer matches it exactly.
    #[arg(long, value_name = "URL")]
    pub service_account_issuer: Option<String>,
    /// Write the document to this file (atomically, mode 0644) instead of stdout. Upload it as
    /// <issuer>/.well-known/openid-configuration.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `hybridboot irsa {keys,discovery}`.
#[derive(clap::Subcommand, Debug)]
pub enum IrsaCommand {
    /// Print the JWKS (keys.json) of the cluster's service-account public keys.
    ///
    /// Example: kubectl get secret c1-sa -n eksa-system -o jsonpath='{.data.tls\.crt}' | base64 -d
    /// > sa.pub && hybridboot irsa keys --service-account-key sa.pub --out keys.json
    Keys(KeysArgs),
    /// Print the OpenID discovery document (.well-known/openid-configuration) for an issuer.
    Discovery(DiscoveryArgs),
}

/// Runs an `irsa` subcommand.
pub fn run(command: IrsaCommand) -> anyhow::Result<()> {
    match command {
        IrsaCommand::Keys(a) => keys_command(a),
        IrsaCommand::Discovery(a) => discovery_command(a),
    }
}

fn keys_command(args: KeysArgs) -> anyhow::Result<()> {
    let mut spkis = Vec::new();
    for path in &args.service_account_keys {
        let name = path.display().to_string();
        let data = crate::fsutil::read_capped(path, crate::fsutil::MAX_TEXT_FILE)
            .with_context(|| format!("reading {name}"))?;
        let found = rsa_keys_from_bytes(&data, &name).map_err(|e| exit::operator(e.to_string()))?;
        for spki in &found {
            log::info!("{name}: RSA key, kid {}", key_id(spki));
        }
        spkis.extend(found);
    }
    let jwks =
        build_jwks(&spkis, args.legacy_empty_kid).map_err(|e| exit::operator(e.to_string()))?;
    emit(args.out.as_ref(), &to_json(&jwks)?, "JWKS")
}

fn discovery_command(args: DiscoveryArgs) -> anyhow::Result<()> {
    let doc = discovery(&args.issuer, args.service_account_issuer.as_deref())
        .map_err(|e| exit::operator(e.to_string()))?;
    if args.issuer.ends_with('/') {
        log::warn!(
            "issuer {:?} ends with '/': kube-apiserver --service-account-issuer and the IAM identity provider must use it with the slash too",
            args.issuer
        );
    }
    emit(args.out.as_ref(), &to_json(&doc)?, "discovery document")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_uri_never_doubles_the_slash() {
        assert_eq!(jwks_uri("https://h/b"), "https://h/b/keys.json");
        assert_eq!(jwks_uri("https://h/b/"), "https://h/b/keys.json");
        assert_eq!(jwks_uri("https://h"), "https://h/keys.json");
    }

    #[test]
    fn issuer_rules() {
        for ok in [
            "https://s3.eu-west-1.amazonaws.com/bucket",
            "https://s3.eu-west-1.amazonaws.com/bucket/",
            "https://oidc.example.com:8443/a/b",
            "https://oidc.example.com",
        ] {
            validate_issuer(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("http://h/b", "https://"),
            ("HTTPS://h/b", "lower case"),
            ("https://h/b?x=1", "query"),
            ("https://h/b#f", "fragment"),
            ("https:///b", "no host"),
            ("https://u@h/b", "user information"),
            ("https://h/a//b", "empty path segment"),
            ("https://h/b ", "whitespace"),
            ("https://h:x/b", "port"),
            ("", "empty"),
        ] {
            let e = validate_issuer(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("https://h/{}", "a".repeat(250));
        assert!(validate_issuer(&long)
            .unwrap_err()
            .to_string()
            .contains("255"));
    }

    #[test]
    fn mismatch_with_api_server_issuer_is_explained() {
        let e = discovery("https://h/b/", Some("https://h/b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trailing slash"), "{e}");
        let e = discovery("https://h/b", Some("https://other/b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exact string"), "{e}");
        let d = discovery("https://h/b/", Some("https://h/b/")).unwrap();
        assert_eq!(d.issuer, "https://h/b/");
        assert_eq!(d.jwks_uri, "https://h/b/keys.json");
    }

    #[test]
    fn private_keys_and_garbage_are_refused_by_name() {
        let e = rsa_keys_from_bytes(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "sa.key",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("sa.key: this is a private key"), "{e}");
        let e = rsa_keys_from_bytes(b"hello world", "x.pub")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.pub: "), "{e}");
        let e = rsa_keys_from_bytes(b"  \n", "empty.pub")
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn rsa_forms_give_one_kid_and_dedup() {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let n = rsa::BigUint::from_bytes_be(&[0xc3; 256]);
        let pk = rsa::RsaPublicKey::new(n, rsa::BigUint::from(65537u32)).unwrap();
        let spki_pem = pk.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let pkcs1_pem = pk.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let b64 = STANDARD.encode(spki_pem.as_bytes());
        let a = rsa_keys_from_bytes(spki_pem.as_bytes(), "a").unwrap();
        let b = rsa_keys_from_bytes(pkcs1_pem.as_bytes(), "b").unwrap();
        let c = rsa_keys_from_bytes(b64.as_bytes(), "c").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let all: Vec<Vec<u8>> = [a, b, c].concat();
        let jwks = build_jwks(&all, true).unwrap();
        assert_eq!(jwks.keys.len(), 2);
        assert_eq!(jwks.keys[0].e, "AQAB");
        assert_eq!(jwks.keys[1].kid, "");
        assert_eq!(jwks.keys[0].n, jwks.keys[1].n);
        assert_eq!(jwks.keys[0].n, URL_SAFE_NO_PAD.encode([0xc3; 256]));
    }
}
