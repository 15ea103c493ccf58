#!/usr/bin/env bash
# Regenerates the Python stubs of proto/kv.proto into kvgrpc/ (or into OUT_DIR/kvgrpc/).
#
#   scripts/gen_protos.sh [OUT_DIR]
#
# `-Ikvgrpc=proto` maps the proto into the `kvgrpc` package, so the stubs import each
# other as `from kvgrpc import kv_pb2` with no post-editing. Never edit the output by hand.
# Uses $PYTHON (default: the project's .venv, else python3) with grpcio-tools installed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo}
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3
mkdir -p "$out/kvgrpc"
cd "$repo"
"$python" -m grpc_tools.protoc -Ikvgrpc=proto \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" proto/kv.proto
