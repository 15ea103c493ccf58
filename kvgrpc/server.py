"""The gRPC transport: ``python -m kvgrpc.server --port 1313``.

The server runs on ``grpc.aio``: an open Watch or StreamPut is a coroutine waiting on
the network, not a thread, so thousands cost little. Blocking work (the database
drivers) runs on one bounded thread pool (``--max-workers``). Measured on this machine
kind with a no-op handler, ``grpc.aio`` serves 1,793 calls/s sequentially and 3,571 from
8 threads against the thread-pool server's 1,864 and 4,207 (README, "Why grpc.aio"): a
small price for streams that pin no thread.

Each method has the same beats: admit the call (:class:`_Admission`: token, limits),
read its request (bounded in time), call the domain service (:mod:`kvgrpc.service`) or
the change hub (:mod:`kvgrpc.watch`), build the reply. Errors become a status in one
place, :meth:`_Servicer._fail`, through the table in :mod:`kvgrpc.errors`.

Every method is registered with a streaming request at the wire level (a unary call's
bytes are the same), so the server sees each call when its headers arrive: a call
without a valid token is refused before its body is read, and a request that does not
arrive in full within ``--request-timeout`` is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kvgrpc  # noqa: F401 - loads the MySQL C extension before grpc imports ssl
from kvgrpc.extras import exit_unless_server_extra

exit_unless_server_extra(__name__)  # a one-line hint, not a traceback, without the [server] extra

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_health.v1._async import HealthServicer  # noqa: E402
from grpc_reflection.v1alpha import reflection  # noqa: E402

from kvgrpc import kv_pb2
from kvgrpc.auth import Authenticator, check_key_pair, load_tokens, server_credentials, ssl_reason
from kvgrpc.coalesce import Coalescer
from kvgrpc.deadlines import call_deadline
from kvgrpc.decoding import Oversized, Undecodable, deserializer, undecodable_error
from kvgrpc.errors import (
    COMMITTED_METADATA_KEY,
    CURRENT_VERSION_METADATA_KEY,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    KvError,
    ResourceExhausted,
    status_name,
)
from kvgrpc.logs import RateLimitedLog
from kvgrpc.records import MAX_KEY_BYTES, EndpointStatus, Limits
from kvgrpc.routing import EVENTUAL, Consistency, ReadOptions, ReadRouter
from kvgrpc.service import DEFAULT_LOAD_RETENTION, KeyValueService, ScanPage
from kvgrpc.store import MySQLEndpoint, MySQLStore, SQLiteStore, Store, mysql_driver
from kvgrpc.store.base import WriteOp
from kvgrpc.watch import ChangeHub, WatchBatch

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = kv_pb2.DESCRIPTOR.services_by_name["KeyValue"].full_name
VERSION = "0.2.0"
#: After draining, how long the server keeps connections open so clients read their status.
DRAIN_LINGER_SECONDS = 0.5
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]", "::1")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; built once by :func:`main` (or by a test)."""

    host: str = "localhost"
    port: int = 1313
    sqlite_path: str = "kvgrpc.sqlite3"
    master: MySQLEndpoint | None = None
    replicas: Sequence[MySQLEndpoint] = field(default_factory=tuple)
    table: str = "kv"
    pool_size: int = 8
    pool_timeout: float = 5.0
    limits: Limits = Limits()
    max_workers: int = 32  # threads that run blocking database calls
    max_concurrent_rpcs: int = 256  # unary calls in progress; more get RESOURCE_EXHAUSTED
    max_streams: int = 256  # open StreamPuts, server-wide
    max_streams_per_client: int = 32  # open StreamPuts + Watches per validated token
    max_watches: int = 4096  # open Watches, server-wide
    max_streams_per_connection: int = 1024  # HTTP/2 concurrent streams per connection
    request_timeout: float = 10.0  # a request message must arrive in full within this
    stream_idle_timeout: float = 60.0  # a StreamPut silent this long is ended
    watch_buffer_bytes: int = 32 << 20  # the change hub's ring (its memory, measured per change)
    max_catchup_watches: int = 4  # watches reading history at once (2 master connections each)
    shutdown_grace: float = 30.0
    load_retention: float = DEFAULT_LOAD_RETENTION  # seconds a load's progress is kept
    max_replica_lag: float = 5.0
    monitor_interval: float = 0.1
    # The master and the replicas are one candidate set: writes go to the node that is
    # writable and replicates from nobody, found again after a promotion (see routing).
    follow_topology: bool = False
    watch_feed_retry: float = 10.0  # seconds the change hub keeps reopening a broken feed
    require_semi_sync: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # set: clients must present a certificate it signed
    auth_tokens: Sequence[str] = field(default_factory=tuple, repr=False)
    allow_insecure_public: bool = False  # listen beyond loopback without TLS + tokens
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = field(default=None, repr=False)  # required by /metrics when set
    keepalive_time: float = 60.0  # seconds between pings on an idle connection
    keepalive_timeout: float = 20.0  # seconds to wait for the ping's answer
    reuse_port: bool = False  # SO_REUSEPORT: several processes share the port (--processes)
    event_loop: str = "uvloop"  # or "asyncio" (the standard library's)

    @property
    def max_value_bytes(self) -> int:
        return self.limits.max_value_bytes


# --------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------


#: How much larger than ``--max-message-bytes`` grpc itself lets a request message be
#: (etcd's "grpc overhead" likewise): a message up to that much over the limit reaches
#: kvgrpc, which refuses it with an error naming the flag (a StreamPut then says how many
#: of its records are committed); one larger still is refused by grpc, in its own words.
RECEIVE_SLACK_BYTES = 512 << 10


class _MessageTooLarge(ResourceExhausted):
    """A request message over --max-message-bytes (a StreamPut commits the records before it)."""


def _message_parser(cls, max_bytes: int | None = None) -> Callable[[bytes], Any]:
    """The request deserializer: never raises (grpcio would answer INTERNAL and log a
    traceback per call); bytes that are not a ``cls`` become an :class:`Undecodable`, more
    than ``max_bytes`` an :class:`Oversized`."""
    return deserializer(cls.FromString, cls.DESCRIPTOR.full_name, max_bytes)


