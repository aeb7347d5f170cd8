//! A small on-disk cache of Roles Anywhere sessions, so that `credential-process` (which AWS SDKs
//! run for every client they build) and `token` do not make a CreateSession each time.
//!
//! One 0600 JSON file per key under `$RUNTIME_DIRECTORY` or `/run/hybridboot`, written atomically;
//! an exclusive `flock` on a sibling lock file serialises the fetch so that concurrent callers with
//! a cold cache make exactly one request. An entry is used while it has more than
//! [`REFRESH_MARGIN_SECS`] left.
//!
//! The cache does not trust its directory: the directory must be a real directory owned by us
//! and writable by nobody else (a group- or world-writable one lets others plant or swap
//! entries), and entries are opened with `O_NOFOLLOW | O_NONBLOCK` and used only when they are
//! regular 0600 files of ours, so a symbolic link is never followed and a FIFO planted in place of
//! an entry cannot block a caller.
//!
//! A cache that cannot be used (read-only directory, foreign owner, loose mode) degrades to
//! fetching every time with a warning: caching is an optimisation, never a reason to fail.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::credentials::{parse_credential_process, render_credential_process, Credentials};
use crate::fsutil::{self, WriteOptions};

/// Sessions with at most this many seconds left are refreshed (the AWS SDKs refresh 5 minutes
/// before expiry too; handing them less would make them call us right back).
pub const REFRESH_MARGIN_SECS: i64 = 300;
/// Default cache directory when neither `RUNTIME_DIRECTORY` (systemd) nor `XDG_RUNTIME_DIR` is set.
pub const DEFAULT_DIR: &str = "/run/hybridboot";
/// Cache files are small; anything larger is not ours.
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// What identifies a session: the certificate (fingerprint) and everything sent to
/// CreateSession that changes the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKeyParts<'a> {
    /// SHA-256 fingerprint of the certificate (hex), so a renewed certificate gets a new session.
    pub certificate_fingerprint: &'a str,
    pub trust_anchor_arn: &'a str,
    pub profile_arn: &'a str,
    pub role_arn: &'a str,
    /// The role session name, if one is requested.
    pub session_name: Option<&'a str>,
    /// The endpoint, so that a test endpoint's sessions never mix with the service's.
    pub endpoint: &'a str,
}

/// The certificate fingerprint used in cache keys: hex SHA-256 of the DER certificate.
pub fn certificate_fingerprint(certificate_der: &[u8]) -> String {
    hex::encode(Sha256::digest(certificate_der))
}

