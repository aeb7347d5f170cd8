//! The AWS shared credentials file (`~/.aws/credentials`, `AWS_SHARED_CREDENTIALS_FILE`): rewrite
//! one profile's keys and leave every other byte (other profiles, comments, ordering, other keys
//! of the same profile) as it was. Written atomically with mode 0600, unlike the reference
//! helper, which rewrites it in place.

use crate::error::{Class, Classify};
use std::path::{Path, PathBuf};

use super::credentials::Credentials;
use crate::fsutil::{self, WriteOptions};
use crate::secret::Secret;

/// Largest credentials file we read; anything larger is not a credentials file.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

const KEY_ID: &str = "aws_access_key_id";
const SECRET: &str = "aws_secret_access_key";
const TOKEN: &str = "aws_session_token";

/// Problems with the credentials file; one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CredFileError {
    #[error("profile name {0:?} is not usable in a credentials file: use letters, digits, '-', '_', '.', '@', '+' (no brackets, spaces or newlines)")]
    BadProfile(String),
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    /// Credentials with a field the file cannot hold safely (a line break would add keys).
    #[error("refusing to write credentials with an invalid {0}")]
    BadCredentials(#[from] crate::peer_fields::InvalidField),
}

impl Classify for CredFileError {
    /// A bad profile name or an unwritable credentials file needs an operator.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// The file's path: `AWS_SHARED_CREDENTIALS_FILE` if set, else `$HOME/.aws/credentials`.
pub fn default_path(shared_credentials_file: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = shared_credentials_file.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| Path::new(h).join(".aws/credentials"))
}

/// Checks a profile name (the credentials file has no `profile ` prefix: `[default]`, `[name]`).
pub fn validate_profile(profile: &str) -> Result<(), CredFileError> {
    let ok = !profile.is_empty()
        && profile.len() <= 128
        && profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@+/:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CredFileError::BadProfile(profile.to_string()))
    }
}

fn section_name(line: &str) -> Option<&str> {
    // An indented line continues the previous value (botocore's reading), even if it looks
    // like `[name]`: treating it as a header would drop it on the next rewrite.
    if line.starts_with([' ', '\t']) {
        return None;
    }
    let t = line.trim();
    let inner = t.strip_prefix('[')?;
    let end = inner.find(']')?;
    // Anything after `]` must be a comment.
    let rest = inner[end + 1..].trim();
    if !(rest.is_empty() || rest.starts_with('#') || rest.starts_with(';')) {
        return None;
    }
    Some(inner[..end].trim())
}

fn key_of(line: &str) -> Option<String> {
    if line.starts_with([' ', '\t']) {
        return None;
    }
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let idx = t.find(['=', ':'])?;
    Some(t[..idx].trim().to_ascii_lowercase())
}

fn is_continuation(line: &str) -> bool {
    line.starts_with([' ', '\t']) && !line.trim().is_empty()
}

