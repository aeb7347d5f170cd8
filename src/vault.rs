//! Vault PKI: enrollment (`hybridboot enroll`) and renewal (`hybridboot renew`).
//!
//! The node builds a CSR with its hardware key, authenticates to Vault (token, AppRole with an
//! optionally response-wrapped secret id, or TLS certificate auth with its current certificate),
//! asks `POST /v1/<mount>/sign/<role>` for a certificate, checks what comes back (node key, CN,
//! chain, validity, TTL), and only then replaces the certificate file atomically: leaf first,
//! then the CA chain without duplicates. On any failure the old file stays byte-for-byte intact.
//!
//! Wire format: docs/protocols.md §5. Tokens, secret ids and wrapping tokens are [`Secret`]s and
//! never appear in logs or errors.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::json;

use crate::cli::KeyArgs;
use crate::http::{Client, ClientIdentity, HttpError, Request, Url};
use crate::key::{NodeKey, OpenMode};
use crate::retry::{self, RetryPolicy};
use crate::secret::Secret;
use crate::x509::chain::{self, Cert, CertInfo, LeafExpectation};
use crate::{fsutil, x509};

/// Flags shared by `enroll` and `renew`.
#[derive(Args, Debug, Clone)]
pub struct VaultArgs {
    /// Vault address, e.g. https://vault.example.com:8200.
    #[arg(long, value_name = "URL", env = "VAULT_ADDR")]
    pub vault_addr: String,
    /// PEM bundle of the CA(s) that issued Vault's TLS certificate (replaces the built-in roots).
    #[arg(long = "vault-ca", value_name = "FILE", env = "VAULT_CACERT")]
    pub vault_ca: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace (X-Vault-Namespace).
    #[arg(long, value_name = "NS", env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// Mount path of the PKI secrets engine.
    #[arg(long, value_name = "PATH", default_value = "pki")]
    pub pki_mount: String,
    /// PKI role that signs the node certificate.
    #[arg(long, value_name = "ROLE")]
    pub pki_role: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Subject common name: the node name.
    #[arg(long, value_name = "CN")]
    pub common_name: String,
    /// DNS subject alternative name (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// IP subject alternative name (repeatable).
    #[arg(long = "ip-address", value_name = "IP")]
    pub ip_addresses: Vec<IpAddr>,
    /// Requested lifetime (e.g. 72h, 30m, 3600s); a certificate shorter than asked for is
    /// refused (the role's max_ttl is lower). Default: the role's ttl.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Certificate file to write: leaf first, then the CA chain (mode 0644).
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
    /// Also write the issuing CA and its chain to this file.
    #[arg(long, value_name = "FILE")]
    pub ca_certificate: Option<PathBuf>,
    /// Token auth: file holding a Vault token [default: env VAULT_TOKEN].
    #[arg(long, value_name = "FILE", conflicts_with = "approle_role_id_file")]
    pub vault_token_file: Option<PathBuf>,
    /// AppRole auth: file holding the role id.
    #[arg(long, value_name = "FILE", requires = "approle_secret_id_file")]
    pub approle_role_id_file: Option<PathBuf>,
    /// AppRole auth: file holding the secret id (removed after a successful enrollment).
    #[arg(long, value_name = "FILE", requires = "approle_role_id_file")]
    pub approle_secret_id_file: Option<PathBuf>,
    /// The secret id file holds a response-wrapping token: unwrap it (once) first.
    #[arg(long, requires = "approle_secret_id_file")]
    pub secret_id_wrapped: bool,
    /// TLS certificate auth role (auth/cert/login over mutual TLS with the current certificate
    /// and the hardware key). `renew` tries it first and falls back to a token or AppRole given
    /// as well.
    #[arg(long, value_name = "NAME")]
    pub cert_auth_role: Option<String>,
    /// Mount path of the cert auth method.
    #[arg(long, value_name = "PATH", default_value = "cert")]
    pub cert_auth_mount: String,
    /// Mount path of the AppRole auth method.
    #[arg(long, value_name = "PATH", default_value = "approle")]
    pub approle_mount: String,
    /// Give up retrying an unreachable, sealed or failing Vault after this long.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hybridboot enroll`.
#[derive(Args, Debug)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// `hybridboot renew`. Stdout gets one line: the RFC 3339 UTC time the next renewal is due (for a
/// systemd timer); logs go to stderr.
#[derive(Args, Debug)]
pub struct RenewArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Renew once less than this fraction of the lifetime remains (0 < F <= 1; 1 renews now).
    #[arg(long, value_name = "FRACTION", default_value = "0.3333", value_parser = parse_fraction)]
    pub renew_before: f64,
}

