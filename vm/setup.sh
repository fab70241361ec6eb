#!/usr/bin/env bash
# Installs what the test VM needs (Debian 12, as root), once; safe to run again.
#   qemu (software emulation: this host's /dev/kvm does not boot Debian kernels), a static
#   busybox for the initramfs, and the Debian kernel that linux-image-amd64 points at today
#   (the archive keeps only the current ABI, so it is resolved, never hard-coded).
# Prints the guest kernel version.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
APT="apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends"
need=()
for p in qemu-system-x86 busybox-static cpio kmod python3 xz-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
KVER=${GRAPHDRIVER_VM_KERNEL:-$( (ls /boot/vmlinuz-*-amd64 2>/dev/null || true) | sed 's|/boot/vmlinuz-||' | sort -V | tail -1)}
if [ -z "$KVER" ] || [ ! -d "/lib/modules/$KVER/kernel" ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  KVER=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -1)
  [ -n "$KVER" ] || { echo "vm/setup.sh: cannot resolve linux-image-amd64" >&2; exit 1; }
  need+=("linux-image-$KVER")
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "vm/setup.sh: installing ${need[*]}" >&2
  [ -n "${KVER:-}" ] && [ -d "/lib/modules/$KVER/kernel" ] && apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  # INITRD=No: the VM boots its own tiny initramfs, so skip mkinitramfs
  INITRD=No $APT install "${need[@]}" >/dev/null
fi
modinfo -k "$KVER" -n loop >/dev/null
echo "$KVER"
