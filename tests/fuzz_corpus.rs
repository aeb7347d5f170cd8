//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`: seeds and every input the
//! fuzzers saved, crashes included) through the same entry points the `cargo fuzz` targets call
//! (`hybridboot::fuzz_entry`), on stable, so a crash that was fixed stays fixed.

use std::path::Path;
use std::time::{Duration, Instant};

use hybridboot::fuzz_entry::TARGETS;

/// One input may take at most this long: a hang is a bug too.
const PER_INPUT: Duration = Duration::from_secs(5);

fn corpus(target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_seeds_and_replays_its_corpus_without_panic_or_hang() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, entry) in TARGETS {
        let files = corpus(name);
        assert!(
            files.iter().any(|p| p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")),
            "target {name} has no seed inputs (run fuzz/make_seeds.py)"
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let started = Instant::now();
            let result = std::panic::catch_unwind(|| entry(&data));
            let took = started.elapsed();
            total += 1;
            match result {
                Err(_) => failures.push(format!("{}: panicked", file.display())),
                Ok(()) if took > PER_INPUT => {
                    failures.push(format!("{}: took {took:?}", file.display()))
                }
                Ok(()) => {}
            }
        }
    }
    eprintln!(
        "replayed {total} corpus inputs over {} targets",
        TARGETS.len()
    );
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_fuzz_target_has_a_corpus_folder_and_a_cargo_fuzz_target() {
    // The fuzz crate and the replay must not drift apart: one folder and one target file each.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in TARGETS {
        assert!(
            root.join("corpus").join(name).is_dir(),
            "no corpus for {name}"
        );
        let src = root.join("fuzz_targets").join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(
            text.contains(&format!("fuzz_entry::{name}(")),
            "{} does not call fuzz_entry::{name}",
            src.display()
        );
    }
}
