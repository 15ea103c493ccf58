"""Named loads: exactly-once, resumable StreamPut (issue 10, items 1 and 2).

On both backends: resuming skips exactly what is committed (versions stay 1, a watcher
sees each key once), GetLoad, a load's conditional progress, expiry, draining on
shutdown, and the client library's own retry across a server restart. On MariaDB, fault
tests kill -9 a kvgrpc server process and the master at a random point of a 300k-record
load and check that the resumed load leaves the table equal to the source, every version
1, and that a watcher opened before the load (through another server) got each key once.
"""

from __future__ import annotations

import dataclasses
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter

import grpc
import pytest

from tests.conftest import server_process

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.client import KeyValueClient
from kvgrpc.errors import (
    COMMITTED_METADATA_KEY,
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    KvError,
    NotFound,
    Unavailable,
)
from kvgrpc.server import build_server
from kvgrpc.store import MySQLStore, SQLiteStore
from kvgrpc.store.base import LoadMark
from tests.test_consistency import wait_until


def source(n: int, prefix: str = "k") -> list[tuple[str, bytes]]:
    return [(f"{prefix}{i:07d}", b"value %d " % i + b"x" * 60) for i in range(n)]


class Watcher:
    """A watch of every key on ``client``'s server, collected on a thread; counts per key."""

    def __init__(self, client: KeyValueClient) -> None:
        self.watch = client.watch(prefix="")
        self.keys: Counter[str] = Counter()
        self.versions: Counter[int] = Counter()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, daemon=True).start()
        wait_until(lambda: self.watch.revision is not None or self.error, what="the watch to open")

    def _run(self) -> None:
        try:
            for event in self.watch:
                self.keys[event.key] += 1
                self.versions[event.version] += 1
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            self.error = exc

    def settle(self, client: KeyValueClient, expected: int, timeout: float = 30.0) -> None:
        """Waits for ``expected`` distinct keys, then for a sentinel written after them:
        anything delivered twice has arrived by then."""
        wait_until(lambda: len(self.keys) >= expected or self.error, timeout=timeout,
                   what=f"the watcher to receive {expected} keys (has {len(self.keys)})")
        client.put("~sentinel", b"")
        wait_until(lambda: self.keys["~sentinel"] or self.error, timeout=timeout,
                   what="the sentinel")
        self.watch.cancel()
        assert self.error is None, self.error


def stored(kv: KeyValueClient, prefix: str = "k") -> dict[str, tuple[bytes, int]]:
    return {r.key: (r.value, r.version)
            for r in kv.scan(prefix, page_size=1000, consistency="strong")}


# -- both backends ---------------------------------------------------------------------


def test_a_resumed_load_skips_exactly_the_committed_records(any_server):
    records = source(25_000)
    with any_server.client() as kv:
        watcher = Watcher(kv)
        assert kv.stream_put(records[:12_000], load_id="load-1") == 12_000
        progress = kv.get_load("load-1")
        assert progress.load_id == "load-1" and progress.committed == 12_000
        assert progress.revision > 0 and progress.updated_unix_ms > time.time() * 1000 - 60_000
        # Resumed from before the committed count: records 7000..11999 are skipped.
        assert kv.stream_put(records[7_000:], load_id="load-1", start_index=7_000) == 18_000
        progress = kv.get_load("load-1")
        assert progress.committed == 25_000
        # The last batch's revision and token, as the stream's reply gave them.
        assert (progress.revision, progress.token) == (kv.last_revision, kv.last_write_token)
        # Again, wholly committed: nothing is written.
        assert kv.stream_put(records, load_id="load-1") == 25_000
        content = stored(kv)
        assert content == {k: (v, 1) for k, v in records}
        watcher.settle(kv, len(records) + 0)
    assert {k: n for k, n in watcher.keys.items() if n != 1} == {}
    assert len(watcher.keys) == len(records) + 1 and set(watcher.versions) == {1}


def test_a_stream_that_would_leave_a_gap_is_refused(any_server):
    records = source(100)
    with any_server.client() as kv:
        kv.stream_put(records[:40], load_id="gap")
        with pytest.raises(FailedPrecondition, match=r"records 40\.\.49 would be missing") as caught:
            kv.stream_put(records[50:], load_id="gap", start_index=50)
        assert caught.value.committed == 0  # of this call's records: none
        with pytest.raises(FailedPrecondition, match="has 0 records committed"):
            kv.stream_put(records[1:], load_id="new-load", start_index=1)
        assert kv.get_load("gap").committed == 40
        assert len(stored(kv)) == 40


