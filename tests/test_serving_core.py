"""The serving core under many clients and hostile ones (issue 9): the shared change hub,
admission before any body read, bounded responses, bounded shutdown, several processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.client import KeyValueClient
from kvgrpc.errors import KvError

KV = "kvgrpc"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binlog_dumps(sandbox) -> int:
    (count,) = sandbox.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE USER = %s AND COMMAND LIKE 'Binlog Dump%%'", (KV,), root=True)[0]
    return count


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _server_env(sandbox) -> dict[str, str]:
    """The environment of a server process on the sandbox: its URLs and password."""
    return sandbox.process_env(KVGRPC_MASTER_URL=sandbox.env["KVGRPC_MASTER_URL"],
                               KVGRPC_REPLICA_URL=sandbox.env["KVGRPC_REPLICA_URL"])


class ServerProcess:
    """`python -m kvgrpc.server` as a child process on a free port."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1",
             "--port", str(self.port), *args],
            stderr=subprocess.PIPE, text=True, env=env or dict(os.environ))
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            if "listening on" in line:
                break
        else:
            raise AssertionError("the server did not start:\n" + "".join(self.log))
        self._drain = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self._drain.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self) -> float:
        """SIGTERM; returns the seconds until the process exited."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return time.monotonic() - began

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server_process():
    started: list[ServerProcess] = []

    def start(*args: str, env: dict | None = None) -> ServerProcess:
        started.append(ServerProcess(*args, env=env))
        return started[-1]

    yield start
    for server in started:
        server.kill()


@pytest.mark.mysql
def test_300_watches_share_one_binlog_reader_and_each_gets_every_event(start_server, sandbox, table_name):
    server = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    before = _binlog_dumps(sandbox)
    channels = [grpc.insecure_channel(server.target) for _ in range(10)]
    stubs = [kv_pb2_grpc.KeyValueStub(c) for c in channels]
    keys = [f"w/{i:05d}" for i in range(20_000)]
    opened = threading.Barrier(301, timeout=60)
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def watch(n: int) -> None:
        call = stubs[n % len(stubs)].Watch(kv_pb2.WatchRequest(prefix="w/"), timeout=120)
        got: list[str] = []
        for response in call:
            if response.created:
                opened.wait()
                continue
            got.extend(e.record.key for e in response.events)
            if len(got) >= len(keys):
                break
        call.cancel()
        with lock:
            results.append((len(got), got == keys))

    threads = [threading.Thread(target=watch, args=(n,)) for n in range(300)]
    for t in threads:
        t.start()
    opened.wait()
    dumps_during = _binlog_dumps(sandbox) - before
    with server.client() as kv:
        assert kv.stream_put((k, b"v") for k in keys) == len(keys)
    for t in threads:
        t.join(120)
    dumps_after = _binlog_dumps(sandbox) - before
    for c in channels:
        c.close()
    assert len(results) == 300
    assert all(ok for _, ok in results), sorted({n for n, _ in results})
    print(f"300 watches: {dumps_during} binlog dump connection(s) on the master during the load")
    assert dumps_during == 1 and dumps_after <= 1  # one binlog reader for all (+1 control link)


def test_admission_holds_under_header_only_streams_and_idle_watches(start_server, tmp_path):
    """200 unauthenticated header-only streams and 500 idle watches: an authenticated Get
    and a health Check still answer within 200 ms."""
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), auth_tokens=("secret",),
                          max_streams_per_client=1000)
    auth = [("authorization", "Bearer secret")]
    hold = threading.Event()

    def never():
        hold.wait(60)
        return
        yield

    anonymous = [grpc.insecure_channel(server.target) for _ in range(20)]
    refused = []
    for i in range(200):
        stub = kv_pb2_grpc.KeyValueStub(anonymous[i % 20])
        refused.append(stub.StreamPut.future(never(), timeout=60))
    idle = [grpc.insecure_channel(server.target) for _ in range(5)]
    watches = []
    for i in range(500):
        stub = kv_pb2_grpc.KeyValueStub(idle[i % 5])
        call = stub.Watch(kv_pb2.WatchRequest(prefix="nobody-writes-here/"), metadata=auth, timeout=60)
        watches.append(call)
    for call in watches[::50]:
        assert next(call).created
    deadline = time.monotonic() + 10
    while server.server.stream_limit.open_streams() < 500:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Every anonymous stream was refused at once, without waiting for a body.
    for future in refused:
        assert future.exception(timeout=5).code() == grpc.StatusCode.UNAUTHENTICATED
    with server.client(token="secret") as kv:
        kv.put("k", b"v")
        health = health_pb2_grpc.HealthStub(idle[0])
        for _ in range(5):
            began = time.monotonic()
            assert kv.get("k") == b"v"
            get_seconds = time.monotonic() - began
            began = time.monotonic()
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            check_seconds = time.monotonic() - began
            assert get_seconds < 0.2 and check_seconds < 0.2, (get_seconds, check_seconds)
        print(f"under 200 refused streams and 500 idle watches: Get {get_seconds * 1000:.1f} ms, "
              f"health Check {check_seconds * 1000:.1f} ms")
    hold.set()
    for call in watches:
        call.cancel()
    for channel in anonymous + idle:
        channel.close()


def test_a_request_that_never_arrives_in_full_is_dropped(start_server, tmp_path):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), request_timeout=0.5,
                          stream_idle_timeout=0.5)
    hold = threading.Event()

    def idle_stream():
        yield kv_pb2.StreamPutRequest(records=[kv_pb2.KeyValuePair(key="first", value=b"1")])
        hold.wait(30)

    with grpc.insecure_channel(server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        with pytest.raises(grpc.RpcError) as idle:
            stub.StreamPut(idle_stream(), timeout=20)
        hold.set()
        assert idle.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "--stream-idle-timeout" in idle.value.details()
        # A unary call whose message never comes (headers only) is dropped as well.
        put = channel.stream_unary("/kvgrpc.v1.KeyValue/Put")
        never = threading.Event()
        with pytest.raises(grpc.RpcError) as headers_only:
            put(iter(lambda: never.wait(30), True), timeout=20)
        never.set()
        assert headers_only.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "--request-timeout" in headers_only.value.details()


@pytest.mark.mysql
def test_huge_scan_and_batch_get_stay_within_the_budget(server_process, sandbox, table_name):
    """250 MiB of values: a Scan asking for 2^62 bytes per page and a BatchGet of all of
    them each get a bounded reply, and the server's memory grows by less than 64 MiB."""
    server = server_process("--table", table_name, env=_server_env(sandbox))
    value = os.urandom(1 << 20)
    keys = [f"big/{i:03d}" for i in range(250)]
    with KeyValueClient(server.target, batch_records=4, batch_bytes=4 << 20) as kv:
        kv.stream_put((k, value) for k in keys)
        peak_before = _rss_kib(server.proc.pid, "VmHWM")
        with grpc.insecure_channel(server.target, options=[("grpc.max_receive_message_length", -1)]) as ch:
            stub = kv_pb2_grpc.KeyValueStub(ch)
            page = stub.Scan(kv_pb2.ScanRequest(prefix="big/", page_size=1000, page_bytes=1 << 62,
                                                read_options=kv_pb2.ReadOptions(consistency=2)),
                             timeout=60)
            assert 1 <= len(page.records) <= 5 and page.next_page_token
            assert page.ByteSize() <= (4 << 20) + (1 << 20) + 4096
            reply = stub.BatchGet(kv_pb2.BatchGetRequest(
                keys=keys, read_options=kv_pb2.ReadOptions(consistency=2)), timeout=60)
            assert 1 <= len(reply.records) <= 5
            assert len(reply.records) + len(reply.unprocessed_keys) == 250
            assert reply.unprocessed_keys[0] == keys[len(reply.records)]
            for _ in range(3):
                stub.Scan(kv_pb2.ScanRequest(prefix="big/", page_size=1000, page_bytes=1 << 62),
                          timeout=60)
                stub.BatchGet(kv_pb2.BatchGetRequest(keys=keys), timeout=60)
        grown = _rss_kib(server.proc.pid, "VmHWM") - peak_before
        print(f"huge Scan and BatchGet: server peak RSS grew by {grown / 1024:.1f} MiB")
        assert grown < 64 * 1024, f"server peak RSS grew by {grown / 1024:.0f} MiB"


