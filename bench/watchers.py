"""Many Watch calls from one process, counting events cheaply: the benchmark's watcher.

    python bench/watchers.py --target HOST:PORT --watches N [--channels C] [--prefix P]
                             --expect E [--timeout S]

Opens N watches of ``--prefix`` (default "": every key) from now, spread round-robin over C
channels (C separate HTTP/2 connections), on one asyncio loop (grpc.aio), and counts the
events each receives. It uses the raw generated stub and only takes ``len(events)`` of each
response (the upb message is parsed in C; no Python object is built per event), so the
client's CPU stays small next to the server's.

Protocol with the parent (bench/run.py), on stdout, one line each:

- ``ready`` once every watch has its first (``created``) response;
- a JSON object at the end: ``counts`` (events per watch), ``done_at`` (time.monotonic(),
  comparable across processes on Linux, when the last watch had ``--expect`` events),
  ``first_at`` (when the first event arrived), ``responses``, ``resumes`` (streams reopened
  after UNAVAILABLE or a CANCELLED the server sent, from the last revision received; events
  resent are not counted twice), ``server_cancelled`` (how many were CANCELLED;
  ``cancelled_unopened`` of them before the watch's first response, ``cancelled_after_events``
  once it had events), ``error`` (a string, or null).

Exits 0 once every watch has exactly ``--expect`` events, 1 on a timeout or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc

from kvgrpc import kv_pb2, kv_pb2_grpc


async def one_watch(stub, prefix: str, expect: int, created: asyncio.Event, state: dict,
                    index: int) -> None:
    """Counts events until ``expect``; resumes after UNAVAILABLE without double-counting."""
    revision: int | None = None
    beyond = 0  # events counted with a revision above `revision` (a revision cut short)
    count = 0
    while True:
        request = kv_pb2.WatchRequest(prefix=prefix)
        if revision is not None:
            request.start_revision = revision
        skip = beyond
        call = stub.Watch(request)
        try:
            async for response in call:
                n = len(response.events)
                if response.created and not created.is_set():
                    created.set()
                if n:
                    if skip:
                        dropped = min(skip, n)
                        skip -= dropped
                        n -= dropped
                    count += n
                    beyond += n
                    if state["first_at"] is None:
                        state["first_at"] = time.monotonic()
                    state["responses"] += 1
                if revision is None or response.revision > revision:
                    revision = response.revision
                    beyond = 0
                state["counts"][index] = count
                if count >= expect:
                    call.cancel()
                    return
            raise RuntimeError(f"watch {index}: the server ended the stream")
        except grpc.aio.AioRpcError as exc:
            # CANCELLED here comes from the server (this process cancels a call only once it
            # has everything): grpc's server does it to some streams when hundreds open at
            # once, with no kvgrpc code serving too (bench/grpc_cancelled_opens.py). It is
            # counted apart and the watch is reopened as after UNAVAILABLE.
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise RuntimeError(f"watch {index}: {exc.code().name}: {exc.details()} "
                                   f"({exc.debug_error_string()})") from None
            state["resumes"] += 1
            if exc.code() == grpc.StatusCode.CANCELLED:
                state["server_cancelled"] += 1
                if revision is None:
                    state["cancelled_unopened"] += 1
                state["cancelled_after_events"] += 1 if count else 0
            await asyncio.sleep(0.05)


async def run(args) -> int:
    options = [("grpc.max_receive_message_length", -1),
               ("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
    channels = [grpc.aio.insecure_channel(args.target, options=options)
                for _ in range(args.channels)]
    stubs = [kv_pb2_grpc.KeyValueStub(c) for c in channels]
    state = {"counts": [0] * args.watches, "first_at": None, "responses": 0, "resumes": 0,
             "server_cancelled": 0, "cancelled_unopened": 0, "cancelled_after_events": 0}
    created = [asyncio.Event() for _ in range(args.watches)]
    tasks = [asyncio.create_task(one_watch(stubs[i % args.channels], args.prefix, args.expect,
                                           created[i], state, i))
             for i in range(args.watches)]
    error = None
    try:
        ready = asyncio.gather(*(e.wait() for e in created))
        done = asyncio.gather(*tasks)
        waiting = {asyncio.ensure_future(ready), asyncio.ensure_future(done)}
        finished, _ = await asyncio.wait(waiting, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not created_all(created):
            if done in finished or done.done():
                done.result()  # raises the watch's error
            raise RuntimeError("the watches did not open within 60 s")
        print("ready", flush=True)
        await asyncio.wait_for(done, args.timeout)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        error = f"{type(exc).__name__}: {exc}"
    done_at = time.monotonic()
    for t in tasks:
        t.cancel()
    for c in channels:
        await c.close()
    ok = error is None and all(n == args.expect for n in state["counts"])
    print(json.dumps({"counts": state["counts"], "done_at": done_at, "first_at": state["first_at"],
                      "responses": state["responses"], "resumes": state["resumes"],
                      "server_cancelled": state["server_cancelled"],
                      "cancelled_unopened": state["cancelled_unopened"],
                      "cancelled_after_events": state["cancelled_after_events"],
                      "error": error}), flush=True)
    return 0 if ok else 1


def created_all(events: list[asyncio.Event]) -> bool:
    return all(e.is_set() for e in events)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True)
    p.add_argument("--watches", type=int, required=True)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--prefix", default="")
    p.add_argument("--expect", type=int, required=True, help="events each watch must receive")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait once ready")
    args = p.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
