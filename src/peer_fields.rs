//! What a peer may put in a field: checks of the strings IAM Roles Anywhere, STS (through a
//! `credential_process`), EKS and Vault send back, made when their answer is parsed, before any
//! value reaches a file (the shared credentials file, the cache, kubeconfig, kubelet and AWS
//! configuration) or a log line.
//!
//! A peer is not trusted to keep to the format it documents: a `sessionToken` with a line break
//! would otherwise add sections and keys (`credential_process = ...`) to the credentials file
//! that `update` rewrites, and a message with one would forge log lines. Each check allows only
//! what the field can hold (AWS keys and tokens are base64 or base64url text, an endpoint is one
//! `https://` URL, a CIDR is digits and separators) and bounds the length. Errors name the field
//! and the position of the first offending byte, never the value (it may be a secret).
//!
//! Vault's certificates need no check here: they are parsed as X.509 and written re-encoded
//! from DER (`vault::check`), so no byte of Vault's text reaches a file as it was sent.
//!
//! Pure: no I/O. Fuzzed by `fuzz_entry::peer_fields`.

/// A field a peer sent that cannot be used. Shown as "`field` ...: `reason`".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidField {
    /// The field's name as the peer spells it (`sessionToken`, `cluster.endpoint`).
    pub field: &'static str,
    /// What is wrong, without the value.
    pub reason: String,
}

/// Longest access key id (the AWS API's limit).
pub const MAX_ACCESS_KEY_ID: usize = 128;
/// Shortest access key id accepted. The AWS API documents 16, but test doubles and stand-ins
/// use shorter ones and a short id cannot inject anything: only the character set matters.
pub const MIN_ACCESS_KEY_ID: usize = 1;
/// Longest secret access key accepted (AWS's are 40 characters).
pub const MAX_SECRET_ACCESS_KEY: usize = 256;
/// Longest session token accepted (AWS's are a few hundred to ~2000 characters).
pub const MAX_SESSION_TOKEN: usize = 16 * 1024;
/// Longest timestamp text accepted (RFC 3339 with nanoseconds and an offset is 35).
pub const MAX_TIMESTAMP: usize = 64;
/// Longest URL accepted.
pub const MAX_URL: usize = 2048;
/// Longest CIDR accepted (`ffff:...:ffff/128` is 43).
pub const MAX_CIDR: usize = 64;
/// Longest name accepted (cluster names are at most 100).
pub const MAX_NAME: usize = 128;
/// Longest peer message kept for an error or a log line.
pub const MAX_MESSAGE: usize = 300;

fn invalid(field: &'static str, reason: String) -> InvalidField {
    InvalidField { field, reason }
}

/// Checks `value`: `min..=max` bytes, each allowed by `ok`. `describe` says what is allowed.
fn check(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
    describe: &str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), InvalidField> {
    if value.len() < min {
        return Err(invalid(
            field,
            if value.is_empty() {
                "is empty".to_string()
            } else {
                format!("is {} bytes long, shorter than {min}", value.len())
            },
        ));
    }
    if value.len() > max {
        return Err(invalid(
            field,
            format!("is {} bytes long, longer than {max}", value.len()),
        ));
    }
    if let Some(pos) = value.bytes().position(|b| !ok(b)) {
        let b = value.as_bytes()[pos];
        let what = match b {
            b'\n' | b'\r' => "a line break".to_string(),
            b' ' | b'\t' => "white space".to_string(),
            0..=0x1f | 0x7f => format!("the control character 0x{b:02x}"),
            0x80.. => "a non-ASCII character".to_string(),
            _ => "a character".to_string(),
        };
        return Err(invalid(
            field,
            format!("holds {what} at byte {pos}, where only {describe} may appear"),
        ));
    }
    Ok(())
}

