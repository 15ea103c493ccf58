"""Hostile values that reach the domain layer get INVALID_ARGUMENT before any database
call: malformed write tokens, out-of-range numbers; and undecodable bytes (the transport)."""

from __future__ import annotations

import logging

import grpc
import pytest

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.errors import InvalidArgument, NotFound
from kvgrpc.tokens import MAX_TOKEN_CHARS, token_kind

MYSQL_SET = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\n3E11FA47-71CA-11E1-9E33-C80AA9429563:7:9-10"


@pytest.mark.parametrize("token,kind", [
    ("", ""), ("0-1-5", "mariadb"), ("0-1-5,1-2-3", "mariadb"),
    ("4294967295-4294967295-18446744073709551615", "mariadb"),
    (MYSQL_SET, "mysql"), ("3E11FA47-71CA-11E1-9E33-C80AA9429562:tag_1:1-5", "mysql"),
])
def test_write_tokens_of_both_forms_are_accepted(token, kind):
    assert token_kind(token) == kind


@pytest.mark.parametrize("token", [
    "x", "0-1", "0-1-5,", "0-1-5;SELECT 1", "0-1-5 ", "-1-1-1", "0-4294967296-1", "0-1-18446744073709551616",
    "൯-1-1",  # Unicode digits: Python's \d matches them, MariaDB does not (found by the fuzz test)
    "3E11FA47-71CA-11E1-9E33-C80AA9429562:5-1", "3E11FA47-71CA-11E1-9E33-C80AA9429562:0",
    "3E11FA47-71CA-11E1-9E33-C80AA9429562", "0-1-1," * 1000,
])
def test_malformed_write_tokens_are_refused(token):
    with pytest.raises(InvalidArgument, match="min_write_token"):
        token_kind(token)
    assert len("0-1-1," * 1000) > MAX_TOKEN_CHARS


@pytest.mark.parametrize("token", ["0-1-5;x", "൯-1-1", "0-1-99999999999999999999", MYSQL_SET])
def test_a_bad_or_foreign_token_never_reaches_the_database(mysql_server, token, caplog):
    """MariaDB answered MASTER_GTID_WAIT('bad') with error 1941, which was INTERNAL; and a
    MySQL GTID set is not a MariaDB token either."""
    caplog.set_level(logging.INFO)
    with mysql_server.client() as kv:
        kv.put("k", b"v")
        mysql_server.server.service.router.check()  # the replica is measured, so it is a candidate
        with pytest.raises(InvalidArgument, match="min_write_token"):
            kv.get("k", min_write_token=token)
    assert "unexpected error" not in caplog.text