/// Errors of the Vault conversation. One line, naming Vault's address and the cause.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Vault at {addr} is sealed: unseal it, then run again")]
    Sealed { addr: String },
    #[error("Vault at {addr} answered permission denied for {path}: the token is invalid, expired or revoked, or its policy does not allow this path")]
    PermissionDenied { addr: String, path: String },
    #[error("Vault at {addr} has no PKI role {role:?} at mount {mount:?}: check --pki-mount and --pki-role")]
    UnknownRole {
        addr: String,
        mount: String,
        role: String,
    },
    #[error("Vault at {addr}: PKI role {role:?} does not allow this certificate: {message}")]
    NotAllowed {
        addr: String,
        role: String,
        message: String,
    },
    #[error("Vault at {addr} issued a certificate valid for {issued} instead of the requested {requested}: the requested TTL is above the role's max_ttl; ask for --ttl {issued} or less")]
    TtlAboveMax {
        addr: String,
        requested: String,
        issued: String,
    },
    #[error("Vault at {addr}: the wrapping token in {file} is invalid, expired or already used (wrapping tokens work once): issue a new wrapped secret id")]
    BadWrappingToken { addr: String, file: String },
    #[error("Vault at {addr} returned a certificate that fails verification: {source}")]
    BadCertificate {
        addr: String,
        #[source]
        source: chain::ChainError,
    },
    #[error("Vault at {addr} answered {path} unexpectedly: {detail}")]
    BadResponse {
        addr: String,
        path: String,
        detail: String,
    },
    #[error("Vault at {addr} rejected {path} (HTTP {code}): {message}")]
    Api {
        addr: String,
        path: String,
        code: u16,
        message: String,
    },
    #[error("Vault request {path} failed: {source}")]
    Http {
        path: String,
        #[source]
        source: HttpError,
    },
}

impl VaultError {
    /// Whether running again later may succeed without any change.
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Sealed { .. } => true,
            VaultError::Api { code, .. } => *code == 429 || *code >= 500,
            VaultError::Http { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// A Vault client: address, namespace, one HTTP client, one retry deadline.
#[derive(Debug, Clone)]
pub struct Vault {
    http: Client,
    addr: Url,
    namespace: Option<String>,
    deadline: Instant,
    policy: RetryPolicy,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct AuthBody {
    auth: Option<AuthInfo>,
}

#[derive(Deserialize)]
struct AuthInfo {
    client_token: SecretString,
}

#[derive(Deserialize)]
struct UnwrapBody {
    data: Option<UnwrapData>,
}

#[derive(Deserialize)]
struct UnwrapData {
    secret_id: SecretString,
}

/// A JSON string moved straight into a [`Secret`].
struct SecretString(Secret);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretString(Secret::new(String::deserialize(d)?)))
    }
}

/// What `pki/sign` returns.
#[derive(Debug, Deserialize)]
pub struct Signed {
    /// Leaf, PEM.
    pub certificate: String,
    /// Issuing CA, PEM.
    pub issuing_ca: String,
    /// Issuing CA and its parents, PEM each.
    #[serde(default)]
    pub ca_chain: Vec<String>,
    /// Colon-separated hex serial.
    #[serde(default)]
    pub serial_number: String,
}

#[derive(Deserialize)]
struct SignBody {
    data: Option<Signed>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

impl Vault {
    /// A client for `addr` with `http`, retrying transient failures until `deadline`.
    pub fn new(http: Client, addr: Url, namespace: Option<String>, deadline: Instant) -> Self {
        Vault {
            http,
            addr,
            namespace,
            deadline,
            policy: RetryPolicy {
                max_attempts: 30,
                ..RetryPolicy::default()
            },
        }
    }

    /// The same Vault through another HTTP client (for mutual TLS).
    pub fn with_http(&self, http: Client) -> Self {
        Vault {
            http,
            ..self.clone()
        }
    }

    fn addr(&self) -> String {
        self.addr.origin()
    }

    /// One API call with retries. `idempotent = false` retries only failures where the request
    /// certainly did not consume anything (never sent, sealed, throttled).
    fn call(
        &self,
        path: &str,
        body: Vec<u8>,
        token: Option<&Secret>,
        idempotent: bool,
    ) -> Result<crate::http::Response, VaultError> {
        let mut req =
            Request::post(self.addr.join(&format!("v1/{path}"))).body("application/json", body);
        if let Some(t) = token {
            req = req.secret_header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.clone());
        }
        let policy = self
            .policy
            .with_deadline(self.deadline.saturating_duration_since(Instant::now()));
        let result = retry::run_if(
            &policy,
            &retry::RealClock,
            |e: &HttpError| {
                e.is_transient()
                    && (idempotent
                        || e.before_request_sent()
                        || matches!(e.status(), Some(429 | 503)))
            },
            |attempt| {
                if attempt > 0 {
                    log::info!("Vault {path}: attempt {}", attempt + 1);
                }
                self.http.send(&req)?.error_for_status()
            },
        );
        let response = result.map_err(|e| self.api_error(path, e))?;
        warn_on_clock_skew(&self.addr(), response.date(), SystemTime::now());
        Ok(response)
    }

