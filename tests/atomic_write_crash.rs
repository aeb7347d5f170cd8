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

// ---------------------------------------------------------------------------
// A batch (init's node files): killed while its files are flushed and at every rename, each
// file is old or new, and a re-run converges. The kill is strace's fault injection (SIGKILL on
// entering a call), so the points are the real syscall sequence's, not timing guesses. strace
// counts calls per thread: the flushes run on threads of their own, each making one call, so
// the flush phase is hit at its first fsync; the renames, all on the main thread, one by one.
// ---------------------------------------------------------------------------

use hybridboot::node::init::write_files;
use hybridboot::node::render::{Effect, FilePhase, RenderedFile};

/// The batch: a file replaced, a new file beside it, one in a directory the batch creates, one
/// in another directory.
const BATCH: [(&str, Option<&str>, &str); 4] = [
    ("/etc/kubernetes/a.conf", Some("OLD a"), "NEW a"),
    ("/etc/kubernetes/b.conf", None, "NEW b"),
    ("/etc/kubernetes/kubelet/c.json", None, "NEW c"),
    ("/var/lib/kubelet/d", Some("OLD d"), "NEW d"),
];

fn batch_files() -> Vec<RenderedFile> {
    BATCH
        .iter()
        .map(|(path, _, new)| RenderedFile {
            phase: FilePhase::Kubelet,
            path: path.into(),
            contents: new.as_bytes().to_vec(),
            mode: 0o644,
            effects: vec![Effect::Kubelet],
        })
        .collect()
}

fn seed_batch_root(root: &Path) {
    for (path, old, _) in BATCH {
        if let Some(old) = old {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, old).unwrap();
        }
    }
}

/// Run by the batch tests under strace (ignored on its own): init's write_files into
/// HB_BATCH_ROOT.
#[test]
#[ignore]
fn helper_batch_write() {
    if let Ok(root) = std::env::var("HB_BATCH_ROOT") {
        write_files(Path::new(&root), &batch_files()).unwrap();
    }
}

/// Runs the helper under strace (paths of descriptors shown with -y), with `inject` (an
/// `-e inject=...` expression) if given; returns the trace and whether the helper was killed.
fn traced_batch(root: &Path, log: &Path, inject: Option<String>) -> (String, bool) {
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=fsync,fdatasync,rename,renameat,renameat2",
    ]);
    if let Some(i) = inject {
        cmd.args(["-e", &i]);
    }
    let status = cmd
        .arg("-o")
        .arg(log)
        .args(crate::util::helper_test_argv(
            "atomic_write_crash::helper_batch_write",
        ))
        .env("HB_BATCH_ROOT", root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("strace runs");
    (std::fs::read_to_string(log).unwrap(), !status.success())
}

/// The calls of a trace under `root`: ("fsync" | "rename", path), in order.
fn calls_under(trace: &str, root: &Path) -> Vec<(String, String)> {
    let root = root.display().to_string();
    let mut out = Vec::new();
    for line in trace.lines() {
        let call = line.split_once(' ').map(|x| x.1.trim()).unwrap_or("");
        let name = call.split('(').next().unwrap_or("");
        let path = if name.starts_with("rename") {
            call.split('"').nth(3).map(str::to_string)
        } else if name == "fsync" || name == "fdatasync" {
            call.split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(p, _)| p.to_string())
        } else {
            None
        };
        if let Some(p) = path.filter(|p| p.starts_with(&root)) {
            let kind = if name.starts_with("rename") {
                "rename"
            } else {
                "fsync"
            };
            out.push((kind.to_string(), p));
        }
    }
    out
}

