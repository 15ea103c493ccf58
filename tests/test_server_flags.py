"""The server's command line: flags it must refuse (naming the flag, one line, exit 2),
startup failures it must report in one line, and ``--processes``, whose server processes
live and die together. Real ``python -m kvgrpc.server`` processes on the embedded SQLite
store, on free ports."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kvgrpc.server import _arg_parser, _max_processes, config_from_args
from tests.conftest import _free_port_pair


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its reaper does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return not re.search(r"^State:\s+Z", status, re.MULTILINE)


def _wait_until_gone(pids, timeout: float) -> list[int]:
    """The pids still alive after ``timeout`` seconds (none, when all ended sooner)."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


class Server:
    """`python -m kvgrpc.server ARGS` as a child process, its stderr collected."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--sqlite",
             str(tmp_path / "kv.sqlite3"), "--shutdown-grace", "1", *args],
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.children: list[int] = []

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20) -> None:
        """Reads the log until ``pattern`` has appeared ``count`` times."""
        deadline = time.monotonic() + timeout
        while sum(bool(re.search(pattern, line)) for line in self.log) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} x{count} in:\n{self.text()}") from None
            if line is None:
                raise AssertionError(f"the server exited ({self.proc.wait()}):\n{self.text()}")
            self._add(line)

    def _add(self, line: str) -> None:
        self.log.append(line)
        if m := re.search(r"started \d+ server processes: ([\d, ]+)", line):
            self.children = [int(pid) for pid in m.group(1).split(", ")]

    def wait_for_exit(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        while (line := self.lines.get(timeout=5)) is not None:
            self._add(line)
        return code

    def text(self) -> str:
        return "".join(self.log)


@pytest.fixture
def server(tmp_path):
    """Starts servers; kills (by pid) whatever of them is still running at the end."""
    started: list[Server] = []

    def start(*args: str) -> Server:
        started.append(Server(tmp_path, *args))
        return started[-1]

    yield start
    for s in started:
        with contextlib.suppress(queue.Empty):  # the log names the children
            while (line := s.lines.get_nowait()) is not None:
                s._add(line)
        for pid in [s.proc.pid, *s.children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        s.proc.wait(10)


# --------------------------------------------------------------------------------------
# --processes: one group of processes that lives and dies together
# --------------------------------------------------------------------------------------


def test_server_processes_die_with_their_parent_killed_by_sigkill(server):
    port = _free_port_pair(1)
    group = server("--port", str(port), "--processes", "2")
    group.wait_for("listening on", count=2)
    assert len(group.children) == 2
    group.proc.kill()
    group.proc.wait(10)
    assert _wait_until_gone(group.children, 10) == [], "orphans still serve the port"
    # The port is free again for a new group, with no orphan beside it.
    again = server("--port", str(port), "--processes", "2")
    again.wait_for("listening on", count=2)


def test_a_server_process_killed_stops_the_others_and_the_parent_exits_non_zero(server):
    group = server("--port", str(_free_port_pair(1)), "--processes", "2")
    group.wait_for("listening on", count=2)
    victim, other = group.children
    os.kill(victim, signal.SIGKILL)
    assert group.wait_for_exit(15) == 1
    assert _wait_until_gone([other], 5) == []
    ended = [line for line in group.log if "ended unexpectedly" in line]
    assert len(ended) == 1, group.text()
    assert f"server process {victim} (1 of 2)" in ended[0] and "killed by SIGKILL" in ended[0]


def test_sigterm_still_stops_every_process_with_status_0(server):
    group = server("--port", str(_free_port_pair(1)), "--processes", "2")
    group.wait_for("listening on", count=2)
    group.proc.send_signal(signal.SIGTERM)
    assert group.wait_for_exit(15) == 0, group.text()
    assert _wait_until_gone(group.children, 5) == []
    assert "ended unexpectedly" not in group.text()


def test_processes_are_bounded():
    with pytest.raises(ValueError, match=r"^--processes must be 1 to \d+ .*not 100000$"):
        config_from_args(["--port", "5000", "--processes", "100000"], {})
    assert _max_processes() >= 64
    config_from_args(["--port", "5000", "--processes", str(_max_processes())], {})
    assert str(_max_processes()) in _arg_parser().format_help().replace("\n", " ")


# --------------------------------------------------------------------------------------
# The metrics port
# --------------------------------------------------------------------------------------


def _occupy(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_metrics_port_in_use_is_one_line_and_exit_1(server):
    port = _free_port_pair(2)
    with _occupy(port + 1):
        alone = server("--port", str(port), "--metrics-port", str(port + 1))
        assert alone.wait_for_exit(15) == 1
    assert "Traceback" not in alone.text()
    assert f"cannot start: the metrics port {port + 1} on 127.0.0.1 is in use (--metrics-port)" \
        in alone.text()


def test_under_processes_one_that_cannot_start_stops_all_and_the_parent_exits_non_zero(server):
    port = _free_port_pair(1)
    metrics = _free_port_pair(2)
    with _occupy(metrics + 1):  # process 1's metrics port (--metrics-port + 1)
        group = server("--port", str(port), "--processes", "2", "--metrics-port", str(metrics))
        assert group.wait_for_exit(15) == 1
    assert len(group.children) == 2
    assert _wait_until_gone(group.children, 5) == []
    text = group.text()
    assert "Traceback" not in text
    assert f"the metrics port {metrics + 1} on 127.0.0.1 is in use (--metrics-port)" in text
    assert f"server process {group.children[1]} (2 of 2) ended unexpectedly (exit status 1)" in text


def test_the_metrics_port_cannot_be_the_grpc_port():
    with pytest.raises(ValueError, match=r"--metrics-port 5000 is the gRPC port \(--port\)"):
        config_from_args(["--port", "5000", "--metrics-port", "5000"], {})
    with pytest.raises(ValueError, match=r"metrics ports 4999 to 5000 .*--port 5000"):
        config_from_args(["--port", "5000", "--processes", "2", "--metrics-port", "4999"], {})
    with pytest.raises(ValueError, match=r"--metrics-port 65535 with --processes 2 needs ports"):
        config_from_args(["--port", "5000", "--processes", "2", "--metrics-port", "65535"], {})


def test_help_says_process_i_serves_metrics_on_metrics_port_plus_i():
    text = " ".join(_arg_parser().format_help().split())
    assert "process i serves them on PORT + i" in text  # --metrics-port
    assert "process i serves metrics on --metrics-port + i" in text  # --processes


# --------------------------------------------------------------------------------------
# TLS files
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pems(tmp_path_factory) -> Path:
    """Two self-signed certificates and their keys: a.pem/a.key, b.pem/b.key."""
    directory = tmp_path_factory.mktemp("pems")
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem"],
                       cwd=directory, check=True, capture_output=True)
    return directory


@pytest.mark.parametrize("cert, key", [("a.pem", "b.key"), ("a.key", "a.pem")],
                         ids=["another-key", "swapped"])
def test_a_certificate_and_key_that_do_not_match_are_refused_by_name(pems, cert, key):
    with pytest.raises(ValueError, match=r"^--tls-cert .* and --tls-key .* do not form a pair \(.+\)"):
        config_from_args(["--tls-cert", str(pems / cert), "--tls-key", str(pems / key)], {})


def test_a_matching_certificate_and_key_pass(pems):
    config, _, _ = config_from_args(
        ["--tls-cert", str(pems / "a.pem"), "--tls-key", str(pems / "a.key"),
         "--tls-client-ca", str(pems / "b.pem")], {})
    assert config.tls_cert == str(pems / "a.pem")


# --------------------------------------------------------------------------------------
# Every numeric flag: out of range is refused, naming the flag
# --------------------------------------------------------------------------------------

REFUSED = [
    (["--max-replica-lag", "-1"], "--max-replica-lag must be more than 0 (seconds)"),
    (["--max-replica-lag", "0"], "--max-replica-lag must be more than 0 (seconds)"),
    (["--shutdown-grace", "-5"], "--shutdown-grace must be 0 or more (seconds)"),
    (["--shutdown-grace", "nan"], "--shutdown-grace must be a finite number"),
    (["--pool-size", "0"], "--pool-size must be 1 to 32"),
    (["--pool-size", "33"], "--pool-size must be 1 to 32"),
    (["--pool-timeout", "0"], "--pool-timeout must be more than 0"),
    (["--max-workers", "0"], "--max-workers must be 1 to"),
    (["--max-value-bytes", "0"], "--max-value-bytes must be 1 to"),
    (["--max-message-bytes", "4194304", "--max-value-bytes", "4194304"],
     "--max-message-bytes 4194304 cannot hold a record with the largest value "
     "(--max-value-bytes 4194304)"),
    (["--max-message-bytes", str(2**31)], "--max-message-bytes must be 1 to"),
    (["--max-send-message-bytes", "1000"], "--max-send-message-bytes 1000 cannot hold"),
    (["--max-scan-page-bytes", "-1"], "--max-scan-page-bytes must be 1 to"),
    (["--max-batch-get-bytes", "0"], "--max-batch-get-bytes must be 1 to"),
    (["--max-concurrent-rpcs", "0"], "--max-concurrent-rpcs must be 1 to"),
    (["--max-streams", "-1"], "--max-streams must be 1 to"),
    (["--max-watches", "0"], "--max-watches must be 1 to"),
    (["--max-streams-per-client", "0"], "--max-streams-per-client must be 1 to"),
    (["--max-streams-per-connection", "0"], "--max-streams-per-connection must be 1 to"),
    (["--request-timeout", "0"], "--request-timeout must be more than 0"),
    (["--stream-idle-timeout", "-1"], "--stream-idle-timeout must be more than 0"),
    (["--watch-buffer-bytes", "0"], "--watch-buffer-bytes must be 1 to"),
    (["--max-catchup-watches", "0"], "--max-catchup-watches must be 1 to"),
    (["--load-retention", "0"], "--load-retention must be more than 0 (days)"),
    (["--watch-feed-retry", "0"], "--watch-feed-retry must be more than 0"),
    (["--keepalive-time", "0"], "--keepalive-time must be 0.001 or more"),
    (["--keepalive-timeout", "1e9"], "--keepalive-timeout must be at most"),
    (["--port", "70000"], "--port must be 0 to 65535"),
    (["--metrics-port", "-1"], "--metrics-port must be 0 to 65535"),
    (["--auth-tokens-file", "nonexist.txt"], "--auth-tokens-file nonexist.txt: no such file"),
    (["--metrics-token-file", "nonexist.txt"], "--metrics-token-file nonexist.txt: no such file"),
    (["--tls-cert", "nonexist.pem", "--tls-key", "nonexist.key"],
     "--tls-cert nonexist.pem: no such file"),
    (["--master", "mysql://user@host/"], "--master: database URL"),
]


@pytest.mark.parametrize("args, message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_flags_out_of_range_are_refused_by_name(args, message):
    with pytest.raises(ValueError) as refused:
        config_from_args(["--port", "5000", *args], {})
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("args", [
    ["--max-replica-lag", "-1"], ["--pool-size", "0"], ["--auth-tokens-file", "nonexist.txt"],
    ["--tls-cert", "PEMS/a.pem", "--tls-key", "PEMS/b.key"],
], ids=lambda args: args[0])
def test_a_refused_flag_is_one_line_on_stderr_and_exit_2(args, pems, tmp_path):
    args = [arg.replace("PEMS", str(pems)) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "kvgrpc.server", "--port", "0", "--sqlite",
         str(tmp_path / "kv.sqlite3"), *args],
        capture_output=True, text=True, timeout=15, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kvgrpc-server: "), result.stderr
    assert args[0] in result.stderr
