"""The Store contract, run on both backends: SQLite and the MariaDB master."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from kvgrpc.errors import Internal, InvalidArgument, ResourceExhausted, Unavailable
from kvgrpc.records import NO_COMMIT, Record, WriteResult
from kvgrpc.store import MySQLEndpoint, MySQLStore, SQLiteStore, redact_url
from kvgrpc.store.base import WriteOp


@pytest.fixture(params=["sqlite", "mysql"])
def store(request, tmp_path, table_name):
    if request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "store.sqlite3"), table_name)
    else:
        sandbox = request.getfixturevalue("sandbox")
        s = MySQLStore(sandbox.master, table_name, create_table=True)
        s.connect()
    yield s
    s.close()


def test_put_creates_then_increments_version(store):
    first = store.put(b"k", b"one")
    assert (first.done, first.version) == (True, 1) and first.commit.revision > 0
    assert store.put(b"k", b"two").version == 2
    assert store.get(b"k") == Record("k", b"two", 2)


def test_a_group_of_puts_gives_each_its_own_version(store):
    """write_group of plain Puts (one multi-row upsert on MariaDB): a key written twice in
    the group gets two versions, in order, in one transaction."""
    store.put(b"old", b"0")
    ops = [WriteOp(b"new", b"1"), WriteOp(b"old", b"2"), WriteOp(b"new", b"3"), WriteOp(b"x", b"4"),
           WriteOp(b"new", b"5")]
    results = store.write_group(ops)
    assert [(r.done, r.version) for r in results] == [(True, 1), (True, 2), (True, 2), (True, 1), (True, 3)]
    assert all(r.commit != NO_COMMIT for r in results)
    assert store.get(b"new") == Record("new", b"5", 3)
    assert store.get(b"old") == Record("old", b"2", 2)


def test_a_mixed_group_keeps_compare_and_set_and_order(store):
    store.put(b"c", b"0")
    ops = [WriteOp(b"c", b"1", expected_version=1), WriteOp(b"c", b"2", expected_version=1),
           WriteOp(b"d", b"1", expected_version=0), WriteOp(b"c", None), WriteOp(b"gone", None)]
    results = store.write_group(ops)
    assert [(r.done, r.version) for r in results] == [(True, 2), (False, 2), (True, 1), (True, 0), (False, 0)]
    assert store.get(b"c") is None and store.get(b"d") == Record("d", b"1", 1)


def test_each_write_of_a_group_has_the_revision_watch_gives_its_change(store):
    """A write's revision is where the change feed puts its change (a Watch from revision
    - 1 starts with it): per record on SQLite, per transaction on MariaDB. On SQLite every
    write of a group was given the group's last revision."""
    store.put(b"gone", b"0")
    store.put(b"cas", b"0")
    start = store.head_revision()
    ops = [WriteOp(b"r1", b"1"), WriteOp(b"r2", b"2"), WriteOp(b"gone", None),
           WriteOp(b"cas", b"x", expected_version=7), WriteOp(b"r1", b"3"), WriteOp(b"cas", b"y", expected_version=1)]
    results = store.write_group(ops)
    assert [r.done for r in results] == [True, True, True, False, True, True]
    events: list = []
    feed = store.changes(start, lambda: len(events) >= 5)
    while len(events) < 5:
        events.extend(next(feed).events)
    assert [(e.key, e.version, e.deleted) for e in events] == [
        ("r1", 1, False), ("r2", 1, False), ("gone", 1, True), ("r1", 2, False), ("cas", 2, False)]
    done = [r for r in results if r.done]
    assert [r.commit.revision for r in done] == [e.revision for e in events]
    assert results[3].commit == NO_COMMIT


def test_get_missing_is_none(store):
    assert store.get(b"nope") is None


def test_binary_values_and_limit_keys_round_trip(store):
    every_byte = bytes(range(256)) * 64
    long_key = "€".encode() * 1024  # 3072 bytes, the key limit
    sql_key = b"'; DROP TABLE kv; -- \\ %s \x00"
    store.put(b"bin", every_byte)
    store.put(long_key, b"")
    store.put(sql_key, b"x")
    assert store.get(b"bin").value == every_byte
    assert store.get(long_key) == Record("€" * 1024, b"", 1)
    assert store.get(sql_key).value == b"x"