def test_a_second_stream_of_an_open_load_is_aborted(any_server):
    service = any_server.server.service
    release = threading.Event()
    outcome: list = []

    def held_open():
        yield from source(600)[:300]
        release.wait(30)
        yield from source(600)[300:]

    with any_server.client(batch_records=100) as kv, any_server.client() as other:
        first = threading.Thread(target=lambda: outcome.append(kv.stream_put(held_open(), load_id="busy")))
        first.start()
        wait_until(lambda: "busy" in service.open_loads(), what="the first stream to open")
        def committed() -> int:
            try:
                return other.get_load("busy").committed
            except NotFound:
                return 0

        with pytest.raises(Aborted, match="already being written by another stream") as caught:
            other.stream_put(source(600), load_id="busy")
        assert caught.value.committed == committed()
        # On the wire too: the refusal carries the load's count, as every error of a named load.
        with grpc.insecure_channel(any_server.target) as channel:
            with pytest.raises(grpc.RpcError) as raw:
                kv_pb2_grpc.KeyValueStub(channel).StreamPut(
                    iter([kv_pb2.StreamPutRequest(load_id="busy")]), timeout=10)
            trailers = dict(raw.value.trailing_metadata() or ())
            assert raw.value.code() == grpc.StatusCode.ABORTED
            assert trailers.get(COMMITTED_METADATA_KEY) == str(committed())
        release.set()
        first.join(30)
        assert outcome == [600]
        assert kv.get_load("busy").committed == 600


def test_two_servers_never_write_the_same_records_of_a_load(sandbox, start_server, table_name):
    """Across servers the progress update is conditional: a stream whose load moved on
    under it (another stream, through another server) is Aborted, nothing written twice."""
    one = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    two = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    records = source(30_000)
    release = threading.Event()
    failure: list = []

    def held_open():
        yield from records[:11_000]  # 10,000 committed, then a pause (sending stops
        release.wait(30)              # before the message that holds the 11,000th record)
        yield from records[11_000:]

    with one.client(batch_records=1000) as kv, two.client() as other:
        first = threading.Thread(target=lambda: _load(kv, held_open(), "shared", failure))
        first.start()
        wait_until(lambda: _committed(other, "shared") == 10_000, what="the first batch")
        assert other.stream_put(records, load_id="shared") == 30_000  # skips 10,000
        release.set()
        first.join(30)
        (error,) = failure
        assert isinstance(error, Aborted) and "another stream of the same load" in str(error)
        assert error.committed == 30_000  # the load's count, as the store found it
        assert stored(other) == {k: (v, 1) for k, v in records}


