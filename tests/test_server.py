"""End to end over a real channel: every RPC, every row of the error table."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.client import KeyValueClient
from kvgrpc.errors import (
    COMMITTED_METADATA_KEY,
    STATUS_BY_ERROR,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from kvgrpc.records import Limits, Record
from kvgrpc.server import RECEIVE_SLACK_BYTES, KeyValueServer, ServerConfig
from kvgrpc.store.base import WriteOp
from kvgrpc.store import MySQLEndpoint
from tests.conftest import open_client, run_cli


def settle(server, request) -> None:
    """Waits until reads see earlier writes: the replica has caught up (MariaDB only)."""
    if server.config.master is not None:
        request.getfixturevalue("sandbox").wait_for_replica()


def read_all(kv, keys) -> dict[str, bytes]:
    """BatchGet of any number of keys, 1000 at a time."""
    found = {}
    for start in range(0, len(keys), 1000):
        found.update(kv.batch_get(keys[start : start + 1000]))
    return found


def test_put_get_delete_round_trip(any_server, request, client_kind):
    with any_server.client() as kv:
        assert kv.put("greeting", b"hello") == 1
        assert kv.put("greeting", "hola, ñandú 🦤") == 2
        settle(any_server, request)
        assert kv.get("greeting") == "hola, ñandú 🦤".encode()
        assert kv.get_record("greeting") == Record("greeting", "hola, ñandú 🦤".encode(), 2)
        assert kv.delete("greeting") is True
        assert kv.delete("greeting") is False
        settle(any_server, request)
        with pytest.raises(NotFound, match="'greeting' not found"):
            kv.get("greeting")


def test_batch_get_reports_found_and_missing(any_server, request, client_kind):
    with any_server.client() as kv:
        kv.stream_put([(f"b{i}", f"v{i}") for i in range(150)])
        settle(any_server, request)
        keys = [f"b{i}" for i in range(0, 200, 2)]
        assert kv.batch_get(keys) == {f"b{i}": f"v{i}".encode() for i in range(0, 150, 2)}
        stub = kv_pb2_grpc.KeyValueStub(kv._channel)
        reply = stub.BatchGet(kv_pb2.BatchGetRequest(keys=["b3", "nope", "b1", "b3"]))
        assert [r.key for r in reply.records] == ["b3", "b1"]
        assert list(reply.missing_keys) == ["nope"]
        with pytest.raises(InvalidArgument, match="1001 keys requested; the limit is 1000"):
            kv.batch_get([f"k{i}" for i in range(1001)])
        with pytest.raises(InvalidArgument, match="keys is empty"):
            kv.batch_get([])


def test_stream_put_commits_everything_in_order(any_server, request, client_kind):
    records = [(f"s{i % 7000}", f"value {i}") for i in range(10_000)]  # keys repeat: later wins
    with any_server.client(batch_records=250) as kv:
        assert kv.stream_put(records) == 10_000
        settle(any_server, request)
        got = read_all(kv, [f"s{i}" for i in range(7000)])
    assert got == {k: v.encode() for k, v in dict(records).items()}


def test_stream_put_bad_record_commits_exactly_the_prefix(any_server, request, client_kind):
    records = [(f"p{i}", b"v") for i in range(5000)]
    records[3210] = ("", b"v")  # empty key
    with any_server.client(batch_records=100) as kv:
        with pytest.raises(InvalidArgument) as info:
            kv.stream_put(records)
        assert str(info.value) == "record 3210: key is empty; a key must be 1 to 3072 bytes"
        assert info.value.committed == 3210
        settle(any_server, request)
        assert len(read_all(kv, [f"p{i}" for i in range(3210)])) == 3210
        assert kv.batch_get([f"p{i}" for i in range(3211, 4211)]) == {}
        # Sending the corrected stream again completes it; the content is the same either way.
        records[3210] = ("p3210", b"v")
        assert kv.stream_put(records) == 5000
        assert kv.stream_put(records) == 5000
        settle(any_server, request)
        assert len(kv.batch_get([f"p{i}" for i in range(4000, 5000)])) == 1000


def test_stream_put_committed_count_in_trailing_metadata(sqlite_server):
    channel = grpc.insecure_channel(sqlite_server.target)
    stub = kv_pb2_grpc.KeyValueStub(channel)
    messages = [
        kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key="a", value=b"1")]),
        kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key="b" * 3073, value=b"2")]),
    ]
    with pytest.raises(grpc.RpcError) as info:
        stub.StreamPut(iter(messages))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "record 1: key is 3073 bytes; the limit is 3072 bytes"
    assert (COMMITTED_METADATA_KEY, "1") in tuple(info.value.trailing_metadata())
    channel.close()


def test_key_and_value_limits(start_server, tmp_path, client_kind):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), limits=Limits(max_value_bytes=1000))
    with server.client() as kv:
        key = "€" * 1024  # 3072 bytes: the largest key
        assert kv.put(key, b"x" * 1000) == 1
        assert kv.get(key) == b"x" * 1000
        assert kv.put("empty", b"") == 1 and kv.get("empty") == b""
        with pytest.raises(InvalidArgument, match=r"key is 3073 bytes; the limit is 3072 bytes"):
            kv.put("€" * 1024 + "x", b"v")
        with pytest.raises(InvalidArgument, match=r"key '' : key is empty|key is empty"):
            kv.put("", b"v")
        with pytest.raises(InvalidArgument, match=r"key 'big': value is 1001 bytes; the limit is 1000 bytes"):
            kv.put("big", b"x" * 1001)
        with pytest.raises(InvalidArgument, match=r"record 2: value is 1001 bytes"):
            kv.stream_put([("a", b""), ("b", b""), ("c", b"x" * 1001)])


def test_message_over_size_limit_is_resource_exhausted_stating_the_limit(start_server, tmp_path, client_kind):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), limits=Limits(max_receive_message_bytes=2 << 20))
    with server.client() as kv:
        with pytest.raises(ResourceExhausted,
                           match=rf"^the request is \d+ bytes; the server accepts messages of at most "
                                 rf"{2 << 20} bytes \(--max-message-bytes\)$"):
            kv.put("huge", b"x" * ((2 << 20) + 1000))
        # Far over (past grpc's own ceiling: the limit and RECEIVE_SLACK_BYTES): grpc's words.
        with pytest.raises(ResourceExhausted, match=str((2 << 20) + RECEIVE_SLACK_BYTES)):
            kv.put("huger", b"x" * (3 << 20))


def test_a_stream_message_over_the_limit_is_refused_after_committing_the_ones_before(
        start_server, tmp_path):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"),
                          limits=Limits(max_receive_message_bytes=50_000, max_value_bytes=10_000))
    small = kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key=f"s{i}", value=b"v") for i in range(3)])
    big = kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key=f"b{i}", value=b"x" * 9_000)
                                           for i in range(7)])
    with grpc.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            kv_pb2_grpc.KeyValueStub(channel).StreamPut(iter([small, big]), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == (f"message 1 of the stream is {big.ByteSize()} bytes; the server "
                                    "accepts messages of at most 50000 bytes (--max-message-bytes)")
    assert dict(info.value.trailing_metadata())["kvgrpc-committed"] == "3"
    with server.client() as kv:
        assert kv.batch_get(["s0", "s1", "s2", "b0"]) == {"s0": b"v", "s1": b"v", "s2": b"v"}


def test_streams_fit_their_messages_to_the_servers_limit(start_server, tmp_path, client_kind):
    """The client's default batch (1 MiB) is larger than this server accepts (20 KB): the
    library asks the server's limits and sends messages that fit (was: every message
    refused, nothing committed)."""
    limits = Limits(max_receive_message_bytes=20_000, max_value_bytes=2_000)
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), limits=limits)
    records = [(f"fit{i:03d}", bytes([65 + i % 26]) * 1_000) for i in range(100)]
    with server.client() as kv:
        assert kv.stream_put(records) == 100
        assert kv.stream_put(records, load_id="fitted") == 100
        assert kv.batch_get([k for k, _ in records]) == dict(records)


def test_the_cli_fits_its_messages_to_the_servers_limit(start_server, tmp_path):
    limits = Limits(max_receive_message_bytes=20_000, max_value_bytes=2_000)
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), limits=limits)
    path = tmp_path / "records.csv"
    path.write_text("key,value\n" + "".join(f"c{i},{'v' * 1000}\n" for i in range(100)))
    result = run_cli("--target", server.target, "stream", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("100 records committed")


def test_sqlite_and_a_master_are_exclusive():
    """Records go to one place: --sqlite with a master (flag or environment) is an error,
    not a silently ignored flag; so is --replica without a master."""
    from kvgrpc.server import config_from_args, main

    master = {"KVGRPC_MASTER_URL": "mysql://kvgrpc@127.0.0.1:1/kvgrpc"}
    with pytest.raises(ValueError, match=r"--sqlite and a master \(KVGRPC_MASTER_URL\)"):
        config_from_args(["--sqlite", "x.sqlite3"], master)
    with pytest.raises(ValueError, match=r"--sqlite and a master \(--master\)"):
        config_from_args(["--sqlite", "x.sqlite3", "--master", master["KVGRPC_MASTER_URL"]], {})
    with pytest.raises(ValueError, match="--replica needs a master"):
        config_from_args(["--replica", master["KVGRPC_MASTER_URL"]], {})
    assert config_from_args([], master)[0].master is not None
    assert config_from_args(["--sqlite", "x.sqlite3"], {})[0].sqlite_path == "x.sqlite3"
    assert main(["--sqlite", "x.sqlite3", "--master", master["KVGRPC_MASTER_URL"]]) == 2


def test_database_unreachable_is_unavailable(start_server, table_name, client_kind):
    closed = MySQLEndpoint("127.0.0.1", 1, "kvgrpc", "kvgrpc", password="pw-not-shown")
    server = start_server(master=closed, table=table_name)
    with server.client() as kv:
        for call in (lambda: kv.put("k", b"v"), lambda: kv.get("k"), lambda: kv.delete("k"),
                     lambda: kv.stream_put([("k", b"v")])):
            with pytest.raises(Unavailable) as info:
                call()
            assert info.value.message == "the master database at 127.0.0.1:1 is unreachable; retry later"


def test_reads_come_from_the_replica(mysql_server, sandbox, client_kind):
    with mysql_server.client() as kv:
        kv.put("via-master", b"m")
        sandbox.wait_for_replica()
        deadline = time.monotonic() + 10  # until the monitor has measured the replica's lag
        while not all(e.healthy for e in kv.status()):
            assert time.monotonic() < deadline, kv.status()
            time.sleep(0.05)
        table = mysql_server.config.table
        assert sandbox.query(f"SELECT v FROM `{table}` WHERE k = 'via-master'", role="replica") == [(b"m",)]
        # A row only the replica has (written there directly, not replicated) proves
        # where reads are served from.
        cnx = sandbox.connect("replica", root=True)
        cur = cnx.cursor()
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"INSERT INTO kvgrpc.`{table}` (k, v) VALUES ('replica-only', 'r')")
        cnx.close()
        assert kv.get("replica-only") == b"r"
        assert kv.batch_get(["replica-only", "via-master"]) == {"replica-only": b"r", "via-master": b"m"}


def test_unreachable_replica_falls_back_to_master(start_server, sandbox, table_name):
    dead_replica = MySQLEndpoint("127.0.0.1", 1, "kvgrpc", "kvgrpc")
    server = start_server(master=sandbox.master, replicas=(dead_replica,), table=table_name)
    with server.client() as kv:
        kv.put("k", b"v")
        assert kv.get("k") == b"v"


class _Raising:
    """A domain service whose every call raises the error class named by the key."""

    readers = ()

    def __init__(self):
        self.by_name = {cls.__name__: cls for cls in STATUS_BY_ERROR}

    def check_put(self, key, value, expected_version=None):
        return WriteOp(key.encode(), value, expected_version)

    def run_writes(self, ops):
        """Raises on the worker pool, as a store would: the error reaches the caller
        through the coalescer."""
        key = ops[0].key.decode()
        if key == "crash":
            raise RuntimeError("SELECT secret FROM internals")
        raise self.by_name[key](f"a {key} happened")

    def start(self):
        pass

    def begin_shutdown(self):
        pass

    def close(self):
        pass


def test_every_row_of_the_error_table_crosses_the_wire(tmp_path, client_kind):
    server = KeyValueServer(ServerConfig(host="127.0.0.1", port=0), _Raising())
    server.start()
    try:
        with open_client(client_kind, f"127.0.0.1:{server.port}") as kv:
            channel_stub = kv_pb2_grpc.KeyValueStub(kv._channel)
            for cls, code in STATUS_BY_ERROR.items():
                with pytest.raises(cls) as info:
                    kv.put(cls.__name__, b"")
                assert type(info.value) is cls and info.value.message == f"a {cls.__name__} happened"
                with pytest.raises(grpc.RpcError) as raw:
                    channel_stub.Put(kv_pb2.PutRequest(key=cls.__name__))
                assert raw.value.code().name == code
            # Anything unexpected is INTERNAL with no internal text, never UNKNOWN.
            with pytest.raises(grpc.RpcError) as raw:
                channel_stub.Put(kv_pb2.PutRequest(key="crash"))
            assert raw.value.code() == grpc.StatusCode.INTERNAL
            assert "SELECT" not in raw.value.details()
    finally:
        server.stop(grace=0)


def test_health_reports_serving(sqlite_server):
    channel = grpc.insecure_channel(sqlite_server.target)
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="kvgrpc.v1.KeyValue"), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_server_process_drains_an_open_stream_on_sigterm(tmp_path, sandbox):
    """The real command: logs its store and driver; on SIGTERM an open stream stops taking
    records, commits what it holds and ends with UNAVAILABLE carrying the exact count."""
    env = sandbox.process_env(KVGRPC_MASTER_URL=sandbox.env["KVGRPC_MASTER_URL"],
                              KVGRPC_REPLICA_URL=sandbox.env["KVGRPC_REPLICA_URL"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--port", "0",
         "--table", f"graceful{os.getpid()}"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "driver:" in line:
                break
        log = "".join(lines)
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", log).group(1))
        assert "writes: master mysql://kvgrpc@127.0.0.1" in log and "reads: replica" in log
        assert "C extension" in log
        assert sandbox.env["KVGRPC_MYSQL_PASSWORD"] not in log  # no password

        first_batch_sent = threading.Event()

        def records():
            for i in range(20_000):
                if i == 1000:
                    first_batch_sent.set()
                yield f"g{i}", b"v"

        def terminate():
            first_batch_sent.wait(10)
            proc.send_signal(signal.SIGTERM)

        threading.Thread(target=terminate).start()
        began = time.monotonic()
        with KeyValueClient(f"127.0.0.1:{port}", batch_records=10) as kv:
            with pytest.raises(Unavailable, match="shutting down") as drained:
                kv.stream_put(records())
        assert proc.wait(30) == 0
        assert time.monotonic() - began < 10  # well within the 30 s grace
        committed = drained.value.committed
        assert 0 < committed < 20_000
        table = f"graceful{os.getpid()}"
        stored = sandbox.query(f"SELECT k FROM `{table}`")
        assert sorted(k.decode() for (k,) in stored) == sorted(f"g{i}" for i in range(committed))
        rest = proc.stderr.read()
        assert "stopping: letting in-flight calls finish" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_reflection_describes_the_service(sqlite_server):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(sqlite_server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert {"kvgrpc.v1.KeyValue", "grpc.health.v1.Health"} <= set(database.get_services())
        service = DescriptorPool(database).FindServiceByName("kvgrpc.v1.KeyValue")
        assert {m.name for m in service.methods} == {
            "Put", "Get", "Delete", "BatchGet", "StreamPut", "Scan", "Watch", "GetStatus", "GetLoad"}


def test_health_is_not_serving_while_draining(sqlite_server):
    with grpc.insecure_channel(sqlite_server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="kvgrpc.v1.KeyValue"), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        sqlite_server.server.health.enter_graceful_shutdown()  # what stop() does first
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()


def test_client_spreads_calls_over_several_servers(start_server, tmp_path, client_kind):
    one = start_server(sqlite_path=str(tmp_path / "one.sqlite3"))
    two = start_server(sqlite_path=str(tmp_path / "two.sqlite3"))
    with open_client(client_kind, f"127.0.0.1:{one.port},localhost:{two.port}") as kv:
        kv.wait_until_connected()
        for i in range(40):
            kv.put(f"rr{i}", b"v")
    # Separate files: each server holds the keys written through it, and both got some.
    held = [len(one.server.service.writer.get_many([f"rr{i}".encode() for i in range(40)])),
            len(two.server.service.writer.get_many([f"rr{i}".encode() for i in range(40)]))]
    assert sum(held) == 40 and min(held) >= 10, held


def test_write_through_one_server_read_through_another(start_server, sandbox, table_name, client_kind):
    one = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    two = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    with one.client() as writer, two.client() as reader:
        writer.put("shared", b"through one")
        assert reader.get("shared", consistency="strong") == b"through one"
        sandbox.wait_for_replica()
        assert reader.get("shared") == b"through one"


def test_prometheus_metrics(start_server, sandbox, table_name):
    import urllib.request

    server = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name,
                          metrics_port=0)
    with server.client() as kv:
        kv.put("m", b"1")
        kv.stream_put((f"m{i}", b"v") for i in range(30))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # concurrent Puts share groups
            list(pool.map(lambda i: kv.put(f"c{i % 8}", b"v"), range(64)))
        with pytest.raises(NotFound):
            kv.get("absent", consistency="strong")
        with pytest.raises(InvalidArgument):
            kv.put("", b"x")
        with pytest.raises(OutOfRange):
            next(kv.watch("m", start_revision=10**12))
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert 'kvgrpc_rpc_requests_total{code="OK",method="Put"} 65.0' in text
    assert 'kvgrpc_rpc_requests_total{code="OK",method="StreamPut"} 1.0' in text
    assert 'kvgrpc_rpc_requests_total{code="NOT_FOUND",method="Get"} 1.0' in text
    assert 'kvgrpc_rpc_requests_total{code="INVALID_ARGUMENT",method="Put"} 1.0' in text
    assert 'kvgrpc_rpc_duration_seconds_bucket{code="OK",le="+Inf",method="Put"} 65.0' in text
    assert 'kvgrpc_rpc_requests_total{code="OUT_OF_RANGE",method="Watch"} 1.0' in text
    assert "kvgrpc_records_written_total 95.0" in text
    writes = server.server.servicer.writes
    assert writes.groups > 0
    assert f'kvgrpc_coalesced_groups_total{{kind="write"}} {float(writes.groups)}' in text
    assert f'kvgrpc_coalesced_calls_total{{kind="write"}} {float(writes.grouped_ops)}' in text
    assert 'kvgrpc_coalesced_groups_total{kind="read"} 0.0' in text  # one Get: no group
    assert 'kvgrpc_pool_connections_max{endpoint="master",role="master"} 8.0' in text
    assert 'kvgrpc_endpoint_up{endpoint="replica-0",role="replica"} 1.0' in text
    assert "kvgrpc_replica_lag_seconds{" in text


def test_streams_per_client_are_limited(start_server, tmp_path):
    """Per-client limits are keyed by the validated token, so forged or extra
    `authorization` entries cannot raise them."""
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), max_streams_per_client=1,
                          auth_tokens=("token-one", "token-two"))
    release = threading.Event()
    first_sent = threading.Event()

    def slow_records():
        yield "slow", b"1"
        first_sent.set()
        release.wait(10)
        yield "slow2", b"2"

    results = []
    limit = server.server.stream_limit
    with server.client(batch_records=1, token="token-one") as kv:
        worker = threading.Thread(target=lambda: results.append(kv.stream_put(slow_records())))
        worker.start()
        assert first_sent.wait(10)
        deadline = time.monotonic() + 10
        while limit.open_streams() == 0:  # the server admits the call on its own thread
            assert time.monotonic() < deadline, "the first stream never opened"
            time.sleep(0.01)
        with server.client(token="token-one") as same_client, \
                server.client(token="token-two") as other_client:
            with pytest.raises(ResourceExhausted, match="already has 1 streams open"):
                same_client.stream_put([("other", b"x")])
            assert other_client.stream_put([("other", b"x")]) == 1  # another token: its own limit
            channel = grpc.insecure_channel(server.target)
            stub = kv_pb2_grpc.KeyValueStub(channel)
            request = [kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key="f", value=b"")])]
            for forged in ([("authorization", "Basic junk"), ("authorization", "Bearer token-one")],
                           [("authorization", "Bearer token-one"), ("authorization", "Bearer x")],
                           [("authorization", "Bearer made-up")]):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.StreamPut(iter(request), metadata=forged, timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            channel.close()
            release.set()
            worker.join(10)
            assert results == [2]
            assert same_client.stream_put([("other", b"x")]) == 1  # the slot is free again


def test_json_logs(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--port", "0",
         "--sqlite", str(tmp_path / "kv.sqlite3"), "--log-format", "json"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        first = json.loads(proc.stderr.readline())
        assert first["level"] == "INFO" and first["logger"] == "__main__"
        assert first["message"].startswith("listening on 127.0.0.1:")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[1]
    assert all(json.loads(line)["message"] for line in rest.splitlines())
