#!/usr/bin/env bash
# Boots the guest built by build-initramfs.sh under QEMU (TCG) with a fresh swtpm attached as the
# machine's TPM device (aarch64: -M virt with tpm-tis-device; x86_64: -M q35 with tpm-crb), and
# QEMU user networking restricted to explicit forwards: each `GUESTPORT=HOSTPORT` becomes
# 10.0.2.100:GUESTPORT in the guest, relayed to 127.0.0.1:HOSTPORT on the host and nowhere else.
#
#   [VM_ARCH=aarch64|x86_64] tests/vm/run-vm.sh DIR TIMEOUT_SECONDS [GUESTPORT=HOSTPORT ...]
#
# DIR holds vmlinuz and initramfs.gz; the console goes to DIR/console.log. Exit status is QEMU's.
set -euo pipefail
dir=$1 timeout_s=$2
shift 2
tpmdir=$dir/tpm
rm -rf "$tpmdir" && mkdir -p "$tpmdir"
swtpm socket --tpm2 --tpmstate dir="$tpmdir" --ctrl type=unixio,path="$tpmdir/sock" \
  --flags startup-clear --pid file="$tpmdir/pid" --log file="$tpmdir/log" --daemon
trap 'kill "$(cat "$tpmdir/pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$tpmdir/sock" ] && break; sleep 0.1; done

netdev="user,id=n0,restrict=on,net=10.0.2.0/24,host=10.0.2.2"
for fwd in "$@"; do
  gport=${fwd%%=*} hport=${fwd#*=}
  netdev+=",guestfwd=tcp:10.0.2.100:$gport-cmd:socat - TCP:127.0.0.1:$hport"
done
start=$(date +%s.%N)
set +e
case "${VM_ARCH:-aarch64}" in
  aarch64)
    machine=(qemu-system-aarch64 -M virt -cpu cortex-a57)
    devices=(-device tpm-tis-device,tpmdev=tpm0 -device virtio-net-device,netdev=n0
             -device virtio-rng-device)
    console=ttyAMA0 ;;
  x86_64)
    machine=(qemu-system-x86_64 -M q35 -cpu max)
    devices=(-device tpm-crb,tpmdev=tpm0 -device virtio-net-pci,netdev=n0
             -device virtio-rng-pci)
    console=ttyS0 ;;
  *) echo "VM_ARCH=$VM_ARCH: aarch64 or x86_64" >&2; exit 2 ;;
esac
timeout "$timeout_s" "${machine[@]}" -accel tcg -m 512 -smp 1 \
  -nodefaults -nographic -no-reboot \
  -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.gz" \
  -append "console=$console panic=-1 quiet rdinit=/init" \
  -serial "file:$dir/console.log" -monitor none \
  -chardev socket,id=chrtpm,path="$tpmdir/sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
  -netdev "$netdev" "${devices[@]}"
rc=$?
set -e
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN{printf "vm: wall time %.1f s\n", e-s}' >&2
exit $rc