def test_concurrent_new_loads_all_commit(any_server):
    """Many named loads starting at once (each client's list source is a load of its own)
    all commit: on MariaDB their first batches create their progress rows side by side,
    and a batch InnoDB picks as a deadlock victim is run again, not failed (was: 5 of 6
    streams ended ABORTED with nothing committed)."""
    loads = 6
    outcomes: list = [None] * loads

    def load(index: int) -> None:
        with any_server.client(batch_records=500) as kv:
            try:
                outcomes[index] = kv.stream_put(source(5_000, prefix=f"n{index}-"))
            except KvError as exc:
                outcomes[index] = exc

    threads = [threading.Thread(target=load, args=(i,)) for i in range(loads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert outcomes == [5_000] * loads
    with any_server.client() as kv:
        assert len(stored(kv, "n")) == loads * 5_000


def test_streams_writing_the_same_keys_in_different_orders_all_commit(any_server):
    """Concurrent streams upserting the same keys in different orders: on MariaDB their
    batches deadlock, and the victim's batch (rolled back whole) is run again, so every
    stream commits every record once (was: one stream in two ended ABORTED)."""
    keys = [f"o{i:05d}" for i in range(3_000)]
    orders = [keys, keys[::-1], keys[1_500:] + keys[:1_500]]
    with any_server.client() as kv:
        kv.stream_put((key, b"0") for key in keys)

    def load(order: list[str], value: bytes, outcomes: list) -> None:
        with any_server.client(batch_records=500) as kv:
            try:  # a generator: one unnamed stream, no client-side retry
                outcomes.append(kv.stream_put((key, value) for key in order))
            except KvError as exc:
                outcomes.append(exc)

    for round_ in range(1, 4):
        outcomes: list = []
        threads = [threading.Thread(target=load, args=(order, b"%d" % round_, outcomes))
                   for order in orders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert outcomes == [3_000] * len(orders)
    with any_server.client() as kv:
        # Each key: its first write, then three rounds of one write per stream, none twice.
        assert stored(kv, "o") == {key: (b"3", 1 + 3 * len(orders)) for key in keys}


def test_load_ids_and_start_indexes_are_checked(any_server):
    with any_server.client() as kv:
        with pytest.raises(InvalidArgument, match="1 to 128 bytes"):
            kv.stream_put(source(3), load_id="x" * 129)
        with pytest.raises(InvalidArgument, match="1 to 128 bytes"):
            kv.get_load("")
        with pytest.raises(NotFound, match="'never-ran' is not recorded"):
            kv.get_load("never-ran")
        # A raw first message with a start index but no load id.
        from kvgrpc import kv_pb2
        with pytest.raises(Exception) as caught:
            kv._stub.StreamPut(iter([kv_pb2.StreamPutRequest(start_index=5)]))
        assert caught.value.code().name == "INVALID_ARGUMENT"
        assert "start_index is set but load_id is not" in caught.value.details()


def _store(server, sandbox=None):
    config = server.config
    if config.master is None:
        return SQLiteStore(config.sqlite_path, config.table)
    return MySQLStore(config.master, config.table)


def test_a_batch_whose_progress_moved_on_is_not_written(any_server):
    """The stores' conditional progress: what stops two servers writing the same load."""
    store = _store(any_server)
    try:
        store.put_many([(b"c1", b"a")], LoadMark("cond", 0, 1))
        with pytest.raises(Aborted, match="at 1 committed records, not 0") as caught:
            store.put_many([(b"c1", b"b"), (b"c2", b"b")], LoadMark("cond", 0, 2))
        assert caught.value.committed == 1
        store.put_many([(b"c2", b"b")], LoadMark("cond", 1, 2))
        assert store.get(b"c1").value == b"a" and store.get(b"c1").version == 1
        assert store.load_progress("cond").committed == 2
        assert store.expire_loads(3600) == 0
        time.sleep(0.01)
        assert store.expire_loads(0) == 1
        assert store.load_progress("cond") is None
    finally:
        store.close()


def test_load_progress_expires_after_the_retention(start_server, tmp_path, table_name):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), table=table_name,
                          load_retention=1.0)
    with server.client() as kv:
        kv.stream_put(source(10), load_id="short-lived")
        assert kv.get_load("short-lived").committed == 10
        wait_until(lambda: _gone(kv, "short-lived"), timeout=10, what="the progress to expire")


def _gone(kv, load_id: str) -> bool:
    try:
        kv.get_load(load_id)
        return False
    except NotFound:
        return True


def _count(server, sandbox=None) -> int:
    config = server.config
    if config.master is None:
        with sqlite3.connect(config.sqlite_path) as cnx:
            return cnx.execute(f'SELECT COUNT(*) FROM "{config.table}"').fetchone()[0]
    return sandbox.query(f"SELECT COUNT(*) FROM `{config.table}`")[0][0]


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_shutdown_drains_an_open_stream(backend, request, start_server, tmp_path, table_name):
    sandbox = request.getfixturevalue("sandbox") if backend == "mysql" else None
    server = (start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), table=table_name)
              if sandbox is None else
              start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name))
    endless = ((f"d{i:08d}", b"v") for i in range(10_000_000))  # far more than the grace allows
    failure: list[KvError] = []

    def load():
        with server.client() as kv:
            try:
                kv.stream_put(endless, load_id="drained")
            except KvError as exc:
                failure.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    with server.client() as kv:
        wait_until(lambda: _committed(kv, "drained") >= 20_000, what="part of the load")
    started = time.monotonic()
    server.server.stop(grace=20)
    stopped = time.monotonic() - started
    loader.join(20)
    (error,) = failure
    assert isinstance(error, Unavailable), error
    assert re.search(r"shutting down; load 'drained' has \d+ records committed; resume", str(error))
    assert error.committed == _count(server, sandbox) >= 20_000
    assert stopped < 10, f"the server took {stopped:.1f} s to stop"


