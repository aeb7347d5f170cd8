//! The IAM Roles Anywhere `CreateSession` request, signed with the node's certificate key
//! (`AWS4-X509-ECDSA-SHA256` / `AWS4-X509-RSA-SHA256`), exactly as docs/protocols.md §1 and the
//! reference client (aws_signing_helper) build it.
//!
//! The private key never leaves its backend: the string to sign goes to
//! [`NodeKey::sign`], which hashes it with SHA-256 and signs the
//! digest (DER ECDSA or PKCS#1 v1.5). Everything else is a pure function of the inputs.

use std::time::SystemTime;

use base64::Engine as _;
use der::Decode as _;
use der::Encode as _;

use super::sigv4::{
    canonical_headers, canonical_query, canonical_request, canonical_uri, credential_scope,
    sha256_hex, string_to_sign, wire_path,
};
use super::time::{amz_date, scope_date};
use crate::key::{Algorithm, KeyError, NodeKey};

/// The SigV4 service name of IAM Roles Anywhere.
pub const SERVICE: &str = "rolesanywhere";
/// `durationSeconds` bounds the service accepts.
pub const MIN_DURATION_SECS: u32 = 900;
/// The service caps sessions at 12 hours.
pub const MAX_DURATION_SECS: u32 = 43200;
/// `Content-Type` the reference client (aws_signing_helper, REST-JSON) sends.
pub const CONTENT_TYPE: &str = "application/json";

/// Problems building or signing a `CreateSession` request. One line each, no secrets.
#[derive(Debug, thiserror::Error)]
pub enum X509SignError {
    #[error("the certificate is not valid DER X.509: {0}")]
    BadCertificate(String),
    #[error("intermediate certificate #{index} is not valid DER X.509: {detail}")]
    BadIntermediate { index: usize, detail: String },
    #[error("the private key ({key}) does not belong to the certificate (public keys differ): use the key the certificate was issued for")]
    KeyMismatch { key: String },
    #[error("endpoint {endpoint:?} is not an https://host[:port] URL: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("session duration {0} s is outside {MIN_DURATION_SECS}..={MAX_DURATION_SECS}")]
    BadDuration(u32),
    #[error("{0}")]
    Region(String),
    #[error("signing CreateSession with the node key failed: {0}")]
    Key(#[from] KeyError),
}

/// The SigV4 algorithm name for a key algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EcdsaP256 => "AWS4-X509-ECDSA-SHA256",
        Algorithm::Rsa2048 => "AWS4-X509-RSA-SHA256",
    }
}

/// The default endpoint of a region.
pub fn default_endpoint(region: &str) -> String {
    format!("https://rolesanywhere.{region}.amazonaws.com")
}

/// The region field of an ARN (`arn:aws:rolesanywhere:us-east-1:123:trust-anchor/..`).
pub fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let _partition = parts.next()?;
    let _service = parts.next()?;
    let region = parts.next()?;
    parts.next()?;
    parts.next()?;
    (!region.is_empty()).then_some(region)
}

/// The region to sign for: `--region` if given, else the trust anchor ARN's. The trust anchor
/// and the profile must be in the same region (the service rejects anything else, late and
/// obscurely).
pub fn resolve_region(
    explicit: Option<&str>,
    trust_anchor_arn: &str,
    profile_arn: &str,
) -> Result<String, X509SignError> {
    let ta = arn_region(trust_anchor_arn);
    let pr = arn_region(profile_arn);
    if let (Some(a), Some(b)) = (ta, pr) {
        if a != b {
            return Err(X509SignError::Region(format!(
                "the trust anchor ARN is in region {a} but the profile ARN in {b}: both must be in the same region"
            )));
        }
    }
    match (explicit, ta) {
        (Some(r), _) if !r.is_empty() => Ok(r.to_string()),
        (_, Some(r)) => Ok(r.to_string()),
        _ => Err(X509SignError::Region(format!(
            "no region: give --region or a trust anchor ARN with one ({trust_anchor_arn:?} has none)"
        ))),
    }
}

/// The `Host` header value of an endpoint URL: its authority, without a default port (which
/// HTTP clients do not send either). Only `https://host[:port][/]` is accepted; plain `http://`
/// too, for tests behind a TLS-terminating proxy.
pub fn endpoint_host(endpoint: &str) -> Result<String, X509SignError> {
    let bad = |reason: &str| X509SignError::BadEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return Err(bad("scheme must be https")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@', ' '])
        || authority.chars().any(|c| c.is_control())
    {
        return Err(bad(
            "expected only a host and optional port, no path, query or user",
        ));
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !authority.ends_with(']') => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("port is not a number"));
            }
            if p == default_port {
                h.to_string()
            } else {
                authority.to_string()
            }
        }
        _ => authority.to_string(),
    };
    Ok(host.to_ascii_lowercase())
}

