#!/usr/bin/env bash
# The demo on a fresh machine: makes the venv, then runs simulator -> agent -> local receiver with a
# live view. Stops on Ctrl-C, or after N seconds with `--seconds N`. `--cloud http` delivers over HTTP
# to the reference cloud receiver instead (started by the demo, storing into demo-out/cloud.sqlite3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python -m simulators.demo "$@"