def _committed(kv, load_id: str) -> int:
    try:
        return kv.get_load(load_id).committed
    except NotFound:
        return 0


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_the_client_retries_a_reiterable_source_across_a_server_restart(
        backend, request, start_server, tmp_path, table_name, client_kind):
    sandbox = request.getfixturevalue("sandbox") if backend == "mysql" else None
    first = (start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), table=table_name)
             if sandbox is None else
             start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name))
    records = source(60_000)
    sent: list[int] = []
    result: list = []
    client = first.client()

    def load():
        try:
            result.append(client.stream_put(records, on_sent=sent.append))  # a list: re-iterable
        except BaseException as exc:  # noqa: BLE001 - checked below
            result.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    wait_until(lambda: _count(first, sandbox) >= 20_000, what="part of the load committed")
    first.server.stop(grace=5)  # drains: UNAVAILABLE with the count
    second = build_server(dataclasses.replace(first.config, port=first.port))
    second.start()
    try:
        loader.join(60)
        assert result == [len(records)]
        assert sum(sent) > len(records)  # it was cut and resumed
        with client:
            content = stored(client)
        assert content == {k: (v, 1) for k, v in records}
    finally:
        second.stop(grace=1)


def test_a_stream_out_of_retries_names_its_load(start_server, tmp_path, table_name, client_kind):
    """The server goes away for longer than the client retries: the error names the load
    the client made up (its count is unknown: no server answers), so the caller can read
    its progress once a server is back and finish it, each record written once."""
    first = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), table=table_name)
    records = source(60_000)
    result: list = []
    client = first.client(stream_retries=1)

    def load():
        try:
            result.append(client.stream_put(records))
        except BaseException as exc:  # noqa: BLE001 - checked below
            result.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    wait_until(lambda: _count(first, None) >= 20_000, what="part of the load committed")
    first.server.stop(grace=5)  # and nothing takes its place
    loader.join(60)
    (error,) = result
    assert isinstance(error, Unavailable), error
    assert error.load_id and error.load_id.startswith("auto-")
    if error.committed is None:  # the last attempt found no server: the note says what to do
        assert any(error.load_id in note for note in error.__notes__)
    second = build_server(dataclasses.replace(first.config, port=first.port))
    second.start()
    try:
        with first.client() as kv:
            assert kv.get_load(error.load_id).committed >= max(20_000, error.committed or 0)
            kv.stream_put(records, load_id=error.load_id)
            assert stored(kv) == {k: (v, 1) for k, v in records}
    finally:
        second.stop(grace=1)
        client.close()


# -- faults on MariaDB -----------------------------------------------------------------

LOAD_RECORDS = 300_000


def _server_process(box, table: str, port: int = 0):
    return server_process(box, table, port=port)


def test_the_client_resumes_by_itself_after_a_kill_9_and_restart(sandbox, table_name):
    """A list is re-iterable: stream_put rides out a server killed with -9 (no count in
    the error) and started again on the same port, by asking GetLoad."""
    records = source(LOAD_RECORDS)
    first, target = _server_process(sandbox, table_name)
    port = int(target.rsplit(":", 1)[1])
    result: list = []
    second = None
    try:
        with KeyValueClient(target) as kv:
            loader = threading.Thread(target=lambda: result.append(_attempt(kv, records)))
            loader.start()
            kill_at = random.randrange(20_000, 200_000)
            wait_until(lambda: sandbox.query(f"SELECT COUNT(*) FROM `{table_name}`")[0][0]
                       >= kill_at, timeout=30, what=f"{kill_at} records committed")
            first.kill()
            first.wait()
            second, _ = _server_process(sandbox, table_name, port)
            loader.join(60)
            assert result == [LOAD_RECORDS]
            rows = sandbox.query(f"SELECT k, v, version FROM `{table_name}`")
            assert {k.decode(): (bytes(v), version) for k, v, version in rows} == {
                k: (v, 1) for k, v in records}
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()


def _attempt(kv: KeyValueClient, records):
    try:
        return kv.stream_put(records)
    except KvError as exc:
        return exc


def test_sigterm_of_a_server_process_drains_its_load(sandbox, table_name):
    """`python -m kvgrpc.server` on SIGTERM: the open load ends at once with UNAVAILABLE and
    the exact count (not after the whole grace period, not with CANCELLED)."""
    proc, target = _server_process(sandbox, table_name)
    endless = ((f"s{i:08d}", b"v") for i in range(10_000_000))
    failure: list = []
    try:
        with KeyValueClient(target) as kv:
            loader = threading.Thread(target=lambda: _load(kv, endless, "sigterm", failure))
            loader.start()
            wait_until(lambda: _committed(kv, "sigterm") >= 20_000, what="part of the load")
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            loader.join(30)
            ended = time.monotonic() - sent
        assert proc.wait(30) == 0
        (error,) = failure
        assert isinstance(error, Unavailable) and "shutting down" in str(error), error
        found = sandbox.query(f"SELECT COUNT(*) FROM `{table_name}`")[0][0]
        print(f"\nSIGTERM: the load ended {ended:.2f} s later, {error.committed} committed "
              f"({found} rows)")
        assert error.committed == found and ended < 5
    finally:
        if proc.poll() is None:
            proc.kill()


