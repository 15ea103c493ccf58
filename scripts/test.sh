#!/usr/bin/env bash
# Runs the whole test suite: `scripts/test.sh [pytest options]`.
#
# Sets up .venv (with the dev extra) and, where missing, Debian's mariadb-server. The tests
# start their own MariaDB master + replica through scripts/mysql-sandbox.sh, on free ports
# in a temporary directory, and stop it at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/bootstrap.sh" dev
bash "$repo/scripts/mysql-sandbox.sh" install  # mariadb-server, only where missing
cd "$repo"
# The MySQL C extension must load before anything imports ssl or hashlib (pytest does),
# or the driver falls back to pure Python (DEVELOPERS.md); so it is imported first.
exec "$repo/.venv/bin/python" -c \
  'import _mysql_connector, sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' "$@"
