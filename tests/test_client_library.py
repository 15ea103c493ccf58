"""The client libraries (blocking and asyncio) as services use them: reads retried by
gRPC across a server restart, BatchGet's unprocessed keys fetched transparently, the
server's limits; and the shared logic (kvgrpc/_calls.py) on its edge cases."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from kvgrpc import _calls, kv_pb2, kv_pb2_grpc
from kvgrpc.client import RetryPolicy
from kvgrpc.errors import Internal, InvalidArgument, NotFound, Unavailable
from kvgrpc.records import Limits
from kvgrpc.server import KeyValueServer, ServerConfig, build_service
from tests.conftest import open_client


def _serve_after_go(args: list[str]) -> subprocess.Popen:
    """A `python -m kvgrpc.server ARGS` process that has imported everything, says
    "ready", and starts serving once it reads a line: a restart that takes milliseconds."""
    code = ("import sys, kvgrpc.server as s; print('ready', flush=True); sys.stdin.readline(); "
            "sys.exit(s.main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _listening_port(proc: subprocess.Popen) -> int:
    for line in proc.stderr:
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("the server never said where it listens")


def test_a_read_is_retried_across_a_server_restart(tmp_path, client_kind):
    """A Get issued while the server is down succeeds once it is back (same port), with
    no retry code in the caller; without a retry policy the same Get fails."""
    database = str(tmp_path / "kv.sqlite3")
    first = _serve_after_go(["--host", "127.0.0.1", "--port", "0", "--sqlite", database])
    second = None
    try:
        first.stdin.write("go\n")
        first.stdin.flush()
        port = _listening_port(first)
        target = f"127.0.0.1:{port}"
        second = _serve_after_go(["--host", "127.0.0.1", "--port", str(port), "--sqlite", database])
        # A generous budget: the first retry waits a random 0-2 s (gRFC A6 jitter).
        patient = RetryPolicy(max_attempts=5, initial_backoff=2.0, max_backoff=5.0)
        with open_client(client_kind, target, retry=patient, timeout=30) as kv, \
                open_client(client_kind, target, retry=None, timeout=30) as impatient:
            assert kv.put("k", b"before the restart") == 1
            assert impatient.get("k") == b"before the restart"
            first.terminate()
            assert first.wait(30) == 0
            results: list[object] = []

            def read() -> None:
                began = time.monotonic()
                try:
                    results.append(kv.get("k"))
                except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                    results.append(exc)
                results.append(time.monotonic() - began)

            reader = threading.Thread(target=read)
            reader.start()
            with pytest.raises(Unavailable):
                impatient.get("k")  # the server is down: no retry, no answer
            time.sleep(0.2)  # the server stays down a while: that is the point of the test
            second.stdin.write("go\n")
            second.stdin.flush()
            reader.join(60)
            assert results[0] == b"before the restart", results
            assert results[1] >= 0.2  # it was issued in the gap, and waited it out
            # Writes are not retried (not idempotent in versions), but work again now.
            assert kv.put("k", b"after") == 2
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _no_replica() -> None:
    """The embedded store has no replica to wait for."""


@pytest.fixture(params=["sqlite", "mysql"])
def small_batch_budget(request, tmp_path, table_name):
    """A server on either backend whose BatchGet replies hold at most 250 bytes of keys
    and values (``Limits.max_batch_get_bytes``)."""
    if request.param == "sqlite":
        config = ServerConfig(host="127.0.0.1", port=0, sqlite_path=str(tmp_path / "kv.sqlite3"),
                              table=table_name, limits=Limits(max_batch_get_bytes=250))
        settle = _no_replica
    else:
        sandbox = request.getfixturevalue("sandbox")
        config = ServerConfig(host="127.0.0.1", port=0, master=sandbox.master,
                              replicas=(sandbox.replica,), table=table_name,
                              limits=Limits(max_batch_get_bytes=250))
        settle = sandbox.wait_for_replica
    server = KeyValueServer(config, build_service(config))
    server.start()
    yield f"127.0.0.1:{server.port}", settle
    server.stop(grace=1)


def test_batch_get_fetches_unprocessed_keys(small_batch_budget, client_kind):
    target, settle = small_batch_budget
    values = {f"u{i:03d}": bytes([65 + i % 26]) * 100 for i in range(60)}
    values["huge"] = b"h" * 1000  # larger than the budget alone: a reply still takes it
    with open_client(client_kind, target) as kv:
        assert kv.stream_put(values.items()) == len(values)
        settle()
        asked = [f"u{i:03d}" for i in range(80)] + ["huge", "u001", "nope"]
        # The server does answer in parts: 2 records of 104 bytes fit in 250 bytes, 3 not.
        stub = kv_pb2_grpc.KeyValueStub(kv._channel)
        reply = stub.BatchGet(kv_pb2.BatchGetRequest(keys=asked), timeout=10)
        assert [r.key for r in reply.records] == ["u000", "u001"]
        assert list(reply.unprocessed_keys) == list(dict.fromkeys(asked))[2:]
        # The library asks again until every key is read: found, missing, in order.
        got = kv.batch_get(asked)
        expected = {key: values[key] for key in dict.fromkeys(asked) if key in values}
        assert got == expected and list(got) == list(expected)
        assert kv.batch_get(["huge"]) == {"huge": values["huge"]}
        assert kv.limits().max_batch_get_bytes == 250


def test_limits_are_the_servers(start_server, tmp_path, client_kind):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), limits=Limits(max_value_bytes=1000))
    with server.client() as kv:
        limits = kv.limits()
    assert limits == replace(Limits(), max_value_bytes=1000)


def test_batch_get_rounds_stop_when_a_round_makes_no_progress():
    rounds = _calls.BatchGetRounds(["a", "b", "c"])
    rounds.add(kv_pb2.BatchGetResponse(records=[kv_pb2.Record(key="a", value=b"1")],
                                       unprocessed_keys=["b", "c"]))
    assert rounds.pending == ["b", "c"]
    rounds.add(kv_pb2.BatchGetResponse(missing_keys=["b"], unprocessed_keys=["c"]))
    assert rounds.pending == ["c"]
    with pytest.raises(Internal, match="made no progress: the server read none of the 1 keys"):
        rounds.add(kv_pb2.BatchGetResponse(unprocessed_keys=["c"]))


def _response(revision: int, *events: tuple[str, int]) -> kv_pb2.WatchResponse:
    return kv_pb2.WatchResponse(revision=revision, events=[
        kv_pb2.Event(type=kv_pb2.EVENT_TYPE_PUT, record=kv_pb2.Record(key=key, version=1),
                     revision=event_revision)
        for key, event_revision in events
    ])


def test_watch_cursor_resumes_a_split_revision_without_repeats():
    """Revision 10's events span two responses; the first reports revision 9 (above the
    watch's start, 5). The stream breaks after it: the reopened stream (from 9) sends
    revision 10 whole again, and only its unseen events are delivered."""
    cursor = _calls.WatchCursor(None, "p", 5)
    assert [e.key for e in cursor.events(_response(9, ("a", 10), ("b", 10)))] == ["a", "b"]
    assert cursor.revision == 9
    cursor.reopened()
    assert cursor.request().start_revision == 9
    again = cursor.events(_response(10, ("a", 10), ("b", 10), ("c", 10)))
    assert [e.key for e in again] == ["c"]
    assert cursor.revision == 10 and cursor.beyond == 0
    cursor.reopened()
    assert [e.key for e in cursor.events(_response(11, ("d", 11)))] == ["d"]


def test_retry_policy_service_config_names_the_reads_only():
    config = json.loads(RetryPolicy().service_config())
    (method_config,) = config["methodConfig"]
    assert {n["method"] for n in method_config["name"]} == {
        "Get", "BatchGet", "Scan", "GetStatus", "GetLoad"}
    assert {n["service"] for n in method_config["name"]} == {"kvgrpc.v1.KeyValue"}
    assert method_config["retryPolicy"] == {
        "maxAttempts": 5, "initialBackoff": "0.100s", "maxBackoff": "1.000s",
        "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}
    assert RetryPolicy().worst_case_seconds() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="max_attempts must be 2 to 5"):
        RetryPolicy(max_attempts=6)


def test_writes_are_not_retried(tmp_path, client_kind):
    """A Put to a server that is down fails at once with Unavailable (no retries), while
    the same client's Get keeps trying until its deadline."""
    with open_client(client_kind, "127.0.0.1:1", timeout=5,
                     retry=RetryPolicy(initial_backoff=0.5, max_backoff=0.5)) as kv:
        began = time.monotonic()
        with pytest.raises(Unavailable):
            kv.put("k", b"v")
        put_seconds = time.monotonic() - began
        began = time.monotonic()
        with pytest.raises(Unavailable):
            kv.get("k")
        get_seconds = time.monotonic() - began
    assert put_seconds < 0.2, put_seconds
    # 4 retries, each after a random 0-0.5 s: almost surely more than the Put took.
    assert get_seconds > put_seconds, (put_seconds, get_seconds)


