"""Fixtures that start real things: the MariaDB master + replica sandbox (through the
project's own scripts/mysql-sandbox.sh) and kvgrpc servers on port 0.

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
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import kvgrpc  # noqa: F401 - first, so the MySQL C extension loads before ssl (DEVELOPERS.md)
import mysql.connector
import pytest

from kvgrpc.client import KeyValueClient
from kvgrpc.server import ServerConfig, build_server
from kvgrpc.store import MySQLEndpoint
from tests.blocking_aio import BlockingAioClient

REPO = Path(__file__).resolve().parent.parent
SANDBOX_SCRIPT = REPO / "scripts" / "mysql-sandbox.sh"


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
    """A running MariaDB master + GTID replica(s) started by scripts/mysql-sandbox.sh."""

    dir: Path
    env: dict[str, str]
    script_env: dict[str, str]

    @classmethod
    def up(cls, directory: Path, replicas: int = 1) -> Sandbox:
        script_env = dict(os.environ, KVGRPC_SANDBOX_DIR=str(directory),
                          KVGRPC_SANDBOX_PORT=str(_free_port_pair(replicas + 1)),
                          KVGRPC_SANDBOX_REPLICAS=str(replicas))
        sandbox = cls(directory, {}, script_env)
        sandbox.run("up")
        return sandbox

    def run(self, *args: str) -> None:
        """Runs `mysql-sandbox.sh ARGS` on this sandbox (e.g. "kill", "replica"); fails the test on error."""
        result = subprocess.run(["bash", str(SANDBOX_SCRIPT), *args], env=self.script_env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"mysql-sandbox.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}",
                        pytrace=False)
        self._load_env()

    def _load_env(self) -> None:
        path = self.dir / "env"
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                name, _, value = line.partition("=")
                self.env[name.strip()] = value.strip().strip("'\"")

    def down(self) -> None:
        subprocess.run(["bash", str(SANDBOX_SCRIPT), "down", "--purge"], env=self.script_env,
                       capture_output=True)

    def endpoint(self, name: str) -> MySQLEndpoint:
        return MySQLEndpoint.from_url(self.env[name].split(",")[0])

    @property
    def replicas(self) -> tuple[MySQLEndpoint, ...]:
        return tuple(MySQLEndpoint.from_url(url) for url in self.env["KVGRPC_REPLICA_URL"].split(","))

    @property
    def master(self) -> MySQLEndpoint:
        return MySQLEndpoint.from_url(self.env["KVGRPC_MASTER_URL"])

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
    ``own_sandbox(replicas=2)``. Stopped at the end of the test."""
    started: list[Sandbox] = []

    def make(replicas: int = 1) -> Sandbox:
        started.append(Sandbox.up(tmp_path_factory.mktemp("own-sandbox"), replicas))
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


def run_cli(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m kvgrpc.client ARGS` as a separate process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kvgrpc.client", *args],
        capture_output=True, text=True, env=dict(os.environ, **(env or {})), input=stdin,
        timeout=120,
    )
