"""Where Get's and Put's time goes: the ceilings under their ratios to a no-op RPC.

    .venv/bin/python bench/floors.py [--seconds 4]

Issue 4 asks for Get >= 0.8x and Put >= 0.5x (1 thread) / 0.75x (8 threads) a no-op RPC
on the same server. A Get must wait for one SELECT on the replica and a Put for one
durable (fsynced, semi-sync-acknowledged) commit on the master, which the no-op does not.
This script measures, in one process and one run, from 1 and from 8 client threads on one
channel, the same call shape with less and less kvgrpc in it:

1. the health Check of a kvgrpc server (the bench's floor);
2. a bare grpc server (same process, no interceptors) whose handler does nothing;
3. the bare server, its handler blocking 107 us (a SELECT's round trip, without I/O);
4. the bare server, its handler running the raw SELECT on the replica (mysql-connector, C
   extension, a connection per handler thread): a Get with zero overhead of its own;
5. kvgrpc's Get;
6. the bare server, its handler running the raw upsert on the master (autocommit): a Put
   with zero overhead of its own;
7. kvgrpc's Put.

floor/4 and floor/6 are the best ratios a Get and a Put can reach here; 4 -> 5 and 6 -> 7
are what kvgrpc adds. The client, the servers and the MariaDB pair share the cores, as in
bench/run.py.
"""

from __future__ import annotations

import _mysql_connector  # noqa: F401  isort: skip  (before ssl; DEVELOPERS.md)

import argparse
import itertools
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import mysql.connector
from grpc_health.v1 import health_pb2, health_pb2_grpc

import harness
from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.client import KeyValueClient
from kvgrpc.server import ServerConfig, build_server
from kvgrpc.store import MySQLEndpoint

TABLE = "floors"
VALUE = b"x" * 100


class _Bare(kv_pb2_grpc.KeyValueServicer):
    """Get: sleeps (key "sleep") or runs the raw SELECT on the replica; Put: the raw upsert
    on the master; Delete: nothing. One connection per handler thread and endpoint."""

    def __init__(self, master: MySQLEndpoint, replica: MySQLEndpoint) -> None:
        self._endpoints = {"master": master, "replica": replica}
        self._local = threading.local()

    def _cursor(self, role: str):
        cursor = getattr(self._local, role, None)
        if cursor is None:
            e = self._endpoints[role]
            cnx = mysql.connector.connect(host=e.host, port=e.port, user=e.user, password=e.password,
                                          database=e.database, autocommit=True)
            cursor = cnx.cursor(buffered=True)
            cursor.connection_kept = cnx  # the cursor only holds a weak reference to it
            setattr(self._local, role, cursor)
        return cursor

    def Get(self, request, context):
        if request.key == "sleep":
            time.sleep(107e-6)
            return kv_pb2.GetResponse(record=kv_pb2.Record(key=request.key, value=VALUE, version=1))
        cursor = self._cursor("replica")
        cursor.execute(f"SELECT v, version FROM `{TABLE}` WHERE k = %s", (request.key.encode(),))
        value, version = cursor.fetchone()
        return kv_pb2.GetResponse(record=kv_pb2.Record(key=request.key, value=bytes(value), version=version))

    def Put(self, request, context):
        cursor = self._cursor("master")
        cursor.execute(f"INSERT INTO `{TABLE}` (k, v) VALUES (%s, %s) "
                       "ON DUPLICATE KEY UPDATE v = VALUES(v), version = version + 1",
                       (request.key.encode(), request.value))
        return kv_pb2.PutResponse(version=1)

    def Delete(self, request, context):
        return kv_pb2.DeleteResponse()


def per_call_us(make_call, threads: int, seconds: float) -> float:
    """Wall µs per call with ``threads`` threads calling ``make_call(thread)()`` in a loop."""
    calls = [make_call(t) for t in range(threads)]
    for call in calls:
        for _ in range(100):
            call()
    counts = [0] * threads
    stop = threading.Event()

    def loop(t: int) -> None:
        while not stop.is_set():
            calls[t]()
            counts[t] += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return (time.perf_counter() - started) / sum(counts) * 1e6


def measure(sandbox: harness.Sandbox, seconds: float, threads: int) -> list[tuple[str, float]]:
    master = MySQLEndpoint.from_url(sandbox.url("master"))
    replica = MySQLEndpoint.from_url(sandbox.url("replica"))
    server = build_server(ServerConfig(host="127.0.0.1", port=0, master=master,
                                       replicas=(replica,), table=TABLE))
    server.start()
    bare = grpc.server(futures.ThreadPoolExecutor(32))
    kv_pb2_grpc.add_KeyValueServicer_to_server(_Bare(master, replica), bare)
    bare_port = bare.add_insecure_port("127.0.0.1:0")
    bare.start()
    keys = itertools.count()
    try:
        with KeyValueClient(f"127.0.0.1:{server.port}") as kv, \
                grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, \
                grpc.insecure_channel(f"127.0.0.1:{bare_port}") as bare_channel:
            kv.put("k", VALUE)
            sandbox.wait_replica()
            health = health_pb2_grpc.HealthStub(channel)
            stub = kv_pb2_grpc.KeyValueStub(bare_channel)

            def new_key() -> str:
                return f"new{next(keys)}"

            return [
                ("kvgrpc server: health Check (the floor)", per_call_us(
                    lambda t: lambda: health.Check(health_pb2.HealthCheckRequest()), threads, seconds)),
                ("bare grpc server: no-op handler", per_call_us(
                    lambda t: lambda: stub.Delete(kv_pb2.DeleteRequest(key="k")), threads, seconds)),
                ("bare grpc server: handler sleeps 107 us", per_call_us(
                    lambda t: lambda: stub.Get(kv_pb2.GetRequest(key="sleep")), threads, seconds)),
                ("bare grpc server: raw SELECT on the replica", per_call_us(
                    lambda t: lambda: stub.Get(kv_pb2.GetRequest(key="k")), threads, seconds)),
                ("kvgrpc server: Get", per_call_us(lambda t: lambda: kv.get("k"), threads, seconds)),
                ("bare grpc server: raw upsert on the master", per_call_us(
                    lambda t: lambda: stub.Put(kv_pb2.PutRequest(key=new_key(), value=VALUE)),
                    threads, seconds)),
                ("kvgrpc server: Put", per_call_us(
                    lambda t: lambda: kv.put(new_key(), VALUE), threads, seconds)),
            ]
    finally:
        bare.stop(0)
        server.stop(0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvgrpc-floors-") as tmp:
        sandbox = harness.Sandbox(Path(tmp) / "sandbox", harness.free_ports(2))
        try:
            sandbox.up()
            results = {threads: measure(sandbox, args.seconds, threads) for threads in (1, 8)}
        finally:
            sandbox.down()
    for threads, rows in results.items():
        floor = rows[0][1]
        print(f"\n{threads} client thread{'s' if threads > 1 else ''}, one channel"
              f"{'':<{36 - len(str(threads))}} {'us/call':>8} {'calls/s':>9} {'this/floor':>11}")
        for name, us in rows:
            print(f"{name:<48} {us:8.0f} {1e6 / us:9,.0f} {floor / us:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
