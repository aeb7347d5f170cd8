//! Safe extraction of the CNI plugins tarball (`cni-plugins-linux-<arch>-<ver>.tgz`) into
//! `/opt/cni/bin`.
//!
//! The tarball is already SHA-256 verified when it gets here, but the checksum only proves it is
//! the file the mirror published; extraction still trusts nothing in it. The official tarball
//! is flat (`./bridge`, `./LICENSE`...), so only regular files at the top level are accepted:
//! no `..`, no absolute paths, no nested directories, no symlinks or hard links (which could
//! point outside the target), no devices or FIFOs, no setuid bits, and size caps. The whole
//! archive is checked before the first file is written, so a bad tarball changes nothing.
//!
//! Memory stays bounded whatever the archive says: the decompressed stream as a whole is capped
//! ([`Limits::stream_cap`]), and the extension headers (GNU long names, PAX records), which a
//! tar reader holds in memory, are read here, each at most [`MAX_EXTENSION_BYTES`], instead of
//! by the `tar` crate (which reads them whole before any cap applies). A PAX record that would
//! change an entry's size or link target is refused (the official tarball has none), so every
//! pass frames the archive the same way.

use crate::error::{Class, Classify};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsutil::{self, WriteOptions};

/// Limits applied to a tarball.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Largest sum of all files.
    pub max_total_bytes: u64,
    /// Most entries.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 * 1024 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
            max_entries: 512,
        }
    }
}

/// Why a tarball was refused.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI tarball entry {0:?} escapes the target directory or is absolute")]
    Traversal(String),
    #[error("CNI tarball entry {0:?} is nested; the plugins tarball must be flat")]
    Nested(String),
    #[error("CNI tarball entry {0:?} is a {1}; only regular files are accepted")]
    NotRegular(String, &'static str),
    #[error("CNI tarball entry {0:?} is {1} bytes, over the {2}-byte limit")]
    TooLarge(String, u64, u64),
    #[error("CNI tarball exceeds {0}")]
    Limit(String),
    #[error("CNI tarball entry {0:?} is not a usable file name: {1}")]
    BadName(String, &'static str),
    #[error("CNI tarball has the same file {0:?} twice")]
    Duplicate(String),
    #[error("CNI tarball is not a readable gzip'd tar archive: {0}")]
    Corrupt(io::Error),
    #[error("writing {0}: {1}")]
    Write(PathBuf, io::Error),
}

impl Classify for CniError {
    /// A refused or unreadable tarball, or a target that cannot be written, needs an operator.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// One file extracted (or to extract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name inside the target directory.
    pub name: String,
    /// Permission bits (setuid/setgid/sticky removed).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
}

/// Largest GNU long-name or PAX extension header accepted (the plugins' names are short).
pub const MAX_EXTENSION_BYTES: u64 = 4096;

impl Limits {
    /// Most decompressed bytes read from a tarball: the files, plus a header, an extension
    /// header and padding per entry, plus the end-of-archive blocks.
    pub fn stream_cap(&self) -> u64 {
        let per_entry = 512 + MAX_EXTENSION_BYTES + 2 * 512;
        self.max_total_bytes
            .saturating_add(per_entry.saturating_mul(self.max_entries as u64))
            .saturating_add(64 * 1024)
    }
}

/// A reader that fails once more than `left` bytes have come through.
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more means the cap is exceeded; none means the stream just ended.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "its decompressed content exceeds {} bytes",
                    self.cap
                ))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

type TarEntry<'a, R> = tar::Entry<'a, Capped<flate2::read::GzDecoder<R>>>;