def test_put_many_applies_in_order_later_record_wins(store):
    store.put_many([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    assert store.get(b"a").value == b"3"
    assert store.get(b"b").value == b"2"


def test_put_many_is_idempotent_in_content(store):
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(500)]
    store.put_many(records)
    store.put_many(records)
    found = store.get_many([k for k, _ in records])
    assert {k: r.value for k, r in found.items()} == dict(records)


def test_put_many_is_all_or_nothing(store):
    # A record the database itself rejects, after a good one: a key over MySQL's column
    # width; SQLite has no width, so a NULL value (NOT NULL column) there.
    poison = (b"x" * 3073, b"v") if isinstance(store, MySQLStore) else (b"second", None)
    with pytest.raises(Internal) as info:
        store.put_many([(b"first", b"1"), poison])
    assert "see the server log" in str(info.value) and "INSERT" not in str(info.value)
    assert store.get(b"first") is None


def test_get_many_returns_only_found(store):
    store.put_many([(b"x", b"1"), (b"y", b"2")])
    found = store.get_many([b"x", b"missing", b"y"])
    assert set(found) == {b"x", b"y"}
    assert found[b"y"] == Record("y", b"2", 1)


def _within_model(records: dict[bytes, bytes], keys: list[bytes], budget: int) -> tuple[set, set]:
    """get_within's contract, stated plainly: walk the keys in order; the first record
    is always read; a record that would take keys + values past the budget, and every key
    after it, is unread."""
    found, unread, used, cut = set(), set(), 0, False
    for k in keys:
        if cut:
            unread.add(k)
        elif k in records:
            size = len(k) + len(records[k])
            if found and used + size > budget:
                cut = True
                unread.add(k)
            else:
                used += size
                found.add(k)
    return found, unread


def test_get_within_applies_the_budget_in_request_order(store):
    """Small values (read inline), values larger than an equal share of the budget (read
    by a second query) and missing keys, against the contract's model, for many budgets."""
    import random

    rng = random.Random(7)
    records = {f"k{i:02d}".encode(): bytes([i]) * rng.choice([0, 5, 40, 300, 2000]) for i in range(30)}
    store.put_many(list(records.items()))
    universe = list(records) + [b"absent1", b"absent2", b"absent3"]
    for trial in range(60):
        keys = rng.sample(universe, rng.randint(1, len(universe)))
        budget = rng.choice([1, 50, 400, 1000, 3000, 10_000, 1 << 20])
        found, unread = store.get_within(keys, budget)
        want_found, want_unread = _within_model(records, keys, budget)
        assert (set(found), unread) == (want_found, want_unread), (trial, budget)
        assert all(found[k] == Record(k.decode(), records[k], 1) for k in found)


def test_delete_reports_existence_and_resets_version(store):
    store.put(b"d", b"1")
    store.put(b"d", b"2")
    deleted = store.delete(b"d")
    assert (deleted.done, deleted.version) == (True, 0) and deleted.commit.revision > 0
    assert store.delete(b"d") == WriteResult(False, 0, NO_COMMIT)
    assert store.get(b"d") is None
    assert store.put(b"d", b"3").version == 1


def test_write_group_gives_each_op_its_result_and_its_commit(store):
    store.put(b"g1", b"old")
    put, cas, deleted, absent = store.write_group([
        WriteOp(b"g1", b"new"), WriteOp(b"g2", b"x", expected_version=5), WriteOp(b"g1", None),
        WriteOp(b"g3", None)])
    assert (put.done, put.version) == (True, 2)
    assert cas == WriteResult(False, 0, NO_COMMIT)  # the current version: absent
    assert (deleted.done, deleted.version) == (True, 0)
    assert absent == WriteResult(False, 0, NO_COMMIT)
    assert 0 < put.commit.revision <= deleted.commit.revision  # one transaction; SQLite: a revision per change
    assert store.write_group([WriteOp(b"g3", None)]) == [WriteResult(False, 0, NO_COMMIT)]


def test_safe_under_concurrent_threads(store):
    errors = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                key = f"t{n}-{i}".encode()
                store.put(key, key)
                assert store.get(key).value == key
            store.put_many([(f"m{n}-{i}".encode(), b"v") for i in range(100)])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.get_many([f"m{n}-{i}".encode() for n in range(12) for i in range(100)])) == 1200


# -- MySQL-specific behaviour ----------------------------------------------------------


def test_mysql_large_batch_is_split_to_fit_max_allowed_packet(sandbox, table_name):
    store = MySQLStore(sandbox.master, table_name, create_table=True)
    try:
        big = b"\x00\xff'" * (1 << 18)  # 768 KiB of bytes that need escaping
        records = [(f"big{i}".encode(), big) for i in range(100)]  # ~75 MiB > max_allowed_packet
        store.put_many(records)
        assert len(store.get_many([k for k, _ in records])) == 100
        assert store.get(b"big99").value == big
    finally:
        store.close()


def test_mysql_unreachable_is_unavailable_without_driver_text(table_name):
    endpoint = MySQLEndpoint("127.0.0.1", 1, "kvgrpc", "kvgrpc", password="s3cret-pw")
    store = MySQLStore(endpoint, table_name)
    with pytest.raises(Unavailable) as info:
        store.get(b"k")
    message = str(info.value)
    assert "127.0.0.1:1" in message and "unreachable" in message
    assert "s3cret" not in message and "2003" not in message and "Can't connect" not in message


