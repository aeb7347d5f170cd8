//! The one way hybridboot writes files: atomically, with an explicit mode and owner.
//!
//! A reader (or a machine that loses power) sees either the old content or the new one, never a
//! mix: the data goes to a temporary file in the same directory, is flushed with `fsync`, renamed
//! over the target, and the directory is flushed so the rename itself survives a power cut.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits of the final file.
    pub mode: u32,
    /// Owner `(uid, gid)`; `None` keeps the writing process's.
    pub owner: Option<(u32, u32)>,
    /// Create missing parent directories (with mode 0755).
    pub create_parents: bool,
}

impl WriteOptions {
    /// 0600: keys, credentials, tokens, state.
    pub fn private() -> Self {
        WriteOptions {
            mode: 0o600,
            owner: None,
            create_parents: true,
        }
    }

    /// 0644: certificates, configuration, unit files.
    pub fn public() -> Self {
        WriteOptions {
            mode: 0o644,
            ..WriteOptions::private()
        }
    }

    /// 0755: executables.
    pub fn executable() -> Self {
        WriteOptions {
            mode: 0o755,
            ..WriteOptions::private()
        }
    }

    /// Same options with another mode.
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
}

/// Writes `data` to `path` atomically (temp file in the same directory, fsync, rename, fsync of
/// the directory). On any error the target is untouched and the temporary file removed.
pub fn atomic_write(path: &Path, data: &[u8], opts: &WriteOptions) -> io::Result<()> {
    atomic_write_with(path, opts, |f| f.write_all(data))
}

/// Like [`atomic_write`], but the content is produced by `fill` writing into the temporary file
/// (for content that is streamed, such as downloads).
pub fn atomic_write_with(
    path: &Path,
    opts: &WriteOptions,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = TempFile::create(path, opts)?;
    tmp.commit(fill)
}

/// A temporary file next to its final path; removed on drop unless committed.
pub struct TempFile {
    path: PathBuf,
    target: PathBuf,
    file: Option<File>,
    opts: WriteOptions,
}

impl TempFile {
    /// Creates `.<name>.hbtmp.<pid>.<n>` beside `target` (exclusively, with the final mode).
    pub fn create(target: &Path, opts: &WriteOptions) -> io::Result<TempFile> {
        let dir = parent_dir(target);
        if opts.create_parents {
            create_dir_all(&dir)?;
        }
        let name = target.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", target.display()),
            )
        })?;
        for attempt in 0..100u32 {
            let mut tmp_name = OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".hbtmp.{}.{}", std::process::id(), unique(attempt)));
            let tmp_path = dir.join(&tmp_name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(opts.mode)
                .open(&tmp_path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path: tmp_path,
                        target: target.to_path_buf(),
                        file: Some(file),
                        opts: opts.clone(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(with_path(e, "creating a temporary file in", &dir)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("could not create a temporary file in {}", dir.display()),
        ))
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same open temporary file, to fill it over several steps (a
    /// download resumed after drops) before [`TempFile::commit`] (with a no-op fill) places it.
    pub fn handle(&self) -> io::Result<File> {
        match &self.file {
            Some(f) => f.try_clone(),
            None => Err(io::Error::other("the temporary file is already committed")),
        }
    }

    /// Fills the file, sets mode and owner, fsyncs, renames it over the target and fsyncs the
    /// directory.
    pub fn commit(mut self, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
        let mut file = self.file.take().expect("temp file present until commit");
        fill(&mut file).map_err(|e| with_path(e, "writing", &self.target))?;
        file.flush()?;
        // The umask may have narrowed the mode given to open(2): set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(self.opts.mode))
            .map_err(|e| with_path(e, "setting the mode of", &self.target))?;
        if let Some((uid, gid)) = self.opts.owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| with_path(e, "setting the owner of", &self.target))?;
        }
        file.sync_all()
            .map_err(|e| with_path(e, "flushing", &self.target))?;
        drop(file);
        fs::rename(&self.path, &self.target)
            .map_err(|e| with_path(e, "replacing", &self.target))?;
        // From here the temp path is gone; do not try to remove it on drop.
        self.path = PathBuf::new();
        sync_dir(&parent_dir(&self.target))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reads a whole file of at most `max` bytes. A larger file (or one growing while read) is an
/// `InvalidData` error naming the path and the limit, read no further: operator- or
/// peer-supplied files must not exhaust memory.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut data = Vec::new();
    file.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(data)
}

/// Text files operators or tools hand us (configuration, certificates, ConfigMaps, keys) are
/// read up to this size: the largest real ones are a few tens of KiB.
pub const MAX_TEXT_FILE: u64 = 1024 * 1024;

/// [`read_capped`] for UTF-8 text: invalid UTF-8 is an `InvalidData` error naming the path.
pub fn read_capped_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, max)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

/// Removes a file durably (the directory entry removal is flushed). A missing file is fine.
pub fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(&parent_dir(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(with_path(e, "removing", path)),
    }
}

/// Creates a directory and its parents with mode 0755, flushing each new entry.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            sync_dir(&parent_dir(dir))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(with_path(e, "creating directory", dir)),
    }
}

