//! The one way hybridboot writes files: atomically, with an explicit mode and owner.
//!
//! A reader (or a machine that loses power) sees either the old content or the new one, never a
//! mix: the data goes to a temporary file in the same directory, is flushed with `fsync`, renamed
//! over the target, and the directory is flushed so the rename itself survives a power cut.
//!
//! A set of files written together ([`Batch`], init's node files) pays one directory flush per
//! distinct directory instead of one per file: every file is staged and flushed first, then all
//! are renamed, then each directory is flushed once.

use std::collections::BTreeSet;
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
        self.fill(fill)?;
        self.sync()?;
        self.rename()?;
        sync_dir(&parent_dir(&self.target))
    }

    /// Fills the file and sets mode and owner; the file stays open for [`TempFile::sync`].
    fn fill(&mut self, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
        let target = &self.target;
        let file = self.file.as_mut().ok_or_else(|| {
            io::Error::other(format!("{}: temporary file closed", target.display()))
        })?;
        fill(file).map_err(|e| with_path(e, "writing", target))?;
        file.flush()?;
        // The umask may have narrowed the mode given to open(2): set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(self.opts.mode))
            .map_err(|e| with_path(e, "setting the mode of", target))?;
        if let Some((uid, gid)) = self.opts.owner {
            std::os::unix::fs::fchown(&*file, Some(uid), Some(gid))
                .map_err(|e| with_path(e, "setting the owner of", target))?;
        }
        Ok(())
    }

    /// fsyncs the filled file: its content is durable under the temporary name, and the
    /// target is untouched.
    fn sync(&self) -> io::Result<()> {
        self.file
            .as_ref()
            .ok_or_else(|| {
                io::Error::other(format!("{}: temporary file closed", self.target.display()))
            })?
            .sync_all()
            .map_err(|e| with_path(e, "flushing", &self.target))
    }

    /// Renames the (flushed) temporary file over the target; the directory is not flushed.
    fn rename(&mut self) -> io::Result<()> {
        self.file = None;
        fs::rename(&self.path, &self.target)
            .map_err(|e| with_path(e, "replacing", &self.target))?;
        // From here the temp path is gone; do not try to remove it on drop.
        self.path = PathBuf::new();
        Ok(())
    }
}

/// Files written together, each atomically, with one directory flush per distinct directory.
///
/// [`Batch::stage`] writes each file to a temporary file beside its target; nothing at the
/// targets changes yet. [`Batch::commit`] flushes every staged file (`fsync`, all at once: the
/// file system commits its journal for them together instead of once per file), then, only
/// once all are durable, renames each over its target in staging order, then flushes each
/// distinct directory once (the targets' directories and the parents of directories the batch
/// created; these flushes at once too).
///
/// What a crash (power cut, SIGKILL) leaves:
/// - each target holds its old content (or is absent, if it was) or its whole new content,
///   never a part: a file is renamed only once its data is durable;
/// - the set is not atomic: a crash during the renames, or before the directory flushes
///   returned, can leave any subset of the targets new and the others old. A caller for which
///   the set belongs together records its completion after `commit` returns (first boot
///   records init complete in its state file only after init's batch), so that an interrupted
///   set is recognised and written again; a re-run rewrites only the targets still old;
/// - staged temporary files of a killed writer stay behind as `.<name>.hbtmp.<pid>.<n>`:
///   [`remove_stale_temp_files`] removes them on the next run.
///
/// Dropping a batch without committing removes its temporary files and changes no target.
#[derive(Default)]
pub struct Batch {
    staged: Vec<TempFile>,
    /// Directories to flush at commit: those that gained an entry while staging (new
    /// directories made for a target), in addition to the targets' own.
    dirs: BTreeSet<PathBuf>,
}

/// Why [`Batch::commit`] failed, and at which file.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct CommitError {
    /// The staged file (index in staging order) whose rename failed, or the first one in the
    /// directory whose flush failed. Files before it may already be new.
    pub index: usize,
    /// The I/O error (its message names the path).
    #[source]
    pub source: io::Error,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// How many files are staged.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// True when nothing is staged (a commit then does nothing).
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Stages `data` for `path`: a temporary file beside it, written, with mode and owner set
    /// (flushed at commit). Missing parent directories are made (when `opts` asks for it) and
    /// flushed at commit. On an error nothing of this file is left behind and the batch is
    /// unchanged.
    pub fn stage(&mut self, path: &Path, data: &[u8], opts: &WriteOptions) -> io::Result<()> {
        let dir = parent_dir(path);
        if opts.create_parents {
            create_dir_all_with(&dir, &mut |parent| {
                self.dirs.insert(parent.to_path_buf());
                Ok(())
            })?;
        }
        let mut tmp = TempFile::create(
            path,
            &WriteOptions {
                create_parents: false,
                ..opts.clone()
            },
        )?;
        tmp.fill(|f| f.write_all(data))?;
        self.staged.push(tmp);
        Ok(())
    }

    /// Flushes every staged file, then renames each over its target (in staging order), then
    /// flushes each distinct directory once. Returns the directories flushed. A failed file
    /// flush renames nothing; on a failed rename the files renamed before it are still made
    /// durable (their directories flushed). Temporary files left are removed.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, CommitError> {
        let flushed = all_at_once(self.staged.iter().map(|t| move || t.sync()).collect());
        if let Some((index, source)) = first_error(flushed) {
            return Err(CommitError { index, source });
        }
        let mut failed = None;
        let mut dirs: Vec<(PathBuf, usize)> = Vec::new();
        for (index, tmp) in self.staged.iter_mut().enumerate() {
            if let Err(source) = tmp.rename() {
                failed = Some(CommitError { index, source });
                break;
            }
            let dir = parent_dir(&tmp.target);
            if !dirs.iter().any(|(d, _)| *d == dir) {
                dirs.push((dir, index));
            }
        }
        // New directories' entries in their parents, after the targets' own directories.
        for parent in std::mem::take(&mut self.dirs) {
            if !dirs.iter().any(|(d, _)| *d == parent) {
                dirs.push((parent, 0));
            }
        }
        let results = all_at_once(dirs.iter().map(|(d, _)| move || sync_dir(d)).collect());
        if let Some((i, source)) = first_error(results) {
            return Err(failed.unwrap_or(CommitError {
                index: dirs[i].1,
                source,
            }));
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(dirs.into_iter().map(|(d, _)| d).collect()),
        }
    }
}

