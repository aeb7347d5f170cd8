#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 180) each, starting from the committed
# fuzz/corpus/<target>/ and keeping new coverage in fuzz/artifacts/<target>/corpus (not committed:
# `FUZZ_KEEP=1` merges it, minimised, into fuzz/corpus/), and copies any crash, timeout or out-of-memory input into
# fuzz/corpus/<target>/ as a regression input (the stable suite replays them:
# tests/fuzz_corpus.rs). Prints one summary line per target; exits 1 if anything crashed.
#
# Toolchain: cargo-fuzz needs nightly (-Zsanitizer). We use `cargo +nightly` when rustup has a
# nightly toolchain and otherwise stable with RUSTC_BOOTSTRAP=1.
# Optional: FUZZ_TARGETS="a b" to run a subset; FUZZ_SKIP_BUILD=1 to run the binaries as built.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-180}
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  CARGO=(cargo +nightly)
else
  export RUSTC_BOOTSTRAP=1
  CARGO=(cargo)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# FUZZ_SKIP_BUILD=1: use the binaries already built (e.g. a second run in parallel).
[ "${FUZZ_SKIP_BUILD:-0}" = 1 ] || "${CARGO[@]}" fuzz build -O --debug-assertions
targets=${FUZZ_TARGETS:-$("${CARGO[@]}" fuzz list)}
bin=target/x86_64-unknown-linux-gnu/release
failed=0
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t/corpus"
  log=artifacts/$t/run.log
  # -timeout: one input slower than 10 s is a hang; -rss_limit_mb: more than 1 GiB is an OOM.
  set +e
  "$bin/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" "artifacts/$t/corpus" "corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  found=0
  for a in artifacts/"$t"/crash-* artifacts/"$t"/timeout-* artifacts/"$t"/oom-* artifacts/"$t"/leak-*; do
    [ -e "$a" ] || continue
    cp "$a" "corpus/$t/regression-$(basename "$a")"
    found=$((found + 1))
  done
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    "$bin/$t" -merge=1 "corpus/$t" "artifacts/$t/corpus" >>"$log" 2>&1 || true
  fi
  stats=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  final=$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" |
    sed 's/^stat:://' | tr -d ' ' | tr '\n' ' ' || true)
  echo "$t: ${SECONDS_EACH}s exit=$rc new-regressions=$found committed=$(ls "corpus/$t" | wc -l) found-corpus=$(ls "artifacts/$t/corpus" | wc -l)/$(cat "artifacts/$t/corpus"/* 2>/dev/null | wc -c | awk '{print int($1 / 1024)}')KB ${final}last: ${stats:-none}"
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then failed=1; fi
done
exit $failed