@pytest.mark.mysql
def test_sigterm_under_mixed_traffic_exits_within_grace(server_process, sandbox, table_name):
    grace = 3.0
    server = server_process("--table", table_name, "--shutdown-grace", str(grace), env=_server_env(sandbox))
    stop = threading.Event()
    outcomes: list[str] = []

    def unary() -> None:
        with KeyValueClient(server.target, timeout=5) as kv:
            n = 0
            while not stop.is_set():
                try:
                    kv.put(f"m/{n % 50}", b"x")
                    kv.get(f"m/{n % 50}", consistency="strong")
                except KvError as exc:
                    outcomes.append(type(exc).__name__)
                    return
                n += 1

    def stream() -> None:
        def endless():
            n = 0
            while not stop.is_set():
                yield f"s/{n}", b"y" * 100
                n += 1
        with KeyValueClient(server.target) as kv:
            try:
                kv.stream_put(endless())
            except KvError as exc:
                outcomes.append(type(exc).__name__)

    def watch() -> None:
        with KeyValueClient(server.target) as kv:
            try:
                for _ in kv.watch(prefix="", resume=False):
                    if stop.is_set():
                        return
            except KvError as exc:
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=f) for f in [unary] * 4 + [stream] * 2 + [watch] * 4]
    for t in threads:
        t.start()
    time.sleep(2)
    seconds = server.terminate()
    stop.set()
    for t in threads:
        t.join(30)
    assert server.proc.returncode == 0
    print(f"SIGTERM under mixed traffic: exited {seconds:.2f} s after it (grace {grace:g} s); "
          f"clients saw {sorted(set(outcomes))}")
    assert seconds < grace + 5, f"exited {seconds:.1f} s after SIGTERM"
    assert outcomes and set(outcomes) <= {"Unavailable", "Cancelled"}, outcomes


