//! AWS Signature Version 4: the canonicalisation shared by the HMAC variant (EKS, STS) and the
//! X.509 variant of IAM Roles Anywhere ([`super::sigv4x509`]), and the HMAC signer itself.
//!
//! Everything here is a pure function of its inputs, the time included, so each step has a
//! known-answer test. We do not use the `aws-sigv4` crate in the binary (the X.509 variant needs
//! the same canonicaliser, and the crate's dependency tree is large for a static binary); a
//! differential test (`tests/aws_pure.rs`) checks that both sign identically.
//!
//! Conventions: paths and query parameters are given *decoded*; this module encodes them (once
//! for the wire, twice for the canonical URI, as every service but S3 expects).

use std::fmt::Write as _;
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::credentials::Credentials;
use super::time::{amz_date, scope_date};

/// The algorithm name of HMAC-signed requests.
pub const HMAC_ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Hex SHA-256 of the empty string: the payload hash of bodiless requests.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An HTTP request reduced to what SigV4 covers.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Decoded absolute path (`/`, `/clusters/my-cluster`).
    pub path: String,
    /// Decoded query parameters, in any order.
    pub query: Vec<(String, String)>,
    /// Header names (any case) and values, `Host` included.
    pub headers: Vec<(String, String)>,
    /// The body sent.
    pub body: Vec<u8>,
}

// Headers may carry a session token once signed: never print values.
impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "query",
                &self.query.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl HttpRequest {
    /// A request with a `Host` header (`host` or `host:port`, as the HTTP client sends it).
    pub fn new(method: &str, host: &str, path: &str) -> HttpRequest {
        HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: Vec::new(),
            headers: vec![("Host".to_string(), host.to_string())],
            body: Vec::new(),
        }
    }

    /// Adds a query parameter (decoded).
    pub fn with_query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces (or adds) a header.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
    }

    /// The request target to put on the wire: encoded path, `?`, canonically ordered query.
    pub fn path_and_query(&self) -> String {
        let mut out = wire_path(&self.path);
        if !self.query.is_empty() {
            out.push('?');
            out.push_str(&canonical_query(&self.query));
        }
        out
    }
}

/// RFC 3986 percent-encoding as SigV4 wants it: every byte except `A-Z a-z 0-9 - _ . ~` becomes
/// `%XY` (uppercase hex), so a space is `%20`, never `+`. `/` is kept when `keep_slash`.
pub fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The path as sent: each segment encoded once, `/` kept; empty means `/`.
pub fn wire_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    uri_encode(path, true)
}

/// The canonical URI: the wire path encoded a second time (all services but S3).
pub fn canonical_uri(path: &str) -> String {
    uri_encode(&wire_path(path), true)
}

/// The canonical query string: names and values encoded, pairs sorted by name then value,
/// joined with `&`; `name=` for empty values.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// A header value as signed: trimmed, inner runs of spaces and tabs collapsed to one space.
pub fn normalize_header_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, word) in value
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Canonical headers block and signed-headers list of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalHeaders {
    /// `name:value\n` per header, lowercase names sorted; repeated headers joined with `,`.
    pub canonical: String,
    /// Lowercase names joined with `;`.
    pub signed: String,
}

/// Builds the canonical headers from every header given (the caller decides what is signed).
pub fn canonical_headers(headers: &[(String, String)]) -> CanonicalHeaders {
    let mut merged: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in headers {
        merged
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(normalize_header_value(v));
    }
    let mut canonical = String::new();
    for (k, vs) in &merged {
        canonical.push_str(k);
        canonical.push(':');
        canonical.push_str(&vs.join(","));
        canonical.push('\n');
    }
    let signed = merged.keys().cloned().collect::<Vec<_>>().join(";");
    CanonicalHeaders { canonical, signed }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `METHOD\nURI\nQUERY\nHEADERS\n\nSIGNED\nPAYLOAD_HASH` (the headers block ends with its own
/// newline, hence the blank line).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &CanonicalHeaders,
    payload_hash: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{}\n{}\n{payload_hash}",
        headers.canonical, headers.signed
    )
}

/// The canonical request of `req` as it stands (all its headers signed, body hashed).
pub fn canonical_request_of(req: &HttpRequest) -> (String, CanonicalHeaders) {
    let headers = canonical_headers(&req.headers);
    let cr = canonical_request(
        &req.method,
        &canonical_uri(&req.path),
        &canonical_query(&req.query),
        &headers,
        &sha256_hex(&req.body),
    );
    (cr, headers)
}

