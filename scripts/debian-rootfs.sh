#!/usr/bin/env bash
# Makes (once) a real Debian root filesystem tar for tests and benchmarks:
#   debootstrap --variant=minbase bookworm, tarred by GNU tar with xattrs and numeric owners.
# Prints the tar's path. Safe to run twice: an existing tar is reused.
# Cache: $GRAPHDRIVER_CACHE (default ~/.cache/graphdriver).
set -euo pipefail
CACHE=${GRAPHDRIVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graphdriver}
TAR=$CACHE/bookworm-minbase.tar
if [ -s "$TAR" ]; then echo "$TAR"; exit 0; fi
command -v debootstrap >/dev/null || {
  echo "debian-rootfs: debootstrap is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$CACHE"
# The archive apt already uses, so a machine behind a local mirror works too.
MIRROR=${DEBIAN_MIRROR:-$({ cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
  awk '/^URIs:/ && $2 ~ /debian$/ {print $2; exit} $1=="deb" && $2 ~ /debian$/ {print $2; exit}')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# debootstrap writes ~10k files: do it on a tmpfs (the root disk is slow for small writes).
WORK=$(mktemp -d "$CACHE/rootfs.XXXXXX")
cleanup() { umount -l "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mount -t tmpfs -o size=2g,mode=0755 graphdriver-rootfs "$WORK"
echo "debian-rootfs: debootstrap --variant=minbase bookworm from $MIRROR (a few minutes)" >&2
if ! debootstrap --variant=minbase bookworm "$WORK/root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
  echo "debian-rootfs: debootstrap failed; see $CACHE/debootstrap.log" >&2; tail -5 "$CACHE/debootstrap.log" >&2; exit 1
fi
# A rootfs as an image layer: no apt caches, no device nodes debootstrap made under /dev.
rm -rf "$WORK/root/var/cache/apt/archives/"*.deb "$WORK/root/var/lib/apt/lists/"*
tar --xattrs --xattrs-include='*' --numeric-owner --format=posix -C "$WORK/root" -cf "$TAR.tmp" .
mv "$TAR.tmp" "$TAR"
echo "$TAR"
