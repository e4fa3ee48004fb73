#!/usr/bin/env bash
# Downloads every wheel the image installs into DIR, for the Python of the stack test's base image
# (Debian bookworm: CPython 3.11, glibc 2.36, x86_64), so the image builds without reaching the
# package index (Dockerfile: PIP_INSTALL_OPTIONS="--no-index --find-links /tmp/wheels").
#   deploy/stacktest/wheelhouse.sh DIR [EXTRAS]
# Kept when DIR already holds the wheels for the same requirements.
# Environment: PYTHON, a Python 3.11+ with pip (default python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$1
extras=${2:-}
python=${PYTHON:-python3}

requirements=$("$python" "$root/deploy/requirements.py" "$root/pyproject.toml" "$extras")
# The build backend the project's own install needs (pyproject.toml [build-system]).
requirements+=$'\n'$("$python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' "$root/pyproject.toml")
# The image installs them at requirements.lock's versions: the wheelhouse holds those.
lock="$root/requirements.lock"
stamp=$(printf '%s\n' "$requirements" | cat - "$lock")
if [ -f "$dir/.requirements" ] && [ "$(cat "$dir/.requirements")" = "$stamp" ]; then
  exit 0
fi
mkdir -p "$dir"
platforms=(--platform manylinux2014_x86_64 --platform linux_x86_64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
printf '%s\n' "$requirements" >"$dir/requirements.txt"
"$python" -m pip download --quiet --disable-pip-version-check --dest "$dir" \
  --only-binary=:all: --implementation cp --python-version 3.11 \
  --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
  -r "$dir/requirements.txt" -c "$lock"
rm -f "$dir/requirements.txt"
printf '%s' "$stamp" >"$dir/.requirements"
