//! Reading the [`NodeFacts`] rendering needs from the machine. The parsers are pure; `detect`
//! is the thin I/O around them.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::render::{KubeletVersion, NodeFacts, DEFAULT_ECR_CREDENTIAL_PROVIDER};

/// `MemTotal` of `/proc/meminfo`, in bytes (what nodeadm's cadvisor call reports).
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => value.checked_mul(1024),
        _ => None,
    }
}

/// True when `/etc/os-release` says Ubuntu (`ID=ubuntu`).
pub fn is_ubuntu(os_release: &str) -> bool {
    os_release.lines().any(|l| {
        l.strip_prefix("ID=")
            .is_some_and(|v| v.trim().trim_matches('"') == "ubuntu")
    })
}

/// How long `<kubelet> --version` may take (it prints and exits at once; a hung binary, e.g. on a
/// stalled network file system, must not hang init).
pub const KUBELET_VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `<kubelet> --version` and parses `Kubernetes vX.Y.Z`.
pub fn kubelet_version(kubelet: &Path) -> io::Result<KubeletVersion> {
    kubelet_version_within(kubelet, KUBELET_VERSION_TIMEOUT)
}

/// [`kubelet_version`] with another deadline.
pub fn kubelet_version_within(kubelet: &Path, timeout: Duration) -> io::Result<KubeletVersion> {
    let out = crate::process::output_with_timeout(
        crate::process::command(kubelet, crate::process::ChildEnv::System).arg("--version"),
        timeout,
        4096,
    )
    .map_err(|e| {
        let kind = match &e {
            crate::process::RunError::Start { source, .. } => source.kind(),
            crate::process::RunError::Timeout(_) => io::ErrorKind::TimedOut,
            crate::process::RunError::Wait(_) => io::ErrorKind::Other,
        };
        let hint = match kind {
            io::ErrorKind::NotFound => " (install the kubelet first)",
            _ => "",
        };
        io::Error::new(
            kind,
            format!("running {} --version: {e}{hint}", kubelet.display()),
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    KubeletVersion::parse(&text).ok_or_else(|| {
        let shown: String = text.chars().take(200).collect();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} --version printed no version: {shown:?}",
                kubelet.display()
            ),
        )
    })
}

/// Detects the facts of the running machine; `/etc/os-release` is read under `root`.
pub fn detect(
    root: &Path,
    kubelet_version: KubeletVersion,
    hybridboot_path: PathBuf,
) -> io::Result<NodeFacts> {
    let meminfo = crate::fsutil::read_capped_string(Path::new("/proc/meminfo"), 1024 * 1024)?;
    let memory_bytes = parse_meminfo(&meminfo).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "/proc/meminfo has no MemTotal")
    })?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let os_release = crate::fsutil::read_capped_string(
        &crate::fsutil::under_root(root, Path::new("/etc/os-release")),
        64 * 1024,
    )
    .unwrap_or_default();
    let ecr_credential_provider = std::env::var_os("ECR_CREDENTIAL_PROVIDER_BIN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_ECR_CREDENTIAL_PROVIDER.into());
    Ok(NodeFacts {
        memory_bytes,
        cpus,
        kubelet_version,
        hybridboot_path,
        ubuntu: is_ubuntu(&os_release),
        ecr_credential_provider,
        aws: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release() {
        assert_eq!(
            parse_meminfo("MemTotal:       16318644 kB\nMemFree: 1 kB\n"),
            Some(16318644 * 1024)
        );
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert!(is_ubuntu("NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n"));
        assert!(!is_ubuntu("ID=debian\nID_LIKE=\"ubuntu\"\n"));
    }

    #[test]
    fn detects_this_machine() {
        let v = KubeletVersion::parse("v1.31.0").unwrap();
        let f = detect(Path::new("/"), v, "/usr/bin/hybridboot".into()).unwrap();
        assert!(f.memory_bytes > 64 * 1024 * 1024);
        assert!(f.cpus >= 1);
    }

    #[test]
    fn a_hung_kubelet_version_call_times_out() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let kubelet = dir.path().join("kubelet");
        std::fs::write(&kubelet, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&kubelet, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = kubelet_version_within(&kubelet, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("did not finish within"), "{err}");
        std::fs::write(&kubelet, "#!/bin/sh\necho Kubernetes v1.31.2\n").unwrap();
        let v = kubelet_version_within(&kubelet, Duration::from_secs(20)).unwrap();
        assert_eq!(v, KubeletVersion::parse("v1.31.2").unwrap());
        let err = kubelet_version(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.to_string().contains("install the kubelet first"),
            "{err}"
        );
    }
}
