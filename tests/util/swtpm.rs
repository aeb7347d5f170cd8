//! A private swtpm per test: fresh state in a tempdir, TCP on free loopback ports, killed by PID
//! on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A running swtpm (TPM 2.0) serving one test.
pub struct Swtpm {
    /// Keeps the state directory alive as long as the TPM.
    _state: tempfile::TempDir,
    pid: u32,
    /// The data port; the control port is `port + 1`.
    pub port: u16,
}

impl Swtpm {
    /// Starts swtpm on free ports, retrying with other ports if a bind races another test.
    pub fn start() -> Swtpm {
        let mut last_error = String::new();
        for _ in 0..10 {
            let state = tempfile::tempdir().unwrap();
            let port = super::free_port();
            if std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
                continue;
            }
            let pid_file: PathBuf = state.path().join("swtpm.pid");
            let tpmstate = format!("dir={}", state.path().display());
            let server = format!("type=tcp,port={port},bindaddr=127.0.0.1");
            let ctrl = format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1);
            let pid_arg = format!("file={}", pid_file.display());
            let out = Command::new("swtpm")
                .args([
                    "socket",
                    "--tpm2",
                    "--tpmstate",
                    &tpmstate,
                    "--server",
                    &server,
                    "--ctrl",
                    &ctrl,
                    "--flags",
                    "not-need-init,startup-clear",
                    "--daemon",
                    "--pid",
                    &pid_arg,
                ])
                .output()
                .unwrap_or_else(|e| panic!("cannot run swtpm: {e} (install swtpm swtpm-tools)"));
            if !out.status.success() {
                last_error = String::from_utf8_lossy(&out.stderr).into_owned();
                continue;
            }
            let pid: u32 = match std::fs::read_to_string(&pid_file) {
                Ok(s) => s.trim().parse().unwrap(),
                Err(e) => {
                    last_error = format!("no pid file: {e}");
                    continue;
                }
            };
            let tpm = Swtpm {
                _state: state,
                pid,
                port,
            };
            if tpm.wait_ready() {
                return tpm;
            }
            last_error = format!("swtpm on port {port} never accepted connections");
        }
        panic!("could not start swtpm: {last_error}");
    }

    fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // The control port answers without taking the one data connection swtpm serves.
            if std::net::TcpStream::connect(("127.0.0.1", self.port + 1)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The TCTI string for hybridboot and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// An owner-hierarchy storage primary (ECC) made persistent at `handle` with tpm2-tools, as
    /// other software on a node may leave one.
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    pub fn persist_storage_primary(&self, handle: &str) {
        let tcti = self.tcti();
        let env = [("TPM2TOOLS_TCTI", tcti.as_str())];
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("srk.ctx");
        let ctx = ctx.to_str().unwrap();
        super::tool(
            "tpm2_createprimary",
            &["-C", "o", "-G", "ecc", "-c", ctx],
            &env,
        )
        .ok();
        super::tool("tpm2_evictcontrol", &["-C", "o", "-c", ctx, handle], &env).ok();
        super::tool("tpm2_flushcontext", &["-t"], &env).ok();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // The PID swtpm wrote for the daemon this guard started.
        super::terminate(self.pid);
    }
}
