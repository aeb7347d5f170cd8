#!/usr/bin/env bash
# Builds the distributable binaries into target/dist/ (run cross/setup.sh first; `make static`
# and `make dynamic` do both).
#
#   cross/build.sh static  [x86_64] [aarch64]   fully static musl binaries: TPM through the native
#                                              Rust TPM stack (tpm-native) and file keys; no dlopen,
#                                              so no PKCS#11 and no tpm2-tss TCTI plugins
#   cross/build.sh dynamic [x86_64] [aarch64]   glibc >= 2.17 binaries with every backend: tss-esapi
#                                              against the system's libtss2 (arm64: from the sysroot
#                                              cross/setup.sh unpacks), cryptoki for PKCS#11, and
#                                              the native TPM stack
#
# Output: target/dist/hybridboot-<arch>-<flavour> and .sha256, built with the `dist` profile
# (LTO, opt-level z, stripped, panic=abort). The release profile stays unstripped for Yocto.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
flavour=${1:?usage: cross/build.sh static|dynamic [x86_64] [aarch64]}
shift
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)

zigvenv=${HYBRIDBOOT_ZIG_VENV:-$HOME/.cache/hybridboot/zig}
# Debian's rustc-web (1.96, with rust-src and the arm64 std) must win over the rustup proxies.
export PATH="/usr/bin:$zigvenv/bin:$HOME/.cargo/bin:$PATH"
export RUSTC=/usr/bin/rustc
# One target directory per flavour: the static build sets RUSTC_BOOTSTRAP (for -Zbuild-std),
# which build scripts such as thiserror's watch, so sharing one directory would rebuild them and
# everything after them at each switch between flavours (make test runs both).
case "$flavour" in
  dynamic) export CARGO_TARGET_DIR=$here/target/cross-dynamic ;;
  *) export CARGO_TARGET_DIR=$here/target/cross ;;
esac
dist=$here/target/dist
mkdir -p "$dist"

for arch in "${arches[@]}"; do
  case "$arch" in x86_64|aarch64) ;; *) echo "unknown arch $arch (x86_64 or aarch64)" >&2; exit 2;; esac
  case "$flavour" in
    static)
      target=$arch-unknown-linux-musl
      triple_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
      export "CARGO_TARGET_${triple_env}_RUSTFLAGS=-Clink-self-contained=no -Ctarget-feature=+crt-static"
      (cd "$here" && RUSTC_BOOTSTRAP=1 /usr/bin/cargo zigbuild --locked --profile dist \
        -Zbuild-std=std,panic_abort --target "$target" \
        --no-default-features --features tpm-native)
      built=$CARGO_TARGET_DIR/$target/dist/hybridboot
      ;;
    dynamic)
      target=$arch-unknown-linux-gnu
      if [ "$arch" = aarch64 ]; then
        # tpm2-tss for arm64 comes from the sysroot cross/setup.sh unpacks (see there why it is
        # not installed as libtss2-dev:arm64).
        sysroot=$here/target/sysroot-aarch64
        [ -s "$sysroot/.complete" ] || { echo "$sysroot missing: run cross/setup.sh" >&2; exit 1; }
        export PKG_CONFIG_ALLOW_CROSS=1
        export PKG_CONFIG_SYSROOT_DIR=$sysroot
        export PKG_CONFIG_LIBDIR=$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig
        unset PKG_CONFIG_PATH
      else
        unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_ALLOW_CROSS PKG_CONFIG_SYSROOT_DIR
      fi
      # Every backend: tss-esapi (tpm) and cryptoki (pkcs11) by default, plus the native TPM stack.
      # --allow-shlib-undefined: the build machine's libtss2-tctildr.so (Debian 12) takes dlopen
      # from libc at GLIBC_2.34, which zig's 2.17 libc stubs rightly lack; that is a property of
      # the build machine's library, not of our binary, whose own references stay <= 2.17 (the
      # target's libtss2 is built against the target's glibc). Only the final link gets the flag
      # (`rustc -- ...`), so the dependencies' build is shared with other flavours.
      (cd "$here" && CARGO=/usr/bin/cargo cargo-zigbuild rustc --locked --profile dist --target "$target.2.17" \
        --features tpm-native --bin hybridboot -- -C link-arg=-Wl,--allow-shlib-undefined)
      built=$CARGO_TARGET_DIR/$target/dist/hybridboot
      ;;
    *) echo "unknown flavour $flavour (static or dynamic)" >&2; exit 2;;
  esac
  out=$dist/hybridboot-$arch-$flavour
  cp "$built" "$out.tmp" && mv "$out.tmp" "$out"
  (cd "$dist" && sha256sum "$(basename "$out")" > "$(basename "$out").sha256")
  printf '%s: %s bytes (%s MiB)\n' "$(basename "$out")" "$(stat -c %s "$out")" \
    "$(awk -v s="$(stat -c %s "$out")" 'BEGIN{printf "%.2f", s/1048576}')"
  file "$out"
done
