//! Which upgrades are allowed: pure, from three versions (installed, asked for, the control
//! plane's).
//!
//! Kubernetes' version skew policy for the kubelet: never newer than the API server, and at most
//! [`MAX_KUBELET_LAG`] minor versions older (since 1.28; two before). `upgrade` never goes down:
//! a downgrade is an uninstall and a fresh install.

use crate::node::render::KubeletVersion;

/// How many minor versions the kubelet may lag behind the API server.
pub const MAX_KUBELET_LAG: u32 = 3;

/// What `upgrade` does about the versions it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The installed version is the one asked for: nothing to do.
    Current,
    /// Go ahead.
    Upgrade,
}

/// Why an upgrade is refused (all operator errors: another version or the cluster first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A version that is not `MAJOR.MINOR[.PATCH]`.
    #[error("{what} {text:?} is not a Kubernetes version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 1.31 or 1.31.2)")]
    BadVersion {
        /// Which version (`installed`, `the cluster's`...).
        what: &'static str,
        /// As given.
        text: String,
    },
    /// Lower than the installed one.
    #[error("Kubernetes {target} is older than the installed {installed}: upgrade never downgrades. To go back, run `hybridboot uninstall`, then `hybridboot install {target}` and `hybridboot init`")]
    Downgrade {
        /// Installed.
        installed: String,
        /// Asked for.
        target: String,
    },
    /// Newer than the control plane.
    #[error("kubelet {target} would be newer than the control plane of cluster {cluster_name} ({cluster}); the skew policy forbids it. Upgrade the cluster first (aws eks update-cluster-version), or choose {cluster} or older")]
    NewerThanCluster {
        /// Asked for.
        target: String,
        /// The cluster's version.
        cluster: String,
        /// The cluster's name.
        cluster_name: String,
    },
    /// More than [`MAX_KUBELET_LAG`] minors behind the control plane.
    #[error("kubelet {target} would be {lag} minor versions older than the control plane of cluster {cluster_name} ({cluster}); the skew policy allows {MAX_KUBELET_LAG}. Choose {oldest} or newer")]
    TooOld {
        /// Asked for.
        target: String,
        /// The cluster's version.
        cluster: String,
        /// The cluster's name.
        cluster_name: String,
        /// Minor versions behind.
        lag: u32,
        /// The oldest allowed `MAJOR.MINOR`.
        oldest: String,
    },
}

fn parse(what: &'static str, text: &str) -> Result<KubeletVersion, Refusal> {
    let t = text.trim().trim_start_matches('v');
    let parts: Vec<&str> = t.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match KubeletVersion::parse(t) {
        Some(v) if numeric && (parts.len() == 2 || parts.len() == 3) => Ok(v),
        _ => Err(Refusal::BadVersion {
            what,
            text: text.to_string(),
        }),
    }
}

/// Compares the installed version with the one asked for (both exact, `1.31.2`).
pub fn direction(installed: &str, target: &str) -> Result<Decision, Refusal> {
    let have = parse("the installed version", installed)?;
    let want = parse("the version asked for", target)?;
    if want < have {
        return Err(Refusal::Downgrade {
            installed: installed.to_string(),
            target: target.to_string(),
        });
    }
    Ok(if want == have {
        Decision::Current
    } else {
        Decision::Upgrade
    })
}

/// Checks the kubelet `target` against the control plane's `cluster` version (`1.31`).
pub fn skew(target: &str, cluster: &str, cluster_name: &str) -> Result<(), Refusal> {
    let want = parse("the version asked for", target)?;
    let plane = parse("the cluster's version", cluster)?;
    let minor = |v: KubeletVersion| (v.major, v.minor);
    if minor(want) > minor(plane) {
        return Err(Refusal::NewerThanCluster {
            target: target.to_string(),
            cluster: cluster.to_string(),
            cluster_name: cluster_name.to_string(),
        });
    }
    // Another major would be a new skew policy: refuse it as too old.
    let lag = if want.major == plane.major {
        plane.minor.saturating_sub(want.minor)
    } else {
        u32::MAX
    };
    if lag > MAX_KUBELET_LAG {
        return Err(Refusal::TooOld {
            target: target.to_string(),
            cluster: cluster.to_string(),
            cluster_name: cluster_name.to_string(),
            lag,
            oldest: format!(
                "{}.{}",
                plane.major,
                plane.minor.saturating_sub(MAX_KUBELET_LAG)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_orders_by_number_not_text() {
        assert_eq!(direction("1.9.0", "1.10.0"), Ok(Decision::Upgrade));
        assert_eq!(direction("1.31.2", "1.31.2"), Ok(Decision::Current));
        assert_eq!(direction("1.31.1", "1.31.2"), Ok(Decision::Upgrade));
        assert!(matches!(
            direction("1.31.2", "1.31.1"),
            Err(Refusal::Downgrade { .. })
        ));
        assert!(matches!(
            direction("1.31.2", "1.31-rc"),
            Err(Refusal::BadVersion { .. })
        ));
        assert!(matches!(
            direction("", "1.31.1"),
            Err(Refusal::BadVersion { .. })
        ));
    }

    #[test]
    fn skew_allows_equal_to_three_minors_behind() {
        for cluster in ["1.31", "1.32", "1.33", "1.34"] {
            assert_eq!(skew("1.31.2", cluster, "c"), Ok(()), "{cluster}");
        }
        let e = skew("1.31.2", "1.35", "prod").unwrap_err();
        assert!(matches!(e, Refusal::TooOld { lag: 4, .. }), "{e:?}");
        assert!(e.to_string().contains("Choose 1.32 or newer"), "{e}");
        let e = skew("1.32.0", "1.31", "prod").unwrap_err();
        assert!(matches!(e, Refusal::NewerThanCluster { .. }), "{e:?}");
        assert!(e.to_string().contains("prod (1.31)"), "{e}");
        assert!(matches!(
            skew("1.31.0", "2.0", "c"),
            Err(Refusal::TooOld { .. })
        ));
        assert!(matches!(
            skew("2.0.0", "1.31", "c"),
            Err(Refusal::NewerThanCluster { .. })
        ));
    }
}
