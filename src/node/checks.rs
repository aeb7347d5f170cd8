//! The pure parts of `init`'s validations: the node IP is inside the cluster's remote node
//! networks, the Roles Anywhere certificate is readable, currently valid and issued to the
//! node name, and the clock is sane. Inputs are values (the clock included), so each rule is
//! tested without a network or a wall clock.

use crate::error::{Class, Classify};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::{Decode, DecodePem};
use x509_cert::Certificate;

use super::config::parse_cidr;

/// A failed validation; each prints as one line with what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    /// `--node-ip` is not an IPv4 address.
    #[error("spec.kubelet.flags: --node-ip={0:?} is not an IPv4 address; hybrid nodes use one IPv4 node IP")]
    BadNodeIp(String),
    /// No node IP known.
    #[error("could not determine the node IP: set --node-ip=<ip> in spec.kubelet.flags (or --skip node-ip-validation)")]
    NoNodeIp,
    /// The cluster has no remote node networks.
    #[error("cluster {0} has no remote node networks: configure remoteNetworkConfig.remoteNodeNetworks on the EKS cluster")]
    NoRemoteNetworks(String),
    /// A remote node network is not a CIDR.
    #[error("cluster remote node network {0}")]
    BadRemoteNetwork(String),
    /// The node IP is outside every remote node network.
    #[error("node IP {ip} is not in any of the cluster's remote node networks [{cidrs}]: fix --node-ip or the cluster's remoteNodeNetworks (or --skip node-ip-validation)")]
    NodeIpOutside { ip: IpAddr, cidrs: String },
    /// The certificate file does not exist.
    #[error("IAM Roles Anywhere certificate {} not found: enroll first (hybridboot enroll) or fix spec.hybrid.iamRolesAnywhere.certificatePath", .0.display())]
    CertificateMissing(PathBuf),
    /// The certificate file cannot be read.
    #[error("IAM Roles Anywhere certificate {}: {}", .0.display(), .1)]
    CertificateUnreadable(PathBuf, String),
    /// The file holds no parseable certificate.
    #[error("IAM Roles Anywhere certificate {}: {}; replace it with the PEM certificate issued for this node", .0.display(), .1)]
    CertificateInvalid(PathBuf, String),
    /// The certificate is not valid yet.
    #[error("IAM Roles Anywhere certificate is not valid before {not_before} (now {now}): check the system clock (NTP) or the issuing CA's clock")]
    CertificateNotYetValid { not_before: String, now: String },
    /// The certificate has expired.
    #[error("IAM Roles Anywhere certificate expired at {not_after} (now {now}): renew it (hybridboot renew) or issue a new one")]
    CertificateExpired { not_after: String, now: String },
    /// The certificate's CN is not the node name.
    #[error("IAM Roles Anywhere certificate CN {cn:?} does not match nodeName {node_name:?}: the role's trust policy requires the session name to equal the CN; issue the certificate for {node_name:?} or fix spec.hybrid.iamRolesAnywhere.nodeName")]
    CommonNameMismatch { cn: String, node_name: String },
    /// The clock is before anything hybridboot could have been built.
    #[error("system clock reads {now}, before {floor}: set the time (NTP/RTC) before joining; TLS and AWS signatures fail with a wrong clock")]
    ClockNotSet { now: String, floor: String },
}

