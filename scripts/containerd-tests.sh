#!/usr/bin/env bash
# containerd's own snapshotter test suite (Debian's containerd 1.6 snapshots/testsuite, in
# GOPATH mode with Debian's Go) against graphdriver's snapshot service, through
# snapshots/proxy over a unix socket, as containerd reaches it: one run per backend.
#   scripts/containerd-tests.sh [DRIVER...]     (default: vfs overlay2 btrfs)
# Installs what it needs (golang-go, golang-github-containerd-containerd-dev, containerd,
# runc); builds graphctl if it is missing. Run as root. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --containerd
G=$PWD/target/release/graphctl
[ -x "$G" ] || cargo build --release -q -p graphdriver-harness --bin graphctl
DRIVERS=("$@")
[ ${#DRIVERS[@]} -gt 0 ] || DRIVERS=(vfs overlay2 btrfs)
export GO111MODULE=off GOPATH=$PWD/containerd/gotest:/usr/share/gocode
export GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graphdriver/go-build}
# the suite's scratch roots go where its os.MkdirTemp puts them: /var/tmp (not the root disk's /tmp)
export TMPDIR=${TMPDIR:-/var/tmp}
export GRAPHCTL=$G
status=0
for d in "${DRIVERS[@]}"; do
  opts=""
  [ "$d" = btrfs ] && opts="btrfs.loopback=2G"
  echo "--- containerd's snapshotter suite on $d"
  log=$(mktemp /var/tmp/graphdriver-ctrd-suite.XXXXXX)
  if (export GRAPHDRIVER_SUITE_DRIVER=$d GRAPHDRIVER_SUITE_OPTS=$opts
      cd containerd/gotest/src/graphdriver/suite && go test -count=1 -v -timeout 20m .) >"$log" 2>&1; then
    ok=1
  else
    ok=0; status=1
  fi
  grep -E '^\s*--- (FAIL|SKIP)|^\s+testsuite.go:[0-9]+:' "$log" || true
  p=$(grep -cE '^\s+--- PASS: TestContainerdSnapshotterSuite/' "$log" || true)
  f=$(grep -cE '^\s+--- FAIL: TestContainerdSnapshotterSuite/' "$log" || true)
  s=$(grep -cE '^\s+--- SKIP: TestContainerdSnapshotterSuite/' "$log" || true)
  echo "containerd suite on $d: $p passed, $f failed, $s skipped"
  [ "$ok" = 1 ] && rm -f "$log" || echo "full log: $log"
done
exit $status