    fn api_error(&self, path: &str, e: HttpError) -> VaultError {
        let addr = self.addr();
        let HttpError::Status { code, ref body, .. } = e else {
            return VaultError::Http {
                path: path.to_string(),
                source: e,
            };
        };
        let messages = serde_json::from_slice::<ErrorBody>(body)
            .map(|b| b.errors)
            .unwrap_or_default();
        let message = if messages.is_empty() {
            e.to_string()
        } else {
            messages.join("; ")
        };
        let lower = message.to_ascii_lowercase();
        if code == 503 && lower.contains("sealed") {
            return VaultError::Sealed { addr };
        }
        if code == 403 || lower.contains("permission denied") {
            return VaultError::PermissionDenied {
                addr,
                path: path.to_string(),
            };
        }
        VaultError::Api {
            addr,
            path: path.to_string(),
            code,
            message: one_line(&message),
        }
    }

    /// `sys/wrapping/unwrap` of a wrapped AppRole secret id (consumes the wrapping token).
    pub fn unwrap_secret_id(&self, wrapping: &Secret, file: &Path) -> Result<Secret, VaultError> {
        let r = self
            .call("sys/wrapping/unwrap", b"{}".to_vec(), Some(wrapping), false)
            .map_err(|e| match e {
                VaultError::PermissionDenied { addr, .. } => VaultError::BadWrappingToken {
                    addr,
                    file: file.display().to_string(),
                },
                VaultError::Api {
                    addr,
                    code: 400,
                    message,
                    ..
                } if message.contains("wrapping token") => VaultError::BadWrappingToken {
                    addr,
                    file: file.display().to_string(),
                },
                other => other,
            })?;
        let body: UnwrapBody = r.json().map_err(|e| self.bad("sys/wrapping/unwrap", e))?;
        body.data.map(|d| d.secret_id.0).ok_or_else(|| {
            self.bad(
                "sys/wrapping/unwrap",
                "no data.secret_id (was this token wrapping an AppRole secret id?)",
            )
        })
    }

