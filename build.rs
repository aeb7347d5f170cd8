//! Embeds the build date: first boot refuses a clock set before it (a board whose RTC lost
//! power reads 1970 or the factory date, and certificates issued then would be unusable).
//! Reproducible builds (Yocto) set SOURCE_DATE_EPOCH; otherwise the time of the build.

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=HYBRIDBOOT_BUILD_EPOCH={epoch}");
}