/// Most flushes [`all_at_once`] has in flight.
const MAX_CONCURRENT_FLUSHES: usize = 16;

/// Runs `jobs` (flushes: each waits on the disk, not the CPU) on threads, at most
/// [`MAX_CONCURRENT_FLUSHES`] at a time, and returns their results in order. Flushes waiting
/// together let the file system commit once for all of them. One job runs on this thread.
fn all_at_once<F>(jobs: Vec<F>) -> Vec<io::Result<()>>
where
    F: FnOnce() -> io::Result<()> + Send,
{
    if jobs.len() <= 1 {
        return jobs.into_iter().map(|job| job()).collect();
    }
    let mut results = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let wave: Vec<F> = jobs.by_ref().take(MAX_CONCURRENT_FLUSHES).collect();
        std::thread::scope(|scope| {
            let running: Vec<_> = wave.into_iter().map(|job| scope.spawn(job)).collect();
            for handle in running {
                results.push(
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("a flush thread panicked"))),
                );
            }
        });
    }
    results
}

/// The index and error of the first failed result.
fn first_error(results: Vec<io::Result<()>>) -> Option<(usize, io::Error)> {
    results
        .into_iter()
        .enumerate()
        .find_map(|(i, r)| r.err().map(|e| (i, e)))
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

/// Renames `from` over `to` (same file system) durably: both directories are flushed, so the
/// move survives a power cut once this returns.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to).map_err(|e| with_path(e, "replacing", to))?;
    let (a, b) = (parent_dir(from), parent_dir(to));
    sync_dir(&b)?;
    if a != b {
        sync_dir(&a)?;
    }
    Ok(())
}

/// Opens (creating, mode 0600) a lock file for `flock`: never through a symbolic link, not
/// inherited by programs started later. The content is never written.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| with_path(e, "opening the lock", path))
}

/// Creates a directory and its parents with mode 0755, flushing each new entry.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    create_dir_all_with(dir, &mut |parent| sync_dir(parent))
}

/// [`create_dir_all`], handing the parent of each directory it made to `made_in` (which
/// flushes it now, or remembers it for later).
fn create_dir_all_with(
    dir: &Path,
    made_in: &mut dyn FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_with(parent, made_in)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            made_in(&parent_dir(dir))
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
    fn a_batch_writes_every_file_and_flushes_each_directory_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::write(d.join("etc/a"), b"old a").unwrap();
        let mut batch = Batch::new();
        batch
            .stage(&d.join("etc/a"), b"new a", &WriteOptions::public())
            .unwrap();
        batch
            .stage(&d.join("etc/b"), b"new b", &WriteOptions::private())
            .unwrap();
        batch
            .stage(&d.join("etc/new/c"), b"new c", &WriteOptions::public())
            .unwrap();
        batch
            .stage(&d.join("var/lib/d"), b"new d", &WriteOptions::executable())
            .unwrap();
        // Staged, not yet visible.
        assert_eq!(fs::read(d.join("etc/a")).unwrap(), b"old a");
        assert!(!d.join("etc/b").exists());
        assert_eq!(batch.len(), 4);
        let flushed = batch.commit().unwrap();
        for (name, body, mode) in [
            ("etc/a", "new a", 0o644),
            ("etc/b", "new b", 0o600),
            ("etc/new/c", "new c", 0o644),
            ("var/lib/d", "new d", 0o755),
        ] {
            let p = d.join(name);
            assert_eq!(fs::read(&p).unwrap(), body.as_bytes(), "{name}");
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                mode,
                "{name}"
            );
        }
        // The targets' directories, then the parents of the directories made (`d` for var,
        // var for var/lib; etc for etc/new is already flushed): each once.
        assert_eq!(
            flushed,
            vec![
                d.join("etc"),
                d.join("etc/new"),
                d.join("var/lib"),
                d.to_path_buf(),
                d.join("var"),
            ]
        );
        assert_eq!(fs::read_dir(d.join("etc")).unwrap().count(), 3);
    }

    #[test]
    fn a_dropped_batch_changes_nothing_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        fs::write(&p, b"old").unwrap();
        let mut batch = Batch::new();
        batch.stage(&p, b"new", &WriteOptions::public()).unwrap();
        drop(batch);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(Batch::new().commit().unwrap().is_empty());
    }

    #[test]
    fn a_failed_rename_names_its_file_keeps_the_earlier_ones_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A non-empty directory where the second target goes: rename(2) refuses it.
        fs::create_dir_all(d.join("b/inside")).unwrap();
        fs::write(d.join("c"), b"old c").unwrap();
        let mut batch = Batch::new();
        for name in ["a", "b", "c"] {
            batch
                .stage(&d.join(name), b"new", &WriteOptions::public())
                .unwrap();
        }
        let e = batch.commit().unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.to_string().contains("replacing"), "{e}");
        assert!(
            e.to_string().contains(&d.join("b").display().to_string()),
            "{e}"
        );
        assert_eq!(fs::read(d.join("a")).unwrap(), b"new");
        assert_eq!(fs::read(d.join("c")).unwrap(), b"old c");
        let mut names: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
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