    /// AppRole login.
    pub fn approle_login(
        &self,
        mount: &str,
        role_id: &Secret,
        secret_id: &Secret,
    ) -> Result<Secret, VaultError> {
        let path = format!("auth/{mount}/login");
        // Serialised straight into the request's zeroizing buffer: no other copy of the secret.
        #[derive(serde::Serialize)]
        struct Login<'a> {
            role_id: &'a str,
            secret_id: &'a str,
        }
        let body = serde_json::to_vec(&Login {
            role_id: role_id.expose(),
            secret_id: secret_id.expose(),
        })
        .expect("serialising strings cannot fail");
        let r = self.call(&path, body, None, false)?;
        self.token_from(&path, &r)
    }

    /// TLS certificate auth login (this client must carry a client identity).
    pub fn cert_login(&self, mount: &str, role: &str) -> Result<Secret, VaultError> {
        let path = format!("auth/{mount}/login");
        let r = self.call(
            &path,
            json!({ "name": role }).to_string().into_bytes(),
            None,
            true,
        )?;
        self.token_from(&path, &r)
    }

    fn token_from(&self, path: &str, r: &crate::http::Response) -> Result<Secret, VaultError> {
        let body: AuthBody = r.json().map_err(|e| self.bad(path, e))?;
        body.auth
            .map(|a| a.client_token.0)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.bad(path, "no auth.client_token"))
    }

    /// `POST <mount>/sign/<role>`.
    pub fn sign(
        &self,
        token: &Secret,
        mount: &str,
        role: &str,
        csr_pem: &str,
        request: &SignRequest<'_>,
    ) -> Result<Signed, VaultError> {
        let path = format!("{}/sign/{role}", mount.trim_matches('/'));
        let mut body = json!({"csr": csr_pem, "common_name": request.common_name, "format": "pem"});
        if !request.dns_names.is_empty() {
            body["alt_names"] = json!(request.dns_names.join(","));
        }
        if !request.ip_addresses.is_empty() {
            let ips: Vec<String> = request.ip_addresses.iter().map(|i| i.to_string()).collect();
            body["ip_sans"] = json!(ips.join(","));
        }
        if let Some(ttl) = request.ttl {
            body["ttl"] = json!(format!("{}s", ttl.as_secs()));
        }
        let r = self
            .call(&path, body.to_string().into_bytes(), Some(token), true)
            .map_err(|e| match e {
                VaultError::Api {
                    addr,
                    code: 400,
                    message,
                    ..
                } if message.contains("unknown role") || message.contains("no role found") => {
                    VaultError::UnknownRole {
                        addr,
                        mount: mount.to_string(),
                        role: role.to_string(),
                    }
                }
                VaultError::Api {
                    addr,
                    code: 400,
                    message,
                    ..
                } => VaultError::NotAllowed {
                    addr,
                    role: role.to_string(),
                    message,
                },
                other => other,
            })?;
        let body: SignBody = r.json().map_err(|e| self.bad(&path, e))?;
        for w in body.warnings.unwrap_or_default() {
            if !w.contains("use_csr_common_name") {
                log::warn!("Vault at {}: {}", self.addr(), one_line(&w));
            }
        }
        body.data
            .ok_or_else(|| self.bad(&path, "no data in the response"))
    }

    fn bad(&self, path: &str, detail: impl std::fmt::Display) -> VaultError {
        VaultError::BadResponse {
            addr: self.addr(),
            path: path.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Certificates are checked against the local clock: say so when Vault's clock disagrees.
fn warn_on_clock_skew(addr: &str, server: Option<SystemTime>, local: SystemTime) -> bool {
    let Some(server) = server else { return false };
    let skew = match server.duration_since(local) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    if skew > Duration::from_secs(300) {
        log::warn!(
            "the clock here differs from Vault's ({addr}) by {}: certificate validity checks may fail; check time synchronisation",
            format_duration(skew)
        );
        return true;
    }
    false
}

/// What to ask `pki/sign` for.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    /// CN (the CSR carries it too).
    pub common_name: &'a str,
    /// DNS SANs.
    pub dns_names: &'a [String],
    /// IP SANs.
    pub ip_addresses: &'a [IpAddr],
    /// Requested TTL.
    pub ttl: Option<Duration>,
}

/// A verified result: the file content and facts about the leaf.
#[derive(Debug)]
pub struct Issued {
    /// Leaf, then CA chain (PEM).
    pub certificate_pem: String,
    /// Issuing CA and its chain (PEM).
    pub ca_pem: String,
    /// The leaf's facts.
    pub info: CertInfo,
}

/// Checks a `pki/sign` answer against the node key, the CN, the chain, validity and the TTL, and
/// assembles the files. Pure apart from `now`.
pub fn verify_signed(
    addr: &str,
    signed: &Signed,
    node_spki: &[u8],
    req: &SignRequest<'_>,
    now: SystemTime,
) -> Result<Issued, VaultError> {
    let bad = |source| VaultError::BadCertificate {
        addr: addr.to_string(),
        source,
    };
    let leaf = chain::parse_pem_certs(&signed.certificate).map_err(bad)?;
    let [leaf] = <[Cert; 1]>::try_from(leaf).map_err(|v| {
        bad(chain::ChainError::Unlinked(format!(
            "{} certificates in the leaf field",
            v.len()
        )))
    })?;
    let issuing = chain::parse_pem_certs(&signed.issuing_ca).map_err(bad)?;
    let issuing = issuing
        .into_iter()
        .next()
        .expect("parse returns at least one");
    let mut cas = vec![issuing.clone()];
    for pem in &signed.ca_chain {
        cas.extend(chain::parse_pem_certs(pem).map_err(bad)?);
    }
    // Leaf first, then each issuer: the order Vault should give, enforced here, duplicates
    // (the issuing CA repeated in ca_chain) dropped.
    let mut all = vec![leaf.clone()];
    all.extend(cas);
    let ordered = chain::order_chain(all).map_err(bad)?;
    if ordered[0] != leaf || ordered.get(1) != Some(&issuing) {
        return Err(bad(chain::ChainError::Unlinked(leaf.subject())));
    }
    let info = chain::check_leaf(
        &leaf,
        &issuing,
        &ordered[2..],
        &LeafExpectation {
            spki_der: node_spki,
            common_name: req.common_name,
            now,
        },
    )
    .map_err(bad)?;
    if let Some(ttl) = req.ttl {
        let issued = info.not_after.duration_since(now).unwrap_or_default();
        // Vault back-dates notBefore by 30 s and rounds; a minute of slack absorbs both.
        if issued + Duration::from_secs(60) < ttl {
            return Err(VaultError::TtlAboveMax {
                addr: addr.to_string(),
                requested: format_duration(ttl),
                issued: format_duration(Duration::from_secs(issued.as_secs().div_ceil(60) * 60)),
            });
        }
    }
    let certificate_pem: String = ordered.iter().map(Cert::to_pem).collect();
    let ca_pem: String = ordered[1..].iter().map(Cert::to_pem).collect();
    Ok(Issued {
        certificate_pem,
        ca_pem,
        info,
    })
}

/// Fuzzing and corpus-replay entry point (not an API): runs `body` through every decoder of a
/// Vault answer (error list, login, unwrap, `pki/sign` and its verification against the leaf's
/// own key and CN, so the chain checks are reached) and the duration parser.
#[doc(hidden)]
pub fn fuzz_answers(body: &[u8], now: SystemTime) {
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
        let _ = one_line(&e.errors.join("; "));
    }
    if let Ok(a) = serde_json::from_slice::<AuthBody>(body) {
        let _ = a.auth.map(|a| a.client_token.0.is_empty());
    }
    if let Ok(u) = serde_json::from_slice::<UnwrapBody>(body) {
        let _ = u.data.map(|d| d.secret_id.0.is_empty());
    }
    if let Ok(SignBody {
        data: Some(signed), ..
    }) = serde_json::from_slice::<SignBody>(body)
    {
        let leaf = chain::parse_pem_certs(&signed.certificate).ok();
        let first = leaf.as_ref().and_then(|l| l.first());
        let spki = first.map(Cert::spki_der).unwrap_or_default();
        let cn = first.and_then(Cert::common_name).unwrap_or_default();
        let req = SignRequest {
            common_name: &cn,
            dns_names: &[],
            ip_addresses: &[],
            ttl: Some(Duration::from_secs(3600)),
        };
        let _ = verify_signed("fuzz", &signed, &spki, &req, now);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        if let Ok(d) = parse_duration(text) {
            let _ = format_duration(d);
        }
    }
}