def test_processes_share_the_port_and_stop_together(server_process, tmp_path):
    server = server_process("--processes", "2", "--sqlite", str(tmp_path / "kv.sqlite3"))
    pids = set()
    deadline = time.monotonic() + 20
    while len(pids) < 2:  # each new connection lands on one of the processes
        assert time.monotonic() < deadline, f"calls landed on {pids} only"
        with grpc.insecure_channel(server.target) as channel:
            reply = kv_pb2_grpc.KeyValueStub(channel).GetStatus(kv_pb2.GetStatusRequest(), timeout=5)
            pids.add(reply.server.process_id)
    assert server.proc.pid not in pids
    with KeyValueClient(server.target) as kv:
        kv.put("shared", b"one file, two processes")
        assert kv.get("shared", consistency="strong") == b"one file, two processes"
    assert server.terminate() < 10
    assert server.proc.returncode == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_listening_beyond_loopback_needs_tls_and_tokens_or_an_explicit_flag(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "kvgrpc.server", "--port", str(_free_port()),
             "--sqlite", str(tmp_path / "kv.sqlite3"), *args],
            capture_output=True, text=True, timeout=30)

    refused = run("--host", "0.0.0.0")
    assert refused.returncode == 2
    assert "refusing to start" in refused.stderr and "--allow-insecure-public" in refused.stderr


