//! A private SoftHSM2 token store per test: its own `SOFTHSM2_CONF` and token directory in a
//! tempdir, so tests never see each other's tokens or the machine's.

use std::path::{Path, PathBuf};

/// The SoftHSM2 module Debian installs.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A fresh SoftHSM2 store (removed with the tempdir when dropped).
pub struct SoftHsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl SoftHsm {
    /// Creates an empty token store.
    pub fn new() -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: install softhsm2 (did .ci/run install it?)"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        SoftHsm { dir, conf }
    }

    /// Initialises a token with this label, SO PIN and user PIN in the next free slot.
    pub fn init_token(&self, label: &str, so_pin: &str, pin: &str) {
        super::tool(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                so_pin,
                "--pin",
                pin,
            ],
            &self.env(),
        )
        .ok();
    }

    /// The environment that points SoftHSM2 (in hybridboot, pkcs11-tool, ...) at this store.
    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![("SOFTHSM2_CONF", self.conf.to_str().unwrap())]
    }

    /// Writes `pin` and a newline to `pin` in [`SoftHsm::dir`] with mode 0600 (as an operator
    /// should: hybridboot warns about a PIN file others can read); returns its path.
    pub fn write_pin_file(&self, pin: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir().join("pin");
        std::fs::write(&path, format!("{pin}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// [`SoftHsm::env`] plus `HYBRIDBOOT_PKCS11_LIB`: what hybridboot needs to use this store
    /// without `--pkcs11-lib`.
    pub fn hybridboot_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .env()
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        env.push(("HYBRIDBOOT_PKCS11_LIB".into(), MODULE.into()));
        env
    }

    /// A scratch directory for PIN files and outputs, removed with the store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `pkcs11-tool --module <SoftHSM>` with these arguments against this store.
    pub fn pkcs11_tool(&self, args: &[&str]) -> super::Run {
        let mut all = vec!["--module", MODULE];
        all.extend_from_slice(args);
        super::tool("pkcs11-tool", &all, &self.env())
    }
}
