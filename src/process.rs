//! Running a helper program (a `credential_process`, `kubelet --version`) with a deadline and a
//! cap on what is read from it: a hung or chatty child must not hang or exhaust hybridboot.

use crate::error::{Class, Classify};
use std::io::{self, Read as _};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// What a child program may see of hybridboot's environment. hybridboot's own environment can
/// hold secrets (`VAULT_TOKEN`, `HYBRIDBOOT_PKCS11_PIN`, AWS keys): a child gets only the
/// variables its kind needs, never the whole environment by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnv {
    /// A local system tool (`systemctl`, `timedatectl`, `kubelet --version`): the search path,
    /// locale, time zone and temporary directory, nothing else.
    System,
    /// A tool that reaches the network (`ctr pull`): [`ChildEnv::System`] plus the proxy
    /// variables.
    Network,
    /// A `credential_process` the operator's AWS config names: what an AWS SDK gives it (the
    /// program is the operator's own credential source and may need any of its settings, e.g.
    /// a hybridboot credential helper's `HYBRIDBOOT_TCTI`), except Vault's variables, which no
    /// AWS credential source needs.
    CredentialProcess,
}

/// Variables every child gets (when set): where programs are, and how to speak.
const SYSTEM_VARS: &[&str] = &["PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR"];
/// Prefixes of variables every child gets (locale categories).
const SYSTEM_PREFIXES: &[&str] = &["LC_"];
/// The proxy variables, both spellings.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Whether a child of kind `kind` gets the variable `name`.
pub fn passes(kind: ChildEnv, name: &str) -> bool {
    let system = SYSTEM_VARS.contains(&name) || SYSTEM_PREFIXES.iter().any(|p| name.starts_with(p));
    match kind {
        ChildEnv::System => system,
        ChildEnv::Network => system || PROXY_VARS.contains(&name),
        ChildEnv::CredentialProcess => !name.starts_with("VAULT_") && !name.starts_with("BAO_"),
    }
}

/// A [`Command`] for `program` whose environment is only what a child of kind `kind` needs
/// (see [`ChildEnv`]). Every child hybridboot starts is made here.
pub fn command(program: impl AsRef<std::ffi::OsStr>, kind: ChildEnv) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| passes(kind, n)) {
            cmd.env(name, value);
        }
    }
    cmd
}

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
    let deadline = crate::time::instant_after(Instant::now(), timeout);
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
/// The handler only writes to a pipe; one thread reads it and exits.
pub fn exit_zero_on_termination(what: &'static str) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                log::info!("{what}: stopping on {name}");
            }
            std::process::exit(0);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_only_what_their_kind_needs() {
        for secret in [
            "VAULT_TOKEN",
            "HYBRIDBOOT_PKCS11_PIN",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(!passes(ChildEnv::System, secret), "{secret}");
            assert!(!passes(ChildEnv::Network, secret), "{secret}");
        }
        assert!(!passes(ChildEnv::CredentialProcess, "VAULT_TOKEN"));
        assert!(passes(ChildEnv::CredentialProcess, "AWS_PROFILE"));
        for kind in [ChildEnv::System, ChildEnv::Network] {
            assert!(passes(kind, "PATH") && passes(kind, "LC_ALL"));
        }
        assert!(!passes(ChildEnv::System, "HTTPS_PROXY"));
        assert!(passes(ChildEnv::Network, "HTTPS_PROXY") && passes(ChildEnv::Network, "no_proxy"));
    }

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
