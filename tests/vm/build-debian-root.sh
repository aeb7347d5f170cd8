#!/usr/bin/env bash
# Builds (once) the Debian bookworm root of the VM test's systemd guest: debootstrap's minbase
# from Debian's own packages plus systemd as PID 1, udev, D-Bus, containerd and runc, the cloud
# kernel with an initramfs, iptables (the kubelet unit init writes runs it), systemd-timesyncd,
# and the tools the test's guest uses (curl for the kubelet stand-in, socat for the site's NTP
# relay). Nothing of hybridboot goes in here: the test installs the binary, the shipped units and
# its configuration into a copy per run (tests/vm/assemble-systemd-guest.sh), so this cache only
# changes when this script does.
#
#   tests/vm/build-debian-root.sh        prints the cache directory (building it if needed)
#
# The cache lives outside the clone, under ~/.cache/hybridboot/vm/ (HYBRIDBOOT_VM_CACHE), keyed by
# the hash of this script: a fresh clone (CI) reuses it, an edit here builds a new one and removes
# the older ones. It holds root/ (the tree, owned by root), vmlinuz and initrd.img. Needs root
# (debootstrap, chroot) and the network to Debian's mirror (DEBIAN_MIRROR).
set -euo pipefail
script=$(readlink -f "$0")
key=$(sha256sum "$script" | cut -c1-16)
base=${HYBRIDBOOT_VM_CACHE:-$HOME/.cache/hybridboot/vm}
out=$base/debian-bookworm-amd64-$key
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
[ "$(id -u)" -eq 0 ] || { echo "build-debian-root.sh: debootstrap needs root" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$base"
exec 9>"$base/.lock"
flock 9
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
start=$(date +%s)
pkgs=(systemd-sysv systemd-timesyncd udev dbus kmod iproute2 iptables containerd runc
      linux-image-cloud-amd64 initramfs-tools curl ca-certificates socat)
# The kernel's postinst builds the initramfs inside the chroot; MODULES=most keeps virtio there.
debootstrap --arch=amd64 --variant=minbase --include="$(IFS=,; echo "${pkgs[*]}")" \
  bookworm "$out.tmp/root" "$mirror" >&2
root=$out.tmp/root
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
kernel=$(ls "$root"/boot/vmlinuz-* | head -1)
initrd=$(ls "$root"/boot/initrd.img-* | head -1)
[ -f "$kernel" ] && [ -f "$initrd" ] || { echo "build-debian-root.sh: no kernel/initrd in $root/boot" >&2; exit 1; }
cp "$kernel" "$out.tmp/vmlinuz"
cp "$initrd" "$out.tmp/initrd.img"
printf 'built %s in %s s from %s\n' "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))" "$mirror" > "$out.tmp/.complete"
# Older keys are stale: one root is enough.
for old in "$base"/debian-bookworm-amd64-*; do
  [ "$old" = "$out.tmp" ] || [ "$old" = "$out" ] || rm -rf "$old"
done
mv "$out.tmp" "$out"
echo "$out"