/// When a certificate with this validity is due for renewal: once less than `fraction` of its
/// lifetime remains.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, fraction: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let keep = lifetime.mul_f64((1.0 - fraction).clamp(0.0, 1.0));
    not_before + keep
}

/// `72h`, `30m`, `3600s`, `3600`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: use e.g. 72h, 30m, 3600s"))?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "invalid duration unit {c:?} in {s:?}: use s, m, h or d"
                ))
            }
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !num.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: the last number has no unit"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// `0.3333` or `1/3`, in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = if let Some((a, b)) = s.split_once('/') {
        let a: f64 = a
            .trim()
            .parse()
            .map_err(|_| format!("invalid fraction {s:?}"))?;
        let b: f64 = b
            .trim()
            .parse()
            .map_err(|_| format!("invalid fraction {s:?}"))?;
        a / b
    } else {
        s.trim()
            .parse()
            .map_err(|_| format!("invalid fraction {s:?}"))?
    };
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("--renew-before must be in (0, 1], got {s}"));
    }
    Ok(v)
}

/// `72h`, `1h30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Orchestration (CLI).

/// How the node authenticates this time.
enum Auth {
    Token(Secret),
    AppRole {
        role_id: Secret,
        secret_id_file: PathBuf,
        wrapped: bool,
    },
    Cert(String),
}

impl VaultArgs {
    fn base_client(&self) -> anyhow::Result<Client> {
        let mut b = Client::builder();
        if let Some(ca) = &self.vault_ca {
            b = b.ca_bundle_file(ca)?;
        }
        Ok(b.build()?)
    }

    fn vault_url(&self) -> anyhow::Result<Url> {
        Url::parse(&self.vault_addr)
            .map_err(|e| crate::exit::operator(format!("--vault-addr / VAULT_ADDR: {e}")))
    }

    /// The non-certificate auth method configured, if any.
    fn secret_auth(&self) -> anyhow::Result<Option<Auth>> {
        if let Some(f) = &self.vault_token_file {
            let t = Secret::from_file(f)
                .with_context(|| format!("reading the Vault token file {}", f.display()))?;
            if t.is_empty() {
                return Err(crate::exit::operator(format!(
                    "the Vault token file {} is empty",
                    f.display()
                )));
            }
            return Ok(Some(Auth::Token(t)));
        }
        if let (Some(rf), Some(sf)) = (&self.approle_role_id_file, &self.approle_secret_id_file) {
            let role_id = Secret::from_file(rf)
                .with_context(|| format!("reading the AppRole role id file {}", rf.display()))?;
            return Ok(Some(Auth::AppRole {
                role_id,
                secret_id_file: sf.clone(),
                wrapped: self.secret_id_wrapped,
            }));
        }
        if self.cert_auth_role.is_none() {
            if let Ok(t) = std::env::var("VAULT_TOKEN") {
                if !t.is_empty() {
                    return Ok(Some(Auth::Token(Secret::new(t))));
                }
            }
        }
        Ok(None)
    }

