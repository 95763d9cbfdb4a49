#!/usr/bin/env bash
# Regenerates requirements/*.lock from pyproject.toml (and requirements/build.in) with uv, after a
# dependency was added, removed or its range changed, or to take newer versions: ./scripts/lock.sh
# (`--upgrade` moves every pin to the newest allowed version; without it pins stay where they are).
# Needs the package index. Commit the lock files with the change; docs/install.md explains them.
#
#   requirements/runtime.lock  the gateway install: pyproject's dependencies
#   requirements/demo.lock     + the `simulators` extra (numpy, jsonschema, psycopg): scripts/demo.sh
#   requirements/test.lock     + the `test` extra: scripts/test.sh, .ci/run
#
# The locks are universal (every platform, Python 3.11+, with markers) and carry the sha256 of every
# file, for `pip install --require-hashes`. test.lock is resolved first and constrains the other two,
# so a pin is the same in every lock that has it.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
if command -v uv >/dev/null 2>&1; then
  uv=uv
else
  tools=.venv-tools
  if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "installing uv $UV_VERSION into $tools (used only to make the lock files)"
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  fi
  uv="$tools/bin/uv"
fi
compile() {  # compile OUTPUT [uv pip compile arguments...]
  local out=$1
  shift
  echo "locking $out"
  "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command ./scripts/lock.sh -o "$out" pyproject.toml requirements/build.in "$@"
}
compile requirements/test.lock --extra simulators --extra test "$@"
compile requirements/demo.lock --extra simulators -c requirements/test.lock
compile requirements/runtime.lock -c requirements/test.lock
for f in requirements/*.lock; do
  echo "  $f: $(grep -c '^[A-Za-z0-9]' "$f") packages"
done
