#!/usr/bin/env bash
# Installs everything the build, the main job and the tests need on a fresh Debian 12 machine.
# Idempotent and cached: a second run installs nothing and takes about a second.
#   - Debian packages (TPM, PKCS#11, openssl, test tools);
#   - a Python venv with the real peers (OpenBao, moto) and independent clients, at
#     $HYBRIDBOOT_VENV (default ~/.cache/hybridboot/venv), rebuilt when requirements change.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES=(
  build-essential pkg-config ca-certificates curl openssl libssl-dev
  swtpm swtpm-tools tpm2-tools libtss2-dev tpm2-openssl
  softhsm2 opensc
  python3-venv
  containerd runc containernetworking-plugins  # tests/install.rs: real binaries for the mirror
  systemd          # systemd-analyze verify / security on the shipped units
  strace           # tests/atomic_write_crash.rs records atomic_write's syscalls
  faketime         # tests/firstboot.rs: a clock years off
  socat            # VM test: guestfwd relays to loopback
  time             # make bench: peak RSS (/usr/bin/time -v)
  docker-registry apache2-utils skopeo  # tests/sandbox.rs: a real registry (htpasswd auth), the image push
  tinyproxy        # tests/sandbox.rs: the site's HTTP proxy
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

venv=${HYBRIDBOOT_VENV:-$HOME/.cache/hybridboot/venv}
req="$here/tests/peers/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: preparing Python venv $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# kubectl: preinstalled on this kind of machine; Debian's client is the fallback.
if ! command -v kubectl >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends kubernetes-client
fi

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }
