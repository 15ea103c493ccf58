"""kvgrpc benchmark suite: kvgrpc against its floors, measured side by side in one run.

    .venv/bin/python bench/run.py [--size small|full] [--repeat N] [--out DIR]
    bench/run.sh ...            (the same, after bootstrapping .venv with the `bench` extra)

It starts everything itself: a MariaDB master + GTID replica (scripts/mysql-sandbox.sh, in a
temporary directory, on free ports below 32768; `down --purge` at the end, also on failure)
and one `python -m kvgrpc.server` subprocess on that pair (default flags; ready once a
grpc.health.v1 Check says SERVING). Data: 14-byte keys, 100-byte values, generated on disk.

What is measured (each benchmark --repeat times; median (min-max) reported):

1. Ingest of a CSV (full 1,000,000 records, small 20,000) into an empty table, timed until
   the replica holds every row (MASTER_GTID_WAIT on the replica for the master's
   @@gtid_binlog_pos): `LOAD DATA LOCAL INFILE` over one mysql-connector connection (opened
   before the clock starts) vs `python -m kvgrpc.client stream FILE` as a subprocess (clock
   from just before the spawn, so its interpreter start-up counts). Ratio = kvgrpc records/s
   / LOAD DATA records/s of the same repeat; target >= 0.75. The same again as a named
   load (bench/named_load.py: the client library's stream_put with a load_id, its
   progress recorded in every batch's transaction), against the same target.
2. Unary calls for a fixed time (full 5 s, small 0.5 s) from 1, 8 and 32 threads that share
   ONE channel (one KeyValueClient; the health stub has its own shared channel): the floor,
   grpc.health.v1 Check on the same server; Get (eventual, keys that exist); Put (new keys,
   committed before the reply). Ratio = calls/s / health calls/s in the same setting and
   repeat; targets Get >= 0.8 (1 thread), >= 0.6 (8 and 32); Put >= 0.5 (1 thread), >= 0.45
   (8), >= 0.6 (32). (Before the ingest and unary groups the benchmark waits until the
   server's change feed has stopped: it runs on for 30 s after the watches of the group
   before have ended.)
   `--processes 1` vs `--processes 2`: the run's server against a second one on the same
   databases started with `--processes 2` (only while this runs), health Check / Get / Put
   from 8 and 32 threads on raw stubs over 8 connections spread evenly over the server's
   processes (SO_REUSEPORT puts each connection on one process; GetStatus says which), the
   two servers alternating; no target (2 shared cores), both reported with their ratio.
3. BatchGet of 100 existing keys, 1 and 8 threads on the shared channel: keys/s; target
   >= 50,000 keys/s.
4. Baseline without kvgrpc: point SELECT of the same rows on the replica with
   mysql-connector (C extension), 1 connection, then 4 threads with a connection each: rows/s.
5. Watch: (a) the ingest of 1. again with watchers of every key open on the server: 1, then
   10 (INGEST_WATCHERS), in a watcher process (bench/watchers.py: grpc.aio, raw stub, events
   counted per response, so the client stays light), each of which must receive every
   record; targets >= 0.75 and >= 0.5 LOAD DATA; and again with an in-process watcher of a
   prefix no record has (the cost of reading and filtering the binlog alone; it wakes once a
   second to report progress). Timed until the replica holds every record, as in 1.; the
   watchers' own time to receive them all is reported apart, and their CPU as the "watcher"
   column; the other processes' CPU is measured until the watchers have everything.
   (b) Latency: Puts one after another (full 500, small 50), each awaited by a watcher of
   its prefix: how long after the Put returned, and after it was sent, the event arrives
   (median and 99th percentile). (c) Fan-out: full 2,000 watches of every key (8 watcher
   processes x 250, each over 4 connections; small 2 x 20), then a load of 100,000 records
   (small 2,000) through `kvgrpc.client stream`: every watch must count every event; delivery
   time from just before the load's spawn until the last watch has everything; the server's
   RSS (before, peak, end); its master connections (information_schema.PROCESSLIST, user
   kvgrpc, traced to the server's sockets through /proc; 'Binlog Dump' threads apart) before
   and at most during the run.
6. Memory: `kvgrpc.client stream` of a large CSV (full 10,000,000 records, small 200,000)
   while the client's and the server's RSS is sampled from /proc/PID/statm every 0.2 s.
   Reported: start (the sample at 10% of the run, after start-up), peak and end (last
   sample) in MB. Target: flat (peak - start <= 10 MB) and peak < 150 MB, for each.
7. CPU per item for each process: client, server, master, replica. Server and mariadbd:
   utime+stime deltas from /proc/PID/stat around the timed window (all their threads,
   background work included: the server's 100 ms heartbeat, InnoDB's threads). Client: for
   a CLI subprocess, os.wait4's rusage of that process (exact, its start-up included); for
   in-process clients (unary calls, LOAD DATA, SELECT), getrusage(RUSAGE_SELF) of this
   benchmark process over the window: the calling threads and gRPC's C-core threads (the
   main thread only waits meanwhile). µs per record (ingest), per call (unary), per key
   (BatchGet), per row (SELECT).

Output: a plain-text table on stdout; bench-SIZE.json and bench-SIZE.png in --out
(default bench/out/). `--only GROUP,...` runs some groups only (ingest, latency, unary,
processes, select, fanout, memory). The soak is a separate script: bench/soak.py.
"""

