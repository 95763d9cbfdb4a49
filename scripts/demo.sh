#!/usr/bin/env bash
# The demo on a fresh machine: makes the venv (scripts/install.sh demo: the first run installs from
# requirements/demo.lock, later runs skip that and need no network), then runs simulator -> agent ->
# local receiver with a live view. Stops on Ctrl-C, or after N seconds with `--seconds N`.
# `--cloud http` delivers over HTTP to the reference cloud receiver instead (started by the demo,
# storing into demo-out/cloud.sqlite3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh demo
exec .venv/bin/python -m simulators.demo "$@"
