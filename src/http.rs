//! The one HTTP client of hybridboot: blocking HTTP/1.1 over rustls (ring provider, webpki
//! verification), used by every remote call (Vault, IAM Roles Anywhere, EKS, STS, downloads).
//!
//! Why our own small client rather than `ureq`/`minreq`: the TLS client certificate's private
//! key lives in a TPM or HSM, so the handshake must sign through [`NodeKey`]; `minreq` cannot take
//! a custom CA or client certificate, and `ureq` 3 only takes an in-memory private key unless one
//! writes a connector against its unversioned transport API. A request here is one connection
//! (`Connection: close`), which keeps the state machine small: head parsing by `httparse`,
//! `Content-Length`, chunked, or read-to-close bodies, a size cap, and deadlines.
//!
//! Trust roots: by default the Mozilla roots compiled in from `webpki-roots`, not the system
//! bundle. The binary is static and lands on images (Yocto, minimal rootfs) that may ship no CA
//! bundle or keep it at another path; compiled-in roots behave the same everywhere, and the
//! private CAs that matter (Vault's) are always configured explicitly with a bundle
//! ([`ClientBuilder::ca_bundle_file`]), which then replaces the defaults.
//!
//! Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (lowercase first): `CONNECT` tunnels
//! for https, absolute-form requests for http.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use zeroize::Zeroizing;

use crate::key::{Algorithm, NodeKey};
use crate::retry::{self, RetryPolicy, Retryable};
use crate::secret::Secret;

/// Largest response head (status line + headers) we accept.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Errors of one HTTP exchange. Messages are one line and name the peer; they never contain
/// request headers or bodies (which may carry tokens).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot resolve {peer}: {detail}")]
    Resolve { peer: String, detail: String },
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        peer: String,
        #[source]
        source: io::Error,
    },
    #[error("proxy {proxy} refused the tunnel to {peer}: {detail}")]
    Proxy {
        proxy: String,
        peer: String,
        detail: String,
        /// Whether the proxy's answer suggests trying again (502/503/504).
        transient: bool,
    },
    #[error("TLS certificate verification of {peer} failed: {detail} (check the CA bundle and the server name)")]
    TlsVerification { peer: String, detail: String },
    #[error("TLS handshake with {peer} failed: {detail}")]
    Tls { peer: String, detail: String },
    #[error("{peer} did not answer in time ({phase})")]
    Timeout { peer: String, phase: &'static str },
    #[error("connection to {peer} failed while {phase}: {source}")]
    Io {
        peer: String,
        phase: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("malformed HTTP response from {peer}: {detail}")]
    Protocol { peer: String, detail: String },
    #[error("response from {peer} exceeds the {limit}-byte limit")]
    TooLarge { peer: String, limit: usize },
    #[error("{peer} answered HTTP {code}{}", excerpt_suffix(.excerpt))]
    Status {
        peer: String,
        code: u16,
        /// The start of the body, printable characters only (error bodies; never request data).
        excerpt: String,
        /// The full body, for callers that parse structured errors.
        body: Vec<u8>,
        /// `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
    },
    #[error("reading CA bundle {path}: {detail}")]
    CaBundle { path: String, detail: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

impl HttpError {
    /// Whether trying again later may succeed: connection problems, timeouts, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Resolve { .. }
            | HttpError::Connect { .. }
            | HttpError::Timeout { .. }
            | HttpError::Io { .. } => true,
            HttpError::Proxy { transient, .. } => *transient,
            HttpError::Status { code, .. } => *code == 429 || (500..600).contains(code),
            _ => false,
        }
    }

    /// Whether the request certainly never reached the server's application (so even a
    /// non-idempotent request, such as unwrapping a single-use token, may be sent again).
    pub fn before_request_sent(&self) -> bool {
        matches!(
            self,
            HttpError::Resolve { .. }
                | HttpError::Connect { .. }
                | HttpError::Proxy { .. }
                | HttpError::Timeout {
                    phase: "connecting" | "TLS handshake",
                    ..
                }
        )
    }

    /// The HTTP status code, for status errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Retryable for HttpError {
    fn is_transient(&self) -> bool {
        HttpError::is_transient(self)
    }
    fn is_throttled(&self) -> bool {
        matches!(self, HttpError::Status { code: 429, .. })
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An absolute http(s) URL, parsed just enough to connect and build a request line.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    /// Parses `http[s]://host[:port][/path][?query]`. User info is refused (credentials do not
    /// belong in URLs); IPv6 hosts go in brackets.
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        Self::parse_inner(s, false).map(|(u, _)| u)
    }

    fn parse_inner(s: &str, allow_userinfo: bool) -> Result<(Url, Option<String>), HttpError> {
        let bad = |reason: &str| HttpError::InvalidUrl {
            url: redact_userinfo(s),
            reason: reason.to_string(),
        };
        let (scheme, rest) = if let Some(r) = strip_prefix_ci(s, "https://") {
            (Scheme::Https, r)
        } else if let Some(r) = strip_prefix_ci(s, "http://") {
            (Scheme::Http, r)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (mut authority, tail) = rest.split_at(split);
        let tail = tail.split('#').next().unwrap_or("");
        let mut userinfo = None;
        if let Some(at) = authority.rfind('@') {
            if !allow_userinfo {
                return Err(bad("user info (user:password@) is not allowed here"));
            }
            userinfo = Some(authority[..at].to_string());
            authority = &authority[at + 1..];
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed '[' in host"))?;
            let host = &r[..end];
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("invalid IPv6 address"))?;
            let after = &r[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ']'")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("invalid port"))?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(bad("invalid character in host"));
        }
        let path = if tail.is_empty() {
            "/".to_string()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_string()
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "spaces or control characters in the path: percent-encode them",
            ));
        }
        Ok((
            Url {
                scheme,
                host: host.to_ascii_lowercase(),
                port,
                path,
            },
            userinfo,
        ))
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port (explicit or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Path and query, starting with `/`.
    pub fn path_and_query(&self) -> &str {
        &self.path
    }

    /// `host:port`, with brackets around IPv6 addresses (for `Host` and `CONNECT`).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value: the port only when it is not the scheme's default.
    fn host_header(&self) -> String {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        if self.port == default {
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            self.authority()
        }
    }

    /// This URL with `path` (which may contain a query) appended to its path, one `/` between.
    /// A base URL like `https://vault:8200/prefix` plus `v1/sys/health` gives
    /// `https://vault:8200/prefix/v1/sys/health`; the base's query is dropped.
    pub fn join(&self, path: &str) -> Url {
        let base = self
            .path
            .split('?')
            .next()
            .unwrap_or("/")
            .trim_end_matches('/');
        let mut u = self.clone();
        u.path = format!("{base}/{}", path.trim_start_matches('/'));
        u
    }

    /// The origin, `scheme://authority`, for messages.
    pub fn origin(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.authority())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Url({self})")
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// `scheme://user:pass@host` -> `scheme://<redacted>@host`, for error messages.
fn redact_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{}<redacted>@{}", &s[..scheme_end + 3], &rest[at + 1..]),
        None => s.to_string(),
    }
}