from __future__ import annotations

# mysql-connector-python's C extension fails to load once ssl/hashlib are imported (grpc
# imports them): load it before anything else (DEVELOPERS.md).
import _mysql_connector  # noqa: F401  isort: skip

import argparse
import contextlib
import itertools
import json
import os
import platform
import queue
import random
import resource
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import mysql.connector
from grpc_health.v1 import health_pb2, health_pb2_grpc

import harness
import report
from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.client import KeyValueClient
from kvgrpc.watch import FEED_LINGER_SECONDS

KV_TABLE = "bench_kv"  # the server's table
LOAD_TABLE = "bench_load"  # LOAD DATA's table
BATCH_KEYS = 100
THREADS = 8
SELECT_THREADS = 4
WARMUP_CALLS = 20


@dataclass(frozen=True)
class Size:
    records: int  # ingest CSV; also the rows read by Get, BatchGet and SELECT
    memory_records: int  # the memory run's CSV
    seconds: float  # each unary / SELECT measurement
    repeat: int  # default --repeat
    latency_samples: int  # Puts awaited by a watcher
    fanout_records: int  # the fan-out load
    fanout_processes: int  # watcher processes of the fan-out run ...
    fanout_watches: int  # ... each with this many watches of every key ...
    fanout_channels: int  # ... over this many connections


SIZES = {
    "small": Size(records=20_000, memory_records=200_000, seconds=0.5, repeat=1, latency_samples=50,
                  fanout_records=2_000, fanout_processes=2, fanout_watches=20, fanout_channels=2),
    "full": Size(records=1_000_000, memory_records=10_000_000, seconds=5.0, repeat=3,
                 latency_samples=500, fanout_records=100_000, fanout_processes=8,
                 fanout_watches=250, fanout_channels=4),
}
CONCURRENCY = (1, 8, 32)  # callers of the unary benchmarks (threads sharing one channel)
PROCESS_CONCURRENCY = (8, 32)  # callers of the --processes 1 vs 2 comparison
PROCESS_CHANNELS = 8  # its connections, spread evenly over the server processes
INGEST_WATCHERS = 10  # the second watched ingest: this many watchers of every key


@dataclass
class Run:
    """One timed measurement: ``items`` (records, calls, keys or rows) in ``seconds``."""

    items: int
    seconds: float
    cpu: dict[str, float]  # CPU seconds in the window: client, server, master, replica
    calls: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    size_name: str
    size: Size
    repeat: int
    workdir: Path
    sandbox: harness.Sandbox
    server: harness.KvServer
    ingest_csv: Path
    memory_csv: Path
    fanout_csv: Path
    second_port: int  # the --processes 2 server's
    results: dict[str, list[Run]] = field(default_factory=dict)

    def record(self, name: str, run: Run) -> None:
        self.results.setdefault(name, []).append(run)
        print(f"  {name}: {run.items:,} in {run.seconds:.2f} s "
              f"({run.items / run.seconds:,.0f}/s)", file=sys.stderr, flush=True)

    def meter(self, in_process_client: bool) -> harness.CpuMeter:
        pids = {"server": self.server.pid, "master": self.sandbox.pid("master"),
                "replica": self.sandbox.pid("replica")}
        return harness.CpuMeter({"client": None, **pids} if in_process_client else pids)


# --------------------------------------------------------------------------------------
# 1. Ingest
# --------------------------------------------------------------------------------------


def ingest_load_data(ctx: Context) -> Run:
    """LOAD DATA LOCAL INFILE into an empty table, until the replica has applied it."""
    ctx.sandbox.empty_table(LOAD_TABLE)
    cnx = ctx.sandbox.loader(ctx.ingest_csv)
    meter = ctx.meter(in_process_client=True)
    try:
        meter.start()
        started = time.perf_counter()
        harness.load_data(cnx, LOAD_TABLE, ctx.ingest_csv)
        ctx.sandbox.wait_replica()
        seconds = time.perf_counter() - started
        cpu = meter.stop()
    finally:
        cnx.close()
    check_rows(ctx, LOAD_TABLE, ctx.size.records)
    return Run(ctx.size.records, seconds, cpu)


def ingest_stream(ctx: Context) -> Run:
    """`python -m kvgrpc.client stream FILE` into an empty table, until the replica has it."""
    ctx.sandbox.empty_table(KV_TABLE)
    meter = ctx.meter(in_process_client=False)
    meter.start()
    started = time.perf_counter()
    client = harness.run_client(ctx.server.target, ["stream", str(ctx.ingest_csv)], ctx.workdir)
    ctx.sandbox.wait_replica()
    seconds = time.perf_counter() - started
    cpu = {**meter.stop(), "client": client.cpu}
    check_rows(ctx, KV_TABLE, ctx.size.records)
    return Run(ctx.size.records, seconds, cpu,
               extra={"client_summary": client.summary, "client_seconds": client.seconds})


def ingest_stream_named(ctx: Context) -> Run:
    """`ingest_stream` as one named load (bench/named_load.py, a subprocess like the CLI)."""
    ctx.sandbox.empty_table(KV_TABLE)
    meter = ctx.meter(in_process_client=False)
    meter.start()
    started = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve().parent / "named_load.py"),
               ctx.server.target, str(ctx.ingest_csv)]
    client = harness.run_client(ctx.server.target, [], ctx.workdir, command=command)
    ctx.sandbox.wait_replica()
    seconds = time.perf_counter() - started
    cpu = {**meter.stop(), "client": client.cpu}
    check_rows(ctx, KV_TABLE, ctx.size.records)
    return Run(ctx.size.records, seconds, cpu,
               extra={"client_summary": client.summary, "client_seconds": client.seconds})


def ingest_stream_watched(ctx: Context, kv: KeyValueClient, prefix: str = "") -> Run:
    """`ingest_stream` with a watcher open on the server meanwhile: of every key (it must
    receive every record), or of a ``prefix`` no record has (the cost of the feed alone;
    done when the watch reports it has passed the last write)."""
    ctx.sandbox.empty_table(KV_TABLE)
    expected = ctx.size.records if not prefix else 0
    watch = kv.watch(prefix=prefix)
    received = [0]
    finished = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in watch:
                received[0] += 1
                if received[0] >= expected:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
        finally:
            finished.set()

    threading.Thread(target=consume, daemon=True).start()
    wait_for(lambda: watch.revision is not None or finished.is_set(), "the watch to open")
    meter = ctx.meter(in_process_client=False)
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    meter.start()
    started = time.perf_counter()
    client = harness.run_client(ctx.server.target, ["stream", str(ctx.ingest_csv)], ctx.workdir)
    ctx.sandbox.wait_replica()
    seconds = time.perf_counter() - started
    if prefix:  # nothing to receive: done once the watch has passed the last write
        last = ctx.sandbox.head_revision()
        wait_for(lambda: (watch.revision or 0) >= last or finished.is_set(), "the watch", 60)
    else:
        finished.wait(600)
    watcher_seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = {**meter.stop(), "client": client.cpu,
           "watcher": after.ru_utime + after.ru_stime - rusage.ru_utime - rusage.ru_stime}
    watch.cancel()
    if failure or received[0] != expected:
        raise RuntimeError(f"the watcher received {received[0]:,} of {expected:,} records: {failure}")
    check_rows(ctx, KV_TABLE, ctx.size.records)
    return Run(ctx.size.records, seconds, cpu, extra={"watcher_seconds": watcher_seconds,
                                              "client_summary": client.summary})


def ingest_stream_watchers(ctx: Context, watches: int) -> Run:
    """`ingest_stream` with ``watches`` watchers of every key open meanwhile, in one watcher
    process (bench/watchers.py: raw stub, events counted per response), each of which must
    receive every record. Timed until the replica holds every record, as `ingest_stream`;
    the watchers' own time to have everything is reported apart ("watcher_seconds"), their
    CPU as the "watcher" column; the other processes' CPU runs until they have it all."""
    ctx.sandbox.empty_table(KV_TABLE)
    watchers = harness.WatcherProcesses(ctx.server.target, 1, watches, min(watches, 2),
                                        ctx.size.records, ctx.workdir)
    watchers.start()
    try:
        meter = ctx.meter(in_process_client=False)
        meter.start()
        started, started_mono = time.perf_counter(), time.monotonic()
        client = harness.run_client(ctx.server.target, ["stream", str(ctx.ingest_csv)], ctx.workdir)
        ctx.sandbox.wait_replica()
        seconds = time.perf_counter() - started
        results = watchers.wait()
    finally:
        watchers.kill()
    cpu = {**meter.stop(), "client": client.cpu, "watcher": sum(r.cpu for r in results)}
    check_rows(ctx, KV_TABLE, ctx.size.records)
    return Run(ctx.size.records, seconds, cpu, extra={
        "watches": watches, "watcher_seconds": max(r.done_at for r in results) - started_mono,
        "resumes": sum(r.resumes for r in results),
        "server_cancelled": sum(r.server_cancelled for r in results), "client_summary": client.summary})


