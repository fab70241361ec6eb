#!/usr/bin/env bash
# The main job: a bench report comparing the backends this kernel offers, each beside the
# same work done by standard tools in the same run. Installs what it needs; safe to run twice.
#   scripts/bench.sh [--quick] [--out DIR] [other graphctl bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export GRAPHDRIVER_ROOTFS_TAR=${GRAPHDRIVER_ROOTFS_TAR:-$(scripts/debian-rootfs.sh)}
cargo build --release -p graphdriver-harness --bin graphctl
exec ./target/release/graphctl bench "$@"