    fn sign_request(&self) -> SignRequest<'_> {
        SignRequest {
            common_name: &self.common_name,
            dns_names: &self.dns_names,
            ip_addresses: &self.ip_addresses,
            ttl: self.ttl,
        }
    }
}

/// Logs in with `auth`; returns the token and, for AppRole, the secret-id file to remove after
/// success.
fn login(
    vault: &Vault,
    args: &VaultArgs,
    auth: &Auth,
    key: &Arc<dyn NodeKey>,
) -> anyhow::Result<(Secret, Option<PathBuf>)> {
    match auth {
        Auth::Token(t) => Ok((t.clone(), None)),
        Auth::AppRole {
            role_id,
            secret_id_file,
            wrapped,
        } => {
            let raw = Secret::from_file(secret_id_file).with_context(|| {
                format!(
                    "reading the AppRole secret id file {}",
                    secret_id_file.display()
                )
            })?;
            if raw.is_empty() {
                return Err(crate::exit::operator(format!(
                    "the AppRole secret id file {} is empty",
                    secret_id_file.display()
                )));
            }
            let secret_id = if *wrapped {
                log::debug!(
                    "unwrapping the AppRole secret id from {}",
                    secret_id_file.display()
                );
                let s = vault.unwrap_secret_id(&raw, secret_id_file)?;
                log::warn!(
                    "the wrapping token in {} is now used up; if this enrollment fails, issue a new one",
                    secret_id_file.display()
                );
                s
            } else {
                raw
            };
            let token = vault.approle_login(&args.approle_mount, role_id, &secret_id)?;
            log::info!("logged in to Vault with AppRole");
            Ok((token, Some(secret_id_file.clone())))
        }
        Auth::Cert(role) => {
            let current = current_chain(&args.certificate, key.as_ref())?;
            let mut b = Client::builder().client_identity(ClientIdentity {
                chain: current.iter().map(|c| c.der().to_vec()).collect(),
                key: key.clone(),
            });
            if let Some(ca) = &args.vault_ca {
                b = b.ca_bundle_file(ca)?;
            }
            let mtls = vault.with_http(b.build()?);
            let token = mtls.cert_login(&args.cert_auth_mount, role)?;
            log::info!("logged in to Vault with TLS certificate auth (role {role})");
            Ok((token, None))
        }
    }
}

/// The current certificate chain, if it belongs to the node key and is valid now.
fn current_chain(path: &Path, key: &dyn NodeKey) -> anyhow::Result<Vec<Cert>> {
    let text = fsutil::read_capped_string(path, fsutil::MAX_TEXT_FILE)
        .with_context(|| format!("reading the current certificate {}", path.display()))?;
    let certs = chain::parse_pem_certs(&text)
        .with_context(|| format!("parsing the current certificate {}", path.display()))?;
    let leaf = &certs[0];
    if leaf.spki_der() != key.public_key_der() {
        return Err(crate::exit::operator(format!(
            "the certificate {} does not belong to the key {}",
            path.display(),
            key.describe()
        )));
    }
    leaf.check_valid_at(SystemTime::now())
        .with_context(|| format!("the current certificate {}", path.display()))?;
    Ok(certs)
}

