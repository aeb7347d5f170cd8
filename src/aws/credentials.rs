//! AWS credentials: the type, the IAM Roles Anywhere `CreateSession` response and error bodies,
//! and the `credential_process` output format.
//!
//! Pure parsing and rendering only; the HTTP exchange lives with the HTTP client.

use crate::error::{Class, Classify};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::time::{parse_rfc3339, rfc3339, unix_seconds};
use crate::peer_fields::{self, InvalidField};
use crate::secret::Secret;

/// A set of AWS credentials. `Debug` shows the access key id and expiration only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `ASIA...` (temporary) or `AKIA...` (long-lived).
    pub access_key_id: String,
    /// The secret key; never logged.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials; `None` for long-lived keys (environment
    /// or shared file), which the EKS token provider must accept too.
    pub session_token: Option<Secret>,
    /// When temporary credentials expire; `None` for long-lived keys.
    pub expiration: Option<SystemTime>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("expiration", &self.expiration.map(rfc3339))
            .finish()
    }
}

impl Credentials {
    /// Seconds of validity left at `now` (`None` when they do not expire; negative when past).
    pub fn seconds_left(&self, now: SystemTime) -> Option<i64> {
        self.expiration
            .map(|e| unix_seconds(e).saturating_sub(unix_seconds(now)))
    }

    /// Whether the credentials are good for more than `margin_secs` after `now`.
    pub fn valid_for(&self, now: SystemTime, margin_secs: i64) -> bool {
        self.seconds_left(now).is_none_or(|left| left > margin_secs)
    }

    /// Checks that each field holds only what it can ([`peer_fields`]): what a peer or a
    /// `credential_process` returned must pass before it is written to a file or served.
    pub fn validate(&self) -> Result<(), InvalidField> {
        peer_fields::access_key_id("AccessKeyId", &self.access_key_id)?;
        peer_fields::secret_access_key("SecretAccessKey", self.secret_access_key.expose())?;
        if let Some(t) = &self.session_token {
            peer_fields::session_token("SessionToken", t.expose())?;
        }
        Ok(())
    }
}

/// Why `CreateSession` (or reading its answer) failed. Messages are one line and tell the operator
/// what to check; none contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateSessionError {
    /// 403 AccessDenied: the service's message plus the usual cause.
    #[error("IAM Roles Anywhere denied CreateSession: {message} (check the role's trust policy: it must trust rolesanywhere.amazonaws.com with this trust anchor, and a condition `sts:RoleSessionName == aws:PrincipalTag/x509Subject/CN` needs the role session name / node name to equal the certificate's CN)")]
    AccessDenied { message: String },
    /// The service does not trust the certificate's issuer (trust anchor, chain, or signature).
    #[error("IAM Roles Anywhere does not trust the certificate: {message} (is the issuing CA the trust anchor's, or is --intermediates needed to reach it?)")]
    UntrustedCertificate { message: String },
    /// The certificate is outside its validity period (or the clock is wrong).
    #[error("IAM Roles Anywhere rejected the certificate as expired or not yet valid: {message} (renew the certificate, and check the clock)")]
    ExpiredCertificate { message: String },
    /// The request was malformed: ARNs, duration, session name.
    #[error("IAM Roles Anywhere rejected the request as invalid: {message} (check the trust anchor, profile and role ARNs, the region, the session duration (900-43200 s) and the session name)")]
    Validation { message: String },
    /// An ARN names nothing.
    #[error("IAM Roles Anywhere resource not found: {message} (check the trust anchor and profile ARNs and the region)")]
    NotFound { message: String },
    /// Throttled or a server-side failure: retry later.
    #[error("IAM Roles Anywhere is throttling or failing (HTTP {status}): {message}; retrying later should work")]
    Transient { status: u16, message: String },
    /// Our clock and the service's differ by more than SigV4 tolerates.
    /// `skew_secs` = our clock minus the server's, when its `Date` header told us.
    #[error("the clock is off{} (SigV4 allows 300 s): fix the time (NTP/RTC) and retry; the service said: {message}", match .skew_secs { Some(s) => format!(" by {s} s compared with IAM Roles Anywhere's Date header"), None => String::new() })]
    ClockSkew {
        skew_secs: Option<i64>,
        message: String,
    },
    /// Any other error answer.
    #[error("IAM Roles Anywhere answered HTTP {status}: {message}")]
    Unknown { status: u16, message: String },
    /// A 2xx answer that is not a credential set.
    #[error("IAM Roles Anywhere answered with an unreadable credential set: {0}")]
    BadResponse(String),
    /// A credential set with a field that cannot hold what was sent (a line break in the
    /// session token, ...): nothing is written or served.
    #[error("IAM Roles Anywhere answered with an invalid credential set, refused before anything was written: {0} (is --endpoint the real service, or a proxy rewriting answers?)")]
    InvalidField(#[from] InvalidField),
}

