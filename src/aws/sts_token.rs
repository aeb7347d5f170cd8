//! The EKS bearer token (what `aws eks get-token` and aws-iam-authenticator produce) and the
//! `ExecCredential` that kubectl and kubelet read from an exec credential plugin.
//!
//! Token = `k8s-aws-v1.` + base64url-nopad(presigned `GET https://sts.<region>.amazonaws.com/
//! ?Action=GetCallerIdentity&Version=2011-06-15&...`), with the cluster name in the signed header
//! `x-k8s-aws-id` (docs/protocols.md §3). The API server's authenticator replays the URL against
//! STS.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::credentials::Credentials;
use super::sigv4::{presign, HttpRequest};
use super::time::rfc3339;
use crate::secret::Secret;

/// Prefix of every EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The signed header that binds a token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// Presigned URL lifetime, as aws-iam-authenticator uses (the verifier allows 0..900).
pub const URL_EXPIRES_SECS: u32 = 60;
/// How long kubectl may reuse the token: 14 minutes (the server accepts 15).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);
/// `apiVersion` when kubectl does not say which it wants.
pub const DEFAULT_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";
/// `apiVersion`s we echo.
pub const SUPPORTED_API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];
/// Largest `KUBERNETES_EXEC_INFO` accepted (it can carry the cluster's CA bundle).
pub const MAX_EXEC_INFO_BYTES: usize = 256 * 1024;

/// The regional STS host (`sts.<region>.amazonaws.com`).
pub fn sts_host(region: &str) -> String {
    format!("sts.{region}.amazonaws.com")
}

/// The presigned GetCallerIdentity URL for `cluster_name`, on `https://<sts_host>`. The URL
/// carries the session token: treat it as a secret.
pub fn presigned_url(
    creds: &Credentials,
    region: &str,
    sts_host: &str,
    cluster_name: &str,
    now: SystemTime,
) -> Secret {
    let req = HttpRequest::new("GET", sts_host, "/")
        .with_query("Action", "GetCallerIdentity")
        .with_query("Version", "2011-06-15")
        .with_header(CLUSTER_ID_HEADER, cluster_name);
    let (target, _) = presign(&req, creds, region, "sts", now, URL_EXPIRES_SECS);
    Secret::new(format!("https://{sts_host}{target}"))
}

/// The bearer token: `k8s-aws-v1.` + base64url without padding of the presigned URL.
pub fn eks_token(
    creds: &Credentials,
    region: &str,
    sts_host: &str,
    cluster_name: &str,
    now: SystemTime,
) -> Secret {
    let url = presigned_url(creds, region, sts_host, cluster_name, now);
    Secret::new(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.expose())
    ))
}

