#!/usr/bin/env bash
# Makes .venv and installs a profile into it from its lock file, then the project itself (editable):
#
#   ./scripts/install.sh runtime   the gateway install (requirements/runtime.lock)
#   ./scripts/install.sh demo      + the simulators' needs (requirements/demo.lock): scripts/demo.sh
#   ./scripts/install.sh test      + the test tools (requirements/test.lock): scripts/test.sh
#
# A profile includes the ones above it. Every file is checked against the sha256 in the lock
# (`pip install --require-hashes`). When it is done it writes a stamp in .venv: the hash of
# pyproject.toml, the lock files, this script and the Python version, and the profile. While they
# are unchanged, later runs skip pip entirely, so they need no package index (offline is fine).
# docs/install.md: lock files, offline installs on a gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-}
case "$profile" in
  runtime) rank=1 ;;
  demo) rank=2 ;;
  test) rank=3 ;;
  *)
    echo "usage: scripts/install.sh runtime|demo|test" >&2
    exit 2
    ;;
esac
profiles=(none runtime demo test)
venv=.venv
stamp=$venv/.edge-agent-install
log=$venv/install.log

if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
  echo "$venv: its Python no longer runs (was the system Python upgraded?); making it again"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "edge-agent needs Python 3.11 or newer as python3; found: $(python3 --version 2>&1)" >&2
    exit 1
  fi
  echo "creating $venv with $(python3 --version)"
  if ! python3 -m venv "$venv"; then
    rm -rf "$venv"
    echo "cannot create $venv; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi

key=$("$venv/bin/python" - <<'PY'
import hashlib
import pathlib
import sys

h = hashlib.sha256(sys.version.encode())
for path in ["pyproject.toml", "scripts/install.sh", *sorted(str(p) for p in pathlib.Path("requirements").glob("*.lock"))]:
    h.update(f"\0{path}\0".encode() + pathlib.Path(path).read_bytes())
print(h.hexdigest())
PY
)
have_key=none
have_rank=0
if [ -f "$stamp" ]; then
  read -r have_key have_rank <"$stamp" || true
fi
if [ "$have_key" = "$key" ] && [ "${have_rank:-0}" -ge "$rank" ]; then
  exit 0  # nothing changed since the last install: no pip, no index
fi

# Keep what an earlier run installed complete: a venv made for the tests stays one.
if [ "$have_key" != none ] && [ "${have_rank:-0}" -gt "$rank" ]; then
  rank=$have_rank
fi
lock=requirements/${profiles[$rank]}.lock
total=$(grep -c '^[A-Za-z0-9]' "$lock")
if [ "$have_key" = none ]; then
  echo "installing $total packages from $lock into $venv"
  echo "  (first run: about a minute; needs the package index)"
elif [ "$have_key" = "$key" ]; then
  echo "adding what ${profiles[$rank]} needs to $venv: $lock ($total packages, most already there)"
else
  echo "pyproject.toml, the lock files or the Python version changed: updating $venv from $lock ($total packages)"
fi

started=$SECONDS
tty=false
[ -t 1 ] && tty=true
show() {  # one progress line: rewritten in place on a terminal, every 10th package otherwise
  if $tty; then
    printf '\r\033[K  %s' "$1"
  elif [ "$2" = always ] || [ $(($2 % 10)) = 0 ]; then
    echo "  $1"
  fi
}
progress() {
  local n=0 line
  while IFS= read -r line; do
    case $line in
      Collecting* | Processing* | "Requirement already satisfied"* | Ignoring*)
        n=$((n + 1))
        line=${line#Collecting }
        line=${line#Processing }  # a file from a local index or --find-links
        line=${line#Requirement already satisfied: }
        line=${line#Ignoring }  # not for this platform or Python (a marker)
        line=${line%% *}
        line=${line##*/}
        case $line in *.whl | *.tar.gz) line=$(echo "$line" | cut -d- -f1-2) ;; esac  # name-version
        show "[$n/$total] $line" "$n"
        ;;
      "Installing collected packages"*) show "unpacking and installing (the slowest part)" always ;;
    esac
  done
  if $tty; then printf '\r\033[K'; fi
}
failed() {
  if $tty; then printf '\r\033[K'; fi
  echo "pip failed: the last lines of $log:" >&2
  tail -n 12 "$log" >&2
  echo "Offline? This step needs the package index once (or a wheel directory: docs/install.md)." >&2
  exit 1
}
: >"$log"
export PYTHONUNBUFFERED=1
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --require-hashes --no-deps \
  -r "$lock" 2>&1 | tee -a "$log" | progress || failed
echo "  installing edge-agent itself (editable: source changes need no reinstall)"
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --no-index --no-deps \
  --no-build-isolation -e . >>"$log" 2>&1 || failed
echo "$key $rank" >"$stamp"
echo "installed in $((SECONDS - started)) s; later runs skip this until pyproject.toml"
echo "  or requirements/ change"