impl Classify for CreateSessionError {
    /// Transient: throttling and 5xx. Every other answer (denied, untrusted, expired, invalid,
    /// a skewed clock) needs an operator.
    fn class(&self) -> Class {
        match self {
            CreateSessionError::Transient { .. } => Class::Transient,
            _ => Class::Operator,
        }
    }
}

impl CreateSessionError {
    /// Throttled rather than failing: HTTP 429, or a `ThrottlingException` (which the service
    /// sends with 400; every other transient answer is a 5xx).
    pub fn is_throttled(&self) -> bool {
        matches!(self, CreateSessionError::Transient { status, .. } if *status < 500)
    }
}

/// A serde_json error safe to show: its "invalid type: string \"...\"" messages quote the
/// offending value, which in a credentials document may be a secret, so only missing/unknown
/// field names and the position are kept.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("missing field") || msg.starts_with("unknown field") {
        return msg;
    }
    let what = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "a field of the wrong type or value",
        serde_json::error::Category::Eof => "truncated document",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResponse {
    credential_set: Vec<RawCredentialSet>,
}

#[derive(Deserialize)]
struct RawCredentialSet {
    credentials: RawCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// Parses a successful (2xx) `CreateSession` body (docs/protocols.md §1) into credentials.
pub fn parse_create_session_response(body: &[u8]) -> Result<Credentials, CreateSessionError> {
    let raw: RawResponse = serde_json::from_slice(body).map_err(|e| {
        CreateSessionError::BadResponse(format!("not the expected JSON: {}", json_error(&e)))
    })?;
    let set = raw
        .credential_set
        .into_iter()
        .next()
        .ok_or_else(|| CreateSessionError::BadResponse("credentialSet is empty".into()))?;
    let c = set.credentials;
    let secret_access_key = Secret::new(c.secret_access_key);
    let session_token = Secret::new(c.session_token);
    if c.access_key_id.is_empty() || secret_access_key.is_empty() || session_token.is_empty() {
        return Err(CreateSessionError::BadResponse(
            "accessKeyId, secretAccessKey or sessionToken is empty".into(),
        ));
    }
    // Before any of it is used: nothing a peer sends may break the files and logs it reaches.
    peer_fields::access_key_id("accessKeyId", &c.access_key_id)?;
    peer_fields::secret_access_key("secretAccessKey", secret_access_key.expose())?;
    peer_fields::session_token("sessionToken", session_token.expose())?;
    peer_fields::timestamp("expiration", &c.expiration)?;
    let expiration = parse_rfc3339(&c.expiration).ok_or_else(|| {
        CreateSessionError::BadResponse(format!(
            "expiration {:?} is not an RFC 3339 time",
            c.expiration
        ))
    })?;
    Ok(Credentials {
        access_key_id: c.access_key_id,
        secret_access_key,
        session_token: Some(session_token),
        expiration: Some(expiration),
    })
}

/// Classifies an error answer of `CreateSession`: HTTP status, the `x-amzn-ErrorType` header if
/// any, and the body (`{"message": ".."}`, possibly with `__type`; proxies send HTML or nothing).
pub fn parse_create_session_error(
    status: u16,
    error_type_header: Option<&str>,
    body: &[u8],
) -> CreateSessionError {
    let text = String::from_utf8_lossy(body);
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |names: &[&str]| -> Option<String> {
        let obj = json.as_ref()?.as_object()?;
        names
            .iter()
            .find_map(|n| obj.get(*n).and_then(|v| v.as_str()).map(str::to_string))
    };
    let message = field(&["message", "Message"])
        .map(|m| peer_fields::one_line(&m))
        .unwrap_or_else(|| {
            let t = peer_fields::one_line(&text);
            if t.is_empty() {
                "<empty response body>".to_string()
            } else {
                t
            }
        });
    // `x-amzn-ErrorType: AccessDeniedException:http://...` or `__type` in the body.
    let kind = error_type_header
        .map(str::to_string)
        .or_else(|| field(&["__type", "code", "Code"]))
        .unwrap_or_default();
    let kind = kind.split([':', '#']).find(|s| !s.is_empty()).unwrap_or("");
    let lower = message.to_ascii_lowercase();
    let cert_words = |w: &[&str]| w.iter().any(|x| lower.contains(x));

    if status == 429
        || status >= 500
        || kind.contains("Throttl")
        || kind.contains("TooManyRequests")
    {
        return CreateSessionError::Transient { status, message };
    }
    if cert_words(&[
        "signature expired",
        "request time too skewed",
        "too skewed",
        "clock skew",
    ]) {
        return CreateSessionError::ClockSkew {
            skew_secs: None,
            message,
        };
    }
    if cert_words(&["certificate", "x509", "x.509"])
        && cert_words(&[
            "expired",
            "not yet valid",
            "notafter",
            "notbefore",
            "validity",
        ])
    {
        return CreateSessionError::ExpiredCertificate { message };
    }
    if cert_words(&[
        "untrusted",
        "not trusted",
        "trust anchor",
        "unable to verify",
        "certificate chain",
        "issuer",
    ]) && !kind.contains("Validation")
    {
        return CreateSessionError::UntrustedCertificate { message };
    }
    match (kind, status) {
        ("AccessDeniedException", _) | ("", 403) => CreateSessionError::AccessDenied { message },
        ("ValidationException", _) | ("", 400) => CreateSessionError::Validation { message },
        ("ResourceNotFoundException", _) | ("", 404) => CreateSessionError::NotFound { message },
        (_, 403) => CreateSessionError::AccessDenied { message },
        (_, 400) => CreateSessionError::Validation { message },
        _ => CreateSessionError::Unknown { status, message },
    }
}

/// Largest clock difference SigV4 accepts.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// The whole answer handling for the HTTP client: a 2xx body becomes credentials; an error
/// answer is classified, and when the server's `Date` header shows our clock off by more than
/// [`MAX_CLOCK_SKEW_SECS`], the error says so (a skewed clock makes every signature look wrong).
pub fn handle_create_session_answer(
    status: u16,
    error_type_header: Option<&str>,
    date_header: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Credentials, CreateSessionError> {
    if (200..300).contains(&status) {
        return parse_create_session_response(body);
    }
    let err = parse_create_session_error(status, error_type_header, body);
    if let Some(server) = date_header.and_then(super::time::parse_http_date) {
        let skew_secs = unix_seconds(now) - unix_seconds(server);
        if skew_secs.abs() > MAX_CLOCK_SKEW_SECS && (400..500).contains(&status) {
            let message = match &err {
                CreateSessionError::AccessDenied { message }
                | CreateSessionError::UntrustedCertificate { message }
                | CreateSessionError::ExpiredCertificate { message }
                | CreateSessionError::Validation { message }
                | CreateSessionError::NotFound { message }
                | CreateSessionError::Transient { message, .. }
                | CreateSessionError::ClockSkew { message, .. }
                | CreateSessionError::Unknown { message, .. } => message.clone(),
                CreateSessionError::BadResponse(m) => m.clone(),
                CreateSessionError::InvalidField(f) => f.to_string(),
            };
            return Err(CreateSessionError::ClockSkew {
                skew_secs: Some(skew_secs),
                message,
            });
        }
    }
    Err(err)
}

/// The JSON a `credential_process` prints (AWS SDK format, version 1).
#[derive(Serialize)]
struct ProcessOutput<'a> {
    #[serde(rename = "Version")]
    version: u8,
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "SessionToken", skip_serializing_if = "Option::is_none")]
    session_token: Option<&'a str>,
    #[serde(rename = "Expiration", skip_serializing_if = "Option::is_none")]
    expiration: Option<String>,
}

