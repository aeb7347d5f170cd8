//! UTC calendar arithmetic for the few timestamp formats hybridboot uses (`X-Amz-Date`, RFC 3339, HTTP dates),
//! durations and fractions as flags and configuration files spell them, and the renewal point.
//!
//! Written here instead of pulling a date crate: the binary is size-constrained and only needs
//! UTC, whole seconds, and conversion between Unix time and the proleptic Gregorian calendar.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A UTC calendar time, second precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Seconds since the Unix epoch (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// The `SystemTime` of a Unix second count.
pub fn from_unix_seconds(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

// Howard Hinnant's days-from-civil algorithm (public domain), on a March-based year.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Civil {
    /// The calendar time of `t` (fractions of a second dropped).
    pub fn from_system_time(t: SystemTime) -> Civil {
        let secs = unix_seconds(t);
        let (year, month, day) = civil_from_days(secs.div_euclid(86400));
        let rem = secs.rem_euclid(86400) as u32;
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// Back to Unix seconds.
    pub fn to_unix_seconds(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86400
            + (self.hour as i64) * 3600
            + (self.minute as i64) * 60
            + self.second as i64
    }
}

/// `YYYYMMDDTHHMMSSZ`, the `X-Amz-Date` format.
pub fn amz_date(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `YYYYMMDD`, the date part of a SigV4 credential scope.
pub fn scope_date(t: SystemTime) -> String {
    amz_date(t)[..8].to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses RFC 3339 as AWS services write it: `2024-05-01T12:00:00Z`, with optional fractional
/// seconds (dropped) and a `Z` or `±HH:MM` offset. Returns `None` when malformed.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let c = Civil {
        year: num(0..4)? as i64,
        month: num(5..7)?,
        day: num(8..10)?,
        hour: num(11..13)?,
        minute: num(14..16)?,
        second: num(17..19)?,
    };
    if !(1..=12).contains(&c.month)
        || !(1..=31).contains(&c.day)
        || c.hour > 23
        || c.minute > 59
        || c.second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            if rest.as_bytes()[3] != b':' {
                return None;
            }
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let v = h * 3600 + m * 60;
            if rest.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // A day that does not exist (Feb 30) would silently roll over: reject it.
    let secs = c.to_unix_seconds();
    let back = Civil::from_system_time(from_unix_seconds(secs));
    if (back.year, back.month, back.day) != (c.year, c.month, c.day) {
        return None;
    }
    Some(from_unix_seconds(secs - offset))
}

/// Parses an HTTP `Date` header (RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`), to
/// compare the server's clock with ours. Obsolete formats are not accepted (`None`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let mut it = s.trim().split(' ');
    let (_wday, day, mon, year, hms, gmt) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    if it.next().is_some() || gmt != "GMT" || day.len() != 2 || year.len() != 4 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == mon)? as u32 + 1;
    let text = format!("{year}-{month:02}-{day}T{hms}Z");
    parse_rfc3339(&text)
}

/// The default renewal point: renew once less than a third of the lifetime remains.
pub const DEFAULT_RENEW_BEFORE: f64 = 1.0 / 3.0;

/// When a certificate with this validity is due for renewal: once less than `fraction` of its
/// lifetime remains.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, fraction: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let keep = lifetime.mul_f64((1.0 - fraction).clamp(0.0, 1.0));
    not_before + keep
}

/// The longest duration a flag or configuration field may say: 100 years. Longer is certainly a
/// typo, and an `Instant` that far out may not be representable.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

/// `t + d`, never panicking: a `d` beyond [`MAX_DURATION`] (a peer's `Retry-After`, a huge
/// timeout) counts as [`MAX_DURATION`] (should even that not be representable, half of it, then
/// none).
pub fn instant_after(t: Instant, d: Duration) -> Instant {
    let d = d.min(MAX_DURATION);
    t.checked_add(d)
        .or_else(|| t.checked_add(d / 2))
        .unwrap_or(t)
}

