#!/usr/bin/env bash
# The main job on the embedded default: a fresh software TPM (swtpm) stands in for the
# appliance's TPM; hybridboot creates the node key inside it and prints a CSR signed by it.
# Later steps (Vault enrollment, Roles Anywhere, init) grow this into the whole first boot.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
bin=${HYBRIDBOOT_BIN:-$here/target/debug/hybridboot}
work=$(mktemp -d "${TMPDIR:-/tmp}/hybridboot-main.XXXXXX")

start_swtpm "$work/tpm"
echo "== swtpm running, TCTI $HB_TCTI (state in $work/tpm)" >&2
key=handle:0x81000001
echo "== hybridboot key create --key $key" >&2
"$bin" key create --key "$key" --tcti "$HB_TCTI"
echo "== hybridboot csr --key $key --common-name node-1.hybrid.example.com" >&2
"$bin" csr --key "$key" --tcti "$HB_TCTI" --common-name node-1.hybrid.example.com \
  --dns-name node-1.hybrid.example.com --out "$work/node.csr"
cat "$work/node.csr"
openssl req -in "$work/node.csr" -noout -verify -subject >&2
echo "== done: the private key never left the TPM; CSR in $work/node.csr" >&2
