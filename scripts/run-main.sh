#!/usr/bin/env bash
# The main job on the embedded default: a whole first boot into a temporary root, against local
# stand-ins for everything an appliance meets at its site:
#   - swtpm: the appliance's TPM 2.0 (the node key is created inside it and never leaves);
#   - OpenBao: the site's Vault PKI (signs the node certificate);
#   - tests/peers/rolesanywhere.py: IAM Roles Anywhere CreateSession (no emulator exists; ours
#     verifies the X.509 SigV4 signature and the chain to the trust anchor = the Vault CA);
#   - moto: STS (the session's credentials) and EKS DescribeCluster, with signature checking on.
# hybridboot firstboot then runs key -> clock -> enroll -> Roles Anywhere -> init -> stamp; the
# Kubernetes binaries count as baked into the image (a kubelet stand-in that only answers
# --version: there is no kubelet package here), and systemctl is a recorder, so nothing on this
# machine is restarted. At the end: a summary, the files init wrote, and `hybridboot status`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
bin=${HYBRIDBOOT_BIN:-$here/target/debug/hybridboot}
work=$(mktemp -d "${TMPDIR:-/tmp}/hybridboot-main.XXXXXX")
root=$work/root
cluster=hybrid-main
region=us-west-2
account=123456789012
ta=arn:aws:rolesanywhere:$region:$account:trust-anchor/hybrid
profile=arn:aws:rolesanywhere:$region:$account:profile/hybrid

start_swtpm "$work/tpm"
echo "== swtpm running, TCTI $HB_TCTI (state in $work/tpm)" >&2
start_openbao "$work/openbao"
echo "== OpenBao running at $HB_VAULT_ADDR (PKI role node, token with the node policy)" >&2
start_moto "$work/moto" "$cluster" "$region"
echo "== moto (STS, IAM, EKS; signatures checked) at $HB_MOTO, cluster $cluster ACTIVE" >&2
start_rolesanywhere "$work/ra" "$ta" "$HB_VAULT_CA" "$profile" "$HB_ROLE_ARN" "$region"
echo "== Roles Anywhere endpoint at $HB_RA_ENDPOINT (trust anchor: the Vault PKI CA)" >&2

# The image: configuration, the Vault token, the AWS endpoints' CA, the baked-in kubelet.
mkdir -p "$root/etc/hybridboot" "$root/usr/bin"
( umask 077; printf '%s\n' "$HB_VAULT_TOKEN" >"$root/etc/hybridboot/vault-token" )
cp "$HB_RA_CA" "$root/etc/hybridboot/aws-ca.pem"
printf '#!/bin/sh\necho Kubernetes v1.31.2\n' >"$root/usr/bin/kubelet"
chmod 755 "$root/usr/bin/kubelet"
cat >"$root/etc/hybridboot/config.yaml" <<YAML
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: $cluster
    region: $region
  hybrid:
    iamRolesAnywhere:
      nodeName: node-1.hybrid.example.com
      roleArn: $HB_ROLE_ARN
      profileArn: $profile
      trustAnchorArn: $ta
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
  aws:
    rolesAnywhereEndpoint: $HB_RA_ENDPOINT
    eksEndpoint: $HB_MOTO
    caBundle: /etc/hybridboot/aws-ca.pem
  timeouts:
    overall: 5m
    timeSync: 10s
YAML

# systemctl stand-in: records what init asks systemd to do.
printf '#!/bin/sh\necho "systemctl $*" >>"%s"\n' "$work/systemctl.log" >"$work/systemctl"
chmod 755 "$work/systemctl"

# --start and --hybridboot-path: act as on the node (units through the recording systemctl,
# the written lines naming this binary); under --root, first boot would otherwise start no
# unit and name /usr/bin/hybridboot, as for an image.
echo "== hybridboot firstboot --config-source file:///etc/hybridboot/config.yaml --root $root --start --hybridboot-path $bin" >&2
start=$(date +%s%N)
HYBRIDBOOT_SYSTEMCTL=$work/systemctl "$bin" firstboot \
  --config-source file:///etc/hybridboot/config.yaml --root "$root" --start --hybridboot-path "$bin"
took=$(( ($(date +%s%N) - start) / 1000000 ))

cert=$root/etc/iam/pki/server.pem
echo "== summary (first boot took $took ms)" >&2
openssl x509 -in "$cert" -noout -subject -serial -enddate >&2
openssl verify -CAfile "$HB_VAULT_CA" "$cert" >&2
echo "-- Roles Anywhere endpoint: $(curl -s "$HB_RA_CONTROL/_control/stats" | head -c 200)" >&2
echo "-- files in the root (configuration, certificate, what init wrote, state):" >&2
( cd "$root" && find etc var -type f | sort | sed 's/^/   \//' ) >&2
echo "-- systemd actions requested:" >&2
sed 's/^/   /' "$work/systemctl.log" >&2
echo "-- kubeconfig server: $(sed -n 's/^ *server: //p' "$root/var/lib/kubelet/kubeconfig")" >&2
echo "== hybridboot status --root $root" >&2
"$bin" status --root "$root"
echo "== done: the private key never left the TPM; root in $root" >&2
