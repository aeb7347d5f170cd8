//! Reading the [`NodeFacts`] rendering needs from the machine. The parsers are pure; `detect`
//! is the thin I/O around them.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Runs `<kubelet> --version` and parses `Kubernetes vX.Y.Z`.
pub fn kubelet_version(kubelet: &Path) -> io::Result<KubeletVersion> {
    let out = Command::new(kubelet)
        .arg("--version")
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "running {} --version: {e} (install the kubelet first)",
                    kubelet.display()
                ),
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    KubeletVersion::parse(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} --version printed no version: {text:?}",
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
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let memory_bytes = parse_meminfo(&meminfo).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "/proc/meminfo has no MemTotal")
    })?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let os_release = std::fs::read_to_string(crate::fsutil::under_root(
        root,
        Path::new("/etc/os-release"),
    ))
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
}
