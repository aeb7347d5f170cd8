//! IMDSv2 emulation for `hybridboot serve`: the request parser and the request -> response logic,
//! without any socket. The server loop (127.0.0.1 only) reads bytes, calls [`parse_request`],
//! then [`Imds::handle`] with the current credentials, and writes [`Response::to_bytes`].
//!
//! Only what AWS SDKs use for instance credentials is served:
//! `PUT /latest/api/token` (header `x-aws-ec2-metadata-token-ttl-seconds`, 1..21600),
//! `GET /latest/meta-data/iam/security-credentials/` (the role name) and
//! `GET /latest/meta-data/iam/security-credentials/<role>` (the credentials JSON). GETs need a
//! valid token (no IMDSv1); any request with `X-Forwarded-For` is refused, since it came through a
//! proxy and IMDS must not be reachable that way. When no valid credentials are at hand the answer
//! is an error status, never empty or expired keys.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Serialize;
use zeroize::Zeroizing;

use super::credentials::Credentials;
use super::time::rfc3339;
use crate::secret::Secret;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest body accepted (the token PUT has none; a little slack for odd clients).
pub const MAX_BODY_BYTES: usize = 1024;
/// Token TTL bounds, as EC2's IMDS.
pub const MAX_TOKEN_TTL_SECS: u64 = 21600;
/// Outstanding tokens kept; the oldest are dropped beyond that (a local client looping on PUT
/// must not grow our memory without bound).
pub const MAX_TOKENS: usize = 1024;

const TOKEN_PATH: &str = "/latest/api/token";
const CREDS_PREFIX: &str = "/latest/meta-data/iam/security-credentials";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, query string removed.
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response. The body may hold credentials: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Secret,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.expose().len())
            .finish()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: Secret::new(body),
        }
    }

    /// The response on the wire (`Connection: close`: one request per connection keeps the
    /// server loop trivial; SDKs cope).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let body = self.body.expose().as_bytes();
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut bytes = Zeroizing::new(out.into_bytes());
        bytes.extend_from_slice(body);
        bytes
    }
}

/// Outcome of feeding the bytes read so far to the parser.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Read more (the head is not complete yet, nor too large).
    Incomplete,
    /// A complete request; `consumed` bytes (head + body) belong to it.
    Complete { request: Request, consumed: usize },
    /// Malformed or too large: send this and close.
    Reject(Response),
}

/// Parses an HTTP/1.x request head from `buf` (size-capped), plus a small body if announced.
pub fn parse_request(buf: &[u8]) -> Parse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4));
    let (head_len, body_start) = match end {
        Some(e) => e,
        None if buf.len() > MAX_HEAD_BYTES => {
            return Parse::Reject(Response::text(431, "request head too large\n"))
        }
        None => return Parse::Incomplete,
    };
    if head_len > MAX_HEAD_BYTES {
        return Parse::Reject(Response::text(431, "request head too large\n"));
    }
    let bad = |why: &str| Parse::Reject(Response::text(400, &format!("{why}\n")));
    let head = match std::str::from_utf8(&buf[..head_len]) {
        Ok(h) => h,
        Err(_) => return bad("request head is not UTF-8"),
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && t.starts_with('/') => (m, t, v),
        _ => return bad("malformed request line"),
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return bad("unsupported HTTP version");
    }
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return bad("malformed method");
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Parse::Reject(Response::text(431, "too many headers\n"));
        }
        let Some((k, v)) = line.split_once(':') else {
            return bad("malformed header line");
        };
        if k.is_empty()
            || k.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return bad("malformed header name");
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some() {
        return Parse::Reject(Response::text(501, "transfer-encoding is not supported\n"));
    }
    let body_len = match header("content-length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY_BYTES => n,
            Ok(_) => return Parse::Reject(Response::text(413, "body too large\n")),
            Err(_) => return bad("malformed content-length"),
        },
    };
    if buf.len() < body_start + body_len {
        return Parse::Incomplete;
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    Parse::Complete {
        request: Request {
            method: method.to_string(),
            path,
            headers,
        },
        consumed: body_start + body_len,
    }
}

/// The IMDS address clients use when nothing points them elsewhere (the node may redirect it
/// to `serve` with a firewall rule); they send it as `Host` without a port.
pub const IMDS_IPV4: &str = "169.254.169.254";
/// EC2's IPv6 IMDS address, as a `Host` value.
pub const IMDS_IPV6: &str = "[fd00:ec2::254]";