def fanout(ctx: Context) -> Run:
    """Many watches of every key on one server (``fanout_processes`` watcher processes x
    ``fanout_watches``, over ``fanout_channels`` connections each), then a load of
    ``fanout_records`` through `kvgrpc.client stream`. Items = events delivered (each watch
    must count every record); seconds = from just before the load's spawn until the last
    watch has everything. Meanwhile the server's RSS is sampled (0.2 s) and its master
    connections counted (information_schema.PROCESSLIST, user kvgrpc, traced to the
    server's sockets; every 0.5 s)."""
    size = ctx.size
    ctx.sandbox.empty_table(KV_TABLE)
    server_ports = lambda: harness.tcp_local_ports(ctx.server.pids())  # noqa: E731
    before = ctx.sandbox.connections("master", server_ports())
    watchers = harness.WatcherProcesses(ctx.server.target, size.fanout_processes,
                                        size.fanout_watches, size.fanout_channels,
                                        size.fanout_records, ctx.workdir)
    census: list[dict[str, int]] = []
    stop = threading.Event()

    def count_connections() -> None:
        cnx = ctx.sandbox.connect("master")
        try:
            while True:
                census.append(harness.connection_census(cnx, server_ports()))
                if stop.wait(0.5):
                    return
        finally:
            cnx.close()

    counter = threading.Thread(target=count_connections, name="connection-census", daemon=True)
    try:
        with harness.RssSampler({"server": ctx.server.pid}) as rss:
            opening = time.perf_counter()
            watchers.start(timeout=300)
            opened_seconds = time.perf_counter() - opening
            counter.start()
            meter = ctx.meter(in_process_client=False)
            meter.start()
            started, started_mono = time.perf_counter(), time.monotonic()
            client = harness.run_client(ctx.server.target, ["stream", str(ctx.fanout_csv)],
                                        ctx.workdir)
            ctx.sandbox.wait_replica()
            load_seconds = time.perf_counter() - started
            results = watchers.wait()
            cpu = {**meter.stop(), "client": client.cpu, "watcher": sum(r.cpu for r in results)}
    finally:
        stop.set()
        watchers.kill()
        if counter.is_alive():
            counter.join()
    check_rows(ctx, KV_TABLE, size.fanout_records)
    watches = size.fanout_processes * size.fanout_watches
    delivered = sum(sum(r.counts) for r in results)
    if delivered != watches * size.fanout_records:
        raise RuntimeError(f"fan-out delivered {delivered:,} events, expected "
                           f"{watches * size.fanout_records:,}")
    seconds = max(r.done_at for r in results) - started_mono
    server_rss = rss.samples["server"]
    return Run(delivered, seconds, cpu, extra={
        "watches": watches, "records": size.fanout_records, "load_seconds": load_seconds,
        "open_seconds": opened_seconds, "resumes": sum(r.resumes for r in results),
        "server_cancelled": sum(r.server_cancelled for r in results),
        "cancelled_unopened": sum(r.cancelled_unopened for r in results),
        "cancelled_after_events": sum(r.cancelled_after_events for r in results),
        "rss_before_mb": server_rss[0][1] if server_rss else None,
        "rss_peak_mb": max((mb for _, mb in server_rss), default=None),
        "rss_end_mb": server_rss[-1][1] if server_rss else None,
        "master_connections_before": before, "census_samples": len(census),
        "master_connections_max": {k: max(c[k] for c in census) for k in census[0]} if census else {},
    })


