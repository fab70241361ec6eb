#!/usr/bin/env bash
# End to end with real containerd and runc (Debian's 1.6.20 and 1.1.5) on graphdriver's
# snapshotter, per backend: an OCI archive with two gzip layers made from the Debian rootfs
# is imported with `ctr images import --snapshotter graphdriver-BACKEND`; `ctr run --rm` runs
# /bin/sh in it, writes a file and prints /etc/debian_version, then again in a user namespace
# (`--uidmap --remap-labels`: an idmapped mount, no chowned copy); a snapshot prepared on the
# image is written and committed, and a second container runs on a snapshot of the commit;
# then everything is removed, and no snapshot, mount or loop device of the service's is left.
# On overlay2, a 200-layer image (the rootfs, 198 small layers, the top layer) is imported and
# run the same way: overlay2 mounts it through the new mount API (lowerdir+), one lower per
# layer.
#   scripts/containerd-e2e.sh [BACKEND...]    (default: vfs overlay2 btrfs)
#   scripts/containerd-e2e.sh --vm devmapper zfs
#                      (each in the test VM, `graphctl vm`, where this script runs again with
#                       that backend: cgroup2 mounted for runc; zfs's layers under a dataset
#                       of a pool in the guest's memory, which must be empty at the end)
# The device-mapper devices and loop devices of the service must be gone once it stopped.
# Run as root. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
VM=
[ "${1:-}" = --vm ] && { VM=1; shift; }
BACKENDS=("$@"); [ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(vfs overlay2 btrfs)
. scripts/test-image.sh   # ROOTFS, IMAGE, NAME
IMAGE200=${ROOTFS%.tar}-oci-200.tar
NAME200=docker.io/library/debian-graphdriver:200
[ -s "$IMAGE200" ] && [ "$IMAGE200" -nt "$ROOTFS" ] ||
  scripts/oci-image.py "$ROOTFS" "$IMAGE200" "$NAME200" 200
if [ -n "$VM" ]; then
  scripts/install-deps.sh --containerd
  G=$PWD/target/release/graphctl
  [ -x "$G" ] || cargo build --release -q -p graphctl --bin graphctl --features failpoints
  export GRAPHDRIVER_ROOTFS_TAR=$ROOTFS
  for b in "${BACKENDS[@]}"; do
    echo "--- containerd + runc on graphdriver-$b, in the VM"
    case $b in
      devmapper) "$G" vm --mem 4G --modules loop,dm-thin-pool,overlay -- bash -c '
          mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec scripts/containerd-e2e.sh devmapper' ;;
      zfs) "$G" vm --mem 4G --modules loop,zfs,overlay -- bash -c '
          mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 1
          echo $((256 << 20)) > /sys/module/zfs/parameters/zfs_arc_max
          truncate -s 3G /dev/shm/e2e.img &&
            zpool create -o cachefile=none -m none gde2e /dev/shm/e2e.img &&
            zfs create -o mountpoint=none gde2e/gd || exit 1
          GRAPHDRIVER_CONTAINERD_ZFS=gde2e/gd scripts/containerd-e2e.sh zfs || exit 1
          left=$(zfs list -H -o name -r -t all gde2e/gd | tail -n +2)
          [ -z "$left" ] || { echo "containerd-e2e: zfs datasets left: $left" >&2; exit 1; }
          zpool destroy gde2e' ;;
      *) echo "containerd-e2e: no VM set-up for $b" >&2; exit 2 ;;
    esac
  done
  echo "containerd end to end in the VM: ${BACKENDS[*]} passed"
  exit 0