/// Refuses a request whose `Host` is not one `serve` answers to, before anything else (no
/// token is issued). A web page that an attacker's DNS rebinds to 127.0.0.1 reaches the socket,
/// but its browser sends the attacker's name as `Host`; only these pass:
///
/// - a loopback host (`localhost`, any `127.0.0.0/8` address, `[::1]`) with `serve`'s own
///   `port` (no port means 80), which is what an SDK pointed at
///   `AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:<port>/` sends;
/// - the IMDS addresses ([`IMDS_IPV4`], [`IMDS_IPV6`]) with no port or port 80, which is what
///   an SDK with the default endpoint sends when the node redirects it to `serve`.
///
/// A missing or repeated `Host` is a 400, any other host a 403.
pub fn check_host(req: &Request, port: u16) -> Option<Response> {
    let mut hosts = req.headers.iter().filter(|(k, _)| k == "host");
    let (Some((_, host)), None) = (hosts.next(), hosts.next()) else {
        return Some(Response::text(400, "exactly one Host header is required\n"));
    };
    if host_allowed(host, port) {
        None
    } else {
        Some(Response::text(
            403,
            "Host not allowed: use 127.0.0.1, localhost or [::1] with this server's port, or 169.254.169.254\n",
        ))
    }
}

/// Whether `host` (a `Host` header value) names this server: see [`check_host`].
pub fn host_allowed(host: &str, port: u16) -> bool {
    let Some((name, given)) = split_host_port(host) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    let loopback = name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback());
    let imds = name == IMDS_IPV4 || name == IMDS_IPV6;
    let effective = given.unwrap_or(80);
    (loopback && effective == port) || (imds && effective == 80)
}

/// `name[:port]` or `[v6]:port` into the name (brackets kept) and the port, if well formed.
fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| -> Option<u16> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (name, rest) = if host.starts_with('[') {
        let end = host.find(']')?;
        host.split_at(end + 1)
    } else {
        match host.find(':') {
            Some(i) => host.split_at(i),
            None => (host, ""),
        }
    };
    if name.is_empty() || name == "[]" {
        return None;
    }
    match rest {
        "" => Some((name, None)),
        r => Some((name, Some(port(r.strip_prefix(':')?)?))),
    }
}

/// What the emulator currently has to serve.
#[derive(Debug, Clone, Copy)]
pub struct CredentialView<'a> {
    /// The latest credentials, if a fetch ever succeeded.
    pub credentials: Option<&'a Credentials>,
    /// When they were fetched.
    pub last_updated: SystemTime,
}

#[derive(Serialize)]
struct CredsJson<'a> {
    #[serde(rename = "Code")]
    code: &'static str,
    #[serde(rename = "LastUpdated")]
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "Token")]
    token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: String,
}

/// A random session token (32 bytes from the OS, base64url).
pub fn random_token() -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The emulator's state: the role name it advertises and the tokens it issued.
#[derive(Debug)]
pub struct Imds {
    role_name: String,
    // token -> expiry; tokens are bearer secrets but only valid against this local emulator.
    tokens: HashMap<String, SystemTime>,
}

impl Imds {
    /// An emulator advertising `role_name` (the Roles Anywhere role's name, like the reference).
    pub fn new(role_name: impl Into<String>) -> Imds {
        Imds {
            role_name: role_name.into(),
            tokens: HashMap::new(),
        }
    }

    /// Answers one request at `now`. `new_token` makes a fresh token ([`random_token`] in the
    /// server; fixed in tests).
    pub fn handle(
        &mut self,
        req: &Request,
        now: SystemTime,
        view: CredentialView<'_>,
        new_token: impl FnOnce() -> String,
    ) -> Response {
        if req.header("x-forwarded-for").is_some() {
            return Response::text(
                403,
                "requests through a proxy (X-Forwarded-For) are refused\n",
            );
        }
        if req.path == TOKEN_PATH {
            if req.method != "PUT" {
                let mut r = Response::text(405, "use PUT for a token\n");
                r.headers.push(("Allow".into(), "PUT".into()));
                return r;
            }
            return self.issue_token(req, now, new_token);
        }
        if req.method != "GET" {
            let mut r = Response::text(405, "method not allowed\n");
            r.headers.push(("Allow".into(), "GET".into()));
            return r;
        }
        if !self.token_valid(req.header(TOKEN_HEADER), now) {
            return Response::text(
                401,
                "a valid x-aws-ec2-metadata-token is required (IMDSv2)\n",
            );
        }
        let rest = match req.path.strip_prefix(CREDS_PREFIX) {
            Some(r) => r,
            None => return Response::text(404, "not found\n"),
        };
        match rest {
            "" | "/" => Response::text(200, &self.role_name),
            r if r.strip_prefix('/') == Some(self.role_name.as_str()) => {
                self.credentials_response(now, view)
            }
            _ => Response::text(404, "not found\n"),
        }
    }