def _serialize(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _watch_response(batch: WatchBatch) -> bytes:
    """A Watch response's bytes, made once per batch (watchers of one filter share it)."""
    if batch.wire is not None:
        return batch.wire  # type: ignore[return-value]
    response = kv_pb2.WatchResponse(created=batch.created, revision=batch.revision)
    add = response.events.add
    put, delete = kv_pb2.EVENT_TYPE_PUT, kv_pb2.EVENT_TYPE_DELETE
    for event in batch.events:
        record = add(type=delete if event.deleted else put, revision=event.revision).record
        record.key, record.value, record.version = event.key, event.value, event.version
    batch.wire = data = response.SerializeToString()
    return data


def _record_pb(record) -> kv_pb2.Record:
    return kv_pb2.Record(key=record.key, value=record.value, version=record.version)


_CONSISTENCY = {
    kv_pb2.READ_CONSISTENCY_UNSPECIFIED: Consistency.EVENTUAL,
    kv_pb2.READ_CONSISTENCY_EVENTUAL: Consistency.EVENTUAL,
    kv_pb2.READ_CONSISTENCY_STRONG: Consistency.STRONG,
    kv_pb2.READ_CONSISTENCY_BOUNDED_STALENESS: Consistency.BOUNDED_STALENESS,
}

_ROLE = {
    "master": kv_pb2.ENDPOINT_ROLE_MASTER,
    "replica": kv_pb2.ENDPOINT_ROLE_REPLICA,
    "embedded": kv_pb2.ENDPOINT_ROLE_EMBEDDED,
}


def _group_deadline(deadlines) -> float | None:
    """A coalesced group's deadline: the latest of its calls' (None if one has none). A
    call whose deadline comes sooner is ended by gRPC at its own deadline; the group runs
    on for the others (the earliest made one short-deadline call fail all the others)."""
    latest = 0.0
    for d in deadlines:
        if d is None:
            return None
        latest = max(latest, d)
    return latest


def _read_options(message: kv_pb2.ReadOptions) -> ReadOptions:
    consistency = _CONSISTENCY.get(message.consistency)
    if consistency is None:
        raise InvalidArgument(f"read_options.consistency {message.consistency} is not a known value")
    return ReadOptions(consistency, message.max_staleness_ms / 1000.0, message.min_write_token)


def _endpoint_pb(status: EndpointStatus) -> kv_pb2.EndpointStatus:
    return kv_pb2.EndpointStatus(
        name=status.name, role=_ROLE[status.role], reachable=status.reachable,
        healthy=status.healthy, lag_ms=-1 if status.lag_ms is None else status.lag_ms,
        pool_in_use=status.pool_in_use, pool_size=status.pool_size,
        semi_sync_active=status.semi_sync_active, problem=status.problem,
    )


def _limits_pb(limits: Limits) -> kv_pb2.ServerLimits:
    return kv_pb2.ServerLimits(
        max_key_bytes=limits.max_key_bytes, max_value_bytes=limits.max_value_bytes,
        max_receive_message_bytes=limits.max_receive_message_bytes,
        max_send_message_bytes=limits.max_send_message_bytes,
        max_batch_get_keys=limits.max_batch_get_keys,
        max_batch_get_bytes=limits.max_batch_get_bytes,
        max_scan_page_size=limits.max_scan_page_size,
        max_scan_page_bytes=limits.max_scan_page_bytes,
    )


# --------------------------------------------------------------------------------------
# Admission
# --------------------------------------------------------------------------------------


class _Admission:
    """Who may call, and how many calls of each kind may be open. Used on the event loop
    only (no lock needed).

    Server-wide caps: unary calls in progress, open StreamPuts, open Watches; per client
    (a validated token, never a header as sent): open StreamPuts + Watches. Each refusal
    is RESOURCE_EXHAUSTED naming the limit and its flag.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.auth = Authenticator(config.auth_tokens)
        self.open = {"unary": 0, "stream": 0, "watch": 0}
        self.per_client: dict[str, int] = {}

    def open_streams(self) -> int:
        """Open StreamPuts and Watches, all clients together."""
        return self.open["stream"] + self.open["watch"]

    @contextlib.contextmanager
    def admit(self, context, kind: str):
        """Admits one call of ``kind`` ("unary", "stream", "watch") for the ``with`` block;
        raises Unauthenticated or ResourceExhausted."""
        identity = self.auth.identify(context.invocation_metadata()) if self.auth.enabled else None
        c = self.config
        cap, flag, what = {
            "unary": (c.max_concurrent_rpcs, "--max-concurrent-rpcs", "calls in progress"),
            "stream": (c.max_streams, "--max-streams", "StreamPut calls open"),
            "watch": (c.max_watches, "--max-watches", "watches open"),
        }[kind]
        if self.open[kind] >= cap:
            raise ResourceExhausted(
                f"the server has {cap} {what}, its limit ({flag}); retry later")
        if kind != "unary" and identity is not None:
            if self.per_client.get(identity, 0) >= c.max_streams_per_client:
                raise ResourceExhausted(
                    f"this client already has {c.max_streams_per_client} streams open, the "
                    "limit per client (--max-streams-per-client); wait for one to finish")
            self.per_client[identity] = self.per_client.get(identity, 0) + 1
        self.open[kind] += 1
        try:
            yield identity
        finally:
            self.open[kind] -= 1
            if kind != "unary" and identity is not None:
                left = self.per_client[identity] - 1
                if left:
                    self.per_client[identity] = left
                else:
                    del self.per_client[identity]


class _ReadTimeouts:
    """Ends calls whose request has not arrived in full in time, without a timer per call
    (``asyncio.wait_for`` costs a task and a timer: ~25 µs of CPU per call, measured): a
    sweep every ``period`` seconds cancels the tasks waiting past their limit, which then
    raise DeadlineExceeded. Used on the event loop only."""

    def __init__(self, period: float = 0.25) -> None:
        self._period = period
        self._waiting: dict[asyncio.Task, float] = {}  # task -> time.monotonic() limit
        self._expired: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    async def read(self, requests: AsyncIterator, timeout: float, what: str, flag: str):
        """The next message of ``requests`` (None at the end), within ``timeout`` seconds."""
        task = asyncio.current_task()
        assert task is not None
        self._waiting[task] = time.monotonic() + timeout
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        try:
            return await requests.__anext__()
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise DeadlineExceeded(f"no complete {what} arrived within {timeout:g} s ({flag})") from None
        finally:
            self._waiting.pop(task, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            now = time.monotonic()
            for task, limit in list(self._waiting.items()):
                if limit <= now:
                    del self._waiting[task]
                    self._expired.add(task)
                    task.cancel()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()


class _GrpcLogFilter(logging.Filter):
    """Keeps grpc from logging, at ERROR and with a traceback, what any client can cause:

    - a metadata value that is not UTF-8: grpc logs the value (which can be a bearer
      token) twice per call, then decodes it as Latin-1 and the call goes on (a token so
      mangled is refused as UNAUTHENTICATED);
    - a reply that could not be sent because the call had already ended (its deadline
      passed, or its client left, while the handler finished): grpc logs
      "ExecuteBatchError raised in core" for it, unless it saw the client go first.

    This filter drops those records; instead one line, without the value, says such calls
    came, at most once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._log = RateLimitedLog(logging.getLogger("kvgrpc.decoding"))

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        if record.msg.startswith("Invalid encoding on"):
            self._log.warning("metadata", "a call carried a metadata value that is not UTF-8 "
                              "(not shown; decoded as Latin-1)")
            return False
        if record.msg.startswith("ExecuteBatchError raised in core"):
            self._log.log(logging.INFO, "ended", "a reply was not sent: its call had ended "
                          "(the deadline passed or the client left) as the server answered")
            return False
        return True


_GRPC_LOGGER = logging.getLogger("grpc._cython.cygrpc")
if not any(isinstance(f, _GrpcLogFilter) for f in _GRPC_LOGGER.filters):
    _GRPC_LOGGER.addFilter(_GrpcLogFilter())


# --------------------------------------------------------------------------------------
# Servicer
# --------------------------------------------------------------------------------------


class _Servicer:
    """The ``kvgrpc.v1.KeyValue`` methods over a :class:`KeyValueService`, on the event loop."""

    def __init__(self, server: KeyValueServer) -> None:
        self._server = server
        self._service = server.service
        self._config = server.config
        self._admission = server.admission
        self._metrics = server.metrics
        # One line per method when the first undecodable request comes, then one a minute.
        self._decode_log = RateLimitedLog(logging.getLogger("kvgrpc.decoding"))
        self._max_request = self._config.limits.max_receive_message_bytes
        # Concurrent Puts/Deletes share a transaction, concurrent Gets a SELECT, and each
        # group one handoff to the worker pool (kvgrpc.coalesce).
        self.writes: Coalescer[tuple[WriteOp, float | None], Any] = Coalescer(
            self._write_group, max_group=64, max_weight=1 << 20,
            weight=lambda op: len(op[0].key) + len(op[0].value or b"") + 64)
        self.reads: Coalescer[tuple[str, bytes, ReadOptions, float | None], Any] = Coalescer(
            self._read_group, max_group=64)

    # -- helpers -----------------------------------------------------------------------

    async def _blocking(self, fn: Callable, *args, deadline: float | None = None):
        """Runs a blocking call on the worker pool, with the call's deadline current there.

        A call that waits for a free worker for ``--pool-timeout``, or half the time its
        deadline leaves, is refused with RESOURCE_EXHAUSTED before it starts, so an
        overloaded server answers in time instead of letting the caller's deadline expire.
        (One timer and the executor's own cancel, which succeeds only for work not yet
        started: ``asyncio.wait`` with a timeout cost ~50 µs of CPU more per call.)
        """
        def run():
            with call_deadline(deadline):
                return fn(*args)

        # Queue for at most --pool-timeout, and half the time left: the other half is for
        # the call itself (whose waits for a connection are bounded by the deadline too).
        wait = self._config.pool_timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("the call's deadline passed before it could start")
            wait = min(wait, left / 2)
        work = self._server.executor.submit(run)
        timer = asyncio.get_running_loop().call_later(wait, work.cancel)
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            if not work.cancelled() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            raise ResourceExhausted(
                f"the server is busy: all {self._config.max_workers} workers (--max-workers) "
                f"stayed taken for {wait * 1000:.0f} ms (--pool-timeout, or half the time the "
                "call's deadline left); retry later") from None
        finally:
            timer.cancel()

    async def _read(self, requests: AsyncIterator, timeout: float, what: str,
                    index: int | None = None):
        """The next request message (None at the end of the stream), within ``timeout``;
        ``index``: its place in a request stream (for the error of an undecodable one)."""
        flag = "--stream-idle-timeout" if what.startswith("StreamPut") else "--request-timeout"
        message = await self._server.read_timeouts.read(requests, timeout, what, flag)
        if isinstance(message, Undecodable):
            raise undecodable_error(message, index, log=self._decode_log)
        if isinstance(message, Oversized):
            where = "the request" if index is None else f"message {index} of the stream"
            raise _MessageTooLarge(f"{where} is {message.size} bytes; the server accepts messages "
                                   f"of at most {self._max_request} bytes (--max-message-bytes)")
        return message

    async def _end_of_call(self, requests: AsyncIterator, what: str, name: str) -> None:
        """Waits for a unary call's request stream to end after its one message."""
        timeout = self._config.request_timeout
        try:
            extra = await self._read(requests, timeout, what, 1)
        except DeadlineExceeded:
            raise DeadlineExceeded(f"the {what} arrived but the call did not end within "
                                   f"{timeout:g} s (--request-timeout): {name} takes one message") from None
        if extra is not None:
            raise InvalidArgument(f"the call carried more than one {what}: {name} takes exactly "
                                  "one (it is a unary method)")

    async def _fail(self, context, error: BaseException) -> None:
        """Ends the call with the status the error table assigns (the only abort)."""
        if not isinstance(error, KvError):
            _LOGGER.error("unexpected error", exc_info=error)
            error = Internal("internal server error; see the server log")
        trailing = []
        if error.committed is not None:
            trailing.append((COMMITTED_METADATA_KEY, str(error.committed)))
        if error.current_version is not None:
            trailing.append((CURRENT_VERSION_METADATA_KEY, str(error.current_version)))
        await context.abort(getattr(grpc.StatusCode, status_name(error)), error.message,
                            tuple(trailing))

    def unary(self, name: str, request_class, method: Callable, *,
              on_loop: bool = False, one_message: bool = True) -> grpc.RpcMethodHandler:
        """A unary method: ``method(request)`` runs blocking on the worker pool, or with
        ``on_loop``, ``await method(request, deadline)`` on the event loop.

        ``one_message``: the request stream must end after its one message (a call that
        carries more is refused before anything runs: a hand-made client streaming Puts to
        the unary Put got OK, and only its first was written). Get skips that check, which
        costs a receive per call: a read changes nothing, and it answers the first."""
        what = request_class.DESCRIPTOR.name

        async def handle(requests, context):
            started = time.perf_counter()
            try:
                with self._admission.admit(context, "unary"):
                    request = await self._read(requests, self._config.request_timeout, what)
                    if request is None:
                        raise InvalidArgument(f"the call carried no {what}")
                    if one_message:
                        await self._end_of_call(requests, what, name)
                    remaining = context.time_remaining()
                    deadline = None if remaining is None else time.monotonic() + remaining
                    if on_loop:
                        reply = await method(request, deadline)
                    else:
                        reply = await self._blocking(method, request, deadline=deadline)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                self._observe(name, exc, started)
                await self._fail(context, exc)
            self._observe(name, None, started)
            return reply

        return grpc.stream_unary_rpc_method_handler(
            handle, request_deserializer=_message_parser(request_class, self._max_request),
            response_serializer=_serialize)

    def _observe(self, name: str, error: BaseException | None, started: float) -> None:
        if self._metrics is not None:
            code = "OK" if error is None else (
                status_name(error) if isinstance(error, KvError) else "INTERNAL")
            self._metrics.observe(name, code, time.perf_counter() - started)

    # -- the methods (blocking halves run on the worker pool) --------------------------

    async def put(self, request: kv_pb2.PutRequest, deadline: float | None) -> kv_pb2.PutResponse:
        expected = request.expected_version if request.HasField("expected_version") else None
        op = self._service.check_put(request.key, request.value, expected)
        written = await self.writes.submit((op, deadline))
        return kv_pb2.PutResponse(version=written.version, write_token=written.commit.token,
                                  revision=written.commit.revision)

    async def delete(self, request: kv_pb2.DeleteRequest,
                     deadline: float | None) -> kv_pb2.DeleteResponse:
        deleted = await self.writes.submit((self._service.check_delete(request.key), deadline))
        return kv_pb2.DeleteResponse(deleted=deleted.done, write_token=deleted.commit.token,
                                     revision=deleted.commit.revision)

    async def get(self, request: kv_pb2.GetRequest, deadline: float | None) -> kv_pb2.GetResponse:
        options = _read_options(request.read_options) if request.HasField("read_options") else EVENTUAL
        k = self._service.check_get(request.key, options)
        if options.min_token:  # may wait for a replica to catch up: alone, holding up no group
            record = await self._blocking(self._service.get, request.key, options, deadline=deadline)
        else:
            record = await self.reads.submit((request.key, k, options, deadline))
        return kv_pb2.GetResponse(record=_record_pb(record))

    async def _write_group(self, ops: list[tuple[WriteOp, float | None]]) -> list:
        return await self._blocking(self._service.run_writes, [op for op, _ in ops],
                                    deadline=_group_deadline(d for _, d in ops))

    async def _read_group(self, gets: list[tuple[str, bytes, ReadOptions, float | None]]) -> list:
        return await self._blocking(self._service.get_group, [g[:3] for g in gets],
                                    deadline=_group_deadline(g[3] for g in gets))

    def batch_get(self, request: kv_pb2.BatchGetRequest) -> kv_pb2.BatchGetResponse:
        records, missing, unprocessed = self._service.batch_get(
            list(request.keys), _read_options(request.read_options))
        return kv_pb2.BatchGetResponse(records=[_record_pb(r) for r in records],
                                       missing_keys=missing, unprocessed_keys=unprocessed)

    def scan(self, request: kv_pb2.ScanRequest) -> kv_pb2.ScanResponse:
        page = ScanPage(
            prefix=request.prefix, start_key=request.start_key, end_key=request.end_key,
            size=request.page_size or 100, max_bytes=request.page_bytes or (1 << 20),
            page_token=request.page_token, keys_only=request.keys_only,
        )
        records, token = self._service.scan(page, _read_options(request.read_options))
        return kv_pb2.ScanResponse(records=[_record_pb(r) for r in records], next_page_token=token)

    def get_status(self, request: kv_pb2.GetStatusRequest) -> kv_pb2.GetStatusResponse:
        endpoints = self._service.status()
        return kv_pb2.GetStatusResponse(
            endpoints=[_endpoint_pb(e) for e in endpoints], limits=_limits_pb(self._service.limits),
            server=kv_pb2.ServerInfo(version=VERSION, process_id=os.getpid()))

    def get_load(self, request: kv_pb2.GetLoadRequest) -> kv_pb2.GetLoadResponse:
        progress = self._service.get_load(request.load_id)
        return kv_pb2.GetLoadResponse(
            load_id=progress.load_id, committed_count=progress.committed,
            revision=progress.revision, write_token=progress.token,
            updated_unix_ms=progress.updated_unix_ms)

    # -- streams -----------------------------------------------------------------------

    def stream_put(self) -> grpc.RpcMethodHandler:
        async def handle(requests, context):
            started = time.perf_counter()
            writer = None
            try:
                with self._admission.admit(context, "stream"):
                    timeout = self._config.stream_idle_timeout
                    first = await self._read(requests, timeout, "StreamPut message", 0)
                    load_id = (first.load_id or None) if first is not None else None
                    start_index = first.start_index if first is not None else 0
                    writer = await self._blocking(self._service.open_stream, load_id, start_index)
                    try:
                        reply = await self._stream_put(first, requests, writer)
                    finally:
                        writer.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                if isinstance(exc, KvError) and writer is not None and exc.committed is None:
                    exc.committed = writer.reported()
                self._observe("StreamPut", exc, started)
                await self._fail(context, exc)
            self._observe("StreamPut", None, started)
            return reply

        return grpc.stream_unary_rpc_method_handler(
            handle, request_deserializer=_message_parser(kv_pb2.StreamPutRequest, self._max_request),
            response_serializer=_serialize)

    async def _stream_put(self, first, requests, writer) -> kv_pb2.StreamPutResponse:
        """Receives messages and commits batches one at a time, in order, while the next
        message is received. On shutdown it stops taking records, commits what it holds
        and ends with Unavailable carrying the committed count."""
        in_flight: asyncio.Future | None = None
        draining = self._server.draining
        timeout = self._config.stream_idle_timeout

        async def settle() -> None:
            nonlocal in_flight
            if in_flight is not None:
                future, in_flight = in_flight, None
                await future

        async def take(message) -> None:
            nonlocal in_flight
            ready = writer.add([(r.key, r.value) for r in message.records])
            if ready:
                await settle()  # one batch commits at a time, in order
                in_flight = asyncio.ensure_future(self._blocking(writer.commit, ready))

        try:
            message, index = first, 0
            while message is not None and not draining.done():
                if index and (message.load_id or message.start_index):
                    raise InvalidArgument(f"StreamPut message {index} sets load_id or start_index; "
                                          "they belong in the first message only")
                await take(message)
                index += 1
                read = asyncio.ensure_future(
                    self._read(requests, timeout, "StreamPut message", index))
                done, _ = await asyncio.wait({read, draining}, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    break
                message = read.result()
            await settle()
            await self._blocking(writer.commit, writer.flush())
            await self._blocking(writer.finish)
        except (InvalidArgument, _MessageTooLarge):
            await settle()  # the valid records before the bad one are committed
            await self._blocking(writer.commit, writer.flush())
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await settle()
            raise
        if draining.done():
            raise writer.drained()
        result = writer.result()
        return kv_pb2.StreamPutResponse(
            committed_count=result.committed, write_token=result.commit.token, revision=result.commit.revision,
            skipped_count=result.skipped, load_committed_count=result.load_committed)

    def watch(self) -> grpc.RpcMethodHandler:
        async def handle(requests, context):
            started = time.perf_counter()
            try:
                with self._admission.admit(context, "watch"):
                    request = await self._read(requests, self._config.request_timeout, "WatchRequest")
                    if request is None:
                        raise InvalidArgument("the call carried no WatchRequest")
                    target = request.WhichOneof("target")
                    keys, start = self._service.watch_target(
                        request.key if target == "key" else None,
                        request.prefix if target == "prefix" else None,
                        request.start_revision if request.HasField("start_revision") else None)
                    hub = self._server.hub
                    async for batch in hub.watch(keys, start, self._server.executor,
                                                 self._server.feed.head_revision):
                        yield _watch_response(batch)
            except asyncio.CancelledError:
                self._observe("Watch", None, started)
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                self._observe("Watch", exc, started)
                await self._fail(context, exc)

        return grpc.stream_stream_rpc_method_handler(
            handle, request_deserializer=_message_parser(kv_pb2.WatchRequest, self._max_request),
            response_serializer=_serialize)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Put": self.unary("Put", kv_pb2.PutRequest, self.put, on_loop=True),
            "Get": self.unary("Get", kv_pb2.GetRequest, self.get, on_loop=True, one_message=False),
            "Delete": self.unary("Delete", kv_pb2.DeleteRequest, self.delete, on_loop=True),
            "BatchGet": self.unary("BatchGet", kv_pb2.BatchGetRequest, self.batch_get),
            "Scan": self.unary("Scan", kv_pb2.ScanRequest, self.scan),
            "GetStatus": self.unary("GetStatus", kv_pb2.GetStatusRequest, self.get_status),
            "GetLoad": self.unary("GetLoad", kv_pb2.GetLoadRequest, self.get_load),
            "StreamPut": self.stream_put(),
            "Watch": self.watch(),
        })


