"""Compare-and-set and Scan, end to end on the embedded store and on the MariaDB pair."""

from __future__ import annotations

import grpc
import pytest

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.errors import CURRENT_VERSION_METADATA_KEY, FailedPrecondition, InvalidArgument, NotFound
from kvgrpc.records import Record
from tests.test_server import settle


def test_compare_and_set(any_server, request, client_kind):
    with any_server.client() as kv:
        assert kv.put("cas", b"first", expected_version=0) == 1  # create only
        with pytest.raises(FailedPrecondition) as info:
            kv.put("cas", b"again", expected_version=0)
        assert info.value.current_version == 1
        assert str(info.value) == "key 'cas': the key is at version 1; the write expected it not to exist"
        assert kv.put("cas", b"second", expected_version=1) == 2
        with pytest.raises(FailedPrecondition) as info:
            kv.put("cas", b"stale", expected_version=1)
        assert info.value.current_version == 2
        with pytest.raises(FailedPrecondition) as info:
            kv.put("missing", b"x", expected_version=3)
        assert info.value.current_version == 0
        assert "the key does not exist; the write expected it to be at version 3" in str(info.value)
        assert kv.get("cas", consistency="strong") == b"second"
        assert kv.get_record("cas", consistency="strong").version == 2
        with pytest.raises(InvalidArgument, match="expected_version must be 0 or more"):
            kv.put("cas", b"x", expected_version=-1)
        settle(any_server, request)
        with pytest.raises(NotFound):
            kv.get("missing")  # a failed compare-and-set wrote nothing


def test_compare_and_set_status_carries_the_current_version(sqlite_server):
    with grpc.insecure_channel(sqlite_server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        stub.Put(kv_pb2.PutRequest(key="k", value=b"v"))
        with pytest.raises(grpc.RpcError) as info:
            stub.Put(kv_pb2.PutRequest(key="k", value=b"w", expected_version=7))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (CURRENT_VERSION_METADATA_KEY, "1") in tuple(info.value.trailing_metadata())


def test_scan_by_prefix_and_range_in_key_order(any_server, request, client_kind):
    keys = ["a", "app", "apple", "apply", "apq", "b", "ñu", "z", "ap\u00ff", "ap\u00ffx"]
    with any_server.client() as kv:
        kv.stream_put((k, k.upper()) for k in keys)
        settle(any_server, request)
        assert [r.key for r in kv.scan()] == sorted(keys, key=lambda k: k.encode())
        assert [r.key for r in kv.scan("app")] == ["app", "apple", "apply"]
        assert [r.key for r in kv.scan("ap\u00ff")] == ["ap\u00ff", "ap\u00ffx"]
        assert [r.key for r in kv.scan(start="apple", end="b")] == ["apple", "apply", "apq", "ap\u00ff", "ap\u00ffx"]
        assert [r.key for r in kv.scan("ap", start="apq")] == ["apq", "ap\u00ff", "ap\u00ffx"]
        assert list(kv.scan("nothing")) == []
        assert next(kv.scan("apple")) == Record("apple", b"APPLE", 1)


def test_scan_pages_by_count_and_bytes(any_server, request, client_kind):
    with any_server.client() as kv:
        kv.stream_put((f"p{i:04d}", b"v" * 100) for i in range(250))
        settle(any_server, request)
        stub = kv_pb2_grpc.KeyValueStub(kv._channel)
        pages, token = [], ""
        while True:
            reply = stub.Scan(kv_pb2.ScanRequest(prefix="p", page_size=100, page_token=token))
            pages.append([r.key for r in reply.records])
            token = reply.next_page_token
            if not token:
                break
        assert [len(p) for p in pages] in ([100, 100, 50], [100, 100, 50, 0])
        assert sum(pages, []) == [f"p{i:04d}" for i in range(250)]
        # A byte budget of 1000 bytes holds 9 records of 105 bytes; a page holds at least one.
        reply = stub.Scan(kv_pb2.ScanRequest(prefix="p", page_size=1000, page_bytes=1000))
        assert len(reply.records) == 9 and reply.next_page_token
        reply = stub.Scan(kv_pb2.ScanRequest(prefix="p", page_bytes=1))
        assert len(reply.records) == 1
        keys_only = list(kv.scan("p", keys_only=True, page_size=7))
        assert len(keys_only) == 250 and all(r.value == b"" and r.version == 1 for r in keys_only)


def test_scan_rejects_bad_pages(sqlite_server, client_kind):
    with sqlite_server.client() as kv:
        with pytest.raises(InvalidArgument, match="page_size 1001 is out of range"):
            next(kv.scan(page_size=1001))
        stub = kv_pb2_grpc.KeyValueStub(kv._channel)
        for i in range(3):
            kv.put(f"page{i}", b"v")
        real = stub.Scan(kv_pb2.ScanRequest(prefix="page", page_size=1)).next_page_token
        assert real.startswith("kvgrpc-scan-1:")
        # Forged, truncated, altered: none may restart or shift the scan.
        for token in ("forged", "kvgrpc-scan-1:", "kvgrpc-scan-1:@@@", real + "A", real + "\n",
                      real[:-1], real.replace("kvgrpc-scan-1:", "kvgrpc-scan-1: "),
                      "kvgrpc-scan-1:" + "cGFnZTA"):  # the right key, padding dropped
            with pytest.raises(grpc.RpcError) as info:
                stub.Scan(kv_pb2.ScanRequest(prefix="page", page_token=token))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, token
            assert info.value.details() == "page_token is not one that Scan returned"
        assert [r.key for r in stub.Scan(kv_pb2.ScanRequest(prefix="page", page_token=real)).records] \
            == ["page1", "page2"]