    fn issue_token(
        &mut self,
        req: &Request,
        now: SystemTime,
        new_token: impl FnOnce() -> String,
    ) -> Response {
        let ttl = match req.header(TTL_HEADER).map(|v| v.parse::<u64>()) {
            Some(Ok(t)) if (1..=MAX_TOKEN_TTL_SECS).contains(&t) => t,
            Some(_) => {
                return Response::text(
                    400,
                    "x-aws-ec2-metadata-token-ttl-seconds must be 1..21600\n",
                )
            }
            None => {
                return Response::text(400, "x-aws-ec2-metadata-token-ttl-seconds is required\n")
            }
        };
        self.tokens.retain(|_, exp| *exp > now);
        while self.tokens.len() >= MAX_TOKENS {
            let oldest = self
                .tokens
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.tokens.remove(&k),
                None => break,
            };
        }
        let token = new_token();
        self.tokens
            .insert(token.clone(), now + Duration::from_secs(ttl));
        let mut r = Response::text(200, &token);
        r.headers.push((TTL_HEADER.into(), ttl.to_string()));
        r
    }

    fn token_valid(&self, token: Option<&str>, now: SystemTime) -> bool {
        token
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|exp| *exp > now)
    }

    fn credentials_response(&self, now: SystemTime, view: CredentialView<'_>) -> Response {
        let Some(c) = view.credentials else {
            return Response::text(503, "no credentials yet: the Roles Anywhere session could not be obtained (see hybridboot's log)\n");
        };
        let (Some(token), Some(exp)) = (c.session_token.as_ref(), c.expiration) else {
            return Response::text(503, "credentials unavailable\n");
        };
        if exp <= now || c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
            return Response::text(
                503,
                "credentials expired and could not be refreshed (see hybridboot's log)\n",
            );
        }
        let json = CredsJson {
            code: "Success",
            last_updated: rfc3339(view.last_updated),
            kind: "AWS-HMAC",
            access_key_id: &c.access_key_id,
            secret_access_key: c.secret_access_key.expose(),
            token: token.expose(),
            expiration: rfc3339(exp),
        };
        Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Secret::new(serde_json::to_string(&json).expect("strings serialise")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;

    fn req(raw: &str) -> Request {
        match parse_request(raw.as_bytes()) {
            Parse::Complete { request, consumed } => {
                assert_eq!(consumed, raw.len());
                request
            }
            other => panic!("{other:?}"),
        }
    }

    fn creds(exp: i64) -> Credentials {
        Credentials {
            access_key_id: "ASIAIMDS".into(),
            secret_access_key: Secret::new("IMDSSECRET"),
            session_token: Some(Secret::new("IMDSTOKEN")),
            expiration: Some(from_unix_seconds(exp)),
        }
    }

    const T0: i64 = 1_700_000_000;

    fn token(imds: &mut Imds, ttl: &str) -> Response {
        let r = req(&format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: 127.0.0.1\r\nX-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n\r\n"
        ));
        imds.handle(
            &r,
            from_unix_seconds(T0),
            CredentialView {
                credentials: None,
                last_updated: from_unix_seconds(T0),
            },
            || "tok-1".into(),
        )
    }

    fn get(
        imds: &mut Imds,
        path: &str,
        tok: Option<&str>,
        now: i64,
        c: Option<&Credentials>,
    ) -> Response {
        let hdr = tok
            .map(|t| format!("X-aws-ec2-metadata-token: {t}\r\n"))
            .unwrap_or_default();
        let r = req(&format!(
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{hdr}\r\n"
        ));
        imds.handle(
            &r,
            from_unix_seconds(now),
            CredentialView {
                credentials: c,
                last_updated: from_unix_seconds(T0 - 60),
            },
            || unreachable!(),
        )
    }

    #[test]
    fn only_loopback_and_imds_hosts_with_the_right_port_pass() {
        for ok in [
            "127.0.0.1:9911",
            "localhost:9911",
            "LOCALHOST:9911",
            "127.1.2.3:9911",
            "[::1]:9911",
            "169.254.169.254",
            "169.254.169.254:80",
            "[fd00:ec2::254]",
        ] {
            assert!(host_allowed(ok, 9911), "{ok}");
        }
        for bad in [
            "evil.example:9911",
            "evil.example",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.0.0.1:9912",
            "127.0.0.1:09911x",
            "127.0.0.1:",
            "localhost",
            "[::1]",
            "[::1]9911",
            "169.254.169.254:9911",
            "0177.0.0.1:9911",
            "127.0.0.1.evil.example:9911",
            "10.0.0.1:9911",
            "",
            ":9911",
            "[]:9911",
            "[::1",
        ] {
            assert!(!host_allowed(bad, 9911), "{bad}");
        }
        // On port 80 a loopback host may leave the port out.
        assert!(host_allowed("127.0.0.1", 80) && host_allowed("localhost:80", 80));
        let with = |hosts: &str| req(&format!("GET / HTTP/1.1\r\n{hosts}\r\n"));
        assert_eq!(check_host(&with("Host: 127.0.0.1:9911\r\n"), 9911), None);
        let r = check_host(&with("Host: rebound.example:9911\r\n"), 9911).unwrap();
        assert_eq!(r.status, 403);
        assert!(r.body.expose().contains("Host not allowed"));
        assert_eq!(check_host(&with(""), 9911).unwrap().status, 400);
        let two = with("Host: 127.0.0.1:9911\r\nHost: evil.example\r\n");
        assert_eq!(check_host(&two, 9911).unwrap().status, 400);
    }

    #[test]
    fn token_then_role_then_credentials() {
        let mut imds = Imds::new("eks-hybrid-node");
        let t = token(&mut imds, "21600");
        assert_eq!((t.status, t.body.expose()), (200, "tok-1"));
        assert!(t.headers.contains(&(TTL_HEADER.into(), "21600".into())));
        let c = creds(T0 + 3600);
        let r = get(
            &mut imds,
            "/latest/meta-data/iam/security-credentials/",
            Some("tok-1"),
            T0,
            Some(&c),
        );
        assert_eq!((r.status, r.body.expose()), (200, "eks-hybrid-node"));
        let r = get(
            &mut imds,
            "/latest/meta-data/iam/security-credentials/eks-hybrid-node",
            Some("tok-1"),
            T0,
            Some(&c),
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body.expose(),
            r#"{"Code":"Success","LastUpdated":"2023-11-14T22:12:20Z","Type":"AWS-HMAC","AccessKeyId":"ASIAIMDS","SecretAccessKey":"IMDSSECRET","Token":"IMDSTOKEN","Expiration":"2023-11-14T23:13:20Z"}"#
        );
        let wire = r.to_bytes();
        let wire = std::str::from_utf8(&wire).unwrap();
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(wire.contains(&format!("Content-Length: {}\r\n", r.body.expose().len())));
        assert!(!format!("{r:?}").contains("IMDSSECRET"));
        let r = get(
            &mut imds,
            "/latest/meta-data/iam/security-credentials/other-role",
            Some("tok-1"),
            T0,
            Some(&c),
        );
        assert_eq!(r.status, 404);
    }

    #[test]
    fn token_rules() {
        let mut imds = Imds::new("r");
        for bad in ["0", "21601", "-1", "abc", ""] {
            assert_eq!(token(&mut imds, bad).status, 400, "{bad:?}");
        }
        let r = req("PUT /latest/api/token HTTP/1.1\r\n\r\n");
        let view = CredentialView {
            credentials: None,
            last_updated: from_unix_seconds(T0),
        };
        assert_eq!(
            imds.handle(&r, from_unix_seconds(T0), view, || "x".into())
                .status,
            400
        );
        let r = req("PUT /latest/api/token HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nx-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n");
        assert_eq!(
            imds.handle(&r, from_unix_seconds(T0), view, || "x".into())
                .status,
            403
        );
        let r = req("GET /latest/api/token HTTP/1.1\r\n\r\n");
        assert_eq!(
            imds.handle(&r, from_unix_seconds(T0), view, || "x".into())
                .status,
            405
        );
        // A 1-second token expires.
        assert_eq!(token(&mut imds, "1").status, 200);
        let c = creds(T0 + 3600);
        let p = "/latest/meta-data/iam/security-credentials/";
        assert_eq!(get(&mut imds, p, Some("tok-1"), T0, Some(&c)).status, 200);
        assert_eq!(
            get(&mut imds, p, Some("tok-1"), T0 + 1, Some(&c)).status,
            401
        );
        // No token (IMDSv1) or an unknown one: 401.
        assert_eq!(get(&mut imds, p, None, T0, Some(&c)).status, 401);
        assert_eq!(get(&mut imds, p, Some("forged"), T0, Some(&c)).status, 401);
    }

    #[test]
    fn only_get_reads_metadata() {
        let mut imds = Imds::new("r");
        token(&mut imds, "60");
        let view = CredentialView {
            credentials: None,
            last_updated: from_unix_seconds(T0),
        };
        for m in ["POST", "HEAD", "DELETE", "PUT"] {
            let r = req(&format!("{m} /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nx-aws-ec2-metadata-token: tok-1\r\n\r\n"));
            let resp = imds.handle(&r, from_unix_seconds(T0), view, || unreachable!());
            assert_eq!(resp.status, 405, "{m}");
            assert!(resp.headers.contains(&("Allow".into(), "GET".into())));
        }
    }

    #[test]
    fn proxied_gets_are_refused_too() {
        let mut imds = Imds::new("r");
        token(&mut imds, "60");
        let r = req("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nx-aws-ec2-metadata-token: tok-1\r\nx-forwarded-for: 1.2.3.4\r\n\r\n");
        let view = CredentialView {
            credentials: None,
            last_updated: from_unix_seconds(T0),
        };
        assert_eq!(
            imds.handle(&r, from_unix_seconds(T0), view, || unreachable!())
                .status,
            403
        );
    }

    #[test]
    fn never_empty_or_expired_keys() {
        let mut imds = Imds::new("r");
        token(&mut imds, "21600");
        let p = "/latest/meta-data/iam/security-credentials/r";
        let r = get(&mut imds, p, Some("tok-1"), T0, None);
        assert_eq!(r.status, 503);
        assert!(!r.body.expose().contains("AccessKeyId"));
        let expired = creds(T0);
        let r = get(&mut imds, p, Some("tok-1"), T0, Some(&expired));
        assert_eq!(r.status, 503);
        assert!(!r.body.expose().contains("IMDSSECRET"));
        let mut empty = creds(T0 + 3600);
        empty.secret_access_key = Secret::new("");
        assert_eq!(
            get(&mut imds, p, Some("tok-1"), T0, Some(&empty)).status,
            503
        );
    }

    #[test]
    fn token_store_is_bounded() {
        let mut imds = Imds::new("r");
        let view = CredentialView {
            credentials: None,
            last_updated: from_unix_seconds(T0),
        };
        for i in 0..(MAX_TOKENS + 10) {
            let r = req("PUT /latest/api/token HTTP/1.1\r\nx-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n");
            assert_eq!(
                imds.handle(&r, from_unix_seconds(T0), view, || format!("t{i}"))
                    .status,
                200
            );
        }
        assert_eq!(imds.tokens.len(), MAX_TOKENS);
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 43);
    }

    #[test]
    fn parser_limits_and_errors() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parse::Incomplete
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(parse_request(big.as_bytes()), Parse::Reject(r) if r.status == 431));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse_request(many.as_bytes()), Parse::Reject(r) if r.status == 431));
        for bad in [
            "GET /\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET x HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(bad.as_bytes()), Parse::Reject(r) if r.status == 400),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_request(b"PUT / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"),
            Parse::Reject(r) if r.status == 413
        ));
        assert!(matches!(
            parse_request(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parse::Reject(r) if r.status == 501
        ));
        // A short body is waited for and consumed; the query string is dropped from the path.
        assert_eq!(
            parse_request(b"PUT /a?b=c HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Parse::Incomplete
        );
        match parse_request(b"PUT /a?b=c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcEXTRA") {
            Parse::Complete { request, consumed } => {
                assert_eq!(request.path, "/a");
                assert_eq!(
                    consumed,
                    "PUT /a?b=c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".len()
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
