#!/usr/bin/env bash
# graphdriver under containerd beside containerd's built-in snapshotters, with the same
# commands, in one run: graphdriver-overlay2 against overlayfs (both on one ext4 loop
# filesystem), graphdriver-btrfs against btrfs (btrfs), graphdriver-vfs against native (xfs);
# a private containerd (scripts/containerd.sh, GRAPHDRIVER_CONTAINERD_BENCH=1) serves all six.
# Measured, alternating the two of each pair round by round:
#   - import + unpack: `ctr images import --snapshotter S` of the Debian test image (two
#     gzip layers), after `ctr images rm --sync` removed it and its content for both;
#   - `ctr run --rm --snapshotter S IMAGE ID true`;
#   - Prepare (with Mounts), Commit and Remove of a snapshot on the image's top layer, through
#     containerd's snapshot API (a Go client, containerd/gotest/src/graphdriver/latency: no
#     process start in the figure).
# The figures join the bench report in DIR (workload "containerd" in report.json, with
# ratios to the built-in; report.md and report.html are written again).
#   scripts/containerd-bench.sh [--quick] [--out DIR] [--pairs A=B,...] [--rounds R] [--n N]
#        (default: bench-report, the three pairs above, 3 rounds and 50 latency rounds;
#         --quick: 1 and 10)
#   scripts/containerd-bench.sh --vm [--out DIR]
#        (in the test VM, where device-mapper is: graphdriver-devmapper against containerd's
#         devmapper on a thin pool of its own, both ext4 on thin devices of 10 GB; 1 round and
#         5 latency rounds: under emulation each dmsetup containerd runs takes 0.2-2 s)
# Run as root. Installs what it needs; safe to run twice; leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-report ROUNDS=3 N=50 PAIRS=overlay2=overlayfs,btrfs=btrfs,vfs=native VM=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) ROUNDS=1 N=10; shift ;;
    --out) OUT=$2; shift 2 ;;
    --pairs) PAIRS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --vm) VM=1; shift ;;
    *) echo "usage: scripts/containerd-bench.sh [--quick] [--out DIR] [--pairs A=B,...] [--rounds R] [--n N] | --vm [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -s "$OUT/report.json" ] || { echo "containerd-bench: no $OUT/report.json (run graphctl bench --out $OUT first)" >&2; exit 1; }
scripts/install-deps.sh --containerd
. scripts/test-image.sh   # ROOTFS, IMAGE, NAME
G=${GRAPHCTL:-$PWD/target/release/graphctl}
[ -x "$G" ] || cargo build --release -q -p graphctl --bin graphctl --features failpoints
export GO111MODULE=off GOPATH=$PWD/containerd/gotest:/usr/share/gocode
export GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graphdriver/go-build}
LATENCY=$PWD/target/containerd-latency.test
[ "$LATENCY" -nt containerd/gotest/src/graphdriver/latency/latency_test.go ] ||
  (cd containerd/gotest/src/graphdriver/latency && go test -c -o "$LATENCY" .)

if [ -n "$VM" ]; then
  vm/setup.sh >/dev/null
  export GRAPHDRIVER_ROOTFS_TAR=$ROOTFS
  OUT=$(realpath "$OUT")
  exec "$G" vm --mem 6G --share "$OUT" --modules loop,dm-thin-pool,overlay -- bash -c '
    mount -t cgroup2 cgroup2 /sys/fs/cgroup &&
    exec scripts/containerd-bench.sh --pairs devmapper=devmapper --rounds 1 --n 5 --out "$1"' - "$OUT"
