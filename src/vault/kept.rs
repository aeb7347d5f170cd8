//! What an AppRole unwrap and login produced, kept on disk until the certificate is written.
//!
//! A wrapping token unwraps once, and a single-use secret id logs in once: a run that fails
//! after either (a sign answering 5xx, a timeout, a power cut) would leave the next run with a
//! spent secret, which only an operator can replace. So the unwrapped secret id is written
//! here before it is used, and the login's token next to it; the next run resumes from them
//! (the token, or a fresh login with the kept secret id when the token no longer works). The
//! file is removed once a certificate is written.
//!
//! The file holds secrets: mode 0600, in the state directory, written atomically (a power cut
//! leaves the old content or the new, never half), never logged.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil;
use crate::secret::Secret;

/// The kept AppRole login, at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptLogin {
    path: PathBuf,
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The (unwrapped) secret id.
    pub secret_id: Secret,
    /// The token its login gave, once logged in.
    pub token: Option<Secret>,
}

#[derive(Serialize)]
struct Written<'a> {
    secret_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Read {
    secret_id: String,
    #[serde(default)]
    token: Option<String>,
}

impl KeptLogin {
    /// The kept login at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        KeptLogin { path: path.into() }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What an earlier run kept, if anything. A damaged file (only a hand edit does that) is an
    /// operator error naming it.
    pub fn load(&self) -> anyhow::Result<Option<Kept>> {
        let bytes = match fsutil::read_capped(&self.path, 64 * 1024) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "reading the kept AppRole login {}",
                    self.path.display()
                )))
            }
        };
        let read: Read = serde_json::from_slice(&bytes).map_err(|_| {
            crate::error::operator(format!(
                "{}: unreadable kept AppRole login; remove it and put a new secret id in place",
                self.path.display()
            ))
        })?;
        let kept = Kept {
            secret_id: Secret::new(read.secret_id),
            token: read.token.map(Secret::new),
        };
        Ok(Some(kept))
    }

    /// Keeps `secret_id` and, once logged in, `token` (atomically, mode 0600).
    pub fn keep(&self, secret_id: &Secret, token: Option<&Secret>) -> anyhow::Result<()> {
        let bytes = Zeroizing::new(
            serde_json::to_vec(&Written {
                secret_id: secret_id.expose(),
                token: token.map(Secret::expose),
            })
            .expect("serialising strings cannot fail"),
        );
        fsutil::atomic_write(&self.path, &bytes, &fsutil::WriteOptions::private())
            .with_context(|| format!("keeping the AppRole login in {}", self.path.display()))
    }

    /// Removes the file (the certificate is written: nothing left to resume). Whether it was
    /// there.
    pub fn remove(&self) -> anyhow::Result<bool> {
        fsutil::remove_file(&self.path)
            .with_context(|| format!("removing the kept AppRole login {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kept_logins_round_trip_private_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let k = KeptLogin::at(dir.path().join("state/approle-login.json"));
        assert_eq!(k.load().unwrap(), None);
        let secret_id = Secret::new("s.secret-id-1");
        k.keep(&secret_id, None).unwrap();
        let mode = std::fs::metadata(k.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            k.load().unwrap(),
            Some(Kept {
                secret_id: secret_id.clone(),
                token: None
            })
        );
        let token = Secret::new("hvs.token-1");
        k.keep(&secret_id, Some(&token)).unwrap();
        assert_eq!(k.load().unwrap().unwrap().token, Some(token));
        assert!(k.remove().unwrap());
        assert!(!k.remove().unwrap());
        assert_eq!(k.load().unwrap(), None);

        std::fs::write(k.path(), "{\"secret_id\": \"s.x\", \"other\": 1}").unwrap();
        let e = k.load().unwrap_err().to_string();
        assert!(
            e.contains("approle-login.json") && !e.contains("s.x"),
            "{e}"
        );
    }
}
