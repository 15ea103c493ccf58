"""Coalescing: concurrent calls share one database round trip.

A durable commit on the master costs a redo-log and a binlog fsync and, with semi-sync,
a replica's acknowledgement (~684 µs measured on this machine kind), whether it carries
one row or fifty; a point SELECT costs a round trip whether it reads one key or fifty.
And on the server each handoff from the event loop to a worker thread costs ~130 µs of
CPU (``bench/floors.py``). :class:`Coalescer` lets concurrent calls share all three, the
way databases group their own commits: calls queue on the event loop, and one group at
a time runs everything queued so far (one worker handoff, one transaction or SELECT).
Calls that arrive while a group runs form the next group. Nothing waits for a timer: a
call alone runs alone, and groups grow only with the concurrency that is already there.

Each caller is answered only after its own group ran, with its own result; the ops of a
group keep their arrival order, so per-key order and compare-and-set semantics are those
of running them one after another. No gRPC, no SQL: the transport supplies the group
runner (:meth:`kvgrpc.service.KeyValueService.run_writes` or ``get_group`` on its worker
pool).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Op = TypeVar("Op")
Result = TypeVar("Result")


class Coalescer(Generic[Op, Result]):
    """Runs ``run_group(ops)`` (awaitable; per op, in order, its result or the error to
    raise to its caller) over the ops of concurrent :meth:`submit` calls, at most
    ``max_group`` ops and ``max_weight`` of their ``weight`` (e.g. bytes) per group (a
    group holds at least one op), one group at a time (two at a time measured slower on
    this machine: smaller groups, and CPU, not the commit, was the limit). Used on one
    event loop (no locks).

    A caller that is cancelled while it waits stops waiting; its op still runs if its
    group has started (a write may then commit, as a call cut off by the network may).
    """

    def __init__(self, run_group: Callable[[list[Op]], Awaitable[Sequence[Result | BaseException]]], *,
                 max_group: int = 64, max_weight: int = 1 << 20,
                 weight: Callable[[Op], int] = lambda op: 1) -> None:
        self._run_group = run_group
        self._max_group = max_group
        self._max_weight = max_weight
        self._weight = weight
        self._queue: collections.deque[tuple[Op, asyncio.Future]] = collections.deque()
        self._running: asyncio.Task | None = None  # the group in flight
        self._starting = False  # a group starts on the loop's next turn
        self.groups = 0  # groups of two or more ops run, and the ops in them (kvgrpc.metrics)
        self.grouped_ops = 0

    async def submit(self, op: Op) -> Result:
        """Runs ``op`` in a group with the concurrent ones; returns its result or raises."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        """Starts a group on the loop's next turn (the calls arriving meanwhile join it)
        if ops are queued and no group runs."""
        if self._queue and not self._starting and self._running is None:
            self._starting = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._starting = False
        group = self._take()
        if group:
            self._running = asyncio.ensure_future(self._run(group))
            self._running.add_done_callback(self._finished)
        self._schedule()

    def _finished(self, task: asyncio.Task) -> None:
        self._running = None
        if task.cancelled():  # the loop is closing: nobody runs the rest
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            return
        self._schedule()

    async def _run(self, group: list[tuple[Op, asyncio.Future]]) -> None:
        if len(group) > 1:
            self.groups += 1
            self.grouped_ops += len(group)
        try:
            results: Sequence[Result | BaseException] = await self._run_group([op for op, _ in group])
        except Exception as exc:  # noqa: BLE001 - handed to the group's callers
            results = [exc] * len(group)
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        for (_, future), result in zip(group, results):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _take(self) -> list[tuple[Op, asyncio.Future]]:
        """The next group: the oldest queued ops within the size and weight limits, but
        not those whose caller has gone (cancelled before its op started: not run)."""
        group: list[tuple[Op, asyncio.Future]] = []
        weight = 0
        while self._queue and len(group) < self._max_group:
            op, future = self._queue[0]
            if future.done():
                self._queue.popleft()
                continue
            weight += self._weight(op)
            if group and weight > self._max_weight:
                break
            group.append(self._queue.popleft())
        return group
