#!/usr/bin/env bash
# Builds the guest for the VM test: Debian's cloud kernel for the architecture (the generic arm64
# one lacks tpm_tis for QEMU's tpm-tis-device; cloud-amd64 has the TPM drivers built in) and a
# busybox initramfs holding the static hybridboot binary, the kernel modules for TPM and virtio
# networking, and a job script the test chooses.
#
#   [VM_ARCH=aarch64|x86_64] tests/vm/build-initramfs.sh OUT_DIR STATIC_BINARY JOB_SCRIPT \
#       [EXTRA_FILE=GUEST_PATH ...]
#
# Downloads (apt-get download) are cached under target/vm-cache/.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
out=$1 bin=$2 job=$3
shift 3
arch=${VM_ARCH:-aarch64}
case "$arch" in
  aarch64) deb_arch=arm64 ;;
  x86_64) deb_arch=amd64 ;;
  *) echo "VM_ARCH=$arch: aarch64 or x86_64" >&2; exit 2 ;;
esac
cache=$here/target/vm-cache
mkdir -p "$cache" "$out"

kver_pkg=$(apt-cache depends "linux-image-cloud-$deb_arch:$deb_arch" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$kver_pkg" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -q >/dev/null
  kver_pkg=$(apt-cache depends "linux-image-cloud-$deb_arch:$deb_arch" | awk '/Depends: linux-image-/{print $2; exit}')
fi
kver_pkg=${kver_pkg%:"$deb_arch"}
kver=${kver_pkg#linux-image-}
if ! ls "$cache"/"$kver_pkg"_*_"$deb_arch".deb >/dev/null 2>&1; then
  (cd "$cache" && apt-get download "$kver_pkg:$deb_arch" 2>/dev/null)
fi
if ! ls "$cache"/busybox-static_*_"$deb_arch".deb >/dev/null 2>&1; then
  (cd "$cache" && apt-get download "busybox-static:$deb_arch" 2>/dev/null)
fi
kdir=$cache/kernel-$kver
if [ ! -d "$kdir" ]; then
  dpkg-deb -x "$cache"/"$kver_pkg"_*_"$deb_arch".deb "$kdir.tmp" && mv "$kdir.tmp" "$kdir"
fi
bbdir=$cache/busybox-$deb_arch
if [ ! -d "$bbdir" ]; then
  dpkg-deb -x "$cache"/busybox-static_*_"$deb_arch".deb "$bbdir.tmp" && mv "$bbdir.tmp" "$bbdir"
fi
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,var/lib/hybridboot,lib/modules,usr/bin}
cp "$bbdir/bin/busybox" "$root/bin/busybox"
for app in sh mount umount mkdir cat echo ip udhcpc insmod sleep poweroff ls grep sed timeout wget date sync hostname ln rm chmod cp; do
  ln -sf busybox "$root/bin/$app"
done
mods=(tpm_tis_core tpm_tis tpm_crb virtio virtio_ring virtio_mmio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio-rng)
for m in "${mods[@]}"; do
  f=$(find "$kdir/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || continue   # built into this kernel
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done
printf '%s\n' "${mods[@]}" > "$root/lib/modules/order"
install -m 0755 "$bin" "$root/usr/bin/hybridboot"
install -m 0755 "$job" "$root/job.sh"
install -m 0755 "$here/tests/vm/init" "$root/init"
for extra in "$@"; do
  src=${extra%%=*} dst=${extra#*=}
  mkdir -p "$root/$(dirname "$dst")"
  cp "$src" "$root/$dst"
done
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initramfs.gz.tmp")
mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
echo "$kver"
