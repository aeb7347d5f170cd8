//! hybridboot's integration tests: ONE test crate (one binary to build and link), a module per
//! topic, and the helpers every topic shares in `util` (the binary under test, the project's
//! Python venv, a test CA, NodeConfig/BootstrapConfig documents, and the real peers: swtpm,
//! SoftHSM2, OpenBao, moto, the Roles Anywhere endpoint, the artifact mirror).
//!
//! Run one topic with a filter: `cargo test --test tests vault::`. Three topics need more than
//! `cargo test` gives them and are run by the Makefile:
//! - `tpm_native::` exists only with `--features tpm-native` (`make test`);
//! - `dist::` and `vm::` are `#[ignore]`d: they need the cross-built binaries and QEMU
//!   (`make dist-test`, `make vm-test`, which run them with `--ignored`).

mod util;

mod atomic_write_crash;
mod aws_pure;
mod awsauth;
mod cli;
mod debug;
mod dist;
mod downloads;
mod dry_run;
mod e2e;
mod first_try;
mod firstboot;
mod fuzz_corpus;
mod hardening;
mod http_limits;
mod idevid;
mod init_token;
mod install;
mod irsa;
mod key_delete;
mod main_job;
mod mirror;
mod node_config_cli;
mod node_golden;
mod packaging;
mod pkcs11;
mod properties;
mod rolesanywhere;
mod sandbox;
mod secrets_audit;
mod signing_helper;
mod tpm;
mod tpm_native;
mod upgrade;
mod vault;
mod vault_ha;
mod vm;
