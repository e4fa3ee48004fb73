#!/usr/bin/env bash
# Builds the three base images the stack test runs on, from Debian packages only, so nothing is
# pulled from an image registry:
#   synkro-stacktest/debian:bookworm    a debootstrap root filesystem, `docker import`ed
#   synkro-stacktest/python:bookworm    + python3 and a venv on PATH (stands in for python:3.12-slim)
#   synkro-stacktest/postgres:bookworm  + the postgresql server     (stands in for postgres:16)
#   synkro-stacktest/caddy:bookworm     + the caddy package         (stands in for caddy:2)
# An image that already exists is kept (the cache between runs on one machine); --rebuild
# removes them first. Needs root (debootstrap), a running Docker engine and Debian's archive.
#
# Environment:
#   DEBIAN_MIRROR  the archive to bootstrap from (default: the first Debian URI apt uses here,
#                  else http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")"

PREFIX=synkro-stacktest
SUITE=bookworm
DEBIAN_IMAGE=$PREFIX/debian:$SUITE

if [ "${1:-}" = "--rebuild" ]; then
  for name in caddy postgres python debian; do
    docker image rm -f "$PREFIX/$name:$SUITE" >/dev/null 2>&1 || true
  done
fi

exists() { docker image inspect "$1" >/dev/null 2>&1; }

apt_mirror() {
  # deb822 (`URIs: ...`) or one-line (`deb URI suite ...`) sources; security and update pockets
  # are not full mirrors, so skip them.
  local uri
  uri=$(
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      sed -nE 's/^URIs:[[:space:]]*(http[^[:space:]]+).*/\1/p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?(http[^[:space:]]+).*/\2/p' |
      grep -E '/debian/?$' | head -1
  ) || true
  echo "${uri:-http://deb.debian.org/debian}"
}

started=$(date +%s)
if ! exists "$DEBIAN_IMAGE"; then
  command -v debootstrap >/dev/null || { echo "build-bases: debootstrap is not installed" >&2; exit 1; }
  mirror=${DEBIAN_MIRROR:-$(apt_mirror)}
  rootfs=$(mktemp -d /tmp/synkro-rootfs.XXXXXX)
  # debootstrap mounts /proc and /sys inside the tree: unmount before removing, never cross.
  cleanup() {
    grep -o " $rootfs/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$rootfs" "$rootfs.log"
  }
  trap cleanup EXIT
  echo "build-bases: debootstrap $SUITE from $mirror"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
    { tail -30 "$rootfs.log" >&2; exit 1; }
  # The image's apt reads from the same archive; no package lists or caches in the layer.
  echo "deb $mirror $SUITE main" >"$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  cleanup
  trap - EXIT
fi

for name in python postgres caddy; do
  if ! exists "$PREFIX/$name:$SUITE"; then
    echo "build-bases: $PREFIX/$name:$SUITE"
    ./docker-build -q --network host \
      --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
      -t "$PREFIX/$name:$SUITE" -f "$name.Dockerfile" . >/dev/null
  fi
done
echo "build-bases: ready in $(($(date +%s) - started)) s"
