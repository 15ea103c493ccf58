#!/usr/bin/env bash
# Runs the kvgrpc server: `scripts/serve.sh [server options]` (default: port 1313, SQLite).
# Sets up .venv on first use. See `scripts/serve.sh --help` for the options.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/bootstrap.sh" server
exec "$repo/.venv/bin/python" -m kvgrpc.server "$@"
