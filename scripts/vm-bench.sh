#!/usr/bin/env bash
# The benchmarks of the backend only the VM's kernel has, in one command (as root; installs
# what it needs, safe to run twice):
#   1. create + mount of a container layer, devmapper beside overlay2 in the same VM run:
#      medians of GRAPHDRIVER_BENCH_REPS rounds (default 20) and their ratio
#      (GRAPHDRIVER_DM_BENCH_OPTS=dm.fs=xfs for xfs on the thin devices);
#   2. the bench report, `graphctl bench --quick` of devmapper and overlay2 in the VM, written
#      to OUT (default bench-report-vm). Its image is the first 2000 entries of the Debian
#      rootfs: under software emulation the whole one takes too long;
#   3. graphdriver-devmapper under containerd beside containerd's own devmapper
#      (scripts/containerd-bench.sh --vm), the containerd section of that report.
#   About 30 minutes here.
#   scripts/vm-bench.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-bench-report-vm}")
vm/setup.sh >/dev/null
. scripts/test-binaries.sh
build_workspace
G=$PWD/target/release/graphctl
bin=$(test_binaries devmapper)
[ -n "$bin" ] || { echo "vm-bench: no test binary" >&2; exit 1; }
echo "--- in the VM: create + mount of a container layer, devmapper against overlay2"
"$G" vm --modules loop,dm-thin-pool -- "$bin" --ignored --nocapture container_layer

TAR=$(scripts/debian-rootfs.sh)
SMALL=${TAR%.tar}-first2000.tar
[ -s "$SMALL" ] || python3 - "$TAR" "$SMALL" <<'PY'
import os, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
with tarfile.open(src) as i, tarfile.open(dst + ".tmp", "w", format=tarfile.PAX_FORMAT) as o:
    for n, m in enumerate(i):
        if n == 2000:
            break
        o.addfile(m, i.extractfile(m) if m.isfile() else None)
os.rename(dst + ".tmp", dst)
PY
mkdir -p "$OUT"
echo "--- in the VM: graphctl bench --quick --drivers devmapper,overlay2 (report in $OUT)"
"$G" vm --mem 8G --share "$OUT" --modules loop,dm-thin-pool -- \
  "$G" bench --quick --drivers devmapper,overlay2 --image "$SMALL" --out "$OUT" \
  --root /var/tmp/graphdriver-vm-bench
echo "--- in the VM: graphdriver-devmapper under containerd beside containerd's devmapper"
scripts/containerd-bench.sh --vm --out "$OUT"
