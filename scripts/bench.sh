#!/usr/bin/env bash
# The main job: a bench report comparing the backends this kernel offers, each beside the
# same work done by standard tools in the same run, and graphdriver under containerd beside
# containerd's built-in snapshotters (scripts/containerd-bench.sh: the report's containerd
# section). Installs what it needs; safe to run twice.
#   scripts/bench.sh [--quick] [--out DIR] [other graphctl bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export GRAPHDRIVER_ROOTFS_TAR=${GRAPHDRIVER_ROOTFS_TAR:-$(scripts/debian-rootfs.sh)}
cargo build --release -p graphctl --bin graphctl
OUT=bench-report QUICK=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --out) OUT=${args[i + 1]:-} ;;
    --out=*) OUT=${args[i]#--out=} ;;
    --quick) QUICK=(--quick) ;;
  esac
done
./target/release/graphctl bench "$@"
scripts/containerd-bench.sh "${QUICK[@]}" --out "$OUT"
