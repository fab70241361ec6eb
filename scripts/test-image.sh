# Sourced by the scripts that use the Debian test image: sets ROOTFS (the Debian rootfs tar,
# $GRAPHDRIVER_ROOTFS_TAR or scripts/debian-rootfs.sh's), IMAGE (an OCI archive of it as two
# gzip layers, made by scripts/oci-image.py and made again when older than ROOTFS) and NAME
# (the image's name). Run from the repository's top directory.
ROOTFS=${GRAPHDRIVER_ROOTFS_TAR:-$(scripts/debian-rootfs.sh)}
IMAGE=${ROOTFS%.tar}-oci.tar
NAME=docker.io/library/debian-graphdriver:test
[ -s "$IMAGE" ] && [ "$IMAGE" -nt "$ROOTFS" ] || scripts/oci-image.py "$ROOTFS" "$IMAGE" "$NAME"