def test_100_cli_processes_stream_csv_files_to_a_default_server(server_process, tmp_path):
    """The original scenario: many client processes on one host, each loading a file."""
    server = server_process("--sqlite", str(tmp_path / "kv.sqlite3"))
    files = []
    for p in range(100):
        path = tmp_path / f"records{p}.csv"
        path.write_text("key,value\n" + "".join(f"p{p}/{i},v{i}\n" for i in range(5000)))
        files.append(path)
    procs = [subprocess.Popen([sys.executable, "-m", "kvgrpc.client", "--target", server.target,
                               "stream", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for path in files]
    failures = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            failures.append(err.strip().splitlines()[-3:] if err else out)
    assert not failures, failures[:5]
    with KeyValueClient(server.target) as kv:
        stored = sum(1 for _ in kv.scan("p", keys_only=True, page_size=1000))
    assert stored == 100 * 5000


def test_a_slow_watcher_falls_behind_resumes_from_history_and_loses_nothing(any_server, start_server, tmp_path):
    """A watcher that reads slower than the writes come is ended (it never holds up the
    feed or makes the server buffer without bound), then caught up from history by the
    client's resume: every event once, in order."""
    config = any_server.config
    server = start_server(sqlite_path=config.sqlite_path, master=config.master,
                          replicas=config.replicas, table=config.table,
                          watch_buffer_bytes=64 << 10)
    keys = [f"slow/{i:05d}" for i in range(20_000)]
    got: list[str] = []
    with server.client() as kv, server.client() as writer:
        kv.put("slow/-start", b"")

        def write() -> None:  # 20 transactions of 1000 records, 1 KB each: 20 MB
            for n in range(20):
                writer.stream_put((k, b"x" * 1000) for k in keys[n * 1000:(n + 1) * 1000])

        with kv.watch(prefix="slow/", start_revision=kv.last_revision - 1) as watch:
            thread = threading.Thread(target=write)
            for event in watch:
                if event.key == "slow/-start":
                    thread.start()
                    time.sleep(3)  # meanwhile the feed runs far past the 64 KiB buffer
                    continue
                got.append(event.key)
                if len(got) == len(keys):
                    break
            thread.join()
    assert got == keys
    assert server.server.hub.fell_behind >= 1


def test_concurrent_writes_share_transactions_and_keep_their_semantics(any_server):
    """Group commit: 16 callers at once; compare-and-set increments of shared counters
    never lose an update, each Put gets its own version, deletes see the writes before."""
    from kvgrpc.errors import FailedPrecondition

    successes: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with any_server.client() as kv:
            for i in range(40):
                key = f"counter/{i % 4}"
                while True:
                    try:
                        record = kv.get_record(key, consistency="strong")
                        current, version = int(record.value), record.version
                    except KvError as exc:
                        if type(exc).__name__ != "NotFound":
                            raise
                        current, version = 0, 0
                    try:
                        new_version = kv.put(key, str(current + 1), expected_version=version)
                    except FailedPrecondition:
                        continue
                    with lock:
                        successes.append((key, new_version))
                    break
                kv.put(f"own/{n}/{i}", b"x")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with any_server.client() as kv:
        for c in range(4):
            record = kv.get_record(f"counter/{c}", consistency="strong")
            assert int(record.value) == record.version == 16 * 10
        versions = sorted(v for k, v in successes if k == "counter/0")
        assert versions == list(range(1, 161))  # each success got its own version
        assert kv.get_record("own/3/7", consistency="strong").version == 1
    assert any_server.server.servicer.writes.groups > 0  # concurrency did form groups


def test_a_second_server_on_a_taken_port_fails_to_start_clearly(server_process, tmp_path):
    first = server_process("--sqlite", str(tmp_path / "one.sqlite3"))
    second = subprocess.run(
        [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--port", str(first.port),
         "--sqlite", str(tmp_path / "two.sqlite3")], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert "cannot listen on 127.0.0.1" in second.stderr and "Traceback" not in second.stderr


def test_the_change_feed_stops_when_no_one_watches_and_starts_again(any_server):
    """An idle server does not keep reading and decoding the binlog for watches long gone."""
    hub = any_server.server.hub
    hub.feed_linger = 0.5
    with any_server.client() as kv:
        for round_ in range(2):
            kv.put(f"linger{round_}/k", b"v")
            with kv.watch(prefix=f"linger{round_}/", start_revision=kv.last_revision - 1) as watch:
                assert next(iter(watch)).key == f"linger{round_}/k"
                assert hub.running
            deadline = time.monotonic() + 10
            while hub.running or (hub._thread is not None and hub._thread.is_alive()):
                assert time.monotonic() < deadline, "the feed kept running with no watch"
                time.sleep(0.05)
