//! The dynamic distributables (`make dynamic`, target/dist/hybridboot-<arch>-dynamic): glibc
//! 2.17 baseline, every backend linked, and each backend working against real peers (swtpm
//! through tss-esapi and through the native stack, SoftHSM2 through PKCS#11); the aarch64 one
//! under qemu-user with the arm64 tpm2-tss that cross/setup.sh unpacks into
//! target/sysroot-aarch64.
//!
//! Ignored by plain `cargo test` because it needs the cross build; `make dist-test` (part of
//! `make test`) builds both binaries and runs it with --ignored.
use crate::util;

use std::path::{Path, PathBuf};

use util::softhsm::{SoftHsm, MODULE};
use util::swtpm::Swtpm;
use util::{public_key_block, verify_csr, Run};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dynamic_binary(arch: &str) -> PathBuf {
    let bin = repo().join(format!("target/dist/hybridboot-{arch}-dynamic"));
    assert!(
        bin.exists(),
        "{} is missing: run `make dynamic`",
        bin.display()
    );
    bin
}

/// The arm64 libraries (tpm2-tss, libcrypto) the aarch64 binary loads under qemu-user.
fn arm64_libdir() -> PathBuf {
    let dir = repo().join("target/sysroot-aarch64/usr/lib/aarch64-linux-gnu");
    assert!(
        dir.join("libtss2-esys.so.0").exists(),
        "{} lacks tpm2-tss: run cross/setup.sh",
        dir.display()
    );
    dir
}

/// Runs one of the dist binaries: natively for x86_64, under qemu-aarch64-static for aarch64
/// (glibc from the host's libc6:arm64, tpm2-tss from the sysroot).
fn run_dist(arch: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let bin = dynamic_binary(arch);
    match arch {
        "x86_64" => util::tool(bin.to_str().unwrap(), args, env),
        _ => {
            let libdir = arm64_libdir();
            let mut env = env.to_vec();
            env.push(("LD_LIBRARY_PATH", libdir.to_str().unwrap()));
            let all = [&[bin.to_str().unwrap()], args].concat();
            util::tool("qemu-aarch64-static", &all, &env)
        }
    }
}