def _check_exactly_once(box, table: str, records, watcher: Watcher, kv: KeyValueClient) -> None:
    rows = box.query(f"SELECT k, v, version FROM `{table}`")
    assert {k.decode(): (bytes(v), version) for k, v, version in rows} == {
        k: (v, 1) for k, v in records}
    watcher.settle(kv, len(records))
    assert {k: n for k, n in watcher.keys.items() if n != 1} == {}
    assert len(watcher.keys) == len(records) + 1 and set(watcher.versions) == {1}


def test_server_killed_mid_load_then_resumed_exactly_once(own_sandbox, start_server, table_name):
    box = own_sandbox()
    records = source(LOAD_RECORDS)
    survivor = start_server(master=box.master, replicas=box.replicas, table=table_name)
    victim, target = _server_process(box, table_name)
    kill_at = random.randrange(20_000, LOAD_RECORDS - 50_000)
    try:
        with survivor.client() as kv, KeyValueClient(target) as doomed:
            watcher = Watcher(kv)  # on the server that survives
            failure: list = []
            loader = threading.Thread(target=lambda: _load(doomed, iter(records), "killed", failure))
            loader.start()
            wait_until(lambda: _committed(kv, "killed") >= kill_at, timeout=30,
                       what=f"{kill_at} records committed")
            time.sleep(random.uniform(0, 0.1))  # somewhere inside the next batch
            victim.kill()  # SIGKILL: no draining, no goodbye
            victim.wait()
            loader.join(30)
            assert failure and isinstance(failure[0], Unavailable), failure
            done = kv.get_load("killed").committed
            print(f"\nserver kill -9 after >= {kill_at}: load at {done} committed records")
            _resume(kv, records, "killed", done)
            _check_exactly_once(box, table_name, records, watcher, kv)
    finally:
        if victim.poll() is None:
            victim.kill()


def _resume(kv: KeyValueClient, records, load_id: str, done: int) -> None:
    """Resumes a load from ``done`` as the CLI's resume command does. The killed server's
    last COMMIT may still land after GetLoad answered (MariaDB finishes a commit whose
    client died): the resumed stream is then Aborted, nothing written twice, and the
    error says the count to resume from."""
    for _ in range(3):
        try:
            kv.stream_put(records[done:], load_id=load_id, start_index=done)
            return
        except Aborted as exc:
            print(f"resume from {done}: {exc}")
            done += exc.committed
    raise AssertionError("the resumed load was aborted three times")


def _load(client: KeyValueClient, records, load_id: str, failure: list) -> None:
    try:
        client.stream_put(records, load_id=load_id)
    except KvError as exc:
        failure.append(exc)


def test_master_killed_mid_load_then_resumed_exactly_once(own_sandbox, start_server, table_name):
    box = own_sandbox()
    records = source(LOAD_RECORDS)
    writer = start_server(master=box.master, replicas=box.replicas, table=table_name)
    watching = start_server(master=box.master, replicas=box.replicas, table=table_name)
    kill_at = random.randrange(20_000, LOAD_RECORDS - 50_000)
    with writer.client() as kv, watching.client() as wkv:
        watcher = Watcher(wkv)
        failure: list = []
        loader = threading.Thread(target=lambda: _load(kv, iter(records), "master-killed", failure))
        loader.start()
        wait_until(lambda: _committed(kv, "master-killed") >= kill_at, timeout=30,
                   what=f"{kill_at} records committed")
        time.sleep(random.uniform(0, 0.1))
        box.run("kill", "master")
        loader.join(30)
        assert failure and isinstance(failure[0], Unavailable), failure
        reported = failure[0].committed
        box.run("start", "master")
        done = wait_until(lambda: _progress_when_up(kv, "master-killed"), timeout=20,
                          what="the load's progress after the restart")
        print(f"\nmaster kill -9 after >= {kill_at}: the error said {reported}, "
              f"GetLoad says {done} committed")
        assert reported is not None and reported <= done
        _resume(kv, records, "master-killed", done)
        _check_exactly_once(box, table_name, records, watcher, wkv)


def _progress_when_up(kv, load_id: str) -> int | None:
    try:
        return kv.get_load(load_id).committed or None
    except Unavailable:
        return None