/// `yyyymmdd/region/service/aws4_request`.
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// `ALG\nX-Amz-Date\nSCOPE\nhex(sha256(canonical request))`.
pub fn string_to_sign(
    algorithm: &str,
    amz_date: &str,
    scope: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The derived signing key `HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service),
/// "aws4_request")`; zeroized on drop like the secret it comes from.
pub fn signing_key(
    secret_access_key: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<[u8; 32]> {
    let k_secret = Zeroizing::new(format!("AWS4{secret_access_key}"));
    let k_date = Zeroizing::new(hmac_sha256(k_secret.as_bytes(), date.as_bytes()));
    let k_region = Zeroizing::new(hmac_sha256(&*k_date, region.as_bytes()));
    let k_service = Zeroizing::new(hmac_sha256(&*k_region, service.as_bytes()));
    Zeroizing::new(hmac_sha256(&*k_service, b"aws4_request"))
}

/// Where a signature goes and what the signer produced (no secret inside: the canonical
/// request may hold the session token only when presigning, where it is public in the URL
/// anyway; do not log it all the same).
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    /// The canonical request that was signed.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// Lowercase hex signature.
    pub signature: String,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// Signs `req` in place with `AWS4-HMAC-SHA256` in the `Authorization` header: adds
/// `X-Amz-Date`, `X-Amz-Security-Token` (when the credentials have one; it is signed, as the AWS
/// SDKs do) and `Authorization`. Every header present is signed, so set `Host`, `Content-Type`
/// and the like before calling, and send exactly these headers.
pub fn sign_request(
    req: &mut HttpRequest,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Signature {
    let date = amz_date(now);
    req.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
    req.set_header("X-Amz-Date", &date);
    if let Some(token) = &creds.session_token {
        req.set_header("X-Amz-Security-Token", token.expose());
    }
    let (cr, headers) = canonical_request_of(req);
    let scope = credential_scope(&date[..8], region, service);
    let sts = string_to_sign(HMAC_ALGORITHM, &date, &scope, &cr);
    let key = signing_key(
        creds.secret_access_key.expose(),
        &date[..8],
        region,
        service,
    );
    let signature = hex::encode(hmac_sha256(&*key, sts.as_bytes()));
    req.headers.push((
        "Authorization".to_string(),
        format!(
            "{HMAC_ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            creds.access_key_id, headers.signed
        ),
    ));
    Signature {
        canonical_request: cr,
        string_to_sign: sts,
        signature,
    }
}

/// Presigns `req` (query-string authentication): returns the request target
/// (`/path?...&X-Amz-Signature=..`) to append to `scheme://host`. Every header of `req` is
/// signed but not sent in the URL (the holder of the URL must send them, like `x-k8s-aws-id`).
/// The payload hash is that of `req.body` (empty for a GET).
pub fn presign(
    req: &HttpRequest,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
    expires_secs: u32,
) -> (String, Signature) {
    let date = amz_date(now);
    let day = scope_date(now);
    let scope = credential_scope(&day, region, service);
    let headers = canonical_headers(&req.headers);
    let mut query = req.query.clone();
    query.push(("X-Amz-Algorithm".into(), HMAC_ALGORITHM.into()));
    query.push((
        "X-Amz-Credential".into(),
        format!("{}/{scope}", creds.access_key_id),
    ));
    query.push(("X-Amz-Date".into(), date.clone()));
    query.push(("X-Amz-Expires".into(), expires_secs.to_string()));
    if let Some(token) = &creds.session_token {
        query.push(("X-Amz-Security-Token".into(), token.expose().to_string()));
    }
    query.push(("X-Amz-SignedHeaders".into(), headers.signed.clone()));
    let cq = canonical_query(&query);
    let cr = canonical_request(
        &req.method,
        &canonical_uri(&req.path),
        &cq,
        &headers,
        &sha256_hex(&req.body),
    );
    let sts = string_to_sign(HMAC_ALGORITHM, &date, &scope, &cr);
    let key = signing_key(creds.secret_access_key.expose(), &day, region, service);
    let signature = hex::encode(hmac_sha256(&*key, sts.as_bytes()));
    let target = format!("{}?{cq}&X-Amz-Signature={signature}", wire_path(&req.path));
    (
        target,
        Signature {
            canonical_request: cr,
            string_to_sign: sts,
            signature,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;
    use crate::secret::Secret;

    fn example_creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
            expiration: None,
        }
    }

    // The AWS SigV4 test suite's date: 20150830T123600Z.
    fn suite_time() -> SystemTime {
        from_unix_seconds(1440938160)
    }

    #[test]
    fn encoding_follows_rfc3986() {
        assert_eq!(
            uri_encode("a b+c*d~e_f.g-h/i", false),
            "a%20b%2Bc%2Ad~e_f.g-h%2Fi"
        );
        assert_eq!(uri_encode("a/b c", true), "a/b%20c");
        assert_eq!(uri_encode("é", false), "%C3%A9");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a b"), "/a%2520b");
    }

    #[test]
    fn query_is_sorted_by_encoded_name_then_value() {
        let q = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "z z".to_string()),
            ("a".to_string(), "y".to_string()),
            ("A".to_string(), "".to_string()),
            ("roleArn".to_string(), "arn:aws:iam::1:role/x".to_string()),
        ];
        assert_eq!(
            canonical_query(&q),
            "A=&a=y&a=z%20z&b=2&roleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx"
        );
    }

    #[test]
    fn headers_are_lowercased_sorted_trimmed_and_merged() {
        let h = vec![
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
            ("Host".to_string(), " example.amazonaws.com ".to_string()),
            ("My-Header1".to_string(), "  a   b \t c  ".to_string()),
            ("my-header1".to_string(), "second".to_string()),
        ];
        let c = canonical_headers(&h);
        assert_eq!(
            c.canonical,
            "host:example.amazonaws.com\nmy-header1:a b c,second\nx-amz-date:20150830T123600Z\n"
        );
        assert_eq!(c.signed, "host;my-header1;x-amz-date");
    }

    // aws-sig-v4-test-suite/get-vanilla: the documented canonical request, string to sign and
    // Authorization header.
    #[test]
    fn get_vanilla_vector() {
        let mut req = HttpRequest::new("GET", "example.amazonaws.com", "/");
        let sig = sign_request(
            &mut req,
            &example_creds(None),
            "us-east-1",
            "service",
            suite_time(),
        );
        assert_eq!(
            sig.canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sig.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            req.header("authorization").unwrap(),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    // aws-sig-v4-test-suite/get-vanilla-query-order-key-case.
    #[test]
    fn get_vanilla_query_order_vector() {
        let mut req = HttpRequest::new("GET", "example.amazonaws.com", "/")
            .with_query("Param2", "value2")
            .with_query("Param1", "value1");
        let sig = sign_request(
            &mut req,
            &example_creds(None),
            "us-east-1",
            "service",
            suite_time(),
        );
        assert_eq!(
            sig.signature,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        assert_eq!(req.path_and_query(), "/?Param1=value1&Param2=value2");
    }

    // aws-sig-v4-test-suite/post-x-www-form-urlencoded: body hashed, content-type signed.
    #[test]
    fn post_form_vector() {
        let mut req = HttpRequest::new("POST", "example.amazonaws.com", "/")
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body("Param1=value1");
        let sig = sign_request(
            &mut req,
            &example_creds(None),
            "us-east-1",
            "service",
            suite_time(),
        );
        assert_eq!(
            sig.signature,
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn session_token_is_signed_and_sent_but_never_printed() {
        let mut req = HttpRequest::new("GET", "example.amazonaws.com", "/");
        let sig = sign_request(
            &mut req,
            &example_creds(Some("SESSIONTOKENVALUE")),
            "us-east-1",
            "service",
            suite_time(),
        );
        assert_eq!(
            req.header("x-amz-security-token"),
            Some("SESSIONTOKENVALUE")
        );
        assert!(req
            .header("authorization")
            .unwrap()
            .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"));
        let shown = format!("{req:?} {sig:?}");
        assert!(!shown.contains("SESSIONTOKENVALUE"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    }

    #[test]
    fn signing_twice_replaces_rather_than_duplicates() {
        let mut req = HttpRequest::new("GET", "example.amazonaws.com", "/");
        let creds = example_creds(None);
        let a = sign_request(&mut req, &creds, "us-east-1", "service", suite_time());
        let b = sign_request(&mut req, &creds, "us-east-1", "service", suite_time());
        assert_eq!(a, b);
        assert_eq!(
            req.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .count(),
            1
        );
    }
}
