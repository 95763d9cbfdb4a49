#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes the venv, finds or installs mosquitto and
# node-opcua, lints (ruff, mypy --strict) and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing mosquitto (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  else
    echo "NOTE: mosquitto not found and cannot be installed here (needs root + apt-get);" \
         "install it (e.g. 'sudo apt-get install mosquitto'), or the broker tests are skipped" >&2
  fi
fi

if command -v npm >/dev/null 2>&1; then
  if [ ! -d simulators/nodeopcua/node_modules/node-opcua ]; then
    echo "installing node-opcua (npm ci)"
    (cd simulators/nodeopcua && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
else
  echo "NOTE: Node.js/npm not found: the node-opcua tests (sampling, deadband, 5,000 nodes) are skipped;" \
       "install Node.js 18+ to run them" >&2
fi

.venv/bin/ruff check agent adapters aas_models uploader simulators tests bench
.venv/bin/ruff format --check agent adapters aas_models uploader simulators tests bench
.venv/bin/mypy
exec .venv/bin/pytest "$@"
