#!/usr/bin/env bash
# A private containerd for the tests and the bench: its own root, state, sockets and config
# under DIR (default /var/tmp/graphdriver-containerd), CRI off, and one graphdriver
# snapshotter per backend as a proxy plugin named graphdriver-BACKEND (each a `graphctl
# snapshotter` with its own driver root under DIR). Nothing outside DIR is touched but the
# shims' sockets, which containerd 1.6 keeps under /run/containerd/s and removes with them.
#   scripts/containerd.sh start [BACKEND...]   (default: vfs overlay2 btrfs; zfs also needs
#                                               GRAPHDRIVER_CONTAINERD_ZFS=POOL/DATASET, the
#                                               parent dataset of its layers)
#   scripts/containerd.sh stop                 (stops everything, unmounts, removes DIR)
#   GRAPHDRIVER_CONTAINERD_BENCH=1 scripts/containerd.sh start BACKEND...
#                                  (for scripts/containerd-bench.sh: each graphdriver root and
#                                   containerd's built-in snapshotter it is compared with on
#                                   one loop filesystem of DIR's, their images on a tmpfs:
#                                   ext4 for overlay2 and overlayfs, xfs for vfs and native,
#                                   btrfs for btrfs and btrfs; with devmapper, containerd's
#                                   devmapper too, on a thin pool of its own on loop devices
#                                   of files in DIR, removed by stop)
#   scripts/containerd.sh env                  (prints CTR=..., the ctr command line to use)
#   scripts/containerd.sh restart-snapshotter BACKEND
#                                  (stops that backend's snapshotter, SIGKILL after 5 s, and
#                                   starts it again on the same root and socket; the new one
#                                   gets this environment, so GRAPHDRIVER_FAILPOINT=NAME set
#                                   here makes it abort at that point: scripts/containerd-kill.sh)
# Installs Debian's containerd and runc when missing. Run as root. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${GRAPHDRIVER_CONTAINERD_DIR:-/var/tmp/graphdriver-containerd}
G=${GRAPHCTL:-$PWD/target/release/graphctl}
SOCK=$DIR/containerd.sock
CTR="ctr --address $SOCK --namespace graphdriver"

wait_for() { # wait_for PATH SECONDS
  local i=0
  while [ ! -S "$1" ]; do
    i=$((i + 1)); [ "$i" -le $(( $2 * 10 )) ] || { echo "containerd.sh: no socket $1" >&2; return 1; }
    sleep 0.1
  done
}

stop_pid() { # stop_pid PIDFILE SECONDS: SIGTERM, SIGKILL after SECONDS
  [ -f "$1" ] || return 0
  kill -TERM "$(cat "$1")" 2>/dev/null || true
  for _ in $(seq $(( $2 * 10 ))); do kill -0 "$(cat "$1")" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$(cat "$1")" 2>/dev/null || true
  rm -f "$1"
}

