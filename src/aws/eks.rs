//! `eks:DescribeCluster`, pure halves: the signed request for the HTTP client, and the answer
//! turned into what `init` needs (endpoint, CA, service CIDR, remote node networks), with errors
//! an operator can act on.

use crate::error::{Class, Classify};
use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;

use super::credentials::Credentials;
use super::sigv4::{sign_request, HttpRequest};
use super::sigv4x509::endpoint_host;
use crate::peer_fields;

/// The SigV4 service name of EKS.
pub const SERVICE: &str = "eks";

/// The default EKS endpoint of a region.
pub fn default_endpoint(region: &str) -> String {
    format!("https://eks.{region}.amazonaws.com")
}

/// The endpoint an AWS SDK would use for service `service_id` (`EKS`, `STS`, `ROLESANYWHERE`):
/// `AWS_ENDPOINT_URL_<SERVICE_ID>` if set, else `AWS_ENDPOINT_URL`, else `None` (use the
/// default). `env` looks a variable up (`|k| std::env::var(k).ok()` in the binary).
pub fn endpoint_from_env(service_id: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let specific = format!(
        "AWS_ENDPOINT_URL_{}",
        service_id.to_ascii_uppercase().replace([' ', '-'], "_")
    );
    env(&specific)
        .filter(|v| !v.is_empty())
        .or_else(|| env("AWS_ENDPOINT_URL").filter(|v| !v.is_empty()))
        .map(|v| v.trim_end_matches('/').to_string())
}

/// Problems with DescribeCluster; one line each, naming the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EksError {
    #[error("{0}")]
    Endpoint(String),
    #[error("cluster name {0:?} is not valid: 1-100 characters, letters, digits, '-' and '_', starting with a letter or digit")]
    BadClusterName(String),
    #[error("EKS cluster {cluster:?} not found in {region}: check spec.cluster.name and spec.cluster.region ({message})")]
    NotFound {
        cluster: String,
        region: String,
        message: String,
    },
    #[error("EKS denied DescribeCluster on {cluster:?}: {message} (the node role needs eks:DescribeCluster, or set apiServerEndpoint, certificateAuthority and cidr in the NodeConfig)")]
    AccessDenied { cluster: String, message: String },
    #[error("EKS cluster {cluster:?} is {status}, not ACTIVE: wait until it is ACTIVE")]
    NotActive { cluster: String, status: String },
    #[error("EKS is throttling or failing (HTTP {status}): {message}; retrying later should work")]
    Transient { status: u16, message: String },
    #[error("EKS answered HTTP {status} to DescribeCluster: {message}")]
    Other { status: u16, message: String },
    #[error("EKS DescribeCluster answer for {cluster:?} is unusable: {detail}")]
    BadResponse { cluster: String, detail: String },
}

impl Classify for EksError {
    /// Transient: throttling and 5xx. Everything else (names, access, a cluster not ACTIVE
    /// or not found, an unusable answer) needs an operator.
    fn class(&self) -> Class {
        match self {
            EksError::Transient { .. } => Class::Transient,
            _ => Class::Operator,
        }
    }
}

/// Checks a cluster name the way EKS does (so it can be put in a path unescaped).
pub fn validate_cluster_name(name: &str) -> Result<(), EksError> {
    let ok = (1..=100).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EksError::BadClusterName(name.to_string()))
    }
}

/// The signed `GET /clusters/<name>` request. Send `url` with exactly `request.headers`.
#[derive(Debug, Clone)]
pub struct DescribeClusterRequest {
    /// Full URL.
    pub url: String,
    /// The signed request (its headers include `Authorization`).
    pub request: HttpRequest,
}

/// Builds and signs DescribeCluster for `cluster` at `endpoint` (see [`default_endpoint`]).
pub fn describe_cluster_request(
    endpoint: &str,
    region: &str,
    cluster: &str,
    creds: &Credentials,
    now: SystemTime,
) -> Result<DescribeClusterRequest, EksError> {
    validate_cluster_name(cluster)?;
    let host = endpoint_host(endpoint).map_err(|e| EksError::Endpoint(e.to_string()))?;
    let mut request = HttpRequest::new("GET", &host, &format!("/clusters/{cluster}"));
    sign_request(&mut request, creds, region, SERVICE, now);
    Ok(DescribeClusterRequest {
        url: format!(
            "{}{}",
            endpoint.trim_end_matches('/'),
            request.path_and_query()
        ),
        request,
    })
}