/// Hex SHA-256 over the length-prefixed parts (unambiguous: no separator can be forged).
pub fn cache_key(p: &CacheKeyParts<'_>) -> String {
    let mut h = Sha256::new();
    h.update(b"hybridboot-rolesanywhere-cache-v1");
    let session = p.session_name.map(|s| format!("some:{s}"));
    for part in [
        p.certificate_fingerprint,
        p.trust_anchor_arn,
        p.profile_arn,
        p.role_arn,
        session.as_deref().unwrap_or("none"),
        p.endpoint,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The cache directory: the override if given, else the first entry of `RUNTIME_DIRECTORY`
/// (systemd may list several, colon-separated), else `$XDG_RUNTIME_DIR/hybridboot` (a person's
/// login session: private to the user, on tmpfs, where `/run/hybridboot` is not writable), else
/// [`DEFAULT_DIR`] (a node: kubelet and the system units have neither variable).
pub fn default_dir(
    override_dir: Option<&Path>,
    runtime_directory: Option<&str>,
    xdg_runtime_dir: Option<&str>,
) -> PathBuf {
    if let Some(d) = override_dir {
        return d.to_path_buf();
    }
    if let Some(first) = runtime_directory
        .and_then(|r| r.split(':').next())
        .filter(|s| !s.is_empty())
    {
        return PathBuf::from(first);
    }
    match xdg_runtime_dir.filter(|s| s.starts_with('/')) {
        Some(x) => Path::new(x).join("hybridboot"),
        None => PathBuf::from(DEFAULT_DIR),
    }
}

/// The cache directory of a run under `--root DIR` (tests, image builds): `DIR/run/hybridboot`,
/// unless `HYBRIDBOOT_CACHE_DIR` or `RUNTIME_DIRECTORY` name one. `None` for `/`.
pub fn dir_for_root(root: &Path, env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    if root == Path::new("/") || set("HYBRIDBOOT_CACHE_DIR") || set("RUNTIME_DIRECTORY") {
        return None;
    }
    Some(crate::fsutil::under_root(root, Path::new(DEFAULT_DIR)))
}

/// The effective uid, which must own the cache directory and its entries.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Where the credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A valid cache entry.
    Cache,
    /// The fetch function (and the result was stored when possible).
    Fetched,
}

/// The cache. Cheap to create; holds no open files.
#[derive(Debug, Clone)]
pub struct CredentialCache {
    dir: PathBuf,
}

impl CredentialCache {
    /// A cache in `dir` (created with mode 0700 on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CredentialCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("rolesanywhere-{key}.json"))
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("rolesanywhere-{key}.lock"))
    }

    /// Whether the cache directory may be trusted: absent (it is created 0700 on first use), or
    /// a real directory (not a symbolic link) owned by `euid` that neither group nor others may
    /// write. The error says what is wrong and what to do.
    pub fn check_dir(&self, euid: u32) -> std::io::Result<()> {
        let meta = match std::fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cache directory {}: {e}", self.dir.display()),
                ))
            }
        };
        let refuse = |why: String| {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "cache directory {} {why}; it must be a directory of uid {euid} with mode \
                     0700 (fix it, or remove it to have it recreated)",
                    self.dir.display()
                ),
            ))
        };
        if meta.file_type().is_symlink() {
            return refuse("is a symbolic link".into());
        }
        if !meta.is_dir() {
            return refuse("is not a directory".into());
        }
        if meta.uid() != euid {
            return refuse(format!("is owned by uid {}", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return refuse(format!(
                "is group- or world-writable (mode {:04o}): others could plant or swap entries",
                meta.mode() & 0o7777
            ));
        }
        Ok(())
    }

    /// A cached session valid for more than [`REFRESH_MARGIN_SECS`] after `now`, if any. A file
    /// that is unreadable, malformed, not a regular file (a symbolic link, a FIFO), not owned by
    /// us or readable by others is ignored, as is every entry of an untrusted directory
    /// ([`check_dir`](Self::check_dir)).
    pub fn get(&self, key: &str, now: SystemTime) -> Option<Credentials> {
        let euid = euid();
        if let Err(e) = self.check_dir(euid) {
            log::warn!("ignoring the credential cache: {e}");
            return None;
        }
        let path = self.entry_path(key);
        // O_NOFOLLOW: a link is refused, never followed; O_NONBLOCK: opening a FIFO returns at
        // once instead of waiting for a writer (it is then refused as not a regular file).
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                log::warn!(
                    "ignoring credential cache {}: it is a symbolic link (not followed)",
                    path.display()
                );
                return None;
            }
            Err(e) => {
                log::warn!("ignoring credential cache {}: {e}", path.display());
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            log::warn!(
                "ignoring credential cache {}: not a regular file",
                path.display()
            );
            return None;
        }
        if meta.uid() != euid || meta.mode() & 0o077 != 0 {
            log::warn!(
                "ignoring credential cache {}: it must be a 0600 file owned by uid {euid}",
                path.display()
            );
            return None;
        }
        let mut text = zeroize::Zeroizing::new(Vec::new());
        if file
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut text)
            .is_err()
            || text.len() as u64 > MAX_ENTRY_BYTES
        {
            log::warn!("ignoring credential cache {}: unreadable", path.display());
            return None;
        }
        match parse_credential_process(&text) {
            Ok(c) if c.expiration.is_some() && c.valid_for(now, REFRESH_MARGIN_SECS) => Some(c),
            Ok(_) => {
                log::debug!(
                    "credential cache {} is expiring: refreshing",
                    path.display()
                );
                None
            }
            Err(e) => {
                log::warn!("ignoring credential cache {}: {e}", path.display());
                None
            }
        }
    }

    /// Stores a session (atomically, mode 0600).
    pub fn put(&self, key: &str, creds: &Credentials) -> std::io::Result<()> {
        self.ensure_dir()?;
        let json = render_credential_process(creds);
        fsutil::atomic_write(
            &self.entry_path(key),
            json.expose().as_bytes(),
            &WriteOptions::private(),
        )
    }

    /// Removes a session (for instance after the service rejected it).
    pub fn invalidate(&self, key: &str) -> std::io::Result<()> {
        fsutil::remove_file(&self.entry_path(key)).map(|_| ())
    }

    fn ensure_dir(&self) -> std::io::Result<()> {
        self.check_dir(euid())?;
        if self.dir.is_dir() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("creating cache directory {}: {e}", self.dir.display()),
                )
            })
    }

    /// Takes the exclusive lock for `key`; released when the returned file is dropped.
    fn lock(&self, key: &str) -> std::io::Result<File> {
        self.ensure_dir()?;
        let path = self.lock_path(key);
        let file = fsutil::open_lock_file(&path)?;
        loop {
            let err = match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(file),
                Err(e) => std::io::Error::from(e),
            };
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(std::io::Error::new(
                    err.kind(),
                    format!("locking {}: {err}", path.display()),
                ));
            }
        }
    }

    /// A valid cached session, or the result of `fetch` (stored for the next caller). Concurrent
    /// callers, threads or processes, wait for the one that fetches and then read its result.
    /// Errors of `fetch` are returned as they are and nothing is stored.
    pub fn get_or_fetch<E>(
        &self,
        key: &str,
        now: SystemTime,
        fetch: impl FnOnce() -> Result<Credentials, E>,
    ) -> Result<(Credentials, Source), E> {
        if let Err(e) = self.check_dir(euid()) {
            log::warn!("credential cache unusable ({e}): fetching without it");
            return fetch().map(|c| (c, Source::Fetched));
        }
        if let Some(c) = self.get(key, now) {
            return Ok((c, Source::Cache));
        }
        let _lock = match self.lock(key) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!("credential cache unusable ({e}): fetching without it");
                None
            }
        };
        if _lock.is_some() {
            // Whoever held the lock before us may have fetched already.
            if let Some(c) = self.get(key, now) {
                return Ok((c, Source::Cache));
            }
        }
        let creds = fetch()?;
        if _lock.is_some() {
            if let Err(e) = self.put(key, &creds) {
                log::warn!("could not store credentials in the cache: {e}");
            }
        }
        Ok((creds, Source::Fetched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::{from_unix_seconds, unix_seconds};
    use crate::secret::Secret;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn creds(expires: i64, id: &str) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: Secret::new("SECRETKEYVALUE"),
            session_token: Some(Secret::new("SESSIONTOKENVALUE")),
            expiration: Some(from_unix_seconds(expires)),
        }
    }

    fn parts<'a>(fp: &'a str, session: Option<&'a str>) -> CacheKeyParts<'a> {
        CacheKeyParts {
            certificate_fingerprint: fp,
            trust_anchor_arn: "ta",
            profile_arn: "pr",
            role_arn: "role",
            session_name: session,
            endpoint: "https://e",
        }
    }

    #[test]
    fn keys_are_stable_and_separate() {
        let a = cache_key(&parts("fp", None));
        assert_eq!(a, cache_key(&parts("fp", None)));
        assert_eq!(a.len(), 64);
        assert_ne!(a, cache_key(&parts("fp2", None)));
        assert_ne!(a, cache_key(&parts("fp", Some("node-1"))));
        assert_ne!(cache_key(&parts("fp", Some(""))), a);
        // Moving a boundary between fields changes the key.
        let mut p = parts("fpt", None);
        p.trust_anchor_arn = "a";
        let mut q = parts("fp", None);
        q.trust_anchor_arn = "ta";
        assert_ne!(cache_key(&p), cache_key(&q));
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der() {
        assert_eq!(
            certificate_fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn directory_choice() {
        assert_eq!(
            default_dir(None, None, None),
            PathBuf::from("/run/hybridboot")
        );
        assert_eq!(
            default_dir(None, Some(""), Some("")),
            PathBuf::from("/run/hybridboot")
        );
        assert_eq!(
            default_dir(None, Some("/run/a:/run/b"), Some("/run/user/1000")),
            PathBuf::from("/run/a")
        );
        assert_eq!(
            default_dir(None, None, Some("/run/user/1000")),
            PathBuf::from("/run/user/1000/hybridboot")
        );
        // A relative XDG_RUNTIME_DIR is invalid (XDG spec): ignored.
        assert_eq!(
            default_dir(None, None, Some("run")),
            PathBuf::from("/run/hybridboot")
        );
        assert_eq!(
            default_dir(Some(Path::new("/x")), Some("/run/a"), Some("/run/user/1")),
            PathBuf::from("/x")
        );
    }

    #[test]
    fn twenty_threads_with_a_cold_cache_fetch_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path().join("cache"));
        let key = cache_key(&parts("fp", None));
        let now = from_unix_seconds(1_700_000_000);
        let count = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let cache = cache.clone();
                let key = key.clone();
                let count = count.clone();
                std::thread::spawn(move || {
                    cache
                        .get_or_fetch(key.as_str(), now, || {
                            count.fetch_add(1, Ordering::SeqCst);
                            // A slow CreateSession: everyone else arrives meanwhile.
                            std::thread::sleep(std::time::Duration::from_millis(300));
                            Ok::<_, String>(creds(1_700_003_600, "ASIAONE"))
                        })
                        .unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|(c, _)| c.access_key_id == "ASIAONE"));
        assert_eq!(
            results
                .iter()
                .filter(|(_, s)| *s == Source::Fetched)
                .count(),
            1
        );
        let meta = std::fs::metadata(cache.entry_path(&key)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(cache.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[test]
    fn entries_are_refreshed_five_minutes_before_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path());
        let key = "k";
        let t0 = 1_700_000_000;
        cache.put(key, &creds(t0 + 3600, "ASIAOLD")).unwrap();
        let fetch_new = || Ok::<_, String>(creds(t0 + 7200, "ASIANEW"));
        // 10 minutes left: reused.
        let (c, s) = cache
            .get_or_fetch(key, from_unix_seconds(t0 + 3000), fetch_new)
            .unwrap();
        assert_eq!((c.access_key_id.as_str(), s), ("ASIAOLD", Source::Cache));
        // Exactly 5 minutes left: refreshed, and the new one is stored.
        let (c, s) = cache
            .get_or_fetch(key, from_unix_seconds(t0 + 3300), fetch_new)
            .unwrap();
        assert_eq!((c.access_key_id.as_str(), s), ("ASIANEW", Source::Fetched));
        let stored = cache.get(key, from_unix_seconds(t0 + 3300)).unwrap();
        assert_eq!(unix_seconds(stored.expiration.unwrap()), t0 + 7200);
        assert_eq!(stored, c);
    }

    #[test]
    fn fetch_errors_store_nothing_and_keep_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path());
        let t0 = 1_700_000_000;
        cache.put("k", &creds(t0 + 100, "ASIAOLD")).unwrap();
        let e = cache
            .get_or_fetch("k", from_unix_seconds(t0), || {
                Err::<Credentials, _>("denied")
            })
            .unwrap_err();
        assert_eq!(e, "denied");
        let text = std::fs::read_to_string(cache.entry_path("k")).unwrap();
        assert!(text.contains("ASIAOLD"));
    }

    #[test]
    fn corrupt_or_foreign_readable_entries_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path());
        let t0 = 1_700_000_000;
        std::fs::write(cache.entry_path("k"), "{not json").unwrap();
        std::fs::set_permissions(
            cache.entry_path("k"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(cache.get("k", from_unix_seconds(t0)).is_none());
        cache.put("k", &creds(t0 + 3600, "ASIAOK")).unwrap();
        assert!(cache.get("k", from_unix_seconds(t0)).is_some());
        // Readable by others: someone else may have planted it (or will read it); not used.
        std::fs::set_permissions(
            cache.entry_path("k"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(cache.get("k", from_unix_seconds(t0)).is_none());
        cache.invalidate("k").unwrap();
        assert!(!cache.entry_path("k").exists());
    }

    fn mkfifo(path: &Path) {
        let st = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn a_fifo_in_place_of_an_entry_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path().join("cache"));
        let t0 = 1_700_000_000;
        cache.put("k", &creds(t0 + 3600, "ASIAOLD")).unwrap();
        std::fs::remove_file(cache.entry_path("k")).unwrap();
        mkfifo(&cache.entry_path("k"));
        // Opening a FIFO for reading without O_NONBLOCK waits for a writer that never comes;
        // run the call on a thread so a regression fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = cache.clone();
        std::thread::spawn(move || {
            let r = c2.get_or_fetch("k", from_unix_seconds(t0), || {
                Ok::<_, String>(creds(t0 + 3600, "ASIAFRESH"))
            });
            let _ = tx.send(r);
        });
        let (c, s) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the cache blocked on a FIFO")
            .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), s),
            ("ASIAFRESH", Source::Fetched)
        );
        // The fresh session replaced the FIFO with a regular entry.
        assert!(std::fs::symlink_metadata(cache.entry_path("k"))
            .unwrap()
            .is_file());
    }

    #[test]
    fn a_symlinked_entry_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path().join("cache"));
        let t0 = 1_700_000_000;
        // A valid entry of ours elsewhere, linked in place of the cache entry.
        let planted = CredentialCache::new(dir.path().join("elsewhere"));
        planted.put("k", &creds(t0 + 3600, "ASIAPLANTED")).unwrap();
        cache.put("other", &creds(t0 + 3600, "ASIAX")).unwrap();
        std::os::unix::fs::symlink(planted.entry_path("k"), cache.entry_path("k")).unwrap();
        assert!(cache.get("k", from_unix_seconds(t0)).is_none());
        let (c, s) = cache
            .get_or_fetch("k", from_unix_seconds(t0), || {
                Ok::<_, String>(creds(t0 + 3600, "ASIAFRESH"))
            })
            .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), s),
            ("ASIAFRESH", Source::Fetched)
        );
        // The link was replaced, its target left alone.
        assert!(std::fs::symlink_metadata(cache.entry_path("k"))
            .unwrap()
            .is_file());
        let planted_text = std::fs::read_to_string(planted.entry_path("k")).unwrap();
        assert!(planted_text.contains("ASIAPLANTED"));
    }

    #[test]
    fn an_untrusted_directory_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path().join("cache"));
        let t0 = 1_700_000_000;
        cache.put("k", &creds(t0 + 3600, "ASIAOLD")).unwrap();
        assert!(cache.get("k", from_unix_seconds(t0)).is_some());
        for mode in [0o770, 0o703, 0o777] {
            std::fs::set_permissions(cache.dir(), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = cache.check_dir(euid()).unwrap_err().to_string();
            assert!(
                e.contains("group- or world-writable") && e.contains("0700"),
                "{e}"
            );
            assert!(e.contains(&cache.dir().display().to_string()), "{e}");
            assert!(cache.get("k", from_unix_seconds(t0)).is_none());
            let (c, s) = cache
                .get_or_fetch("k", from_unix_seconds(t0), || {
                    Ok::<_, String>(creds(t0 + 3600, "ASIAFRESH"))
                })
                .unwrap();
            assert_eq!(
                (c.access_key_id.as_str(), s),
                ("ASIAFRESH", Source::Fetched)
            );
            // Nothing stored in a directory others can write.
            let text = std::fs::read_to_string(cache.entry_path("k")).unwrap();
            assert!(text.contains("ASIAOLD"));
        }
        // A foreign owner cannot be set up without root; a uid that is not ours stands in.
        std::fs::set_permissions(cache.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = cache.check_dir(euid().wrapping_add(1)).unwrap_err();
        assert!(e.to_string().contains("is owned by uid"), "{e}");
        // A directory that is a link is refused too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(cache.dir(), &link).unwrap();
        let e = CredentialCache::new(&link).check_dir(euid()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(cache.check_dir(euid()).is_ok());
    }

    #[test]
    fn an_unusable_directory_degrades_to_fetching() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let cache = CredentialCache::new(file.join("cache"));
        let (c, s) = cache
            .get_or_fetch("k", from_unix_seconds(0), || {
                Ok::<_, String>(creds(3600, "ASIAX"))
            })
            .unwrap();
        assert_eq!((c.access_key_id.as_str(), s), ("ASIAX", Source::Fetched));
    }
}