# --------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------


def build_service(config: ServerConfig) -> KeyValueService:
    """Opens the stores the config names and returns the domain service over them."""
    limits = config.limits
    if config.master is None:
        if config.replicas:
            raise ValueError("a replica is configured but no master: set --master too")
        if config.require_semi_sync:
            raise ValueError("--require-semi-sync needs a MySQL/MariaDB master")
        if config.follow_topology:
            raise ValueError("--follow-topology needs the database endpoints: --master and --replica URLs")
        store: Store = SQLiteStore(config.sqlite_path, config.table)
        return KeyValueService(store, limits=limits,
                               router=ReadRouter(store, master_role="embedded"),
                               load_retention=config.load_retention)
    if config.follow_topology:
        return _following_service(config)
    writer: Store = MySQLStore(
        config.master, config.table, role="master", pool_size=config.pool_size,
        pool_timeout=config.pool_timeout, create_table=True,
        require_semi_sync=config.require_semi_sync,
    )  # the master creates the table if it is missing
    readers = [
        MySQLStore(endpoint, config.table, role="replica", pool_size=config.pool_size,
                   pool_timeout=config.pool_timeout)
        for endpoint in config.replicas
    ]
    for store in (writer, *readers):
        try:
            store.connect()
        except KvError as exc:  # keep serving: each request retries, and says UNAVAILABLE
            _LOGGER.error("%s: %s; will retry on each request", store.description, exc)
    router = ReadRouter(
        writer, readers, max_lag=config.max_replica_lag, interval=config.monitor_interval,
        watch_semi_sync=config.require_semi_sync,
    )
    return KeyValueService(writer, readers, limits=limits, router=router,
                           require_semi_sync=config.require_semi_sync,
                           load_retention=config.load_retention)


