#!/usr/bin/env bash
# Image interop with the tools of the field, both ways (Debian's skopeo 1.9 and umoci 0.4):
#  - in: the Debian test image (two gzip layers, from scripts/oci-image.py) rewritten by
#    skopeo as an OCI layout with gzip layers, one with zstd layers, and a docker-archive is
#    imported by `graphctl image import`; its DiffIDs must be the ones skopeo reads from the
#    config, and the image's top layer, mounted, must hold the tree a reference extraction
#    of the same layers holds (names, types, modes, owners, file sizes and mtimes, link
#    targets);
#  - out: `graphctl image save` (gzip and zstd) is copied by skopeo into an OCI layout (skopeo
#    checks every digest as it copies), its DiffIDs read back by `skopeo inspect --config`,
#    unpacked by umoci (gzip: umoci 0.4 has no zstd) and compared with the reference; and
#    imported into a fresh root, where it must keep its image ID; every backend must save the
#    same image (an implied directory keeps its mtime, so the diffs are the same bytes);
#  - containers: `container ls -s` counts what one wrote, and `container commit` of it,
#    saved, is read by skopeo and unpacked by umoci as the container's tree.
#   scripts/image-interop.sh [BACKEND...]    (default: overlay2)
# Run as root. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS=("$@"); [ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(overlay2)
scripts/install-deps.sh --images
. scripts/test-image.sh   # ROOTFS, IMAGE, NAME
G=${GRAPHCTL:-$PWD/target/release/graphctl}
[ -x "$G" ] || cargo build --release -q -p graphctl --bin graphctl --features failpoints

# Everything happens on a tmpfs (the roots on an ext4 loop image inside it): / here is slow
# for heavy writes, and nothing is left behind.
W=$(mktemp -d /var/tmp/graphdriver-interop.XXXXXX)
cleanup() {
  awk -v d="$W/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  losetup -a | awk -F: -v d="$W/" 'index($0, d) {print $1}' | xargs -r -n1 losetup -d 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/t"
mount -t tmpfs -o size=6g tmpfs "$W/t"
T=$W/t
truncate -s 3G "$T/roots.img"
mkfs.ext4 -q "$T/roots.img"
mkdir "$T/roots"
mount -o loop "$T/roots.img" "$T/roots"

fail() { echo "image-interop: $*" >&2; exit 1; }
gd() { # BACKEND ROOT ARGS...: graphctl on that backend and root (btrfs on a loop image)
  local b=$1 r=$2; shift 2
  if [ "$b" = btrfs ]; then set -- --opt btrfs.loopback=2G "$@"; fi
  "$G" --driver "$b" --root "$r" "$@"
}
passed=0
pass() { echo "ok   $1"; passed=$((passed + 1)); }

# The tree below DIR, one line per entry, the same on every filesystem: directory sizes and
# the times of anything but regular files differ between extractors, so they are left out.
listing() {
  (cd "$1" && find . -mindepth 1 -printf '%y %p %m %U:%G %s %Ts %l\n' |
    awk '$1 == "d" {print $1, $2, $3, $4; next}
         $1 != "f" {$6 = ""} {print}' | LC_ALL=C sort)
}

# The reference: the image's two layers extracted by GNU tar.
mkdir "$T/ref"
tar -xpf "$ROOTFS" -C "$T/ref" --numeric-owner
tar -xOf "$IMAGE" index.json >/dev/null
python3 - "$IMAGE" "$T/ref" <<'EOF'
import json, sys, tarfile, gzip, io
t = tarfile.open(sys.argv[1])
idx = json.load(t.extractfile("index.json"))
blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":")[1]).read()
m = json.loads(blob(idx["manifests"][0]["digest"]))
top = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(m["layers"][-1]["digest"]))))
top.extractall(sys.argv[2], numeric_owner=True)
EOF
listing "$T/ref" >"$T/ref.list"
echo "reference: $(wc -l <"$T/ref.list") entries"

diff_ids_of() { # the DiffIDs skopeo reads from an image's config, one per line
  skopeo inspect --config "$1" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["rootfs"]["diff_ids"]))'
}
our_diff_ids() { # DRIVER ROOT NAME: DiffIDs of an imported image, bottom first
  gd "$1" "$2" image history "$3" | awk 'NR > 1 {print $3}' | tac
}
top_layer() { # DRIVER ROOT NAME: the driver's id of the image's top layer
  local short
  short=$(gd "$1" "$2" image history "$3" | awk 'NR == 2 {print $1}')
  gd "$1" "$2" ls | grep "^$short" | head -1
}
same_as_ref() { # MESSAGE: got.list is ref.list, or fail with the first differences
  if ! diff -u "$T/ref.list" "$T/got.list" >"$T/list.diff"; then
    head -20 "$T/list.diff" >&2
    fail "$1"
  fi
}
check_view() { # DRIVER ROOT NAME WHAT: the top layer, mounted, holds the reference tree
  local l p
  l=$(top_layer "$1" "$2" "$3")
  [ -n "$l" ] || fail "$4: no top layer"
  p=$(gd "$1" "$2" mount "$l")
  listing "$p" >"$T/got.list"
  gd "$1" "$2" unmount "$l"
  same_as_ref "$4: the image's tree differs from the reference"
}
loaded_id() { sed -n 's/.*(\(sha256:[0-9a-f]*\)[,)].*/\1/p' | tail -1; }

