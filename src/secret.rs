//! Secrets (Vault tokens, secret ids, PINs, AWS secret keys, session tokens) in a type that
//! zeroizes its memory on drop and never shows its value through `Debug` or `Display`.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

/// A secret string. `Debug` and `Display` print `<redacted>`; only [`Secret::expose`] gives the
/// value, so every use is easy to find.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// Reads a secret from a file, trimming one trailing newline (as `echo` writes it).
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        // Tokens, secret ids and PINs are short; a huge file is a mistake, not a secret.
        let raw = Zeroizing::new(crate::fsutil::read_capped(path, 64 * 1024)?);
        let text = std::str::from_utf8(&raw).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "secret file is not UTF-8")
        })?;
        let trimmed = text.strip_suffix('\n').unwrap_or(text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        Ok(Secret::new(trimmed))
    }

    /// The value. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn file_value_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "1234");
    }
}
