#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes the venv (scripts/install.sh test: the first run
# installs from requirements/test.lock, later runs skip that), finds or installs mosquitto and
# node-opcua (npm ci only while node_modules is missing), lints (ruff, mypy --strict) and runs
# pytest. Extra arguments go to pytest. Once installed, it runs with no network.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh test

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
    echo "installing node-opcua (npm ci, from simulators/nodeopcua/package-lock.json; about half a minute)"
    (cd simulators/nodeopcua && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
else
  echo "NOTE: Node.js/npm not found: the node-opcua tests (sampling, deadband, 5,000 nodes) are skipped;" \
       "install Node.js 18+ to run them" >&2
fi

echo "linting: ruff check, ruff format --check, mypy --strict"
.venv/bin/ruff check -q agent adapters aas_models uploader simulators tests bench
.venv/bin/ruff format -q --check agent adapters aas_models uploader simulators tests bench
.venv/bin/mypy
echo "running pytest (the whole suite: about 11 minutes on 2 cores)"
exec .venv/bin/pytest "$@"
