#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer): builds the targets in fuzz/, seeds each from real
# tars (scripts/fuzz-seeds.py: slices of the Debian rootfs, the suite's layer shapes, hostile
# names, compressed blobs, small image archives) and runs each in turn. A crash, a hang or a
# broken invariant (see each target's comment) fails the run; libFuzzer's reproducer is left
# in fuzz/artifacts/TARGET/ (`cargo fuzz run TARGET FILE` replays it).
#   scripts/fuzz.sh [--time SECS | --runs N] [--asan] [TARGET...]
#     --time SECS   how long each target runs (default 15: the short run of the tests)
#     --runs N      run each target for N executions instead (a campaign: 10000000)
#     --asan        with AddressSanitizer (slower; the default checks Rust's own invariants)
# The corpus of each target grows across runs in $GRAPHDRIVER_CACHE/fuzz/corpus/TARGET.
# Prints, per target: executions, seconds, coverage (libFuzzer's cov and ft) and corpus size.
# The toolchain here is stable: cargo-fuzz's nightly flags are allowed by RUSTC_BOOTSTRAP=1.
# Run as root (the apply target makes devices and sets owners). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
TIME=15 RUNS= SAN=none TARGETS=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) TIME=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --asan) SAN=address; shift ;;
    -*) echo "usage: scripts/fuzz.sh [--time SECS | --runs N] [--asan] [TARGET...]" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(tar_reader entry_names layer_stream apply image_archive)

scripts/install-deps.sh --fuzz
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
CACHE=${GRAPHDRIVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graphdriver}
ROOTFS=${GRAPHDRIVER_ROOTFS_TAR:-$(scripts/debian-rootfs.sh)}
SEEDS=$CACHE/fuzz/seeds
if [ ! -d "$SEEDS" ] || [ scripts/fuzz-seeds.py -nt "$SEEDS" ] || [ "$ROOTFS" -nt "$SEEDS" ]; then
  rm -rf "$SEEDS.new"
  scripts/fuzz-seeds.py "$ROOTFS" "$SEEDS.new"
  rm -rf "$SEEDS"; mv "$SEEDS.new" "$SEEDS"
fi
echo "fuzz: building the targets (sanitizer: $SAN)" >&2
if ! (cd fuzz && cargo fuzz build -O -s "$SAN") >"$CACHE/fuzz/build.log" 2>&1; then
  tail -30 "$CACHE/fuzz/build.log" >&2; echo "fuzz: the build failed" >&2; exit 1
fi

cleanup() { # the targets' scratch directories (named after their pids) of finished runs
  local d
  for d in /dev/shm/graphdriver-fuzz-*; do
    [ -e "$d" ] || continue
    kill -0 "${d##*-}" 2>/dev/null || rm -rf "$d"
  done
}
trap cleanup EXIT
printf '%-14s %12s %6s %8s %8s %7s\n' TARGET EXECUTIONS SECS COV FT CORPUS
for t in "${TARGETS[@]}"; do
  corpus=$CACHE/fuzz/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  limit=(-max_total_time="$TIME")
  [ -z "$RUNS" ] || limit=(-runs="$RUNS")
  log=$(mktemp /var/tmp/graphdriver-fuzz-$t.XXXXXX.log)
  start=$(date +%s)
  if ! (cd fuzz && cargo fuzz run -O -s "$SAN" "$t" "$corpus" "$SEEDS/$t" -- \
        "${limit[@]}" -max_len=65536 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/") >"$log" 2>&1; then
    grep -E -m20 'panicked|ERROR|SUMMARY|Test unit written|^thread' "$log" >&2 || tail -20 "$log" >&2
    echo "fuzz: $t failed (log: $log)" >&2
    exit 1
  fi
  secs=$(( $(date +%s) - start ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  stats=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]* ft: [0-9]*' | tail -1)
  printf '%-14s %12s %6s %8s %8s %7s\n' "$t" "${runs:-?}" "$secs" \
    "$(awk '{print $2}' <<<"$stats")" "$(awk '{print $4}' <<<"$stats")" "$(ls "$corpus" | wc -l)"
  rm -f "$log"
done