/// A proxy server.
#[derive(Clone)]
pub struct Proxy {
    url: Url,
    /// `Proxy-Authorization` value from the proxy URL's user info (Basic).
    authorization: Option<Secret>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({})", self.url.origin())
    }
}

impl Proxy {
    /// Parses a proxy URL (`http://[user:pass@]host:port`; a bare `host:port` means http).
    pub fn parse(s: &str) -> Result<Proxy, HttpError> {
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("http://{s}")
        };
        let (url, userinfo) = Url::parse_inner(&with_scheme, true)?;
        if url.scheme == Scheme::Https {
            return Err(HttpError::InvalidUrl {
                url: redact_userinfo(s),
                reason: "TLS to the proxy itself is not supported: use an http:// proxy URL (https traffic is still tunnelled end to end)".into(),
            });
        }
        let authorization = userinfo.map(|ui| {
            use base64::Engine;
            let decoded = percent_encoding::percent_decode_str(&ui).decode_utf8_lossy();
            Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded.as_bytes())
            ))
        });
        Ok(Proxy { url, authorization })
    }
}

/// Which proxy to use for which URL, from `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    https: Option<Proxy>,
    http: Option<Proxy>,
    no_proxy: Vec<String>,
}

impl ProxySettings {
    /// No proxy at all.
    pub fn none() -> Self {
        ProxySettings::default()
    }

    /// From the process environment. Lowercase names win over uppercase (as in curl); an
    /// unparsable proxy URL is an error rather than silently going direct.
    pub fn from_env() -> Result<Self, HttpError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable lookup (pure; for tests and configuration files).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, HttpError> {
        // An empty variable counts as unset (as in curl): `https_proxy=` must not hide
        // `HTTPS_PROXY`.
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let var = |lower: &str, upper: &str| set(lower).or_else(|| set(upper));
        let https = var("https_proxy", "HTTPS_PROXY")
            .map(|v| Proxy::parse(v.trim()))
            .transpose()?;
        let http = var("http_proxy", "HTTP_PROXY")
            .map(|v| Proxy::parse(v.trim()))
            .transpose()?;
        let no_proxy = var("no_proxy", "NO_PROXY")
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(ProxySettings {
            https,
            http,
            no_proxy,
        })
    }

    /// The proxy for `url`, or `None` to connect directly.
    pub fn for_url(&self, url: &Url) -> Option<&Proxy> {
        if self.bypass(url) {
            return None;
        }
        match url.scheme {
            Scheme::Https => self.https.as_ref(),
            Scheme::Http => self.http.as_ref(),
        }
    }

    fn bypass(&self, url: &Url) -> bool {
        let host = url.host.trim_end_matches('.');
        let host_ip = host.parse::<std::net::IpAddr>().ok();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            // A CIDR block ("10.0.0.0/8", "fd00::/8") matches IP-literal hosts inside it, as in
            // Go's httpproxy (what containerd and the kubelet use): names are not resolved.
            if entry.contains('/') {
                return match (crate::node::config::parse_cidr(entry), host_ip) {
                    (Ok(net), Some(ip)) => net.contains(ip),
                    _ => false,
                };
            }
            // Entries may carry a port ("host:port", "[v6]:port"): then it must match too.
            let (name, port) = match entry.strip_prefix('[') {
                Some(r) => match r.split_once(']') {
                    Some((h, p)) => (h, p.strip_prefix(':')),
                    None => (r, None),
                },
                None => match entry.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => (h, Some(p)),
                    _ => (entry.as_str(), None),
                },
            };
            if let Some(p) = port {
                if p.parse::<u16>().ok() != Some(url.port) {
                    return false;
                }
            }
            let name = name
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.');
            !name.is_empty()
                && (host == name
                    || (host.len() > name.len()
                        && host.ends_with(name)
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.'))
        })
    }
}

/// Connect, read and overall time limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (per address tried).
    pub connect: Duration,
    /// Longest silence while reading or writing.
    pub read: Duration,
    /// The whole exchange, connect to last body byte.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            total: Duration::from_secs(60),
        }
    }
}

/// A TLS client identity whose private key stays in its backend (TPM, HSM or file).
#[derive(Clone)]
pub struct ClientIdentity {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The key of the leaf.
    pub key: Arc<dyn NodeKey>,
}

/// Which trust roots verify servers.
#[derive(Debug, Clone)]
enum Roots {
    WebPki,
    Bundle(Vec<Vec<u8>>),
}

