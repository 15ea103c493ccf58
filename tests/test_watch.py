"""Watch: changes in commit order, no gaps, no repeats, resumable, across servers."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.client import KeyValueClient, WatchEvent
from kvgrpc.errors import InvalidArgument, OutOfRange, Unavailable
from tests.conftest import CLI_AS_IN_A_TERMINAL, open_client, run_cli
from tests.test_consistency import wait_until

EVERY_BYTE = bytes(range(256))


def collect(watch, count: int, timeout: float = 20.0) -> list[WatchEvent]:
    """The next ``count`` events of ``watch``, read on a thread; fails after ``timeout``."""
    got: queue.Queue = queue.Queue()

    def read():
        try:
            for event in watch:
                got.put(event)
        except Exception as exc:  # noqa: BLE001 - handed to the test thread
            got.put(exc)

    if not hasattr(watch, "_reader"):
        watch._reader = threading.Thread(target=read, daemon=True)
        watch._reader.start()
        watch._queue = got
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        item = watch._queue.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, Exception):
            raise item
        events.append(item)
    return events


def summary(events: list[WatchEvent]) -> list[tuple]:
    return [(e.type, e.key, e.value, e.version) for e in events]


def test_watch_reports_puts_and_deletes_in_commit_order(any_server, client_kind):
    with any_server.client() as kv:
        kv.put("other", b"before")
        start = kv.last_revision
        assert start > 0
        revisions = []
        kv.put("w/a", b"1")
        revisions.append(kv.last_revision)
        kv.put("w/bin", EVERY_BYTE)
        revisions.append(kv.last_revision)
        kv.put("x/unwatched", b"not in the prefix")
        kv.put("w/a", b"2")
        revisions.append(kv.last_revision)
        kv.delete("w/bin")
        revisions.append(kv.last_revision)
        with kv.watch(prefix="w/", start_revision=start) as watch:
            events = collect(watch, 4)
        with kv.watch("w/a", start_revision=start) as one_key:
            only_a = collect(one_key, 2)
    assert summary(events) == [
        ("put", "w/a", b"1", 1),
        ("put", "w/bin", EVERY_BYTE, 1),
        ("put", "w/a", b"2", 2),
        ("delete", "w/bin", b"", 1),
    ]
    assert [e.revision for e in events] == revisions  # the revisions the writes returned
    assert revisions == sorted(set(revisions))
    assert summary(only_a) == [("put", "w/a", b"1", 1), ("put", "w/a", b"2", 2)]


def test_a_live_watch_sees_new_writes_and_resumes_without_gaps_or_repeats(any_server, client_kind):
    with any_server.client() as kv:
        kv.put("r/0", b"first")
        start = kv.last_revision
        watch = kv.watch(prefix="r/", start_revision=start)
        kv.put("r/1", b"a")
        kv.put("r/2", b"b")
        first = collect(watch, 2)
        watch.cancel()
        resume_from = watch.revision
        assert resume_from == first[-1].revision
        kv.put("r/3", b"c")  # written while nobody watches
        kv.stream_put([(f"r/batch{i}", b"v") for i in range(300)])
        with kv.watch(prefix="r/", start_revision=resume_from) as resumed:
            rest = collect(resumed, 301)
            kv.put("r/4", b"live")
            live = collect(resumed, 1)
    keys = [e.key for e in first + rest + live]
    assert keys == ["r/1", "r/2", "r/3", *[f"r/batch{i}" for i in range(300)], "r/4"]


def test_a_watch_from_a_puts_revision_minus_1_starts_with_that_put(any_server):
    """The revision in a Put's reply is where Watch puts the change, also for concurrent
    Puts that shared a transaction (on SQLite they were all given the group's last)."""
    with grpc.insecure_channel(any_server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        futures = [(f"rr{i}", stub.Put.future(kv_pb2.PutRequest(key=f"rr{i}", value=b"v")))
                   for i in range(16)]
        replies = [(key, future.result(timeout=10)) for key, future in futures]
        for key, reply in replies:
            call = stub.Watch(kv_pb2.WatchRequest(key=key, start_revision=reply.revision - 1), timeout=10)
            first = next(r for r in call if r.events).events[0]
            call.cancel()
            assert (first.record.key, first.revision, first.record.version) == (key, reply.revision, 1)


def test_watch_from_now_starts_after_the_latest_write(any_server, client_kind):
    with any_server.client() as kv:
        kv.put("n/old", b"before the watch")
        with kv.watch(prefix="n/") as watch:
            collect(watch, 0)  # starts reading
            deadline = time.monotonic() + 10
            while watch.revision is None and time.monotonic() < deadline:
                time.sleep(0.01)  # until the server has opened the watch and said from where
            assert watch.revision is not None
            kv.put("n/new", b"after")
            assert summary(collect(watch, 1)) == [("put", "n/new", b"after", 1)]


def test_watch_rejects_bad_requests(any_server, client_kind):
    with grpc.insecure_channel(any_server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        with pytest.raises(grpc.RpcError) as neither:
            next(iter(stub.Watch(kv_pb2.WatchRequest(), timeout=10)))
        assert neither.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "set one of key and prefix" in neither.value.details()
        with pytest.raises(grpc.RpcError) as empty_key:
            next(iter(stub.Watch(kv_pb2.WatchRequest(key=""), timeout=10)))
        assert empty_key.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with any_server.client() as kv:
        kv.put("ahead", b"v")
        with pytest.raises(OutOfRange, match="ahead of the database"):
            collect(kv.watch("ahead", start_revision=kv.last_revision + 1000), 1)
        with pytest.raises(InvalidArgument, match="start_revision"):
            collect(kv.watch("ahead", start_revision=-1), 1)


@pytest.mark.mysql
def test_a_watcher_on_one_server_sees_writes_made_through_another(start_server, sandbox, table_name, client_kind):
    one = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    two = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    with one.client() as watcher_side, two.client() as writer:
        writer.put("s/start", b"x")
        with watcher_side.watch(prefix="s/", start_revision=writer.last_revision) as watch:
            writer.put("s/via-two", b"written through the other server")
            writer.delete("s/start")
            events = collect(watch, 2)
    assert summary(events) == [
        ("put", "s/via-two", b"written through the other server", 1),
        ("delete", "s/start", b"", 1),
    ]


@pytest.mark.mysql
def test_a_watch_moves_to_another_server_mid_transaction_without_loss(start_server, sandbox, table_name, client_kind):
    """A 2,000-record batch (one transaction, one revision) is cut short by its server
    stopping; the client resumes on the other server and skips what it already had."""
    servers = [start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
               for _ in range(2)]
    value = b"v" * 2000  # 4 MB in all: more than flow control lets through unread
    keys = [f"big/{i:05d}" for i in range(2000)]
    with open_client(client_kind, ",".join(s.target for s in servers)) as kv:
        kv.put("big/-start", b"")
        start = kv.last_revision
        kv.stream_put((k, value) for k in keys)
        revision = kv.last_revision
        watch = kv.watch(prefix="big/0", start_revision=start)
        first = collect(watch, 500)
        serving = [s for s in servers if s.server.stream_limit.open_streams()]
        assert len(serving) == 1
        began = time.monotonic()
        serving[0].server.stop(grace=10)
        stop_seconds = time.monotonic() - began
        rest = collect(watch, 1500)
        watch.cancel()
    got = first + rest
    assert [e.key for e in got] == keys
    assert {e.revision for e in got} == {revision}
    assert stop_seconds < 5, "an open watch must not hold up the server's shutdown"


@pytest.mark.mysql
def test_watch_from_a_purged_revision_is_out_of_range(own_sandbox, start_server):
    box = own_sandbox()
    server = start_server(master=box.master, replicas=(box.replica,))
    with server.client() as kv:
        kv.put("p/1", b"v")
        old = kv.last_revision
        box.wait_for_replica()
        box.query("FLUSH BINARY LOGS", root=True)
        (current,) = box.query("SHOW MASTER STATUS", root=True)[0][:1]
        deadline = time.monotonic() + 10
        while len(box.query("SHOW BINARY LOGS", root=True)) > 1:  # a file is purged only
            assert time.monotonic() < deadline  # once InnoDB has checkpointed past it
            box.query(f"PURGE BINARY LOGS TO '{current}'", root=True)
            time.sleep(0.05)
        with pytest.raises(OutOfRange, match="no longer in the master's binlog"):
            collect(kv.watch("p/1", start_revision=old - 1), 1)
        with pytest.raises(OutOfRange, match="no longer in the master's binlog"):
            collect(kv.watch("p/1", start_revision=0), 1)
        kv.put("p/2", b"still watchable from a kept revision")
        with kv.watch(prefix="p/", start_revision=kv.last_revision - 1) as watch:
            assert summary(collect(watch, 1)) == [("put", "p/2", b"still watchable from a kept revision", 1)]


def test_the_revision_moves_only_once_its_last_event_is_delivered(mysql_server, client_kind):
    """A StreamPut batch is one revision of many events. ``watch.revision`` is a checkpoint
    to resume from: while a revision's events are being read it stays at the one before,
    so a watch reopened from it loses none (was: it moved on at the revision's first event,
    and a watch resumed from there never saw the rest)."""
    with mysql_server.client() as kv:
        kv.put("cp/before", b"0")
        start = kv.last_revision
        kv.stream_put([(f"cp/{i}", b"%d" % i) for i in range(10)])
        batch = kv.last_revision
        with kv.watch(prefix="cp/", start_revision=start) as watch:
            events = iter(watch)
            seen = [next(events) for _ in range(3)]
            assert {e.revision for e in seen} == {batch}
            assert watch.revision == start
            checkpoint = watch.revision
            seen += [next(events) for _ in range(7)]
            assert watch.revision == batch
        with kv.watch(prefix="cp/", start_revision=checkpoint) as resumed:
            again = collect(resumed, 10)
    assert [e.key for e in again] == [e.key for e in seen] == [f"cp/{i}" for i in range(10)]


def test_watches_read_on_across_master_restarts(own_sandbox, start_server, table_name):
    """A restarted MariaDB numbers its tables again, so after a restart the heartbeat table
    can get the id the records table had before it. A watch from before the restarts must
    read on across them, every change once, nothing else taken for a record (was: the
    heartbeat's rows decoded as records: INTERNAL at the restart, for every such watch)."""
    box = own_sandbox()
    config = dict(master=box.master, replicas=(box.replica,), table=table_name)
    first = start_server(**config)
    with first.client() as kv:
        kv.put("r/0", b"before both restarts")
        start = kv.last_revision - 1
    first.server.stop(0)
    box.run("stop", "master")
    box.run("start", "master")
    # Records first: after this restart the records table takes the first table id...
    box.query(f"INSERT INTO `{table_name}` (k, v) VALUES ('r/1', 'direct')")
    second = start_server(**config)
    with second.client(timeout=10) as kv:
        kv.put("r/2", b"between the restarts")
        box.run("stop", "master")
        box.run("start", "master")
        # ...and after this one, the server's heartbeat (every 100 ms) comes first.
        wait_until(lambda: kv.status()[0].reachable, what="the monitor to reach the master")
        wait_until(lambda: _writes(kv, "r/3", b"after both restarts"), what="writes after the restart")
        with kv.watch(prefix="r/", start_revision=start) as watch:
            events = collect(watch, 4)
    assert [(e.key, e.value) for e in events] == [
        ("r/0", b"before both restarts"), ("r/1", b"direct"), ("r/2", b"between the restarts"),
        ("r/3", b"after both restarts")]


def test_a_feed_that_is_down_is_logged_once_not_at_every_retry(own_sandbox, start_server, table_name,
                                                                caplog):
    """The feed is reopened every 0.5 s while the master is down; its warning is not
    repeated with it (SECURITY.md: a repeating condition at most once a minute), and one
    line says when it is back; the watch reads on."""
    box = own_sandbox()
    server = start_server(master=box.master, replicas=(box.replica,), table=table_name,
                          watch_feed_retry=60.0)
    with server.client(timeout=10) as kv:
        kv.put("f/0", b"before")
        with kv.watch(prefix="f/", start_revision=kv.last_revision - 1) as watch:
            assert [e.key for e in collect(watch, 1)] == ["f/0"]
            caplog.clear()
            caplog.set_level(logging.INFO, logger="kvgrpc.watch")
            box.run("stop", "master")
            time.sleep(4)
            box.run("start", "master")
            wait_until(lambda: _writes(kv, "f/1", b"after"), what="writes after the restart")
            assert [e.key for e in collect(watch, 1)] == ["f/1"]
    broke = [r for r in caplog.records if "the change feed broke" in r.getMessage()]
    assert 1 <= len(broke) <= 3, [r.getMessage() for r in broke]  # was one per 0.5 s: 8 or more
    assert any("the change feed is back" in r.getMessage() for r in caplog.records)


def _writes(kv: KeyValueClient, key: str, value: bytes) -> bool:
    try:
        kv.put(key, value)
        return True
    except Unavailable:
        return False


def test_cli_watch_prints_one_line_per_event(any_server):
    with any_server.client() as kv:
        kv.put("c/start", b"x")
        start = kv.last_revision
        kv.put("c/k", "héllo")
        kv.delete("c/k")
    done = run_cli("--target", any_server.target, "watch", "--prefix", "c/",
                   "--from-revision", str(start), "--count", "2")
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [line[1:] for line in lines] == [["PUT", "c/k", "héllo"], ["DELETE", "c/k", ""]]
    assert int(lines[0][0]) < int(lines[1][0])


def test_shell_watch_prints_changes_until_ctrl_c(any_server):
    shell = subprocess.Popen(
        # Ctrl-C as in a terminal (see CLI_AS_IN_A_TERMINAL): a CI job in the background
        # has SIGINT ignored, and the shell then never saw it.
        [sys.executable, "-c", CLI_AS_IN_A_TERMINAL, "--target", any_server.target, "shell"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in shell.stdout],
                     daemon=True).start()
    try:
        shell.stdin.write("watch --prefix sh/\n")
        shell.stdin.flush()
        assert lines.get(timeout=15) == "watching; Ctrl-C to stop"
        with any_server.client() as kv:
            # The watch starts from "now", once open: write until the shell shows a change.
            deadline = time.monotonic() + 15
            while lines.empty() and time.monotonic() < deadline:
                kv.put("sh/k", b"seen")
                time.sleep(0.2)
        assert lines.get(timeout=1).split("\t")[1:] == ["PUT", "sh/k", "seen"]
        shell.send_signal(signal.SIGINT)
        while (line := lines.get(timeout=10)).split("\t")[1:2] == ["PUT"]:
            pass  # more of the writes above
        assert line.startswith("stopped at revision")
        shell.stdin.write("get sh/k\n")
        shell.stdin.close()
        assert lines.get(timeout=10) == "seen"
        assert shell.wait(10) == 0
    finally:
        shell.kill()


class _FreezableProxy:
    """A TCP proxy to ``target`` whose ``freeze()`` stops forwarding without closing
    anything: to the server, its client has vanished (a pulled cable, a dead NAT entry)."""

    def __init__(self, port: int) -> None:
        import socket

        self._socket = socket
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.frozen = threading.Event()
        self._sockets: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._socket.create_connection(("127.0.0.1", self._port))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set():
                time.sleep(0.05)  # hold everything: no data, no ping acks, no FIN
            try:
                sink.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_keepalive_releases_the_watch_of_a_vanished_client(start_server, tmp_path):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), keepalive_time=0.5,
                          keepalive_timeout=0.5)
    proxy = _FreezableProxy(server.port)
    try:
        with KeyValueClient(proxy.target) as kv:
            with kv.watch("quiet") as watch:
                collect(watch, 0)
                deadline = time.monotonic() + 10
                while watch.revision is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                streams = server.server.stream_limit.open_streams
                assert streams() == 1
                time.sleep(2)  # idle, with pings answered: the watch stays open
                assert streams() == 1
                proxy.freeze()
                deadline = time.monotonic() + 10
                while streams() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert streams() == 0, "keepalive should have ended the dead client's watch"
    finally:
        proxy.close()


def test_a_watch_whose_start_left_the_buffer_as_it_opened_is_told_so(tmp_path):
    """The changes after a new watch's revision leave the server's buffer while its first
    response is being sent: the watch ends with UNAVAILABLE naming that revision (the
    client resumes from it, out of history) instead of going on from the oldest change
    still buffered, past the ones it never delivered."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from kvgrpc.errors import Unavailable
    from kvgrpc.store import SQLiteStore
    from kvgrpc.store.base import ALL_KEYS
    from kvgrpc.watch import ChangeHub

    store = SQLiteStore(str(tmp_path / "kv.sqlite3"))
    store.put(b"before", b"0")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = ChangeHub(store, loop, max_buffer_bytes=4096)
        with ThreadPoolExecutor(2) as executor:
            watch = hub.watch(ALL_KEYS, None, executor, store.head_revision)
            created = await watch.__anext__()
            assert created.created
            for i in range(50):  # the feed buffers these, dropping the oldest
                await loop.run_in_executor(executor, store.put, b"k%d" % i, b"x" * 200)
            deadline = time.monotonic() + 10
            while hub._floor <= created.revision:
                assert time.monotonic() < deadline, "the buffer never moved past the watch"
                await asyncio.sleep(0.01)
            with pytest.raises(Unavailable, match=f"resume from revision {created.revision}$"):
                await asyncio.wait_for(watch.__anext__(), 10)
            await watch.aclose()
        hub.close()
        hub.join(10)  # the feed thread reads the store until it sees the hub closed

    try:
        asyncio.run(main())
    finally:
        store.close()