def watch_latency(ctx: Context, kv: KeyValueClient, repeat_index: int) -> Run:
    """Puts one at a time, each awaited by a watcher of their prefix on the same server."""
    prefix = f"lat{repeat_index}/"
    arrivals: queue.Queue = queue.Queue()
    watch = kv.watch(prefix=prefix)

    def consume() -> None:
        with contextlib.suppress(Exception):
            for event in watch:
                arrivals.put((time.perf_counter(), event.key))

    threading.Thread(target=consume, daemon=True).start()
    wait_for(lambda: watch.revision is not None, "the watch to open")
    put_ms, after_reply_ms, since_request_ms = [], [], []
    meter = ctx.meter(in_process_client=True)
    meter.start()
    started = time.perf_counter()
    for i in range(ctx.size.latency_samples):
        key = f"{prefix}{i}"
        sent = time.perf_counter()
        kv.put(key, b"x")
        replied = time.perf_counter()
        arrived, got = arrivals.get(timeout=30)
        if got != key:
            raise RuntimeError(f"the watcher got {got!r}, expected {key!r}")
        put_ms.append((replied - sent) * 1e3)
        after_reply_ms.append((arrived - replied) * 1e3)
        since_request_ms.append((arrived - sent) * 1e3)
    seconds = time.perf_counter() - started
    cpu = meter.stop()
    watch.cancel()
    n = ctx.size.latency_samples
    return Run(n, seconds, cpu, calls=n, extra={
        "put_ms": put_ms, "after_reply_ms": after_reply_ms, "since_request_ms": since_request_ms})


def wait_feed_stopped(ctx: Context) -> None:
    """Waits until the server's change feed has stopped (it runs on for
    ``kvgrpc.watch.FEED_LINGER_SECONDS`` after the last watch ends, decoding every write's
    binlog): the unwatched benchmarks measure a server without watches, not one still
    paying for the watches of the benchmark before."""
    cnx = ctx.sandbox.connect("master")
    try:
        wait_for(lambda: harness.connection_census(
            cnx, harness.tcp_local_ports(ctx.server.pids()))["held_binlog_dump"] == 0,
            "the server's change feed to stop", FEED_LINGER_SECONDS + 30)
    finally:
        cnx.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def check_rows(ctx: Context, table: str, expected: int) -> None:
    found = ctx.sandbox.count(table, "replica")
    if found != expected:
        raise RuntimeError(f"replica table {table} holds {found:,} rows, expected {expected:,}")


# --------------------------------------------------------------------------------------
# 2.-4. Calls for a fixed time, from N threads
# --------------------------------------------------------------------------------------

# An operation is a factory: given a thread's index it returns that thread's call, a
# function that makes one call and returns how many items it handled (1, or the keys a
# BatchGet returned). The factory runs on the thread itself, before the clock starts.
Operation = Callable[[int], Callable[[], int]]


def run_for(op: Operation, threads: int, seconds: float, meter: harness.CpuMeter,
            expect: int = 1) -> Run:
    """Runs ``op`` on ``threads`` threads for ``seconds`` after a warm-up of WARMUP_CALLS
    calls each (whose results must be ``expect`` items); returns items, calls, CPU."""
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    deadline = [0.0]
    calls = [0] * threads
    items = [0] * threads
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            call = op(index)
            for _ in range(WARMUP_CALLS):
                if (got := call()) != expect:
                    raise RuntimeError(f"warm-up call returned {got} items, expected {expect}")
            ready.wait()
            go.wait()
            while time.perf_counter() < deadline[0]:
                items[index] += call()
                calls[index] += 1
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            errors.append(exc)
            ready.abort()

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    meter.start()
    started = time.perf_counter()
    if not errors:  # else the deadline stays 0: a thread still waiting for `go` ends at once
        deadline[0] = started + seconds
    go.set()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    elapsed = time.perf_counter() - started
    return Run(sum(items), elapsed, meter.stop(), calls=sum(calls))