/// The JSON body: `{"durationSeconds":N}` plus `"roleSessionName"` when given.
pub fn session_body(
    duration_secs: u32,
    role_session_name: Option<&str>,
) -> Result<Vec<u8>, X509SignError> {
    if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&duration_secs) {
        return Err(X509SignError::BadDuration(duration_secs));
    }
    let mut body = serde_json::Map::new();
    body.insert("durationSeconds".into(), duration_secs.into());
    if let Some(name) = role_session_name {
        body.insert("roleSessionName".into(), name.into());
    }
    Ok(serde_json::to_vec(&body).expect("serialising a JSON map cannot fail"))
}

/// Decimal digits of a big-endian unsigned integer.
pub fn big_endian_to_decimal(bytes: &[u8]) -> String {
    let mut n: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    if n.is_empty() {
        return "0".to_string();
    }
    let mut digits = Vec::new();
    while !n.is_empty() {
        // Divide by 10 in place, collecting the remainder.
        let mut rem: u32 = 0;
        for b in n.iter_mut() {
            let cur = (rem << 8) | *b as u32;
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
        let lead = n.iter().take_while(|b| **b == 0).count();
        n.drain(..lead);
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// What the signer needs from the leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Serial number in decimal (the `Credential=` of the Authorization header).
    pub serial_decimal: String,
    /// Serial number as lowercase hex without leading zeros (the default session name).
    pub serial_hex: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Reads serial and public key from a DER certificate.
pub fn leaf_info(certificate_der: &[u8]) -> Result<LeafInfo, X509SignError> {
    let cert = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| X509SignError::BadCertificate(e.to_string()))?;
    let serial = cert.tbs_certificate.serial_number.as_bytes();
    let trimmed: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
    let serial_hex = crate::x509::chain::serial_hex(&trimmed);
    let spki_der = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| X509SignError::BadCertificate(e.to_string()))?;
    Ok(LeafInfo {
        serial_decimal: big_endian_to_decimal(serial),
        serial_hex,
        spki_der,
    })
}

/// `X-Amz-X509` (base64 DER leaf) and, with intermediates, `X-Amz-X509-Chain` (comma-separated
/// base64 DER, in the order given: issuer of the leaf first).
pub fn x509_headers(
    certificate_der: &[u8],
    intermediates_der: &[Vec<u8>],
) -> Vec<(String, String)> {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let mut h = vec![("X-Amz-X509".to_string(), b64(certificate_der))];
    if !intermediates_der.is_empty() {
        let chain: Vec<String> = intermediates_der.iter().map(|d| b64(d)).collect();
        h.push(("X-Amz-X509-Chain".to_string(), chain.join(",")));
    }
    h
}

/// `ALG Credential=<serial>/<scope>, SignedHeaders=<..>, Signature=<hex>`.
pub fn authorization_header(
    algorithm: &str,
    serial_decimal: &str,
    scope: &str,
    signed_headers: &str,
    signature_hex: &str,
) -> String {
    format!(
        "{algorithm} Credential={serial_decimal}/{scope}, SignedHeaders={signed_headers}, Signature={signature_hex}"
    )
}

/// Everything that goes into one `CreateSession` request.
#[derive(Debug, Clone)]
pub struct CreateSessionInput<'a> {
    /// `https://rolesanywhere.<region>.amazonaws.com` or a test endpoint.
    pub endpoint: &'a str,
    /// Signing region (see [`resolve_region`]).
    pub region: &'a str,
    pub trust_anchor_arn: &'a str,
    pub profile_arn: &'a str,
    pub role_arn: &'a str,
    /// DER leaf certificate.
    pub certificate_der: &'a [u8],
    /// DER intermediates, issuer of the leaf first (may be empty).
    pub intermediates_der: &'a [Vec<u8>],
    /// The request body (see [`session_body`]).
    pub body: &'a [u8],
    /// `Content-Type` header ([`CONTENT_TYPE`] normally).
    pub content_type: &'a str,
    /// Signing time.
    pub time: SystemTime,
}

/// A request ready for the HTTP client: send `POST url` with exactly `headers` and `body`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCreateSession {
    /// Full URL: endpoint + `/sessions?profileArn=..&roleArn=..&trustAnchorArn=..`.
    pub url: String,
    /// `Host`, `Content-Type`, `X-Amz-Date`, `X-Amz-X509`, (`X-Amz-X509-Chain`), `Authorization`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// For debug logs: the canonical request and string to sign (public data).
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
}

