"""Hostile bytes: generated and mutated messages to every RPC, on both backends.

A property-based fuzz test (hypothesis) against a real server process (SQLite, and the
MariaDB sandbox): well-formed messages with edge values (empty and over-long keys, int64
extremes, unknown enum values, malformed write and page tokens...), their serialized bytes
mutated (truncated, flipped, spliced), and hand-made invalid protobuf and invalid UTF-8 in
string fields, all sent as raw bytes (no client-side serializer). It checks that:

- no call gets INTERNAL or UNKNOWN (UNIMPLEMENTED only for an RPC the server lacks);
- the server stays up, and its RSS stays flat;
- canary records written before (under a prefix the fuzzer cannot generate) keep their
  values and versions;
- the server logs no traceback.

Sized for CI (~15 s per backend); ``KVGRPC_FUZZ_EXAMPLES=N`` runs N examples (each a few
messages) per backend instead of the default. Prints what it sent and what came back.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvgrpc import kv_pb2
from kvgrpc.client import KeyValueClient

EXAMPLES = int(os.environ.get("KVGRPC_FUZZ_EXAMPLES", "300"))
SERVICE = "/kvgrpc.v1.KeyValue/"
CANARY = "~canary~/"  # the fuzzer's text never holds "~"
CANARIES = 20
FORBIDDEN = {"INTERNAL", "UNKNOWN"}
RSS_GROWTH_LIMIT_KB = 40 * 1024

# -- strategies ---------------------------------------------------------------------

_TEXT = st.characters(blacklist_characters="~", blacklist_categories=("Cs",))
keys = st.one_of(
    st.text(_TEXT, max_size=24),
    st.sampled_from(["", "k", "\x00", "a" * 3072, "a" * 3073, "é" * 1537, "\U0001f600" * 800]),
)
values = st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x00\xff" * 8, b"v" * (1 << 20),
                                                           b"v" * ((1 << 20) + 1)]))
int64 = st.one_of(st.integers(-(1 << 63), (1 << 63) - 1),
                  st.sampled_from([0, 1, -1, (1 << 63) - 1, (1 << 63) - 2, -(1 << 63), 1 << 31, 1 << 32]))
int32 = st.one_of(st.integers(-(1 << 31), (1 << 31) - 1), st.sampled_from([0, 1, -1, 1000, 1001]))
uint32 = st.one_of(st.integers(0, (1 << 32) - 1), st.sampled_from([0, 1, (1 << 32) - 1]))
tokens = st.one_of(
    st.just(""),
    st.text(_TEXT, max_size=40),
    st.from_regex(r"\A\d{1,12}-\d{1,12}-\d{1,22}(,\d{1,3}-\d{1,3}-\d{1,3})?\Z"),
    st.sampled_from(["0-1-1", "0-1-99999999999999999999", "0-1-5;SELECT 1", "0-1-5,",
                     "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5", "3E11FA47-71CA-11E1-9E33-C80AA9429562:5-1",
                     "1" * 5000, "0-1-1," * 700]),
)
read_options = st.builds(kv_pb2.ReadOptions, consistency=st.one_of(st.integers(0, 3), int32),
                         max_staleness_ms=uint32, min_write_token=tokens)
page_tokens = st.one_of(st.just(""), st.text(_TEXT, max_size=30),
                        st.text(st.characters(whitelist_categories=("Ll", "Nd")), max_size=20).map(
                            lambda s: "kvgrpc-scan-1:" + s))


def _put(draw_key, value, expected):
    message = kv_pb2.PutRequest(key=draw_key, value=value)
    if expected is not None:
        message.expected_version = expected
    return message


def _watch(key, prefix, which, start):
    message = kv_pb2.WatchRequest()
    if which == "key":
        message.key = key
    elif which == "prefix":
        message.prefix = prefix
    if start is not None:
        message.start_revision = start
    return message


records = st.lists(st.builds(kv_pb2.KeyValuePair, key=keys, value=st.binary(max_size=16)), max_size=5)
messages = st.one_of(
    st.tuples(st.just("Put"), st.builds(_put, keys, values, st.none() | int64)),
    st.tuples(st.just("Get"), st.builds(kv_pb2.GetRequest, key=keys, read_options=read_options)),
    st.tuples(st.just("Delete"), st.builds(kv_pb2.DeleteRequest, key=keys)),
    st.tuples(st.just("BatchGet"), st.builds(
        kv_pb2.BatchGetRequest, keys=st.one_of(st.lists(keys, max_size=8), st.just(["k"] * 1001)),
        read_options=read_options)),
    st.tuples(st.just("StreamPut"), st.lists(st.builds(
        kv_pb2.StreamPutRequest, records=records, load_id=st.text(_TEXT, max_size=12),
        start_index=int64), max_size=3)),
    st.tuples(st.just("Scan"), st.builds(
        kv_pb2.ScanRequest, prefix=keys, start_key=keys, end_key=keys, page_size=int32,
        page_bytes=int64, page_token=page_tokens, keys_only=st.booleans(), read_options=read_options)),
    st.tuples(st.just("Watch"), st.builds(_watch, keys, keys, st.sampled_from(["key", "prefix", None]),
                                          st.none() | int64)),
    st.tuples(st.just("GetStatus"), st.just(kv_pb2.GetStatusRequest())),
    st.tuples(st.just("GetLoad"), st.builds(kv_pb2.GetLoadRequest, load_id=st.text(_TEXT, max_size=40))),
)


def _mutate(data: bytes, how: int, at: int, junk: bytes) -> bytes:
    at = at % (len(data) + 1)
    if how == 0:
        return data[:at]  # truncated
    if how == 1 and data:
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ (1 << (junk[0] % 8) if junk else 0x80)]) + data[i + 1:]
    if how == 2:
        return data[:at] + junk + data[at:]  # spliced
    if how == 3:
        return junk  # arbitrary bytes
    return data + junk


mutations = st.none() | st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.binary(max_size=12))


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


_BAD_UTF8 = [b"\xff", b"\xc3", b"ok\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]
# Invalid UTF-8 in a string field of every request type, and broken protobuf.
RAW_CASES: list[tuple[str, list[bytes]]] = (
    [(m, [_ld(1, bad)]) for m in ("Put", "Get", "Delete", "BatchGet", "Scan", "Watch", "GetLoad")
     for bad in _BAD_UTF8]
    + [("Get", [_ld(1, b"k") + _ld(2, _ld(3, bad))]) for bad in _BAD_UTF8]  # read_options.min_write_token
    + [("Watch", [_ld(2, bad)]) for bad in _BAD_UTF8]  # prefix
    + [("Scan", [_ld(field, bad)]) for field in (2, 3, 6) for bad in _BAD_UTF8[:2]]
    + [("StreamPut", [_ld(1, _ld(1, b"ok") + _ld(2, b"v")), _ld(1, _ld(1, bad))]) for bad in _BAD_UTF8]
    + [("StreamPut", [_ld(2, bad)]) for bad in _BAD_UTF8[:2]]  # load_id
    + [(m, [junk]) for m in ("Put", "Get", "Delete", "BatchGet", "StreamPut", "Scan", "Watch", "GetStatus", "GetLoad")
       for junk in (b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x08", b"\x0a\x05ab", b"\x07\x00", b"\x00")]
)

# -- the server ----------------------------------------------------------------------


class ServerProcess:
    """`python -m kvgrpc.server` on a free port, its log in a file."""

    def __init__(self, log_path, *args: str, env=None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - the server's stderr, closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=self._log,
            env=dict(os.environ, **FIXED_MMAP_THRESHOLD, **(env or {})))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log())
            if match:
                self.port = int(match.group(1))
                return
            assert self.proc.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


#: glibc's malloc raises its mmap threshold to the size of each large block freed, after
#: which the fuzzer's 1 MiB values come from the heap and fragment it: RSS then grew 30-60 MB
#: over 1,500 examples with or without this session's changes, Python's own allocations
#: flat (tracemalloc). A fixed threshold keeps large blocks in mmap, so the RSS check
#: measures leaks, not the allocator's policy.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}

#: The change hub's ring for the fuzzed server: small, so that the ring filling up with the
#: fuzzed values (the Watch cases start the feed) stays well under RSS_GROWTH_LIMIT_KB and
#: the check sees leaks, not the ring's bounded growth (32 MiB by default).
WATCH_BUFFER = ("--watch-buffer-bytes", str(4 << 20))


def _server(backend, tmp_path, request, table_name) -> ServerProcess:
    log = tmp_path / "server.log"
    if backend == "sqlite":
        return ServerProcess(log, "--sqlite", str(tmp_path / "kv.sqlite3"), "--table", table_name,
                             *WATCH_BUFFER)
    sandbox = request.getfixturevalue("sandbox")
    return ServerProcess(log, "--table", table_name, *WATCH_BUFFER, env={
        "KVGRPC_MYSQL_PASSWORD": sandbox.env["KVGRPC_MYSQL_PASSWORD"],
        "KVGRPC_MASTER_URL": sandbox.env["KVGRPC_MASTER_URL"],
        "KVGRPC_REPLICA_URL": sandbox.env["KVGRPC_REPLICA_URL"]})


# -- the test ------------------------------------------------------------------------


def _describe(parts, mutation) -> str:
    """A short description of what was sent (long runs of one character abbreviated)."""
    text = re.sub(r"(.)\1{15,}", lambda m: f"{m.group(1)}×{len(m.group(0))}", repr(parts))
    return text[:600] + (f" mutated {mutation!r}" if mutation else "")


def _send(channel: grpc.Channel, method: str, payloads: list[bytes]) -> str:
    """Sends raw request bytes; returns the status code's name."""
    path = SERVICE + method
    try:
        if method == "StreamPut":
            channel.stream_unary(path, request_serializer=None, response_deserializer=None)(
                iter(payloads), timeout=10)
        elif method == "Watch":
            for _ in channel.unary_stream(path, request_serializer=None, response_deserializer=None)(
                    payloads[0], timeout=0.3):
                pass
        else:
            channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                payloads[0], timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_fuzzed_requests_never_get_internal_and_touch_no_other_data(backend, tmp_path, request, table_name):
    server = _server(backend, tmp_path, request, table_name)
    target = f"127.0.0.1:{server.port}"
    codes: collections.Counter = collections.Counter()
    failures: list[str] = []
    sent = 0
    try:
        with KeyValueClient(target, timeout=30) as kv:
            canaries = {f"{CANARY}{i}": (f"value {i}".encode(), kv.put(f"{CANARY}{i}", f"value {i}".encode()))
                        for i in range(CANARIES)}
            kv.put(f"{CANARY}0", b"value 0")  # a version above 1 as well
            canaries[f"{CANARY}0"] = (b"value 0", 2)
        channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
        rss_start = server.rss_kb()

        def send(method: str, payloads: list[bytes], what: str) -> None:
            nonlocal sent
            code = _send(channel, method, payloads)
            sent += len(payloads) or 1
            codes[(method, code)] += 1
            if code in FORBIDDEN or (code == "UNIMPLEMENTED" and method != "GetLoad"):
                failures.append(f"{method} {code}: {what}")

        for method, payloads in RAW_CASES:
            send(method, payloads, f"raw {payloads!r}"[:200])

        def fuzz(batch):
            for (method, message), mutation in batch:
                parts = message if isinstance(message, list) else [message]
                payloads = [m.SerializeToString() for m in parts]
                if mutation is not None and payloads:
                    how, at, junk = mutation
                    i = at % len(payloads)
                    payloads[i] = _mutate(payloads[i], how, at, junk)
                send(method, payloads, _describe(parts, mutation))

        def run(examples: int) -> None:
            settings(max_examples=examples, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))(
                given(st.lists(st.tuples(messages, mutations), min_size=1, max_size=6))(fuzz))()

        # A first round warms the server up (pools, binlog readers, allocator arenas); the
        # second, twice as long, must not grow it further.
        started = time.monotonic()
        run(max(1, EXAMPLES // 3))
        rss_warm = server.rss_kb()
        run(EXAMPLES - EXAMPLES // 3)
        elapsed = time.monotonic() - started
        rss_end = server.rss_kb()
        assert server.proc.poll() is None, "the server died:\n" + server.log()[-3000:]
        with KeyValueClient(target, timeout=30) as kv:
            found = {r.key: (r.value, r.version) for r in kv.scan(CANARY, consistency="strong")}
        channel.close()
    finally:
        server.stop()
    log = server.log()
    by_method = collections.defaultdict(dict)
    for (method, code), n in sorted(codes.items()):
        by_method[method][code] = n
    print(f"\n[{backend}] fuzz: {sent} messages in {sum(codes.values())} calls "
          f"({EXAMPLES} examples + {len(RAW_CASES)} raw cases; {elapsed:.1f} s of hypothesis); "
          f"RSS {rss_start} kB, after warm-up {rss_warm} kB, at the end {rss_end} kB; "
          f"server log {len(log.splitlines())} lines")
    for method, counts in by_method.items():
        print(f"  {method}: {counts}")
    assert not failures, "\n".join(failures[:20])
    assert found == canaries
    # GetLoad is the loads branch's: until it lands, grpc logs its UNIMPLEMENTED with a traceback.
    tracebacks = [block for block in log.split("Traceback")[1:] if "GetLoad" not in block]
    assert not tracebacks and "Exception deserializing" not in log, log[-3000:]
    rejected = log.count(" kvgrpc.decoding: ")  # once per method, then at most once a minute
    assert rejected <= len(by_method) * (1 + int(elapsed // 60)), log[-3000:]
    assert rss_end - rss_warm < RSS_GROWTH_LIMIT_KB, (rss_warm, rss_end)