/// Builds a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    roots: Roots,
    identity: Option<ClientIdentity>,
    proxy: Option<ProxySettings>,
    timeouts: Timeouts,
    max_response_bytes: usize,
    user_agent: String,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            roots: Roots::WebPki,
            identity: None,
            proxy: None,
            timeouts: Timeouts::default(),
            max_response_bytes: 4 * 1024 * 1024,
            user_agent: format!("hybridboot/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl ClientBuilder {
    /// Trust only the certificates in this PEM bundle (replaces the compiled-in roots).
    pub fn ca_bundle_file(self, path: &Path) -> Result<Self, HttpError> {
        // A system bundle is ~200 KiB; 4 MiB leaves room without letting a wrong path (a
        // device, a log) exhaust memory.
        let bytes =
            crate::fsutil::read_capped(path, 4 * 1024 * 1024).map_err(|e| HttpError::CaBundle {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| HttpError::CaBundle {
            path: path.display().to_string(),
            detail: "not UTF-8 text".into(),
        })?;
        self.ca_bundle_pem(&path.display().to_string(), &text)
    }

    /// Trust only the certificates in this PEM text; `name` appears in errors.
    pub fn ca_bundle_pem(mut self, name: &str, pem: &str) -> Result<Self, HttpError> {
        let certs = crate::x509::chain::parse_pem_bundle(pem).map_err(|e| HttpError::CaBundle {
            path: name.to_string(),
            detail: e.to_string(),
        })?;
        self.roots = Roots::Bundle(certs);
        Ok(self)
    }

    /// Authenticate with this certificate chain and hardware key (mutual TLS).
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Use these proxy settings instead of the environment's.
    pub fn proxy(mut self, proxy: ProxySettings) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Time limits of each request.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Largest response body accepted (default 4 MiB); larger bodies fail with
    /// [`HttpError::TooLarge`].
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Builds the client: TLS configuration, roots, proxy settings (environment unless set).
    pub fn build(self) -> Result<Client, HttpError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.roots {
            Roots::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::Bundle(certs) => {
                for der in certs {
                    roots
                        .add(CertificateDer::from(der.clone()))
                        .map_err(|e| HttpError::Config(format!("unusable CA certificate: {e}")))?;
                }
            }
        }
        // RSA client keys sign PKCS#1 v1.5 only, which TLS 1.3 forbids in CertificateVerify:
        // such identities speak TLS 1.2.
        let versions: &[&rustls::SupportedProtocolVersion] = match &self.identity {
            Some(id) if id.key.algorithm() == Algorithm::Rsa2048 => &[&rustls::version::TLS12],
            _ => rustls::DEFAULT_VERSIONS,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| HttpError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            Some(id) => {
                let signing: Arc<dyn SigningKey> = Arc::new(NodeSigningKey {
                    key: id.key.clone(),
                });
                let chain = id
                    .chain
                    .iter()
                    .map(|c| CertificateDer::from(c.clone()))
                    .collect();
                builder.with_client_cert_resolver(Arc::new(FixedIdentity(Arc::new(
                    CertifiedKey::new(chain, signing),
                ))))
            }
            None => builder.with_no_client_auth(),
        };
        let proxy = match self.proxy {
            Some(p) => p,
            None => ProxySettings::from_env()?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                tls: Arc::new(config),
                proxy,
                timeouts: self.timeouts,
                max_response_bytes: self.max_response_bytes,
                user_agent: self.user_agent,
            }),
        })
    }
}

/// A `rustls` signing key whose signatures come from a [`NodeKey`] (TPM, HSM or file): rustls
/// hands over the handshake transcript, the key hashes it with SHA-256 and signs the digest.
#[derive(Debug)]
struct NodeSigningKey {
    key: Arc<dyn NodeKey>,
}

impl NodeSigningKey {
    fn scheme(&self) -> SignatureScheme {
        match self.key.algorithm() {
            Algorithm::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            Algorithm::Rsa2048 => SignatureScheme::RSA_PKCS1_SHA256,
        }
    }
}

impl SigningKey for NodeSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.scheme();
        if offered.contains(&scheme) {
            Some(Box::new(NodeSigner {
                key: self.key.clone(),
                scheme,
            }))
        } else {
            log::warn!(
                "the TLS server accepts none of our key's signature schemes ({scheme:?}); offered: {offered:?}"
            );
            None
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.algorithm() {
            Algorithm::EcdsaP256 => SignatureAlgorithm::ECDSA,
            Algorithm::Rsa2048 => SignatureAlgorithm::RSA,
        }
    }
}

#[derive(Debug)]
struct NodeSigner {
    key: Arc<dyn NodeKey>,
    scheme: SignatureScheme,
}

impl Signer for NodeSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(message).map_err(|e| {
            rustls::Error::General(format!("signing with {}: {e}", self.key.describe()))
        })
    }
    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Always presents the one identity (the servers we talk to want exactly this certificate).
#[derive(Debug)]
struct FixedIdentity(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedIdentity {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.key.choose_scheme(schemes)?;
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// One header value; secret values never appear in `Debug` output.
#[derive(Clone)]
enum HeaderValue {
    Plain(String),
    Secret(Secret),
}

impl HeaderValue {
    fn as_str(&self) -> &str {
        match self {
            HeaderValue::Plain(s) => s,
            HeaderValue::Secret(s) => s.expose(),
        }
    }
}

/// An HTTP request. `Debug` shows only the method and URL: headers and bodies may hold tokens.
#[derive(Clone)]
pub struct Request {
    method: &'static str,
    url: Url,
    headers: Vec<(String, HeaderValue)>,
    body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No query: presigned URLs carry credentials there.
        let path = self.url.path.split('?').next().unwrap_or("");
        write!(f, "{} {}{}", self.method, self.url.origin(), path)
    }
}

impl Request {
    /// A request with no body.
    pub fn new(method: &'static str, url: Url) -> Self {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Zeroizing::new(Vec::new()),
        }
    }
    /// `GET url`.
    pub fn get(url: Url) -> Self {
        Self::new("GET", url)
    }
    /// `POST url`.
    pub fn post(url: Url) -> Self {
        Self::new("POST", url)
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers
            .push((name.to_string(), HeaderValue::Plain(value.into())));
        self
    }
    /// Adds a header whose value is secret (a token): it is zeroized and never shown.
    pub fn secret_header(mut self, name: &str, value: &Secret) -> Self {
        self.headers
            .push((name.to_string(), HeaderValue::Secret(value.clone())));
        self
    }
    /// Sets the body and its content type. The buffer is zeroized after use.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = Zeroizing::new(body);
        self.header("Content-Type", content_type)
    }
    /// Sets a JSON body.
    pub fn json(self, value: &serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(value).expect("serialising a JSON value cannot fail");
        self.body("application/json", bytes)
    }
    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }
    /// The method.
    pub fn method(&self) -> &str {
        self.method
    }
}