#[test]
fn a_batch_flushes_every_file_before_any_rename_and_each_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    seed_batch_root(&root);
    let (trace, killed) = traced_batch(&root, &dir.path().join("strace.log"), None);
    assert!(!killed, "{trace}");
    let calls = calls_under(&trace, &root);
    let first_rename = calls.iter().position(|(k, _)| k == "rename").unwrap();
    let last_rename = calls.iter().rposition(|(k, _)| k == "rename").unwrap();
    let file_syncs: Vec<&String> = calls
        .iter()
        .filter(|(k, p)| k == "fsync" && p.contains(".hbtmp."))
        .map(|(_, p)| p)
        .collect();
    let dir_syncs: Vec<&String> = calls
        .iter()
        .filter(|(k, p)| k == "fsync" && !p.contains(".hbtmp."))
        .map(|(_, p)| p)
        .collect();
    // Every file flushed under its temporary name before the first rename; no directory
    // flushed until the last rename.
    assert_eq!(file_syncs.len(), BATCH.len(), "{calls:?}");
    assert!(
        calls[..first_rename]
            .iter()
            .all(|(k, p)| k == "fsync" && p.contains(".hbtmp.")),
        "{calls:?}"
    );
    assert_eq!(last_rename - first_rename + 1, BATCH.len(), "{calls:?}");
    assert!(
        calls[last_rename + 1..]
            .iter()
            .all(|(k, p)| k == "fsync" && !p.contains(".hbtmp.")),
        "{calls:?}"
    );
    // One flush per distinct directory: the targets' three, and the parent of the directory
    // the batch created (etc/kubernetes, already among them).
    let mut distinct = dir_syncs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        dir_syncs.len(),
        "a directory flushed twice: {dir_syncs:?}"
    );
    let want: Vec<String> = [
        "etc/kubernetes",
        "etc/kubernetes/kubelet",
        "var/lib/kubelet",
    ]
    .iter()
    .map(|d| root.join(d).display().to_string())
    .collect();
    let mut got: Vec<String> = dir_syncs.iter().map(|s| s.to_string()).collect();
    got.sort();
    assert_eq!(got, want);
    for (path, _, new) in BATCH {
        assert_eq!(
            std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap(),
            new
        );
    }
}

#[test]
fn a_batch_killed_while_flushing_or_at_any_rename_leaves_old_or_new_files_and_a_rerun_converges() {
    let dir = tempfile::tempdir().unwrap();
    // How many fsync and rename calls an uninterrupted batch makes.
    let reference = dir.path().join("reference");
    seed_batch_root(&reference);
    let (trace, _) = traced_batch(&reference, &dir.path().join("reference.log"), None);
    let calls = calls_under(&trace, &reference);
    let count = |kind: &str| calls.iter().filter(|(k, _)| k == kind).count();
    let (fsyncs, renames) = (count("fsync"), count("rename"));
    assert!(fsyncs >= BATCH.len() && renames == BATCH.len(), "{calls:?}");

    let mut partial_sets = 0;
    let points = std::iter::once(("fsync,fdatasync", 1))
        .chain((1..=renames).map(|k| ("rename,renameat,renameat2", k)));
    for (i, (set, k)) in points.enumerate() {
        let root = dir.path().join(format!("kill{i}"));
        seed_batch_root(&root);
        let inject = format!("inject={set}:signal=KILL:when={k}");
        let (_, killed) = traced_batch(
            &root,
            &dir.path().join(format!("kill{i}.log")),
            Some(inject.clone()),
        );
        assert!(killed, "{inject}: the helper was not killed");
        // Every file old (or absent, if it was) or new, never anything else.
        let mut new_after_kill = Vec::new();
        for (path, old, new) in BATCH {
            let got = std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok();
            assert!(
                got.as_deref() == old || got.as_deref() == Some(new),
                "{inject}: {path} holds {got:?}"
            );
            if got.as_deref() == Some(new) {
                new_after_kill.push(path);
            }
        }
        if !new_after_kill.is_empty() && new_after_kill.len() < BATCH.len() {
            partial_sets += 1;
        }
        // The re-run writes exactly the files still old, leaves no temporary file and ends
        // where an uninterrupted run ends.
        let report = write_files(&root, &batch_files()).unwrap();
        let rewritten: Vec<String> = report
            .changed
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let still_old: Vec<String> = BATCH
            .iter()
            .map(|(p, _, _)| p.to_string())
            .filter(|p| !new_after_kill.contains(&p.as_str()))
            .collect();
        assert_eq!(rewritten, still_old, "{inject}");
        for (path, _, new) in BATCH {
            assert_eq!(
                std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap(),
                new,
                "{inject}"
            );
        }
        let leftovers: Vec<String> = walk(&root)
            .into_iter()
            .filter(|p| p.contains(".hbtmp."))
            .collect();
        assert!(leftovers.is_empty(), "{inject}: {leftovers:?}");
    }
    // Kills between renames leave a partial set (the case the re-run repairs).
    assert!(partial_sets >= BATCH.len() - 2, "{partial_sets}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
