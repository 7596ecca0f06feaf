#!/usr/bin/env bash
# Build a minimal local base image (Debian bookworm with python3 and venv) for the worker images,
# with no container registry: debootstrap from a Debian mirror, then `docker import`. It stands in
# for BASE_IMAGE on CPU hosts without Docker Hub (`make images-local`) and is what tests/docker
# builds on. Does nothing when the tag exists. Needs root for debootstrap (sudo is used when not
# root) and a Docker engine (scripts/provision-docker.sh sets both up).
#
#   scripts/build-base-image.sh [TAG]        # default TAG: llenergymeasure-base:bookworm
set -euo pipefail

TAG=${1:-llenergymeasure-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { printf 'build-base-image: %s\n' "$*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG already exists"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
    say "debootstrap is not installed: run scripts/provision-docker.sh as root"
    exit 2
}
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lem-rootfs-XXXXXX")
trap '$SUDO rm -rf "$tmp"' EXIT
say "debootstrap bookworm into $tmp (about a minute)"
$SUDO debootstrap --variant=minbase --include=python3,python3-venv bookworm "$tmp/rootfs" "$MIRROR" >/dev/null
$SUDO tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tmp/rootfs.tar" "$TAG" >/dev/null
say "built $TAG"