/// A `KUBERNETES_EXEC_INFO` problem; one line naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecInfoError {
    #[error("KUBERNETES_EXEC_INFO is {0} bytes, more than the {MAX_EXEC_INFO_BYTES} accepted")]
    TooLarge(usize),
    #[error("KUBERNETES_EXEC_INFO is not an ExecCredential JSON object: {0}")]
    Malformed(String),
    #[error("KUBERNETES_EXEC_INFO asks for apiVersion {0:?}; hybridboot token speaks client.authentication.k8s.io/v1 and v1beta1: set one of them in the kubeconfig's exec section")]
    Unsupported(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExecInfo {
    api_version: Option<String>,
    kind: Option<String>,
}

/// The `apiVersion` to answer with, from the `KUBERNETES_EXEC_INFO` variable (absent or empty:
/// the v1beta1 default, as older kubectl sets none).
pub fn exec_info_api_version(exec_info: Option<&str>) -> Result<String, ExecInfoError> {
    let text = match exec_info.map(str::trim) {
        None | Some("") => return Ok(DEFAULT_API_VERSION.to_string()),
        Some(t) => t,
    };
    if text.len() > MAX_EXEC_INFO_BYTES {
        return Err(ExecInfoError::TooLarge(text.len()));
    }
    let raw: RawExecInfo =
        serde_json::from_str(text).map_err(|e| ExecInfoError::Malformed(e.to_string()))?;
    if let Some(kind) = raw.kind.as_deref() {
        if kind != "ExecCredential" {
            return Err(ExecInfoError::Malformed(format!(
                "kind is {kind:?}, expected \"ExecCredential\""
            )));
        }
    }
    match raw.api_version {
        None => Ok(DEFAULT_API_VERSION.to_string()),
        Some(v) if SUPPORTED_API_VERSIONS.contains(&v.as_str()) => Ok(v),
        Some(v) => Err(ExecInfoError::Unsupported(v)),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential<'a> {
    kind: &'static str,
    api_version: &'a str,
    spec: serde_json::Map<String, serde_json::Value>,
    status: Status<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    expiration_timestamp: String,
    token: &'a str,
}

/// The `ExecCredential` JSON printed by `hybridboot token`, expiring at `now` + 14 min. Holds
/// the token: print it to stdout only.
pub fn render_exec_credential(token: &Secret, now: SystemTime, api_version: &str) -> Secret {
    let ec = ExecCredential {
        kind: "ExecCredential",
        api_version,
        spec: Default::default(),
        status: Status {
            expiration_timestamp: rfc3339(now + TOKEN_LIFETIME),
            token: token.expose(),
        },
    };
    Secret::new(serde_json::to_string(&ec).expect("serialising strings cannot fail"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;

    fn vector_creds() -> Credentials {
        Credentials {
            access_key_id: "ASIAR2TG44V6AS3ZZE7C".into(),
            secret_access_key: Secret::new("4KD5cntGcVmLWRdF5wvNRuzNL5Qxmp6OKVY6Fz/Q"),
            session_token: None,
            expiration: None,
        }
    }

    fn query_value<'a>(url: &'a str, key: &str) -> Option<&'a str> {
        url.split_once('?')?
            .1
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    // aws-iam-authenticator pkg/token/token_test.go TestGetWithSTS (docs/protocols.md §3).
    #[test]
    fn known_answer_vector() {
        let now = from_unix_seconds(1682640000);
        let url = presigned_url(
            &vector_creds(),
            "us-west-2",
            &sts_host("us-west-2"),
            "test-cluster",
            now,
        );
        let url = url.expose();
        assert_eq!(
            query_value(url, "X-Amz-Signature"),
            Some("e211dba77aba9dc44b0b6be38b8eaad092599c5157f6314444c5b9d85747f5ce"),
            "{url}"
        );
        assert!(url.starts_with(
            "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAR2TG44V6AS3ZZE7C%2F20230428%2Fus-west-2%2Fsts%2Faws4_request&X-Amz-Date=20230428T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature="
        ), "{url}");

        let token = eks_token(
            &vector_creds(),
            "us-west-2",
            &sts_host("us-west-2"),
            "test-cluster",
            now,
        );
        let b64 = token.expose().strip_prefix(TOKEN_PREFIX).unwrap();
        assert!(!b64.contains('=') && !b64.contains('+') && !b64.contains('/'));
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, url.as_bytes());
        assert!(token.expose().len() <= 4096);
    }

    #[test]
    fn session_token_goes_into_the_signed_query() {
        let mut creds = vector_creds();
        creds.session_token = Some(Secret::new("tok/en+=="));
        let now = from_unix_seconds(1682640000);
        let url = presigned_url(&creds, "us-west-2", "sts.us-west-2.amazonaws.com", "c", now);
        assert_eq!(
            query_value(url.expose(), "X-Amz-Security-Token"),
            Some("tok%2Fen%2B%3D%3D")
        );
        let without = presigned_url(
            &vector_creds(),
            "us-west-2",
            "sts.us-west-2.amazonaws.com",
            "c",
            now,
        );
        assert_ne!(
            query_value(url.expose(), "X-Amz-Signature"),
            query_value(without.expose(), "X-Amz-Signature")
        );
        assert_eq!(format!("{url:?}"), "<redacted>");
    }

    #[test]
    fn exec_credential_rendering() {
        let token = Secret::new("k8s-aws-v1.abc");
        let now = from_unix_seconds(1682640000);
        let out = render_exec_credential(&token, now, DEFAULT_API_VERSION);
        assert_eq!(
            out.expose(),
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{},"status":{"expirationTimestamp":"2023-04-28T00:14:00Z","token":"k8s-aws-v1.abc"}}"#
        );
    }

    #[test]
    fn exec_info_parsing() {
        assert_eq!(exec_info_api_version(None).unwrap(), DEFAULT_API_VERSION);
        assert_eq!(
            exec_info_api_version(Some(" ")).unwrap(),
            DEFAULT_API_VERSION
        );
        let v1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;
        assert_eq!(
            exec_info_api_version(Some(v1)).unwrap(),
            "client.authentication.k8s.io/v1"
        );
        let beta = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"cluster":{"server":"https://x","certificate-authority-data":"QUJD"}}}"#;
        assert_eq!(
            exec_info_api_version(Some(beta)).unwrap(),
            DEFAULT_API_VERSION
        );
        let alpha =
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1alpha1"}"#;
        let e = exec_info_api_version(Some(alpha)).unwrap_err();
        assert!(matches!(e, ExecInfoError::Unsupported(_)));
        assert!(e.to_string().contains("KUBERNETES_EXEC_INFO"));
        assert!(matches!(
            exec_info_api_version(Some("{not json")),
            Err(ExecInfoError::Malformed(_))
        ));
        assert!(matches!(
            exec_info_api_version(Some(r#"{"kind":"Pod","apiVersion":"v1"}"#)),
            Err(ExecInfoError::Malformed(_))
        ));
        let huge = format!(
            r#"{{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","x":"{}"}}"#,
            "a".repeat(MAX_EXEC_INFO_BYTES)
        );
        assert!(matches!(
            exec_info_api_version(Some(&huge)),
            Err(ExecInfoError::TooLarge(_))
        ));
    }
}
