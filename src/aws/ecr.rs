//! `ecr:GetAuthorizationToken`, pure halves: which registry host is an ECR registry and in which
//! region, the signed request (JSON 1.1 protocol, SigV4 service `ecr`), and the answer turned into
//! the registry's Basic credentials, with errors that name the IAM permission the role lacks.
//!
//! The token is a password for the registry: it lives in a [`Secret`] from the moment the answer
//! is parsed, and nothing here prints it.

use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;

use super::credentials::Credentials;
use super::sigv4::{sign_request, HttpRequest};
use super::sigv4x509::endpoint_host;
use crate::error::{Class, Classify};
use crate::secret::Secret;

/// The SigV4 service name of ECR.
pub const SERVICE: &str = "ecr";
/// The JSON 1.1 target of GetAuthorizationToken.
pub const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
/// What the role needs to pull from ECR, for error messages.
pub const PULL_PERMISSIONS: &str =
    "ecr:GetAuthorizationToken, ecr:BatchGetImage and ecr:GetDownloadUrlForLayer";

/// An ECR registry host, `<account>.dkr.ecr[-fips].<region>.<dns suffix>`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    /// The 12-digit registry (account) id.
    pub account: String,
    /// The registry's region (its authorization tokens are issued there).
    pub region: String,
    /// `amazonaws.com`, `amazonaws.com.cn`, ...
    pub dns_suffix: String,
    /// `dkr.ecr-fips` rather than `dkr.ecr`.
    pub fips: bool,
}

impl EcrRegistry {
    /// Parses a registry host (no port); `None` when it is not an ECR registry.
    pub fn parse(host: &str) -> Option<EcrRegistry> {
        let host = host.to_ascii_lowercase();
        let mut parts = host.splitn(5, '.');
        let account = parts.next()?;
        if parts.next()? != "dkr" {
            return None;
        }
        let fips = match parts.next()? {
            "ecr" => false,
            "ecr-fips" => true,
            _ => return None,
        };
        let region = parts.next()?;
        let dns_suffix = parts.next()?;
        let region_ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) || !region_ok {
            return None;
        }
        Some(EcrRegistry {
            account: account.to_string(),
            region: region.to_string(),
            dns_suffix: dns_suffix.to_string(),
            fips,
        })
    }

    /// The ECR API endpoint that issues tokens for this registry: the same region and
    /// partition, FIPS when the registry host is FIPS.
    pub fn api_endpoint(&self) -> String {
        if self.fips {
            format!("https://ecr-fips.{}.{}", self.region, self.dns_suffix)
        } else {
            format!("https://api.ecr.{}.{}", self.region, self.dns_suffix)
        }
    }
}

/// A signed GetAuthorizationToken request: POST `url` with exactly `request.headers` and body.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// Full URL.
    pub url: String,
    /// The signed request (headers include `Authorization`).
    pub request: HttpRequest,
}

/// Builds and signs GetAuthorizationToken at `endpoint` for `region`.
pub fn authorization_token_request(
    endpoint: &str,
    region: &str,
    creds: &Credentials,
    now: SystemTime,
) -> Result<SignedRequest, EcrError> {
    let host = endpoint_host(endpoint).map_err(|e| EcrError::Endpoint(e.to_string()))?;
    let mut request = HttpRequest::new("POST", &host, "/")
        .with_header("Content-Type", "application/x-amz-json-1.1")
        .with_header("X-Amz-Target", TARGET)
        .with_body(b"{}".to_vec());
    sign_request(&mut request, creds, region, SERVICE, now);
    Ok(SignedRequest {
        url: format!("{}/", endpoint.trim_end_matches('/')),
        request,
    })
}

/// The registry credentials an authorization token stands for.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The user name (`AWS`).
    pub user: String,
    /// The password.
    pub password: Secret,
    /// The `Authorization` header value: `Basic base64(user:password)`.
    pub basic: Secret,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryCredentials({}:<redacted>)", self.user)
    }
}

