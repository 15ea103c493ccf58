"""Read consistency against the real pair: eventual, strong, bounded staleness, tokens.

A replica whose SQL thread is stopped stays reachable but applies nothing: the honest way
to make it stale. A row written on the replica alone (binlog off) tells which endpoint
answered a read.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from kvgrpc.errors import NotFound


@contextlib.contextmanager
def replication_paused(sandbox):
    """Stops the replica's SQL thread (it keeps receiving, applies nothing) for a while."""
    sandbox.query("STOP SLAVE SQL_THREAD", role="replica", root=True)
    try:
        yield
    finally:
        sandbox.query("START SLAVE SQL_THREAD", role="replica", root=True)


def replica_only_row(sandbox, table: str, key: str, value: str) -> None:
    cnx = sandbox.connect("replica", root=True)
    cur = cnx.cursor()
    cur.execute("SET SESSION sql_log_bin = 0")
    cur.execute(f"INSERT INTO kvgrpc.`{table}` (k, v) VALUES (%s, %s)", (key, value))
    cnx.close()


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    """Polls ``predicate`` (a real state change we cannot be told about) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def replica_status(kv):
    return next(e for e in kv.status() if e.role == "replica")


def test_status_reports_lag_roles_and_pools(mysql_server, client_kind):
    with mysql_server.client() as kv:
        # The first measurement can show an old heartbeat (a previous server's); the
        # next ones show this server's.
        wait_until(lambda: (replica_status(kv).lag_ms or 10**9) < 1000, what="a small lag")
        master, replica = kv.status()
        assert master.role == "master" and master.reachable and master.healthy and master.lag_ms == 0
        assert master.pool_size == 8 and "mysql://kvgrpc@127.0.0.1" in master.name
        assert replica.role == "replica" and replica.healthy and 0 <= replica.lag_ms < 1000
        assert replica.problem == ""


def test_eventual_strong_and_token_reads_with_replication_paused(mysql_server, sandbox, client_kind):
    table = mysql_server.config.table
    with mysql_server.client() as kv, mysql_server.client(read_your_writes=True) as session:
        kv.put("seed", b"0")
        sandbox.wait_for_replica()
        with replication_paused(sandbox):
            session.put("fresh", b"new")
            token = session.last_write_token
            assert token.startswith("0-1-")
            # Eventual reads keep working, from the (stale) replica.
            with pytest.raises(NotFound):
                kv.get("fresh")
            assert kv.get("seed") == b"0"
            # Strong reads and reads carrying the token never return stale data.
            assert kv.get("fresh", consistency="strong") == b"new"
            assert kv.get("fresh", min_write_token=token) == b"new"
            assert session.get("fresh") == b"new"
            assert session.batch_get(["fresh", "seed"]) == {"fresh": b"new", "seed": b"0"}
        # Once the replica has applied the write, it answers token reads itself.
        replica_only_row(sandbox, table, "only-on-replica", "r")
        sandbox.wait_for_replica()
        assert session.get("only-on-replica") == b"r"
        assert session.get("fresh") == b"new"


def test_bounded_staleness_never_returns_data_older_than_the_bound(start_server, sandbox, table_name):
    server = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name,
                          max_replica_lag=30.0)
    with server.client() as kv:
        kv.put("b", b"old")
        sandbox.wait_for_replica()
        replica_only_row(sandbox, table_name, "replica-marker", "x")
        # Fresh replica: a 2 s bound is met, and the replica answers.
        wait_until(lambda: (replica_status(kv).lag_ms or 10**9) < 500, what="a small lag")
        assert kv.get("replica-marker", consistency="bounded", max_staleness_ms=2000) == b"x"
        with replication_paused(sandbox):
            kv.put("b", b"new")
            # The lag grows past the bound: bounded reads move to the master and see "new".
            wait_until(lambda: (replica_status(kv).lag_ms or 0) > 1000, what="lag over 1 s")
            assert kv.get("b", consistency="bounded", max_staleness_ms=1000) == b"new"
            with pytest.raises(NotFound):
                kv.get("replica-marker", consistency="bounded", max_staleness_ms=1000)
            # An eventual read still goes to the replica (lag under --max-replica-lag).
            assert kv.get("b") == b"old"
        sandbox.wait_for_replica()


def test_lagging_replica_is_taken_out_and_put_back(start_server, sandbox, table_name):
    server = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name,
                          max_replica_lag=0.5)
    with server.client() as kv:
        wait_until(lambda: replica_status(kv).healthy, what="a healthy replica")
        with replication_paused(sandbox):
            def taken_out():
                status = replica_status(kv)
                return None if status.healthy else status

            status = wait_until(taken_out, what="the replica to be taken out")
            assert status.reachable and "lagging" in status.problem
            kv.put("during", b"pause")
            assert kv.get("during") == b"pause"  # eventual read, answered by the master
        wait_until(lambda: replica_status(kv).healthy, what="the replica to be put back")


def test_token_from_one_server_honoured_by_another(start_server, sandbox, table_name, client_kind):
    one = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    two = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    with one.client() as writer, two.client() as reader:
        with replication_paused(sandbox):
            writer.put("cross", b"v")
            assert reader.get("cross", min_write_token=writer.last_write_token) == b"v"


def test_a_token_naming_a_write_the_master_lacks_is_refused_at_once(mysql_server, client_kind):
    """A token from the future, or from a GTID domain this database never wrote, names a
    write no replica will ever apply: each read carrying one held a replica connection for
    the whole token wait (0.5 s), then was answered by the master as if it reflected that
    write. Refused now, by name, without the wait; real tokens still work."""
    from kvgrpc.errors import FailedPrecondition

    with mysql_server.client() as kv:
        kv.put("tok", b"1")
        real = kv.last_write_token
        domain, server, seq = (int(x) for x in real.split("-"))
        # Also the same sequence number from another server id: what a write lost in a
        # failover looks like once the new master's own writes have passed its number.
        for forged in (f"{domain}-{server}-{seq + 1_000_000}", f"{domain + 7}-1-5",
                       f"{real},{domain + 3}-{server}-1", f"{domain}-{server + 5}-{seq}",
                       f"{domain}-{server + 5}-1"):
            for read in (lambda t: kv.get("tok", min_write_token=t),
                         lambda t: kv.batch_get(["tok"], min_write_token=t),
                         lambda t: list(kv.scan(prefix="tok", min_write_token=t))):
                began = time.monotonic()
                with pytest.raises(FailedPrecondition, match="min_write_token .* does not have"):
                    read(forged)
                assert time.monotonic() - began < 0.3
        assert kv.get("tok", min_write_token=real) == b"1"
        assert kv.get("tok", min_write_token=f"{domain}-{server}-{seq - 1}") == b"1"  # an earlier write


def test_the_embedded_database_refuses_a_token_from_another_database(sqlite_server, client_kind):
    from kvgrpc.errors import InvalidArgument

    with sqlite_server.client(read_your_writes=True) as kv:
        kv.put("tok", b"1")
        assert kv.last_write_token == "" and kv.get("tok") == b"1"
        with pytest.raises(InvalidArgument, match="min_write_token is from another database"):
            kv.get("tok", min_write_token="0-1-5")
