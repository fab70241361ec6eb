#!/usr/bin/env bash
# containerd's own snapshotter test suite (Debian's containerd 1.6 snapshots/testsuite, in
# GOPATH mode with Debian's Go) against graphdriver's snapshot service, through
# snapshots/proxy over a unix socket, as containerd reaches it: one run per backend.
#   scripts/containerd-tests.sh [DRIVER...]     (default: vfs overlay2 btrfs)
#   scripts/containerd-tests.sh --vm devmapper  (in the test VM, `graphctl vm`: device-mapper
#                                                is not in this host's kernel)
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
[ -x "$G" ] || cargo build --release -q -p graphdriver-harness --bin graphctl
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
  [ -n "$VM" ] && run=("$G" vm --mem 4G --modules loop,dm-thin-pool -- "${run[@]}" -test.parallel 1)
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
