//! Atomic-write crash consistency. The real syscall sequence of `fsutil::atomic_write` is
//! recorded with strace (so the model cannot drift from the code), then replayed in a model of a
//! file system with a volatile cache: after a crash at every syscall boundary, each operation not
//! yet made durable by an fsync may or may not have reached the disk (every subset is tried).
//! The target must then hold the old content or the whole new content, never anything else.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use hybridboot::fsutil::{atomic_write, WriteOptions};

/// Run by the recording test under strace (ignored on its own).
#[test]
#[ignore]
fn helper_atomic_write() {
    if let Ok(target) = std::env::var("HB_ATOMIC_TARGET") {
        atomic_write(Path::new(&target), b"NEW CONTENT", &WriteOptions::private()).unwrap();
    }
}

/// One file-system operation, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Create(String),
    Write(String, usize),
    FsyncFile(String),
    Rename(String, String),
    FsyncDir,
}

fn record(dir: &Path) -> Vec<Op> {
    let target = dir.join("target.conf");
    std::fs::write(&target, b"OLD").unwrap();
    let log = dir.join("strace.log");
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,write,fsync,fdatasync,rename,renameat,renameat2,close",
            "-o",
        ])
        .arg(&log)
        .args(crate::util::helper_test_argv(
            "atomic_write_crash::helper_atomic_write",
        ))
        .env("HB_ATOMIC_TARGET", &target)
        .status()
        .expect("strace runs");
    assert!(status.success());
    assert_eq!(std::fs::read(&target).unwrap(), b"NEW CONTENT");
    let text = std::fs::read_to_string(&log).unwrap();
    let dir_s = dir.display().to_string();
    let mut fds: BTreeMap<String, String> = BTreeMap::new();
    let mut ops = Vec::new();
    for line in text.lines() {
        let call = line.split_once(' ').map(|x| x.1.trim()).unwrap_or("");
        let ret = call.rsplit_once("= ").map(|x| x.1.trim()).unwrap_or("");
        let quoted: Vec<&str> = call.split('"').skip(1).step_by(2).collect();
        if call.starts_with("openat(") && quoted.first().is_some_and(|p| p.starts_with(&dir_s)) {
            let name = quoted[0]
                .trim_start_matches(&dir_s)
                .trim_start_matches('/')
                .to_string();
            let fd = ret.split(' ').next().unwrap().to_string();
            if call.contains("O_CREAT") {
                ops.push(Op::Create(name.clone()));
            }
            fds.insert(fd, name);
        } else if let Some(rest) = call.strip_prefix("write(") {
            let fd = rest.split(',').next().unwrap();
            if let Some(name) = fds.get(fd) {
                ops.push(Op::Write(name.clone(), ret.parse().unwrap()));
            }
        } else if let Some(rest) = call
            .strip_prefix("fsync(")
            .or(call.strip_prefix("fdatasync("))
        {
            let fd = rest.split(')').next().unwrap();
            match fds.get(fd) {
                Some(name) if name.is_empty() => ops.push(Op::FsyncDir),
                Some(name) => ops.push(Op::FsyncFile(name.clone())),
                None => {}
            }
        } else if call.starts_with("rename") && quoted.len() == 2 && quoted[1].starts_with(&dir_s) {
            let n = |p: &str| {
                p.trim_start_matches(&dir_s)
                    .trim_start_matches('/')
                    .to_string()
            };
            ops.push(Op::Rename(n(quoted[0]), n(quoted[1])));
        } else if let Some(rest) = call.strip_prefix("close(") {
            fds.remove(rest.split(')').next().unwrap());
        }
    }
    ops
}

/// Disk state: names -> inode, inode -> bytes.
#[derive(Clone, Debug)]
struct Disk {
    names: BTreeMap<String, usize>,
    data: Vec<Vec<u8>>,
}

