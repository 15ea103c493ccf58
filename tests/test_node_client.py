"""A client from another ecosystem: Node.js with @grpc/grpc-js, loading proto/kv.proto."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO


def test_node_client_calls_the_server(mysql_server):
    result = subprocess.run(
        ["node", str(REPO / "tests" / "node" / "client.js"), mysql_server.target],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["version"] == "1"  # int64 comes back as a string (longs: String)
    assert reply["value"] == "héllo from node"
    assert reply["missing_keys"] == ["absent"]
    assert reply["scanned"] == ["from-node"]
    assert reply["missing"]["code"] == reply["not_found_code"] == 5
    assert reply["missing"]["details"] == "key 'absent' not found"
