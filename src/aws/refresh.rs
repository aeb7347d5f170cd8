//! When `update` and `serve` refresh their Roles Anywhere session: 5 minutes before it expires,
//! and after a failure, again with exponential backoff while the old credentials stay in use.
//! A pure function of the clock and the failure count, so the loop itself is trivial.

use std::time::{Duration, SystemTime};

use super::cache::REFRESH_MARGIN_SECS;
use super::time::unix_seconds;

/// First retry delay after a failed refresh.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest delay between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// How long to sleep before the next refresh attempt.
///
/// - `consecutive_failures == 0` (the last attempt succeeded): until `expiration` minus 5 minutes
///   (at least 1 s, so an already-short session does not spin).
/// - after failures: 5 s, 10 s, 20 s ... capped at 5 minutes (the old credentials stay in use
///   meanwhile; a failed attempt happens at or after the refresh point, so waiting longer could
///   only let them lapse).
pub fn next_delay(
    now: SystemTime,
    expiration: Option<SystemTime>,
    consecutive_failures: u32,
) -> Duration {
    let until_refresh = expiration.map(|e| {
        let secs = unix_seconds(e) - REFRESH_MARGIN_SECS - unix_seconds(now);
        Duration::from_secs(secs.max(1) as u64)
    });
    if consecutive_failures == 0 {
        // Credentials that never expire need no refresh; check again in an hour anyway.
        return until_refresh.unwrap_or(Duration::from_secs(3600));
    }
    let shift = (consecutive_failures - 1).min(16);
    FIRST_RETRY.saturating_mul(1u32 << shift).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;

    const T0: i64 = 1_700_000_000;

    #[test]
    fn success_sleeps_until_five_minutes_before_expiry() {
        let now = from_unix_seconds(T0);
        assert_eq!(
            next_delay(now, Some(from_unix_seconds(T0 + 3600)), 0),
            Duration::from_secs(3300)
        );
        assert_eq!(
            next_delay(now, Some(from_unix_seconds(T0 + 60)), 0),
            Duration::from_secs(1)
        );
        assert_eq!(next_delay(now, None, 0), Duration::from_secs(3600));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_five_minutes() {
        let now = from_unix_seconds(T0);
        let exp = Some(from_unix_seconds(T0 + 12 * 3600));
        let delays: Vec<u64> = (1..=9).map(|f| next_delay(now, exp, f).as_secs()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(next_delay(now, exp, u32::MAX), MAX_RETRY);
        // Expired or expiring credentials: keep retrying at the backoff pace.
        assert_eq!(
            next_delay(now, Some(from_unix_seconds(T0 - 10)), 2).as_secs(),
            10
        );
    }
}