/// Returns `existing` with profile `profile` holding `creds`: the three keys replaced where they
/// are (continuation lines of their old values dropped), missing ones added after the profile's
/// last setting, the profile appended if absent. Duplicate sections of the same profile lose
/// their copies of the three keys so that nothing stale can override the new values. Long-lived
/// credentials remove `aws_session_token`. The result holds secrets.
pub fn render(existing: &str, profile: &str, creds: &Credentials) -> Result<Secret, CredFileError> {
    validate_profile(profile)?;
    creds.validate()?;
    let mut wanted: Vec<(&str, Option<&str>)> = vec![
        (KEY_ID, Some(creds.access_key_id.as_str())),
        (SECRET, Some(creds.secret_access_key.expose())),
        (TOKEN, creds.session_token.as_ref().map(|t| t.expose())),
    ];
    let lines: Vec<&str> = if existing.is_empty() {
        Vec::new()
    } else {
        existing
            .strip_suffix('\n')
            .unwrap_or(existing)
            .split('\n')
            .collect()
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 5);
    let mut in_target = false;
    let mut seen_target = false;
    // Index in `out` after which missing keys go (the first target section's last setting).
    let mut insert_at: Option<usize> = None;
    let mut skipping_continuation = false;
    let mut first_section_done = false;

    for line in &lines {
        if skipping_continuation && is_continuation(line) {
            continue;
        }
        skipping_continuation = false;
        if let Some(name) = section_name(line) {
            if in_target {
                first_section_done = true;
            }
            in_target = name == profile;
            out.push(line.to_string());
            if in_target && !seen_target {
                seen_target = true;
                insert_at = Some(out.len());
            }
            continue;
        }
        if in_target {
            if let Some(k) = key_of(line) {
                if let Some(pos) = wanted.iter().position(|(w, _)| *w == k) {
                    skipping_continuation = true;
                    if !first_section_done {
                        if let (_, Some(v)) = wanted[pos] {
                            out.push(format!("{k} = {v}"));
                            insert_at = Some(out.len());
                        }
                        wanted.remove(pos);
                    }
                    continue;
                }
                out.push(line.to_string());
                if !first_section_done {
                    insert_at = Some(out.len());
                }
                continue;
            }
            if is_continuation(line) && !first_section_done {
                out.push(line.to_string());
                insert_at = Some(out.len());
                continue;
            }
        }
        out.push(line.to_string());
    }

    let missing: Vec<String> = wanted
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} = {v}")))
        .collect();
    match insert_at {
        Some(at) => {
            out.splice(at..at, missing);
        }
        None => {
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.push(format!("[{profile}]"));
            out.extend(missing);
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(Secret::new(text))
}

/// Rewrites `profile` in the file at `path` (created if absent, parents too), atomically, 0600.
pub fn write(path: &Path, profile: &str, creds: &Credentials) -> Result<(), CredFileError> {
    let io = |e: std::io::Error| CredFileError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let existing = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return Err(CredFileError::Io {
                path: path.to_path_buf(),
                detail: format!("larger than {MAX_FILE_BYTES} bytes: not a credentials file"),
            })
        }
        Ok(_) => {
            let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(io)?);
            Secret::new(std::str::from_utf8(&bytes).map_err(|_| CredFileError::Io {
                path: path.to_path_buf(),
                detail: "not UTF-8 text: not a credentials file".into(),
            })?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Secret::new(""),
        Err(e) => return Err(io(e)),
    };
    let text = render(existing.expose(), profile, creds)?;
    fsutil::atomic_write(path, text.expose().as_bytes(), &WriteOptions::private()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::from_unix_seconds;
    use std::os::unix::fs::PermissionsExt as _;

    fn creds(id: &str, token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: Secret::new("NEWSECRET"),
            session_token: token.map(Secret::new),
            expiration: Some(from_unix_seconds(1_700_000_000)),
        }
    }

    fn r(existing: &str, profile: &str, c: &Credentials) -> String {
        render(existing, profile, c).unwrap().expose().to_string()
    }

    #[test]
    fn credentials_that_would_inject_lines_are_refused() {
        let evil = "TOK\n[evil]\ncredential_process = /bin/sh -c id";
        let e = render("[other]\nx = 1\n", "default", &creds("ASIA1", Some(evil))).unwrap_err();
        assert!(
            e.to_string().contains("SessionToken holds a line break"),
            "{e}"
        );
        assert!(!e.to_string().contains("credential_process"), "{e}");
        let mut c = creds("ASIA1", None);
        c.access_key_id = "ASIA1\n[x]".into();
        assert!(render("", "default", &c).is_err());
    }

    #[test]
    fn empty_file_gets_the_profile() {
        assert_eq!(
            r("", "default", &creds("ASIA1", Some("TOK"))),
            "[default]\naws_access_key_id = ASIA1\naws_secret_access_key = NEWSECRET\naws_session_token = TOK\n"
        );
    }

    #[test]
    fn replaces_in_place_and_preserves_everything_else() {
        let before = "\
# managed by hand, keep me
[other]
aws_access_key_id = AKIAOTHER
aws_secret_access_key = othersecret

[default]
; comment inside the profile
region=us-east-1
AWS_ACCESS_KEY_ID=OLDID
aws_secret_access_key = OLDSECRET
aws_session_token = OLDTOKEN
  continued-old-token-line
output = json

[last]
x = 1
";
        let after = "\
# managed by hand, keep me
[other]
aws_access_key_id = AKIAOTHER
aws_secret_access_key = othersecret

[default]
; comment inside the profile
region=us-east-1
aws_access_key_id = ASIA2
aws_secret_access_key = NEWSECRET
aws_session_token = TOK2
output = json

[last]
x = 1
";
        assert_eq!(r(before, "default", &creds("ASIA2", Some("TOK2"))), after);
        // Idempotent.
        assert_eq!(r(after, "default", &creds("ASIA2", Some("TOK2"))), after);
    }

    #[test]
    fn missing_keys_go_after_the_profiles_last_setting() {
        let before = "[node]\nregion = eu-west-1\n\n# next\n[x]\na = b\n";
        assert_eq!(
            r(before, "node", &creds("ASIA3", Some("T"))),
            "[node]\nregion = eu-west-1\naws_access_key_id = ASIA3\naws_secret_access_key = NEWSECRET\naws_session_token = T\n\n# next\n[x]\na = b\n"
        );
    }

    #[test]
    fn absent_profile_is_appended_and_others_untouched() {
        let before = "[default]\naws_access_key_id = A\n";
        assert_eq!(
            r(before, "hybrid", &creds("ASIA4", Some("T"))),
            "[default]\naws_access_key_id = A\n\n[hybrid]\naws_access_key_id = ASIA4\naws_secret_access_key = NEWSECRET\naws_session_token = T\n"
        );
        // A `[profile x]` header (config-file style) is a different section name.
        assert!(
            r("[profile hybrid]\na = b\n", "hybrid", &creds("I", None)).contains("\n[hybrid]\n")
        );
    }

    #[test]
    fn long_lived_keys_drop_the_old_token_and_duplicates_lose_stale_keys() {
        let before = "[default]\naws_session_token = OLD\naws_access_key_id = OLDID\n[default]\naws_secret_access_key = STALE\nregion = x\n";
        assert_eq!(
            r(before, "default", &creds("AKIA5", None)),
            "[default]\naws_access_key_id = AKIA5\naws_secret_access_key = NEWSECRET\n[default]\nregion = x\n"
        );
    }

    #[test]
    fn bad_profile_names_are_refused() {
        for bad in ["", "a b", "x]", "[x", "a\nb"] {
            assert!(matches!(
                render("", bad, &creds("A", None)),
                Err(CredFileError::BadProfile(_))
            ));
        }
    }

    #[test]
    fn writes_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aws/credentials");
        write(&path, "default", &creds("ASIA6", Some("T6"))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "# operator note\n");
        std::fs::write(&path, text).unwrap();
        write(&path, "default", &creds("ASIA7", Some("T7"))).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# operator note\n[default]\naws_access_key_id = ASIA7\n"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file left behind");
        // A refused write leaves the old file as it was.
        assert!(write(&path, "bad name", &creds("X", None)).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn path_selection() {
        assert_eq!(
            default_path(Some("/etc/aws/creds"), Some("/root")),
            Some(PathBuf::from("/etc/aws/creds"))
        );
        assert_eq!(
            default_path(None, Some("/home/n")),
            Some(PathBuf::from("/home/n/.aws/credentials"))
        );
        assert_eq!(default_path(Some(""), None), None);
    }
}
