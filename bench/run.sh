#!/usr/bin/env bash
# The benchmark suite: bootstraps .venv with the `bench` extra, then bench/run.py ARGS (see its --help).
set -euo pipefail; repo=$(cd "$(dirname "$0")/.." && pwd); bash "$repo/scripts/bootstrap.sh" bench && exec "$repo/.venv/bin/python" "$repo/bench/run.py" "$@"