/// GLIBC_x.y versions the binary requires (`readelf -V` reads either architecture).
fn glibc_versions(bin: &Path) -> Vec<(u32, u32, u32)> {
    let r = util::tool("readelf", &["-V", "-W", bin.to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut v: Vec<(u32, u32, u32)> = r
        .stdout
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|ver| {
            let mut n = ver.split('.').map(|p| p.parse::<u32>().ok());
            Some((n.next()??, n.next()??, n.next().flatten().unwrap_or(0)))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn check_linkage(arch: &str, file_arch: &str) {
    let bin = dynamic_binary(arch);
    let file = util::tool("file", &[bin.to_str().unwrap()], &[]);
    assert!(
        file.stdout.contains("dynamically linked") && file.stdout.contains(file_arch),
        "{}",
        file.stdout
    );
    let versions = glibc_versions(&bin);
    let newest = *versions.last().expect("no GLIBC_ symbol versions");
    println!(
        "{arch} dynamic: {} bytes, newest glibc symbol version {}.{}",
        std::fs::metadata(&bin).unwrap().len(),
        newest.0,
        newest.1
    );
    assert!(
        newest <= (2, 17, 0),
        "{arch} needs glibc {newest:?} > 2.17: {versions:?}"
    );
    let dynamic = util::tool("readelf", &["-d", "-W", bin.to_str().unwrap()], &[]);
    for lib in ["libtss2-esys.so.0", "libtss2-tctildr.so.0"] {
        assert!(
            dynamic.stdout.contains(&format!("[{lib}]")),
            "{arch} binary does not link {lib}:\n{}",
            dynamic.stdout
        );
    }
}

/// A key in swtpm created through tss-esapi, read back (same public key) through the native
/// stack, and a CSR from it that openssl verifies.
fn tpm_backends_agree(arch: &str) {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let work = tempfile::tempdir().unwrap();
    let key = "handle:0x81000001";
    let create = |backend: &str| {
        let r = run_dist(
            arch,
            &["key", "create", "--key", key, "--tcti", &tcti],
            &[("HYBRIDBOOT_TPM_BACKEND", backend)],
        );
        assert_eq!(r.code, 0, "{arch} {backend} key create: {}", r.stderr);
        public_key_block(&r.stdout)
    };
    let esapi = create("esapi");
    let native = create("native");
    assert_eq!(esapi, native, "{arch}: the backends see different keys");
    let csr = work.path().join("node.csr");
    let r = run_dist(
        arch,
        &[
            "csr",
            "--key",
            key,
            "--tcti",
            &tcti,
            "--common-name",
            "node-1",
            "--out",
            csr.to_str().unwrap(),
        ],
        &[("HYBRIDBOOT_TPM_BACKEND", "esapi")],
    );
    assert_eq!(r.code, 0, "{arch} csr: {}", r.stderr);
    assert_eq!(verify_csr(&csr), esapi);
}

#[test]
#[ignore = "needs the dynamic binaries: run `make dist-test`"]
fn dynamic_binaries_need_at_most_glibc_2_17_and_link_tpm2_tss() {
    check_linkage("x86_64", "x86-64");
    check_linkage("aarch64", "ARM aarch64");
}

#[test]
#[ignore = "needs the dynamic binaries: run `make dist-test`"]
fn dynamic_x86_64_binary_drives_swtpm_through_both_tpm_backends() {
    tpm_backends_agree("x86_64");
}

#[test]
#[ignore = "needs the dynamic binaries: run `make dist-test`"]
fn dynamic_aarch64_binary_drives_swtpm_under_qemu_user() {
    let v = run_dist("aarch64", &["--version"], &[]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stdout.starts_with("hybridboot "), "{}", v.stdout);
    tpm_backends_agree("aarch64");
}

/// A SoftHSM2 key created through PKCS#11 (the module of the binary's own architecture), a CSR
/// from it that openssl verifies, and the key visible to pkcs11-tool.
fn pkcs11_key(arch: &str) {
    let module = match arch {
        "x86_64" => PathBuf::from(MODULE),
        _ => repo().join("target/sysroot-aarch64/usr/lib/softhsm/libsofthsm2.so"),
    };
    let module = module.to_str().unwrap();
    let hsm = SoftHsm::new();
    hsm.init_token("node", "so-pin-1234", "user-pin-1234");
    let key = "pkcs11:token=node;object=node-key?pin-value=user-pin-1234";
    let created = run_dist(
        arch,
        &["key", "create", "--key", key, "--pkcs11-lib", module],
        &hsm.env(),
    );
    assert_eq!(created.code, 0, "{arch}: {}", created.stderr);
    let public = public_key_block(&created.stdout);
    let csr = hsm.dir().join("node.csr");
    let r = run_dist(
        arch,
        &[
            "csr",
            "--key",
            key,
            "--pkcs11-lib",
            module,
            "--common-name",
            "node-1",
            "--out",
            csr.to_str().unwrap(),
        ],
        &hsm.env(),
    );
    assert_eq!(r.code, 0, "{arch}: {}", r.stderr);
    assert_eq!(verify_csr(&csr), public);
    let listed = hsm.pkcs11_tool(&[
        "--list-objects",
        "--type",
        "privkey",
        "--login",
        "--pin",
        "user-pin-1234",
    ]);
    assert!(
        listed.stdout.contains("node-key"),
        "{}{}",
        listed.stdout,
        listed.stderr
    );
}

#[test]
#[ignore = "needs the dynamic binaries: run `make dist-test`"]
fn dynamic_binaries_create_softhsm_keys_through_pkcs11() {
    pkcs11_key("x86_64");
    pkcs11_key("aarch64");
}