/// Applies `ops[..=i]` for the durable ones and the chosen subset of the rest.
fn crash_state(ops: &[Op], upto: usize, persisted: u64, content: &[u8]) -> Disk {
    let mut disk = Disk {
        names: [("target.conf".to_string(), 0)].into(),
        data: vec![b"OLD".to_vec()],
    };
    // An op is durable if a later fsync (of its file, or of the directory for names) before
    // the crash covers it; otherwise it persisted only if its bit in `persisted` is set.
    let durable = |k: usize| -> bool {
        let later = &ops[k + 1..upto];
        match &ops[k] {
            Op::Write(f, _) => later.iter().any(|o| *o == Op::FsyncFile(f.clone())),
            Op::Create(_) | Op::Rename(..) => later.contains(&Op::FsyncDir),
            Op::FsyncFile(_) | Op::FsyncDir => true,
        }
    };
    let mut inode_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut written: BTreeMap<usize, usize> = BTreeMap::new();
    for (k, op) in ops[..upto].iter().enumerate() {
        let happened = durable(k) || persisted & (1 << k) != 0;
        match op {
            Op::Create(n) => {
                disk.data.push(Vec::new());
                let ino = disk.data.len() - 1;
                inode_of.insert(n.clone(), ino);
                if happened {
                    disk.names.insert(n.clone(), ino);
                }
            }
            Op::Write(n, len) => {
                let ino = inode_of[n];
                let off = *written.get(&ino).unwrap_or(&0);
                written.insert(ino, off + len);
                if happened {
                    // Data reaches the inode whether or not the name did.
                    let d = &mut disk.data[ino];
                    d.resize(off.max(d.len()), 0);
                    d.extend_from_slice(&content[off..off + len]);
                }
            }
            Op::Rename(from, to) => {
                if happened {
                    let ino = inode_of[from];
                    disk.names.remove(from);
                    disk.names.insert(to.clone(), ino);
                }
            }
            Op::FsyncFile(_) | Op::FsyncDir => {}
        }
    }
    disk
}

#[test]
fn a_crash_at_any_syscall_boundary_leaves_old_or_new_content() {
    let dir = tempfile::tempdir().unwrap();
    let ops = record(dir.path());
    eprintln!("recorded: {ops:?}");
    // The sequence the model relies on: create, write, fsync file, rename, fsync directory.
    assert!(matches!(ops.first(), Some(Op::Create(_))), "{ops:?}");
    assert!(
        ops.iter().any(|o| matches!(o, Op::FsyncFile(_))),
        "no fsync of the file: {ops:?}"
    );
    assert!(
        matches!(ops.last(), Some(Op::FsyncDir)),
        "directory not synced last: {ops:?}"
    );
    assert!(ops.len() < 16);
    let new = b"NEW CONTENT";
    for upto in 0..=ops.len() {
        for persisted in 0..(1u64 << upto) {
            let disk = crash_state(&ops, upto, persisted, new);
            let got = &disk.data[disk.names["target.conf"]];
            assert!(
                got == b"OLD" || got == new,
                "crash after {upto} ops {:?} with persisted mask {persisted:b}: target holds {:?}",
                &ops[..upto],
                String::from_utf8_lossy(got)
            );
        }
        // Once the directory fsync returned, the new content is durable whatever was lost.
        if upto == ops.len() {
            let disk = crash_state(&ops, upto, 0, new);
            assert_eq!(&disk.data[disk.names["target.conf"]], new);
        }
    }
}

#[test]
fn the_model_catches_a_rename_before_fsync() {
    // The same checker rejects the classic bug (rename without fsync of the data first).
    let ops = vec![
        Op::Create("t".into()),
        Op::Write("t".into(), 11),
        Op::Rename("t".into(), "target.conf".into()),
        Op::FsyncDir,
    ];
    let disk = crash_state(&ops, 4, 0, b"NEW CONTENT");
    assert_eq!(disk.data[disk.names["target.conf"]], b"");
}
