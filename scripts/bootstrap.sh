#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in .venv with the given extra installed.
#
#   scripts/bootstrap.sh [server|dev]      (default: dev)
#
# Sourced or run by scripts/serve.sh and scripts/test.sh. Needs Python >= 3.11; on Debian,
# when run as root, it installs python3-venv if the venv module is missing.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extra=${1:-dev}
python=${KVGRPC_PYTHON:-python3}

log() { printf 'bootstrap: %s\n' "$*" >&2; }

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { log "Python >= 3.11 is needed ($python is $("$python" -V 2>&1))"; exit 1; }

if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    log "the Python venv module is missing: install python3-venv (apt-get install python3-venv)"; exit 1
  fi
fi

venv=$repo/.venv
[ -x "$venv/bin/python" ] || { log "creating $venv"; "$python" -m venv "$venv"; }

# Reinstall only when the requirements change.
stamp=$venv/.kvgrpc-$extra.stamp
want=$(cat "$repo/setup.cfg" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing kvgrpc[$extra] into $venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e "$repo[$extra]"
  echo "$want" > "$stamp"
fi