/// A complete response.
pub struct Response {
    /// Who answered (`scheme://host:port`), for messages.
    pub peer: String,
    /// Status code.
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Response({} {}, {} bytes)",
            self.peer,
            self.status,
            self.body.len()
        )
    }
}

impl Response {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body. It may hold secrets (tokens): do not log it.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    /// The server's clock (`Date` header), for clock-skew detection.
    pub fn date(&self) -> Option<SystemTime> {
        parse_http_date(self.header("date")?)
    }
    /// `Retry-After` as a delay from now (seconds or an HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(self.header("retry-after")?, SystemTime::now())
    }
    /// Parses the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Protocol {
            peer: self.peer.clone(),
            detail: format!("unexpected JSON: {e}"),
        })
    }
    /// `Ok(self)` for 1xx-3xx, else [`HttpError::Status`] with a short, printable excerpt.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        Err(HttpError::Status {
            retry_after: self.retry_after(),
            peer: self.peer.clone(),
            code: self.status,
            excerpt: excerpt(&self.body, 200),
            body: self.body.to_vec(),
        })
    }
}

/// The first `max` printable characters of a body, on one line.
fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// The client. Cheap to clone (shared configuration).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    tls: Arc<rustls::ClientConfig>,
    proxy: ProxySettings,
    timeouts: Timeouts,
    max_response_bytes: usize,
    user_agent: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("timeouts", &self.inner.timeouts)
            .field("proxy", &self.inner.proxy)
            .finish()
    }
}

/// A byte stream, plain or TLS.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Client {
    /// A builder with defaults: compiled-in roots, no client certificate, proxies from the
    /// environment, 10 s connect / 30 s read / 60 s total, 4 MiB bodies.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Sends one request (one attempt) and returns any complete response, whatever its status.
    pub fn send(&self, req: &Request) -> Result<Response, HttpError> {
        let mut body = Vec::new();
        let limit = self.inner.max_response_bytes;
        let (status, headers, peer) = self.exchange(req, &mut body, limit)?;
        Ok(Response {
            peer,
            status,
            headers,
            body: Zeroizing::new(body),
        })
    }

    /// Sends with the retry policy: transient failures (connection errors, timeouts, 429, 5xx)
    /// are retried with backoff; a final non-2xx/3xx status is an [`HttpError::Status`].
    /// Only for idempotent requests, or requests that are safe to repeat.
    pub fn send_retrying(
        &self,
        req: &Request,
        policy: &RetryPolicy,
    ) -> Result<Response, HttpError> {
        retry::run(policy, &retry::RealClock, |attempt| {
            if attempt > 0 {
                log::info!("retrying {req:?} (attempt {})", attempt + 1);
            }
            self.send(req)?.error_for_status()
        })
    }

    /// Streams the body of a 2xx response into `sink` (up to `limit` bytes; downloads). Other
    /// statuses return [`HttpError::Status`] without touching the sink.
    pub fn download(
        &self,
        req: &Request,
        sink: &mut dyn Write,
        limit: usize,
    ) -> Result<Response, HttpError> {
        let mut tee = StatusGatedSink {
            sink,
            error: Vec::new(),
            ok: None,
        };
        let (status, headers, peer) = self.exchange(req, &mut tee, limit)?;
        let resp = Response {
            peer,
            status,
            headers,
            body: Zeroizing::new(tee.error),
        };
        resp.error_for_status()
    }

    fn exchange(
        &self,
        req: &Request,
        sink: &mut dyn BodySink,
        limit: usize,
    ) -> Result<Exchanged, HttpError> {
        let started = Instant::now();
        let t = self.inner.timeouts;
        let deadline = started + t.total;
        let url = &req.url;
        let peer = url.origin();
        let proxy = self.inner.proxy.for_url(url);
        let (host, port) = match proxy {
            Some(p) => (p.url.host.as_str(), p.url.port),
            None => (url.host.as_str(), url.port),
        };
        let tcp = connect(host, port, t.connect, deadline, &peer)?;
        let mut raw = DeadlineStream {
            tcp,
            deadline,
            idle: t.read,
        };
        let mut stream: Box<dyn Stream> = match url.scheme {
            Scheme::Http => Box::new(raw),
            Scheme::Https => {
                if let Some(p) = proxy {
                    connect_tunnel(&mut raw, p, url, &peer)?;
                }
                let name =
                    ServerName::try_from(url.host.clone()).map_err(|_| HttpError::InvalidUrl {
                        url: url.to_string(),
                        reason: "host is not a valid DNS name or IP address".into(),
                    })?;
                let mut conn = rustls::ClientConnection::new(self.inner.tls.clone(), name)
                    .map_err(|e| HttpError::Config(e.to_string()))?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut raw)
                        .map_err(|e| map_io(e, &peer, "TLS handshake"))?;
                }
                Box::new(rustls::StreamOwned::new(conn, raw))
            }
        };

        // Request head: absolute-form target through a plain-http proxy.
        let target = match (proxy, url.scheme) {
            (Some(_), Scheme::Http) => url.to_string(),
            _ => url.path.clone(),
        };
        let mut head = Zeroizing::new(format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n",
            req.method,
            target,
            url.host_header(),
            self.inner.user_agent
        ));
        if let (Some(p), Scheme::Http) = (proxy, url.scheme) {
            if let Some(auth) = &p.authorization {
                head.push_str(&format!("Proxy-Authorization: {}\r\n", auth.expose()));
            }
        }
        for (name, value) in &req.headers {
            let v = value.as_str();
            if name.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
                return Err(HttpError::Config(format!(
                    "header {name:?} contains a line break or colon"
                )));
            }
            head.push_str(&format!("{name}: {v}\r\n"));
        }
        if !req.body.is_empty() || matches!(req.method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
        }
        head.push_str("\r\n");
        let mut out = Zeroizing::new(Vec::with_capacity(head.len() + req.body.len()));
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&req.body);
        stream
            .write_all(&out)
            .and_then(|_| stream.flush())
            .map_err(|e| map_io(e, &peer, "sending the request"))?;

        let (status, headers, mut reader) = read_head(stream, &peer, req.method == "HEAD")?;
        sink.start(status);
        let framing = framing(status, &headers, req.method == "HEAD", &peer)?;
        read_body(&mut reader, framing, sink, limit, &peer)?;
        // Without the query: presigned URLs carry credentials there.
        log::debug!(
            "{} {}{} -> {} ({} ms)",
            req.method,
            url.origin(),
            url.path.split('?').next().unwrap_or(""),
            status,
            started.elapsed().as_millis()
        );
        Ok((status, headers, peer))
    }
}

