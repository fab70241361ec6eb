#!/usr/bin/env bash
# Tests that need kernel features this host lacks (quotas, device-mapper: also the I/O-error
# cases, a dm `error` target under each backend's filesystem), run inside the VM
# (`graphctl vm`): the test binaries built here run there unchanged, with --ignored selecting
# them; the image store's tests on devmapper; then the whole conformance suite on devmapper,
# with nothing allowed to skip; containerd's snapshotter suite on devmapper and on zfs, and
# containerd with runc end to end on both (zfs: installed by vm/setup-zfs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
vm/setup.sh >/dev/null
. scripts/test-binaries.sh
build_workspace
bins=$(test_binaries quota overlay2 devmapper eio)
[ "$(wc -w <<<"$bins")" = 4 ] || { echo "vm-tests: not four test binaries: $bins" >&2; exit 1; }
image_bins=$(echo $(test_binaries containers import save))
[ "$(wc -w <<<"$image_bins")" = 3 ] || { echo "vm-tests: not three image test binaries: $image_bins" >&2; exit 1; }
G=$PWD/target/release/graphctl
for b in $bins; do
  echo "--- in the VM: $(basename "$b") --ignored"
  in_vm 600 "$G" vm --modules loop,dm-thin-pool,ext4,btrfs,overlay -- "$b" --ignored --test-threads=1
done
# the image store's tests (image/tests: import, sharing, verification, save, containers) on
# devmapper, in one boot
echo "--- in the VM: image tests on devmapper"
GRAPHDRIVER_IMAGE_DRIVERS=devmapper in_vm 900 "$G" vm --modules loop,dm-thin-pool -- \
  bash -c 'for b; do echo "$(basename "$b"):"; "$b" --test-threads=1 || exit 1; done' - $image_bins
echo "--- in the VM: conformance suite on devmapper"
GRAPHDRIVER_REQUIRE=devmapper in_vm 1800 "$G" vm --modules loop,dm-thin-pool -- "$G" check --driver devmapper
# containerd's own snapshotter suite on devmapper, through graphdriver's snapshot service (see
# scripts/containerd-tests.sh): 20 passed and 1 skipped, as containerd's native
echo "--- in the VM: containerd's snapshotter suite on devmapper"
in_vm 1500 scripts/containerd-tests.sh --vm devmapper
# containerd and runc end to end on devmapper and zfs (scripts/containerd-e2e.sh --vm), and
# containerd's snapshotter suite on zfs: here rather than in vm-tests-zfs.sh, which runs
# beside this script and is the longer of the two; ZFS is installed by then
# (vm/setup-zfs.sh: the first call installs it, the second waits for the first)
echo "--- in the VM: containerd + runc end to end on devmapper and zfs, containerd's snapshotter suite on zfs"
vm/setup-zfs.sh >/dev/null
in_vm 900 scripts/containerd-e2e.sh --vm devmapper zfs
in_vm 1200 scripts/containerd-tests.sh --vm zfs
# the storm (see scripts/storm.sh) on devmapper: two processes for GRAPHDRIVER_VM_STORM_SECS
# (default 15) seconds, then no dm device, loop device or mount left, fsck clean
echo "--- in the VM: storm on devmapper"
in_vm 600 "$G" vm --modules loop,dm-thin-pool -- "$G" --driver devmapper \
  --root /var/tmp/graphdriver-test/storm-devmapper storm --procs 2 --secs "${GRAPHDRIVER_VM_STORM_SECS:-15}"
# the suite again with xfs on the thin devices (8 minutes more under emulation, so not in CI
# by default): GRAPHDRIVER_DM_XFS_SUITE=1
if [ "${GRAPHDRIVER_DM_XFS_SUITE:-0}" = 1 ]; then
  echo "--- in the VM: conformance suite on devmapper with dm.fs=xfs"
  GRAPHDRIVER_REQUIRE=devmapper "$G" vm --modules loop,dm-thin-pool -- "$G" check --driver devmapper --opt dm.fs=xfs
fi
