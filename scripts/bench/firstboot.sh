#!/usr/bin/env bash
# The first-boot part of `make bench` alone: starts the same local peers as scripts/bench.sh,
# then scripts/bench/firstboot.py measures first boot and its floor idle, and again under a known
# load (BENCH_LOAD_PROCS busy loops, default twice the CPUs; BENCH_LOAD_WARMUP seconds, default
# 45, before the first timed run). It merges `floor` and `firstboot` (with `over_floor`,
# `over_floor_idle`, `loaded`) into target/bench/results.json and, unless BENCH_README=0,
# replaces the README's firstboot_load section of the bench table.
#
#   cargo build --locked --release && bash scripts/bench/firstboot.sh
#
# HYBRIDBOOT_BIN measures another binary (e.g. a build of an older commit).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/scripts/lib.sh"
bin=${HYBRIDBOOT_BIN:-$here/target/release/hybridboot}
out=$here/target/bench
venv=${HYBRIDBOOT_VENV:-$HOME/.cache/hybridboot/venv}
[ -x "$bin" ] || { echo "bench: $bin missing: cargo build --release --locked" >&2; exit 1; }
# The TPM floor's bench, built now (cargo builds nothing while the load runs); BENCH_TPM_FLOOR_BIN
# names an executable built earlier instead.
if [ -z "${BENCH_TPM_FLOOR_BIN:-}" ]; then
  BENCH_TPM_FLOOR_BIN=$(cd "$here" && cargo bench --locked -q --bench tpm_floor --no-run --message-format=json |
    "${HYBRIDBOOT_VENV:-$HOME/.cache/hybridboot/venv}/bin/python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tpm_floor" and m.get("executable"):
        print(m["executable"])')
fi
export BENCH_TPM_FLOOR_BIN
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/hybridboot-bench-firstboot.XXXXXX")

export BENCH_REGION=us-east-1 BENCH_CLUSTER=hybrid-bench
export BENCH_TA_ARN=arn:aws:rolesanywhere:$BENCH_REGION:123456789012:trust-anchor/bench
export BENCH_PROFILE_ARN=arn:aws:rolesanywhere:$BENCH_REGION:123456789012:profile/bench
start_swtpm "$work/tpm"
export HYBRIDBOOT_TCTI=$HB_TCTI
start_openbao "$work/openbao" >/dev/null
start_moto "$work/moto" "$BENCH_CLUSTER" "$BENCH_REGION"
start_rolesanywhere "$work/ra" "$BENCH_TA_ARN" "$HB_VAULT_CA" "$BENCH_PROFILE_ARN" "$HB_ROLE_ARN" "$BENCH_REGION"

readme=()
[ "${BENCH_README:-1}" = 1 ] && readme=(--readme "$here/README.md")
"$venv/bin/python" "$here/scripts/bench/firstboot.py" --bin "$bin" --work "$work/suite" \
  --out "$out/results.json" "${readme[@]}"
# A failed run keeps $work (logs of every peer and node) for a look; a good one leaves nothing.
hb_cleanup
rm -rf "$work"
