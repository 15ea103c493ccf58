"""The README runs as pasted: its CLI lines and Python blocks, against real servers.

A block is tested when the line before its fence is a marker::

    <!-- readme-test: cli -->            sh: CLI lines, run by bash -e in a fresh directory
    <!-- readme-test: python -->         a Python block, run on its own in a fresh process
    <!-- readme-test: python mysql -->   the same, against a server on the MariaDB sandbox
    <!-- readme-test: sandbox mysql -->  sh: the sandbox route, run against the session's sandbox

Every Python block must carry a marker (so none escapes). The test changes only what a test
cannot use as written: the address ``localhost:1313`` (tests never bind fixed ports) becomes
the test server's, the sandbox block's ``--port 1313`` becomes ``--port 0``, and its
``scripts/serve.sh`` (bootstrap, then ``exec .venv/bin/python -m kvgrpc.server``, checked below)
becomes that exec, since the test's venv is already bootstrapped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
_BLOCK = re.compile(r"(?:<!-- readme-test: ([\w ]+) -->\n)?```(\w*)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    """The README's code blocks whose marker is ``kind`` (e.g. "python mysql")."""
    return [code for marker, _, code in _BLOCK.findall(README) if marker == kind]


def _adapt(code: str, target: str) -> str:
    return code.replace("localhost:1313", target)


def test_every_python_block_is_marked_for_this_test():
    unmarked = [code[:60] for marker, lang, code in _BLOCK.findall(README)
                if lang == "python" and not marker.startswith("python")]
    assert unmarked == []
    assert len(blocks("python")) == 2 and len(blocks("python mysql")) == 1
    assert len(blocks("cli")) == 1 and len(blocks("sandbox mysql")) == 1


def test_the_cli_lines_run_as_pasted(sqlite_server, tmp_path):
    (code,) = blocks("cli")
    assert code.startswith(". .venv/bin/activate")
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the clone's venv, as scripts/serve.sh made it
    target = sqlite_server.target
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", _adapt(code, target)], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, KVGRPC_TARGET=target),  # the default target, for lines without --target
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for expected in (f"ok (version 1 on {target})\n", "hello\n", f"ok (version 2 on {target})\n",
                     "2 records committed to ", "user:1\thello\n", 'user:2\ta, b and "c"\n',
                     f"server {target}:\n", "\tPUT\tuser:1\thello\n", f"deleted (on {target})\n"):
        assert expected in result.stdout, (expected, result.stdout)
    with sqlite_server.client() as kv:
        assert kv.get("note") == b"any bytes"
        assert kv.get("copy") == (tmp_path / "records.csv").read_bytes()


def _run_python(code: str, target: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", _adapt(code, target)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_the_python_blocks_run_as_pasted(sqlite_server):
    api, watch = blocks("python")
    assert _run_python(api, sqlite_server.target).stdout == "key 'user:1' not found\n"
    lines = _run_python(watch, sqlite_server.target).stdout.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["put user:1 b'v2' 2", "delete user:1 b'' 2"]


def test_the_python_blocks_that_need_mariadb_run_as_pasted(mysql_server):
    (code,) = blocks("python mysql")
    out = _run_python(code, mysql_server.target).stdout
    assert "role='master'" in out and "role='replica'" in out


def test_the_sandbox_route_runs_a_server_with_no_password_in_its_arguments(sandbox):
    (code,) = blocks("sandbox mysql")
    serve = "scripts/serve.sh --port 1313"
    assert serve in code
    # scripts/serve.sh is the bootstrap, then this exec: the test runs the exec itself.
    assert (REPO / "scripts/serve.sh").read_text().rstrip().endswith(
        'exec "$repo/.venv/bin/python" -m kvgrpc.server "$@"')
    code = code.replace(serve, f"exec {sys.executable} -m kvgrpc.server --port 0")
    # The session's sandbox, named as a user's shell would name it (`up` finds it running).
    env = dict(os.environ, KVGRPC_SANDBOX_DIR=str(sandbox.dir), KVGRPC_SANDBOX_REPLICAS="1",
               KVGRPC_SANDBOX_PORT=sandbox.env["KVGRPC_SANDBOX_MASTER_PORT"])
    server = subprocess.Popen(["bash", "-e", "-c", code], cwd=REPO, env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in server.stderr:  # the sandbox script's lines, then the server's log
            if match := re.search(r"listening on \S+:(\d+) ", line):
                port = match.group(1)
                break
        assert port is not None, "the server did not start"
        arguments = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert b"kvgrpc.server" in arguments and sandbox.master.password.encode() not in arguments
        status = subprocess.run([sys.executable, "-m", "kvgrpc.client", "--target",
                                 f"127.0.0.1:{port}", "status"], capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        assert "\nmaster   healthy" in status.stdout and "\nreplica  healthy" in status.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
        sandbox.query("DROP TABLE IF EXISTS kv")  # the table the README's server created


@pytest.mark.parametrize("how", ["python -m kvgrpc.server", "kvgrpc-server"])
def test_the_server_without_its_extra_prints_a_one_line_hint(tmp_path, how):
    # The [server] extra's modules made unimportable, as in a plain `pip install .`.
    run = ("runpy.run_module('kvgrpc.server', run_name='__main__')" if how.startswith("python")
           else "sys.argv[0] = 'kvgrpc-server'; import kvgrpc.server")
    script = ("import runpy, sys\n"
              "for name in ('grpc_health', 'grpc_reflection', 'prometheus_client'): sys.modules[name] = None\n"
              f"sys.argv[1:] = ['--port', '0', '--sqlite', {str(tmp_path / 'kv.db')!r}]\n" + run)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("kvgrpc-server: the server needs the [server] extra (grpc_health, "
                             "grpc_reflection, prometheus_client missing): pip install "
                             "'kvgrpc[server]', or from a clone: pip install '.[server]'\n")
