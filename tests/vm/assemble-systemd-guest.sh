#!/usr/bin/env bash
# Makes the systemd guest's disk for one test run: a copy of the cached Debian root
# (tests/vm/build-debian-root.sh) with hybridboot installed the way the Yocto recipe installs it,
# the site's configuration, and the files the test hands in; then an ext4 image of it.
#
#   tests/vm/assemble-systemd-guest.sh ROOT_CACHE OUT_DIR STATIC_BINARY FILES_DIR
#
# ROOT_CACHE: the directory build-debian-root.sh printed (root/, vmlinuz, initrd.img).
# FILES_DIR: a tree copied over the root last (the test's config, CAs, token, site units; modes
# and owners as given). OUT_DIR gets disk.img (raw ext4), vmlinuz, initrd.img and
# unit-files.txt (the hybridboot units and links as installed). Needs root (chroot).
#
# hybridboot itself, as yocto/meta-hybridboot/recipes-core/hybridboot/hybridboot_0.1.0.bb does:
# do_install puts the binary in ${bindir}, the three units in ${systemd_system_unitdir}, the
# preset in ${systemd_unitdir}/system-preset, the tmpfiles.d snippet in
# ${nonarch_libdir}/tmpfiles.d and the README in ${docdir}; systemd.bbclass's
# postinst runs `systemctl enable` on SYSTEMD_SERVICE (the first-boot service and the renewal
# timer); the image's rootfs post-processing runs `systemctl preset-all` in enable-only mode
# (which applies our preset: systemd-time-wait-sync.service). No unit is edited or overridden.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cache=$1 out=$2 bin=$3 files=$4
[ -f "$cache/.complete" ] || { echo "$cache: not a finished root (run build-debian-root.sh)" >&2; exit 1; }
mkdir -p "$out"
root=$out/root
rm -rf "$root"
cp -a "$cache/root" "$root"
trap 'rm -rf "$root"' EXIT

# hybridboot: do_install.
unitdir=$root/lib/systemd/system
install -m 0755 "$bin" "$root/usr/bin/hybridboot"
install -d "$unitdir"
for u in hybridboot-firstboot.service hybridboot-renew.service hybridboot-renew.timer; do
  install -m 0644 "$here/systemd/$u" "$unitdir/"
done
install -d "$root/lib/systemd/system-preset"
install -m 0644 "$here/systemd/80-hybridboot.preset" "$root/lib/systemd/system-preset/"
install -d "$root/usr/lib/tmpfiles.d"
install -m 0644 "$here/systemd/hybridboot-tmpfiles.conf" "$root/usr/lib/tmpfiles.d/hybridboot.conf"
install -d "$root/usr/share/doc/hybridboot"
install -m 0644 "$here/README.md" "$root/usr/share/doc/hybridboot/"
# systemd.bbclass postinst (SYSTEMD_AUTO_ENABLE = "enable"), then the image's preset-all.
chroot "$root" systemctl enable hybridboot-firstboot.service hybridboot-renew.timer
chroot "$root" systemctl --preset-mode=enable-only preset-all

# The test's files (site configuration, hybridboot's config, CAs, the kubelet stand-in).
cp -a "$files"/. "$root"/
# Site units the test ships under /etc/systemd/system are enabled like any image would.
for u in "$files"/etc/systemd/system/*.service; do
  [ -f "$u" ] || continue
  chroot "$root" systemctl enable "$(basename "$u")"
done
chroot "$root" systemctl enable systemd-networkd.service

{
  echo "# hybridboot files and enablement links as installed in the guest"
  (cd "$root" && find usr/bin/hybridboot lib/systemd/system/hybridboot-* lib/systemd/system-preset/80-hybridboot.preset usr/lib/tmpfiles.d/hybridboot.conf \
     etc/systemd/system -name '*hybridboot*' -printf '%M %u:%g %p %l\n' 2>/dev/null | sort)
  (cd "$root" && find etc/systemd/system -lname '*systemd-time-wait-sync*' -printf '%M %p -> %l\n' | sort)
} > "$out/unit-files.txt"

cp "$cache/vmlinuz" "$cache/initrd.img" "$out/"
rm -f "$out/disk.img"
# Room for containerd's content store and the journal.
mkfs.ext4 -q -F -L hbroot -d "$root" "$out/disk.img" 1536M