/// Fuzzing and corpus-replay entry point (not an API): parses `raw` as the bytes a server sent
/// for a request with `method`, through the same head, framing and body code as a real exchange,
/// with a body cap of `limit` bytes. Returns status, headers and body.
#[doc(hidden)]
pub type ParsedResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// See [`ParsedResponse`]; the entry point itself.
#[doc(hidden)]
pub fn parse_response_bytes(
    raw: &[u8],
    method: &str,
    limit: usize,
) -> Result<ParsedResponse, HttpError> {
    let peer = "fuzz";
    let stream: Box<dyn Stream> = Box::new(io::Cursor::new(raw.to_vec()));
    let head_req = method == "HEAD";
    let (status, headers, mut reader) = read_head(stream, peer, head_req)?;
    let framing = framing(status, &headers, head_req, peer)?;
    let mut body = Vec::new();
    read_body(&mut reader, framing, &mut body, limit, peer)?;
    Ok((status, headers, body))
}

/// Status, headers and peer of a finished exchange.
type Exchanged = (u16, Vec<(String, String)>, String);

/// Where a body goes: a buffer, or a file for 2xx downloads.
trait BodySink {
    fn start(&mut self, _status: u16) {}
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
}

impl BodySink for Vec<u8> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }
}

struct StatusGatedSink<'a> {
    sink: &'a mut dyn Write,
    error: Vec<u8>,
    ok: Option<bool>,
}

impl BodySink for StatusGatedSink<'_> {
    fn start(&mut self, status: u16) {
        self.ok = Some((200..300).contains(&status));
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.ok == Some(true) {
            self.sink.write_all(data)
        } else {
            if self.error.len() < 64 * 1024 {
                self.error.extend_from_slice(data);
            }
            Ok(())
        }
    }
}

/// A TCP stream whose every read and write respects both an idle timeout and the request's
/// overall deadline.
struct DeadlineStream {
    tcp: TcpStream,
    deadline: Instant,
    idle: Duration,
}

impl DeadlineStream {
    fn budget(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline exceeded"));
        }
        Ok(left.min(self.idle))
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.budget()?))?;
        self.tcp.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.budget()?))?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
    deadline: Instant,
    peer: &str,
) -> Result<TcpStream, HttpError> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Resolve {
            peer: format!("{host}:{port}"),
            detail: e.to_string(),
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, timeout.min(left)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let via = if peer.ends_with(&format!("{host}:{port}")) {
        peer.to_string()
    } else {
        format!("{peer} (via proxy {host}:{port})")
    };
    match last {
        Some(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Err(HttpError::Timeout {
                peer: via,
                phase: "connecting",
            })
        }
        Some(e) => Err(HttpError::Connect {
            peer: via,
            source: e,
        }),
        None => Err(HttpError::Timeout {
            peer: via,
            phase: "connecting",
        }),
    }
}

fn connect_tunnel(
    raw: &mut DeadlineStream,
    proxy: &Proxy,
    url: &Url,
    peer: &str,
) -> Result<(), HttpError> {
    let authority = url.authority();
    let mut head = Zeroizing::new(format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    ));
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {}\r\n", auth.expose()));
    }
    head.push_str("\r\n");
    let proxy_name = proxy.url.origin();
    raw.write_all(head.as_bytes())
        .map_err(|e| map_io(e, &proxy_name, "connecting"))?;
    // Read the proxy's answer byte by byte: anything after its head belongs to TLS.
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::Proxy {
                proxy: proxy_name,
                peer: peer.into(),
                detail: "oversized answer".into(),
                transient: false,
            });
        }
        match raw.read(&mut byte) {
            Ok(0) => {
                return Err(HttpError::Proxy {
                    proxy: proxy_name,
                    peer: peer.into(),
                    detail: "closed the connection".into(),
                    transient: true,
                })
            }
            Ok(_) => buf.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(map_io(e, &proxy_name, "connecting")),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let code = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => resp.code.unwrap_or(0),
        _ => 0,
    };
    if (200..300).contains(&code) {
        return Ok(());
    }
    Err(HttpError::Proxy {
        proxy: proxy_name,
        peer: peer.into(),
        detail: format!("HTTP {code} {}", resp.reason.unwrap_or("")),
        transient: matches!(code, 502..=504),
    })
}