def random_keys(records: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [harness.key_of(rng.randrange(records)) for _ in range(count)]


def health_op(stub: health_pb2_grpc.HealthStub) -> Operation:
    def for_thread(index: int) -> Callable[[], int]:
        def call() -> int:
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            return 1
        return call
    return for_thread


def get_op(kv: KeyValueClient, records: int) -> Operation:
    def for_thread(index: int) -> Callable[[], int]:
        keys = itertools.cycle(random_keys(records, 5000, seed=index))

        def call() -> int:
            kv.get(next(keys))  # NotFound would fail the benchmark: every key exists
            return 1
        return call
    return for_thread


def put_op(kv: KeyValueClient, repeat_index: int) -> Operation:
    value = os.urandom(75).hex()[:100].encode()  # 100 bytes

    def for_thread(index: int) -> Callable[[], int]:
        numbers = itertools.count()

        def call() -> int:
            kv.put(f"p{repeat_index:02d}{index:02d}{next(numbers):09d}", value)  # 14-byte new keys
            return 1
        return call
    return for_thread


def batch_get_op(kv: KeyValueClient, records: int) -> Operation:
    def for_thread(index: int) -> Callable[[], int]:
        rng = random.Random(1000 + index)
        batches = itertools.cycle([[harness.key_of(i) for i in rng.sample(range(records), BATCH_KEYS)]
                                   for _ in range(200)])

        def call() -> int:
            return len(kv.batch_get(next(batches)))
        return call
    return for_thread


def select_op(sandbox: harness.Sandbox, records: int, opened: list) -> Operation:
    """A point SELECT on the replica, the query the server's Get runs, one connection per thread."""
    sql = f"SELECT v, version FROM `{KV_TABLE}` WHERE k = %s"

    def for_thread(index: int) -> Callable[[], int]:
        cnx = sandbox.connect("replica")
        opened.append(cnx)
        cur = cnx.cursor()
        keys = itertools.cycle([k.encode() for k in random_keys(records, 5000, seed=index)])

        def call() -> int:
            cur.execute(sql, (next(keys),))
            return len(cur.fetchall())
        return call
    return for_thread


def unary_suite(ctx: Context, kv: KeyValueClient, health: health_pb2_grpc.HealthStub,
                repeat_index: int) -> None:
    """Health (the floor), Get, Put at 1, 8 and 32 callers, BatchGet at 1 and 8; back to back."""
    records, seconds = ctx.size.records, ctx.size.seconds
    for threads in CONCURRENCY:
        ops = [("health Check", health_op(health), 1), ("Get", get_op(kv, records), 1),
               ("Put", put_op(kv, repeat_index), 1)]
        if threads <= THREADS:
            ops.append((f"BatchGet({BATCH_KEYS})", batch_get_op(kv, records), BATCH_KEYS))
        for name, op, expect in ops:
            run = run_for(op, threads, seconds, ctx.meter(in_process_client=True), expect)
            ctx.record(f"{name} x{threads}", run)


def balanced_channels(target: str, count: int, processes: int) -> list[grpc.Channel]:
    """``count`` channels, each its own connection, spread evenly over the ``processes``
    server processes behind ``target`` (SO_REUSEPORT hashes each connection to one of them:
    GetStatus says which answered; connections that would unbalance them are closed)."""
    per_process = count // processes
    kept: dict[int, list[grpc.Channel]] = {}
    for _ in range(count * 20):
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        pid = kv_pb2_grpc.KeyValueStub(channel).GetStatus(kv_pb2.GetStatusRequest(),
                                                          timeout=30).server.process_id
        if len(kept.setdefault(pid, [])) < per_process:
            kept[pid].append(channel)
        else:
            channel.close()
        if len(kept) == processes and all(len(c) == per_process for c in kept.values()):
            return [c for cs in zip(*kept.values()) for c in cs]
    for cs in kept.values():
        for c in cs:
            c.close()
    raise RuntimeError(f"could not spread {count} connections over {processes} server processes "
                       f"(got {[len(c) for c in kept.values()]})")


def raw_ops(channels: list[grpc.Channel], records: int, tag: str) -> list[tuple[str, Operation]]:
    """Health Check, Get and Put on raw stubs; thread i uses channel i % len(channels)."""
    value = os.urandom(75).hex()[:100].encode()

    def health(index: int) -> Callable[[], int]:
        stub = health_pb2_grpc.HealthStub(channels[index % len(channels)])
        request = health_pb2.HealthCheckRequest(service="")
        return lambda: (stub.Check(request, timeout=30), 1)[1]

    def get(index: int) -> Callable[[], int]:
        stub = kv_pb2_grpc.KeyValueStub(channels[index % len(channels)])
        keys = itertools.cycle(random_keys(records, 5000, seed=index))
        return lambda: (stub.Get(kv_pb2.GetRequest(key=next(keys)), timeout=30), 1)[1]

    def put(index: int) -> Callable[[], int]:
        stub = kv_pb2_grpc.KeyValueStub(channels[index % len(channels)])
        numbers = itertools.count()
        return lambda: (stub.Put(kv_pb2.PutRequest(key=f"{tag}{index:02d}{next(numbers):09d}",
                                                   value=value), timeout=30), 1)[1]

    return [("health Check", health), ("Get", get), ("Put", put)]


def processes_suite(ctx: Context, repeat_index: int) -> None:
    """The server of the run (--processes 1) against a second one on the same databases
    started with --processes 2, both reached over PROCESS_CHANNELS connections (spread
    evenly over the processes), health Check / Get / Put at PROCESS_CONCURRENCY callers,
    alternating between the two servers. The second server runs only meanwhile."""
    second = harness.KvServer(ctx.second_port, ctx.sandbox.url("master"), ctx.sandbox.url("replica"),
                              KV_TABLE, ctx.workdir / "server-2p.log", ("--processes", "2"))
    second.start()
    channels: dict[int, list[grpc.Channel]] = {}
    try:
        wait_for(lambda: len(second.pids()) >= 3, "the --processes 2 server's children")
        channels[1] = balanced_channels(ctx.server.target, PROCESS_CHANNELS, 1)
        channels[2] = balanced_channels(second.target, PROCESS_CHANNELS, 2)
        servers = {1: ctx.server, 2: second}
        for threads in PROCESS_CONCURRENCY:
            for processes in (1, 2):
                tag = f"q{repeat_index}{processes}{threads:02d}"[:5]
                for name, op in raw_ops(channels[processes], ctx.size.records, tag):
                    meter = harness.CpuMeter({"client": None, "server": servers[processes].pid,
                                              "master": ctx.sandbox.pid("master"),
                                              "replica": ctx.sandbox.pid("replica")})
                    run = run_for(op, threads, ctx.size.seconds, meter)
                    ctx.record(f"{processes} process{'es' if processes > 1 else ''}: "
                               f"{name} x{threads}", run)
    finally:
        for cs in channels.values():
            for c in cs:
                c.close()
        second.stop()


def select_suite(ctx: Context) -> None:
    for threads in (1, SELECT_THREADS):
        opened: list = []
        try:
            run = run_for(select_op(ctx.sandbox, ctx.size.records, opened), threads,
                          ctx.size.seconds, ctx.meter(in_process_client=True))
        finally:
            for cnx in opened:
                cnx.close()
        ctx.record(f"SELECT replica x{threads}", run)


# --------------------------------------------------------------------------------------
# 5. Memory
# --------------------------------------------------------------------------------------


def memory_stream(ctx: Context) -> Run:
    """Streams the large CSV while sampling the client's and the server's RSS."""
    ctx.sandbox.empty_table(KV_TABLE)
    samplers: list[harness.RssSampler] = []

    def sample(client_pid: int) -> harness.RssSampler:
        samplers.append(harness.RssSampler({"client": client_pid, "server": ctx.server.pid}))
        return samplers[-1]

    meter = ctx.meter(in_process_client=False)
    meter.start()
    client = harness.run_client(ctx.server.target, ["stream", str(ctx.memory_csv)], ctx.workdir,
                                on_start=sample)
    cpu = {**meter.stop(), "client": client.cpu}
    committed = int(client.summary.split()[0])
    if committed != ctx.size.memory_records:
        raise RuntimeError(f"memory run committed {committed:,} of {ctx.size.memory_records:,}")
    return Run(committed, client.seconds, cpu, extra={
        "rss_samples": samplers[0].samples, "client_summary": client.summary})


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------


GROUPS = ("ingest", "latency", "unary", "processes", "select", "fanout", "memory")


def run_benchmarks(ctx: Context, only: set[str]) -> None:
    """Every benchmark of the groups in ``only``, each repeat in turn; the memory runs last.
    (Get and BatchGet read the rows the ingest group wrote: without it, it is run once,
    untimed, to write them.)"""
    target = ctx.server.target
    with KeyValueClient(target) as kv, grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", -1)]) as health_channel:
        health = health_pb2_grpc.HealthStub(health_channel)
        for i in range(ctx.repeat):
            print(f"repeat {i + 1}/{ctx.repeat}", file=sys.stderr, flush=True)
            if "ingest" in only:
                wait_feed_stopped(ctx)  # the last repeat's watches: their feed lingers
                ctx.record("ingest LOAD DATA", ingest_load_data(ctx))
                ctx.record("ingest kvgrpc stream", ingest_stream(ctx))
                ctx.record("ingest kvgrpc stream, named load", ingest_stream_named(ctx))
                ctx.record("ingest kvgrpc stream + watcher", ingest_stream_watchers(ctx, 1))
                ctx.record(f"ingest kvgrpc stream + {INGEST_WATCHERS} watchers",
                           ingest_stream_watchers(ctx, INGEST_WATCHERS))
                ctx.record("ingest kvgrpc stream + idle watcher",
                           ingest_stream_watched(ctx, kv, prefix="no-such-prefix/"))
            elif only & {"unary", "processes", "select"}:
                ingest_stream(ctx)  # the rows Get, BatchGet and SELECT read
            if "latency" in only:
                ctx.record("watch latency", watch_latency(ctx, kv, i))
            if "unary" in only:
                wait_feed_stopped(ctx)
                unary_suite(ctx, kv, health, i)
            if "processes" in only:
                processes_suite(ctx, i)
            if "select" in only:
                select_suite(ctx)
            if "fanout" in only:
                ctx.record("fanout watch", fanout(ctx))
        for i in range(ctx.repeat if "memory" in only else 0):
            print(f"memory run {i + 1}/{ctx.repeat}", file=sys.stderr, flush=True)
            ctx.record("memory stream", memory_stream(ctx))


def size_watches(size: Size) -> int:
    return size.fanout_processes * size.fanout_watches


def environment(ctx: Context) -> dict:
    probe = ctx.sandbox.connect("replica")  # CMySQLConnection when the C extension runs
    connection_class = type(probe).__name__
    probe.close()
    return {
        "size": {"name": ctx.size_name, **asdict(ctx.size)}, "repeat": ctx.repeat,
        "cpus": os.cpu_count(), "python": platform.python_version(), "grpc": grpc.__version__,
        "mariadb": ctx.sandbox.version(),
        "bench_driver": f"mysql-connector-python {mysql.connector.__version__}, "
                        f"{'C extension' if mysql.connector.HAVE_CEXT else 'pure Python'} "
                        f"({connection_class})",
        "server_driver": ctx.server.driver(),
        "server_command": " ".join(ctx.server.command[1:]),
        "unary_channel": f"one shared channel for all {'/'.join(map(str, CONCURRENCY))} threads "
                         "(one KeyValueClient; health: one shared grpc channel)",
        "processes_channels": f"{PROCESS_CHANNELS} connections spread evenly over the server's "
                              "processes, raw stubs, thread i on connection i % "
                              f"{PROCESS_CHANNELS}",
        "fanout": f"{size_watches(ctx.size)} watches of every key in {ctx.size.fanout_processes} "
                  f"processes ({ctx.size.fanout_watches} each over {ctx.size.fanout_channels} "
                  f"connections), {ctx.size.fanout_records:,}-record load",
        "select_connections": f"one connection per thread ({SELECT_THREADS} threads)",
        "put_durability": "sandbox: innodb_flush_log_at_trx_commit=1, sync_binlog=1, "
                          "semi-synchronous replication on (server without --require-semi-sync)",
    }


def start_and_run(args, size: Size, workdir: Path) -> dict:
    """Data, sandbox, server; the benchmarks; everything stopped again whatever happens."""
    ingest_csv, memory_csv = workdir / "ingest.csv", workdir / "memory.csv"
    fanout_csv = workdir / "fanout.csv"
    print(f"writing {size.records:,} + {size.memory_records:,} + {size.fanout_records:,} "
          "records of CSV", file=sys.stderr)
    harness.write_csv(ingest_csv, size.records, seed=1)
    if "memory" in args.only.split(","):
        harness.write_csv(memory_csv, size.memory_records, seed=2)
    harness.write_csv(fanout_csv, size.fanout_records, seed=3)
    port = harness.free_ports(4)  # master, replica, kvgrpc server, the --processes 2 server
    sandbox = harness.Sandbox(workdir / "sandbox", port)
    server: harness.KvServer | None = None
    try:
        print("starting the MariaDB sandbox pair and the kvgrpc server", file=sys.stderr, flush=True)
        sandbox.up()
        server = harness.KvServer(port + 2, sandbox.url("master"), sandbox.url("replica"),
                                  KV_TABLE, workdir / "server.log")
        server.start()
        ctx = Context(args.size, size, args.repeat, workdir, sandbox, server, ingest_csv, memory_csv,
                      fanout_csv, port + 3)
        started = time.perf_counter()
        run_benchmarks(ctx, set(args.only.split(",")))
        env = environment(ctx) | {"benchmark_seconds": round(time.perf_counter() - started, 1)}
        return {"environment": env,
                "runs": {name: [asdict(r) for r in runs] for name, runs in ctx.results.items()}}
    except Exception:
        if server is not None and server.proc is not None:
            print(f"server log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        sandbox.down()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--repeat", type=int, default=None,
                   help="repeats of each benchmark (default: 3 full, 1 small)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--only", default=",".join(GROUPS), metavar="GROUP,...",
                   help=f"run only these groups of benchmarks: {', '.join(GROUPS)} (default: all)")
    args = p.parse_args()
    if unknown := set(args.only.split(",")) - set(GROUPS):
        p.error(f"unknown --only group(s): {', '.join(sorted(unknown))}")
    size = SIZES[args.size]
    args.repeat = size.repeat if args.repeat is None else args.repeat
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    # SIGTERM unwinds like Ctrl-C, so the server and the sandbox are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="kvgrpc-bench-") as tmp:
        raw = start_and_run(args, size, Path(tmp))
    summary = report.summarise(raw)
    print(report.table(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"bench-{args.size}.json"
    json_path.write_text(json.dumps(summary | {"runs": raw["runs"]}, indent=1) + "\n")
    png_path = report.chart(summary, raw["runs"], args.out / f"bench-{args.size}.png")
    print(f"\nwritten: {json_path}\n         {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
