#!/usr/bin/env bash
# Installs the cross toolchain for `make static` / `make dynamic` (docs/toolchain.md says why):
#   - Debian's rustc-web/cargo-web 1.96 with rust-web-src (for -Zbuild-std on musl) and the arm64
#     glibc std; rustup here only has the x86_64-gnu std and cannot download others;
#   - zig (PyPI ziglang) as C toolchain/linker: brings crt1, musl libc and libunwind for both arches;
#   - cargo-zigbuild; qemu-user-static to run aarch64 binaries here;
#   - an arm64 sysroot with tpm2-tss (libtss2-dev:arm64 and its libraries, plus libssl3:arm64 to run
#     them under qemu-user, and SoftHSM2's module to test PKCS#11 there) in target/sysroot-aarch64,
#     for the dynamic aarch64 build and its test (tests/dist.rs). The packages
#     are unpacked there (apt-get download + dpkg-deb -x) rather than installed: installing
#     libtss2-dev:arm64 would force the host's amd64 libssl/krb5/curl to the arm64 versions
#     (multiarch needs identical versions), which a shared build machine should not get as a side
#     effect of a cross build.
# Idempotent: a second run installs nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
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

# arm64 tpm2-tss for the dynamic aarch64 build (pkg-config with PKG_CONFIG_SYSROOT_DIR). The
# marker file holds the package list, so a changed list rebuilds the sysroot.
sysroot=$here/target/sysroot-aarch64
arm=(libtss2-dev libtss2-esys-3.0.2-0 libtss2-mu0 libtss2-sys1 libtss2-tctildr0 libtss2-rc0
     libtss2-fapi1 libtss2-tcti-device0 libtss2-tcti-mssim0 libtss2-tcti-swtpm0 libtss2-tcti-cmd0
     libtss2-tcti-pcap0 libssl3 libsofthsm2 libstdc++6)
if [ "$(cat "$sysroot/.complete" 2>/dev/null)" != "${arm[*]}" ]; then
  debs=$here/target/sysroot-aarch64.debs
  rm -rf "$sysroot" "$debs" && mkdir -p "$debs"
  chmod 0777 "$debs"   # apt-get download runs as _apt where it can
  (cd "$debs" && apt-get download -qq "${arm[@]/%/:arm64}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  [ "$(ls "$debs"/*.deb | wc -l)" -eq ${#arm[@]} ] || { echo "cross/setup.sh: arm64 package download incomplete" >&2; exit 1; }
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$sysroot"; done
  echo "${arm[*]}" > "$sysroot/.complete"
  rm -rf "$debs"
fi