fi
DIR=${GRAPHDRIVER_CONTAINERD_DIR:-/var/tmp/graphdriver-containerd}
export GRAPHDRIVER_CONTAINERD_DIR=$DIR
trap 'scripts/containerd.sh stop' EXIT
scripts/containerd.sh start "${BACKENDS[@]}"
CTR="ctr --address $DIR/containerd.sock --namespace graphdriver"
MNT=$(mktemp -d /var/tmp/graphdriver-e2e.XXXXXX)
fail() { echo "containerd-e2e: $*" >&2; exit 1; }
passed=0
for b in "${BACKENDS[@]}"; do
  S=graphdriver-$b
  echo "--- containerd + runc on $S"
  t=$(date +%s%N)
  $CTR images import --snapshotter "$S" "$IMAGE" >/dev/null
  echo "import and unpack: $(( ($(date +%s%N) - t) / 1000000 )) ms"
  out=$($CTR run --rm --snapshotter "$S" "$NAME" "run-$b" /bin/sh -c \
        'echo written > /tmp/x && cat /tmp/x /etc/debian_version /etc/graphdriver-release')
  echo "$out"
  [ "$(sed -n 1p <<<"$out")" = written ] || fail "$b: the container could not write"
  grep -qx "$(tar -xOf "$ROOTFS" ./etc/debian_version)" <<<"$out" || fail "$b: wrong /etc/debian_version"
  grep -qx 'graphdriver test image' <<<"$out" || fail "$b: the top layer is missing"
  # in a user namespace: ctr --remap-labels gives the snapshot containerd's uid/gid mapping
  # labels instead of chowning a copy of the image; the service mounts it idmapped (zfs 2.1
  # cannot idmap: the Prepare is refused)
  if out=$($CTR run --rm --snapshotter "$S" --uidmap 0:100000:65536 --gidmap 0:100000:65536 \
        --remap-labels "$NAME" "userns-$b" /bin/sh -c 'read -r i o n < /proc/self/uid_map &&
          echo "$i:$o:$n" && stat -c %u:%g /etc/debian_version && echo written > /etc/userns &&
          stat -c %u:%g /etc/userns' 2>&1); then
    echo "user namespace: $(echo $out)"
    [ "$out" = "$(printf '0:100000:65536\n0:0\n0:0')" ] ||
      fail "$b: in a user namespace, want its root to own the image and its writes: $out"
  elif [ "$b" = zfs ] && grep -q "cannot be idmapped" <<<"$out"; then
    echo "user namespace: refused, as zfs 2.1 cannot idmap"
  else
    fail "$b: a container in a user namespace did not run: $out"
  fi
  # commit: a snapshot on the image's top layer, written through containerd's mount, then a
  # second container on a snapshot of the commit
  top=$($CTR snapshots --snapshotter "$S" ls | awk 'NR > 1 && $2 != "" && $3 == "Committed" {print $1}' | head -1)
  [ -n "$top" ] || fail "$b: no committed top layer"
  $CTR snapshots --snapshotter "$S" prepare work "$top"
  how=$($CTR snapshots --snapshotter "$S" mounts "$MNT" work)
  echo "mounts of an active snapshot: ${how:0:100}..."
  # overlay2 hands containerd the overlay mount itself (containerd writes into its upper
  # directory); the other backends a bind mount of the service's own mount
  case $b in
    overlay2) [[ $how == "mount -t overlay "* ]] || fail "$b: not an overlay mount: $how" ;;
    *) [[ $how == "mount -t bind "* ]] || fail "$b: not a bind mount: $how" ;;
  esac
  eval "$how"
  echo "from the first snapshot" > "$MNT/committed-file"
  umount "$MNT"
  $CTR snapshots --snapshotter "$S" commit committed work
  $CTR snapshots --snapshotter "$S" prepare second committed
  eval "$($CTR snapshots --snapshotter "$S" mounts "$MNT" second)"
  out=$($CTR run --rm --rootfs "$MNT" "second-$b" /bin/cat /committed-file /etc/graphdriver-release)
  umount "$MNT"
  echo "$out"
  grep -qx 'from the first snapshot' <<<"$out" || fail "$b: the commit did not keep the write"
  kind=$($CTR snapshots --snapshotter "$S" info committed | python3 -c 'import json,sys; print(json.load(sys.stdin)["Kind"].lower())')
  [ "$kind" = committed ] || fail "$b: committed snapshot is $kind"
  # remove everything
  $CTR snapshots --snapshotter "$S" rm second
  $CTR snapshots --snapshotter "$S" rm committed
  $CTR images rm --sync "$NAME" >/dev/null
  left=$($CTR snapshots --snapshotter "$S" ls | awk 'NR > 1' | wc -l)
  [ "$left" = 0 ] || { $CTR snapshots --snapshotter "$S" ls; fail "$b: $left snapshots left"; }
  # no mount of the service's is left (btrfs: only its loop-backed filesystem itself)
  mounts=$(awk -v d="$DIR/gd-$b/" 'index($5, d) == 1 && $5 != d "btrfs" {print $5}' /proc/self/mountinfo)
  [ -z "$mounts" ] || fail "$b: mounts left: $mounts"
  if [ "$b" = overlay2 ]; then
    echo "--- a 200-layer image on $S"
    t=$(date +%s%N)
    $CTR images import --snapshotter "$S" "$IMAGE200" >/dev/null
    echo "import and unpack of 200 layers: $(( ($(date +%s%N) - t) / 1000000 )) ms"
    t=$(date +%s%N)
    out=$($CTR run --rm --snapshotter "$S" "$NAME200" "run200-$b" /bin/sh -c \
          'cat /layers/last; ls /layers | wc -l; cat /etc/graphdriver-release')
    echo "run: $(( ($(date +%s%N) - t) / 1000000 )) ms"
    [ "$(echo $out)" = "198 199 graphdriver test image" ] || fail "$b: the 200-layer image reads: $out"
    n=$($CTR snapshots --snapshotter "$S" ls | awk 'NR > 1' | wc -l)
    [ "$n" = 200 ] || fail "$b: $n snapshots for a 200-layer image"
    $CTR images rm --sync "$NAME200" >/dev/null
    left=$($CTR snapshots --snapshotter "$S" ls | awk 'NR > 1' | wc -l)
    [ "$left" = 0 ] || fail "$b: $left snapshots left after the 200-layer image"
    echo "200 layers: $out" | tr '\n' ' '; echo
  fi
  passed=$((passed + 1))
done
rmdir "$MNT"
scripts/containerd.sh stop
trap - EXIT
leftover=$(losetup -a | grep -c "$DIR" || true)
[ "$leftover" = 0 ] || fail "loop devices left: $(losetup -a | grep "$DIR")"
if command -v dmsetup >/dev/null && [ -e /dev/mapper/control ]; then
  dm=$(dmsetup ls | grep '^graphdriver-' || true)
  [ -z "$dm" ] || fail "device-mapper devices left: $dm"
fi
echo "containerd end to end: $passed passed, $(( ${#BACKENDS[@]} - passed )) failed"