impl Classify for CheckError {
    /// Every check failure needs an operator: the configuration, the cluster or the clock.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// The node IP from the kubelet flags: the last `--node-ip=` wins (as kubelet's flag parsing).
pub fn node_ip_from_flags(flags: &[String]) -> Result<Option<IpAddr>, CheckError> {
    let Some(value) = flags
        .iter()
        .filter_map(|f| f.strip_prefix("--node-ip="))
        .next_back()
    else {
        return Ok(None);
    };
    match value.parse::<IpAddr>() {
        Ok(ip @ IpAddr::V4(v4)) if !v4.is_unspecified() => Ok(Some(ip)),
        Ok(IpAddr::V4(_)) => Ok(None),
        _ => Err(CheckError::BadNodeIp(value.to_string())),
    }
}

/// nodeadm's `node-ip-validation`: the node IP (from `--node-ip`, else the `detected` one)
/// must be inside one of the cluster's remote node networks.
pub fn check_node_ip(
    cluster_name: &str,
    flags: &[String],
    detected: Option<IpAddr>,
    remote_node_networks: &[String],
) -> Result<IpAddr, CheckError> {
    let ip = node_ip_from_flags(flags)?
        .or(detected)
        .ok_or(CheckError::NoNodeIp)?;
    let cidrs: Vec<&String> = remote_node_networks
        .iter()
        .filter(|c| !c.is_empty())
        .collect();
    if cidrs.is_empty() {
        return Err(CheckError::NoRemoteNetworks(cluster_name.to_string()));
    }
    for c in &cidrs {
        let net = parse_cidr(c).map_err(CheckError::BadRemoteNetwork)?;
        if net.contains(ip) {
            return Ok(ip);
        }
    }
    Err(CheckError::NodeIpOutside {
        ip,
        cidrs: cidrs
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// What the certificate checks need from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject CN (the last one, if several).
    pub common_name: Option<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl CertFacts {
    /// Extracts the facts from a parsed certificate.
    pub fn from_certificate(cert: &Certificate) -> CertFacts {
        let validity = &cert.tbs_certificate.validity;
        let mut common_name = None;
        for rdn in cert.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == const_oid::db::rfc4519::CN {
                    common_name = atv
                        .value
                        .decode_as::<der::asn1::Utf8StringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                        .or_else(|_| {
                            atv.value
                                .decode_as::<der::asn1::PrintableStringRef<'_>>()
                                .map(|s| s.as_str().to_string())
                        })
                        .ok();
                }
            }
        }
        CertFacts {
            common_name,
            not_before: validity.not_before.to_system_time(),
            not_after: validity.not_after.to_system_time(),
        }
    }
}

/// Parses the first certificate of a PEM (or DER) file, as nodeadm and the signing helper read
/// only the first block.
pub fn parse_certificate(path: &Path, bytes: &[u8]) -> Result<CertFacts, CheckError> {
    let invalid = |why: String| CheckError::CertificateInvalid(path.to_path_buf(), why);
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(invalid("the file is empty".into()));
    }
    let cert = if bytes.first() == Some(&0x30) {
        Certificate::from_der(bytes).map_err(|e| invalid(format!("not a DER certificate ({e})")))?
    } else {
        let text = std::str::from_utf8(bytes).map_err(|_| invalid("neither PEM nor DER".into()))?;
        let start = text
            .find("-----BEGIN CERTIFICATE-----")
            .ok_or_else(|| invalid("no -----BEGIN CERTIFICATE----- block".into()))?;
        let rest = &text[start..];
        let end_marker = "-----END CERTIFICATE-----";
        let end = rest
            .find(end_marker)
            .ok_or_else(|| invalid("the PEM block is not terminated".into()))?;
        Certificate::from_pem(&rest[..end + end_marker.len()])
            .map_err(|e| invalid(format!("the PEM certificate does not parse ({e})")))?
    };
    Ok(CertFacts::from_certificate(&cert))
}

/// Reads and parses the certificate at `path` under `root` (nodeadm: "not found", "empty",
/// "corrupt" are all failures).
pub fn read_certificate(root: &Path, path: &Path) -> Result<CertFacts, CheckError> {
    let full = crate::fsutil::under_root(root, path);
    let bytes = match crate::fsutil::read_capped(&full, crate::fsutil::MAX_TEXT_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckError::CertificateMissing(path.to_path_buf()))
        }
        Err(e) => {
            return Err(CheckError::CertificateUnreadable(
                path.to_path_buf(),
                e.to_string(),
            ))
        }
    };
    parse_certificate(path, &bytes)
}

/// How far a certificate's start may be ahead of the local clock: a certificate issued a moment
/// ago by a CA whose clock runs a little ahead is fine (AWS tolerates 5 minutes of skew too).
pub const NOT_BEFORE_TOLERANCE: Duration = Duration::from_secs(300);