/// Signs a fresh CSR with `auth`, verifies, writes. Returns the new leaf's facts.
fn issue(args: &VaultArgs, auths: Vec<Auth>, key: Arc<dyn NodeKey>) -> anyhow::Result<CertInfo> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    let addr = args.vault_url()?;
    let vault = Vault::new(
        args.base_client()?,
        addr.clone(),
        args.vault_namespace.clone().filter(|n| !n.is_empty()),
        deadline,
    );
    let req = args.sign_request();
    let csr = x509::build_csr(
        key.as_ref(),
        &x509::CsrRequest {
            common_name: args.common_name.clone(),
            dns_names: args.dns_names.clone(),
            ip_addresses: args.ip_addresses.clone(),
        },
    )?;

    // Try the methods in order of preference; a later one only if an earlier one fails.
    let mut logged_in = None;
    let count = auths.len();
    for (i, auth) in auths.iter().enumerate() {
        match login(&vault, args, auth, &key) {
            Ok(v) => {
                logged_in = Some(v);
                break;
            }
            Err(e) if i + 1 < count => {
                log::warn!(
                    "{}; trying the next configured auth method",
                    crate_chain(&e)
                );
            }
            Err(e) => return Err(e),
        }
    }
    let Some((token, consumed_secret)) = logged_in else {
        return Err(crate::exit::operator(
            "no Vault auth method: give --vault-token-file, --approle-role-id-file with --approle-secret-id-file, --cert-auth-role, or set VAULT_TOKEN",
        ));
    };

    let signed = vault.sign(&token, &args.pki_mount, &args.pki_role, &csr, &req)?;
    let issued = verify_signed(
        &addr.origin(),
        &signed,
        key.public_key_der(),
        &req,
        SystemTime::now(),
    )?;

    fsutil::atomic_write(
        &args.certificate,
        issued.certificate_pem.as_bytes(),
        &fsutil::WriteOptions::public(),
    )
    .with_context(|| format!("writing the certificate {}", args.certificate.display()))?;
    if let Some(ca) = &args.ca_certificate {
        fsutil::atomic_write(
            ca,
            issued.ca_pem.as_bytes(),
            &fsutil::WriteOptions::public(),
        )
        .with_context(|| format!("writing the CA certificate {}", ca.display()))?;
    }
    if let Some(f) = consumed_secret {
        match fsutil::remove_file(&f) {
            Ok(_) => log::info!("removed the one-time secret id file {}", f.display()),
            Err(e) => log::warn!("could not remove the secret id file {}: {e}", f.display()),
        }
    }
    log::info!(
        "certificate for CN={} serial {} valid until {} written to {} ({} ms)",
        args.common_name,
        issued.info.serial_hex,
        chain::rfc3339(issued.info.not_after),
        args.certificate.display(),
        started.elapsed().as_millis()
    );
    Ok(issued.info)
}

fn crate_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn open_key(args: &KeyArgs) -> anyhow::Result<Arc<dyn NodeKey>> {
    Ok(Arc::from(args.open(OpenMode::Existing)?))
}

/// Default `--renew-before` fraction used by `enroll` to say when renewal is due.
const DEFAULT_RENEW_BEFORE: f64 = 1.0 / 3.0;

/// `hybridboot enroll`: prints the RFC 3339 time the certificate is due for renewal.
pub fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let a = &args.vault;
    let key = open_key(&a.key)?;
    let mut auths = Vec::new();
    if let Some(auth) = a.secret_auth()? {
        auths.push(auth);
    }
    if let Some(role) = &a.cert_auth_role {
        auths.push(Auth::Cert(role.clone()));
    }
    let info = issue(a, auths, key)?;
    println!(
        "{}",
        chain::rfc3339(renewal_due(
            info.not_before,
            info.not_after,
            DEFAULT_RENEW_BEFORE
        ))
    );
    Ok(())
}

/// What [`renew_certificate`] found or did.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// The leaf now on disk.
    pub info: CertInfo,
    /// When it is due for renewal.
    pub due: SystemTime,
    /// Whether a new certificate was issued (false: the current one was still young).
    pub issued: bool,
}

/// The library side of `renew` (also first boot's enroll step): nothing while a certificate for
/// this key and CN is valid and young; otherwise a new one from the same key, TLS certificate
/// auth preferred when the current one is usable.
pub fn renew_certificate(a: &VaultArgs, renew_before: f64) -> anyhow::Result<Renewal> {
    let key = open_key(&a.key)?;
    let now = SystemTime::now();
    let current = match fsutil::read_capped_string(&a.certificate, fsutil::MAX_TEXT_FILE) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            // Not fatal: a certificate we cannot use is replaced by a new enrollment.
            log::warn!(
                "cannot use the current certificate {}: {e}; enrolling anew",
                a.certificate.display()
            );
            None
        }
    };
    let current = current
        .and_then(|t| chain::parse_pem_certs(&t).ok())
        .map(|c| c[0].clone());
    let usable = current.as_ref().filter(|c| {
        c.spki_der() == key.public_key_der()
            && c.common_name().as_deref() == Some(a.common_name.as_str())
            && c.check_valid_at(now).is_ok()
    });
    if let Some(c) = usable {
        let due = renewal_due(c.not_before(), c.not_after(), renew_before);
        if now < due {
            log::info!(
                "certificate {} (serial {}) is valid until {}; renewal due at {}: nothing to do",
                a.certificate.display(),
                c.info().serial_hex,
                chain::rfc3339(c.not_after()),
                chain::rfc3339(due)
            );
            return Ok(Renewal {
                info: c.info(),
                due,
                issued: false,
            });
        }
        log::info!("certificate {} is due for renewal", a.certificate.display());
    } else {
        log::info!(
            "no valid certificate for this key and CN at {}: enrolling",
            a.certificate.display()
        );
    }
    let mut auths = Vec::new();
    if let (Some(role), Some(_)) = (&a.cert_auth_role, usable) {
        auths.push(Auth::Cert(role.clone()));
    }
    if let Some(auth) = a.secret_auth()? {
        auths.push(auth);
    }
    if auths.is_empty() && a.cert_auth_role.is_some() {
        return Err(crate::exit::operator(format!(
            "TLS certificate auth needs a current, valid certificate for this key and CN at {}: enroll first (token or AppRole)",
            a.certificate.display()
        )));
    }
    let info = issue(a, auths, key)?;
    let due = renewal_due(info.not_before, info.not_after, renew_before);
    Ok(Renewal {
        info,
        due,
        issued: true,
    })
}