/// What `init` takes from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDetails {
    pub name: String,
    /// `ACTIVE`, `CREATING`, ...
    pub status: String,
    /// API server URL.
    pub endpoint: String,
    /// The cluster CA as decoded from the base64 `certificateAuthority.data` (PEM on AWS; not
    /// checked here: moto answers random bytes, and validating the CA is the init phase's job).
    pub certificate_authority_pem: Vec<u8>,
    /// `kubernetesNetworkConfig.serviceIpv4Cidr` (or the IPv6 one for IPv6 clusters).
    pub service_cidr: Option<String>,
    /// `remoteNetworkConfig.remoteNodeNetworks[].cidrs[]`, flattened.
    pub remote_node_cidrs: Vec<String>,
    /// `remoteNetworkConfig.remotePodNetworks[].cidrs[]`, flattened.
    pub remote_pod_cidrs: Vec<String>,
    /// Kubernetes version (`1.31`).
    pub version: Option<String>,
}

#[derive(Deserialize)]
struct RawAnswer {
    cluster: RawCluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCluster {
    name: Option<String>,
    status: Option<String>,
    endpoint: Option<String>,
    certificate_authority: Option<RawCa>,
    kubernetes_network_config: Option<RawNet>,
    remote_network_config: Option<RawRemote>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct RawCa {
    data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNet {
    service_ipv4_cidr: Option<String>,
    service_ipv6_cidr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRemote {
    #[serde(default)]
    remote_node_networks: Vec<RawCidrs>,
    #[serde(default)]
    remote_pod_networks: Vec<RawCidrs>,
}

#[derive(Deserialize)]
struct RawCidrs {
    #[serde(default)]
    cidrs: Vec<String>,
}

/// Turns the HTTP answer into cluster details or a classified error. A cluster that is not
/// `ACTIVE` is an error ([`EksError::NotActive`]): its endpoint and CA may not be final.
pub fn parse_describe_cluster(
    cluster: &str,
    region: &str,
    status: u16,
    error_type_header: Option<&str>,
    body: &[u8],
) -> Result<ClusterDetails, EksError> {
    if !(200..300).contains(&status) {
        return Err(classify_error(
            cluster,
            region,
            status,
            error_type_header,
            body,
        ));
    }
    let bad = |detail: String| EksError::BadResponse {
        cluster: cluster.to_string(),
        detail,
    };
    let raw: RawAnswer =
        serde_json::from_slice(body).map_err(|e| bad(format!("not the expected JSON: {e}")))?;
    let c = raw.cluster;
    let checked = |r: Result<(), peer_fields::InvalidField>| {
        r.map_err(|e| bad(format!("{e} (nothing was written)")))
    };
    let state = c.status.unwrap_or_else(|| "UNKNOWN".into());
    checked(peer_fields::name("cluster.status", &state))?;
    if state != "ACTIVE" {
        return Err(EksError::NotActive {
            cluster: cluster.to_string(),
            status: state,
        });
    }
    let endpoint = c
        .endpoint
        .filter(|e| !e.is_empty())
        .ok_or_else(|| bad("no endpoint".into()))?;
    checked(peer_fields::https_url("cluster.endpoint", &endpoint))?;
    let ca_b64 = c
        .certificate_authority
        .and_then(|ca| ca.data)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| bad("no certificateAuthority.data".into()))?;
    let certificate_authority_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| bad(format!("certificateAuthority.data is not base64: {e}")))?;
    // Written as the cluster CA file: it must be PEM certificates and nothing else.
    let pem = std::str::from_utf8(&certificate_authority_pem).map_err(|_| {
        bad("certificateAuthority.data is not PEM text (nothing was written)".into())
    })?;
    checked(peer_fields::pem_certificates(
        "certificateAuthority.data",
        pem,
    ))?;
    crate::x509::chain::parse_pem_certs(pem).map_err(|e| {
        bad(format!(
            "certificateAuthority.data holds no usable certificate: {e} (nothing was written)"
        ))
    })?;
    let net = c.kubernetes_network_config;
    let service_cidr = net.and_then(|n| n.service_ipv4_cidr.or(n.service_ipv6_cidr));
    let (remote_node_cidrs, remote_pod_cidrs) = match c.remote_network_config {
        Some(r) => (
            r.remote_node_networks
                .into_iter()
                .flat_map(|n| n.cidrs)
                .collect(),
            r.remote_pod_networks
                .into_iter()
                .flat_map(|n| n.cidrs)
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    if let Some(cidr) = &service_cidr {
        checked(peer_fields::cidr(
            "kubernetesNetworkConfig.serviceIpv4Cidr",
            cidr,
        ))?;
    }
    for cidr in &remote_node_cidrs {
        checked(peer_fields::cidr("remoteNodeNetworks.cidrs", cidr))?;
    }
    for cidr in &remote_pod_cidrs {
        checked(peer_fields::cidr("remotePodNetworks.cidrs", cidr))?;
    }
    if let Some(n) = &c.name {
        checked(peer_fields::name("cluster.name", n))?;
    }
    if let Some(v) = &c.version {
        checked(peer_fields::name("cluster.version", v))?;
    }
    Ok(ClusterDetails {
        name: c.name.unwrap_or_else(|| cluster.to_string()),
        status: state,
        endpoint,
        certificate_authority_pem,
        service_cidr,
        remote_node_cidrs,
        remote_pod_cidrs,
        version: c.version,
    })
}

fn classify_error(
    cluster: &str,
    region: &str,
    status: u16,
    error_type_header: Option<&str>,
    body: &[u8],
) -> EksError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |n: &str| {
        json.as_ref()
            .and_then(|j| j.get(n))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let message = field("message")
        .or_else(|| field("Message"))
        .map(|m| peer_fields::one_line(&m))
        .unwrap_or_else(|| {
            let t = peer_fields::one_line(&String::from_utf8_lossy(body));
            if t.is_empty() {
                "<empty response body>".into()
            } else {
                t
            }
        });
    let kind = error_type_header
        .map(str::to_string)
        .or_else(|| field("__type"))
        .unwrap_or_default();
    let kind = kind.split([':', '#']).find(|s| !s.is_empty()).unwrap_or("");
    let cluster = cluster.to_string();
    if status == 429 || status >= 500 || kind.contains("Throttl") {
        return EksError::Transient { status, message };
    }
    match (kind, status) {
        ("ResourceNotFoundException", _) | ("", 404) => EksError::NotFound {
            cluster,
            region: region.to_string(),
            message,
        },
        (_, 403) | ("AccessDeniedException", _) => EksError::AccessDenied { cluster, message },
        _ => EksError::Other { status, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;
    use crate::secret::Secret;

    const CA_PEM: &str = include_str!("../../tests/fixtures/x509/root.pem");

    fn answer(status: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(CA_PEM);
        format!(
            r#"{{"cluster":{{"name":"hybrid","arn":"arn:aws:eks:us-west-2:1:cluster/hybrid","version":"1.31","endpoint":"https://ABC.gr7.us-west-2.eks.amazonaws.com","status":"{status}","certificateAuthority":{{"data":"{ca}"}},"kubernetesNetworkConfig":{{"serviceIpv4Cidr":"172.16.0.0/16","ipFamily":"ipv4"}},"remoteNetworkConfig":{{"remoteNodeNetworks":[{{"cidrs":["10.80.0.0/16","10.81.0.0/16"]}}],"remotePodNetworks":[{{"cidrs":["10.85.0.0/16"]}}]}}}}}}"#
        )
    }

    #[test]
    fn request_is_signed_for_eks() {
        let creds = Credentials {
            access_key_id: "ASIAEKS".into(),
            secret_access_key: Secret::new("s"),
            session_token: Some(Secret::new("t")),
            expiration: None,
        };
        let r = describe_cluster_request(
            "https://127.0.0.1:4566/",
            "us-west-2",
            "hybrid",
            &creds,
            from_unix_seconds(1_700_000_000),
        )
        .unwrap();
        assert_eq!(r.url, "https://127.0.0.1:4566/clusters/hybrid");
        assert_eq!(r.request.header("host"), Some("127.0.0.1:4566"));
        let auth = r.request.header("authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=ASIAEKS/20231114/us-west-2/eks/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature="
        ), "{auth}");
        for bad in ["", "-x", "a/b", "a b", &"a".repeat(101)] {
            assert!(
                describe_cluster_request("https://e", "r", bad, &creds, from_unix_seconds(0))
                    .is_err()
            );
        }
    }

    #[test]
    fn fields_that_cannot_hold_what_was_sent_are_refused() {
        let ok = answer("ACTIVE");
        let ca = base64::engine::general_purpose::STANDARD.encode(CA_PEM);
        let junk_ca = base64::engine::general_purpose::STANDARD
            .encode(format!("{CA_PEM}insecure-skip-tls-verify: true\n"));
        for (what, body) in [
            (
                "cluster.endpoint",
                ok.replace(
                    "eks.amazonaws.com\"",
                    "eks.amazonaws.com\\n    insecure-skip-tls-verify: true\"",
                ),
            ),
            ("cluster.endpoint", ok.replace("https://ABC", "http://ABC")),
            ("certificateAuthority.data", ok.replace(&ca, &junk_ca)),
            (
                "remoteNodeNetworks.cidrs",
                ok.replace("10.81.0.0/16", "10.81.0.0/16\\n"),
            ),
            (
                "serviceIpv4Cidr",
                ok.replace("172.16.0.0/16", "172.16.0.0 /16"),
            ),
            ("cluster.version", ok.replace("\"1.31\"", "\"1.31\\nx\"")),
        ] {
            assert_ne!(body, ok, "{what}: the case must change the answer");
            let e = parse_describe_cluster("hybrid", "us-west-2", 200, None, body.as_bytes())
                .unwrap_err();
            assert!(matches!(e, EksError::BadResponse { .. }), "{what}: {e}");
            assert!(e.to_string().contains(what), "{what}: {e}");
            assert_eq!(e.class(), Class::Operator);
        }
        // An error message cannot start a new log line.
        let e = parse_describe_cluster(
            "hybrid",
            "us-west-2",
            403,
            None,
            br#"{"message":"denied\nerror: forged"}"#,
        )
        .unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn active_cluster_details() {
        let d = parse_describe_cluster(
            "hybrid",
            "us-west-2",
            200,
            None,
            answer("ACTIVE").as_bytes(),
        )
        .unwrap();
        assert_eq!(d.endpoint, "https://ABC.gr7.us-west-2.eks.amazonaws.com");
        assert_eq!(d.certificate_authority_pem, CA_PEM.as_bytes());
        assert_eq!(d.service_cidr.as_deref(), Some("172.16.0.0/16"));
        assert_eq!(d.remote_node_cidrs, vec!["10.80.0.0/16", "10.81.0.0/16"]);
        assert_eq!(d.remote_pod_cidrs, vec!["10.85.0.0/16"]);
        assert_eq!(d.version.as_deref(), Some("1.31"));
    }

    #[test]
    fn errors_are_classified() {
        let e = parse_describe_cluster(
            "hybrid",
            "us-west-2",
            200,
            None,
            answer("CREATING").as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "EKS cluster \"hybrid\" is CREATING, not ACTIVE: wait until it is ACTIVE"
        );
        let e = parse_describe_cluster(
            "hybrid",
            "us-west-2",
            404,
            Some("ResourceNotFoundException"),
            br#"{"message":"No cluster found for name: hybrid."}"#,
        )
        .unwrap_err();
        assert!(matches!(e, EksError::NotFound { .. }));
        assert!(e.to_string().contains("us-west-2"));
        let e = parse_describe_cluster("h", "r", 403, None, br#"{"message":"not authorized"}"#)
            .unwrap_err();
        assert!(matches!(e, EksError::AccessDenied { .. }));
        let e =
            parse_describe_cluster("h", "r", 400, Some("ThrottlingException"), b"").unwrap_err();
        assert!(e.is_transient());
        let e = parse_describe_cluster("h", "r", 502, None, b"<html>").unwrap_err();
        assert!(e.is_transient());
        let no_ca = answer("ACTIVE").replace("\"certificateAuthority\"", "\"x\"");
        assert!(matches!(
            parse_describe_cluster("h", "r", 200, None, no_ca.as_bytes()),
            Err(EksError::BadResponse { .. })
        ));
        assert!(matches!(
            parse_describe_cluster("h", "r", 200, None, b"[]"),
            Err(EksError::BadResponse { .. })
        ));
    }

    #[test]
    fn endpoint_environment_like_the_sdks() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(endpoint_from_env("EKS", env(&[])), None);
        assert_eq!(
            endpoint_from_env(
                "EKS",
                env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")])
            ),
            Some("http://127.0.0.1:5000".into())
        );
        assert_eq!(
            endpoint_from_env(
                "eks",
                env(&[
                    ("AWS_ENDPOINT_URL", "http://a"),
                    ("AWS_ENDPOINT_URL_EKS", "http://b")
                ])
            ),
            Some("http://b".into())
        );
        assert_eq!(
            endpoint_from_env(
                "RolesAnywhere",
                env(&[("AWS_ENDPOINT_URL_ROLESANYWHERE", "https://c")])
            ),
            Some("https://c".into())
        );
        assert_eq!(
            endpoint_from_env(
                "EKS",
                env(&[
                    ("AWS_ENDPOINT_URL_EKS", ""),
                    ("AWS_ENDPOINT_URL", "http://a")
                ])
            ),
            Some("http://a".into())
        );
    }
}
