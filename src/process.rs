//! Running a helper program (a `credential_process`, `kubelet --version`) with a deadline and a
//! cap on what is read from it: a hung or chatty child must not hang or exhaust hybridboot.

use crate::error::{Class, Classify};
use std::io::{self, Read as _};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// What a finished child left.
pub struct Captured {
    pub status: ExitStatus,
    /// At most `max_stdout + 1` bytes (more than `max_stdout` means it printed too much);
    /// zeroized on drop, as it may be credentials.
    pub stdout: Zeroizing<Vec<u8>>,
    /// At most 64 KiB.
    pub stderr: Vec<u8>,
}

/// Why a child did not finish normally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Start { program: String, source: io::Error },
    #[error("did not finish within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("waiting for it failed: {0}")]
    Wait(io::Error),
}

impl Classify for RunError {
    /// A program that cannot start is classed by why (missing: operator); one that hangs may
    /// finish another time; a failed wait is unexpected.
    fn class(&self) -> Class {
        match self {
            RunError::Start { source, .. } => crate::error::io_class(source.kind()),
            RunError::Timeout(_) => Class::Transient,
            RunError::Wait(_) => Class::Bug,
        }
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr piped and read on threads so a full pipe cannot
/// block the child) and kills it after `timeout`.
pub fn output_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
    max_stdout: usize,
) -> Result<Captured, RunError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RunError::Start {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let _ = (&mut stdout)
            .take(max_stdout as u64 + 1)
            .read_to_end(&mut buf);
        // Drain the rest so the child does not block; discard it.
        let _ = io::copy(&mut stdout, &mut io::sink());
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
        let _ = io::copy(&mut stderr, &mut io::sink());
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout(timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Wait(e));
            }
        }
    };
    Ok(Captured {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Ends the process with exit code 0 on SIGTERM or SIGINT (a long-running command stopped by
/// systemd or Ctrl-C is a clean stop, not a failure; aws_signing_helper's `serve` exits 0).
/// Call it before any other thread starts: the signals are blocked in this thread, every thread
/// started later inherits the mask, and one thread waits for them.
pub fn exit_zero_on_termination(what: &'static str) -> io::Result<()> {
    // SAFETY: sigset_t is plain data that sigemptyset initialises; the pointers are to locals
    // that outlive the calls.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` was initialised above; `signal` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc == 0 {
                log::info!(
                    "{what}: stopping on {}",
                    if signal == libc::SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    }
                );
            }
            std::process::exit(0);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_a_hung_child_is_killed() {
        let c = output_with_timeout(
            Command::new("sh").args(["-c", "head -c 100000 /dev/zero; echo oops >&2"]),
            Duration::from_secs(20),
            1000,
        )
        .unwrap();
        assert!(c.status.success());
        assert_eq!(c.stdout.len(), 1001, "one byte over the cap marks too much");
        assert_eq!(c.stderr, b"oops\n");
        let e = output_with_timeout(
            Command::new("sleep").arg("30"),
            Duration::from_millis(200),
            10,
        )
        .err()
        .unwrap();
        assert!(matches!(e, RunError::Timeout(_)), "{e}");
        assert!(matches!(
            output_with_timeout(
                &mut Command::new("/nonexistent/x"),
                Duration::from_secs(1),
                1
            ),
            Err(RunError::Start { .. })
        ));
    }
}