fi
export GRAPHDRIVER_CONTAINERD_DIR=${GRAPHDRIVER_CONTAINERD_DIR:-/var/tmp/graphdriver-containerd-bench}
DIR=$GRAPHDRIVER_CONTAINERD_DIR
trap 'scripts/containerd.sh stop' EXIT
IFS=, read -r -a PAIRS <<<"$PAIRS"
GRAPHDRIVER_CONTAINERD_BENCH=1 scripts/containerd.sh start "${PAIRS[@]%%=*}"
CTR="ctr --address $DIR/containerd.sock --namespace graphdriver"
RAW=$DIR/raw.jsonl
: > "$RAW"
now() { date +%s%N; }
record() { # record SNAPSHOTTER OP SECONDS
  printf '{"snapshotter": "%s", "op": "%s", "seconds": [%s]}\n' "$1" "$2" "$3" >> "$RAW"
}
secs() { python3 -c "import sys; print(($2 - $1) / 1e9)" ; }
# the file data read once, so no round pays for the first read: the image, and what runs a
# container (in the VM these come over 9p)
cat "$IMAGE" "$(command -v containerd-shim-runc-v2)" "$(command -v runc)" "$G" > /dev/null
for r in $(seq "$ROUNDS"); do
  for p in "${PAIRS[@]}"; do
    ours=graphdriver-${p%%=*} theirs=${p#*=}
    # alternate which goes first
    order=("$ours" "$theirs"); [ $((r % 2)) = 0 ] && order=("$theirs" "$ours")
    for s in "${order[@]}"; do
      $CTR images rm --sync "$NAME" >/dev/null 2>&1 || true
      t=$(now); $CTR images import --snapshotter "$s" "$IMAGE" >/dev/null; record "$s" import "$(secs "$t" "$(now)")"
      t=$(now); $CTR run --rm --snapshotter "$s" "$NAME" "bench-$r" true; record "$s" run "$(secs "$t" "$(now)")"
    done
  done
  echo "containerd-bench: round $r of $ROUNDS" >&2
done
# the image unpacked for all six, then snapshot latency pair by pair
$CTR images rm --sync "$NAME" >/dev/null 2>&1 || true
for p in "${PAIRS[@]}"; do
  for s in "graphdriver-${p%%=*}" "${p#*=}"; do $CTR images import --snapshotter "$s" "$IMAGE" >/dev/null; done
done
GRAPHDRIVER_LATENCY_ADDRESS=$DIR/containerd.sock GRAPHDRIVER_LATENCY_N=$N \
  GRAPHDRIVER_LATENCY_PAIRS=$(IFS=,; sed 's/\([a-z0-9]*\)=/graphdriver-\1=/g' <<<"${PAIRS[*]}") \
  "$LATENCY" -test.count=1 -test.run TestLatency | grep '^{' >> "$RAW"
$CTR images rm --sync "$NAME" >/dev/null 2>&1 || true

# into the report: each graphdriver series beside its built-in's, medians and ratios
python3 - "$RAW" "$OUT/report.json" "$ROUNDS" "$N" "${PAIRS[@]}" <<'PY'
import json, statistics, sys
raw, report, rounds, n, pairs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
fs = {"overlay2": "ext4", "btrfs": "btrfs", "vfs": "xfs", "devmapper": "ext4 on dm-thin, in the VM"}
series = {}
for line in open(raw):
    s = json.loads(line)
    series.setdefault((s["snapshotter"], s["op"]), []).extend(s["seconds"])
what = {
    "import": ("ctr images import (import + unpack)", "import + unpack"),
    "run": ("ctr run --rm IMAGE true", "run"),
    "prepare": ("Prepare + Mounts", f"snapshot latency, {n} rounds"),
    "commit": ("Commit", f"snapshot latency, {n} rounds"),
    "remove": ("Remove", f"snapshot latency, {n} rounds"),
}
def m(backend, subject, param, v):
    return {"workload": "containerd", "backend": backend, "subject": subject, "param": param,
            "unit": "s", "n": len(v), "median": statistics.median(v), "min": min(v),
            "max": max(v), "ratio_to_baseline": None, "baseline": None}
out = []
for p in pairs:
    ours, theirs = p.split("=")
    label = f"{ours} ({fs[ours]})"
    for op, (subj, param) in what.items():
        a, b = series[(f"graphdriver-{ours}", op)], series[(theirs, op)]
        mine = m(label, f"{subj}: graphdriver-{ours}", f"{param}", a)
        base = m(f"baseline for {label}", f"{subj}: containerd {theirs}", f"{param}", b)
        if base["median"] > 0:
            mine["ratio_to_baseline"] = mine["median"] / base["median"]
            mine["baseline"] = base["subject"]
        out += [mine, base]
        print(f"{label:16} {op:8} {mine['median']*1e3:10.1f} ms   containerd {theirs:9} {base['median']*1e3:10.1f} ms   {mine['ratio_to_baseline'] or 0:.3g}x")
r = json.load(open(report))
# this run's pairs replace their earlier figures; other pairs' (the VM's) stay
mine = {x["backend"] for x in out}
r["measurements"] = [x for x in r["measurements"]
                     if x["workload"] != "containerd" or x["backend"] not in mine] + out
json.dump(r, open(report, "w"), indent=2)
PY
"$G" bench --render --out "$OUT" >/dev/null
scripts/containerd.sh stop
trap - EXIT
echo "containerd-bench: the containerd section of $OUT/report.md"
