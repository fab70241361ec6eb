#!/usr/bin/env bash
# The zfs backend, tested in the VM: this host's kernel has no ZFS, so vm/setup-zfs.sh (once
# per machine: Debian contrib, zfs-dkms built for the VM's kernel, about 9 minutes on 2
# cores, and the ZFS libraries the backend loads at run time) installs it, then inside the VM:
#   1. the conformance suite on zfs, nothing skipped (GRAPHDRIVER_REQUIRE=zfs) but the
#      idmap cases, which Debian 12's zfs 2.1 refuses (idmapped mounts came with zfs 2.2);
#   2. zfs/tests/zfs.rs --ignored: usage, quota (EDQUOT), clone/snapshot pairing and
#      removal order, crash leftovers, a full pool (ENOSPC), I/O errors (a corrupt block;
#      a disk that fails under the pool mid-apply: dm-mod's `error` target), and the
#      benchmark of 200 container layers created and removed through the driver against
#      the zfs command (figures printed);
#   3. the image store's tests (image/tests) on zfs, their scratch directories on a pool
#      (not with GRAPHDRIVER_ZFS_IMAGE_TESTS=0);
#   4. the storm.
# Run as root. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { echo "=== zfs: $1"; STAGE_START=$(date +%s); }
took() { echo "=== zfs: took $(( $(date +%s) - STAGE_START ))s"; }

stage "install (vm/setup-zfs.sh)"
vm/setup-zfs.sh
took

stage "build"
. scripts/test-binaries.sh
build_workspace
test_bin=$(test_binaries zfs)
[ -n "$test_bin" ] || { echo "vm-tests-zfs: no test binary" >&2; exit 1; }
took

# The pools live on files in the guest's RAM; the ARC is kept small beside them.
ARC='echo $((256 << 20)) > /sys/module/zfs/parameters/zfs_arc_max'
stage "conformance suite on zfs, in the VM"
GRAPHDRIVER_REQUIRE=zfs GRAPHDRIVER_MAY_SKIP=idmap:: in_vm 2100 vm/run -m 4G -p loop,zfs -- \
  bash -c "$ARC; exec target/release/graphctl check --driver zfs"
took

stage "zfs tests and benchmark, in the VM"
in_vm 900 vm/run -m 4G -p loop,zfs,dm-mod -- bash -c "$ARC; exec $test_bin --ignored --test-threads=1 --nocapture"
took

# (GRAPHDRIVER_ZFS_IMAGE_TESTS=0, as scripts/test.sh --fast sets it, skips them: 5 minutes)
if [ "${GRAPHDRIVER_ZFS_IMAGE_TESTS:-1}" != 0 ]; then
  stage "image tests on zfs, in the VM (their scratch directories on a pool)"
  image_bins=$(echo $(test_binaries containers import save))
  [ "$(wc -w <<<"$image_bins")" = 3 ] || { echo "vm-tests-zfs: not three image test binaries" >&2; exit 1; }
  GRAPHDRIVER_IMAGE_DRIVERS=zfs GRAPHDRIVER_IMAGE_SCRATCH=/var/tmp/graphdriver-image-tests-zfs \
    in_vm 900 vm/run -m 4G -p loop,zfs -- bash -c "$ARC; truncate -s 2G /dev/shm/img.img &&
    zpool create -o cachefile=none -m \$GRAPHDRIVER_IMAGE_SCRATCH gdimg /dev/shm/img.img &&
    { for b in $image_bins; do echo \"\$(basename \$b):\"; \$b --test-threads=1 || exit 1; done; }"
  took
else
  echo "=== zfs: image tests on zfs skipped (GRAPHDRIVER_ZFS_IMAGE_TESTS=0)"
fi

stage "storm on zfs, in the VM (${GRAPHDRIVER_VM_STORM_SECS:-15} s; a pool on a file in the guest's RAM)"
in_vm 600 vm/run -m 4G -p loop,zfs -- bash -c "$ARC; truncate -s 3G /dev/shm/storm.img &&
  zpool create -m /var/tmp/graphdriver-test/storm-zfs gdstorm /dev/shm/storm.img &&
  { target/release/graphctl --driver zfs --root /var/tmp/graphdriver-test/storm-zfs storm \
      --procs 2 --secs ${GRAPHDRIVER_VM_STORM_SECS:-15}; rc=\$?; zpool destroy gdstorm; exit \$rc; }"
took
