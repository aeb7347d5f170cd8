#!/usr/bin/env bash
# Installs what the VM test needs (idempotent): QEMU for aarch64 and x86_64, socat for the
# loopback relays, cpio for the initramfs, and the arm64 package architecture for Debian's cloud
# arm64 kernel; for the systemd guest debootstrap (its Debian root), squid (the site's proxy) and
# Debian's chrony unpacked into the cache (the site's NTP server; unpacked, not installed, so
# that the build machine gets no time daemon of its own).
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
for p in qemu-system-arm qemu-system-x86 socat cpio swtpm debootstrap squid e2fsprogs; do
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

cache=${HYBRIDBOOT_VM_CACHE:-$HOME/.cache/hybridboot/vm}
if [ ! -x "$cache/chrony/usr/sbin/chronyd" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  chmod 0777 "$tmp"   # apt-get download runs as _apt where it can
  (cd "$tmp" && apt-get download -qq chrony 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  rm -rf "$cache/chrony.tmp"
  dpkg-deb -x "$tmp"/chrony_*.deb "$cache/chrony.tmp"
  rm -rf "$tmp" "$cache/chrony"
  mv "$cache/chrony.tmp" "$cache/chrony"
fi