def test_async_stream_put_reads_an_async_source_and_reports_a_failing_source(tmp_path):
    """The asyncio client streams from an async generator; a source that raises ends
    the stream, the records sent are committed, and the source's exception is raised."""
    import asyncio

    from kvgrpc import aio

    config = ServerConfig(host="127.0.0.1", port=0, sqlite_path=str(tmp_path / "kv.sqlite3"))
    server = KeyValueServer(config, build_service(config))
    server.start()

    async def main() -> None:
        async with aio.KeyValueClient(f"127.0.0.1:{server.port}", batch_records=10) as kv:
            sent: list[int] = []

            async def records():
                for i in range(95):
                    yield f"a{i}", b"v"

            assert await kv.stream_put(records(), on_sent=sent.append) == 95
            assert sent == [10] * 9 + [5]
            sent.clear()
            assert await kv.stream_put([(f"c{i}", "v") for i in range(12)], on_sent=sent.append) == 12
            assert sent == [10, 2]

            def broken():
                for i in range(25):
                    yield f"b{i}", b"v"
                raise OSError("the file went away")

            with pytest.raises(OSError, match="the file went away") as info:
                await kv.stream_put(broken())
            assert "25 records committed" in info.value.__notes__[0]
            assert len(await kv.batch_get([f"b{i}" for i in range(25)])) == 25

    try:
        asyncio.run(main())
    finally:
        server.stop(grace=0)


