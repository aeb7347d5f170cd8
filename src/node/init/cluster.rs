//! What `init` asks AWS: credentials (the environment, else the node's own Roles Anywhere
//! session) and `eks:DescribeCluster`; and the node IP the kernel would use to reach the
//! cluster.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::aws::credentials::Credentials;
use crate::aws::eks;
use crate::aws::session::{self, CacheSettings};
use crate::error::{Classify, ResultExt};
use crate::http::{self, Client};
use crate::node::config::NodeConfig;
use crate::node::render::aws::roles_anywhere_settings;
use crate::node::render::AwsOverrides;
use crate::retry::RetryPolicy;

/// The local address the kernel would use to reach the API server (no packet is sent: a UDP
/// connect only picks a route). When its name does not resolve (a site whose only resolver is
/// its proxy), the default route's address, as nodeadm takes it.
pub(super) fn detect_node_ip(endpoint: &str) -> Option<IpAddr> {
    let url = http::Url::parse(endpoint).ok()?;
    let host = url.host().trim_matches(['[', ']']).to_string();
    local_address_towards((host.as_str(), url.port())).or_else(|| {
        let table = std::fs::read_to_string("/proc/net/route").ok()?;
        let gateway = default_gateway(&table)?;
        log::info!(
            "{host} does not resolve here: the node IP is the default route's (gateway {gateway})"
        );
        local_address_towards((gateway, 53))
    })
}

fn local_address_towards(target: impl std::net::ToSocketAddrs) -> Option<IpAddr> {
    let sock = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    sock.connect(target).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The IPv4 default route's gateway in `/proc/net/route` (columns Iface, Destination, Gateway,
/// Flags, ..., Mask; addresses in the kernel's byte order, printed as hex).
fn default_gateway(table: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| cols.get(i).and_then(|c| u32::from_str_radix(c, 16).ok());
        let (dest, gateway, flags, mask) = (hex(1)?, hex(2)?, hex(3)?, hex(7)?);
        let wanted = RTF_UP | RTF_GATEWAY;
        (dest == 0 && mask == 0 && flags & wanted == wanted && gateway != 0)
            .then(|| Ipv4Addr::from(gateway.to_le_bytes()))
    })
}

/// Credentials for DescribeCluster: the environment if it has keys (operators and tests), else
/// [`roles_anywhere_credentials`].
pub fn node_credentials(
    cfg: &NodeConfig,
    extra: &AwsOverrides,
    root: &Path,
    policy: &RetryPolicy,
) -> anyhow::Result<Credentials> {
    let env = |k: &str| std::env::var(k).ok();
    if let Some(c) = crate::aws::sources::from_environment(&env).classed()? {
        log::info!("using AWS credentials from the environment");
        return Ok(c);
    }
    roles_anywhere_credentials(cfg, extra, root, policy)
}

/// IAM Roles Anywhere with exactly the settings the aws phase renders into `credential_process`
/// (files taken under `root`, the cache too unless the environment names one), through the
/// session cache that credential_process shares. First boot's Roles Anywhere check is this call.
pub fn roles_anywhere_credentials(
    cfg: &NodeConfig,
    extra: &AwsOverrides,
    root: &Path,
    policy: &RetryPolicy,
) -> anyhow::Result<Credentials> {
    let env = |k: &str| std::env::var(k).ok();
    // The line is written for the node's own root; this run may work under another.
    let settings = roles_anywhere_settings(cfg, extra)
        .under_root(root)
        .with_env_defaults(&env);
    session::credentials_with(&settings, &CacheSettings::for_root(root, &env), policy)
}

/// Where DescribeCluster goes and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct EksTarget {
    /// The endpoint [default: `AWS_ENDPOINT_URL_EKS`, `AWS_ENDPOINT_URL`, else the region's].
    pub endpoint: Option<String>,
    /// CAs of its TLS certificate [default: env `AWS_CA_BUNDLE`, else the built-in roots].
    pub ca_bundle: Option<PathBuf>,
    /// The retry policy [default: [`RetryPolicy::default`]].
    pub retry: Option<RetryPolicy>,
}

/// `eks:DescribeCluster` through the HTTP client with the retry policy, at the endpoint an SDK
/// would use (`AWS_ENDPOINT_URL_EKS`, `AWS_ENDPOINT_URL`, else the region's) unless `target`
/// names one.
pub fn describe_cluster_by_name(
    name: &str,
    region: &str,
    creds: &Credentials,
    target: &EksTarget,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<eks::ClusterDetails> {
    let endpoint = target
        .endpoint
        .clone()
        .or_else(|| eks::endpoint_from_env("EKS", env))
        .unwrap_or_else(|| eks::default_endpoint(region));
    let signed = eks::describe_cluster_request(&endpoint, region, name, creds, SystemTime::now())
        .classed()?;
    let mut req = http::Request::get(http::Url::parse(&signed.url).classed()?);
    for (name, value) in &signed.request.headers {
        if !name.eq_ignore_ascii_case("host") {
            req = req.header(name, value.clone());
        }
    }
    let mut builder = Client::builder();
    let ca = target.ca_bundle.clone().or_else(|| {
        env("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(ca) = &ca {
        builder = builder.ca_bundle_file(ca).classed()?;
    }
    let client = builder.build().classed()?;
    log::info!("DescribeCluster {name} at {endpoint}");
    let policy = target.retry.unwrap_or_default();
    let (status, error_type, body) = match client.send_retrying(&req, &policy) {
        Ok(resp) => (
            resp.status,
            resp.header("x-amzn-errortype").map(str::to_string),
            resp.body().to_vec(),
        ),
        Err(http::HttpError::Status { code, body, .. }) => (code, None, body),
        Err(e) => {
            return Err(e
                .classed()
                .context(format!("DescribeCluster at {endpoint}")))
        }
    };
    // Its class travels with it: a DescribeCluster that keeps answering 5xx is an outage (exit
    // 4), a refusal needs an operator (exit 3).
    eks::parse_describe_cluster(name, region, status, error_type.as_deref(), &body).classed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ip_detection_uses_the_route_without_traffic() {
        assert_eq!(
            detect_node_ip("https://127.0.0.1:6443"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(detect_node_ip("not a url"), None);
    }

    #[test]
    fn the_default_gateway_comes_from_the_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway(table), Some(Ipv4Addr::new(10, 0, 2, 2)));
        // No default route, or one that is down: nothing.
        let down = table.replace("\t0003\t", "\t0002\t");
        assert_eq!(default_gateway(&down), None);
        assert_eq!(default_gateway("Iface\tDestination\n"), None);
        assert_eq!(default_gateway("Iface\nbogus line\n"), None);
    }
}