# skopeo writes the source image three ways
skopeo copy -q "oci-archive:$IMAGE:test" "oci:$T/sk-gzip:v1"
skopeo copy -q --dest-compress --dest-compress-format zstd "oci-archive:$IMAGE:test" "oci:$T/sk-zstd:v1"
skopeo copy -q "oci-archive:$IMAGE:test" "docker-archive:$T/sk-docker.tar:debian-graphdriver:docker"
diff_ids_of "oci-archive:$IMAGE:test" >"$T/src.ids"

first_id=
for b in "${BACKENDS[@]}"; do
  for src in sk-gzip:v1 sk-zstd:v1 sk-docker.tar:docker.io/library/debian-graphdriver:docker; do
    path=${src%%:*} name=${src#*:}
    R=$T/roots/$b-in-$path
    out=$(gd "$b" "$R" image import "$T/$path")
    our_diff_ids "$b" "$R" "$name" >"$T/got.ids"
    cmp -s "$T/src.ids" "$T/got.ids" || { diff "$T/src.ids" "$T/got.ids" >&2; fail "$b: $path: DiffIDs differ from skopeo's"; }
    check_view "$b" "$R" "$name" "$b: $path"
    pass "$b: skopeo's $path imported ($(loaded_id <<<"$out" | cut -c1-19)), DiffIDs and tree as the reference"
  done

  R=$T/roots/$b-in-sk-gzip
  for c in gzip zstd; do
    saved=$T/saved-$b-$c.tar
    out=$(gd "$b" "$R" image save --compression "$c" -o "$saved" v1)
    id=$(loaded_id <<<"$out")
    rm -rf "$T/back-$c"
    skopeo copy -q "oci-archive:$saved" "oci:$T/back-$c:x" || fail "$b: skopeo cannot copy our $c save"
    diff_ids_of "oci:$T/back-$c:x" >"$T/back.ids"
    [ "$(wc -l <"$T/back.ids")" = 2 ] || fail "$b: $c save: skopeo reads $(wc -l <"$T/back.ids") DiffIDs"
    if [ "$c" = gzip ]; then
      rm -rf "$T/bundle"
      umoci unpack --image "$T/back-$c:x" "$T/bundle" >/dev/null
      listing "$T/bundle/rootfs" >"$T/got.list"
      same_as_ref "$b: umoci's unpack of our save differs from the reference"
    fi
    R2=$T/roots/$b-round-$c
    again=$(gd "$b" "$R2" image import "$saved" | loaded_id)
    [ "$again" = "$id" ] || fail "$b: $c save imported as $again, saved as $id"
    our_diff_ids "$b" "$R2" v1 >"$T/round.ids"
    cmp -s "$T/back.ids" "$T/round.ids" || fail "$b: $c round trip: DiffIDs differ from skopeo's"
    check_view "$b" "$R2" v1 "$b: $c round trip"
    # the same layers give the same image, whichever backend holds them
    [ -n "$first_id" ] || first_id=$id
    [ "$id" = "$first_id" ] || fail "$b: $c save is $id, another backend saved $first_id"
    pass "$b: our $c save read by skopeo$([ "$c" = gzip ] && echo " and umoci") and imported again with the same ID (${id:0:19})"
  done

  # A container: `container ls -s` counts what it wrote, and its commit, saved, is read by
  # skopeo (three DiffIDs) and unpacked by umoci as the container's tree.
  gd "$b" "$R" container create v1 c1 >/dev/null
  p=$(gd "$b" "$R" mount c1)
  head -c 3000000 /dev/urandom >"$p/written"
  rm "$p/etc/motd"
  listing "$p" >"$T/ref-c1.list"
  gd "$b" "$R" unmount c1
  read -r size vsize isize < <(gd "$b" "$R" container ls -s --json | python3 -c '
import json, sys
c = [c for c in json.load(sys.stdin) if c["name"] == "c1"][0]
print(c["size"], c["virtual_size"], c["image_size"])')
  [ "$size" = 3000000 ] || fail "$b: container ls -s gives $size bytes; 3000000 were written"
  [ "$vsize" = $((isize + 3000000)) ] || fail "$b: virtual size $vsize is not $isize + 3000000"
  gd "$b" "$R" container commit c1 v1-c1 >/dev/null
  gd "$b" "$R" image save -o "$T/commit-$b.tar" v1-c1 >/dev/null
  rm -rf "$T/back-commit" "$T/bundle"
  skopeo copy -q "oci-archive:$T/commit-$b.tar" "oci:$T/back-commit:x" || fail "$b: skopeo cannot copy the saved commit"
  n=$(diff_ids_of "oci:$T/back-commit:x" | wc -l)
  [ "$n" = 3 ] || fail "$b: the saved commit has $n DiffIDs, not 3"
  umoci unpack --image "$T/back-commit:x" "$T/bundle" >/dev/null
  listing "$T/bundle/rootfs" >"$T/got.list"
  diff -u "$T/ref-c1.list" "$T/got.list" >&2 || fail "$b: umoci's unpack of the commit differs from the container"
  gd "$b" "$R" container rm c1 >/dev/null
  pass "$b: a container's ls -s counts its 3000000 bytes; its commit, saved, read by skopeo and umoci as its tree"
done
echo "image interop: $passed passed"
