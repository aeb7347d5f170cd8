//! `hybridboot update`: keeps one profile of the AWS shared credentials file fresh with Roles
//! Anywhere sessions, on the schedule of [`refresh::next_delay`](super::refresh::next_delay).

use std::path::Path;
use std::time::SystemTime;

use super::session::RolesAnywhereSettings;
use super::time::rfc3339;
use super::{credfile, refresh, rolesanywhere};
use crate::error::{cause_chain, operator, ResultExt};
use crate::retry::RetryPolicy;

/// Keeps one profile of the shared credentials file fresh: a new session 5 minutes before the
/// current one expires; after a failure the file keeps the old credentials and the attempt is
/// retried with backoff (5 s doubling to 5 min).
pub fn update(
    settings: &RolesAnywhereSettings,
    profile: &str,
    credentials_file: Option<&Path>,
    once: bool,
) -> anyhow::Result<()> {
    credfile::validate_profile(profile).classed()?;
    let path = match credentials_file {
        Some(p) => p.to_path_buf(),
        None => credfile::default_path(
            std::env::var("AWS_SHARED_CREDENTIALS_FILE").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )
        .ok_or_else(|| {
            operator("no credentials file: give --credentials-file or set AWS_SHARED_CREDENTIALS_FILE or HOME")
        })?,
    };
    let session = settings.prepare()?;
    // A key that cannot be opened is a configuration error: say so now, not in the loop.
    drop(session.open_key()?);
    let policy = if once {
        rolesanywhere::interactive_policy()
    } else {
        // The loop below does the long backoff; one quick retry smooths over a blip.
        RetryPolicy {
            max_attempts: 2,
            ..rolesanywhere::interactive_policy()
        }
    };
    let mut expiration: Option<SystemTime> = None;
    let mut failures = 0u32;
    loop {
        match session.fetch(&policy).and_then(|c| {
            credfile::write(&path, profile, &c).classed()?;
            Ok(c)
        }) {
            Ok(c) => {
                failures = 0;
                expiration = c.expiration;
                log::info!(
                    "profile [{}] of {} now holds session {} (expires {})",
                    profile,
                    path.display(),
                    c.access_key_id,
                    c.expiration.map(rfc3339).unwrap_or_else(|| "-".into())
                );
            }
            Err(e) if once => return Err(e),
            Err(e) => {
                failures += 1;
                let kept = match expiration {
                    Some(exp) => format!(
                        "the file keeps the previous credentials (valid until {})",
                        rfc3339(exp)
                    ),
                    None => "the file keeps whatever credentials it had".into(),
                };
                log::error!("{}; {kept}", cause_chain(&e));
            }
        }
        if once {
            return Ok(());
        }
        let delay = refresh::next_delay(SystemTime::now(), expiration, failures);
        log::info!("next refresh in {} s", delay.as_secs());
        std::thread::sleep(delay);
    }
}
