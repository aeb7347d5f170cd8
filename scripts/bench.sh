#!/usr/bin/env bash
# Benchmarks (make bench, after the release build): first boot against its physical floor,
# credential-process and token latency against the reference client, size and memory, and a
# 1,000-node fleet against OpenBao and one Roles Anywhere endpoint, free and throttled, and
# install's downloads through a relay that cuts every connection (scripts/bench/downloads.py,
# BENCH_DROP_MIB). Everything runs on the local peers (swtpm, OpenBao, moto,
# tests/peers/rolesanywhere.py) on loopback ports.
#
# Results: target/bench/results.md (table, PASS/FAIL per target; never fails the build),
# target/bench/results.json (raw), target/bench/sign.{md,json} (signing latency per backend).
# `make bench` also puts the table into README.md between its bench markers (BENCH_README=0:
# leave README.md alone). Knobs: BENCH_RUNS (7), BENCH_WARM_RUNS
# (31), BENCH_FLEET_NODES (1000), BENCH_VAULT_HA_NODES (200), BENCH_VM (0; 1 = run `make vm-test`
# first for the VM figures), BENCH_ONLY (fleet: the fleet alone).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
bin=${BENCH_BIN:-$here/target/release/hybridboot}  # BENCH_BIN: another build (before/after)
out=$here/target/bench
venv=${HYBRIDBOOT_VENV:-$HOME/.cache/hybridboot/venv}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/hybridboot-bench.XXXXXX")
[ -x "$bin" ] || { echo "bench: $bin missing: cargo build --release --locked" >&2; exit 1; }

# The peers (scripts/lib.sh): the Roles Anywhere trust anchor is OpenBao's PKI root, as at a site.
export BENCH_REGION=us-east-1 BENCH_CLUSTER=hybrid-bench
export BENCH_TA_ARN=arn:aws:rolesanywhere:$BENCH_REGION:123456789012:trust-anchor/bench
export BENCH_PROFILE_ARN=arn:aws:rolesanywhere:$BENCH_REGION:123456789012:profile/bench
start_swtpm "$work/tpm"
export HYBRIDBOOT_TCTI=$HB_TCTI
start_openbao "$work/openbao" >/dev/null
start_moto "$work/moto" "$BENCH_CLUSTER" "$BENCH_REGION"
start_rolesanywhere "$work/ra" "$BENCH_TA_ARN" "$HB_VAULT_CA" "$BENCH_PROFILE_ARN" "$HB_ROLE_ARN" "$BENCH_REGION"

# BENCH_ONLY=fleet: the fleet alone (scripts/bench/fleet.py) on these peers, merged into
# results.json, and only the README's fleet part replaced.
if [ "${BENCH_ONLY:-}" = fleet ]; then
  readme=()
  [ "${BENCH_README:-1}" = 1 ] && readme=(--readme "$here/README.md")
  "$venv/bin/python" "$here/scripts/bench/fleet.py" --bin "$bin" --work "$work/suite" \
    --out "$out/results.json" "${readme[@]}"
  hb_cleanup
  rm -rf "$work"
  exit 0
fi

# Signing latency per key backend (file, TPM via swtpm, PKCS#11 via SoftHSM2), both algorithms.
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir -p "$work/tokens"
echo "directories.tokendir = $work/tokens" > "$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --so-pin 87654321 --pin 123456 >/dev/null
export HYBRIDBOOT_PKCS11_LIB=/usr/lib/softhsm/libsofthsm2.so HYBRIDBOOT_PKCS11_PIN=123456
keys=()
for alg in ecdsa-p256 rsa-2048; do
  for ref in "file:$work/$alg.pem" "handle:0x8100010$([ $alg = rsa-2048 ] && echo 2 || echo 1)" \
             "pkcs11:token=bench;object=$alg"; do
    if "$bin" -q key create --key "$ref" --algorithm "$alg" >/dev/null; then
      keys+=("$ref")
    else
      echo "bench: skipping $ref (key create failed)" >&2
    fi
  done
done
HYBRIDBOOT_BENCH_OUT=$out/sign.json cargo bench --locked -q --bench sign -- "${keys[@]}" >"$out/sign.md"

# The TPM part of the first-boot floor: the same TPM commands straight through tss-esapi.
HYBRIDBOOT_BENCH_N=${BENCH_RUNS:-7} HYBRIDBOOT_BENCH_OUT=$work/tpm-floor.json \
  cargo bench --locked -q --bench tpm_floor

# The VM guests' boot-to-joined times come from the last `make vm-test` (target/vm-artifacts/*.json);
# BENCH_VM=1 runs it first (minutes under TCG).
if [ "${BENCH_VM:-0}" = 1 ]; then make -C "$here" vm-test; fi

# Everything else: the Python helpers under scripts/bench/.
"$venv/bin/python" "$here/scripts/bench/suite.py" --bin "$bin" --work "$work/suite" \
  --out "$out/results.json" --tpm-floor "$work/tpm-floor.json" --sign "$out/sign.json"
readme=()
[ "${BENCH_README:-1}" = 1 ] && readme=(--readme "$here/README.md")
"$venv/bin/python" "$here/scripts/bench/report.py" "$out/results.json" "$out/results.md" "${readme[@]}"
cat "$out/results.md"
echo "bench: results in $out/results.md and $out/results.json" >&2
# A failed run keeps $work (logs of every peer and node) for a look; a good one leaves nothing.
hb_cleanup
rm -rf "$work"