/// The certificate is valid at `now` (up to [`NOT_BEFORE_TOLERANCE`] early) and its CN is the
/// node name.
pub fn check_certificate(
    cert: &CertFacts,
    node_name: &str,
    now: SystemTime,
) -> Result<(), CheckError> {
    if now + NOT_BEFORE_TOLERANCE < cert.not_before {
        return Err(CheckError::CertificateNotYetValid {
            not_before: rfc3339(cert.not_before),
            now: rfc3339(now),
        });
    }
    if now > cert.not_after {
        return Err(CheckError::CertificateExpired {
            not_after: rfc3339(cert.not_after),
            now: rfc3339(now),
        });
    }
    match &cert.common_name {
        Some(cn) if cn == node_name => Ok(()),
        other => Err(CheckError::CommonNameMismatch {
            cn: other.clone().unwrap_or_default(),
            node_name: node_name.to_string(),
        }),
    }
}

/// The earliest time a sane clock can show: 2025-01-01T00:00:00Z (before hybridboot existed;
/// a board without a battery-backed RTC boots in 1970 or at its image's build date).
pub const CLOCK_FLOOR: Duration = Duration::from_secs(1_735_689_600);

/// The clock is after [`CLOCK_FLOOR`].
pub fn check_clock(now: SystemTime) -> Result<(), CheckError> {
    let floor = UNIX_EPOCH + CLOCK_FLOOR;
    if now < floor {
        return Err(CheckError::ClockNotSet {
            now: rfc3339(now),
            floor: rfc3339(floor),
        });
    }
    Ok(())
}

pub use crate::time::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn node_ip_in_and_out_of_range() {
        let nets = vec!["172.16.0.0/24".to_string()];
        assert_eq!(
            check_node_ip("c", &flags(&["--node-ip=172.16.0.1"]), None, &nets).unwrap(),
            "172.16.0.1".parse::<IpAddr>().unwrap()
        );
        let e = check_node_ip("c", &flags(&["--node-ip=1.2.3.4"]), None, &nets).unwrap_err();
        assert!(
            e.to_string().contains("node IP 1.2.3.4 is not in any"),
            "{e}"
        );
        // The last flag wins; the detected IP is only a fallback.
        assert!(check_node_ip(
            "c",
            &flags(&["--node-ip=1.2.3.4", "--node-ip=172.16.0.9"]),
            Some("9.9.9.9".parse().unwrap()),
            &nets
        )
        .is_ok());
        assert!(check_node_ip("c", &[], Some("172.16.0.5".parse().unwrap()), &nets).is_ok());
        assert_eq!(
            check_node_ip("c", &[], None, &nets).unwrap_err(),
            CheckError::NoNodeIp
        );
        assert!(matches!(
            check_node_ip("c", &flags(&["--node-ip=fd00::1"]), None, &nets),
            Err(CheckError::BadNodeIp(_))
        ));
        assert!(matches!(
            check_node_ip("c", &flags(&["--node-ip=172.16.0.1"]), None, &[]),
            Err(CheckError::NoRemoteNetworks(_))
        ));
    }

    #[test]
    fn certificate_rules() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cert = CertFacts {
            common_name: Some("node-1".into()),
            not_before: t0,
            not_after: t0 + Duration::from_secs(3600),
        };
        check_certificate(&cert, "node-1", t0 + Duration::from_secs(10)).unwrap();
        assert!(matches!(
            check_certificate(&cert, "node-2", t0 + Duration::from_secs(10)),
            Err(CheckError::CommonNameMismatch { .. })
        ));
        check_certificate(&cert, "node-1", t0 - Duration::from_secs(10)).unwrap();
        assert!(matches!(
            check_certificate(&cert, "node-1", t0 - Duration::from_secs(301)),
            Err(CheckError::CertificateNotYetValid { .. })
        ));
        assert!(matches!(
            check_certificate(&cert, "node-1", t0 + Duration::from_secs(7200)),
            Err(CheckError::CertificateExpired { .. })
        ));
    }

    #[test]
    fn clock_floor() {
        assert!(check_clock(UNIX_EPOCH + Duration::from_secs(86_400)).is_err());
        assert!(check_clock(SystemTime::now()).is_ok());
        assert_eq!(rfc3339(UNIX_EPOCH + CLOCK_FLOOR), "2025-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_682_640_000)),
            "2023-04-28T00:00:00Z"
        );
    }

    #[test]
    fn empty_and_garbage_certificates() {
        let p = Path::new("/c.pem");
        assert!(parse_certificate(p, b"")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_certificate(p, b"CORRUPTED_DATA\n")
            .unwrap_err()
            .to_string()
            .contains("no -----BEGIN CERTIFICATE-----"));
    }
}