def _following_service(config: ServerConfig) -> KeyValueService:
    """--follow-topology: every endpoint may be the master; the router finds which."""
    if not config.replicas:
        raise ValueError("--follow-topology needs every database endpoint: --master and --replica URLs")
    stores: list[Store] = [
        MySQLStore(endpoint, config.table, role="node", pool_size=config.pool_size,
                   pool_timeout=config.pool_timeout, create_table=True,
                   require_semi_sync=config.require_semi_sync)
        for endpoint in (config.master, *config.replicas) if endpoint is not None
    ]
    for store in stores:
        try:
            store.connect()
        except KvError as exc:  # keep serving: the monitor retries every round
            _LOGGER.error("%s: %s; will retry", store.description, exc)
    router = ReadRouter(
        stores[0], stores[1:], max_lag=config.max_replica_lag, interval=config.monitor_interval,
        watch_semi_sync=config.require_semi_sync, follow_topology=True,
    )
    return KeyValueService(stores[0], stores[1:], limits=config.limits, router=router,
                           require_semi_sync=config.require_semi_sync,
                           load_retention=config.load_retention)


def _check_limits(config: ServerConfig) -> None:
    limits = config.limits
    record = limits.max_value_bytes + MAX_KEY_BYTES + 64
    if limits.max_receive_message_bytes < record:
        raise ValueError(
            f"--max-message-bytes {limits.max_receive_message_bytes} cannot hold a record with "
            f"the largest value (--max-value-bytes {limits.max_value_bytes}) and the longest key: "
            f"it needs at least {record}")
    largest_reply = max(limits.max_scan_page_bytes, limits.max_batch_get_bytes) + record + 4096
    if limits.max_send_message_bytes < largest_reply:
        raise ValueError(
            f"--max-send-message-bytes {limits.max_send_message_bytes} cannot hold the largest "
            f"reply ({largest_reply} bytes: a Scan page (--max-scan-page-bytes) or BatchGet "
            "budget (--max-batch-get-bytes) plus one record)")