/// Maps an I/O error to the error kinds callers act on (timeout, TLS verification, reset).
fn map_io(e: io::Error, peer: &str, phase: &'static str) -> HttpError {
    if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        return HttpError::Timeout {
            peer: peer.into(),
            phase,
        };
    }
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(reason) => HttpError::TlsVerification {
                peer: peer.into(),
                detail: describe_certificate_error(reason),
            },
            rustls::Error::AlertReceived(alert) => HttpError::Tls {
                peer: peer.into(),
                detail: format!(
                    "the server sent alert {alert:?} (does it trust our CA, or require a client certificate?)"
                ),
            },
            other => HttpError::Tls {
                peer: peer.into(),
                detail: other.to_string(),
            },
        };
    }
    if phase == "TLS handshake" && e.kind() == io::ErrorKind::UnexpectedEof {
        return HttpError::Tls {
            peer: peer.into(),
            detail: "the server closed the connection during the handshake (is it speaking TLS?)"
                .into(),
        };
    }
    HttpError::Io {
        peer: peer.into(),
        phase,
        source: e,
    }
}

/// Plain words for the verification failures operators meet.
fn describe_certificate_error(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "its certificate is not issued by a trusted CA (UnknownIssuer)".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "its certificate is not valid for this host name or address (NotValidForName)".into()
        }
        C::Expired | C::ExpiredContext { .. } => "its certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "its certificate is not valid yet (is the clock right?)".into()
        }
        C::Revoked => "its certificate is revoked".into(),
        C::BadSignature => "its certificate has a bad signature".into(),
        other => format!("{other:?}"),
    }
}

type HeadResult = (
    u16,
    Vec<(String, String)>,
    BufReader<io::Chain<io::Cursor<Vec<u8>>, Box<dyn Stream>>>,
);

/// Reads the response head (skipping 1xx interim responses); returns status, headers, and a
/// reader positioned at the first body byte.
fn read_head(
    mut stream: Box<dyn Stream>,
    peer: &str,
    _head_req: bool,
) -> Result<HeadResult, HttpError> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    buf.drain(..n);
                    continue;
                }
                let hs = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                let rest = buf.split_off(n);
                let reader = BufReader::new(io::Cursor::new(rest).chain(stream));
                return Ok((code, hs, reader));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(HttpError::Protocol {
                    peer: peer.into(),
                    detail: format!("bad response head: {e}"),
                })
            }
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::Protocol {
                peer: peer.into(),
                detail: "response head larger than 64 KiB".into(),
            });
        }
        let n = loop {
            match stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }
        .map_err(|e| map_io(e, peer, "reading the response"))?;
        if n == 0 {
            return Err(HttpError::Io {
                peer: peer.into(),
                phase: "reading the response",
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response head",
                ),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(
    status: u16,
    headers: &[(String, String)],
    head_req: bool,
    peer: &str,
) -> Result<Framing, HttpError> {
    if head_req || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Framing::Empty);
    }
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    if let Some(te) = get("transfer-encoding").last() {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked);
        }
        return Ok(Framing::UntilClose);
    }
    let lengths = get("content-length");
    if let Some(first) = lengths.first() {
        let n: u64 = first.parse().map_err(|_| HttpError::Protocol {
            peer: peer.into(),
            detail: format!("invalid Content-Length {first:?}"),
        })?;
        if lengths.iter().any(|l| *l != *first) {
            return Err(HttpError::Protocol {
                peer: peer.into(),
                detail: "conflicting Content-Length headers".into(),
            });
        }
        return Ok(Framing::Length(n));
    }
    Ok(Framing::UntilClose)
}

fn read_body(
    reader: &mut dyn BufRead,
    framing: Framing,
    sink: &mut dyn BodySink,
    limit: usize,
    peer: &str,
) -> Result<(), HttpError> {
    let too_large = || HttpError::TooLarge {
        peer: peer.into(),
        limit,
    };
    let io_err = |e: io::Error| map_io(e, peer, "reading the response");
    let mut total: usize = 0;
    let mut buf = [0u8; 16 * 1024];
    let mut copy =
        |reader: &mut dyn BufRead, mut n: u64, total: &mut usize| -> Result<(), HttpError> {
            while n > 0 {
                let want = (n.min(buf.len() as u64)) as usize;
                let got = reader.read(&mut buf[..want]).map_err(io_err)?;
                if got == 0 {
                    return Err(HttpError::Io {
                        peer: peer.into(),
                        phase: "reading the response",
                        source: io::Error::new(io::ErrorKind::UnexpectedEof, "body truncated"),
                    });
                }
                *total += got;
                if *total > limit {
                    return Err(too_large());
                }
                sink.write(&buf[..got]).map_err(|e| HttpError::Io {
                    peer: peer.into(),
                    phase: "storing the response",
                    source: e,
                })?;
                n -= got as u64;
            }
            Ok(())
        };
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => {
            if n > limit as u64 {
                return Err(too_large());
            }
            copy(reader, n, &mut total)
        }
        Framing::Chunked => loop {
            let line = read_line(reader, peer)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| HttpError::Protocol {
                peer: peer.into(),
                detail: format!("invalid chunk size {size_text:?}"),
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(reader, peer)?.is_empty() {}
                return Ok(());
            }
            // Saturating: a peer may announce a chunk of up to 2^64-1 bytes.
            if (total as u64).saturating_add(size) > limit as u64 {
                return Err(too_large());
            }
            copy(reader, size, &mut total)?;
            if !read_line(reader, peer)?.is_empty() {
                return Err(HttpError::Protocol {
                    peer: peer.into(),
                    detail: "chunk not followed by CRLF".into(),
                });
            }
        },
        Framing::UntilClose => loop {
            let got = match reader.read(&mut buf) {
                Ok(n) => n,
                // Servers that close without TLS close_notify: the framing is "until close"
                // anyway.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            if got == 0 {
                return Ok(());
            }
            total += got;
            if total > limit {
                return Err(too_large());
            }
            sink.write(&buf[..got]).map_err(|e| HttpError::Io {
                peer: peer.into(),
                phase: "storing the response",
                source: e,
            })?;
        },
    }
}

