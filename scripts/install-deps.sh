#!/usr/bin/env bash
# Installs what building and testing graphdriver needs on Debian 12. Safe to run twice: it
# only calls apt when a package is missing.
#   scripts/install-deps.sh                  what building, the tests and the bench need
#   scripts/install-deps.sh --containerd     only containerd, runc, Go and containerd's Go
#                                            sources, for its test suite
#   scripts/install-deps.sh --images         only skopeo and umoci, the image tools the
#                                            interop tests check graphdriver's images with
#   scripts/install-deps.sh --podman         only podman, a peer the images bench compares with
#   scripts/install-deps.sh --fuzz           only g++ (cargo-fuzz builds libFuzzer's C++)
#                                            and zstd (the fuzz seeds)
set -euo pipefail
case ${1:-} in
  --containerd) PKGS=(containerd runc golang-go golang-github-containerd-containerd-dev) ;;
  --images) PKGS=(skopeo umoci) ;;
  --fuzz) PKGS=(g++ zstd) ;;
  --podman) PKGS=(podman) ;;
  "") PKGS=(e2fsprogs xfsprogs btrfs-progs debootstrap util-linux uidmap tar mount chromium gzip zstd) ;;
  *) echo "install-deps: unknown option $1" >&2; exit 2 ;;
esac
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# building needs Rust; the peers' sets do not (they also run in the test VM, where the
# scripts use what the host built)
[ -n "${1:-}" ] || command -v cargo >/dev/null ||
  { echo "install-deps: cargo is missing (install Rust with rustup)" >&2; exit 1; }
