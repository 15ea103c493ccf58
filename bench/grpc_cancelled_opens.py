"""gRPC's own CANCELLED when hundreds of streams open at once, with no kvgrpc code serving.

    .venv/bin/python bench/grpc_cancelled_opens.py [--server aio|threads] [--processes 4]
                                                   [--watches 500] [--channels 2]

The fan-out benchmark sees some Watch calls end with CANCELLED before their first response
when thousands open at once (``cancelled_unopened`` in its output); bench/watchers.py and
both client libraries reopen them. This script shows that it is not kvgrpc's server: it
serves ``kvgrpc.v1.KeyValue/Watch`` from a bare grpc server (``grpc.aio`` or the
thread-pool server) whose handler only sends the ``created`` response, waits, sends one
event and waits again, and runs ``--processes`` copies of bench/watchers.py against it,
each opening ``--watches`` watches over ``--channels`` connections. It prints each
watcher's count of CANCELLED opens. Seen on this machine kind: 0 to ~190 of 500 per
process, with either server (the status carries no details: "CANCELLED").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kvgrpc import kv_pb2, kv_pb2_grpc  # noqa: E402

HOLD = 10.0  # seconds between the created response and the event: every watch opens first
EVENT = kv_pb2.WatchResponse(revision=2, events=[kv_pb2.Event(
    type=kv_pb2.EVENT_TYPE_PUT, revision=2, record=kv_pb2.Record(key="x", value=b"1", version=1))])


class _Threads(kv_pb2_grpc.KeyValueServicer):
    def Watch(self, request, context):
        yield kv_pb2.WatchResponse(created=True, revision=1)
        time.sleep(HOLD)
        yield EVENT
        time.sleep(HOLD)


class _Aio(kv_pb2_grpc.KeyValueServicer):
    async def Watch(self, request, context):
        yield kv_pb2.WatchResponse(created=True, revision=1)
        await asyncio.sleep(HOLD)
        yield EVENT
        await asyncio.sleep(HOLD)


def serve(kind: str, watches: int, ready) -> None:
    options = [("grpc.max_concurrent_streams", 1024)]
    if kind == "threads":
        server = grpc.server(futures.ThreadPoolExecutor(watches + 16), options=options)
        kv_pb2_grpc.add_KeyValueServicer_to_server(_Threads(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        ready(port)
        server.wait_for_termination()
    else:
        async def main() -> None:
            server = grpc.aio.server(options=options)
            kv_pb2_grpc.add_KeyValueServicer_to_server(_Aio(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            ready(port)
            await server.wait_for_termination()
        asyncio.run(main())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", choices=("aio", "threads"), default="aio")
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--watches", type=int, default=500, help="per process")
    p.add_argument("--channels", type=int, default=2, help="connections per process")
    p.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:  # the server child: print the port, then serve
        serve(args.server, args.watches * args.serve,
              lambda port: print(port, flush=True))
        return 0
    server = subprocess.Popen([sys.executable, __file__, "--server", args.server, "--watches",
                               str(args.watches), "--serve", str(args.processes)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        watchers = [subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("watchers.py")), "--target",
             f"127.0.0.1:{port}", "--watches", str(args.watches), "--channels",
             str(args.channels), "--expect", "1", "--timeout", str(HOLD * 3)],
            stdout=subprocess.PIPE, text=True) for _ in range(args.processes)]
        total = 0
        for i, w in enumerate(watchers):
            out, _ = w.communicate(timeout=HOLD * 6)
            result = json.loads(out.strip().splitlines()[-1])
            total += result["cancelled_unopened"]
            print(f"watcher process {i}: {result['cancelled_unopened']} of {args.watches} opens "
                  f"CANCELLED before their first response; all {args.watches} then got their "
                  f"event: {result['error'] is None and set(result['counts']) == {1}}")
        print(f"{args.server} server, no kvgrpc code: {total} of {args.processes * args.watches} "
              "opens CANCELLED")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
