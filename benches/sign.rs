//! Signing benchmark: latency of `sign_digest` per key backend, as the node pays it for every
//! CreateSession, TLS handshake and CSR. Run through `make bench` (scripts/bench.sh prepares
//! swtpm and SoftHSM2 and passes the keys): `cargo bench --bench sign -- KEYREF...`.
//!
//! Environment: HYBRIDBOOT_TCTI (TPM), HYBRIDBOOT_PKCS11_LIB + HYBRIDBOOT_PKCS11_PIN (PKCS#11),
//! HYBRIDBOOT_BENCH_OUT (JSON file to write), HYBRIDBOOT_BENCH_N (signatures per key, default 50).

use std::time::Instant;

use hybridboot::key::{self, KeyOptions, KeyRef, OpenMode};
use hybridboot::secret::Secret;

fn main() {
    let refs: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = std::env::var("HYBRIDBOOT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let opts = KeyOptions {
        tcti: std::env::var("HYBRIDBOOT_TCTI").ok(),
        pkcs11_lib: std::env::var_os("HYBRIDBOOT_PKCS11_LIB").map(Into::into),
        pkcs11_pin: std::env::var("HYBRIDBOOT_PKCS11_PIN").ok().map(Secret::new),
        ..KeyOptions::default()
    };
    let mut rows = Vec::new();
    println!("| key | algorithm | open ms | sign median ms | min | max | n |");
    println!("|---|---|---|---|---|---|---|");
    for r in &refs {
        let reference = KeyRef::parse(r).expect("key reference");
        let t0 = Instant::now();
        let k = match key::open(&reference, &opts, OpenMode::Existing) {
            Ok(k) => k,
            Err(e) => {
                println!("| {reference} | - | error: {e} | | | | |");
                continue;
            }
        };
        let open_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let digest = [i as u8; 32];
            let t = Instant::now();
            k.sign_digest(&digest).expect("sign");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (med, min, max) = (times[n / 2], times[0], times[n - 1]);
        println!(
            "| {reference} | {} | {open_ms:.2} | {med:.3} | {min:.3} | {max:.3} | {n} |",
            k.algorithm()
        );
        rows.push(format!(
            "{{\"key\":\"{reference}\",\"algorithm\":\"{}\",\"open_ms\":{open_ms:.3},\"sign_median_ms\":{med:.4},\"sign_min_ms\":{min:.4},\"sign_max_ms\":{max:.4},\"n\":{n}}}",
            k.algorithm()
        ));
    }
    if let Ok(out) = std::env::var("HYBRIDBOOT_BENCH_OUT") {
        std::fs::write(&out, format!("[{}]\n", rows.join(",\n"))).expect("writing bench JSON");
    }
}
