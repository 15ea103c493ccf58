"""LOAD DATA LOCAL INFILE at the edge: a hostile database server reads no file of the
kvgrpc host (both mysql-connector drivers, PyMySQL for the binlog feed), while the bulk
path still loads its own batch files; and batch files are private and never left behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import mysql.connector
import pytest

from kvgrpc.errors import KvError
from kvgrpc.routing import ReadRouter
from kvgrpc.store import MySQLEndpoint, MySQLStore
from kvgrpc.store.base import ALL_KEYS
from kvgrpc.store.binlog import BinlogFeed
from kvgrpc.store.mysql import BATCH_DIR_PREFIX, sweep_stale_batch_dirs
from tests.fake_mysql import FakeMySQLServer

SECRET = b"kvgrpc-host-secret-7f3a9c"
DRIVERS = {"c-extension": {}, "pure-python": {"use_pure": True}}


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET + b"\n")
    return str(path)


def _connect_time(sql: str, n: int) -> bool:
    return n == 0  # the driver's first statement (SET NAMES)


def _later(sql: str, n: int) -> bool:
    return n > 0 and "`" in sql  # every statement on a table, after the first


def _attempt(operation) -> None:
    """Runs one store call against the hostile server; its failure is expected and fine."""
    try:
        operation()
    except (KvError, mysql.connector.Error, TypeError, ValueError, OSError):
        pass


@pytest.mark.parametrize("when", [_connect_time, _later], ids=["at-connect", "later-query"])
@pytest.mark.parametrize("driver", DRIVERS, ids=list(DRIVERS))
def test_a_hostile_server_gets_no_file_from_stores_or_monitor(secret_file, driver, when):
    assert mysql.connector.HAVE_CEXT, "the C extension must load (DEVELOPERS.md), or half of this test is moot"
    server = FakeMySQLServer(secret_file, when)
    endpoint = MySQLEndpoint("127.0.0.1", server.port, "kvgrpc", "kv", "pw")
    options = DRIVERS[driver]
    master = MySQLStore(endpoint, "t", create_table=True, pool_timeout=2, connect_timeout=2,
                        driver_options=options)
    replica = MySQLStore(endpoint, "t", role="replica", pool_timeout=2, connect_timeout=2,
                         driver_options=options)
    try:
        assert master._bulk_load_dir and replica._bulk_load_dir is None
        batch = [(b"k%d" % i, b"v") for i in range(300)]  # takes the LOAD DATA path
        for store in (master, replica):
            _attempt(store.connect)
            _attempt(lambda: store.get(b"k"))  # noqa: B023 - called at once
            _attempt(lambda: store.scan(b"", None, None, 10))  # noqa: B023 - called at once
        _attempt(lambda: master.put_many(batch))
        _attempt(lambda: master.put(b"k", b"v"))
        router = ReadRouter(master, [replica])  # the lag monitor: heartbeat and lag reads
        for _ in range(3):
            router.check()
        assert server.requests >= 3, server.queries  # the server did ask, more than once
        assert not server.got(SECRET)
    finally:
        master.close()
        replica.close()
        server.close()


@pytest.mark.parametrize("when", [_connect_time, lambda sql, n: True], ids=["at-connect", "every-query"])
def test_a_hostile_server_gets_no_file_from_the_binlog_feed(secret_file, when):
    server = FakeMySQLServer(secret_file, when)
    settings = dict(host="127.0.0.1", port=server.port, user="kvgrpc", password="pw")
    feed = BinlogFeed(settings, "kv", "t", lambda sql: ())
    try:
        for _ in range(2):
            _attempt(lambda: next(feed._read("", 0, 0, lambda: False, ALL_KEYS)))
        assert server.requests >= 1, server.queries
        assert not server.got(SECRET)
    finally:
        server.close()


@pytest.mark.parametrize("driver", DRIVERS, ids=list(DRIVERS))
def test_bulk_load_still_works_on_both_drivers(sandbox, table_name, driver):
    """The confinement does not cost the fast path: LOAD DATA LOCAL of the store's own
    batch file runs (no INSERT statement) with either driver."""
    store = MySQLStore(sandbox.master, table_name, create_table=True, driver_options=DRIVERS[driver])
    try:
        def inserts() -> int:
            return int(sandbox.query("SHOW GLOBAL STATUS LIKE 'Com_insert'")[0][1])

        before = inserts()
        store.put_many([(b"b%d" % i, b"\t\n\\%d" % i) for i in range(400)])
        assert inserts() == before and store._bulk_load
        assert store.get(b"b7").value == b"\t\n\\7"
        assert os.listdir(store._bulk_load_dir) == []
    finally:
        store.close()


# -- batch files: private, cleaned on every path, swept at start ----------------------


def test_batch_dir_and_files_are_private(sandbox, table_name, monkeypatch):
    store = MySQLStore(sandbox.master, table_name, create_table=True)
    seen = []
    real_open = os.open

    def watching_open(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if str(path).startswith(store._bulk_load_dir):
            seen.append((os.fstat(fd).st_mode & 0o777, flags))
        return fd

    monkeypatch.setattr(os, "open", watching_open)
    try:
        directory = os.stat(store._bulk_load_dir)
        assert stat.S_IMODE(directory.st_mode) == 0o700
        assert os.path.basename(store._bulk_load_dir).startswith(f"{BATCH_DIR_PREFIX}{os.getpid()}-")
        store.put_many([(b"p%d" % i, b"v") for i in range(300)])
        assert [mode for mode, _ in seen] == [0o600]
        assert all(flags & os.O_EXCL and flags & os.O_CREAT for _, flags in seen)
        assert os.listdir(store._bulk_load_dir) == []
    finally:
        store.close()
    assert not os.path.exists(store._bulk_load_dir)


def test_batch_files_are_removed_when_the_database_refuses_load_data(sandbox, table_name):
    """A server with local_infile off refuses LOAD DATA LOCAL: the batch is upserted, the
    fast path turns off, and no file stays behind (the directory goes at close)."""
    sandbox.query("SET GLOBAL local_infile = 0", root=True)
    store = MySQLStore(sandbox.master, table_name, create_table=True)
    try:
        store.put_many([(b"r%d" % i, b"v") for i in range(300)])
        assert not store._bulk_load
        assert store.get(b"r299").version == 1
        assert os.listdir(store._bulk_load_dir) == []
    finally:
        sandbox.query("SET GLOBAL local_infile = 1", root=True)
        store.close()
    assert not os.path.exists(store._bulk_load_dir)


def test_batch_file_write_failure_takes_the_slow_path(sandbox, table_name):
    store = MySQLStore(sandbox.master, table_name, create_table=True)
    try:
        # A file already where the next batch goes (O_EXCL): the write fails, the batch
        # is upserted instead, and the stranger's file is left alone.
        blocker = os.path.join(store._bulk_load_dir, "batch-0.tsv")
        with open(blocker, "wb") as f:
            f.write(b"not ours")
        store.put_many([(b"w%d" % i, b"v") for i in range(300)])
        assert store.get(b"w0").version == 1 and store._bulk_load
        assert os.listdir(store._bulk_load_dir) == ["batch-0.tsv"]
    finally:
        store.close()


def test_stale_batch_dirs_of_dead_servers_are_swept_at_start(sandbox, table_name, tmp_path):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(base or "/tmp", f"{BATCH_DIR_PREFIX}{dead.pid}-abc123")
    alive = os.path.join(base or "/tmp", f"{BATCH_DIR_PREFIX}{os.getppid()}-def456")
    legacy = os.path.join(base or "/tmp", f"{BATCH_DIR_PREFIX}old_xyz9")
    for path in (stale, alive, legacy):
        os.makedirs(path, mode=0o700, exist_ok=True)
        with open(os.path.join(path, "batch-1.tsv"), "wb") as f:
            f.write(b"k\tv\n")
    old = time.time() - 2 * 24 * 3600
    os.utime(legacy, (old, old))
    try:
        store = MySQLStore(sandbox.master, table_name, create_table=True)  # sweeps at start
        store.close()
        assert not os.path.exists(stale) and not os.path.exists(legacy)
        assert os.path.exists(alive)  # its process runs: maybe a live server's
        assert sweep_stale_batch_dirs(base) == []
    finally:
        import shutil

        for path in (stale, alive, legacy):
            shutil.rmtree(path, ignore_errors=True)