/// Walks the archive's entries in raw mode, reading the extension headers here (bounded) and
/// calling `each` with every other entry and its name (a GNU long name or PAX `path` when one
/// precedes it, else the header's own). Counts every header, extensions included, against
/// `max_entries`.
fn walk<R: Read>(
    tgz: R,
    limits: &Limits,
    mut each: impl FnMut(String, &mut TarEntry<'_, R>) -> Result<(), CniError>,
) -> Result<(), CniError> {
    let cap = limits.stream_cap();
    let mut archive = tar::Archive::new(Capped {
        inner: flate2::read::GzDecoder::new(tgz),
        left: cap,
        cap,
    });
    let mut long_name: Option<Vec<u8>> = None;
    let entries = archive.entries().map_err(CniError::Corrupt)?.raw(true);
    for (n, entry) in entries.enumerate() {
        if n >= limits.max_entries {
            return Err(CniError::Limit(format!("{} entries", limits.max_entries)));
        }
        let mut entry = entry.map_err(CniError::Corrupt)?;
        let kind = entry.header().entry_type();
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if !extension {
            let raw = match long_name.take() {
                Some(name) => name,
                None => entry.path_bytes().into_owned(),
            };
            each(String::from_utf8_lossy(&raw).into_owned(), &mut entry)?;
            continue;
        }
        let size = entry.header().entry_size().map_err(CniError::Corrupt)?;
        if size > MAX_EXTENSION_BYTES {
            return Err(CniError::Limit(format!(
                "{MAX_EXTENSION_BYTES} bytes in an extension header ({} of {size} bytes)",
                if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                    "a GNU long name"
                } else {
                    "PAX records"
                }
            )));
        }
        if kind.is_gnu_longlink() {
            return Err(CniError::NotRegular(
                "(GNU long link name)".into(),
                "link target",
            ));
        }
        let mut data = Vec::new();
        (&mut entry)
            .take(MAX_EXTENSION_BYTES)
            .read_to_end(&mut data)
            .map_err(CniError::Corrupt)?;
        if kind.is_gnu_longname() {
            if long_name.is_some() {
                return Err(CniError::Corrupt(io::Error::other(
                    "two long names for one entry",
                )));
            }
            // GNU tar ends the name with one NUL; any other NUL is refused by `flat_name`.
            if data.last() == Some(&0) {
                data.pop();
            }
            long_name = Some(data);
            continue;
        }
        for record in tar::PaxExtensions::new(&data) {
            let record = record.map_err(CniError::Corrupt)?;
            let key = String::from_utf8_lossy(record.key_bytes()).into_owned();
            match key.as_str() {
                "path" if kind.is_pax_local_extensions() => {
                    if long_name.is_some() {
                        return Err(CniError::Corrupt(io::Error::other(
                            "two long names for one entry",
                        )));
                    }
                    long_name = Some(record.value_bytes().to_vec());
                }
                "mtime" | "atime" | "ctime" | "uid" | "gid" | "uname" | "gname" | "comment" => {}
                _ if key.starts_with("SCHILY.") || key.starts_with("LIBARCHIVE.") => {}
                _ => {
                    return Err(CniError::Corrupt(io::Error::other(format!(
                        "a PAX header sets {key:?}, which this extractor does not accept"
                    ))))
                }
            }
        }
    }
    Ok(())
}

/// Checks every entry of a gzip'd tarball without writing anything; returns the files to place.
pub fn plan(tgz: impl Read, limits: &Limits) -> Result<Vec<Entry>, CniError> {
    let mut out: Vec<Entry> = Vec::new();
    let mut total = 0u64;
    walk(tgz, limits, |raw, entry| {
        let header = entry.header();
        let name = match flat_name(&raw)? {
            Some(name) => name,
            None => {
                // `./` itself: the directory we extract into.
                if header.entry_type().is_dir() {
                    return Ok(());
                }
                return Err(CniError::Traversal(raw));
            }
        };
        let kind = header.entry_type();
        if kind.is_dir() {
            return Err(CniError::Nested(raw));
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(CniError::NotRegular(raw, kind_name(kind)));
        }
        let size = entry.size();
        if size > limits.max_file_bytes {
            return Err(CniError::TooLarge(raw, size, limits.max_file_bytes));
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(CniError::Limit(format!(
                "{} bytes in total",
                limits.max_total_bytes
            )));
        }
        if out.iter().any(|e| e.name == name) {
            return Err(CniError::Duplicate(name));
        }
        let mode = header.mode().map_err(CniError::Corrupt)? & 0o755;
        out.push(Entry { name, mode, size });
        Ok(())
    })?;
    Ok(out)
}