fn base64ish(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

const BASE64ISH: &str = "base64 or base64url characters (A-Z a-z 0-9 + / = - _)";

/// An access key id (`ASIA...`, `AKIA...`): up to 128 letters, digits or `_`.
pub fn access_key_id(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check(
        field,
        value,
        MIN_ACCESS_KEY_ID,
        MAX_ACCESS_KEY_ID,
        "letters, digits and '_'",
        |b| b.is_ascii_alphanumeric() || b == b'_',
    )
}

/// A secret access key: base64-style text, at most [`MAX_SECRET_ACCESS_KEY`] bytes.
pub fn secret_access_key(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check(field, value, 1, MAX_SECRET_ACCESS_KEY, BASE64ISH, base64ish)
}

/// A session token: base64-style text, at most [`MAX_SESSION_TOKEN`] bytes.
pub fn session_token(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check(field, value, 1, MAX_SESSION_TOKEN, BASE64ISH, base64ish)
}

/// The text of a timestamp (RFC 3339 / ISO 8601): digits, `T`, `Z`, `:`, `.`, `+`, `-`.
pub fn timestamp(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check(
        field,
        value,
        1,
        MAX_TIMESTAMP,
        "digits, 'T', 'Z', ':', '.', '+' and '-'",
        |b| b.is_ascii_digit() || b"TtZz:.+-".contains(&b),
    )
}

/// An `https://` URL with a host, printable ASCII without spaces, quotes, backslashes or
/// brackets other than an IPv6 literal's (it goes into YAML and kubeconfig files as is).
pub fn https_url(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check(
        field,
        value,
        1,
        MAX_URL,
        "printable ASCII without spaces, quotes, '\\', '<', '>', '{', '}', '|', '^' or '`'",
        |b| b.is_ascii_graphic() && !b"\"'\\<>{}|^`".contains(&b),
    )?;
    let rest = value
        .strip_prefix("https://")
        .ok_or_else(|| invalid(field, "is not an https:// URL".into()))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(invalid(
            field,
            "has no host (or carries user information)".into(),
        ));
    }
    Ok(())
}

/// A CIDR (`10.0.0.0/16`, `fd00::/64`): hex digits, `.`, `:` and one `/` with a prefix length.
pub fn cidr(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check(
        field,
        value,
        1,
        MAX_CIDR,
        "hex digits, '.', ':' and '/'",
        |b| b.is_ascii_hexdigit() || b".:/".contains(&b),
    )?;
    match value.split_once('/') {
        Some((addr, len))
            if !addr.is_empty()
                && !len.is_empty()
                && len.len() <= 3
                && len.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(())
        }
        _ => Err(invalid(field, "is not ADDRESS/PREFIX-LENGTH".into())),
    }
}

/// A name or word (cluster name, version, status): letters, digits, `.`, `-`, `_`.
pub fn name(field: &'static str, value: &str) -> Result<(), InvalidField> {
    check(
        field,
        value,
        1,
        MAX_NAME,
        "letters, digits, '.', '-' and '_'",
        |b| b.is_ascii_alphanumeric() || b".-_".contains(&b),
    )
}

/// PEM certificates as text: only `BEGIN`/`END CERTIFICATE` lines, base64 lines and empty
/// lines (no headers, no text around or between the blocks), at least one block.
pub fn pem_certificates(field: &'static str, text: &str) -> Result<(), InvalidField> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    if text.len() > 1024 * 1024 {
        return Err(invalid(field, "is longer than 1 MiB".into()));
    }
    let mut inside = false;
    let mut blocks = 0usize;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let ok = match (inside, line) {
            (false, BEGIN) => {
                inside = true;
                true
            }
            (true, END) => {
                inside = false;
                blocks += 1;
                true
            }
            (false, "") => true,
            (true, l) => {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            }
            (false, _) => false,
        };
        if !ok {
            return Err(invalid(
                field,
                format!("line {} is not part of a PEM certificate", i + 1),
            ));
        }
    }
    if inside || blocks == 0 {
        return Err(invalid(field, "holds no complete PEM certificate".into()));
    }
    Ok(())
}

