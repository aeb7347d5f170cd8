#!/usr/bin/env bash
# Installs what the VM test needs (idempotent): QEMU for aarch64 and x86_64, socat for the
# loopback relays, cpio for the initramfs, and the arm64 package architecture for Debian's cloud
# arm64 kernel.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
for p in qemu-system-arm qemu-system-x86 socat cpio swtpm; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  need+=(__update)
fi
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  pk=()
  for p in "${need[@]}"; do [ "$p" = __update ] || pk+=("$p"); done
  [ ${#pk[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${pk[@]}"
fi