/// Extracts a tarball that [`plan`] accepted into `dir`, each file atomically with its mode.
/// Returns each placed file with its SHA-256.
pub fn extract(
    tgz: impl Read,
    dir: &Path,
    limits: &Limits,
) -> Result<Vec<(PathBuf, [u8; 32])>, CniError> {
    let mut placed = Vec::new();
    walk(tgz, limits, |raw, entry| {
        let Some(name) = flat_name(&raw)? else {
            return Ok(());
        };
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(CniError::NotRegular(raw, kind_name(kind)));
        }
        let mode = entry.header().mode().map_err(CniError::Corrupt)? & 0o755;
        let target = dir.join(&name);
        let mut hasher = Sha256::new();
        let max = limits.max_file_bytes;
        fsutil::atomic_write_with(&target, &WriteOptions::public().with_mode(mode), |f| {
            let mut limited = (&mut *entry).take(max + 1);
            let mut buf = vec![0u8; 64 * 1024];
            let mut n_total = 0u64;
            loop {
                let n = limited.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                n_total += n as u64;
                if n_total > max {
                    return Err(io::Error::other(format!("{name} is over {max} bytes")));
                }
                hasher.update(&buf[..n]);
                io::Write::write_all(f, &buf[..n])?;
            }
            Ok(())
        })
        .map_err(|e| CniError::Write(target.clone(), e))?;
        placed.push((target, hasher.finalize().into()));
        Ok(())
    })?;
    Ok(placed)
}

