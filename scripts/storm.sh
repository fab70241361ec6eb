#!/usr/bin/env bash
# The storm (`graphctl storm`) on each backend: PROCS worker processes for SECS seconds, each
# mixing create, mount + write, apply, diff, changes and remove over shared parents on one
# root, then the checks (no mount left, fsck clean, every surviving layer's content as its
# history says). Roots on an ext4 loop filesystem kept on a tmpfs (btrfs on a loop image in
# it), so nothing is left behind and the root disk's slowness does not set the pace.
#   scripts/storm.sh [--procs N] [--secs S] [--seed X] [BACKEND...]
#                     (default: 4 processes, 15 s, seed 1, vfs overlay2 btrfs)
# Prints each backend's figures; exits 1 on any failure. Run as root. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
PROCS=4 SECS=15 SEED=1 BACKENDS=()
while [ $# -gt 0 ]; do
  case $1 in
    --procs) PROCS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -*) echo "usage: scripts/storm.sh [--procs N] [--secs S] [--seed X] [BACKEND...]" >&2; exit 2 ;;
    *) BACKENDS+=("$1"); shift ;;
  esac
done
[ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(vfs overlay2 btrfs)
G=${GRAPHCTL:-$PWD/target/release/graphctl}
[ -x "$G" ] || cargo build --release -q -p graphctl --bin graphctl --features failpoints

W=$(mktemp -d /var/tmp/graphdriver-storm.XXXXXX)
cleanup() {
  awk -v d="$W/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  losetup -a | awk -F: -v d="$W/" 'index($0, d) {print $1}' | xargs -r -n1 losetup -d 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/m" "$W/t"
mount -t tmpfs -o size=6g tmpfs "$W/m"
truncate -s 5G "$W/m/fs.img"
mkfs.ext4 -q "$W/m/fs.img"
mount -o loop "$W/m/fs.img" "$W/t"
failed=0
for b in "${BACKENDS[@]}"; do
  opts=()
  [ "$b" = btrfs ] && opts=(--opt btrfs.loopback=3G)
  if ! "$G" --driver "$b" --root "$W/t/$b" "${opts[@]}" storm --procs "$PROCS" --secs "$SECS" --seed "$SEED"; then
    echo "storm: $b FAILED" >&2
    failed=1
  fi
done
exit $failed