/// `72h`, `30m`, `3600s`, `3600`, `1h30m`, `2d`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_unbounded(s)?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {:?} is too long: at most {}d (100 years)",
            s.trim(),
            MAX_DURATION.as_secs() / 86400
        ));
    }
    Ok(d)
}

fn parse_duration_unbounded(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    // A number too large for u64 is simply too long (saturated, refused by the caller), not a
    // malformed one.
    let number = |digits: &str| digits.parse::<u64>().unwrap_or(u64::MAX);
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Duration::from_secs(number(s)));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        if num.is_empty() {
            return Err(format!("invalid duration {s:?}: use e.g. 72h, 30m, 3600s"));
        }
        let n = number(&num);
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "invalid duration unit {c:?} in {s:?}: use s, m, h or d"
                ))
            }
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !num.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: the last number has no unit"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// `0.3333` or `1/3`, in (0, 1]. The caller names the flag or field in its error.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let parse = |x: &str| {
        x.trim()
            .parse::<f64>()
            .map_err(|_| format!("{s:?} is not a fraction such as 1/3 or 0.33"))
    };
    let v = match s.split_once('/') {
        Some((a, b)) => parse(a)? / parse(b)?,
        None => parse(s)?,
    };
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("{s}: must be in (0, 1]"));
    }
    Ok(v)
}

/// `72h`, `1h30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format() {
        // 2015-08-30T12:36:00Z is the SigV4 test suite's date.
        let t = from_unix_seconds(1440938160);
        assert_eq!(amz_date(t), "20150830T123600Z");
        assert_eq!(scope_date(t), "20150830");
        assert_eq!(rfc3339(t), "2015-08-30T12:36:00Z");
        assert_eq!(rfc3339(from_unix_seconds(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(from_unix_seconds(951782400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(from_unix_seconds(1440938160))
        );
        for bad in [
            "",
            "Sunday, 30-Aug-15 12:36:00 GMT",
            "Sun, 30 Foo 2015 12:36:00 GMT",
            "Sun, 30 Aug 2015 12:36:00 UTC",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_round_trips_and_accepts_aws_variants() {
        for secs in [0i64, 951782400, 1440938160, 1682640000, 4102444799] {
            let t = from_unix_seconds(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2015-08-30T12:36:00.123Z"),
            Some(from_unix_seconds(1440938160))
        );
        assert_eq!(
            parse_rfc3339("2015-08-30T14:36:00+02:00"),
            Some(from_unix_seconds(1440938160))
        );
        for bad in [
            "",
            "2015-08-30",
            "2015-08-30T12:36:00",
            "2015-02-30T12:36:00Z",
            "2015-13-01T00:00:00Z",
            "2015-08-30T12:36:00.Z",
            "2015-08-30T12:36:00+0200",
            "20a5-08-30T12:36:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("72h").unwrap(),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        // Too long for any deadline: refused (saying the limit), never a panic later.
        for huge in [
            "9999999999999999d",
            "18446744073709551615",
            "36501d",
            "99999999999999999999",
            "99999999999999999999s",
            "1h99999999999999999999m",
        ] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("too long") && e.contains("36500d"), "{e}");
        }
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        let now = Instant::now();
        assert_eq!(instant_after(now, Duration::MAX), now + MAX_DURATION);
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5h3").is_err());
        assert_eq!(format_duration(Duration::from_secs(72 * 3600)), "72h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
    }

    #[test]
    fn fractions() {
        assert!((parse_fraction("1/3").unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(parse_fraction("1.0").unwrap(), 1.0);
        assert!(parse_fraction("0").is_err());
        assert!(parse_fraction("1.5").is_err());
    }

    #[test]
    fn renewal_point() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(3000);
        assert_eq!(
            renewal_due(nb, na, 1.0 / 3.0),
            nb + Duration::from_secs(2000)
        );
        assert_eq!(renewal_due(nb, na, 1.0), nb);
    }
}