/// Longest file name accepted: the plugins have short names, and the temporary file written
/// beside each (`.<name>.hbtmp.<pid>.<n>`) must stay within the file system's 255 bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The single file name an entry path denotes: `./bridge` and `bridge` are `bridge`; `./` and
/// `.` are `None`; anything with `..`, a root, or more than one name is an error, and so is a
/// name no file can have (a NUL byte, which GNU long names and PAX paths can carry) or an
/// overlong one: `plan` must refuse what `extract` could not write.
fn flat_name(raw: &str) -> Result<Option<String>, CniError> {
    if raw.contains('\0') {
        return Err(CniError::BadName(raw.to_string(), "it contains a NUL byte"));
    }
    let mut names = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => names.push(n.to_string_lossy().into_owned()),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(CniError::Traversal(raw.to_string()))
            }
        }
    }
    match names.len() {
        0 => Ok(None),
        1 if names[0].len() > MAX_NAME_BYTES => {
            Err(CniError::BadName(raw.to_string(), "longer than 128 bytes"))
        }
        1 => Ok(names.pop()),
        _ => Err(CniError::Nested(raw.to_string())),
    }
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::Directory => "directory",
        _ => "special entry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a .tgz from raw headers, so paths the `tar` builder would refuse can be written.
    fn tgz(entries: &[(&str, tar::EntryType, &[u8], u32)]) -> Vec<u8> {
        let mut tar_bytes = Vec::new();
        for (path, kind, data, mode) in entries {
            let mut h = tar::Header::new_old();
            // Write the name bytes directly: set_path rejects `..` and absolute paths.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            tar_bytes.extend_from_slice(h.as_bytes());
            tar_bytes.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            tar_bytes.extend(std::iter::repeat_n(0u8, pad));
        }
        tar_bytes.extend([0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        gz.finish().unwrap()
    }

    use tar::EntryType as T;

    #[test]
    fn extracts_a_flat_tarball_with_modes() {
        let data = tgz(&[
            ("./", T::Directory, b"", 0o755),
            ("./bridge", T::Regular, b"#!bridge", 0o4755),
            ("LICENSE", T::Regular, b"text", 0o644),
        ]);
        let plan = plan(&data[..], &Limits::default()).unwrap();
        assert_eq!(
            plan,
            vec![
                Entry {
                    name: "bridge".into(),
                    mode: 0o755,
                    size: 8
                },
                Entry {
                    name: "LICENSE".into(),
                    mode: 0o644,
                    size: 4
                },
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let placed = extract(&data[..], dir.path(), &Limits::default()).unwrap();
        assert_eq!(placed.len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("bridge")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "setuid stripped");
        assert_eq!(
            std::fs::read(dir.path().join("bridge")).unwrap(),
            b"#!bridge"
        );
        assert_eq!(placed[0].1, <[u8; 32]>::from(Sha256::digest(b"#!bridge")));
    }

    #[test]
    fn refuses_traversal_absolute_nested_links_and_devices() {
        type Check = fn(&CniError) -> bool;
        let cases: Vec<(&str, T, Check)> = vec![
            ("../evil", T::Regular, |e| {
                matches!(e, CniError::Traversal(_))
            }),
            ("./../../etc/cron.d/x", T::Regular, |e| {
                matches!(e, CniError::Traversal(_))
            }),
            ("/etc/passwd", T::Regular, |e| {
                matches!(e, CniError::Traversal(_))
            }),
            ("sub/../../x", T::Regular, |e| {
                matches!(e, CniError::Traversal(_))
            }),
            ("sub/file", T::Regular, |e| matches!(e, CniError::Nested(_))),
            ("sub", T::Directory, |e| matches!(e, CniError::Nested(_))),
            ("link", T::Symlink, |e| {
                matches!(e, CniError::NotRegular(_, "symbolic link"))
            }),
            ("hard", T::Link, |e| {
                matches!(e, CniError::NotRegular(_, "hard link"))
            }),
            ("null", T::Char, |e| {
                matches!(e, CniError::NotRegular(_, "character device"))
            }),
            ("sda", T::Block, |e| {
                matches!(e, CniError::NotRegular(_, "block device"))
            }),
            ("fifo", T::Fifo, |e| {
                matches!(e, CniError::NotRegular(_, "FIFO"))
            }),
        ];
        for (path, kind, check) in cases {
            // The bad entry comes after a good one: nothing at all may be written.
            let data = tgz(&[
                ("./bridge", T::Regular, b"ok", 0o755),
                (path, kind, b"x", 0o755),
            ]);
            let err = plan(&data[..], &Limits::default()).unwrap_err();
            assert!(check(&err), "{path}: {err}");
            assert!(err.to_string().contains(path), "{err}");
        }
    }

    /// A GNU long-name (`L`) entry carrying `name` for the regular file that follows.
    fn gnu_long_name(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut tar_bytes = Vec::new();
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(T::GNULongName);
        h.set_size(name.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar_bytes.extend_from_slice(h.as_bytes());
        tar_bytes.extend_from_slice(name);
        tar_bytes.extend(std::iter::repeat_n(0u8, (512 - name.len() % 512) % 512));
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"short");
        h.set_entry_type(T::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        tar_bytes.extend_from_slice(h.as_bytes());
        tar_bytes.extend_from_slice(data);
        tar_bytes.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        tar_bytes.extend([0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn refuses_names_no_file_can_have_before_writing_anything() {
        // Found by the cni_tarball fuzzer: plan accepted a long name with a NUL in it, extract
        // then failed after writing the files before it.
        let dir = tempfile::tempdir().unwrap();
        let nul = gnu_long_name(b"./bridge\0x", b"x");
        assert!(matches!(
            plan(&nul[..], &Limits::default()),
            Err(CniError::BadName(_, "it contains a NUL byte"))
        ));
        assert!(extract(&nul[..], dir.path(), &Limits::default()).is_err());
        let long = gnu_long_name("l".repeat(129).as_bytes(), b"x");
        assert!(matches!(
            plan(&long[..], &Limits::default()),
            Err(CniError::BadName(_, "longer than 128 bytes"))
        ));
        assert!(dir_names(dir.path()).is_empty(), "nothing written");
        // 128 bytes is fine (the GNU long name is what the tar crate reads).
        let ok = gnu_long_name("l".repeat(128).as_bytes(), b"x");
        let planned = plan(&ok[..], &Limits::default()).unwrap();
        assert_eq!(planned[0].name.len(), 128);
        extract(&ok[..], dir.path(), &Limits::default()).unwrap();
        assert_eq!(dir_names(dir.path()), vec!["l".repeat(128)]);
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn enforces_limits_and_duplicates() {
        let data = tgz(&[("a", T::Regular, &[0u8; 100], 0o755)]);
        let small = Limits {
            max_file_bytes: 99,
            ..Limits::default()
        };
        assert!(matches!(
            plan(&data[..], &small),
            Err(CniError::TooLarge(_, 100, 99))
        ));
        let data = tgz(&[
            ("a", T::Regular, &[0u8; 60], 0o755),
            ("b", T::Regular, &[0u8; 60], 0o755),
        ]);
        let total = Limits {
            max_total_bytes: 100,
            ..Limits::default()
        };
        assert!(matches!(plan(&data[..], &total), Err(CniError::Limit(_))));
        let few = Limits {
            max_entries: 1,
            ..Limits::default()
        };
        assert!(matches!(plan(&data[..], &few), Err(CniError::Limit(_))));
        let dup = tgz(&[
            ("a", T::Regular, b"1", 0o755),
            ("./a", T::Regular, b"2", 0o755),
        ]);
        assert!(matches!(
            plan(&dup[..], &Limits::default()),
            Err(CniError::Duplicate(_))
        ));
        assert!(matches!(
            plan(&b"not gzip"[..], &Limits::default()),
            Err(CniError::Corrupt(_))
        ));
    }
}