/// A peer's free-text message made safe for one log or error line: control characters (line
/// breaks included) become spaces, runs of white space one space, and the text is cut at
/// [`MAX_MESSAGE`] characters. Nothing a peer sends can start a new log line this way.
pub fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE));
    let mut count = 0usize;
    let mut pending_space = false;
    for c in message.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        // The character and the space before it, if any, must both fit.
        if count + 1 + usize::from(pending_space) > MAX_MESSAGE {
            out.push_str("...");
            break;
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_credentials_fields() {
        assert!(access_key_id("accessKeyId", "ASIAEXAMPLEKEY12").is_ok());
        assert!(access_key_id("accessKeyId", "ASIA").is_ok());
        assert!(access_key_id("accessKeyId", "").is_err());
        assert!(access_key_id("accessKeyId", &"A".repeat(129)).is_err());
        let e = access_key_id("accessKeyId", "ASIAEXAMPLE\nKEY12").unwrap_err();
        assert_eq!(
            e.to_string(),
            "accessKeyId holds a line break at byte 11, where only letters, digits and '_' may appear"
        );
        // moto's and the service's secrets and tokens, base64 and base64url.
        assert!(secret_access_key("s", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY").is_ok());
        assert!(session_token("t", "FwoGZXIvYXdzEJr//////////wEaD+abc=").is_ok());
        assert!(session_token("t", "Ab-_9xYz").is_ok());
        for bad in [
            "tok\n[evil]\ncredential_process = /bin/sh",
            "tok\r",
            "tok en",
            "tok\u{0}",
            "tøk",
            "tok#x",
            "",
        ] {
            let e = session_token("sessionToken", bad).unwrap_err().to_string();
            assert!(e.starts_with("sessionToken "), "{e}");
            // The value never appears in the message.
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
        assert!(session_token("t", &"A".repeat(MAX_SESSION_TOKEN)).is_ok());
        assert!(session_token("t", &"A".repeat(MAX_SESSION_TOKEN + 1)).is_err());
        assert!(secret_access_key("s", &"A".repeat(MAX_SECRET_ACCESS_KEY + 1)).is_err());
        let e = secret_access_key("secretAccessKey", "abc def").unwrap_err();
        assert!(e.to_string().contains("white space at byte 3"), "{e}");
        assert!(!e.to_string().contains("abc"));
    }

    #[test]
    fn timestamps_urls_cidrs_names() {
        assert!(timestamp("expiration", "2024-05-01T13:00:00Z").is_ok());
        assert!(timestamp("expiration", "2024-05-01T13:00:00.123+02:00").is_ok());
        assert!(timestamp("expiration", "2024-05-01\nT13").is_err());
        assert!(https_url("endpoint", "https://ABC.gr7.us-west-2.eks.amazonaws.com").is_ok());
        assert!(https_url("endpoint", "https://127.0.0.1:6443/").is_ok());
        assert!(https_url("endpoint", "https://[::1]:6443").is_ok());
        for bad in [
            "http://x",
            "https://",
            "https://x\n    insecure-skip-tls-verify: true",
            "https://x y",
            "https://x\"",
            "https://user@x",
            "file:///etc/passwd",
        ] {
            assert!(https_url("endpoint", bad).is_err(), "{bad}");
        }
        assert!(cidr("cidr", "10.80.0.0/16").is_ok());
        assert!(cidr("cidr", "fd00:ab::/64").is_ok());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "/16",
            "10.0.0.0/16\n",
            "10.0.0.0/1234",
        ] {
            assert!(cidr("cidr", bad).is_err(), "{bad}");
        }
        assert!(name("status", "ACTIVE").is_ok());
        assert!(name("version", "1.31").is_ok());
        assert!(name("name", "hybrid-test_1").is_ok());
        assert!(name("status", "ACTIVE\nerror: forged").is_err());
        assert!(name("status", "").is_err());
    }

    #[test]
    fn pem_certificate_text() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\nAB+/==\n-----END CERTIFICATE-----\n";
        assert!(pem_certificates("ca", pem).is_ok());
        assert!(pem_certificates("ca", &pem.replace('\n', "\r\n")).is_ok());
        assert!(pem_certificates("ca", &format!("{pem}\n{pem}")).is_ok());
        for bad in [
            "",
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
            &format!("junk\n{pem}"),
            &format!("{pem}junk: yes\n"),
            &pem.replace("MIIB", "MI IB"),
            &pem.replace("MIIB", "Proc-Type: 4,ENCRYPTED"),
        ] {
            assert!(pem_certificates("ca", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_become_one_line() {
        assert_eq!(one_line("denied"), "denied");
        assert_eq!(
            one_line("denied\nerror: forged line\r\n\tmore"),
            "denied error: forged line more"
        );
        assert_eq!(one_line("\n\n x \u{1b}[31m"), "x [31m");
        let long = one_line(&"é".repeat(1000));
        assert_eq!(long.chars().count(), MAX_MESSAGE + 3);
        // A space due just at the limit does not push the text past it (found by the fuzzer).
        let spaced = one_line(&format!("{} x", "a".repeat(MAX_MESSAGE - 1)));
        assert!(
            spaced.chars().count() <= MAX_MESSAGE + 3,
            "{}",
            spaced.len()
        );
        assert!(!one_line("a\u{2028}b").contains('\u{2028}'));
        assert_eq!(one_line(""), "");
    }
}
