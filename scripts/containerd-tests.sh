#!/usr/bin/env bash
# containerd's own snapshotter test suite (Debian's containerd 1.6 snapshots/testsuite, in
# GOPATH mode with Debian's Go) against graphdriver's snapshot service, through
# snapshots/proxy over a unix socket, as containerd reaches it: one run per backend.
#   scripts/containerd-tests.sh [DRIVER...]     (default: vfs overlay2 btrfs)
#   scripts/containerd-tests.sh --vm devmapper zfs
#                        (in the test VM, `graphctl vm`: device-mapper and ZFS are not in
#                         this host's kernel; zfs needs vm/setup-zfs.sh, and each case's
#                         layers get a dataset of their own on a pool in the guest's memory)
# The suite is compiled once here (`go test -c`) and the binary runs on the host or in the
# VM. Each run must end as containerd's own `native` snapshotter does here: 20 passed, 1
# skipped (Rename), none failed.
# Installs what it needs (golang-go, golang-github-containerd-containerd-dev, containerd,
# runc); builds graphctl if it is missing. Run as root. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
VM=
[ "${1:-}" = --vm ] && { VM=1; shift; }
scripts/install-deps.sh --containerd
G=$PWD/target/release/graphctl
[ -x "$G" ] || cargo build --release -q -p graphctl --bin graphctl --features failpoints
DRIVERS=("$@")
[ ${#DRIVERS[@]} -gt 0 ] || DRIVERS=(vfs overlay2 btrfs)
export GO111MODULE=off GOPATH=$PWD/containerd/gotest:/usr/share/gocode
export GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graphdriver/go-build}
SUITE=$PWD/target/containerd-snapshotter-suite.test
(cd containerd/gotest/src/graphdriver/suite && go test -c -o "$SUITE" .)
status=0
for d in "${DRIVERS[@]}"; do
  opts=""
  [ "$d" = btrfs ] && opts="btrfs.loopback=2G"
  # the suite's scratch roots go where its os.MkdirTemp puts them: /var/tmp (not the root
  # disk's /tmp); in the VM one case at a time, since each devmapper root's pool lives in the
  # guest's memory
  run=(env GRAPHCTL="$G" GRAPHDRIVER_SUITE_DRIVER="$d" GRAPHDRIVER_SUITE_OPTS="$opts"
       TMPDIR=/var/tmp "$SUITE" -test.v -test.count=1 -test.timeout 20m)
  if [ -n "$VM" ]; then
    run+=(-test.parallel 1)
    case $d in
      devmapper) run=("$G" vm --mem 4G --modules loop,dm-thin-pool -- "${run[@]}") ;;
      zfs) # a small ARC beside the pool's file; the pool itself has no mountpoint
        run=("$G" vm --mem 4G --modules loop,zfs -- bash -c '
          echo $((256 << 20)) > /sys/module/zfs/parameters/zfs_arc_max
          truncate -s 3G /dev/shm/suite.img && zpool create -o cachefile=none -m none gdsuite /dev/shm/suite.img || exit 1
          GRAPHDRIVER_SUITE_ZFS_POOL=gdsuite "$@"; rc=$?
          zpool destroy gdsuite; exit $rc' - "${run[@]}") ;;
      *) echo "containerd-tests: no VM set-up for $d" >&2; exit 2 ;;
    esac
  fi
  echo "--- containerd's snapshotter suite on $d$([ -n "$VM" ] && echo ' (in the VM)')"
  log=$(mktemp /var/tmp/graphdriver-ctrd-suite.XXXXXX)
  if "${run[@]}" >"$log" 2>&1; then ok=1; else ok=0; fi
  grep -E '^\s*--- (FAIL|SKIP)|^\s+testsuite.go:[0-9]+:|^graphctl vm:' "$log" || true
  p=$(grep -cE '^\s+--- PASS: TestContainerdSnapshotterSuite/' "$log" || true)
  f=$(grep -cE '^\s+--- FAIL: TestContainerdSnapshotterSuite/' "$log" || true)
  s=$(grep -cE '^\s+--- SKIP: TestContainerdSnapshotterSuite/' "$log" || true)
  echo "containerd suite on $d: $p passed, $f failed, $s skipped"
  if [ "$ok" = 1 ] && [ "$p" = 20 ] && [ "$s" = 1 ]; then
    rm -f "$log"
  else
    status=1
    echo "containerd suite on $d: want 20 passed and 1 skipped, as containerd's native; full log: $log"
  fi
done
exit $status
