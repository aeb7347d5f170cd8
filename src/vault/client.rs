//! The Vault HTTP API: one call with retries, the auth logins, unwrap and `pki/sign`.

use crate::peer_fields::one_line;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::json;

use super::check::{verify_signed, SignRequest};
use super::{format_duration, parse_duration, VaultError};
use crate::error::Classify;
use crate::http::{Client, HttpError, Redirects, Request, Url};
use crate::retry::{self, RetryPolicy};
use crate::secret::Secret;
use crate::x509::chain::{self, Cert};

/// A Vault client: address, namespace, one HTTP client, one retry deadline.
#[derive(Debug, Clone)]
pub struct Vault {
    http: Client,
    addr: Url,
    namespace: Option<String>,
    deadline: Instant,
    policy: RetryPolicy,
    forwarding: bool,
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
            forwarding: true,
        }
    }

    /// Whether a standby may forward our requests to the active node (default); without, it
    /// answers 307 to the active node, which [`Redirects::Vault`] follows.
    pub fn request_forwarding(self, forwarding: bool) -> Self {
        Vault { forwarding, ..self }
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
        // A standby that does not forward answers 307 to the active node: followed as Vault's
        // own client does (same method, body and token; never down to plain http).
        let mut req = Request::post(self.addr.join(&format!("v1/{path}")))
            .redirects(Redirects::Vault)
            .body("application/json", body);
        if let Some(t) = token {
            req = req.secret_header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.clone());
        }
        if !self.forwarding {
            req = req.header("X-Vault-No-Request-Forwarding", "true");
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
                    log::debug!("Vault {path}: attempt {}", attempt + 1);
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

    /// `sys/capabilities-self`: what `token` may do on `path` (e.g. `["update"]`).
    pub fn capabilities_self(&self, token: &Secret, path: &str) -> Result<Vec<String>, VaultError> {
        let r = self.call(
            "sys/capabilities-self",
            json!({ "paths": [path] }).to_string().into_bytes(),
            Some(token),
            true,
        )?;
        let body: serde_json::Value = r.json().map_err(|e| self.bad("sys/capabilities-self", e))?;
        let caps = body
            .get(path)
            .or_else(|| body.get("capabilities"))
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(caps)
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
                } if key_type_wanted(&message).is_some() => {
                    let wanted = key_type_wanted(&message).unwrap_or_default();
                    VaultError::KeyTypeRefused {
                        fix: key_type_fix(mount, role, &wanted),
                        addr,
                        role: role.to_string(),
                        wanted,
                        message,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

/// The key type a PKI role insists on, from Vault's refusal ("role requires keys of type rsa").
fn key_type_wanted(message: &str) -> Option<String> {
    let rest = &message[message.find("requires keys of type")? + "requires keys of type".len()..];
    let word: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!word.is_empty()).then_some(word)
}

/// Both fixes of a key type refusal: a node key of the wanted type (keys keep their algorithm,
/// so under a new reference), or a role that accepts the node's key.
fn key_type_fix(mount: &str, role: &str, wanted: &str) -> String {
    let key = match wanted {
        "rsa" => "use an RSA node key: `spec.key.algorithm: rsa-2048` with a new `spec.key.ref` in the BootstrapConfig (or `--algorithm rsa-2048` for `hybridboot key create`)".to_string(),
        "ec" => "use an ECDSA node key: `spec.key.algorithm: ecdsa-p256` with a new `spec.key.ref` (or `--algorithm ecdsa-p256`)".to_string(),
        other => format!("hybridboot makes ECDSA P-256 and RSA-2048 keys, not {other}"),
    };
    format!(
        "either {key}, or let the role accept it: `vault write {}/roles/{role} key_type=any` (hybridboot's default key is ECDSA P-256; Vault roles default to key_type=rsa)",
        mount.trim_matches('/')
    )
}

#[cfg(test)]
mod key_type_tests {
    use super::*;

    #[test]
    fn a_key_type_refusal_names_the_type_and_both_fixes() {
        assert_eq!(
            key_type_wanted("role requires keys of type rsa").as_deref(),
            Some("rsa")
        );
        assert_eq!(key_type_wanted("common name not allowed"), None);
        let fix = key_type_fix("pki_int/", "node", "rsa");
        assert!(fix.contains("spec.key.algorithm: rsa-2048"), "{fix}");
        assert!(
            fix.contains("vault write pki_int/roles/node key_type=any"),
            "{fix}"
        );
    }
}
