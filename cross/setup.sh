#!/usr/bin/env bash
# Installs the cross toolchain for `make static` / `make dynamic` (see ../../shared/design/TOOLCHAIN.md):
#   - Debian's rustc-web/cargo-web 1.96 with rust-web-src (for -Zbuild-std on musl) and the arm64
#     glibc std; rustup here only has the x86_64-gnu std and cannot download others;
#   - zig (PyPI ziglang) as C toolchain/linker: brings crt1, musl libc and libunwind for both arches;
#   - cargo-zigbuild; qemu-user-static to run aarch64 binaries here.
# Idempotent: a second run installs nothing.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs=(rustc-web cargo-web rust-web-src libstd-rust-web-dev:arm64 qemu-user-static file
      binutils-aarch64-linux-gnu libtss2-dev pkg-config)
missing=()
dpkg --print-foreign-architectures | grep -qx arm64 || { $SUDO dpkg --add-architecture arm64; missing+=(update); }
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  list=("${missing[@]/update/}")
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends ${list[@]}
fi

zigvenv=${HYBRIDBOOT_ZIG_VENV:-$HOME/.cache/hybridboot/zig}
if [ ! -x "$zigvenv/bin/python-zig" ] && [ ! -x "$zigvenv/bin/zig" ]; then
  python3 -m venv "$zigvenv"
  "$zigvenv/bin/pip" install -q --disable-pip-version-check ziglang
fi
# A `zig` on PATH that runs the PyPI-shipped compiler.
if [ ! -x "$zigvenv/bin/zig" ]; then
  printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$zigvenv/bin/python" > "$zigvenv/bin/zig"
  chmod +x "$zigvenv/bin/zig"
fi

command -v cargo-zigbuild >/dev/null || [ -x "$HOME/.cargo/bin/cargo-zigbuild" ] ||
  cargo install --locked cargo-zigbuild
