//! The clock check before anything time-bound (certificate validity, SigV4 dates).
//!
//! Three parts: a bounded wait for NTP synchronisation where systemd-timesyncd or timedated can
//! tell; a floor (the build date: a board whose RTC lost power reads 1970 or the factory date);
//! and a comparison with the `Date` header of Vault's answer. The decisions are pure functions of
//! the times involved ([`check_floor`], [`check_against_server`]); only [`wait_for_sync`] does
//! I/O.

use crate::error::{Class, Classify};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::x509::chain::rfc3339;

/// The build date embedded by build.rs (SOURCE_DATE_EPOCH, or the time of the build).
pub fn build_date() -> SystemTime {
    let secs: u64 = env!("HYBRIDBOOT_BUILD_EPOCH").parse().unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Largest accepted difference between our clock and a server's `Date`. Vault back-dates
/// certificates by 30 s, so a clock much further behind sees fresh certificates as not yet
/// valid; a minute leaves room for the `Date` header's one-second resolution and latency.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// A skew above this (and within [`MAX_SKEW`]) still works but is worth a warning in
/// `debug`: a synchronised clock is within a second of the servers' `Date`, whose resolution
/// is a second, and the request itself takes a little.
pub const WARN_SKEW: Duration = Duration::from_secs(5);

/// How far `now` is from `server`'s clock, and whether this machine is `"behind"` or
/// `"ahead"`.
pub fn skew(now: SystemTime, server: SystemTime) -> (Duration, &'static str) {
    match server.duration_since(now) {
        Ok(d) => (d, "behind"),
        Err(e) => (e.duration(), "ahead"),
    }
}

/// The clock is wrong; the message says by how much and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Before the build date.
    #[error("the system clock reads {now}, before this hybridboot build ({build}): the clock is wrong (dead RTC battery?); set the time or let NTP synchronise it, then run again")]
    BeforeBuild { now: String, build: String },
    /// Far from a server's clock.
    #[error("the system clock reads {now} but {peer} says {server} ({skew} {direction}): certificates and signatures would be rejected; synchronise the clock (NTP), then run again")]
    Skewed {
        now: String,
        peer: String,
        server: String,
        skew: String,
        direction: &'static str,
    },
}

impl Classify for ClockError {
    /// A wrong clock is transient for first boot: NTP (or the RTC) may set it, and the next run
    /// checks again.
    fn class(&self) -> Class {
        Class::Transient
    }
}

/// Refuses a clock before the build date.
pub fn check_floor(now: SystemTime, build: SystemTime) -> Result<(), ClockError> {
    if now < build {
        return Err(ClockError::BeforeBuild {
            now: rfc3339(now),
            build: rfc3339(build),
        });
    }
    Ok(())
}

/// Refuses a clock more than [`MAX_SKEW`] away from `server` (a `Date` header of `peer`).
pub fn check_against_server(
    now: SystemTime,
    server: SystemTime,
    peer: &str,
) -> Result<(), ClockError> {
    let (skew, direction) = skew(now, server);
    if skew > MAX_SKEW {
        return Err(ClockError::Skewed {
            now: rfc3339(now),
            peer: peer.to_string(),
            server: rfc3339(server),
            skew: crate::vault::format_duration(skew),
            direction,
        });
    }
    Ok(())
}

/// Where time synchronisation state can be read.
#[derive(Debug, Clone)]
pub struct SyncSources {
    /// systemd-timesyncd's flag file, present once the clock was synchronised this boot.
    pub timesyncd_flag: PathBuf,
    /// Whether to ask `timedatectl` when timesyncd is not running.
    pub timedatectl: bool,
}

impl Default for SyncSources {
    fn default() -> Self {
        SyncSources {
            timesyncd_flag: PathBuf::from("/run/systemd/timesync/synchronized"),
            timedatectl: true,
        }
    }
}

/// What the wait found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// The clock is synchronised.
    Synchronised,
    /// Nothing here can tell (no timesyncd, no timedated): rely on the other checks.
    Unknown,
    /// Still not synchronised when the wait ended.
    TimedOut,
}

fn probe(src: &SyncSources) -> Option<bool> {
    if src.timesyncd_flag.exists() {
        return Some(true);
    }
    // timesyncd runs (its state directory exists) but has not synchronised yet.
    if src.timesyncd_flag.parent().is_some_and(Path::is_dir) {
        return Some(false);
    }
    if src.timedatectl {
        let out = crate::process::command("timedatectl", crate::process::ChildEnv::System)
            .args(["show", "--property=NTPSynchronized", "--value"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        return match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        };
    }
    None
}

/// Waits up to `limit` for NTP synchronisation, polling every second.
pub fn wait_for_sync(src: &SyncSources, limit: Duration) -> Sync {
    let until = crate::time::instant_after(Instant::now(), limit);
    let mut said = false;
    loop {
        match probe(src) {
            None => return Sync::Unknown,
            Some(true) => return Sync::Synchronised,
            Some(false) if Instant::now() >= until => return Sync::TimedOut,
            Some(false) => {
                if !said {
                    log::info!(
                        "waiting up to {} for NTP time synchronisation",
                        crate::vault::format_duration(limit)
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_secs(1).min(until - Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_build_date_is_a_floor() {
        assert!(build_date() > t(1_700_000_000));
        assert!(build_date() <= SystemTime::now());
        check_floor(t(2_000), t(1_000)).unwrap();
        let e = check_floor(t(1_000), t(2_000)).unwrap_err().to_string();
        assert!(
            e.starts_with("the system clock reads 1970-01-01T00:16:40Z, before this hybridboot build (1970-01-01T00:33:20Z)"),
            "{e}"
        );
    }

    #[test]
    fn a_server_clock_more_than_a_minute_away_is_refused() {
        let now = t(1_000_000);
        check_against_server(now, now + Duration::from_secs(59), "Vault").unwrap();
        check_against_server(now, now - Duration::from_secs(59), "Vault").unwrap();
        let e = check_against_server(now, now + Duration::from_secs(3 * 86400), "Vault at x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Vault at x says"), "{e}");
        assert!(e.contains("(72h behind)"), "{e}");
        let e = check_against_server(now, now - Duration::from_secs(120), "Vault")
            .unwrap_err()
            .to_string();
        assert!(e.contains("(2m ahead)"), "{e}");
    }

    #[test]
    fn sync_wait_reads_timesyncd_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let src = SyncSources {
            timesyncd_flag: dir.path().join("timesync/synchronized"),
            timedatectl: false,
        };
        // No timesyncd at all: nothing to wait for.
        assert_eq!(wait_for_sync(&src, Duration::from_secs(5)), Sync::Unknown);
        // timesyncd running, not synchronised: waits, then gives up.
        std::fs::create_dir(dir.path().join("timesync")).unwrap();
        let started = Instant::now();
        assert_eq!(
            wait_for_sync(&src, Duration::from_millis(300)),
            Sync::TimedOut
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // Synchronised.
        std::fs::write(&src.timesyncd_flag, "").unwrap();
        assert_eq!(
            wait_for_sync(&src, Duration::from_secs(5)),
            Sync::Synchronised
        );
    }
}
