//! The TPM part of the first-boot floor: the TPM commands a first boot needs, driven directly
//! with tss-esapi in one process and nothing else: connect, derive the owner SRK, create the
//! node key under it, load it, make it persistent, then two signatures (the CSR and the Roles
//! Anywhere CreateSession). scripts/bench.sh runs it against swtpm and compares `firstboot`
//! with it: `cargo bench --bench tpm_floor`.
//!
//! Environment: HYBRIDBOOT_TCTI (required), HYBRIDBOOT_BENCH_N (runs, default 5),
//! HYBRIDBOOT_BENCH_OUT (JSON file to write: per run, the milliseconds of each operation).
//! Each run uses persistent handle 0x817F0000 and evicts it again afterwards (not timed).

use std::str::FromStr;
use std::time::Instant;

use hybridboot::key::{tpm_signing_key_template, tpm_srk_template, Algorithm};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::PersistentTpmHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, HashScheme, HashcheckTicket, SignatureScheme};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;

const HANDLE: u32 = 0x817F_0000;

/// Milliseconds of each operation of one run, in order.
fn one_run(tcti: &str) -> Vec<(&'static str, f64)> {
    let mut times = Vec::new();
    let mut lap = Instant::now();
    let mut mark = |times: &mut Vec<(&'static str, f64)>, name: &'static str| {
        times.push((name, lap.elapsed().as_secs_f64() * 1e3));
        lap = Instant::now();
    };
    let mut ctx = Context::new(TctiNameConf::from_str(tcti).expect("TCTI")).expect("TPM context");
    mark(&mut times, "connect");
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    let srk = ctx
        .create_primary(
            Hierarchy::Owner,
            tpm_srk_template().unwrap(),
            None,
            None,
            None,
            None,
        )
        .expect("CreatePrimary")
        .key_handle;
    mark(&mut times, "create_primary");
    // No auth value, so noDA, as first boot creates it.
    let template = tpm_signing_key_template(Algorithm::EcdsaP256, true).unwrap();
    let created = ctx
        .create(srk, template, None, None, None, None)
        .expect("Create");
    mark(&mut times, "create");
    let loaded = ctx
        .load(srk, created.out_private, created.out_public)
        .expect("Load");
    mark(&mut times, "load");
    let handle = PersistentTpmHandle::new(HANDLE).unwrap();
    let persistent = ctx
        .evict_control(
            Provision::Owner,
            loaded.into(),
            Persistent::Persistent(handle),
        )
        .expect("EvictControl");
    ctx.clear_sessions();
    ctx.flush_context(loaded.into()).expect("flush key");
    ctx.flush_context(srk.into()).expect("flush SRK");
    mark(&mut times, "evict_control");
    for (i, name) in ["sign_csr", "sign_create_session"].into_iter().enumerate() {
        let digest = Digest::try_from(vec![i as u8; 32]).unwrap();
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .unwrap();
        let scheme = SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        ctx.sign(persistent.into(), digest, scheme, ticket)
            .expect("Sign");
        ctx.clear_sessions();
        mark(&mut times, name);
    }
    // Not timed: remove the persistent key so that the next run creates it again.
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    ctx.evict_control(Provision::Owner, persistent, Persistent::Persistent(handle))
        .expect("evicting the benchmark key");
    times
}

fn main() {
    // `cargo test --all-targets` runs benches once without `--bench`: there is nothing to
    // check here without the TPM `make bench` starts, so say so and stop.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("tpm_floor: a benchmark, not a test: run it with make bench");
        return;
    }
    let tcti = std::env::var("HYBRIDBOOT_TCTI").expect("HYBRIDBOOT_TCTI names the TPM");
    std::env::set_var("TSS2_LOG", "all+none");
    let n: usize = std::env::var("HYBRIDBOOT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut runs = Vec::new();
    for _ in 0..n {
        let times = one_run(&tcti);
        let total: f64 = times.iter().map(|(_, ms)| ms).sum();
        let ops: Vec<String> = times
            .iter()
            .map(|(name, ms)| format!("\"{name}\":{ms:.3}"))
            .collect();
        eprintln!("tpm floor: {total:.1} ms");
        runs.push(format!("{{\"total_ms\":{total:.3},{}}}", ops.join(",")));
    }
    let json = format!("[{}]\n", runs.join(",\n"));
    match std::env::var("HYBRIDBOOT_BENCH_OUT") {
        Ok(out) => std::fs::write(&out, json).expect("writing bench JSON"),
        Err(_) => print!("{json}"),
    }
}