impl RegistryCredentials {
    /// From a user and password.
    pub fn new(user: &str, password: Secret) -> RegistryCredentials {
        let basic = Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", password.expose()))
        ));
        RegistryCredentials {
            user: user.to_string(),
            password,
            basic,
        }
    }
}

/// Problems with GetAuthorizationToken; one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcrError {
    /// The endpoint cannot be used.
    #[error("ECR endpoint: {0}")]
    Endpoint(String),
    /// 401/403: the node role lacks the permission.
    #[error("ECR at {endpoint} denied GetAuthorizationToken (HTTP {status}{}): the node role needs {PULL_PERMISSIONS}", message_suffix(.message))]
    AccessDenied {
        /// The endpoint asked.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The peer's own message, if any.
        message: String,
    },
    /// 429/5xx: retrying later may work.
    #[error("ECR at {endpoint} is throttling or failing (HTTP {status}{}); retrying later should work", message_suffix(.message))]
    Transient {
        /// The endpoint asked.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The peer's own message, if any.
        message: String,
    },
    /// Any other refusal.
    #[error("ECR at {endpoint} answered HTTP {status} to GetAuthorizationToken{}", message_suffix(.message))]
    Other {
        /// The endpoint asked.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The peer's own message, if any.
        message: String,
    },
    /// An answer without a usable token.
    #[error("ECR at {endpoint} sent an unusable GetAuthorizationToken answer: {detail}")]
    BadResponse {
        /// The endpoint asked.
        endpoint: String,
        /// What is wrong with it.
        detail: String,
    },
}

fn message_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

impl Classify for EcrError {
    /// A refusal needs an operator (a permission, a region); an outage may pass.
    fn class(&self) -> Class {
        match self {
            EcrError::Transient { .. } => Class::Transient,
            _ => Class::Operator,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAnswer {
    #[serde(default)]
    authorization_data: Vec<RawAuthorization>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthorization {
    #[serde(default)]
    authorization_token: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default, alias = "Message")]
    message: Option<String>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
}

/// Turns the answer into registry credentials. `error_type` is `x-amzn-ErrorType` if sent.
/// The token's `expiresAt` is not checked: the token is used at once (and moto, the test peer,
/// always answers a date in 2015).
pub fn parse_authorization_token(
    endpoint: &str,
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
) -> Result<RegistryCredentials, EcrError> {
    if !(200..300).contains(&status) {
        let raw: Option<RawError> = serde_json::from_slice(body).ok();
        let kind = error_type
            .map(|t| t.split(':').next().unwrap_or(t).to_string())
            .or_else(|| {
                raw.as_ref()
                    .and_then(|r| r.kind.clone())
                    .map(|k| k.rsplit('#').next().unwrap_or(&k).to_string())
            })
            .unwrap_or_default();
        let text = raw.and_then(|r| r.message).unwrap_or_default();
        let message = match (kind.is_empty(), text.is_empty()) {
            (true, _) => text,
            (false, true) => kind.clone(),
            (false, false) => format!("{kind}: {text}"),
        };
        let endpoint = endpoint.to_string();
        return Err(
            if status == 401 || status == 403 || kind.contains("AccessDenied") {
                EcrError::AccessDenied {
                    endpoint,
                    status,
                    message,
                }
            } else if status == 429 || status >= 500 || kind.contains("Throttl") {
                EcrError::Transient {
                    endpoint,
                    status,
                    message,
                }
            } else {
                EcrError::Other {
                    endpoint,
                    status,
                    message,
                }
            },
        );
    }
    let bad = |detail: &str| EcrError::BadResponse {
        endpoint: endpoint.to_string(),
        detail: detail.to_string(),
    };
    let raw: RawAnswer = serde_json::from_slice(body).map_err(|_| bad("not the expected JSON"))?;
    let token = raw
        .authorization_data
        .into_iter()
        .find_map(|a| a.authorization_token)
        .ok_or_else(|| bad("no authorizationData[].authorizationToken"))?;
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .map_err(|_| bad("the token is not base64"))?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| bad("the token is not text"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| bad("the token is not user:password"))?;
    if user.is_empty() || password.is_empty() {
        return Err(bad("the token has an empty user or password"));
    }
    Ok(RegistryCredentials::new(
        user,
        Secret::new(password.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        let r = EcrRegistry::parse("602401143452.dkr.ecr.us-west-2.amazonaws.com").unwrap();
        assert_eq!(r.region, "us-west-2");
        assert_eq!(r.api_endpoint(), "https://api.ecr.us-west-2.amazonaws.com");
        let cn = EcrRegistry::parse("918309763551.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap();
        assert_eq!(
            cn.api_endpoint(),
            "https://api.ecr.cn-north-1.amazonaws.com.cn"
        );
        let fips =
            EcrRegistry::parse("013241004608.dkr.ecr-fips.us-gov-west-1.amazonaws.com").unwrap();
        assert_eq!(
            fips.api_endpoint(),
            "https://ecr-fips.us-gov-west-1.amazonaws.com"
        );
        for not in [
            "registry.k8s.io",
            "127.0.0.1",
            "12345.dkr.ecr.us-west-2.amazonaws.com",
            "602401143452.dkr.ecrx.us-west-2.amazonaws.com",
            "602401143452.dkr.ecr.us-west-2",
        ] {
            assert_eq!(EcrRegistry::parse(not), None, "{not}");
        }
    }

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("session-token-value")),
            expiration: None,
        }
    }

    #[test]
    fn the_request_is_a_signed_json_post() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let s = authorization_token_request("http://127.0.0.1:5000/", "us-west-2", &creds(), now)
            .unwrap();
        assert_eq!(s.url, "http://127.0.0.1:5000/");
        let r = &s.request;
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
        assert_eq!(r.header("x-amz-target"), Some(TARGET));
        assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
        assert_eq!(r.body, b"{}");
        let auth = r.header("authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-west-2/ecr/aws4_request"
            ),
            "{auth}"
        );
        assert!(auth.contains("x-amz-target"), "{auth}");
        assert!(!format!("{r:?}").contains("session-token-value"));
    }

