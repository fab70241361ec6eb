#!/usr/bin/env bash
# The clean-root check: does the README's set-up work on a machine that has only what a new
# machine of this kind has? Run as root. Safe to run twice; leaves nothing behind.
#   scripts/fresh-check.sh [--rev REV] [--share-target]     (default: HEAD of this repository)
#
# --share-target (what .ci/run passes): the clean root builds into this checkout's own
# target/, its clone placed at this checkout's path, so the release build the tests run next
# here is already done (cargo finds it fresh: same paths, same toolchain, sources older than
# the build) instead of being made twice. Only for a checkout with nothing uncommitted, at
# REV: otherwise the build would not be of the files here.
#
# In a private mount namespace it makes a clean Debian 12 root on a tmpfs (from the
# debootstrap rootfs the tests cache), binds the host's Rust toolchain into it read-only, and
# there, as a new user would: installs only gcc, libc6-dev, git, python3 and ca-certificates;
# clones the repository at REV; runs the README's install step (scripts/install-deps.sh);
# builds the whole workspace (`cargo build --workspace --all-targets --release`); checks
# that `graphctl --driver zfs status` says Unsupported (no ZFS there) rather than failing to
# load; and runs the conformance suite on vfs. Any missing install step fails it.
# The root trusts what the host trusts: the host's CA bundle ($SSL_CERT_FILE) and apt
# configuration are copied in, and proxy variables are passed through.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
REV=HEAD
SHARE=
while [ $# -gt 0 ]; do
  case $1 in
    --rev) REV=$2; shift 2 ;;
    --share-target) SHARE=1; shift ;;
    *) echo "usage: scripts/fresh-check.sh [--rev REV] [--share-target]" >&2; exit 2 ;;
  esac
done
COMMIT=$(git -C "$HERE" rev-parse --verify "$REV^{commit}")
if [ -n "$SHARE" ]; then
  [ "$(git -C "$HERE" rev-parse HEAD)" = "$COMMIT" ] && [ -z "$(git -C "$HERE" status --porcelain)" ] || {
    echo "fresh-check: --share-target needs a checkout at $COMMIT with nothing uncommitted" >&2; exit 2; }
fi

if [ -z "${GRAPHDRIVER_FRESH_NS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "fresh-check: run as root" >&2; exit 1; }
  ROOTFS_TAR=${GRAPHDRIVER_ROOTFS_TAR:-$("$HERE/scripts/debian-rootfs.sh")}
  # everything mounted below dies with the namespace, whatever happens
  exec env GRAPHDRIVER_FRESH_NS=1 GRAPHDRIVER_ROOTFS_TAR="$ROOTFS_TAR" \
    unshare --mount --propagation private "$0" --rev "$COMMIT" ${SHARE:+--share-target}
fi

T0=$(date +%s)
step() { echo "=== fresh-check: $1 ($(( $(date +%s) - T0 ))s)"; }
RUSTUP=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_BIN=$(dirname "$(command -v cargo)")
CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -d "$RUSTUP/toolchains" ] || { echo "fresh-check: no rustup toolchain at $RUSTUP" >&2; exit 1; }

NEW=$(mktemp -d /var/tmp/graphdriver-fresh.XXXXXX)
trap 'rmdir "$NEW" 2>/dev/null || true' EXIT
mount -t tmpfs -o size=16g,mode=0755 graphdriver-fresh "$NEW"
step "clean root from $(basename "$GRAPHDRIVER_ROOTFS_TAR") at $COMMIT"
tar -xpf "$GRAPHDRIVER_ROOTFS_TAR" -C "$NEW"
for d in dev proc sys; do mount --rbind "/$d" "$NEW/$d"; mount --make-rslave "$NEW/$d"; done
mkdir -p "$NEW/tmp" "$NEW/run" && chmod 1777 "$NEW/tmp"
cp /etc/resolv.conf "$NEW/etc/resolv.conf"
# apt as the host has it set up (its mirror and settings), main only: not this project's own
# additions (contrib), which only its scripts may bring
cp /etc/apt/apt.conf.d/* "$NEW/etc/apt/apt.conf.d/" 2>/dev/null || true
rm -f "$NEW/etc/apt/sources.list" "$NEW/etc/apt/sources.list.d/"*
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
  case $(basename "$f") in graphdriver-*|*.disabled*) continue ;; esac
  [ -f "$f" ] && cp "$f" "$NEW$f"
done
cp "$CA" "$NEW/etc/graphdriver-host-ca.crt"
# the toolchain, read-only, at the same paths; a fresh CARGO_HOME for the registry
mkdir -p "$NEW$RUSTUP" "$NEW$CARGO_BIN" "$NEW/src"
mount --bind "$RUSTUP" "$NEW$RUSTUP" && mount -o remount,bind,ro "$NEW$RUSTUP"
mount --bind "$CARGO_BIN" "$NEW$CARGO_BIN" && mount -o remount,bind,ro "$NEW$CARGO_BIN"
mount --bind "$HERE" "$NEW/src" && mount -o remount,bind,ro "$NEW/src"
# where the clone goes: with --share-target, this checkout's path (so that cargo's records
# name the same files), its target/ this checkout's
WORK=/work/graphdriver
[ -z "$SHARE" ] || WORK=$HERE

inside() {
  chroot "$NEW" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=true \
    PATH="$CARGO_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    RUSTUP_HOME="$RUSTUP" CARGO_HOME=/root/.cargo RUSTUP_AUTO_INSTALL=0 \
    SSL_CERT_FILE=/etc/graphdriver-host-ca.crt CARGO_HTTP_CAINFO=/etc/graphdriver-host-ca.crt \
    GIT_SSL_CAINFO=/etc/graphdriver-host-ca.crt DEBIAN_FRONTEND=noninteractive \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
    ${no_proxy:+no_proxy=$no_proxy} \
    bash -euo pipefail -c "$1"
}

step "what a new machine has: gcc, libc6-dev, git, python3, ca-certificates"
inside 'apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  apt-get install -y -q --no-install-recommends gcc libc6-dev git python3 ca-certificates >/dev/null'
step "clone"
inside "git clone -q /src $WORK && git -C $WORK checkout -q $COMMIT"
if [ -n "$SHARE" ]; then
  mkdir -p "$HERE/target" "$NEW$WORK/target"
  mount --bind "$HERE/target" "$NEW$WORK/target"
fi
step "the README's install step (scripts/install-deps.sh)"
inside "cd $WORK && scripts/install-deps.sh"
step "cargo build --workspace --all-targets --release"
inside "cd $WORK && cargo build --workspace --all-targets --release"
step "graphctl --driver zfs status (no ZFS here: Unsupported, not a load failure)"
inside "cd $WORK"'
  set +e; out=$(target/release/graphctl --driver zfs --root /var/tmp/zfs-root status 2>&1); rc=$?; set -e
  echo "$out"
  [ "$rc" = 1 ] && grep -q "not supported\|unsupported\|Unsupported" <<<"$out" && grep -q "libzfs\|zfs" <<<"$out"'
step "conformance suite on vfs"
# a chrooted process may not make user namespaces (unshare(2): EPERM), so the idmap cases are
# refused here; the host's suites run them
inside "cd $WORK"' && GRAPHDRIVER_REQUIRE=vfs GRAPHDRIVER_MAY_SKIP=idmap:: target/release/graphctl check --driver vfs'
step "passed"
umount -R "$NEW" 2>/dev/null || umount -l "$NEW"
