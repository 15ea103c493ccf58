#!/usr/bin/env bash
# Runs the whole test suite: `scripts/test.sh [pytest options]`: ruff and mypy, then pytest.
#
# Sets up .venv (with the dev extra) and, where missing, Debian's mariadb-server. The tests
# start their own MariaDB master + replica through scripts/mysql-sandbox.sh, on free ports
# in a temporary directory, and stop it at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/bootstrap.sh" dev
bash "$repo/scripts/mysql-sandbox.sh" install  # mariadb-server, only where missing
# The TLS tests make their certificates with the openssl command.
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "test.sh: the openssl command is missing (apt-get install openssl)" >&2; exit 1
  fi
fi
# The Node.js client test needs node and its two gRPC packages (tests/node/package-lock.json).
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "test.sh: node and npm are missing (apt-get install nodejs npm)" >&2; exit 1
  fi
fi
[ -d "$repo/tests/node/node_modules" ] || npm ci --prefix "$repo/tests/node" --no-audit --no-fund --loglevel=error
cd "$repo"
# Static checks first (pyproject.toml configures both): lint, then types.
"$repo/.venv/bin/ruff" check --quiet kvgrpc tests bench scripts
"$repo/.venv/bin/mypy" --no-error-summary
# The MySQL C extension must load before anything imports ssl or hashlib (pytest does),
# or the driver falls back to pure Python (DEVELOPERS.md); so it is imported first.
exec "$repo/.venv/bin/python" -c \
  'import _mysql_connector, sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' "$@"
