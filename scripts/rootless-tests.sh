#!/usr/bin/env bash
# The conformance suite run rootless: as an unprivileged user (graphdriver-rootless, made
# with 65,536 subordinate ids if missing) in a user namespace of its own (`unshare`: its uid
# is root there, its subordinate ids 1 to 65536), on a scratch ext4 filesystem it owns.
#   scripts/rootless-tests.sh [BACKEND...]    (default: vfs overlay2)
# overlay2 keeps overlayfs's xattrs as user.overlay.* there and mounts with `userxattr`.
# What the kernel refuses an unprivileged user is skipped by name, nothing else
# (GRAPHDRIVER_REQUIRE with GRAPHDRIVER_MAY_SKIP): device nodes, trusted.* xattrs, ids past
# the 65,536 mapped, and idmapped mounts of the host's filesystems. Run as root; safe to run
# twice.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS=("$@"); [ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(vfs overlay2)
U=graphdriver-rootless
G=target/release/graphctl
cargo build --release -q -p graphctl --bin graphctl --features failpoints   # nothing to do when current
command -v newuidmap >/dev/null || scripts/install-deps.sh
id "$U" >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin "$U"
# the next free 65,536 ids above every range handed out, for whichever map the user lacks
next=$({ cat /etc/subuid /etc/subgid 2>/dev/null || true; } | awk -F: 'BEGIN {n = 100000}
  $2 + $3 > n {n = $2 + $3} END {print n}')
grep -qs "^$U:" /etc/subuid || usermod --add-subuids "$next-$((next + 65535))" "$U"
grep -qs "^$U:" /etc/subgid || usermod --add-subgids "$next-$((next + 65535))" "$U"
SUBUID=$(awk -F: -v u="$U" '$1 == u {print $2; exit}' /etc/subuid)
SUBGID=$(awk -F: -v u="$U" '$1 == u {print $2; exit}' /etc/subgid)

DIR=/var/tmp/graphdriver-rootless
if mountpoint -q "$DIR/fs"; then umount "$DIR/fs"; fi
mkdir -p "$DIR/fs"
chmod 0755 "$DIR"   # whatever the umask: the user enters it
truncate -s 0 "$DIR/fs.img" && truncate -s 4G "$DIR/fs.img"
mkfs.ext4 -q -F "$DIR/fs.img"
mount -o loop "$DIR/fs.img" "$DIR/fs"
trap 'umount "$DIR/fs" 2>/dev/null || umount -l "$DIR/fs"; rm -f "$DIR/fs.img"' EXIT
install -m 0755 "$G" "$DIR/fs/graphctl"
chown "$U:" "$DIR/fs"

# skipped where the kernel refuses an unprivileged user: the named cases, and only those
SKIP=idmap::,content::special_modes_seen_through_child,content::devices_fifos_symlinks_through_layers
SKIP+=,content::parent_unchanged_by_child_writes,diff::diff_then_apply_round_trips
SKIP+=,diff::xattrs_round_trip,diff::long_names_and_nanosecond_mtimes_round_trip
SKIP+=,diff::gnu_tar_archive_applies,diff::gnu_tar_extracts_our_export
for b in "${BACKENDS[@]}"; do
  echo "--- the conformance suite on $b, rootless ($U, uid $(id -u "$U"), in a user namespace)"
  runuser -u "$U" -- env -C "$DIR/fs" GRAPHDRIVER_REQUIRE="$b" GRAPHDRIVER_MAY_SKIP="$SKIP" \
    unshare --map-root-user --map-users="$SUBUID,1,65536" --map-groups="$SUBGID,1,65536" \
    --mount --propagation private -- \
    ./graphctl check --driver "$b" --scratch "$DIR/fs" --root "$DIR/fs/root"
done
