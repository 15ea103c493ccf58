"""The MariaDB sandbox itself (kvgrpc.ops.sandbox): what every node starts as, the
least-privilege accounts, the shell interface, and that a restarted old master stays closed."""

from __future__ import annotations

import os
import subprocess

import mysql.connector
import pytest

from kvgrpc.errors import FailedPrecondition
from kvgrpc.server import config_from_args
from kvgrpc.store import MySQLEndpoint, MySQLStore
from kvgrpc.store.binlog import BinlogFeed

from .conftest import REPO, _free_port_pair


def _connect(ep: MySQLEndpoint):
    return mysql.connector.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.password,
                                   database=ep.database, autocommit=True)


def test_every_node_is_strict_and_only_the_master_is_writable(sandbox):
    for role, read_only in (("master", 0), ("replica", 1)):
        assert sandbox.query("SELECT @@gtid_strict_mode, @@read_only, @@rpl_semi_sync_master_wait_point",
                             role=role, root=True) == [(1, read_only, "AFTER_SYNC")]


def test_least_privilege_accounts(sandbox, table_name):
    writer, reader, feed = (sandbox.endpoint(f"KVGRPC_{n}_URL") for n in ("WRITER", "READER", "FEED"))
    assert (writer.user, reader.user, feed.user) == ("kvgrpc_writer", "kvgrpc_reader", "kvgrpc_feed")
    store = MySQLStore(writer, table_name, create_table=True, bulk_load=False)
    try:
        first = store.put(b"k", b"v").commit
        sandbox.wait_for_replica()
        cnx = _connect(reader)
        cur = cnx.cursor()
        cur.execute(f"SELECT v FROM `{table_name}`")
        assert cur.fetchall() == [(b"v",)]
        with pytest.raises(mysql.connector.Error) as denied:
            cur.execute(f"DELETE FROM `{table_name}`")
        assert denied.value.errno in (1142, 1290)  # no DELETE privilege (or read-only replica)
        cnx.close()
        master_as_reader = _connect(MySQLEndpoint(writer.host, writer.port, reader.user, writer.database,
                                                  reader.password))
        with pytest.raises(mysql.connector.Error) as denied:
            master_as_reader.cursor().execute(f"DELETE FROM `{table_name}`")
        assert denied.value.errno == 1142
        master_as_reader.close()

        def feed_as(ep: MySQLEndpoint) -> BinlogFeed:
            settings = dict(host=ep.host, port=ep.port, user=ep.user, password=ep.password)
            return BinlogFeed(settings, ep.database, table_name, store._query_one)

        with pytest.raises(FailedPrecondition, match="REPLICATION SLAVE"):
            next(feed_as(writer).changes(first.revision - 1, lambda: False))
        seen = []
        for batch in feed_as(feed).changes(first.revision - 1, lambda: bool(seen)):
            seen.extend(e.key for e in batch.events)
        assert seen == ["k"]
    finally:
        store.close()


def test_shell_interface_exports_urls_without_passwords(tmp_path):
    env = dict(os.environ, KVGRPC_SANDBOX_DIR=str(tmp_path / "sb"),
               KVGRPC_SANDBOX_PORT=str(_free_port_pair(2)))
    script = REPO / "scripts" / "mysql-sandbox.sh"
    try:
        up = subprocess.run(["bash", str(script), "up"], env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        lines = up.stdout.splitlines()
        assert all(line.startswith("export KVGRPC_") for line in lines), up.stdout
        names = {line[7:].split("=")[0] for line in lines}
        assert {"KVGRPC_MASTER_URL", "KVGRPC_REPLICA_URL", "KVGRPC_MYSQL_PASSWORD", "KVGRPC_WRITER_URL",
                "KVGRPC_READER_URL", "KVGRPC_FEED_URL", "KVGRPC_ADMIN_MASTER_URL"} <= names
        shown = subprocess.run(["bash", "-c", 'eval "$1"; env', "-", up.stdout],
                               capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
        exported = dict(line.split("=", 1) for line in shown.stdout.splitlines() if line.startswith("KVGRPC_"))
        assert all("@" in exported[n] and ":" not in exported[n].split("@")[0][8:]
                   for n in names if n.endswith("_URL"))  # mysql://user@host: no password
        # What a server started from that shell would use, and that it logs in.
        config, _, _ = config_from_args([], exported)
        cnx = _connect(config.master)
        cnx.close()
        status = subprocess.run(["bash", str(script), "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0 and "Rpl_semi_sync_master_status=ON" in status.stdout, \
            status.stdout + status.stderr
    finally:
        subprocess.run(["bash", str(script), "down", "--purge"], env=env, capture_output=True, timeout=120)
    assert not (tmp_path / "sb").exists()


def test_a_restarted_old_master_stays_read_only_after_a_promotion(own_sandbox):
    box = own_sandbox()
    box.run("kill", "master")
    box.query("STOP SLAVE", role="replica", root=True)
    box.query("RESET SLAVE ALL", role="replica", root=True)
    box.query("SET GLOBAL read_only = 0", role="replica", root=True)
    box.run("start", "master")
    assert box.query("SELECT @@read_only", role="master", root=True) == [(1,)]
    # Without a promotion, the restarted master is opened again (the fault tests' case).
    box.query("SET GLOBAL read_only = 1", role="replica", root=True)
    box.run("stop", "master")
    box.run("start", "master")
    assert box.query("SELECT @@read_only", role="master", root=True) == [(0,)]