class _Health:
    """The standard health service, with blocking methods for the server's owner."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.servicer = HealthServicer()

    def set(self, service: str, status) -> None:
        asyncio.run_coroutine_threadsafe(self.servicer.set(service, status), self._loop).result(5)

    def enter_graceful_shutdown(self) -> None:
        asyncio.run_coroutine_threadsafe(
            self.servicer.enter_graceful_shutdown(), self._loop).result(5)


def _new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop (measured ~15% less CPU per call than asyncio's on
    this machine kind, README "Benchmarks"), or the standard library's."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class KeyValueServer:
    """A running kvgrpc server: the gRPC server, its health service, its stores.

    The gRPC server runs on an event loop in a thread of its own, so the owner's API is
    plain blocking calls: ``start()``, ``stop(grace)``, ``port``, ``wait_for_termination()``.
    """

    def __init__(self, config: ServerConfig, service: KeyValueService) -> None:
        _check_limits(config)
        self.config = config
        self.service = service
        self.admission = _Admission(config)
        self.stream_limit = self.admission  # open_streams(), for tests and metrics
        self.executor = futures.ThreadPoolExecutor(config.max_workers, thread_name_prefix="kvgrpc")
        self.metrics = None
        if config.metrics_port is not None:
            from kvgrpc.metrics import Metrics

            self.metrics = Metrics(service)
        self.metrics_port: int | None = None
        self._loop = _new_event_loop(config.event_loop)
        self._thread = threading.Thread(target=self._loop.run_forever, name="kvgrpc-loop",
                                        daemon=True)
        self._thread.start()
        self.health = _Health(self._loop)
        router = getattr(service, "router", None)
        # The store whose binlog Watch reads: following the topology, the master's of the moment.
        self.feed = router.feed_store() if router is not None else getattr(service, "writer", None)
        self.hub = ChangeHub(self.feed, self._loop,
                             max_buffer_bytes=config.watch_buffer_bytes,
                             max_watchers=config.max_watches,
                             max_catchup=config.max_catchup_watches,
                             feed_retry=config.watch_feed_retry)
        self.draining: asyncio.Future = self._run(self._make_future())
        self.read_timeouts = _ReadTimeouts()
        try:
            self.port = self._run(self._bind())
        except BaseException:
            self._close_loop()
            raise

    async def _make_future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    def _run(self, coroutine, timeout: float | None = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _options(self) -> list[tuple[str, Any]]:
        c = self.config
        return [
            ("grpc.max_receive_message_length", c.limits.max_receive_message_bytes + RECEIVE_SLACK_BYTES),
            ("grpc.max_send_message_length", c.limits.max_send_message_bytes),
            ("grpc.max_concurrent_streams", c.max_streams_per_connection),
            ("grpc.so_reuseport", 1 if c.reuse_port else 0),
            # Keepalive: find dead client connections (and keep NATs open) when idle.
            ("grpc.keepalive_time_ms", int(c.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(c.keepalive_timeout * 1000)),
            ("grpc.http2.ping_timeout_ms", int(c.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Keep pinging an idle stream (a quiet Watch): by default the server stops
            # after 2 pings without data, and would never notice its client vanish.
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]

    async def _bind(self) -> int:
        c = self.config
        # A backstop over every kind of call; the admission limits refuse earlier, by name.
        ceiling = c.max_concurrent_rpcs + c.max_streams + c.max_watches + 256
        self._grpc = grpc.aio.server(options=self._options(), maximum_concurrent_rpcs=ceiling)
        self.servicer = _Servicer(self)
        if self.metrics is not None:
            self.metrics.count_groups(read=self.servicer.reads, write=self.servicer.writes)
        self._grpc.add_generic_rpc_handlers((self.servicer.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._grpc)
        # Server reflection: `grpcurl -plaintext HOST:PORT list` / `describe` need no proto file.
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self._grpc)
        address = f"{c.host}:{c.port}"
        secure = bool(c.tls_cert or c.tls_key)
        if secure:
            if not (c.tls_cert and c.tls_key):
                raise ValueError("TLS needs both --tls-cert and --tls-key")
            credentials = server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca)
            port = self._add_port(lambda: self._grpc.add_secure_port(address, credentials))
        elif c.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        else:
            port = self._add_port(lambda: self._grpc.add_insecure_port(address))
        if port == 0:
            raise OSError(f"cannot listen on {c.host}:{c.port}")
        return port

    def _add_port(self, add: Callable[[], int]) -> int:
        try:
            return add()
        except RuntimeError:  # grpc's "Failed to bind": the port is taken (or the host unknown)
            c = self.config
            raise OSError(f"cannot listen on {c.host}:{c.port}: the address is in use or not "
                          "local (several processes share a port only with --processes)") from None

    def start(self) -> None:
        """Starts serving; raises OSError (naming the flag) when the metrics port cannot be
        bound, before any gRPC call is accepted (``stop()`` then cleans up)."""
        self.service.start()
        if self.metrics is not None and self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics_host, self.config.metrics_port,
                                                   token=self.config.metrics_token)
        self._run(self._grpc.start())
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> None:
        """Refuses new calls; ends watches at once and makes open StreamPuts commit what they
        hold and end (UNAVAILABLE with the committed count); lets other calls finish for
        ``grace`` seconds; closes the stores."""
        grace = self.config.shutdown_grace if grace is None else grace
        with contextlib.suppress(Exception):
            self.health.enter_graceful_shutdown()
        self.service.begin_shutdown()
        self.hub.close()
        self._loop.call_soon_threadsafe(self._drain)
        # Let the drained StreamPuts end, and their clients read the status, before the
        # connections close: a client still sending when its socket is closed under it
        # sees "broken pipe" instead of the committed count.
        deadline = time.monotonic() + grace
        while self.admission.open["stream"] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(min(grace, DRAIN_LINGER_SECONDS))
        with contextlib.suppress(Exception):
            self._run(self._grpc.stop(max(0.0, deadline - time.monotonic())), timeout=grace + 5)
        if self.metrics is not None:
            self.metrics.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._loop.call_soon_threadsafe(self.read_timeouts.close)
        self.hub.join(2)
        self.service.close()
        self._close_loop()

    def _drain(self) -> None:
        if not self.draining.done():
            self.draining.set_result(None)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._run(self._grpc.wait_for_termination(timeout), timeout=None)


def build_server(config: ServerConfig) -> KeyValueServer:
    """Wires stores, service and transport; the server is bound but not started."""
    service = build_service(config)
    try:
        return KeyValueServer(config, service)
    except BaseException:
        service.close()
        raise


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _arg_parser() -> argparse.ArgumentParser:
    limits = Limits()
    p = argparse.ArgumentParser(
        prog="kvgrpc-server",
        description="Serve the kvgrpc.v1.KeyValue gRPC service. With no --master it stores "
        "records in an embedded SQLite file.",
        epilog="Environment: KVGRPC_MASTER_URL, KVGRPC_REPLICA_URL (comma-separated), "
        "KVGRPC_MYSQL_PASSWORD (used when a URL has no password).",
    )
    p.add_argument("--host", default="localhost",
                   help="address to listen on (default: localhost; another address needs TLS "
                   "and tokens, or --allow-insecure-public)")
    p.add_argument("--port", type=int, default=1313, help="port to listen on (default: 1313; 0 picks one)")
    p.add_argument("--processes", type=int, default=1,
                   help="server processes sharing the port (SO_REUSEPORT), each with its own "
                   f"pools and change feed, at most {_max_processes()} here (the larger of "
                   f"{MAX_PROCESSES_FLOOR} and twice the CPUs); process i serves metrics on "
                   "--metrics-port + i. They stop together: if one exits, the others are "
                   "stopped and the server exits non-zero (default: 1)")
    p.add_argument("--allow-insecure-public", action="store_true",
                   help="allow listening beyond loopback without TLS and tokens (logs a warning)")
    p.add_argument("--sqlite", metavar="PATH", default=None,
                   help="SQLite file used when no master is configured (default: ./kvgrpc.sqlite3)")
    p.add_argument("--master", metavar="URL", help="mysql://user@host:port/database of the master "
                   "(password from KVGRPC_MYSQL_PASSWORD)")
    p.add_argument("--replica", metavar="URL", action="append", default=None,
                   help="a read replica's URL; repeat for several")
    p.add_argument("--table", default="kv", help="table name (default: kv)")
    p.add_argument("--pool-size", type=int, default=8, help="connections per database endpoint, 1-32 (default: 8)")
    p.add_argument("--pool-timeout", type=float, default=5.0,
                   help="seconds a request waits for a free connection (default: 5)")
    p.add_argument("--max-value-bytes", type=int, default=limits.max_value_bytes,
                   help="largest value accepted (default: 1 MiB)")
    p.add_argument("--max-message-bytes", type=int, default=limits.max_receive_message_bytes,
                   help="largest request message accepted (default: 4 MiB)")
    p.add_argument("--max-send-message-bytes", type=int, default=limits.max_send_message_bytes,
                   help="largest response message sent (default: 16 MiB)")
    p.add_argument("--max-scan-page-bytes", type=int, default=limits.max_scan_page_bytes,
                   help="Scan's page_bytes is clamped to this (default: 4 MiB)")
    p.add_argument("--max-batch-get-bytes", type=int, default=limits.max_batch_get_bytes,
                   help="byte budget of a BatchGet response; keys past it come back as "
                   "unprocessed_keys (default: 4 MiB)")
    p.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                   help="the event loop the gRPC server runs on (default: uvloop, the faster)")
    p.add_argument("--max-workers", type=int, default=32,
                   help="threads that run database calls (default: 32)")
    p.add_argument("--max-concurrent-rpcs", type=int, default=256,
                   help="unary calls in progress beyond which new ones get RESOURCE_EXHAUSTED "
                   "(default: 256)")
    p.add_argument("--max-streams", type=int, default=256,
                   help="open StreamPut calls, server-wide (default: 256)")
    p.add_argument("--max-watches", type=int, default=4096,
                   help="open Watch calls, server-wide (default: 4096)")
    p.add_argument("--max-streams-per-client", type=int, default=32,
                   help="open StreamPut and Watch calls per client token (with --auth-tokens-file; "
                   "default 32)")
    p.add_argument("--max-streams-per-connection", type=int, default=1024,
                   help="concurrent calls on one HTTP/2 connection (default: 1024)")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds a request message may take to arrive in full (default: 10)")
    p.add_argument("--stream-idle-timeout", type=float, default=60.0,
                   help="seconds a StreamPut may go without a message (default: 60)")
    p.add_argument("--watch-buffer-bytes", type=int, default=32 << 20,
                   help="bytes of recent changes the change hub keeps for its watchers; a "
                   "watcher that falls further behind is ended and resumes (default: 32 MiB)")
    p.add_argument("--max-catchup-watches", type=int, default=4,
                   help="watches reading history older than the buffer at once (default: 4)")
    p.add_argument("--shutdown-grace", type=float, default=30.0,
                   help="seconds in-flight calls may take to finish on SIGTERM/SIGINT (default: 30)")
    p.add_argument("--load-retention", type=float, default=DEFAULT_LOAD_RETENTION / 86400,
                   metavar="DAYS", help="days the progress of a named load is kept after its "
                   "last batch (GetLoad; resuming); default 7")
    p.add_argument("--max-replica-lag", type=float, default=5.0,
                   help="seconds of lag beyond which a replica stops serving reads (default: 5)")
    p.add_argument("--follow-topology", action="store_true",
                   help="take --master and --replica as one set of candidates: write to the node "
                   "that is writable (read_only off) and replicates from nobody, read from the "
                   "others, and find the new master by itself after a switchover or failover "
                   "(the account needs SLAVE MONITOR)")
    p.add_argument("--watch-feed-retry", type=float, default=10.0,
                   help="seconds the change feed keeps reopening after it broke (a failover) "
                   "before open watches end with UNAVAILABLE (default: 10)")
    p.add_argument("--require-semi-sync", action="store_true",
                   help="acknowledge a write only if semi-synchronous replication confirmed it")
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--tls-client-ca", metavar="FILE",
                   help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--auth-tokens-file", metavar="FILE",
                   help="accept calls with 'authorization: Bearer TOKEN' for a token in FILE "
                   "(one per line; also KVGRPC_AUTH_TOKENS, comma-separated); others get "
                   "UNAUTHENTICATED")
    p.add_argument("--keepalive-time", type=float, default=60.0,
                   help="seconds of idleness before the server pings a connection (default 60)")
    p.add_argument("--keepalive-timeout", type=float, default=20.0,
                   help="seconds to wait for a ping's answer before closing (default 20)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text lines, or one JSON object per line (for log collectors)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics; with "
                   "--processes N, process i serves them on PORT + i (PORT..PORT+N-1; 0: each "
                   "picks a free port) (default: off)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics endpoint (default: 127.0.0.1)")
    p.add_argument("--metrics-token-file", metavar="FILE",
                   help="require 'Authorization: Bearer TOKEN' on /metrics, TOKEN read from FILE")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


#: ``--processes`` starts at most the larger of this and twice the CPUs: one process per
#: core is the point, a few more can cover for I/O waits; beyond that each process only
#: adds its pools, its change feed and its memory (100000 forked until the machine fell over).
MAX_PROCESSES_FLOOR = 64
_INT32_MAX = 2**31 - 1  # grpc takes sizes, counts and milliseconds as C ints


def _max_processes() -> int:
    return max(MAX_PROCESSES_FLOOR, 2 * (os.cpu_count() or 1))


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
) -> tuple[ServerConfig, tuple[str, str], int]:
    """Builds the config, the log level and format, and the process count. Raises
    ValueError (or KvError) with a one-line message naming the flag at fault."""
    args = _arg_parser().parse_args(argv)
    _check_flags(args)
    password = environ.get("KVGRPC_MYSQL_PASSWORD")
    master_source = "--master" if args.master else "KVGRPC_MASTER_URL"
    master_url = args.master or environ.get("KVGRPC_MASTER_URL") or None
    replica_source = "--replica" if args.replica is not None else "KVGRPC_REPLICA_URL"
    replica_urls = args.replica if args.replica is not None else [
        url.strip() for url in environ.get("KVGRPC_REPLICA_URL", "").split(",") if url.strip()
    ]
    if master_url and args.sqlite is not None:
        raise ValueError(f"--sqlite and a master ({master_source}) were both given: records are "
                         "stored in one place; drop one")
    if args.replica and not master_url:
        raise ValueError("--replica needs a master (--master or KVGRPC_MASTER_URL)")
    limits = Limits(
        max_value_bytes=args.max_value_bytes, max_receive_message_bytes=args.max_message_bytes,
        max_send_message_bytes=args.max_send_message_bytes,
        max_scan_page_bytes=args.max_scan_page_bytes, max_batch_get_bytes=args.max_batch_get_bytes,
    )
    _check_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
    try:
        tokens = load_tokens(environ.get("KVGRPC_AUTH_TOKENS"), args.auth_tokens_file)
    except OSError as exc:
        raise ValueError(_file_problem("--auth-tokens-file", args.auth_tokens_file, exc)) from None
    except UnicodeError:
        raise ValueError(f"--auth-tokens-file {args.auth_tokens_file}: not UTF-8 text") from None
    except ValueError as exc:  # "PATH holds no token ..."
        raise ValueError(f"--auth-tokens-file {exc}") from None
    config = ServerConfig(
        host=args.host,
        port=args.port,
        sqlite_path=args.sqlite or "kvgrpc.sqlite3",
        master=_endpoint(master_url, password, master_source) if master_url else None,
        replicas=tuple(_endpoint(url, password, replica_source) for url in replica_urls),
        table=args.table,
        pool_size=args.pool_size,
        pool_timeout=args.pool_timeout,
        limits=limits,
        max_workers=args.max_workers, event_loop=args.event_loop,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_streams=args.max_streams,
        max_watches=args.max_watches,
        max_streams_per_client=args.max_streams_per_client,
        max_streams_per_connection=args.max_streams_per_connection,
        request_timeout=args.request_timeout,
        stream_idle_timeout=args.stream_idle_timeout,
        watch_buffer_bytes=args.watch_buffer_bytes,
        max_catchup_watches=args.max_catchup_watches,
        shutdown_grace=args.shutdown_grace,
        load_retention=args.load_retention * 86400,
        max_replica_lag=args.max_replica_lag,
        follow_topology=args.follow_topology,
        watch_feed_retry=args.watch_feed_retry,
        require_semi_sync=args.require_semi_sync,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_tokens=tuple(tokens),
        allow_insecure_public=args.allow_insecure_public,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_token=_metrics_token(args.metrics_token_file),
        keepalive_time=args.keepalive_time,
        keepalive_timeout=args.keepalive_timeout,
        reuse_port=args.processes > 1,
    )
    _check_limits(config)
    return config, (args.log_level, args.log_format), args.processes


def _check_flags(args: argparse.Namespace) -> None:
    """Refuses, naming the flag, a number the server cannot work with: a count or size
    below 1, a negative or zero time where a wait or a limit needs one, a port out of range,
    more processes than the machine can use, a value grpc cannot hold."""
    if args.processes > 1 and not sys.platform.startswith("linux"):
        raise ValueError("--processes needs Linux (SO_REUSEPORT load balancing, PR_SET_PDEATHSIG)")
    counts: list[tuple[str, int, int, int, str]] = [  # flag, value, lowest, highest, unit
        ("--port", args.port, 0, 65535, ""),
        ("--processes", args.processes, 1, _max_processes(), ""),
        ("--pool-size", args.pool_size, 1, 32, " connections per database endpoint"),
        ("--max-value-bytes", args.max_value_bytes, 1, _INT32_MAX, " bytes"),
        ("--max-message-bytes", args.max_message_bytes, 1, _INT32_MAX - RECEIVE_SLACK_BYTES, " bytes"),
        ("--max-send-message-bytes", args.max_send_message_bytes, 1, _INT32_MAX, " bytes"),
        ("--max-scan-page-bytes", args.max_scan_page_bytes, 1, _INT32_MAX, " bytes"),
        ("--max-batch-get-bytes", args.max_batch_get_bytes, 1, _INT32_MAX, " bytes"),
        ("--max-workers", args.max_workers, 1, 1 << 16, " threads"),
        ("--max-concurrent-rpcs", args.max_concurrent_rpcs, 1, 1 << 24, " calls"),
        ("--max-streams", args.max_streams, 1, 1 << 24, " streams"),
        ("--max-watches", args.max_watches, 1, 1 << 24, " watches"),
        ("--max-streams-per-client", args.max_streams_per_client, 1, 1 << 24, " streams"),
        ("--max-streams-per-connection", args.max_streams_per_connection, 1, _INT32_MAX, " calls"),
        ("--watch-buffer-bytes", args.watch_buffer_bytes, 1, 1 << 40, " bytes"),
        ("--max-catchup-watches", args.max_catchup_watches, 1, 1 << 16, " watches"),
    ]
    if args.metrics_port is not None:
        counts.append(("--metrics-port", args.metrics_port, 0, 65535, ""))
    for flag, value, low, high, unit in counts:
        if not low <= value <= high:
            why = (f" (the larger of {MAX_PROCESSES_FLOOR} and twice this machine's "
                   f"{os.cpu_count() or 1} CPUs)" if flag == "--processes" else "")
            raise ValueError(f"{flag} must be {low} to {high}{unit}{why}, not {value}")
    # flag, value, lowest, whether the lowest itself is allowed, highest, unit
    times: list[tuple[str, float, float, bool, float | None, str]] = [
        ("--pool-timeout", args.pool_timeout, 0.0, False, None, "seconds"),
        ("--request-timeout", args.request_timeout, 0.0, False, None, "seconds"),
        ("--stream-idle-timeout", args.stream_idle_timeout, 0.0, False, None, "seconds"),
        ("--shutdown-grace", args.shutdown_grace, 0.0, True, None, "seconds"),
        ("--load-retention", args.load_retention, 0.0, False, None, "days"),
        ("--max-replica-lag", args.max_replica_lag, 0.0, False, None, "seconds"),
        ("--watch-feed-retry", args.watch_feed_retry, 0.0, False, None, "seconds"),
        # grpc takes these in whole milliseconds, as a C int
        ("--keepalive-time", args.keepalive_time, 0.001, True, _INT32_MAX // 1000, "seconds"),
        ("--keepalive-timeout", args.keepalive_timeout, 0.001, True, _INT32_MAX // 1000, "seconds"),
    ]
    for flag, seconds, least, inclusive, most, unit in times:
        if not math.isfinite(seconds):
            raise ValueError(f"{flag} must be a finite number of {unit}, not {seconds}")
        if seconds < least or (seconds == least and not inclusive):
            bound = f"{least:g} or more" if inclusive else f"more than {least:g}"
            raise ValueError(f"{flag} must be {bound} ({unit}), not {seconds:g}")
        if most is not None and seconds > most:
            raise ValueError(f"{flag} must be at most {most:g} ({unit}), not {seconds:g}")
    if args.processes > 1 and args.port == 0:
        raise ValueError("--processes needs a fixed --port (the processes share it)")
    if args.metrics_port:
        last = args.metrics_port + args.processes - 1
        if last > 65535:
            raise ValueError(f"--metrics-port {args.metrics_port} with --processes {args.processes} "
                             f"needs ports {args.metrics_port} to {last} (process i serves metrics "
                             "on --metrics-port + i); choose a lower --metrics-port")
        if args.metrics_port <= args.port <= last:
            if args.processes == 1:
                raise ValueError(f"--metrics-port {args.metrics_port} is the gRPC port (--port); "
                                 "choose another")
            raise ValueError(f"the metrics ports {args.metrics_port} to {last} (--metrics-port + i "
                             f"for process i of --processes {args.processes}) would include the "
                             f"gRPC port (--port {args.port}); choose another --metrics-port")


def _check_tls(cert: str | None, key: str | None, client_ca: str | None) -> None:
    """Checks the server's TLS files before anything starts: grpc only says it cannot
    listen when they are unreadable or do not belong together."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return
    if not (cert and key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise ValueError(_file_problem(flag, path, exc)) from None
    check_key_pair(cert, key, "--tls-cert", "--tls-key")
    if client_ca:
        import ssl  # here, not at the top: kvgrpc must load the MySQL C extension before ssl

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ValueError(f"--tls-client-ca {client_ca} holds no usable CA certificate "
                             f"({ssl_reason(exc)})") from None


def _file_problem(flag: str, path: str | None, exc: OSError) -> str:
    """``--flag PATH: no such file`` for an unreadable file named by a flag."""
    reason = {errno.ENOENT: "no such file", errno.EACCES: "permission denied",
              errno.EISDIR: "is a directory"}.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{flag} {path}: {reason}"


def _endpoint(url: str, password: str | None, source: str) -> MySQLEndpoint:
    try:
        return MySQLEndpoint.from_url(url, password)
    except KvError as exc:
        raise ValueError(f"{source}: {exc}") from None


def _metrics_token(path: str | None) -> str | None:
    """The token the metrics endpoint requires (``--metrics-token-file``); an empty file is
    an error, not an open endpoint."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(_file_problem("--metrics-token-file", path, exc)) from None
    except UnicodeError:
        raise ValueError(f"--metrics-token-file {path}: not UTF-8 text") from None
    if not token:
        raise ValueError(f"{path} (--metrics-token-file) is empty; refusing to serve metrics "
                         "without the token")
    return token


def _exposure_problem(config: ServerConfig) -> str | None:
    """Why listening where the config says is unsafe, or None."""
    public = [("the gRPC port", config.host)]
    if config.metrics_port is not None:
        public.append(("the metrics endpoint", config.metrics_host))
    for what, host in public:
        if host in _LOOPBACK:
            continue
        missing = [name for name, ok in (("TLS", bool(config.tls_cert)),
                                         ("bearer tokens", bool(config.auth_tokens))) if not ok]
        if what == "the gRPC port" and missing:
            return f"{what} would listen on {host} without {' and '.join(missing)}"
        if what == "the metrics endpoint" and not config.metrics_token:
            return f"{what} would listen on {host} (plain HTTP) without --metrics-token-file"
    return None


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message (and any exception)."""

    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _serve(config: ServerConfig) -> int:
    """Runs one server process until SIGTERM/SIGINT; returns its exit status (1: it could
    not start, and said why in one line)."""
    try:
        server = build_server(config)
    except (KvError, ValueError, OSError) as exc:
        _LOGGER.error("cannot start: %s", exc)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        server.start()
    except (KvError, ValueError, OSError) as exc:  # the metrics port is taken
        _LOGGER.error("cannot start: %s", exc)
        server.stop(grace=0)
        return 1
    _LOGGER.info("listening on %s:%d (%s, %s)", config.host, server.port,
                 ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls_cert else "plaintext",
                 f"bearer tokens required ({len(config.auth_tokens)} configured)"
                 if config.auth_tokens else "no authentication")
    if config.follow_topology:
        _LOGGER.info("following the topology: writes go to whichever node is writable and "
                     "replicates from nobody")
    else:
        _LOGGER.info("writes: %s", server.service.writer.description)
    for reader in server.service.readers:
        _LOGGER.info("reads: %s", reader.description)
    if server.metrics_port is not None:
        _LOGGER.info("metrics on http://%s:%d/metrics", config.metrics_host, server.metrics_port)
    if config.master is not None:
        _LOGGER.info("driver: %s", mysql_driver())
    stop.wait()
    _LOGGER.info("stopping: letting in-flight calls finish (up to %g s)", config.shutdown_grace)
    # The process exits within the grace period plus 5 s, whatever a call is stuck on.
    def give_up() -> None:
        _LOGGER.error("still stopping after the grace period; exiting now")
        os._exit(1)

    watchdog = threading.Timer(config.shutdown_grace + 4.5, give_up)
    watchdog.daemon = True
    watchdog.start()
    server.stop()
    _LOGGER.info("stopped")
    return 0


#: After SIGTERM, how much longer than --shutdown-grace the parent of --processes waits for
#: a server process before SIGKILL (each gives up by itself at the grace period plus 5 s).
KILL_AFTER_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def _serve_processes(config: ServerConfig, count: int) -> int:
    """Forks ``count`` server processes on one port (SO_REUSEPORT) and watches them: they
    live and die together. Process i serves metrics on ``--metrics-port`` + i.

    - SIGTERM/SIGINT to this process is passed on; it exits when they have stopped
      (SIGKILL for any still running ``KILL_AFTER_GRACE_SECONDS`` past the grace period).
    - A process that exits by itself (it could not start, crashed, was killed) is logged
      with its status; the others are stopped the same way and this one exits with 1.
    - Each child gets SIGTERM when this process dies, even by SIGKILL (Linux
      ``PR_SET_PDEATHSIG``), so no orphan keeps serving the port.

    Forked before any gRPC object exists, as grpc's multiprocessing example does. The
    signals are blocked here and waited for with ``sigtimedwait`` (no handler races a
    ``waitpid``); each child unblocks them at once.
    """
    if config.master is None:
        # The processes share one SQLite file: create it (WAL mode, tables) here, once.
        # Processes opening a new file at the same moment failed with "database is locked".
        try:
            SQLiteStore(config.sqlite_path, config.table).close()
        except KvError as exc:
            _LOGGER.error("cannot start: %s", exc)
            return 1
    parent = os.getpid()
    waited = {signal.SIGCHLD, *_STOP_SIGNALS}
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    children: dict[int, int] = {}  # pid -> process index
    for i in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
                _die_with_parent(parent)
                metrics = config.metrics_port and config.metrics_port + i  # None, 0 or PORT + i
                code = _serve(dataclasses_replace(config, metrics_port=metrics))
            except BaseException:
                _LOGGER.exception("server process %d failed", os.getpid())
            finally:
                os._exit(code)  # never return into the parent's code
        children[pid] = i
    _LOGGER.info("started %d server processes: %s", count, ", ".join(map(str, children)))
    try:
        return _watch_children(children, count, config.shutdown_grace)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


def _die_with_parent(parent: int) -> None:
    """In a forked server process: have the kernel send SIGTERM when the parent dies, and
    exit at once if it already has (then this process was reparented before the call)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        _LOGGER.warning("prctl(PR_SET_PDEATHSIG) failed: %s; this process will outlive its parent",
                        os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:
        os._exit(1)


def _watch_children(children: dict[int, int], count: int, grace: float) -> int:
    """Waits for the server processes (see :func:`_serve_processes`); returns the exit status."""
    waited = {signal.SIGCHLD, *_STOP_SIGNALS}
    status = 0
    kill_at: float | None = None  # stopping: when the processes still running get SIGKILL

    def stop_all() -> float:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return time.monotonic() + grace + KILL_AFTER_GRACE_SECONDS

    while True:
        for pid, wait_status in _reaped():
            index = children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if kill_at is None and not _STOP_SIGNALS & signal.sigpending():
                _LOGGER.error("server process %d (%d of %d) ended unexpectedly (%s); stopping "
                              "the other %d and exiting with status 1", pid, index + 1, count,
                              _exit_description(code), len(children))
                status = 1
                kill_at = stop_all()
            elif code != 0:
                _LOGGER.error("server process %d ended (%s)", pid, _exit_description(code))
                status = 1
        if not children:
            return status
        if kill_at is not None and time.monotonic() >= kill_at:
            _LOGGER.error("server processes %s still running %g s after SIGTERM; killing them",
                          ", ".join(map(str, children)), grace + KILL_AFTER_GRACE_SECONDS)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            kill_at, status = math.inf, 1
        info: signal.struct_siginfo | None
        if kill_at is None or kill_at == math.inf:
            info = signal.sigwaitinfo(waited)
        else:
            info = signal.sigtimedwait(waited, max(0.0, kill_at - time.monotonic()))
        if info is not None and info.si_signo in _STOP_SIGNALS and kill_at is None:
            _LOGGER.info("stopping %d server processes (%s)", len(children),
                         signal.Signals(info.si_signo).name)
            kill_at = stop_all()


def _reaped():
    """(pid, wait status) of each child that has ended, without blocking."""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, wait_status


def _exit_description(code: int) -> str:
    """'exit status N' or 'killed by SIGNAME', from ``os.waitstatus_to_exitcode``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def dataclasses_replace(config: ServerConfig, **changes) -> ServerConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, log_level, processes = config_from_args(argv)
    except (KvError, OSError, ValueError) as exc:
        print(f"kvgrpc-server: {exc}", file=sys.stderr)
        return 2
    level, log_format = log_level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    problem = _exposure_problem(config)
    if problem is not None:
        if not config.allow_insecure_public:
            _LOGGER.error("refusing to start: %s; add TLS (--tls-cert/--tls-key) and tokens "
                          "(--auth-tokens-file), or pass --allow-insecure-public", problem)
            return 2
        _LOGGER.warning("%s (--allow-insecure-public)", problem)
    if processes > 1:
        return _serve_processes(config, processes)
    return _serve(config)


if __name__ == "__main__":
    sys.exit(main())
