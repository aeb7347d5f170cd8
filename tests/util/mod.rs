//! Shared test harness: run the built binary, start real peers on free loopback ports.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The project's Python venv, which .ci/run (scripts/setup.sh) creates with the test peers and
/// tools (env `HYBRIDBOOT_VENV`, default `$HOME/.cache/hybridboot/venv`).
pub fn venv() -> PathBuf {
    std::env::var_os("HYBRIDBOOT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/hybridboot/venv")
        })
}

/// A program of the venv (`python`, `oelint-adv`, ...), which must exist.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = venv().join("bin").join(name);
    assert!(
        p.exists(),
        "{} missing: create the venv (tests/peers/requirements.txt) as .ci/run does, or set HYBRIDBOOT_VENV",
        p.display()
    );
    p
}

/// The venv's Python.
pub fn python() -> PathBuf {
    venv_bin("python")
}

/// `tests/peers`: the Python peers and their pytest cases.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Path of the `hybridboot` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hybridboot"))
}

/// The flags that make a command under `--root` act as on the node itself: units (re)started
/// through the test's recording service manager, and the credential_process / exec-plugin
/// lines naming this test binary (the `--root` rule would otherwise write none and name
/// `/usr/bin/hybridboot`).
pub fn as_on_the_node() -> Vec<String> {
    vec![
        "--start".into(),
        "--hybridboot-path".into(),
        bin().display().to_string(),
    ]
}

/// `firstboot` of the node image under `root` (its configuration at first boot's default
/// path), acting as on the node ([`as_on_the_node`]).
pub fn firstboot_args(root: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "firstboot".into(),
        "--config-source".into(),
        "file:///etc/hybridboot/config.yaml".into(),
        "--root".into(),
        root.display().to_string(),
    ];
    args.extend(as_on_the_node());
    args
}

/// Result of running the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn failed(&self) -> &Self {
        assert_ne!(
            self.code, 0,
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `hybridboot args...` with extra environment variables, in a clean environment for the
/// variables hybridboot reads.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for v in [
        "HYBRIDBOOT_KEY",
        "HYBRIDBOOT_TCTI",
        "TPM2TOOLS_TCTI",
        "HYBRIDBOOT_PKCS11_PIN",
        "HYBRIDBOOT_PKCS11_LIB",
        "HYBRIDBOOT_TPM_BACKEND",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running hybridboot").into()
}

/// Runs an external tool, panicking with its output if it cannot be started.
pub fn tool(program: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (did .ci/run install it?)"))
        .into()
}

/// The `-----BEGIN PUBLIC KEY-----` block of some output (key commands add `#` comments).
pub fn public_key_block(text: &str) -> String {
    let (begin, end) = ("-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----");
    let start = text
        .find(begin)
        .unwrap_or_else(|| panic!("no public key in {text:?}"));
    let stop = text[start..]
        .find(end)
        .unwrap_or_else(|| panic!("unterminated public key in {text:?}"))
        + start
        + end.len();
    text[start..stop].to_string()
}

/// Checks a CSR file's self-signature with openssl; returns the CSR's public key block.
pub fn verify_csr(csr: &Path) -> String {
    let r = tool(
        "openssl",
        &[
            "req",
            "-in",
            csr.to_str().unwrap(),
            "-verify",
            "-noout",
            "-pubkey",
        ],
        &[],
    );
    assert_eq!(
        r.code, 0,
        "openssl rejected the CSR: {}{}",
        r.stdout, r.stderr
    );
    public_key_block(&r.stdout)
}

/// The command line that runs one `#[ignore]`d helper test of this test binary alone in a child
/// process, for a test that needs a process of its own (to be traced, crashed, counted or
/// measured). `name` is the helper's path in the crate, e.g. `aws_pure::cache_child_process`.
pub fn helper_test_argv(name: &str) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's own path");
    [
        exe.to_str().expect("a UTF-8 path to the test binary"),
        name,
        "--exact",
        "--ignored",
        "--test-threads=1",
    ]
    .map(String::from)
    .to_vec()
}

/// [`helper_test_argv`] as a [`Command`], to add arguments, environment or pipes to.
pub fn helper_test(name: &str) -> Command {
    let argv = helper_test_argv(name);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// Peak resident set of this process so far (kB), from /proc. Measure in a child process of its
/// own ([`helper_test`]): the test binary runs every topic's tests in one process.
pub fn peak_rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Runs the ignored helper test `name` in a process of its own (with `env`), prints its stderr,
/// and checks it succeeded and printed `marker` (a helper filtered out would pass silently).
pub fn run_helper_checked(name: &str, env: &[(&str, &std::ffi::OsStr)], marker: &str) {
    let r: Run = helper_test(name)
        .arg("--nocapture")
        .envs(env.iter().copied())
        .output()
        .expect("running the test binary")
        .into();
    eprintln!("{}", r.stderr);
    r.ok();
    assert!(
        r.stdout.contains(marker),
        "the helper {name} did not run: {}",
        r.stdout
    );
}

/// A free TCP port on 127.0.0.1 (bound then released; callers retry on a race).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lists the entries of a directory (names), for "no file left behind" checks.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
/// Sends SIGTERM to `pid`, a process this test started and has not reaped (so the PID is still
/// its own): the one place the tests signal a process by PID.
pub fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) touches no memory of ours; the PID belongs to our unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A background process (`hybridboot serve`, `update`), stopped by PID (SIGTERM) and reaped on
/// drop.
pub struct Background(pub std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        terminate(self.0.id());
        let _ = self.0.wait();
    }
}

/// IMDSv2's first step against `hybridboot serve` on `port`: `PUT /latest/api/token` must
/// answer 200 with the session token, which is returned.
pub fn imds_token(port: u16) -> String {
    let (status, token) = imds(
        port,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    assert_eq!(status, 200, "PUT /latest/api/token: {token}");
    token
}

/// One HTTP/1.1 exchange with `hybridboot serve` (the IMDS emulator) on 127.0.0.1: the status
/// and the body.
pub fn imds(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

pub mod config;
pub mod mirror;
pub mod openbao;
pub mod openbao_cluster;
pub mod peers;
pub mod softhsm;
pub mod swtpm;
pub mod x509;

/// A stand-in for `systemctl` (point `HYBRIDBOOT_SYSTEMCTL` at the first path) that appends
/// each call's arguments as one line to the second path; with `fail`, it exits 1 instead.
pub fn systemctl_recorder(dir: &Path, fail: bool) -> (PathBuf, PathBuf) {
    let script = dir.join(if fail {
        "systemctl-fail.sh"
    } else {
        "systemctl.sh"
    });
    let calls = dir.join("systemctl.calls");
    let body = if fail {
        "echo \"Failed to disable unit: Access denied\" >&2\nexit 1\n".to_string()
    } else {
        format!("echo \"$*\" >> {}\n", calls.display())
    };
    std::fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, calls)
}
