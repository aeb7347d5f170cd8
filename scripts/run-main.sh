#!/usr/bin/env bash
# The main job on the embedded default: a first boot into a temporary root. A fresh software TPM
# (swtpm) stands in for the appliance's TPM and a local OpenBao for the site's Vault. hybridboot
# firstboot creates the node key inside the TPM, checks the clock against Vault, enrolls for a
# certificate (the private key never leaves the TPM), records its progress and writes the join
# stamp last; then `hybridboot status` shows what it left.
# Not wired yet (reported as skipped by status): the Roles Anywhere check and init.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
bin=${HYBRIDBOOT_BIN:-$here/target/debug/hybridboot}
work=$(mktemp -d "${TMPDIR:-/tmp}/hybridboot-main.XXXXXX")
root=$work/root

start_swtpm "$work/tpm"
echo "== swtpm running, TCTI $HB_TCTI (state in $work/tpm)" >&2
start_openbao "$work/openbao"
echo "== OpenBao running at $HB_VAULT_ADDR (PKI role node, token with the node policy)" >&2

mkdir -p "$root/etc/hybridboot"
( umask 077; printf '%s\n' "$HB_VAULT_TOKEN" >"$root/etc/hybridboot/vault-token" )
cat >"$root/etc/hybridboot/config.yaml" <<YAML
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: my-cluster
    region: us-west-2
  hybrid:
    iamRolesAnywhere:
      nodeName: node-1.hybrid.example.com
      roleArn: arn:aws:iam::123456789012:role/HybridNodes
      profileArn: arn:aws:rolesanywhere:us-west-2:123456789012:profile/hybrid
      trustAnchorArn: arn:aws:rolesanywhere:us-west-2:123456789012:trust-anchor/hybrid
      privateKeyPath: handle:0x81000001
---
apiVersion: hybridboot/v1alpha1
kind: BootstrapConfig
spec:
  key:
    ref: handle:0x81000001
    tcti: $HB_TCTI
  vault:
    address: $HB_VAULT_ADDR
    pkiMount: pki
    role: node
    ttl: 24h
    auth:
      tokenFile: /etc/hybridboot/vault-token
  timeouts:
    overall: 5m
    timeSync: 10s
YAML

echo "== hybridboot firstboot --config-source file:///etc/hybridboot/config.yaml --root $root" >&2
"$bin" firstboot --config-source file:///etc/hybridboot/config.yaml --root "$root"

cert=$root/etc/iam/pki/server.pem
echo "== summary" >&2
openssl x509 -in "$cert" -noout -subject -serial -enddate >&2
openssl verify -CAfile "$HB_VAULT_CA" "$cert" >&2
echo "== hybridboot status --root $root" >&2
"$bin" status --root "$root"
echo "== done: the private key never left the TPM; root in $root" >&2