/// Renders `{"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}` (one line,
/// no trailing newline). The result holds secrets: write it to stdout only.
pub fn render_credential_process(creds: &Credentials) -> Secret {
    let out = ProcessOutput {
        version: 1,
        access_key_id: &creds.access_key_id,
        secret_access_key: creds.secret_access_key.expose(),
        session_token: creds.session_token.as_ref().map(|s| s.expose()),
        expiration: creds.expiration.map(rfc3339),
    };
    Secret::new(serde_json::to_string(&out).expect("serialising plain strings cannot fail"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawProcessOutput {
    version: u8,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<String>,
}

/// Parses `credential_process` output (what the EKS token provider reads back from a configured
/// `credential_process`, and what the cache stores).
pub fn parse_credential_process(text: &[u8]) -> Result<Credentials, String> {
    let raw: RawProcessOutput = serde_json::from_slice(text).map_err(|e| {
        format!(
            "credential_process output is not the expected JSON: {}",
            json_error(&e)
        )
    })?;
    if raw.version != 1 {
        return Err(format!(
            "credential_process output has Version {}, only 1 is supported",
            raw.version
        ));
    }
    let expiration = match raw.expiration {
        None => None,
        Some(e) => Some(parse_rfc3339(&e).ok_or_else(|| {
            format!("credential_process output has an Expiration {e:?} that is not RFC 3339")
        })?),
    };
    if raw.access_key_id.is_empty() || raw.secret_access_key.is_empty() {
        return Err("credential_process output has an empty AccessKeyId or SecretAccessKey".into());
    }
    let creds = Credentials {
        access_key_id: raw.access_key_id,
        secret_access_key: Secret::new(raw.secret_access_key),
        session_token: raw.session_token.filter(|t| !t.is_empty()).map(Secret::new),
        expiration,
    };
    creds
        .validate()
        .map_err(|e| format!("credential_process output has an invalid {e}"))?;
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;

    const OK: &str = r#"{"credentialSet":[{"assumedRoleUser":{"arn":"arn:aws:sts::123456789012:assumed-role/node/abc","assumedRoleId":"AROA:abc"},"credentials":{"accessKeyId":"ASIAEXAMPLEKEY","secretAccessKey":"SECRETKEYVALUE123","sessionToken":"SESSIONTOKENVALUE456","expiration":"2024-05-01T13:00:00Z"},"packedPolicySize":0,"roleArn":"arn:aws:iam::123456789012:role/node","sourceIdentity":"CN=node-1"}],"subjectArn":"arn:aws:rolesanywhere:us-east-1:123456789012:subject/x"}"#;

    #[test]
    fn parses_the_documented_response() {
        let c = parse_create_session_response(OK.as_bytes()).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLEKEY");
        assert_eq!(c.secret_access_key.expose(), "SECRETKEYVALUE123");
        assert_eq!(
            c.session_token.as_ref().unwrap().expose(),
            "SESSIONTOKENVALUE456"
        );
        assert_eq!(c.expiration.map(rfc3339).unwrap(), "2024-05-01T13:00:00Z");
        let t = parse_rfc3339("2024-05-01T12:50:00Z").unwrap();
        assert_eq!(c.seconds_left(t), Some(600));
        assert!(c.valid_for(t, 300));
        assert!(!c.valid_for(t, 600));
    }

    #[test]
    fn debug_and_errors_never_show_secrets() {
        let c = parse_create_session_response(OK.as_bytes()).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("ASIAEXAMPLEKEY"));
        assert!(!shown.contains("SECRETKEYVALUE123"), "{shown}");
        assert!(!shown.contains("SESSIONTOKENVALUE456"), "{shown}");
        // A malformed answer carrying secrets must not echo them in the error.
        let bad = OK.replace("\"2024-05-01T13:00:00Z\"", "12");
        let e = parse_create_session_response(bad.as_bytes()).unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains("SECRETKEYVALUE123") && !shown.contains("SESSIONTOKENVALUE456"));
        let out = render_credential_process(&c);
        assert_eq!(format!("{out:?}"), "<redacted>");
    }

    #[test]
    fn json_errors_never_quote_values() {
        let body = OK.replace("\"SESSIONTOKENVALUE456\"", "[\"SESSIONTOKENVALUE456\"]");
        let e = parse_create_session_response(body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SESSIONTOKENVALUE456"), "{e}");
        assert!(e.contains("line 1 column"), "{e}");
        let e = parse_credential_process(
            br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":{"x":"SECRETVALUE"}}"#,
        )
        .unwrap_err();
        assert!(!e.contains("SECRETVALUE"), "{e}");
        let e = parse_credential_process(br#"{"Version":1,"SecretAccessKey":"SECRETVALUE"}"#)
            .unwrap_err();
        assert!(e.contains("missing field `AccessKeyId`"), "{e}");
        let e = parse_credential_process(br#"{"Version":"SECRETVALUE"}"#).unwrap_err();
        assert!(!e.contains("SECRETVALUE"), "{e}");
    }

    #[test]
    fn refuses_fields_that_cannot_hold_what_was_sent() {
        let evil = "SESSIONTOKENVALUE456\\n[evil]\\ncredential_process = /bin/sh -c id";
        let body = OK.replace("SESSIONTOKENVALUE456", evil);
        let e = parse_create_session_response(body.as_bytes()).unwrap_err();
        assert!(matches!(e, CreateSessionError::InvalidField(_)), "{e:?}");
        assert_eq!(e.class(), Class::Operator);
        let msg = e.to_string();
        assert!(
            msg.contains("sessionToken holds a line break at byte 20"),
            "{msg}"
        );
        assert!(!msg.contains("credential_process") && !msg.contains("SESSIONTOKEN"));
        for (from, to) in [
            ("ASIAEXAMPLEKEY", "ASIA EXAMPLE"),
            ("SECRETKEYVALUE123", "SECRET\\rKEY"),
            ("2024-05-01T13:00:00Z", "2024-05-01T13:00:00Z\\n"),
        ] {
            let body = OK.replace(from, to);
            assert!(
                parse_create_session_response(body.as_bytes()).is_err(),
                "{to}"
            );
        }
        // Error messages stay one line.
        let e = parse_create_session_error(403, None, br#"{"message":"no\nerror: forged"}"#);
        assert!(!e.to_string().contains('\n'), "{e}");
        // What a credential_process prints is checked too.
        let e = parse_credential_process(
            br#"{"Version":1,"AccessKeyId":"ASIAX","SecretAccessKey":"S","SessionToken":"a\nb"}"#,
        )
        .unwrap_err();
        assert!(e.contains("SessionToken holds a line break"), "{e}");
    }

    #[test]
    fn rejects_empty_or_missing_credentials() {
        for body in [
            "",
            "{}",
            r#"{"credentialSet":[]}"#,
            r#"{"credentialSet":[{"credentials":{"accessKeyId":"","secretAccessKey":"","sessionToken":"","expiration":"2024-05-01T13:00:00Z"}}]}"#,
        ] {
            assert!(matches!(
                parse_create_session_response(body.as_bytes()),
                Err(CreateSessionError::BadResponse(_))
            ));
        }
    }

    #[test]
    fn classifies_error_answers() {
        let e = parse_create_session_error(
            403,
            Some("AccessDeniedException:http://internal.amazon.com/coral/"),
            br#"{"message":"Unable to assume role for arn:aws:iam::1:role/x"}"#,
        );
        assert!(matches!(e, CreateSessionError::AccessDenied { .. }));
        let line = e.to_string();
        assert!(
            line.contains("Unable to assume role") && line.contains("CN"),
            "{line}"
        );
        assert!(!line.contains('\n'));

        let e = parse_create_session_error(
            403,
            None,
            br#"{"message":"Untrusted certificate. Insufficient certificate"}"#,
        );
        assert!(
            matches!(e, CreateSessionError::UntrustedCertificate { .. }),
            "{e:?}"
        );
        let e = parse_create_session_error(403, None, br#"{"message":"Certificate expired"}"#);
        assert!(
            matches!(e, CreateSessionError::ExpiredCertificate { .. }),
            "{e:?}"
        );
        let e = parse_create_session_error(
            400,
            None,
            br#"{"__type":"ValidationException","message":"durationSeconds must be <= 43200"}"#,
        );
        assert!(matches!(e, CreateSessionError::Validation { .. }), "{e:?}");
        let e = parse_create_session_error(
            404,
            Some("ResourceNotFoundException"),
            br#"{"message":"Profile not found"}"#,
        );
        assert!(matches!(e, CreateSessionError::NotFound { .. }), "{e:?}");
        for (status, hdr) in [(429, None), (503, None), (400, Some("ThrottlingException"))] {
            let e = parse_create_session_error(status, hdr, b"<html>busy</html>");
            assert!(e.is_transient(), "{status}: {e:?}");
        }
        let e = parse_create_session_error(418, None, b"");
        assert_eq!(
            e,
            CreateSessionError::Unknown {
                status: 418,
                message: "<empty response body>".into()
            }
        );
    }

    #[test]
    fn answers_and_clock_skew() {
        let now = parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        let c = handle_create_session_answer(201, None, None, OK.as_bytes(), now).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLEKEY");
        let body = br#"{"message":"Signature expired"}"#;
        // Server 10 minutes ahead of us: say it is the clock.
        let e = handle_create_session_answer(
            403,
            None,
            Some("Wed, 01 May 2024 12:10:00 GMT"),
            body,
            now,
        )
        .unwrap_err();
        assert_eq!(
            e,
            CreateSessionError::ClockSkew {
                skew_secs: Some(-600),
                message: "Signature expired".into()
            }
        );
        assert!(e.to_string().contains("clock is off by -600 s"));
        // Within tolerance: the service's own classification stands.
        let e = handle_create_session_answer(
            403,
            None,
            Some("Wed, 01 May 2024 12:04:00 GMT"),
            body,
            now,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CreateSessionError::ClockSkew {
                    skew_secs: None,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = handle_create_session_answer(
            403,
            None,
            Some("Wed, 01 May 2024 12:04:00 GMT"),
            br#"{"message":"Certificate expired"}"#,
            now,
        )
        .unwrap_err();
        assert!(
            matches!(e, CreateSessionError::ExpiredCertificate { .. }),
            "{e:?}"
        );
        let e = handle_create_session_answer(403, None, None, br#"{"message":"nope"}"#, now)
            .unwrap_err();
        assert!(matches!(e, CreateSessionError::AccessDenied { .. }));
    }

    #[test]
    fn credential_process_output_round_trips() {
        let c = parse_create_session_response(OK.as_bytes()).unwrap();
        let out = render_credential_process(&c);
        assert_eq!(
            out.expose(),
            r#"{"Version":1,"AccessKeyId":"ASIAEXAMPLEKEY","SecretAccessKey":"SECRETKEYVALUE123","SessionToken":"SESSIONTOKENVALUE456","Expiration":"2024-05-01T13:00:00Z"}"#
        );
        assert_eq!(
            parse_credential_process(out.expose().as_bytes()).unwrap(),
            c
        );
        let long_lived = Credentials {
            access_key_id: "AKIA1".into(),
            secret_access_key: Secret::new("s"),
            session_token: None,
            expiration: None,
        };
        let out = render_credential_process(&long_lived);
        assert_eq!(
            out.expose(),
            r#"{"Version":1,"AccessKeyId":"AKIA1","SecretAccessKey":"s"}"#
        );
        assert!(long_lived.valid_for(from_unix_seconds(i64::MAX / 4), 300));
        assert!(parse_credential_process(
            br#"{"Version":2,"AccessKeyId":"a","SecretAccessKey":"b"}"#
        )
        .unwrap_err()
        .contains("Version 2"));
    }
}
