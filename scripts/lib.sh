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
