"""Fixtures that start real things: the MariaDB master + replica sandbox (through the
project's own kvgrpc.ops.sandbox) and kvgrpc servers on port 0.

Tests that need MariaDB never skip: if the sandbox cannot start, they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import kvgrpc  # noqa: F401 - first, so the MySQL C extension loads before ssl (DEVELOPERS.md)
import mysql.connector
import pytest

from kvgrpc.client import KeyValueClient
from kvgrpc.ops import sandbox as ops_sandbox
from kvgrpc.server import ServerConfig, build_server
from kvgrpc.store import MySQLEndpoint
from tests.blocking_aio import BlockingAioClient

REPO = Path(__file__).resolve().parent.parent

# The tests say which server and database they use; a shell that exported a sandbox's
# variables (README: `eval "$(scripts/mysql-sandbox.sh up)"`) must not change that.
for _name in ("KVGRPC_MASTER_URL", "KVGRPC_REPLICA_URL", "KVGRPC_TARGET", "KVGRPC_TOKEN",
              "KVGRPC_AUTH_TOKENS"):
    os.environ.pop(_name, None)


def _free_port_pair(count: int = 2) -> int:
    """A port P below the ephemeral range (32768+) such that P .. P+count-1 are free on loopback."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with contextlib.ExitStack() as stack:
                for offset in range(count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
    raise RuntimeError("no free ports below 32768")


@dataclass
class Sandbox:
    """A running MariaDB master + GTID replica(s) started by :mod:`kvgrpc.ops.sandbox`
    (in this process; ``scripts/mysql-sandbox.sh`` runs the same code)."""

    dir: Path
    box: ops_sandbox.Sandbox
    env: dict[str, str]

    @classmethod
    def up(cls, directory: Path, replicas: int = 1, *, tls: bool = False) -> Sandbox:
        box = ops_sandbox.Sandbox(directory, _free_port_pair(replicas + 1), replicas, tls)
        box.validate()
        sandbox = cls(directory, box, {})
        sandbox.run("up")
        return sandbox

    def run(self, command: str, *args: str) -> None:
        """Runs a sandbox command on this sandbox (``up``, or ``kill``/``stop``/``start``/
        ``wipe`` ROLE); fails the test on error."""
        try:
            getattr(self.box, command)(*args)
        except ops_sandbox.SandboxError as exc:
            pytest.fail(f"sandbox {command} {' '.join(args)} failed: {exc}", pytrace=False)
        self.env = self.box.env()

    def down(self) -> None:
        with contextlib.suppress(ops_sandbox.SandboxError):
            self.box.down(purge=True)

    def process_env(self, **extra: str) -> dict[str, str]:
        """The environment for a kvgrpc process using this sandbox's URLs: the passwords."""
        return dict(os.environ, KVGRPC_MYSQL_PASSWORD=self.env["KVGRPC_MYSQL_PASSWORD"],
                    KVGRPC_ADMIN_PASSWORD=self.env["KVGRPC_ADMIN_PASSWORD"],
                    KVGRPC_REPL_PASSWORD=self.env["KVGRPC_REPL_PASSWORD"], **extra)

    def _endpoint(self, url: str) -> MySQLEndpoint:
        user = urllib.parse.urlsplit(url).username
        password = self.env["KVGRPC_ADMIN_PASSWORD" if user == "kvgrpc_admin" else "KVGRPC_MYSQL_PASSWORD"]
        return MySQLEndpoint.from_url(url, password)

    def endpoint(self, name: str) -> MySQLEndpoint:
        return self._endpoint(self.env[name].split(",")[0])

    @property
    def replicas(self) -> tuple[MySQLEndpoint, ...]:
        return tuple(self._endpoint(url) for url in self.env["KVGRPC_REPLICA_URL"].split(","))

    @property
    def master(self) -> MySQLEndpoint:
        return self._endpoint(self.env["KVGRPC_MASTER_URL"])

    @property
    def replica(self) -> MySQLEndpoint:
        return self.replicas[0]

    def connect(self, role: str = "master", *, root: bool = False):
        """A direct connection (autocommit) to ``role``: master, replica, replica2, replica3.

        ``root`` connects as root over the unix socket (to bypass read_only on a replica).
        """
        if root:
            sock = self.env[f"KVGRPC_SANDBOX_{role.upper()}_SOCKET"]
            return mysql.connector.connect(unix_socket=sock, user="root", autocommit=True)
        ep = self.master if role == "master" else self.replicas[int(role[7:] or 1) - 1]
        return mysql.connector.connect(
            host=ep.host, port=ep.port, user=ep.user, password=ep.password,
            database=ep.database, autocommit=True,
        )

    def query(self, sql: str, params=(), role: str = "master", *, root: bool = False) -> list[tuple]:
        cnx = self.connect(role, root=root)
        try:
            cur = cnx.cursor()
            cur.execute(sql, params)
            return cur.fetchall() if cur.with_rows else []
        finally:
            cnx.close()

    def wait_for_replica(self, timeout: float = 30.0, role: str = "replica") -> None:
        """Blocks until the replica has applied everything the master has committed."""
        (pos,) = self.query("SELECT @@gtid_binlog_pos")[0]
        (result,) = self.query("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout), role=role)[0]
        assert result == 0, f"{role} did not reach {pos} within {timeout} s"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory) -> Sandbox:
    """The MariaDB pair shared by the session; tests must leave it as they found it."""
    pair = Sandbox.up(tmp_path_factory.mktemp("sandbox"))
    yield pair
    pair.down()


@pytest.fixture
def own_sandbox(tmp_path_factory):
    """A factory of MariaDB sandboxes for one test alone (fault tests kill servers):
    ``own_sandbox(replicas=2)``, ``own_sandbox(tls=True)``. Stopped at the end of the test."""
    started: list[Sandbox] = []

    def make(replicas: int = 1, *, tls: bool = False) -> Sandbox:
        started.append(Sandbox.up(tmp_path_factory.mktemp("own-sandbox"), replicas, tls=tls))
        return started[-1]

    yield make
    for box in started:
        box.down()


_table_numbers = itertools.count()


@pytest.fixture
def table_name(request) -> str:
    """A fresh table name per test, so tests never see each other's rows."""
    return f"t{os.getpid()}_{next(_table_numbers)}"


CLIENT_KINDS = ("blocking", "asyncio")


def open_client(kind: str, target: str, **kwargs: Any) -> Any:
    """A client of ``target``: the blocking :class:`KeyValueClient`, or (``"asyncio"``)
    :class:`kvgrpc.aio.KeyValueClient` driven through blocking calls, so that one test
    body checks both."""
    if kind == "asyncio":
        return BlockingAioClient(target, **kwargs)
    return KeyValueClient(target, **kwargs)


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request) -> str:
    """Runs a test with each client library; the servers it starts hand out that kind
    of client from ``RunningServer.client()``."""
    return request.param


