//! What first boot has done so far, in a small JSON file written atomically after every step
//! (`/var/lib/hybridboot/firstboot.json`), plus the stamp `/var/lib/hybridboot/joined` written
//! last. `hybridboot status` reads both.
//!
//! The state file is a record, not the source of truth: every step checks the real world (the
//! key exists, the certificate is valid for it) before acting, so a state file lost or older
//! than the world (a power cut between a step and its record) only costs a re-check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// `/var/lib/hybridboot`.
pub const STATE_DIR: &str = "/var/lib/hybridboot";
/// The progress record.
pub const STATE_FILE: &str = "/var/lib/hybridboot/firstboot.json";
/// Written last: the machine has joined; `hybridboot-firstboot.service` no longer starts.
pub const STAMP_FILE: &str = "/var/lib/hybridboot/joined";

/// Version of the state file format.
pub const VERSION: u32 = 1;

/// A step of first boot, in order. The five that leave a result (key, certificate, session,
/// install, init) are recorded in the state file when done; the clock checks and the stamp are
/// checks and the end mark, re-done on every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The clock is NTP-synchronised (or waited for) and after the build date.
    Clock,
    /// The node key exists (created if absent).
    Key,
    /// The clock agrees with Vault's.
    ClockVault,
    /// A valid certificate for the key and node name is on disk.
    Enroll,
    /// Roles Anywhere CreateSession works with the certificate.
    RolesAnywhere,
    /// Kubernetes binaries installed.
    Install,
    /// Node configuration written and services started.
    Init,
    /// The joined stamp, written last.
    Stamp,
}

impl Step {
    /// Every step, in the order first boot runs them.
    pub const ALL: [Step; 8] = [
        Step::Clock,
        Step::Key,
        Step::ClockVault,
        Step::Enroll,
        Step::RolesAnywhere,
        Step::Install,
        Step::Init,
        Step::Stamp,
    ];

    /// The name used in logs, the state file and `status` (both clock checks are `clock`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Clock | Step::ClockVault => "clock",
            Step::Key => "key",
            Step::Enroll => "enroll",
            Step::RolesAnywhere => "roles-anywhere",
            Step::Install => "install",
            Step::Init => "init",
            Step::Stamp => "stamp",
        }
    }

    /// Whether the step leaves a result that the state file records as done (with its
    /// duration); the others are re-checked on every run.
    pub fn recorded(self) -> bool {
        !matches!(self, Step::Clock | Step::ClockVault | Step::Stamp)
    }
}

/// The node key as recorded at the key step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key reference.
    pub reference: String,
    /// `ecdsa-p256` / `rsa-2048`.
    pub algorithm: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
}

/// The certificate as recorded at the enroll step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Certificate file (as configured, without `--root`).
    pub path: PathBuf,
    /// Fraction of the lifetime left at which renewal is due.
    pub renew_before: f64,
}

/// Who logged in to Vault for the certificate on disk, as recorded at the enroll step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRecord {
    /// `token`, `approle`, `certificate` (the node certificate) or `device-certificate` (the
    /// factory identity, IDevID).
    pub method: String,
    /// The auth role, when the method has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Subject of the certificate presented (RFC 4514).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Its serial number (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The device's serial number (the subject's serialNumber attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_serial: Option<String>,
}

impl From<&crate::vault::Login> for LoginRecord {
    fn from(l: &crate::vault::Login) -> LoginRecord {
        LoginRecord {
            method: l.method.to_string(),
            role: l.role.clone(),
            subject: l.subject.clone(),
            serial: l.serial.clone(),
            device_serial: l.device_serial.clone(),
        }
    }
}

/// A step left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Which.
    pub step: Step,
    /// Why (shown by `status`).
    pub reason: String,
}

/// The last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// During which step ([`Step::name`]).
    pub step: String,
    /// The one-line message.
    pub message: String,
    /// The exit code it caused.
    pub exit_code: i32,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Node name (certificate CN).
    #[serde(default)]
    pub node_name: Option<String>,
    /// Steps done, in order.
    #[serde(default)]
    pub completed: Vec<Step>,
    /// Steps left out.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// The key.
    #[serde(default)]
    pub key: Option<KeyRecord>,
    /// The certificate.
    #[serde(default)]
    pub certificate: Option<CertificateRecord>,
    /// Who logged in to Vault for that certificate (kept when a run finds it young).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_login: Option<LoginRecord>,
    /// Expiry of the last AWS credentials obtained (RFC 3339), when known.
    #[serde(default)]
    pub credentials_expiry: Option<String>,
    /// Install tracker file, when an install step ran.
    #[serde(default)]
    pub install_tracker: Option<PathBuf>,
    /// The last failure, cleared when first boot completes.
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// How long each step's last run took, in milliseconds (benchmarks, slow-site diagnosis).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub durations_ms: BTreeMap<Step, u64>,
}

impl State {
    /// Reads the state under `root`; a missing file is a fresh state. A damaged file (it is
    /// written atomically, so only a bug or a hand edit does that) is reported, not ignored.
    pub fn load(root: &Path) -> anyhow::Result<State> {
        let path = fsutil::under_root(root, Path::new(STATE_FILE));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let s: State = serde_json::from_slice(&bytes).map_err(|e| {
                    crate::error::operator(format!(
                        "{}: unreadable first-boot state ({e}); remove it to start over (every step re-checks what exists)",
                        path.display()
                    ))
                })?;
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: VERSION,
                ..State::default()
            }),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    /// Writes the state under `root` atomically (mode 0600: it names files and keys).
    pub fn save(&self, root: &Path) -> anyhow::Result<()> {
        let path = fsutil::under_root(root, Path::new(STATE_FILE));
        let mut bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        bytes.push(b'\n');
        fsutil::atomic_write(&path, &bytes, &fsutil::WriteOptions::private())
            .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", path.display())))
    }

    /// Records `step` as done (once).
    pub fn complete(&mut self, step: Step) {
        self.skipped.retain(|s| s.step != step);
        if !self.completed.contains(&step) {
            self.completed.push(step);
        }
    }

    /// Records how long `step` took this time.
    pub fn record_duration(&mut self, step: Step, took: std::time::Duration) {
        self.durations_ms
            .insert(step, u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
    }

    /// Records `step` as left out.
    pub fn skip(&mut self, step: Step, reason: &str) {
        self.completed.retain(|s| *s != step);
        self.skipped.retain(|s| s.step != step);
        self.skipped.push(Skipped {
            step,
            reason: reason.to_string(),
        });
    }
}

/// Whether the stamp exists under `root`.
pub fn joined(root: &Path) -> bool {
    fsutil::under_root(root, Path::new(STAMP_FILE)).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        assert_eq!(s.version, VERSION);
        assert!(s.completed.is_empty());
        s.complete(Step::Key);
        s.complete(Step::Key);
        s.skip(Step::Init, "not in this build");
        s.save(dir.path()).unwrap();
        let back = State::load(dir.path()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.completed, vec![Step::Key]);
        let text =
            std::fs::read_to_string(dir.path().join("var/lib/hybridboot/firstboot.json")).unwrap();
        assert!(
            text.contains("\"completed\": [\n    \"key\"\n  ]"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("var/lib/hybridboot/firstboot.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(dir.path().join("var/lib/hybridboot/firstboot.json"), "{").unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("remove it to start over"), "{e}");
        assert!(!joined(dir.path()));
    }
}
