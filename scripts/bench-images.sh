#!/usr/bin/env bash
# Image import beside the peers: the Debian test image (scripts/oci-image.py: the rootfs as
# one gzip layer and a small layer on top, an OCI layout tar) imported by
#   - `graphctl image import` (overlay2),
#   - `ctr images import` (containerd 1.6, its overlayfs snapshotter; the import unpacks),
#   - `podman load` (podman 4.3, its overlay driver),
# and GNU tar extracting the same gzip layer (`tar -xzpf`, the floor), each on its own fresh
# root on one ext4 loop filesystem (kept on a tmpfs: / here is slow and noisy for heavy
# writes), in rounds that rotate the order so the shared machine's noise falls on all. The
# archive is read once first (warm page cache). Prints a Markdown table of medians with
# ratios to graphctl and writes it to OUT.
#   scripts/bench-images.sh [--rounds N] [--out FILE]   (default: 3, target/bench-images.md)
# Run as root. Installs what it needs; safe to run twice; leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 OUT=target/bench-images.md
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: scripts/bench-images.sh [--rounds N] [--out FILE]" >&2; exit 2 ;;
  esac
done
scripts/install-deps.sh
scripts/install-deps.sh --containerd
scripts/install-deps.sh --podman
. scripts/test-image.sh   # ROOTFS, IMAGE, NAME
G=${GRAPHCTL:-$PWD/target/release/graphctl}
[ -x "$G" ] || cargo build --release -q -p graphctl --bin graphctl --features failpoints

W=$(mktemp -d /var/tmp/graphdriver-bench-images.XXXXXX)
cleanup() {
  for d in "$W"/t/ctd-*; do
    [ -d "$d" ] && GRAPHDRIVER_CONTAINERD_DIR=$d scripts/containerd.sh stop >/dev/null 2>&1 || true
  done
  awk -v d="$W/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  losetup -a | awk -F: -v d="$W/" 'index($0, d) {print $1}' | xargs -r -n1 losetup -d 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/m"
mount -t tmpfs -o size=8g tmpfs "$W/m"
truncate -s 7G "$W/m/fs.img"
mkfs.ext4 -q "$W/m/fs.img"
mkdir "$W/t"
mount -o loop "$W/m/fs.img" "$W/t"
T=$W/t
# the big layer alone, for GNU tar
python3 - "$IMAGE" "$T/layer.tar.gz" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
idx = json.load(t.extractfile("index.json"))
blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":")[1])
m = json.load(blob(idx["manifests"][0]["digest"]))
big = max(m["layers"], key=lambda l: l["size"])
open(sys.argv[2], "wb").write(blob(big["digest"]).read())
PY
cat "$IMAGE" "$T/layer.tar.gz" >/dev/null

now() { date +%s.%N; }
declare -A times
run_tool() { # TOOL ROUND: one timed import on a fresh root, then removal (untimed)
  local tool=$1 r=$2 s e
  case $tool in
    graphctl)
      s=$(now); "$G" --driver overlay2 --root "$T/gd-$r" image import "$IMAGE" >/dev/null; e=$(now)
      "$G" --driver overlay2 --root "$T/gd-$r" image rm docker.io/library/debian-graphdriver:test >/dev/null
      rm -rf "$T/gd-$r" ;;
    ctr)
      GRAPHDRIVER_CONTAINERD_DIR=$T/ctd-$r scripts/containerd.sh start overlay2 >/dev/null
      local ctr
      ctr=$(GRAPHDRIVER_CONTAINERD_DIR=$T/ctd-$r scripts/containerd.sh env | sed -n 's/^CTR=//p' | tr -d "'\"")
      s=$(now); $ctr images import --snapshotter overlayfs "$IMAGE" >/dev/null; e=$(now)
      GRAPHDRIVER_CONTAINERD_DIR=$T/ctd-$r scripts/containerd.sh stop >/dev/null ;;
    podman)
      # podman refuses a runroot longer than 50 characters
      local p=(podman --root "$T/pod-$r/root" --runroot "/run/gd-bench-podman-$r" --storage-driver overlay)
      s=$(now); "${p[@]}" load -q -i "$IMAGE" >/dev/null; e=$(now)
      "${p[@]}" system reset -f >/dev/null 2>&1 || true
      awk -v d="$T/pod-$r/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
      rm -rf "$T/pod-$r" "/run/gd-bench-podman-$r" ;;
    tar)
      mkdir "$T/tar-$r"
      s=$(now); tar --xattrs --xattrs-include='*' --numeric-owner -xzpf "$T/layer.tar.gz" -C "$T/tar-$r"; e=$(now)
      rm -rf "$T/tar-$r" ;;
  esac
  sync
  times[$tool]+="$(awk -v a="$e" -v b="$s" 'BEGIN {printf "%.6f", a - b}') "
}
TOOLS=(graphctl ctr podman tar)
for r in $(seq 0 "$ROUNDS"); do # round 0 is a warm-up
  for i in "${!TOOLS[@]}"; do
    tool=${TOOLS[$(( (i + r) % ${#TOOLS[@]} ))]}
    run_tool "$tool" "$r"
    [ "$r" -gt 0 ] || times[$tool]=
  done
  [ "$r" -eq 0 ] || echo "bench-images: round $r of $ROUNDS done" >&2
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
g=$(median <<<"${times[graphctl]}")
mkdir -p "$(dirname "$OUT")"
{
  echo "Import of the Debian test image ($(du -m "$IMAGE" | cut -f1) MB OCI archive, two gzip layers), median of $ROUNDS rounds after a warm-up, on one ext4 loop filesystem:"
  echo
  echo "| what | median | ratio to graphctl |"
  echo "|---|---|---|"
  for tool in "${TOOLS[@]}"; do
    m=$(median <<<"${times[$tool]}")
    case $tool in
      graphctl) what='`graphctl image import` (overlay2)' ;;
      ctr) what='`ctr images import` (containerd 1.6, overlayfs)' ;;
      podman) what='`podman load` (podman 4.3, overlay)' ;;
      tar) what='`tar -xzpf` of the big layer' ;;
    esac
    printf '| %s | %.2f s | %.2fx |\n' "$what" "$m" "$(awk -v a="$m" -v b="$g" 'BEGIN {print a / b}')"
  done
} | tee "$OUT"