stop() {
  [ -d "$DIR" ] || return 0
  # containerd first, so the snapshotters' connections end; then the snapshotters, each
  # given its 5 s grace for calls in flight and the time to release its driver
  stop_pid "$DIR/containerd.pid" 10
  for p in "$DIR"/*.pid; do
    [ -f "$p" ] || continue
    kill -TERM "$(cat "$p")" 2>/dev/null || true
  done
  for p in "$DIR"/*.pid; do stop_pid "$p" 30; done
  # what the snapshotters and containerd held, deepest first
  awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # containerd's devmapper's pool (bench), its thin devices first
  if [ -e "$DIR/ctrd-pool-data" ]; then
    dmsetup ls 2>/dev/null | awk '$1 ~ /^graphdriver-bench-pool-snap-/ {print $1}' |
      while read -r d; do dmsetup remove "$d" 2>/dev/null || true; done
    dmsetup remove graphdriver-bench-pool 2>/dev/null || true
    for f in "$DIR"/ctrd-pool-data "$DIR"/ctrd-pool-meta; do
      losetup -j "$f" | cut -d: -f1 | while read -r l; do losetup -d "$l" || true; done
    done
  fi
  rm -rf "$DIR"
}

# containerd's devmapper's thin pool (bench): 8 GiB of data, 256 MiB of metadata
bench_pool() {
  local data meta
  truncate -s 8G "$DIR/ctrd-pool-data"; truncate -s 256M "$DIR/ctrd-pool-meta"
  data=$(losetup --find --show "$DIR/ctrd-pool-data")
  meta=$(losetup --find --show "$DIR/ctrd-pool-meta")
  dd if=/dev/zero of="$meta" bs=4096 count=1 status=none
  dmsetup create graphdriver-bench-pool \
    --table "0 $(blockdev --getsz "$data") thin-pool $meta $data 128 32768 1 skip_block_zeroing"
}

BENCH=${GRAPHDRIVER_CONTAINERD_BENCH:-}
# the bench's filesystem for a backend (graphdriver's or containerd's built-in)
fs_of() { case $1 in overlay2|overlayfs) echo ext4 ;; vfs|native) echo xfs ;; btrfs) echo btrfs ;; *) return 1 ;; esac; }

# the bench's loop filesystems, DIR/ext4, DIR/xfs and DIR/btrfs (images on /dev/shm)
bench_filesystems() {
  local f img
  for f in ext4 xfs btrfs; do
    img=/dev/shm/graphdriver-containerd-bench-$f.img
    rm -f "$img"; truncate -s 8G "$img"
    case $f in
      ext4) mkfs.ext4 -q -F "$img" ;;
      xfs) mkfs.xfs -q -f "$img" ;;
      btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
    esac
    mkdir -p "$DIR/$f"
    mount -o loop "$img" "$DIR/$f"
    rm -f "$img"   # the mount keeps it; nothing is left once it is unmounted
  done
}

gd_root() { # gd_root BACKEND: the driver root of graphdriver-BACKEND
  if [ -n "$BENCH" ] && fs_of "$1" >/dev/null; then echo "$DIR/$(fs_of "$1")/gd-$1"; else echo "$DIR/gd-$1"; fi
}

start_snapshotter() { # start_snapshotter BACKEND: in the background, its pid in DIR
  local b=$1 opts=()
  case $b in
    btrfs) [ -n "$BENCH" ] || opts=(--opt btrfs.loopback=8G) ;;
    zfs) opts=(--opt "zfs.fsname=${GRAPHDRIVER_CONTAINERD_ZFS:?zfs: set GRAPHDRIVER_CONTAINERD_ZFS to the parent dataset of its layers}") ;;
  esac
  # a crash point aborts the process: no core file
  (ulimit -c 0; exec "$G" --driver "$b" --root "$(gd_root "$b")" "${opts[@]}" snapshotter \
     --address "$DIR/graphdriver-$b.sock") >>"$DIR/graphdriver-$b.log" 2>&1 &
  echo $! > "$DIR/graphdriver-$b.pid"
}

alive() { # alive PID: running, not a zombie waiting for init to reap it
  local s
  s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "${s%% *}" != Z ]
}

stop_snapshotter() { # stop_snapshotter BACKEND: SIGTERM, SIGKILL after 5 s
  local p=$DIR/graphdriver-$1.pid
  [ -f "$p" ] || return 0
  kill -TERM "$(cat "$p")" 2>/dev/null || true
  for _ in $(seq 100); do alive "$(cat "$p")" || break; sleep 0.05; done
  kill -KILL "$(cat "$p")" 2>/dev/null || true
  rm -f "$p"
}

case ${1:-} in
  start)
    shift
    BACKENDS=("$@"); [ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(vfs overlay2 btrfs)
    scripts/install-deps.sh --containerd
    # the kill tests abort the service at crash points: a graphctl without them is rebuilt
    if [ ! -x "$G" ] || [ "$("$G" __conformance-helper failpoints 2>/dev/null)" != true ]; then
      cargo build --release -q -p graphctl --bin graphctl --features failpoints
    fi
    stop
    mkdir -p "$DIR"
    DM_BUILTIN=
    if [ -n "$BENCH" ]; then
      bench_filesystems
      [[ " ${BACKENDS[*]} " == *" devmapper "* ]] && { DM_BUILTIN=1; bench_pool; }
    fi
    DISABLED='"io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.zfs"'
    [ -n "$DM_BUILTIN" ] || DISABLED+=', "io.containerd.snapshotter.v1.devmapper"'
    {
      echo 'version = 2'
      echo "root = \"$DIR/root\""
      echo "state = \"$DIR/state\""
      echo "disabled_plugins = [$DISABLED]"
      echo '[grpc]'
      echo "  address = \"$SOCK\""
      echo '[ttrpc]'
      echo "  address = \"$SOCK.ttrpc\""
      echo '[debug]'
      echo '  address = ""'
      echo '[metrics]'
      echo '  address = ""'
      if [ -n "$BENCH" ]; then
        for b in overlayfs native btrfs; do
          echo "[plugins.\"io.containerd.snapshotter.v1.$b\"]"
          echo "  root_path = \"$DIR/$(fs_of $b)/containerd-$b\""
        done
      fi
      if [ -n "$DM_BUILTIN" ]; then
        echo '[plugins."io.containerd.snapshotter.v1.devmapper"]'
        echo "  root_path = \"$DIR/containerd-devmapper\""
        echo '  pool_name = "graphdriver-bench-pool"'
        echo '  base_image_size = "10GB"'
      fi
      for b in "${BACKENDS[@]}"; do
        echo "[proxy_plugins.graphdriver-$b]"
        echo '  type = "snapshot"'
        echo "  address = \"$DIR/graphdriver-$b.sock\""
      done
    } > "$DIR/config.toml"
    for b in "${BACKENDS[@]}"; do start_snapshotter "$b"; done
    for b in "${BACKENDS[@]}"; do wait_for "$DIR/graphdriver-$b.sock" 60; done
    containerd --config "$DIR/config.toml" >"$DIR/containerd.log" 2>&1 &
    echo $! > "$DIR/containerd.pid"
    wait_for "$SOCK" 60
    echo "containerd.sh: containerd $(containerd --version | awk '{print $3}') at $SOCK with graphdriver-{$(IFS=,; echo "${BACKENDS[*]}")}" >&2
    ;;
  stop) stop ;;
  env) echo "CTR=\"$CTR\"" ;;
  restart-snapshotter)
    b=${2:?usage: scripts/containerd.sh restart-snapshotter BACKEND}
    grep -qx "\[proxy_plugins.graphdriver-$b\]" "$DIR/config.toml" 2>/dev/null ||
      { echo "containerd.sh: no graphdriver-$b in a running containerd at $DIR" >&2; exit 1; }
    stop_snapshotter "$b"
    # the socket a killed one left would pass for the new one's
    rm -f "$DIR/graphdriver-$b.sock"
    start_snapshotter "$b"
    for i in $(seq 1200); do
      [ ! -S "$DIR/graphdriver-$b.sock" ] || break
      alive "$(cat "$DIR/graphdriver-$b.pid")" ||
        { echo "containerd.sh: graphdriver-$b exited; see $DIR/graphdriver-$b.log" >&2; exit 1; }
      [ "$i" -lt 1200 ] || { echo "containerd.sh: no socket $DIR/graphdriver-$b.sock" >&2; exit 1; }
      sleep 0.05
    done
    ;;
  *) echo "usage: scripts/containerd.sh start [BACKEND...] | stop | env | restart-snapshotter BACKEND" >&2; exit 2 ;;
esac
