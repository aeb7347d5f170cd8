//! The IAM Roles Anywhere `CreateSession` exchange: sign with the node key
//! ([`super::sigv4x509`]), send with the one HTTP client ([`crate::http`]) under the one retry
//! policy ([`crate::retry`]), read the answer ([`super::credentials`]).
//!
//! Every attempt is signed afresh: `X-Amz-Date` is part of the signature, and a retry after a
//! backoff must not present a stale time (the service allows 5 minutes).

use crate::error::{Class, Classify};
use std::time::{Duration, SystemTime};

use super::credentials::{handle_create_session_answer, CreateSessionError, Credentials};
use super::sigv4x509::{self, CreateSessionInput, X509SignError};
use crate::http::{Client, HttpError, Request, Url};
use crate::key::NodeKey;
use crate::retry::{self, Clock, RetryPolicy, Retryable};

/// Everything about one Roles Anywhere session request except the key.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// `https://rolesanywhere.<region>.amazonaws.com` or a test endpoint.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    pub trust_anchor_arn: String,
    pub profile_arn: String,
    pub role_arn: String,
    /// DER leaf certificate.
    pub certificate_der: Vec<u8>,
    /// DER intermediates, issuer of the leaf first (may be empty).
    pub intermediates_der: Vec<Vec<u8>>,
    /// `durationSeconds`.
    pub duration_secs: u32,
    /// `roleSessionName`, if one is requested.
    pub role_session_name: Option<String>,
}

/// Why a `CreateSession` call failed. One line each, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum RolesAnywhereError {
    /// The request could not be built or signed (certificate, key, endpoint, duration).
    #[error(transparent)]
    Sign(#[from] X509SignError),
    /// The endpoint could not be reached or answered garbage.
    #[error("IAM Roles Anywhere at {endpoint}: {source}")]
    Http {
        endpoint: String,
        #[source]
        source: HttpError,
    },
    /// The service answered with an error (or an unreadable success).
    #[error(transparent)]
    Service(#[from] CreateSessionError),
}

impl Classify for RolesAnywhereError {
    /// The class of the cause: the key's (an unreachable TPM is transient), the connection's,
    /// or the service's answer; a request that cannot be built needs an operator.
    fn class(&self) -> Class {
        match self {
            RolesAnywhereError::Sign(X509SignError::Key(k)) => k.class(),
            RolesAnywhereError::Sign(_) => Class::Operator,
            RolesAnywhereError::Http { source, .. } => source.class(),
            RolesAnywhereError::Service(s) => s.class(),
        }
    }
}

impl Retryable for RolesAnywhereError {
    fn is_throttled(&self) -> bool {
        match self {
            RolesAnywhereError::Http { source, .. } => source.is_throttled(),
            RolesAnywhereError::Service(s) => s.is_throttled(),
            RolesAnywhereError::Sign(_) => false,
        }
    }
}

/// Signs one `CreateSession` request at `now`, sends it once, and reads the answer.
pub fn create_session_once(
    client: &Client,
    req: &SessionRequest,
    key: &dyn NodeKey,
    now: SystemTime,
) -> Result<Credentials, RolesAnywhereError> {
    let body = sigv4x509::session_body(req.duration_secs, req.role_session_name.as_deref())?;
    let input = CreateSessionInput {
        endpoint: &req.endpoint,
        region: &req.region,
        trust_anchor_arn: &req.trust_anchor_arn,
        profile_arn: &req.profile_arn,
        role_arn: &req.role_arn,
        certificate_der: &req.certificate_der,
        intermediates_der: &req.intermediates_der,
        body: &body,
        content_type: sigv4x509::CONTENT_TYPE,
        time: now,
    };
    let signed = sigv4x509::sign_create_session(&input, key)?;
    log::trace!(
        "CreateSession canonical request:\n{}",
        signed.canonical_request
    );
    log::trace!("CreateSession string to sign:\n{}", signed.string_to_sign);
    let http_err = |source| RolesAnywhereError::Http {
        endpoint: req.endpoint.clone(),
        source,
    };
    let url = Url::parse(&signed.url).map_err(http_err)?;
    let mut http_req = Request::post(url);
    for (name, value) in &signed.headers {
        // The client writes Host itself (the same authority the signer used), and `body()`
        // below sets Content-Type: sending either twice would break the signature.
        if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-type") {
            continue;
        }
        http_req = http_req.header(name, value.clone());
    }
    let http_req = http_req.body(sigv4x509::CONTENT_TYPE, signed.body.clone());
    log::debug!("CreateSession {http_req:?}");
    let resp = client.send(&http_req).map_err(http_err)?;
    log::debug!("CreateSession answered HTTP {}", resp.status);
    let creds = handle_create_session_answer(
        resp.status,
        resp.header("x-amzn-errortype"),
        resp.header("date"),
        resp.body(),
        SystemTime::now(),
    )?;
    Ok(creds)
}

/// [`create_session_once`] under `policy`: throttling, 5xx and connection failures are retried
/// with backoff (each attempt signed afresh); anything else fails at once.
pub fn create_session(
    client: &Client,
    req: &SessionRequest,
    key: &dyn NodeKey,
    policy: &RetryPolicy,
    clock: &dyn Clock,
) -> Result<Credentials, RolesAnywhereError> {
    let started = std::time::Instant::now();
    let out = retry::run(policy, clock, |attempt| {
        if attempt > 0 {
            log::debug!("retrying CreateSession (attempt {})", attempt + 1);
        }
        let r = create_session_once(client, req, key, SystemTime::now());
        if let Err(e) = &r {
            if e.is_transient() {
                log::debug!("CreateSession failed transiently: {e}");
            }
        }
        r
    });
    if let Ok(c) = &out {
        log::info!(
            "IAM Roles Anywhere session {} valid until {} ({} ms)",
            c.access_key_id,
            c.expiration
                .map(super::time::rfc3339)
                .unwrap_or_else(|| "-".into()),
            started.elapsed().as_millis()
        );
    }
    out
}

/// The retry policy for a one-shot command (`credential-process`): SDKs wait for it, so it is
/// shorter than the default.
pub fn interactive_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(500),
        cap: Duration::from_secs(5),
        deadline: Duration::from_secs(30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        let t = RolesAnywhereError::Service(CreateSessionError::Transient {
            status: 503,
            message: "x".into(),
        });
        assert!(t.is_transient());
        let d = RolesAnywhereError::Service(CreateSessionError::AccessDenied {
            message: "no".into(),
        });
        assert!(!d.is_transient());
        let s = RolesAnywhereError::Sign(X509SignError::BadDuration(5));
        assert!(!s.is_transient());
    }
}