def test_mysql_pool_exhaustion_waits_then_resource_exhausted(sandbox, table_name):
    store = MySQLStore(sandbox.master, table_name, pool_size=2, pool_timeout=0.2, create_table=True)
    try:
        with store._connection(), store._connection():
            with pytest.raises(ResourceExhausted) as info:
                store.get(b"k")
        assert "limit of 2 concurrent requests" in str(info.value)
        assert store.get(b"k") is None  # permits came back
    finally:
        store.close()


def test_mysql_bad_credentials_are_unavailable_and_not_leaked(sandbox, table_name):
    ep = sandbox.master
    wrong = MySQLEndpoint(ep.host, ep.port, ep.user, ep.database, password="wrong-pw-123")
    store = MySQLStore(wrong, table_name)
    with pytest.raises(Unavailable) as info:
        store.get(b"k")
    assert "refused the server's credentials" in str(info.value)
    assert "wrong-pw" not in str(info.value)


def test_mysql_read_only_replica_refuses_writes(sandbox, table_name):
    MySQLStore(sandbox.master, table_name, create_table=True).connect()
    sandbox.wait_for_replica()
    replica = MySQLStore(sandbox.replica, table_name, role="replica")
    try:
        with pytest.raises(Unavailable, match="read-only"):
            replica.put(b"k", b"v")
    finally:
        replica.close()


def test_endpoint_url_parsing_and_redaction():
    ep = MySQLEndpoint.from_url("mysql://app:p%40ss@db.example:3307/shop")
    assert (ep.user, ep.password, ep.host, ep.port, ep.database) == ("app", "p@ss", "db.example", 3307, "shop")
    assert "p@ss" not in str(ep) and "p@ss" not in repr(ep)
    ep = MySQLEndpoint.from_url("mysql://app@db/shop", default_password="from-env")
    assert (ep.password, ep.port) == ("from-env", 3306)
    assert redact_url("mysql://u:pw@h:1/d") == "mysql://u:***@h:1/d"
    for bad in ("postgres://u@h/d", "mysql://u@h/", "mysql:///d"):
        with pytest.raises(InvalidArgument):
            MySQLEndpoint.from_url(bad)


def test_table_names_are_restricted(tmp_path):
    with pytest.raises(InvalidArgument):
        SQLiteStore(str(tmp_path / "x.sqlite3"), "kv; DROP TABLE kv")


def test_mysql_bulk_batches_load_new_keys_and_upsert_existing_ones(sandbox, table_name):
    """put_many's LOAD DATA fast path (new keys) and its fallback (existing or repeated keys)
    give the same content and versions as single puts would."""
    store = MySQLStore(sandbox.master, table_name, create_table=True)
    try:
        tricky = b"\t\n\\\x00'\"%s,\r\n\\N\\0\xff\xfe\x80" * 3
        fresh = [(f"bulk{i}".encode(), tricky + str(i).encode()) for i in range(1000)]
        def inserts() -> int:
            return int(sandbox.query("SHOW GLOBAL STATUS LIKE 'Com_insert'")[0][1])

        before = inserts()
        store.put_many(fresh)  # all new: loaded by LOAD DATA, not a single INSERT
        assert inserts() == before
        assert {k: (r.value, r.version) for k, r in store.get_many([k for k, _ in fresh]).items()} == {
            k: (v, 1) for k, v in fresh}
        mixed = fresh[:500] + [(f"new{i}".encode(), b"n") for i in range(500)]
        store.put_many(mixed)  # half exist: rolled back, upserted
        got = store.get_many([k for k, _ in mixed])
        assert [got[k].version for k, _ in mixed] == [2] * 500 + [1] * 500
        repeated = [(f"rep{i % 300}".encode(), str(i).encode()) for i in range(600)]
        store.put_many(repeated)  # keys repeat inside the batch: the later record wins
        got = store.get_many([f"rep{i}".encode() for i in range(300)])
        assert {k: (r.value, r.version) for k, r in got.items()} == {
            f"rep{i}".encode(): (str(i + 300).encode(), 2) for i in range(300)}
        assert os.listdir(store._bulk_load_dir) == []  # batch files are removed
    finally:
        store.close()


_OPEN_AND_PUT = """
import sys, time
from kvgrpc.store import SQLiteStore
start = float(sys.argv[2])
while time.time() < start:
    pass
store = SQLiteStore(sys.argv[1])
store.put(b"k" + sys.argv[3].encode(), b"v", None)
store.close()
"""


def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path):
    """Switching a new file to WAL is not covered by SQLite's busy handler: one of several
    processes opening it at the same moment failed with "database is locked" (about one
    in 60 here; --processes N with SQLite does exactly this)."""
    for trial in range(5):
        path = str(tmp_path / f"race{trial}.sqlite3")
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_PUT, path, str(start), str(i)],
                                  stderr=subprocess.PIPE, text=True) for i in range(8)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, errors
        store = SQLiteStore(path)
        try:
            assert len(store.get_many([b"k%d" % i for i in range(8)])) == 8
        finally:
            store.close()