def test_stream_messages_name_the_load_in_the_first_message_only():
    batcher = _calls.StreamBatcher(2, 1 << 20, load_id="load-1", start_index=7)
    sent: list[int] = []
    messages = list(_calls.stream_messages([("a", b"1"), ("b", "2"), ("c", b"3")], batcher, sent.append))
    assert [(m.load_id, m.start_index, [r.key for r in m.records]) for m in messages] == [
        ("load-1", 7, ["a", "b"]), ("", 0, ["c"])]
    assert sent == [2, 1]
    # A load resumed past its end still names itself: one empty message.
    empty = list(_calls.stream_messages([], _calls.StreamBatcher(2, 1 << 20, load_id="x", start_index=3)))
    assert [(m.load_id, m.start_index, len(m.records)) for m in empty] == [("x", 3, 0)]
    assert list(_calls.stream_messages([], _calls.StreamBatcher(2, 1 << 20))) == []


def test_both_clients_refuse_the_same_bad_arguments_before_sending(start_server, tmp_path, client_kind):
    """Values are bytes or str (``bytes(5)`` would store five zero bytes), batch_get takes
    a sequence of keys (a string's characters are not keys), start_index needs a named
    load; a source that raises or yields a bad record ends the stream after the records
    before it, which are committed, and the error is raised (was, in the blocking client:
    INTERNAL "Exception iterating requests!" with nothing committed)."""
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"))
    with server.client(batch_records=100) as kv:
        for value in (5, None, 1.5, ["x"]):
            with pytest.raises(TypeError, match="a value must be bytes or str"):
                kv.put("typed", value)
        assert kv.put("typed", bytearray(b"ok")) == 1 and kv.get("typed") == b"ok"
        with pytest.raises(TypeError, match="not one string"):
            kv.batch_get("typed")
        with pytest.raises(ValueError, match="0 or more"):
            kv.stream_put([("s", b"v")], start_index=-1)
        with pytest.raises(ValueError, match="needs load_id"):
            kv.stream_put([("s", b"v")], start_index=3)

        def records(bad):
            for i in range(1_200):
                yield f"r{i:04d}", b"v"
            yield bad

        for bad in (("bad", None), (7, b"v")):
            with pytest.raises(TypeError) as info:
                kv.stream_put(records(bad))
            assert "1200 records committed" in info.value.__notes__[-1]
        assert len(kv.batch_get([f"r{i:04d}" for i in range(1_000)])) == 1_000
        assert kv.get("r1199") == b"v"


def test_bad_arguments_are_refused_by_name_before_anything_is_sent(start_server, tmp_path, client_kind):
    """Wrong types, text that cannot be UTF-8 and numbers a message cannot hold are refused
    with the argument's name, not protobuf's or the codec's words; and a 2-character string
    given as a record is refused, not stored as key 'a', value 'b'."""
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"))
    with server.client() as kv:
        cases = [
            (lambda: kv.stream_put(["ab"]), TypeError, r"record 0: a record is a \(key, value\) pair, not str"),
            (lambda: kv.stream_put({"ab": b"v"}), TypeError, "record 0: a record is a"),
            (lambda: kv.stream_put([("x", b"1"), ("a",)]), TypeError, "record 1: a record is a"),
            (lambda: kv.stream_put([(1, b"v")]), TypeError, "a key must be str, not int"),
            (lambda: kv.stream_put([("caf\udce9", b"v")]), InvalidArgument, "key is not valid UTF-8"),
            (lambda: kv.put("caf\udce9", b"v"), InvalidArgument, r"key 'caf\\udce9': key is not valid UTF-8"),
            (lambda: kv.put("k", "\ud800"), InvalidArgument, "key 'k': the value is str but not valid UTF-8"),
            (lambda: kv.put(1, b"v"), TypeError, "a key must be str, not int"),
            (lambda: kv.get("caf\udce9"), InvalidArgument, "not valid UTF-8"),
            (lambda: kv.delete(b"k"), TypeError, "a key must be str, not bytes"),
            (lambda: kv.batch_get([1, 2]), TypeError, "a key must be str, not int"),
            (lambda: list(kv.scan("caf\udce9")), InvalidArgument, "prefix 'caf\\\\udce9': prefix is not"),
            (lambda: kv.put("k", b"v", expected_version=2**64), ValueError, "expected_version must be 0"),
            (lambda: kv.get("k", consistency="bounded", max_staleness_ms=-5), ValueError,
             "max_staleness_ms must be 0 to 4294967295, not -5"),
        ]
        for call, error, message in cases:
            with pytest.raises(error, match=message):
                call()
        with pytest.raises(NotFound):
            kv.get("a")  # nothing of the refused records was stored
        assert kv.get("x") == b"1"  # the records before a bad one are committed, as documented