impl std::fmt::Debug for SignedCreateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedCreateSession")
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl SignedCreateSession {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The unsigned parts of a `CreateSession` request: request target, the headers to sign, and the
/// canonical request / string to sign. Pure.
pub struct Prepared {
    /// `/sessions?...` (wire form).
    pub target: String,
    /// Headers to send and sign, in sending order.
    pub headers: Vec<(String, String)>,
    /// `;`-joined signed header names.
    pub signed_headers: String,
    /// The canonical request.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// The credential scope.
    pub scope: String,
}

/// Builds the canonical request and string to sign for `algorithm`. Pure.
pub fn prepare(input: &CreateSessionInput<'_>, algorithm: &str) -> Result<Prepared, X509SignError> {
    let host = endpoint_host(input.endpoint)?;
    let date = amz_date(input.time);
    let scope = credential_scope(&scope_date(input.time), input.region, SERVICE);
    let query = vec![
        ("profileArn".to_string(), input.profile_arn.to_string()),
        ("roleArn".to_string(), input.role_arn.to_string()),
        (
            "trustAnchorArn".to_string(),
            input.trust_anchor_arn.to_string(),
        ),
    ];
    let mut headers = vec![
        ("Host".to_string(), host),
        ("Content-Type".to_string(), input.content_type.to_string()),
        ("X-Amz-Date".to_string(), date.clone()),
    ];
    headers.extend(x509_headers(input.certificate_der, input.intermediates_der));
    let ch = canonical_headers(&headers);
    let cq = canonical_query(&query);
    let cr = canonical_request(
        "POST",
        &canonical_uri("/sessions"),
        &cq,
        &ch,
        &sha256_hex(input.body),
    );
    let sts = string_to_sign(algorithm, &date, &scope, &cr);
    Ok(Prepared {
        target: format!("{}?{cq}", wire_path("/sessions")),
        headers,
        signed_headers: ch.signed,
        canonical_request: cr,
        string_to_sign: sts,
        scope,
    })
}

/// Builds and signs a `CreateSession` request with `key`, after checking that `key` is the
/// certificate's.
pub fn sign_create_session(
    input: &CreateSessionInput<'_>,
    key: &dyn NodeKey,
) -> Result<SignedCreateSession, X509SignError> {
    let leaf = leaf_info(input.certificate_der)?;
    for (index, der) in input.intermediates_der.iter().enumerate() {
        x509_cert::Certificate::from_der(der).map_err(|e| X509SignError::BadIntermediate {
            index: index + 1,
            detail: e.to_string(),
        })?;
    }
    if leaf.spki_der != key.public_key_der() {
        return Err(X509SignError::KeyMismatch {
            key: key.describe(),
        });
    }
    let algorithm = algorithm_name(key.algorithm());
    let p = prepare(input, algorithm)?;
    let signature = key.sign(p.string_to_sign.as_bytes())?;
    let mut headers = p.headers;
    headers.push((
        "Authorization".to_string(),
        authorization_header(
            algorithm,
            &leaf.serial_decimal,
            &p.scope,
            &p.signed_headers,
            &hex::encode(signature),
        ),
    ));
    let base = input.endpoint.trim_end_matches('/');
    Ok(SignedCreateSession {
        url: format!("{base}{}", p.target),
        headers,
        body: input.body.to_vec(),
        canonical_request: p.canonical_request,
        string_to_sign: p.string_to_sign,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;

    #[test]
    fn decimal_serials() {
        assert_eq!(big_endian_to_decimal(&[]), "0");
        assert_eq!(big_endian_to_decimal(&[0, 0]), "0");
        assert_eq!(big_endian_to_decimal(&[0x01, 0x00]), "256");
        assert_eq!(big_endian_to_decimal(&[0x00, 0xff]), "255");
        // 2^64 and a 20-byte serial like Vault issues (checked with python int.from_bytes).
        assert_eq!(
            big_endian_to_decimal(&[1, 0, 0, 0, 0, 0, 0, 0, 0]),
            "18446744073709551616"
        );
        let vault = hex::decode("3b1f0a64e2c5d1e5f6a7b8c9d0e1f20314253647").unwrap();
        assert_eq!(
            big_endian_to_decimal(&vault),
            "337522684032289657715170711583928051527250687559"
        );
    }

    #[test]
    fn arn_regions_and_resolution() {
        let ta = "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/abc";
        let pr = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/def";
        assert_eq!(arn_region(ta), Some("eu-west-1"));
        assert_eq!(arn_region("arn:aws:iam::123456789012:role/x"), None);
        assert_eq!(arn_region("nonsense"), None);
        assert_eq!(resolve_region(None, ta, pr).unwrap(), "eu-west-1");
        assert_eq!(
            resolve_region(Some("us-east-1"), ta, pr).unwrap(),
            "us-east-1"
        );
        let other = "arn:aws:rolesanywhere:us-east-2:123456789012:profile/def";
        let e = resolve_region(None, ta, other).unwrap_err().to_string();
        assert!(e.contains("eu-west-1") && e.contains("us-east-2"), "{e}");
        assert!(resolve_region(None, "odd", "odd").is_err());
    }

    #[test]
    fn endpoint_hosts() {
        let h = |e: &str| endpoint_host(e).map_err(|e| e.to_string());
        assert_eq!(
            h("https://rolesanywhere.us-east-1.amazonaws.com").unwrap(),
            "rolesanywhere.us-east-1.amazonaws.com"
        );
        assert_eq!(h("https://Example.com:443/").unwrap(), "example.com");
        assert_eq!(h("https://127.0.0.1:8443").unwrap(), "127.0.0.1:8443");
        assert_eq!(h("https://[::1]:8443").unwrap(), "[::1]:8443");
        assert_eq!(h("https://[::1]").unwrap(), "[::1]");
        for bad in [
            "rolesanywhere.amazonaws.com",
            "ftp://x",
            "https://x/sessions",
            "https://u@x",
            "https://x:abc",
            "https://",
        ] {
            assert!(h(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(
            session_body(3600, None).unwrap(),
            br#"{"durationSeconds":3600}"#
        );
        assert_eq!(
            session_body(900, Some("node-1")).unwrap(),
            br#"{"durationSeconds":900,"roleSessionName":"node-1"}"#
        );
        assert!(session_body(899, None).is_err());
        assert!(session_body(43201, None).is_err());
    }

    // The structure docs/protocols.md §1 prescribes, checked field by field on fake DER blobs.
    #[test]
    fn canonical_request_and_string_to_sign_shape() {
        let chain = vec![b"int1".to_vec(), b"int2".to_vec()];
        let input = CreateSessionInput {
            endpoint: "https://rolesanywhere.us-east-1.amazonaws.com",
            region: "us-east-1",
            trust_anchor_arn: "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta",
            profile_arn: "arn:aws:rolesanywhere:us-east-1:123456789012:profile/pr",
            role_arn: "arn:aws:iam::123456789012:role/node",
            certificate_der: b"leaf",
            intermediates_der: &chain,
            body: br#"{"durationSeconds":3600}"#,
            content_type: CONTENT_TYPE,
            time: from_unix_seconds(1440938160),
        };
        let p = prepare(&input, "AWS4-X509-RSA-SHA256").unwrap();
        let expected_cr = format!(
            "POST\n/sessions\n\
             profileArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A123456789012%3Aprofile%2Fpr&\
             roleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fnode&\
             trustAnchorArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A123456789012%3Atrust-anchor%2Fta\n\
             content-type:application/json\nhost:rolesanywhere.us-east-1.amazonaws.com\n\
             x-amz-date:20150830T123600Z\nx-amz-x509:bGVhZg==\nx-amz-x509-chain:aW50MQ==,aW50Mg==\n\n\
             content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain\n{}",
            sha256_hex(br#"{"durationSeconds":3600}"#)
        );
        assert_eq!(p.canonical_request, expected_cr);
        assert_eq!(
            p.string_to_sign,
            format!(
                "AWS4-X509-RSA-SHA256\n20150830T123600Z\n20150830/us-east-1/rolesanywhere/aws4_request\n{}",
                sha256_hex(expected_cr.as_bytes())
            )
        );
        assert!(p.target.starts_with("/sessions?profileArn=arn%3Aaws"));
        assert_eq!(
            authorization_header(
                "AWS4-X509-RSA-SHA256",
                "42",
                &p.scope,
                &p.signed_headers,
                "ab"
            ),
            "AWS4-X509-RSA-SHA256 Credential=42/20150830/us-east-1/rolesanywhere/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain, Signature=ab"
        );
        // Without intermediates the chain header is neither sent nor signed.
        let p = prepare(
            &CreateSessionInput {
                intermediates_der: &[],
                ..input
            },
            "AWS4-X509-ECDSA-SHA256",
        )
        .unwrap();
        assert_eq!(p.signed_headers, "content-type;host;x-amz-date;x-amz-x509");
        assert!(!p.canonical_request.contains("x-amz-x509-chain"));
    }
}
