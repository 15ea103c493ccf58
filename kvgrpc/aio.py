"""The asyncio client of kvgrpc: :class:`KeyValueClient` with the surface of the blocking
:class:`kvgrpc.client.KeyValueClient`, every call a coroutine (as redis-py ships
``redis.asyncio``)::

    import asyncio
    from kvgrpc.aio import KeyValueClient

    async def main() -> None:
        async with KeyValueClient("localhost:1313") as kv:
            await kv.put("greeting", b"hello")
            print(await kv.get("greeting"))                # b'hello'
            await kv.stream_put((f"k{i}", b"v") for i in range(100_000))
            async for record in kv.scan("k", page_size=500):
                ...
            async with kv.watch(prefix="k") as watch:       # every change to keys "k..."
                async for event in watch:
                    print(event.type, event.key, event.revision)

    asyncio.run(main())

Built on ``grpc.aio``: create the client inside the event loop that uses it (in a
coroutine, or with that loop running) and use it from that loop only. It shares its
request building, reply conversion, error mapping and read-retry policy with the
blocking client (``kvgrpc/_calls.py``), so both behave the same: plain Python values in
and out, the exceptions of :mod:`kvgrpc.errors`, reads retried by gRPC on UNAVAILABLE,
writes never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio

from kvgrpc import _calls, kv_pb2, kv_pb2_grpc
from kvgrpc._calls import DEFAULT_RETRY, RetryPolicy, Value
from kvgrpc.auth import AUTHORIZATION, channel_credentials
from kvgrpc.client import DEFAULT_TARGET, channel_target
from kvgrpc.errors import KvError, NotFound, Unavailable
from kvgrpc.records import EndpointStatus, Event, Limits, LoadProgress, Record
from kvgrpc.tokens import latest

__all__ = ["KeyValueClient", "Watch", "WatchEvent", "RetryPolicy", "DEFAULT_TARGET"]

#: One change a watch delivers (:class:`kvgrpc.records.Event`), under the name of earlier releases.
WatchEvent = Event

Records = Iterable[tuple[str, Value]] | AsyncIterable[tuple[str, Value]]


class KeyValueClient:
    """An asyncio client of a kvgrpc server (``target`` is ``host:port``), or of several
    servers in front of the same databases (``host:port,host:port``: round-robin).

    Every argument means what it means for :class:`kvgrpc.client.KeyValueClient`:
    ``timeout`` is each unary call's deadline in seconds (``stream_put`` has none);
    ``token`` is sent as a bearer token; ``tls``/``ca_file``/``cert_file``/``key_file``
    make the channel TLS; ``read_your_writes`` makes every read carry the token of this
    client's latest write; ``retry`` is the :class:`~kvgrpc._calls.RetryPolicy` gRPC
    follows to retry reads (Get, BatchGet, Scan pages, GetStatus, GetLoad) that fail
    with UNAVAILABLE (None: never). Writes are never retried: a Put or Delete whose
    reply was lost may have been committed, and sending it again would make another
    version.

    Not thread-safe: one event loop uses it (any number of tasks of that loop may share
    it). Use it as an async context manager, or ``await`` :meth:`close`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 30.0,
        batch_records: int = 500,
        batch_bytes: int = 1 << 20,
        read_your_writes: bool = False,
        token: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        stream_retries: int = 6,
    ) -> None:
        self.target = target
        self.stream_retries = stream_retries
        self.timeout = timeout
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self._limits: Limits | None = None  # the server's, once asked (limits())
        self.read_your_writes = read_your_writes
        self.retry = retry
        self._token = ""
        self._revision = 0
        self._metadata: tuple[tuple[str, str], ...] = (
            ((AUTHORIZATION, f"Bearer {token}"),) if token else ()
        )
        options = _calls.channel_options("," in target, retry)
        if tls or ca_file or cert_file:
            credentials = channel_credentials(ca_file, cert_file, key_file)
            self._channel = grpc.aio.secure_channel(channel_target(target), credentials,
                                                    options=options)
        else:
            self._channel = grpc.aio.insecure_channel(channel_target(target), options=options)
        self._stub = kv_pb2_grpc.KeyValueStub(self._channel)

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Connects now (rather than on the first call); raises Unavailable if it cannot."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise Unavailable(f"cannot connect to {self.target} within {timeout:g} s") from None

    async def __aenter__(self) -> KeyValueClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        await self._channel.close()

    async def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:  # grpc.aio.AioRpcError
            raise _calls.error_from(exc) from None

    # -- the session: the latest write ----------------------------------------------

    @property
    def last_write_token(self) -> str:
        """The token covering every write this client has made ("" before the first)."""
        return self._token

    @property
    def last_revision(self) -> int:
        """The revision of the latest write this client has made (0 before the first)."""
        return self._revision

    def _wrote(self, reply: Any) -> None:
        if reply.write_token:
            self._token = latest(self._token, reply.write_token)
        self._revision = max(self._revision, reply.revision)

    def _read_options(self, consistency: str | None, max_staleness_ms: int,
                      min_write_token: str | None) -> kv_pb2.ReadOptions:
        return _calls.read_options(consistency, max_staleness_ms, min_write_token,
                                   self._token if self.read_your_writes else None)

    # -- writes ------------------------------------------------------------------------

    async def put(self, key: str, value: Value, *, expected_version: int | None = None) -> int:
        """Stores ``value`` under ``key``; returns the new version. With
        ``expected_version`` it is a compare-and-set (0: the key must not exist), raising
        :class:`~kvgrpc.errors.FailedPrecondition` with ``current_version`` otherwise."""
        reply = await self._call(self._stub.Put, _calls.put_request(key, value, expected_version))
        self._wrote(reply)
        return int(reply.version)

    async def delete(self, key: str) -> bool:
        """Removes ``key``; returns whether it existed."""
        reply = await self._call(self._stub.Delete, kv_pb2.DeleteRequest(key=_calls.as_key(key)))
        self._wrote(reply)
        return bool(reply.deleted)

    async def stream_put(
        self,
        records: Records,
        *,
        load_id: str | None = None,
        start_index: int = 0,
        on_sent: Callable[[int], None] | None = None,
    ) -> int:
        """Streams ``records`` (an iterable or an async iterable of ``(key, value)``) over
        one call, in order; returns how many were committed.

        Records are sent in messages of up to ``batch_records`` records / ``batch_bytes``
        bytes, never larger than the server accepts (its limits are asked once per client),
        read lazily; ``on_sent(n)`` is called as each message is sent. With
        ``load_id`` the stream belongs to that named load and its first record is the
        load's record ``start_index``: records the load already committed are skipped by
        the server, not written again. On failure the raised error's ``committed`` says
        how many leading records of ``records`` are committed (for a named load: the
        load's committed count minus ``start_index``; when the server vanished without
        saying, the client asks :meth:`get_load`). An exception raised by ``records`` ends
        the stream (the server commits what was sent) and is raised again, with a note of
        the committed count.

        As with the blocking client, a source that can be iterated again (a list, or an
        object whose ``__iter__``/``__aiter__`` returns a fresh iterator; not a generator)
        is retried on UNAVAILABLE up to ``stream_retries`` times with growing pauses,
        from exactly the records not committed (asked with :meth:`get_load`); for this a
        stream without ``load_id`` over such a source is named by the client (``auto-``
        and a random UUID).
        """
        attempts = _calls.StreamAttempts(load_id, start_index, _reiterable(records),
                                         self.stream_retries)
        if self._limits is None:
            with contextlib.suppress(KvError):  # then the stream itself says what is wrong
                await self.limits()
        while True:
            batcher = _calls.StreamBatcher(self.batch_records,
                                           _calls.stream_batch_bytes(self.batch_bytes, self._limits),
                                           load_id=attempts.load_id, start_index=attempts.start)
            source_error: list[BaseException] = []
            messages = _messages(_skipping(records, attempts.offset), batcher, on_sent, source_error)
            try:
                reply = await self._stub.StreamPut(messages, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = _calls.error_from(exc)
                pause = attempts.failed(error)
                if pause is None:
                    await self._fill_committed(error, attempts)
                    attempts.name_load(error)
                    raise error from None
                await asyncio.sleep(pause)
                assert attempts.load_id is not None  # retry implies a named load
                with contextlib.suppress(NotFound, Unavailable):  # none yet / still down
                    attempts.load_reached((await self.get_load(attempts.load_id)).committed)
                continue
            self._wrote(reply)
            committed = attempts.offset + int(reply.committed_count)
            if source_error:
                failure = source_error[0]
                failure.add_note(f"the stream ended there: {committed} records committed")
                raise failure
            return committed

    async def _fill_committed(self, error: KvError, attempts: _calls.StreamAttempts) -> None:
        """A load's stream that failed without a count (the server vanished): asks GetLoad
        (another server may answer), so ``error.committed`` is exact when it can be."""
        if attempts.load_id is None or error.committed is not None:
            return
        try:
            error.committed = attempts.committed_of((await self.get_load(attempts.load_id)).committed)
        except NotFound:
            error.committed = 0
        except KvError:
            pass  # unknown: the caller asks get_load later

    # -- reads -------------------------------------------------------------------------

    async def get(self, key: str, *, consistency: str | None = None, max_staleness_ms: int = 0,
                  min_write_token: str | None = None) -> bytes:
        """Returns the value under ``key``; raises :class:`~kvgrpc.errors.NotFound` if none."""
        record = await self.get_record(key, consistency=consistency,
                                       max_staleness_ms=max_staleness_ms,
                                       min_write_token=min_write_token)
        return record.value

    async def get_record(self, key: str, *, consistency: str | None = None,
                         max_staleness_ms: int = 0, min_write_token: str | None = None) -> Record:
        """Returns the record (key, value, version) under ``key``; raises NotFound if none."""
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        reply = await self._call(self._stub.Get, kv_pb2.GetRequest(key=_calls.as_key(key), read_options=options))
        return _calls.record_from(reply.record)

    async def batch_get(self, keys: Sequence[str], *, consistency: str | None = None,
                        max_staleness_ms: int = 0,
                        min_write_token: str | None = None) -> dict[str, bytes]:
        """Returns ``{key: value}`` for the keys that exist, in request order; keys a reply
        leaves unprocessed (the server's byte budget) are asked again until all are read
        (see :meth:`kvgrpc.client.KeyValueClient.batch_get`)."""
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        rounds = _calls.BatchGetRounds(keys)
        while True:
            rounds.add(await self._call(
                self._stub.BatchGet, kv_pb2.BatchGetRequest(keys=rounds.pending, read_options=options)))
            if not rounds.pending:
                return rounds.result()

    async def scan(self, prefix: str = "", *, start: str = "", end: str = "", page_size: int = 100,
                   page_bytes: int = 0, keys_only: bool = False, consistency: str | None = None,
                   max_staleness_ms: int = 0,
                   min_write_token: str | None = None) -> AsyncIterator[Record]:
        """Yields (``async for``) the records in key order with ``prefix`` and in
        ``[start, end)``, fetching pages of ``page_size`` records / ``page_bytes`` bytes
        lazily. With ``keys_only`` the values are empty."""
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        token = ""
        while True:
            reply = await self._call(self._stub.Scan, _calls.scan_request(
                prefix, start, end, page_size, page_bytes, keys_only, options, token))
            for r in reply.records:
                yield _calls.record_from(r)
            token = reply.next_page_token
            if not token:
                return

    def watch(self, key: str | None = None, *, prefix: str | None = None,
              start_revision: int | None = None, resume: bool = True) -> Watch:
        """Watches one ``key``, or every key starting with ``prefix`` (``""``: all keys).

        Returns a :class:`Watch` (``async for event in watch``) with the semantics of
        :meth:`kvgrpc.client.KeyValueClient.watch`: events in commit order after
        ``start_revision`` (None: from now); with ``resume`` a stream broken by
        UNAVAILABLE is reopened from the last revision received without losing or
        repeating an event.
        """
        _calls.check_watch_target(key, prefix)
        return Watch(self._stub, key, prefix, start_revision, resume, self._metadata)

    async def status(self) -> list[EndpointStatus]:
        """The server's database endpoints and their measured state, the master first."""
        return _calls.endpoints_from(await self._call(self._stub.GetStatus, kv_pb2.GetStatusRequest()))

    async def limits(self) -> Limits:
        """The sizes and counts the server accepts and sends (``GetStatus``'s limits).
        Kept: :meth:`stream_put` sizes its messages to fit."""
        self._limits = _calls.limits_from(await self._call(self._stub.GetStatus, kv_pb2.GetStatusRequest()))
        return self._limits

    async def get_load(self, load_id: str) -> LoadProgress:
        """The progress of the named load ``load_id``; NotFound when unknown or expired."""
        return _calls.load_from(
            await self._call(self._stub.GetLoad, kv_pb2.GetLoadRequest(load_id=load_id)))


def _reiterable(records: Records) -> bool:
    """Whether iterating ``records`` again starts afresh (a list; not a generator)."""
    if isinstance(records, AsyncIterable):
        return aiter(records) is not records
    return iter(records) is not records


def _skipping(records: Records, count: int) -> Records:
    """``records`` without its first ``count`` (already committed) records."""
    if not count:
        return records
    if isinstance(records, AsyncIterable):
        async def rest() -> AsyncIterator[tuple[str, Value]]:
            index = 0
            async for record in records:
                if index >= count:
                    yield record
                index += 1
        return rest()
    return itertools.islice(records, count, None)


async def _messages(records: Records, batcher: _calls.StreamBatcher,
                    on_sent: Callable[[int], None] | None,
                    source_error: list[BaseException]) -> AsyncIterator[kv_pb2.StreamPutRequest]:
    """The messages of a StreamPut (see :func:`kvgrpc._calls.stream_messages`). An
    exception raised by ``records`` is kept in ``source_error`` and ends the stream
    (gRPC would turn it into an opaque status)."""
    try:
        if isinstance(records, AsyncIterable):
            async for key, value in records:
                message = batcher.add(key, value)
                if message is not None:
                    yield message
                    if on_sent:
                        on_sent(len(message.records))
        else:
            for message in _calls.stream_messages(records, batcher, on_sent, source_error):
                yield message
            return  # the last message is sent
    except Exception as exc:  # noqa: BLE001 - raised again by stream_put
        source_error.append(exc)
    last = batcher.finish()
    if last is not None:
        yield last
        if on_sent:
            on_sent(len(last.records))


class Watch:
    """An open watch (see :meth:`KeyValueClient.watch`): an async iterator of
    :class:`~kvgrpc.records.Event`.

    ``revision`` is how far it has got: every matching change up to that revision has
    been delivered (None until the server has answered). Use it as an async context
    manager, or call :meth:`cancel` (from the client's event loop) to end it; the
    iteration then stops.
    """

    RETRY_MAX_SECONDS = _calls.WATCH_RETRY_MAX_SECONDS

    def __init__(self, stub: kv_pb2_grpc.KeyValueStub, key: str | None, prefix: str | None,
                 start_revision: int | None, resume: bool,
                 metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._stub = stub
        self._resume = resume
        self._metadata = metadata
        self._cursor = _calls.WatchCursor(key, prefix, start_revision)
        self._call: Any = None
        self._cancelled = asyncio.Event()
        self._events = self._run()

    @property
    def revision(self) -> int | None:
        """Every matching change up to this revision has been delivered."""
        return self._cursor.revision

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Ends the watch; the iteration stops."""
        self._cancelled.set()
        call = self._call
        if call is not None:
            call.cancel()

    async def _run(self) -> AsyncIterator[Event]:
        failures = 0
        cursor = self._cursor
        while not self._cancelled.is_set():
            # Reopened after a break: the cursor skips what was already delivered.
            cursor.reopened()
            self._call = self._stub.Watch(cursor.request(), metadata=self._metadata)
            try:
                async for response in self._call:
                    failures = 0
                    for event in cursor.events(response):
                        yield event
                raise Unavailable("the server ended the watch")  # it never does so normally
            except asyncio.CancelledError:
                if self._cancelled.is_set():  # our cancel() of the call, not of the task
                    return
                raise
            except (grpc.RpcError, Unavailable) as exc:
                if self._cancelled.is_set():
                    return
                error: KvError = _calls.error_from(exc) if isinstance(exc, grpc.RpcError) else exc
                if not (self._resume and _calls.watch_resumable(error)):
                    raise error from None
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cancelled.wait(), _calls.watch_retry_delay(failures))