/// `hybridboot renew`: [`renew_certificate`], then prints the RFC 3339 time of the next renewal.
pub fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let r = renew_certificate(&args.vault, args.renew_before)?;
    println!("{}", chain::rfc3339(r.due));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("72h").unwrap(),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5h3").is_err());
        assert_eq!(format_duration(Duration::from_secs(72 * 3600)), "72h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
    }

    #[test]
    fn fractions() {
        assert!((parse_fraction("1/3").unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(parse_fraction("1.0").unwrap(), 1.0);
        assert!(parse_fraction("0").is_err());
        assert!(parse_fraction("1.5").is_err());
    }

    const ROOT: &str = include_str!("../tests/fixtures/x509/root.pem");
    const INT: &str = include_str!("../tests/fixtures/x509/int.pem");
    const LEAF: &str = include_str!("../tests/fixtures/x509/leaf.pem");
    const LEAF_PUB: &str = include_str!("../tests/fixtures/x509/leaf.pub.pem");

    fn ders(pem: &str) -> Vec<Vec<u8>> {
        chain::parse_pem_bundle(pem).unwrap()
    }

    #[test]
    fn signed_answers_become_leaf_first_files_without_duplicates() {
        let spki = pem_rfc7468::decode_vec(LEAF_PUB.as_bytes()).unwrap().1;
        let req = SignRequest {
            common_name: "node-1.example.com",
            dns_names: &[],
            ip_addresses: &[],
            ttl: Some(Duration::from_secs(72 * 3600)),
        };
        let signed = Signed {
            certificate: LEAF.into(),
            issuing_ca: INT.into(),
            ca_chain: vec![INT.into(), ROOT.into()],
            serial_number: String::new(),
        };
        let issued = verify_signed("https://v", &signed, &spki, &req, SystemTime::now()).unwrap();
        let mut want = ders(LEAF);
        want.extend(ders(INT));
        want.extend(ders(ROOT));
        assert_eq!(ders(&issued.certificate_pem), want);
        assert_eq!(ders(&issued.ca_pem), want[1..].to_vec());

        // Vault sending no ca_chain: leaf and issuing CA.
        let bare = Signed {
            ca_chain: vec![],
            ..signed
        };
        let issued = verify_signed("https://v", &bare, &spki, &req, SystemTime::now()).unwrap();
        assert_eq!(ders(&issued.certificate_pem), want[..2].to_vec());

        // Asking for more than the certificate got (100 years): refused, both durations named.
        let long = SignRequest {
            ttl: Some(Duration::from_secs(200 * 365 * 86400)),
            ..req.clone()
        };
        let e = verify_signed("https://v", &bare, &spki, &long, SystemTime::now()).unwrap_err();
        assert!(matches!(e, VaultError::TtlAboveMax { .. }), "{e}");

        // Two certificates in the leaf field, or a leaf the issuing CA did not sign.
        let two = Signed {
            certificate: format!("{LEAF}{INT}"),
            ..bare
        };
        assert!(verify_signed("https://v", &two, &spki, &req, SystemTime::now()).is_err());
        let wrong_issuer = Signed {
            certificate: LEAF.into(),
            issuing_ca: ROOT.into(),
            ca_chain: vec![],
            serial_number: String::new(),
        };
        let e =
            verify_signed("https://v", &wrong_issuer, &spki, &req, SystemTime::now()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Vault at https://v returned a certificate"),
            "{e}"
        );
    }

    #[test]
    fn clock_skew_is_noticed_beyond_five_minutes() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!warn_on_clock_skew("v", None, t));
        assert!(!warn_on_clock_skew(
            "v",
            Some(t + Duration::from_secs(60)),
            t
        ));
        assert!(warn_on_clock_skew(
            "v",
            Some(t + Duration::from_secs(600)),
            t
        ));
        assert!(warn_on_clock_skew(
            "v",
            Some(t - Duration::from_secs(600)),
            t
        ));
    }

    #[test]
    fn renewal_point() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(3000);
        assert_eq!(
            renewal_due(nb, na, 1.0 / 3.0),
            nb + Duration::from_secs(2000)
        );
        assert_eq!(renewal_due(nb, na, 1.0), nb);
    }
}