    #[test]
    fn answers_become_credentials_or_classified_errors() {
        // moto's answer shape: base64("AWS:<registry id>-auth-token"), expiresAt in 2015.
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:123456789012-auth-token");
        let body = format!(
            r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":1420070400.0,"proxyEndpoint":"https://123456789012.dkr.ecr.us-west-2.amazonaws.com"}}]}}"#
        );
        let c = parse_authorization_token("e", 200, None, body.as_bytes()).unwrap();
        assert_eq!(c.user, "AWS");
        assert_eq!(c.password.expose(), "123456789012-auth-token");
        assert_eq!(c.basic.expose(), format!("Basic {token}"));
        assert!(!format!("{c:?}").contains("auth-token"));

        let denied = parse_authorization_token(
            "https://api.ecr.us-west-2.amazonaws.com",
            400,
            Some("AccessDeniedException:http://internal"),
            br#"{"message":"User is not authorized to perform: ecr:GetAuthorizationToken"}"#,
        )
        .unwrap_err();
        assert!(!denied.is_transient());
        let text = denied.to_string();
        assert!(
            text.contains(
                "ecr:GetAuthorizationToken, ecr:BatchGetImage and ecr:GetDownloadUrlForLayer"
            ) && text.contains("AccessDeniedException"),
            "{text}"
        );
        let e = parse_authorization_token("e", 403, None, b"<html>").unwrap_err();
        assert!(matches!(e, EcrError::AccessDenied { .. }), "{e}");
        let e = parse_authorization_token(
            "e",
            400,
            None,
            br#"{"__type":"ThrottlingException","message":"slow down"}"#,
        )
        .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(parse_authorization_token("e", 503, None, b"")
            .unwrap_err()
            .is_transient());
        for bad in [
            &b"{}"[..],
            br#"{"authorizationData":[{"authorizationToken":"!!"}]}"#,
            br#"{"authorizationData":[{"authorizationToken":"QVdT"}]}"#,
        ] {
            let e = parse_authorization_token("e", 200, None, bad).unwrap_err();
            assert!(matches!(e, EcrError::BadResponse { .. }), "{e}");
        }
    }
}