/// Removes temporary files that a killed writer (power cut, SIGKILL) left in `dir`: the
/// `.<name>.hbtmp.<pid>.<n>` files of [`TempFile`] whose process no longer runs. Returns how many
/// were removed. A missing directory is fine.
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(with_path(e, "listing", dir)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .split(".hbtmp.")
            .nth(1)
            .filter(|_| name.starts_with('.'))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() as i32 || process_exists(pid);
        if !alive && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Whether process `pid` exists: `kill(pid, 0)`, which also sees processes of other users
/// (EPERM) and, unlike a look in /proc, works with hidepid. Not a valid pid: no.
fn process_exists(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Most symbolic links followed while resolving one path under a root (Linux's own limit).
const MAX_ROOT_SYMLINKS: usize = 40;

/// `path` under `root` (`--root DIR`): `/etc/x` with root `/tmp/r` is `/tmp/r/etc/x`.
///
/// Resolved the way a chroot to `root` would resolve it, so that nothing under `--root` can send
/// a read or write outside the root: every existing symbolic link on the way (the last
/// component's too) is followed by hand, an absolute target (`etc/aws -> /elsewhere`) is taken
/// relative to `root`, and `..` never climbs above `root`. Components that do not exist yet are
/// appended as they are (the writer creates them inside the root). With root `/` the path is
/// returned as it is. A symbolic link loop yields a path under `root` that no system call accepts
/// (it holds a NUL byte), so whatever uses it fails instead of leaving the root.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    use std::path::Component;
    if root == Path::new("/") {
        return path.to_path_buf();
    }
    // Components still to walk, last first (so links push their targets on top).
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, path);
    // What is resolved so far, relative to the root.
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&name);
        match fs::read_link(&candidate) {
            Ok(target) => {
                links += 1;
                if links > MAX_ROOT_SYMLINKS {
                    log::error!(
                        "{} under {}: too many levels of symbolic links; refusing it",
                        path.display(),
                        root.display()
                    );
                    let mut refused = OsString::from(root.as_os_str());
                    refused.push("/\0symlink-loop");
                    return PathBuf::from(refused);
                }
                if target.components().next() == Some(Component::RootDir) {
                    resolved.clear();
                }
                push_components(&mut pending, &target);
            }
            // Not a link, or not there (yet): a plain component.
            Err(_) => resolved.push(name),
        }
    }
    resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c))
}

/// Pushes the normal and `..` components of `path` onto `stack`, last first.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    use std::path::Component;
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, "flushing directory", dir))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn unique(attempt: u32) -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((attempt as u64) << 32)
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/file");
        atomic_write(&p, b"one", &WriteOptions::private()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        atomic_write(&p, b"two", &WriteOptions::public()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn failed_fill_leaves_old_content_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("file");
        atomic_write(&p, b"old", &WriteOptions::public()).unwrap();
        let err = atomic_write_with(&p, &WriteOptions::public(), |f| {
            f.write_all(b"partial")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn root_prefix() {
        assert_eq!(
            under_root(Path::new("/tmp/r"), Path::new("/etc/x")),
            PathBuf::from("/tmp/r/etc/x")
        );
        assert_eq!(
            under_root(Path::new("/"), Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
    }

    #[test]
    fn root_paths_resolve_links_as_a_chroot_would() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // An absolute link is re-rooted, whatever it names on the host.
        symlink(&outside, root.join("etc/aws")).unwrap();
        let p = under_root(&root, Path::new("/etc/aws/hybrid/config"));
        assert!(p.starts_with(&root), "{}", p.display());
        assert_eq!(
            p,
            root.join(outside.strip_prefix("/").unwrap())
                .join("hybrid/config")
        );
        // `..` never climbs above the root, in the path or in a link's target.
        assert_eq!(
            under_root(&root, Path::new("/../../etc/x")),
            root.join("etc/x")
        );
        symlink("../../../../x", root.join("etc/up")).unwrap();
        assert_eq!(under_root(&root, Path::new("/etc/up/y")), root.join("x/y"));
        // A relative link stays relative to its directory; a final-component link is followed.
        fs::create_dir_all(root.join("var/real")).unwrap();
        symlink("real", root.join("var/alias")).unwrap();
        assert_eq!(
            under_root(&root, Path::new("/var/alias/f")),
            root.join("var/real/f")
        );
        symlink("/var/real/f", root.join("etc/f")).unwrap();
        assert_eq!(
            under_root(&root, Path::new("/etc/f")),
            root.join("var/real/f")
        );
        // A loop is refused: no system call accepts the result.
        symlink("/etc/b", root.join("etc/a")).unwrap();
        symlink("/etc/a", root.join("etc/b")).unwrap();
        let looped = under_root(&root, Path::new("/etc/a/x"));
        assert!(looped.starts_with(&root));
        assert!(fs::metadata(&looped).is_err());
        assert!(atomic_write(&looped, b"x", &WriteOptions::private()).is_err());
    }

    #[test]
    fn read_capped_refuses_files_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_capped(&p, 5).unwrap(), b"12345");
        let e = read_capped(&p, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
    }
}
