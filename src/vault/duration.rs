//! Durations and fractions as the flags and the NodeConfig spell them, and the renewal point.

use std::time::{Duration, SystemTime};

/// When a certificate with this validity is due for renewal: once less than `fraction` of its
/// lifetime remains.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, fraction: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let keep = lifetime.mul_f64((1.0 - fraction).clamp(0.0, 1.0));
    not_before + keep
}

/// `72h`, `30m`, `3600s`, `3600`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: use e.g. 72h, 30m, 3600s"))?;
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

/// `0.3333` or `1/3`, in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = if let Some((a, b)) = s.split_once('/') {
        let a: f64 = a
            .trim()
            .parse()
            .map_err(|_| format!("invalid fraction {s:?}"))?;
        let b: f64 = b
            .trim()
            .parse()
            .map_err(|_| format!("invalid fraction {s:?}"))?;
        a / b
    } else {
        s.trim()
            .parse()
            .map_err(|_| format!("invalid fraction {s:?}"))?
    };
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("--renew-before must be in (0, 1], got {s}"));
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
    fn durations() {
        assert_eq!(
            parse_duration("72h").unwrap(),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
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
