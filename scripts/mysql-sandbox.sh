#!/usr/bin/env bash
# The MariaDB sandbox (master + GTID replicas): python -m kvgrpc.ops.sandbox, see kvgrpc/ops/sandbox.py.
repo=$(cd "$(dirname "$0")/.." && pwd); py=$repo/.venv/bin/python; [ -x "$py" ] || py=python3
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m kvgrpc.ops.sandbox "$@"