@dataclass
class RunningServer:
    port: int
    config: ServerConfig
    server: object
    client_kind: str = "blocking"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs) -> KeyValueClient:
        return open_client(self.client_kind, self.target, **kwargs)


@pytest.fixture
def start_server(request):
    """Starts real kvgrpc servers on port 0; stops them at the end of the test. A test
    that takes the ``client_kind`` fixture gets clients of that kind from them."""
    started = []
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("client_kind", "blocking") if callspec else "blocking"

    def start(**overrides) -> RunningServer:
        config = ServerConfig(host="127.0.0.1", port=0, **overrides)
        server = build_server(config)
        server.start()
        started.append(server)
        return RunningServer(server.port, config, server, kind)

    yield start
    for server in started:
        server.stop(grace=1)


@pytest.fixture
def sqlite_server(start_server, tmp_path, table_name) -> RunningServer:
    return start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), table=table_name)


@pytest.fixture
def mysql_server(start_server, sandbox, table_name) -> RunningServer:
    return start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)


@pytest.fixture(params=["sqlite", "mysql"])
def any_server(request) -> RunningServer:
    """The same end-to-end test on the embedded default and on the MariaDB pair."""
    return request.getfixturevalue(f"{request.param}_server")


#: `python -m kvgrpc.client` with Ctrl-C as in a terminal: a job started in the background
#: (as CI may run the suite) inherits SIGINT ignored, so the child puts Python's handler back
#: itself. (Not with preexec_fn: forking a process with gRPC threads and running Python in
#: the child has aborted that child, "skipping fork() handlers".) Use: [sys.executable, "-c",
#: CLI_AS_IN_A_TERMINAL, CLI ARGS...].
CLI_AS_IN_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'kvgrpc.client'; runpy.run_module('kvgrpc.client', run_name='__main__')")


def run_cli(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m kvgrpc.client ARGS` as a separate process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kvgrpc.client", *args],
        capture_output=True, text=True, env=dict(os.environ, **(env or {})), input=stdin,
        timeout=120,
    )


def server_process(box, table: str, *extra: str, port: int = 0):
    """`python -m kvgrpc.server` on the sandbox ``box`` (its URLs, passwords from the
    environment) as a child process; returns it and its target once it listens."""
    import re
    import threading

    proc = subprocess.Popen(
        [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--port", str(port),
         "--table", table, "--master", box.env["KVGRPC_MASTER_URL"],
         "--replica", box.env["KVGRPC_REPLICA_URL"], *extra],
        stderr=subprocess.PIPE, text=True, env=box.process_env(),
    )
    for line in proc.stderr:
        if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, f"127.0.0.1:{m.group(1)}"
    raise AssertionError("the server did not start")