/// One CRLF-terminated line (at most 4 KiB), without the terminator.
fn read_line(reader: &mut dyn BufRead, peer: &str) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = reader
        .take(4096)
        .read_until(b'\n', &mut line)
        .map_err(|e| map_io(e, peer, "reading the response"))?;
    if n == 0 || !line.ends_with(b"\n") {
        return Err(HttpError::Protocol {
            peer: peer.into(),
            detail: "truncated or overlong chunk line".into(),
        });
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form servers may send.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u8 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u16 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let (h, m, sec): (u8, u8, u8) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    let dt = der::DateTime::new(year, month, day, h, m, sec).ok()?;
    Some(dt.to_system_time())
}

/// Parses `Retry-After`: delay seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_parse_and_join() {
        let u = Url::parse("https://Vault.example.com:8200/prefix/").unwrap();
        assert_eq!(u.host(), "vault.example.com");
        assert_eq!(u.port(), 8200);
        assert_eq!(
            u.join("/v1/pki/sign/node").to_string(),
            "https://vault.example.com:8200/prefix/v1/pki/sign/node"
        );
        let v6 = Url::parse("http://[::1]:8080?x=1").unwrap();
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.authority(), "[::1]:8080");
        assert_eq!(v6.path_and_query(), "/?x=1");
        assert_eq!(Url::parse("https://h").unwrap().port(), 443);
        assert!(Url::parse("ftp://h").is_err());
        assert!(Url::parse("https://user:pw@h/").is_err());
        assert!(Url::parse("https://h:99999/").is_err());
        assert!(Url::parse("https:///x").is_err());
        let err = Url::parse("https://user:pw@h/").unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn proxy_selection_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = ProxySettings::from_lookup(env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://user:p%40ss@lower:3128"),
            ("HTTP_PROXY", "plain:8080"),
            (
                "NO_PROXY",
                "localhost, .internal.example,10.0.0.5,svc.local:8443",
            ),
        ]))
        .unwrap();
        let pick = |u: &str| {
            s.for_url(&Url::parse(u).unwrap())
                .map(|p| p.url.authority())
        };
        assert_eq!(
            pick("https://sts.amazonaws.com/").as_deref(),
            Some("lower:3128")
        );
        assert_eq!(pick("http://x.example/").as_deref(), Some("plain:8080"));
        assert_eq!(pick("https://localhost:8200/"), None);
        assert_eq!(pick("https://vault.internal.example/"), None);
        assert_eq!(pick("https://internal.example/"), None);
        assert_eq!(
            pick("https://xinternal.example/").as_deref(),
            Some("lower:3128")
        );
        assert_eq!(pick("https://10.0.0.5/"), None);
        assert_eq!(pick("https://10.0.0.6/").as_deref(), Some("lower:3128"));
        assert_eq!(pick("https://svc.local:8443/"), None);
        assert_eq!(
            pick("https://svc.local:443/").as_deref(),
            Some("lower:3128")
        );
        let auth = s.https.as_ref().unwrap().authorization.as_ref().unwrap();
        use base64::Engine;
        assert_eq!(
            auth.expose(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("user:p@ss")
            )
        );
        assert!(!format!("{s:?}").contains("p@ss"));
        let empty_lower = ProxySettings::from_lookup(env(&[
            ("https_proxy", ""),
            ("HTTPS_PROXY", "http://upper:3128"),
        ]))
        .unwrap();
        assert!(empty_lower
            .for_url(&Url::parse("https://a/").unwrap())
            .is_some());
        let all =
            ProxySettings::from_lookup(env(&[("https_proxy", "http://p:1"), ("no_proxy", "*")]))
                .unwrap();
        assert!(all.for_url(&Url::parse("https://a/").unwrap()).is_none());
        assert!(ProxySettings::from_lookup(env(&[("https_proxy", "https://p:1")])).is_err());
    }

    #[test]
    fn no_proxy_matches_hosts_suffixes_and_cidrs() {
        let s = ProxySettings::from_lookup(|k| match k {
            "HTTPS_PROXY" | "HTTP_PROXY" => Some("http://proxy:3128".to_string()),
            "NO_PROXY" => Some(
                "example.com, .corp.example, 10.0.0.0/8,192.168.1.0/24 ,fd00::/8,127.0.0.1".into(),
            ),
            _ => None,
        })
        .unwrap();
        let direct = |u: &str| s.for_url(&Url::parse(u).unwrap()).is_none();
        // Hosts and suffixes, with or without the leading dot.
        assert!(direct("https://example.com/"));
        assert!(direct("https://api.example.com/"));
        assert!(!direct("https://notexample.com/"));
        assert!(direct("https://corp.example/") && direct("https://a.b.corp.example/"));
        // CIDR blocks match IP literals inside them, v4 and v6, http and https.
        assert!(direct("https://10.1.2.3:6443/") && direct("http://10.255.0.1/"));
        assert!(direct("https://192.168.1.77/"));
        assert!(!direct("https://192.168.2.1/"));
        assert!(!direct("https://11.0.0.1/"));
        assert!(direct("https://[fd12::1]:8443/"));
        assert!(!direct("https://[fe80::1]/"));
        assert!(direct("http://127.0.0.1:5000/"));
        assert!(!direct("http://127.0.0.2:5000/"));
        // A CIDR never matches a name (no resolution), and a bad block matches nothing.
        assert!(!direct("https://ten.example/"));
        let bad = ProxySettings::from_lookup(|k| match k {
            "HTTPS_PROXY" => Some("http://proxy:3128".to_string()),
            "NO_PROXY" => Some("10.0.0.0/33".into()),
            _ => None,
        })
        .unwrap();
        assert!(bad
            .for_url(&Url::parse("https://10.0.0.1/").unwrap())
            .is_some());
    }

    #[test]
    fn dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        let now = t - Duration::from_secs(30);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    /// Serves each canned response to one connection, returning what the client sent.
    fn serve(responses: Vec<Vec<u8>>) -> (Url, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for r in responses {
                let (mut s, _) = l.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 4096];
                // Read the head and a Content-Length body.
                loop {
                    let n = s.read(&mut b).unwrap();
                    req.extend_from_slice(&b[..n]);
                    if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                seen.push(req);
                if r == b"HANG" {
                    std::thread::sleep(Duration::from_millis(1500));
                    continue;
                }
                s.write_all(&r).unwrap();
            }
            seen
        });
        (url, h)
    }

    fn client(limit: usize) -> Client {
        Client::builder()
            .proxy(ProxySettings::none())
            .max_response_bytes(limit)
            .timeouts(Timeouts {
                connect: Duration::from_secs(2),
                read: Duration::from_millis(500),
                total: Duration::from_secs(3),
            })
            .build()
            .unwrap()
    }

    #[test]
    fn bodies_by_length_chunked_and_close() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\n0\r\nX-Trailer: 1\r\n\r\n".to_vec(),
            b"HTTP/1.1 404 Not Found\r\n\r\n{\"errors\":[\"nope\"]}".to_vec(),
        ]);
        let c = client(1024);
        let r = c
            .send(&Request::post(url.join("a")).json(&serde_json::json!({"k": "v"})))
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body(), b"hello");
        assert_eq!(
            r.date()
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            784111777
        );
        let r = c.send(&Request::get(url.join("b"))).unwrap();
        assert_eq!(r.body(), b"Wikipedia ");
        let e = c
            .send(&Request::get(url.join("c")))
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_transient());
        assert!(e.to_string().contains("nope"), "{e}");
        let seen = h.join().unwrap();
        let first = String::from_utf8_lossy(&seen[0]);
        assert!(first.starts_with("POST /a HTTP/1.1\r\n"), "{first}");
        assert!(first.contains("Content-Length: 9\r\n"));
        assert!(first.ends_with("{\"k\":\"v\"}"));
    }

    #[test]
    fn size_cap_and_timeouts() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n{}",
            "x".repeat(2000)
        );
        let chunked_big = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
            "y".repeat(1024),
            "y".repeat(1024)
        );
        let (url, h) = serve(vec![
            big.into_bytes(),
            chunked_big.into_bytes(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            b"HANG".to_vec(),
        ]);
        let c = client(1500);
        for _ in 0..2 {
            let e = c.send(&Request::get(url.clone())).unwrap_err();
            assert!(matches!(e, HttpError::TooLarge { limit: 1500, .. }), "{e}");
            assert!(e.to_string().contains("1500-byte limit"));
        }
        // A body cut short by the server closing: an I/O error naming the truncation.
        let e = c.send(&Request::get(url.clone())).unwrap_err();
        assert!(matches!(e, HttpError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("truncated"), "{e}");
        // A server that accepts and then says nothing: the read timeout (500 ms) fires, and the
        // error is transient.
        let t = Instant::now();
        let e = c.send(&Request::get(url)).unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e:?}");
        assert!(e.is_transient() && !e.before_request_sent());
        assert!(t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_secs(2));
        h.join().unwrap();
    }

    #[test]
    fn retries_honour_retry_after_and_stop_on_other_4xx() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(10),
            deadline: Duration::from_secs(10),
        };
        let c = client(1024);
        let t = Instant::now();
        let r = c
            .send_retrying(&Request::get(url.clone()), &policy)
            .unwrap();
        assert_eq!(r.body(), b"ok");
        assert!(
            t.elapsed() >= Duration::from_secs(1),
            "waited for Retry-After"
        );
        let e = c.send_retrying(&Request::get(url), &policy).unwrap_err();
        assert_eq!(e.status(), Some(403), "{e}");
        assert_eq!(h.join().unwrap().len(), 4, "403 was not retried");
    }

    #[test]
    fn downloads_stream_only_successful_bodies() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nbinary".to_vec(),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_vec(),
        ]);
        let c = client(16);
        let mut file = Vec::new();
        let r = c
            .download(&Request::get(url.clone()), &mut file, 100)
            .unwrap();
        assert_eq!((r.status, file.as_slice()), (200, &b"binary"[..]));
        let mut file = Vec::new();
        let e = c.download(&Request::get(url), &mut file, 100).unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert!(file.is_empty(), "an error page never reaches the sink");
        h.join().unwrap();
    }

    #[test]
    fn refused_connection_is_transient_and_names_the_peer() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client(10)
            .send(&Request::get(
                Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            ))
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e:?}");
        assert!(e.is_transient() && e.before_request_sent());
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    #[test]
    fn plain_http_goes_through_the_proxy_in_absolute_form() {
        let (proxy_url, h) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        ]);
        let settings = ProxySettings::from_lookup(|k| {
            (k == "http_proxy").then(|| format!("http://u:secretpw@{}", proxy_url.authority()))
        })
        .unwrap();
        let c = Client::builder().proxy(settings).build().unwrap();
        let r = c
            .send(&Request::get(
                Url::parse("http://origin.invalid:8080/x?y=1").unwrap(),
            ))
            .unwrap();
        assert_eq!(r.body(), b"ok");
        let seen = String::from_utf8(h.join().unwrap().remove(0)).unwrap();
        assert!(
            seen.starts_with("GET http://origin.invalid:8080/x?y=1 HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains("Proxy-Authorization: Basic "), "{seen}");
    }

    #[test]
    fn requests_and_responses_do_not_show_secrets() {
        let req = Request::post(Url::parse("https://v/x?X-Amz-Signature=presigned").unwrap())
            .secret_header("X-Vault-Token", &Secret::new("s.topsecret"))
            .body(
                "application/json",
                b"{\"secret_id\":\"abc-secret\"}".to_vec(),
            );
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("abc-secret"),
            "{shown}"
        );
        assert_eq!(shown, "POST https://v:443/x");
    }
}