def test_out_of_range_numbers(any_server):
    top = (1 << 63) - 1
    with grpc.insecure_channel(any_server.target) as channel:
        put = channel.unary_unary("/kvgrpc.v1.KeyValue/Put", request_serializer=kv_pb2.PutRequest.SerializeToString,
                                  response_deserializer=kv_pb2.PutResponse.FromString)
        for expected in (top, -1, -(1 << 63)):
            with pytest.raises(grpc.RpcError) as info:
                put(kv_pb2.PutRequest(key="k", value=b"v", expected_version=expected), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "expected_version" in info.value.details()
        watch = channel.unary_stream("/kvgrpc.v1.KeyValue/Watch",
                                     request_serializer=kv_pb2.WatchRequest.SerializeToString,
                                     response_deserializer=kv_pb2.WatchResponse.FromString)
        for start in (top, -1):
            with pytest.raises(grpc.RpcError) as info:
                list(watch(kv_pb2.WatchRequest(key="k", start_revision=start), timeout=10))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        scan = channel.unary_unary("/kvgrpc.v1.KeyValue/Scan", request_serializer=kv_pb2.ScanRequest.SerializeToString,
                                   response_deserializer=kv_pb2.ScanResponse.FromString)
        for request in (kv_pb2.ScanRequest(page_size=-(1 << 31)), kv_pb2.ScanRequest(page_size=(1 << 31) - 1),
                        kv_pb2.ScanRequest(page_bytes=-(1 << 63)),
                        kv_pb2.ScanRequest(read_options=kv_pb2.ReadOptions(consistency=(1 << 31) - 1))):
            with pytest.raises(grpc.RpcError) as info:
                scan(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_undecodable_requests_get_invalid_argument_and_one_log_line(sqlite_server, caplog):
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(sqlite_server.target) as channel:
        put = channel.unary_unary("/kvgrpc.v1.KeyValue/Put", request_serializer=None, response_deserializer=None)
        for _ in range(50):
            with pytest.raises(grpc.RpcError) as info:
                put(b"\x0a\x01\xff", timeout=10)  # key: the byte 0xFF, not UTF-8
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid protobuf message" in info.value.details()
        stream = channel.stream_unary("/kvgrpc.v1.KeyValue/StreamPut", request_serializer=None,
                                      response_deserializer=None)
        good = kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key="a", value=b"1")]).SerializeToString()
        with pytest.raises(grpc.RpcError) as info:
            stream(iter([good, b"\x0a\x03\x0a\x01\xff"]), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "message 1 of the stream" in info.value.details()
        assert dict(info.value.trailing_metadata())["kvgrpc-committed"] == "1"
    assert "Traceback" not in caplog.text and "Exception deserializing" not in caplog.text
    lines = [r for r in caplog.records if r.name == "kvgrpc.decoding"]
    assert len(lines) == 2  # once per method (then at most once a minute)
    with sqlite_server.client() as kv:
        assert kv.get("a") == b"1"


@pytest.mark.parametrize("late", [{"load_id": "late"}, {"start_index": 5}])
def test_load_fields_after_the_first_stream_message_are_refused(any_server, late):
    """A load's name and start belong in the first message; set later, they would be
    ignored (was: silently)."""
    with grpc.insecure_channel(any_server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        messages = [kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key="first", value=b"1")]),
                    kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key="second", value=b"2")],
                                            **late)]
        with pytest.raises(grpc.RpcError) as info:
            stub.StreamPut(iter(messages), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message 1 sets load_id or start_index" in info.value.details()
    assert dict(info.value.trailing_metadata())["kvgrpc-committed"] == "1"
    with any_server.client() as kv:
        assert kv.get("first", consistency="strong") == b"1"
        with pytest.raises(NotFound):
            kv.get("second", consistency="strong")


def test_a_unary_write_carrying_two_messages_is_refused_and_writes_nothing(any_server):
    """A hand-made client can stream two PutRequests to the unary Put: it got OK, and only
    the first was written. Now INVALID_ARGUMENT, before anything runs; Get answers its
    first message (a read changes nothing)."""
    def two(method: str, request_class, response_class, first, second):
        call = channel.stream_unary(f"/kvgrpc.v1.KeyValue/{method}", request_serializer=request_class.SerializeToString,
                                    response_deserializer=response_class.FromString)
        return call(iter([first, second]), timeout=10)

    with grpc.insecure_channel(any_server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        stub.Put(kv_pb2.PutRequest(key="kept", value=b"1"), timeout=10)
        cases = [
            ("Put", kv_pb2.PutRequest, kv_pb2.PutResponse,
             kv_pb2.PutRequest(key="two-1", value=b"a"), kv_pb2.PutRequest(key="two-2", value=b"b")),
            ("Delete", kv_pb2.DeleteRequest, kv_pb2.DeleteResponse,
             kv_pb2.DeleteRequest(key="kept"), kv_pb2.DeleteRequest(key="two-1")),
            ("BatchGet", kv_pb2.BatchGetRequest, kv_pb2.BatchGetResponse,
             kv_pb2.BatchGetRequest(keys=["kept"]), kv_pb2.BatchGetRequest(keys=["two-1"])),
        ]
        for method, request_class, response_class, first, second in cases:
            with pytest.raises(grpc.RpcError) as raised:
                two(method, request_class, response_class, first, second)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert f"more than one {request_class.DESCRIPTOR.name}" in raised.value.details()
        for key in ("two-1", "two-2"):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Get(kv_pb2.GetRequest(key=key), timeout=10)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.Get(kv_pb2.GetRequest(key="kept"), timeout=10).record.value == b"1"
        reply = two("Get", kv_pb2.GetRequest, kv_pb2.GetResponse,
                    kv_pb2.GetRequest(key="kept"), kv_pb2.GetRequest(key="two-1"))
        assert reply.record.value == b"1"


def test_a_unary_write_whose_call_does_not_end_is_not_run(start_server, tmp_path):
    """The Put arrives, but the client never ends its request stream: nothing is written,
    and the call ends with DEADLINE_EXCEEDED naming --request-timeout."""
    import threading

    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), request_timeout=1.0)
    release = threading.Event()

    def requests():
        yield kv_pb2.PutRequest(key="open", value=b"1")
        release.wait(10)

    with grpc.insecure_channel(server.target) as channel:
        put = channel.stream_unary("/kvgrpc.v1.KeyValue/Put",
                                   request_serializer=kv_pb2.PutRequest.SerializeToString,
                                   response_deserializer=kv_pb2.PutResponse.FromString)
        try:
            with pytest.raises(grpc.RpcError) as raised:
                put(requests(), timeout=10)
        finally:
            release.set()
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "did not end within 1 s (--request-timeout)" in raised.value.details()
        with pytest.raises(grpc.RpcError) as missing:
            kv_pb2_grpc.KeyValueStub(channel).Get(kv_pb2.GetRequest(key="open"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_binlog_state_covers_a_token_per_domain_and_server_id():
    from kvgrpc.tokens import covers, merged_state

    state = "0-1-54,0-3-85,1-1-7"  # 0-1-55 was lost in a failover; 0-3-* came after
    assert covers(state, "0-1-54") and covers(state, "0-1-3") and covers(state, "0-3-85,1-1-7")
    assert not covers(state, "0-1-55")  # its sequence number is passed, by another server
    assert not covers(state, "0-2-1") and not covers(state, "2-1-1") and not covers(state, "0-3-86")
    assert not covers("", "0-1-1")
    assert covers(state, "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5") is None  # MySQL: not here
    assert merged_state("0-1-5", "0-1-3,0-2-9") == "0-1-5,0-2-9"
