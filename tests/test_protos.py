"""The committed stubs match the proto, and other services can install and import them."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

from tests.conftest import REPO

STUBS = ("kv_pb2.py", "kv_pb2.pyi", "kv_pb2_grpc.py")


def test_committed_stubs_equal_freshly_generated_ones(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(REPO / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, env=env)
    for name in STUBS:
        fresh = (tmp_path / "kvgrpc" / name).read_bytes()
        committed = (REPO / "kvgrpc" / name).read_bytes()
        assert fresh == committed, f"kvgrpc/{name} is stale: run scripts/gen_protos.sh and commit"


def test_every_proto_element_is_commented():
    """Each service, rpc, message and field has a `//` comment right above it."""
    lines = (REPO / "proto" / "kv.proto").read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        text = line.strip()
        is_element = text.startswith(("service ", "rpc ", "message ", "enum ")) or (
            text.endswith(";") and "=" in text and not text.startswith(("syntax", "package", "option"))
        )
        if is_element and not lines[i - 1].strip().startswith("//"):
            uncommented.append(text)
    assert uncommented == []


def test_stubs_install_and_import_with_only_grpcio_and_protobuf(tmp_path):
    """A consumer `pip install`s the project (no extras) and imports the stubs."""
    env_dir = tmp_path / "consumer"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], check=True,
                   capture_output=True, text=True)
    listing = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], check=True,
                             capture_output=True, text=True).stdout.lower()
    assert "grpcio==" in listing and "protobuf==" in listing
    assert "mysql" not in listing and "grpcio-tools" not in listing
    code = (
        "from kvgrpc import kv_pb2, kv_pb2_grpc\n"
        "from kvgrpc import KeyValueClient, NotFound\n"
        "req = kv_pb2.PutRequest(key='k', value=b'v')\n"
        "assert kv_pb2.PutRequest.FromString(req.SerializeToString()) == req\n"
        "assert hasattr(kv_pb2_grpc, 'KeyValueStub')\n"
        "print('ok')\n"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout == "ok\n", result.stderr
