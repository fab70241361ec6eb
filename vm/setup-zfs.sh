#!/usr/bin/env bash
# Installs ZFS for the test VM (Debian 12, as root), once; safe to run again.
#   Debian's contrib component (added to the apt sources from the archive URI the machine
#   already uses for main), the headers of the guest kernel that vm/setup.sh installed,
#   zfs-dkms (DKMS builds zfs.ko for that kernel: about 8.5 minutes on 2 cores, once),
#   and zfsutils-linux (zpool/zfs for test fixtures; its libzfs4linux and libnvpair3linux are
#   the libraries the zfs backend loads at run time: nothing links against them).
# Prints the guest kernel version and the ZFS module version.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
HERE=$(dirname "$(realpath "$0")")
APT="apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends"
# one install at a time (the two VM test lanes of scripts/test.sh both need it)
exec 9>/var/lock/graphdriver-setup-zfs.lock
flock 9
KVER=$("$HERE/setup.sh" | tail -1)
[ -n "$KVER" ] || { echo "vm/setup-zfs.sh: no guest kernel" >&2; exit 1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# 1. contrib, from the same archive as main (deb822 sources first, then sources.list)
if ! grep -rqsE '^(Components:.*\bcontrib\b|deb .*bookworm.* contrib)' \
       /etc/apt/sources.list /etc/apt/sources.list.d/; then
  URI=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v RS= '
        /(^|\n)Suites:[^\n]*bookworm( |\n|$)/ && /(^|\n)Components:[^\n]*main/ {
          if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u; exit } }')
  [ -n "$URI" ] || URI=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [ -n "$URI" ] || { echo "vm/setup-zfs.sh: cannot find the Debian archive in the apt sources" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$URI" > /etc/apt/sources.list.d/graphdriver-contrib.sources
  echo "vm/setup-zfs.sh: added contrib from $URI" >&2
fi

# 2. packages; headers first so that zfs-dkms' postinst builds for the guest kernel (the
#    host's own kernel has no headers here, so DKMS builds for the guest only)
need=()
for p in "linux-headers-$KVER" zfs-dkms zfsutils-linux; do
  installed "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null 9>&-
  installed "linux-headers-$KVER" || $APT install "linux-headers-$KVER" >/dev/null 9>&-
  echo "vm/setup-zfs.sh: installing ${need[*]} (the DKMS build takes minutes)" >&2
  # INITRD=No: the VM boots its own initramfs, so dkms' initramfs triggers are no-ops
  INITRD=No $APT install zfs-dkms zfsutils-linux >/dev/null 9>&-  # the lock is not theirs to keep
fi

# 3. the module for the guest kernel (a postinst that ran before the headers existed, or a
#    kernel installed later, leaves it unbuilt)
if ! modinfo -k "$KVER" zfs >/dev/null 2>&1; then
  ZVER=$(dpkg-query -W -f='${Version}' zfs-dkms | sed 's/-[^-]*$//')
  dkms install "zfs/$ZVER" -k "$KVER" >/dev/null
fi
echo "$KVER"
modinfo -k "$KVER" -F version zfs
