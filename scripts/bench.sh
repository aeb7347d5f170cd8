#!/usr/bin/env bash
# Benchmarks (make bench). For now: signing latency per key backend (file, TPM via swtpm,
# PKCS#11 via SoftHSM2), both algorithms. Results: target/bench/sign.{md,json}.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
bin=$here/target/release/hybridboot
out=$here/target/bench
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/hybridboot-bench.XXXXXX")

start_swtpm "$work/tpm"
export HYBRIDBOOT_TCTI=$HB_TCTI

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
HYBRIDBOOT_BENCH_OUT=$out/sign.json cargo bench --locked -q --bench sign -- "${keys[@]}" | tee "$out/sign.md"
echo "bench: results in $out/sign.md and $out/sign.json" >&2
