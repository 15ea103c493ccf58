"""The Python client of kvgrpc, and its command line.

API::

    from kvgrpc import KeyValueClient, NotFound

    with KeyValueClient("localhost:1313") as kv:
        kv.put("greeting", b"hello")
        kv.get("greeting")                  # b'hello'
        kv.stream_put(("k%d" % i, b"v") for i in range(100_000))   # -> 100000
        for event in kv.watch(prefix="k"):  # every change to keys starting with "k"
            print(event.type, event.key, event.revision)

Command line (``python -m kvgrpc.client --help``)::

    python -m kvgrpc.client [--target HOST:PORT] put KEY VALUE | get KEY | delete KEY
    python -m kvgrpc.client stream FILE.csv [--no-header] [--skip-bad] [--resume-from N]
    python -m kvgrpc.client watch KEY | --prefix PREFIX [--from-revision N] [--count N]
    python -m kvgrpc.client shell

The client takes and returns plain Python values and raises the exceptions of
:mod:`kvgrpc.errors`; no protobuf or gRPC type leaks out. Reads are retried by gRPC on
UNAVAILABLE (:class:`RetryPolicy`); writes are not. For asyncio services,
:mod:`kvgrpc.aio` has the same client with every call a coroutine.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from kvgrpc import _calls, kv_pb2, kv_pb2_grpc
from kvgrpc._calls import DEFAULT_RETRY, RetryPolicy, Value
from kvgrpc.auth import channel_credentials, with_token
from kvgrpc.errors import KvError, NotFound, Unavailable
from kvgrpc.records import EndpointStatus, Event, Limits, LoadProgress, Record
from kvgrpc.tokens import latest

__all__ = ["KeyValueClient", "Record", "EndpointStatus", "Limits", "LoadProgress", "RetryPolicy",
           "Watch", "WatchEvent", "DEFAULT_TARGET"]

#: One change a watch delivers: :class:`kvgrpc.records.Event` (``type`` "put" or
#: "delete", ``key``, ``value``, ``version``, ``revision``), under the name of earlier releases.
WatchEvent = Event

DEFAULT_TARGET = "localhost:1313"

_Reply = TypeVar("_Reply")

# Shared with the asyncio client (kvgrpc/_calls.py); the old private names stay usable.
_error_from = _calls.error_from


def channel_target(target: str) -> str:
    """The gRPC target for ``host:port`` or several ``host:port,host:port``.

    Several servers become one ``ipv4:``/``ipv6:`` address list (names resolved here), so
    one channel holds a connection to each and round_robin spreads calls over them.
    """
    parts = [p.strip() for p in target.split(",") if p.strip()]
    if len(parts) <= 1:
        return target
    addresses = []
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"target {part!r} is not HOST:PORT")
        host = host.strip("[]")
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first: one family for all
        family, *_, sockaddr = infos[0]
        ip = sockaddr[0]
        addresses.append((family, f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"))
    families = {family for family, _ in addresses}
    if len(families) > 1:
        raise ValueError("several targets must all be IPv4 or all IPv6")
    scheme = "ipv6" if families == {socket.AF_INET6} else "ipv4"
    return f"{scheme}:" + ",".join(address for _, address in addresses)


class KeyValueClient:
    """A client of a kvgrpc server (``target`` is ``host:port``), or of several servers in
    front of the same databases (``host:port,host:port``: calls are spread round-robin).

    Thread-safe: one instance (one HTTP/2 channel) can be shared by many threads. Use it
    as a context manager, or call :meth:`close`. Unary calls have a deadline of
    ``timeout`` seconds; ``stream_put`` has none (a large load may take long).

    ``token`` is sent as a bearer token with every call; ``tls`` (or ``ca_file``) makes
    the channel TLS, trusting ``ca_file`` (default: the system's roots), presenting
    ``cert_file``/``key_file`` to a server that requires client certificates.

    Reads take ``consistency``: ``"eventual"`` (the server's default: any healthy
    replica), ``"strong"`` (the master) or ``"bounded"`` with ``max_staleness_ms``. The
    client remembers the token of the latest write it made (:attr:`last_write_token`);
    with ``read_your_writes=True`` every read carries it, so a read always sees this
    client's earlier writes, whichever replica answers. Pass ``min_write_token`` to a read
    to carry a token from another client or process.

    Reads (Get, BatchGet, each Scan page, GetStatus, GetLoad) that fail with UNAVAILABLE
    (a server restarting, a connection lost, a database briefly unreachable) are retried
    by gRPC itself, following ``retry`` (a :class:`RetryPolicy` written into the
    channel's service config; ``None``: no retries), within the call's ``timeout``. Writes
    are never retried: a Put or Delete whose reply was lost may have been committed, and
    sending it again would create another version (or fail a compare-and-set that in fact
    succeeded); the caller decides, knowing the error. ``stream_put`` reports what was
    committed, and a :class:`Watch` resumes by itself from the revision it has.

    ``stream_retries``: how many times :meth:`stream_put` retries a re-iterable source
    after UNAVAILABLE, resuming from the exact point (0: never).

    The asyncio twin with the same surface is :class:`kvgrpc.aio.KeyValueClient`.
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
        self.read_your_writes = read_your_writes
        self._token = ""
        self._revision = 0
        self._token_lock = threading.Lock()
        self.timeout = timeout
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self._limits: Limits | None = None  # the server's, once asked (limits())
        self.retry = retry
        options = _calls.channel_options("," in target, retry)
        if tls or ca_file or cert_file:
            credentials = channel_credentials(ca_file, cert_file, key_file)
            self._channel = grpc.secure_channel(channel_target(target), credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(channel_target(target), options=options)
        self._stub = kv_pb2_grpc.KeyValueStub(with_token(self._channel, token))

    def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Connects now (rather than on the first call); raises Unavailable if it cannot."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise Unavailable(f"cannot connect to {self.target} within {timeout:g} s") from None

    def __enter__(self) -> KeyValueClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        self._channel.close()

    def _call(self, method: Callable[..., _Reply], request: Any) -> _Reply:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _error_from(exc) from None

    @property
    def last_write_token(self) -> str:
        """The token covering every write this client has made ("" before the first)."""
        with self._token_lock:
            return self._token

    @property
    def last_revision(self) -> int:
        """The revision of the latest write this client has made (0 before the first): a
        :meth:`watch` from it sees the changes made after all of them."""
        with self._token_lock:
            return self._revision

    def _wrote(self, reply: Any) -> None:
        with self._token_lock:
            if reply.write_token:
                self._token = latest(self._token, reply.write_token)
            self._revision = max(self._revision, reply.revision)

    def _read_options(self, consistency: str | None, max_staleness_ms: int,
                      min_write_token: str | None) -> kv_pb2.ReadOptions:
        return _calls.read_options(consistency, max_staleness_ms, min_write_token,
                                   self.last_write_token if self.read_your_writes else None)

    def put(self, key: str, value: Value, *, expected_version: int | None = None) -> int:
        """Stores ``value`` under ``key`` (str values are UTF-8 encoded); returns the new version.

        With ``expected_version`` it is a compare-and-set: the write happens only if the key
        is at that version (0: does not exist); otherwise
        :class:`~kvgrpc.errors.FailedPrecondition` is raised, with ``current_version``.
        """
        reply = self._call(self._stub.Put, _calls.put_request(key, value, expected_version))
        self._wrote(reply)
        return reply.version

    def get(self, key: str, *, consistency: str | None = None, max_staleness_ms: int = 0,
            min_write_token: str | None = None) -> bytes:
        """Returns the value under ``key``; raises :class:`~kvgrpc.errors.NotFound` if none."""
        return self.get_record(key, consistency=consistency, max_staleness_ms=max_staleness_ms,
                               min_write_token=min_write_token).value

    def get_record(self, key: str, *, consistency: str | None = None, max_staleness_ms: int = 0,
                   min_write_token: str | None = None) -> Record:
        """Returns the record (key, value, version) under ``key``; raises NotFound if none."""
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        reply = self._call(self._stub.Get, kv_pb2.GetRequest(key=_calls.as_key(key), read_options=options))
        return _calls.record_from(reply.record)

    def delete(self, key: str) -> bool:
        """Removes ``key``; returns whether it existed."""
        reply = self._call(self._stub.Delete, kv_pb2.DeleteRequest(key=_calls.as_key(key)))
        self._wrote(reply)
        return reply.deleted

    def batch_get(self, keys: Sequence[str], *, consistency: str | None = None,
                  max_staleness_ms: int = 0, min_write_token: str | None = None) -> dict[str, bytes]:
        """Returns ``{key: value}`` for the keys that exist, in request order (1 to the
        server's ``max_batch_get_keys``, 1000 by default, per call).

        A server answers at most its byte budget (``Limits.max_batch_get_bytes``) per
        reply and returns the keys it had no room for as unprocessed; they are asked
        again, round after round, until every key is read. Each round is one BatchGet
        with the same read options (and the full ``timeout``); a round that reads no key
        raises :class:`~kvgrpc.errors.Internal`.
        """
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        rounds = _calls.BatchGetRounds(keys)
        while True:
            rounds.add(self._call(self._stub.BatchGet,
                                  kv_pb2.BatchGetRequest(keys=rounds.pending, read_options=options)))
            if not rounds.pending:
                return rounds.result()

    def scan(self, prefix: str = "", *, start: str = "", end: str = "", page_size: int = 100,
             page_bytes: int = 0, keys_only: bool = False, consistency: str | None = None,
             max_staleness_ms: int = 0, min_write_token: str | None = None) -> Iterator[Record]:
        """Yields the records in key order (bytewise UTF-8) with ``prefix`` and in
        ``[start, end)``, fetching pages of ``page_size`` records / ``page_bytes`` bytes lazily.
        With ``keys_only`` the values are empty."""
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        token = ""
        while True:
            reply = self._call(self._stub.Scan, _calls.scan_request(
                prefix, start, end, page_size, page_bytes, keys_only, options, token))
            for r in reply.records:
                yield _calls.record_from(r)
            token = reply.next_page_token
            if not token:
                return

    def watch(self, key: str | None = None, *, prefix: str | None = None,
              start_revision: int | None = None, resume: bool = True) -> Watch:
        """Watches one ``key``, or every key starting with ``prefix`` (``""``: all keys).

        Returns a :class:`Watch`: iterate it for :class:`~kvgrpc.records.Event` s, in commit order,
        from the changes after ``start_revision`` (None: from now). With ``resume``, a
        stream that breaks with UNAVAILABLE (a server stopping, a lost connection) is
        reopened from the last revision received, on any of the client's servers, without
        losing or repeating an event. Other errors (e.g. OutOfRange: the revision is no
        longer kept) are raised from the iteration. ``cancel()`` ends it.
        """
        _calls.check_watch_target(key, prefix)
        return Watch(self._stub, key, prefix, start_revision, resume)

    def status(self) -> list[EndpointStatus]:
        """The server's database endpoints and their measured state, the master first."""
        reply = self._call(self._stub.GetStatus, kv_pb2.GetStatusRequest())
        return _calls.endpoints_from(reply)

    def limits(self) -> Limits:
        """The sizes and counts the server accepts and sends (``GetStatus``'s limits); a
        server too old to report them yields the defaults of :class:`~kvgrpc.records.Limits`.
        Kept: :meth:`stream_put` sizes its messages to fit."""
        self._limits = _calls.limits_from(self._call(self._stub.GetStatus, kv_pb2.GetStatusRequest()))
        return self._limits

    def get_load(self, load_id: str) -> LoadProgress:
        """The progress of a named load (a :meth:`stream_put` with ``load_id``): how many of
        its leading records are committed. Raises NotFound when the server has no record
        of it (never committed a record, or expired)."""
        reply = self._call(self._stub.GetLoad, kv_pb2.GetLoadRequest(load_id=load_id))
        return _calls.load_from(reply)

    def stream_put(
        self,
        records: Iterable[tuple[str, Value]],
        *,
        load_id: str | None = None,
        start_index: int = 0,
        on_sent: Callable[[int], None] | None = None,
    ) -> int:
        """Streams records over one call, in order; returns how many of ``records`` are
        committed (all of them when it returns).

        Records are sent in messages of up to ``batch_records`` records / ``batch_bytes``
        bytes, and never larger than the server accepts (its limits are asked once per
        client), read lazily from ``records`` (memory stays flat). ``on_sent(n)`` is called
        after each message with the number of records it carried (records sent again
        by a retry are reported again).

        With ``load_id`` the stream is a named load, exactly-once: ``records`` are the
        load's records from index ``start_index`` on, and the server skips those an
        earlier stream of the load committed (ask :meth:`get_load`). On failure the raised
        error's ``committed`` says how many leading records of ``records`` are committed
        (for a load: the load's committed count minus ``start_index``; when the server
        vanished without saying, the client asks :meth:`get_load`; None if that fails too).
        An exception raised by ``records`` (or a record that is not a ``(str, bytes or
        str)`` pair: TypeError) ends the stream: the records before it are committed, and
        it is raised again with a note of the committed count.

        When ``records`` can be iterated again (a list, or any object whose ``__iter__``
        returns a fresh iterator; not an iterator or generator), a stream that fails with
        UNAVAILABLE (a server stopping or restarting, a lost connection) is retried up to
        ``stream_retries`` times with growing pauses: the client asks :meth:`get_load`,
        skips exactly the committed records of a fresh iteration and sends the rest (a
        resumed attempt that meets ABORTED, the late commit of a vanished server's last
        batch, is retried the same way). For this, a stream without ``load_id`` over such
        a source is named by the client (``auto-`` and a random UUID).
        """
        attempts = _calls.StreamAttempts(load_id, start_index, iter(records) is not records,
                                         self.stream_retries)
        while True:
            source_error: list[BaseException] = []  # what `records` raised, if it did
            try:
                reply = self._stub.StreamPut(self._messages(
                    itertools.islice(records, attempts.offset, None) if attempts.offset else records,
                    on_sent, attempts.load_id, attempts.start, source_error))
            except grpc.RpcError as exc:
                error = _error_from(exc)
                pause = attempts.failed(error)
                if pause is None:
                    self._fill_committed(error, attempts)
                    attempts.name_load(error)
                    raise error from None
                time.sleep(pause)
                assert attempts.load_id is not None  # retry implies a named load
                # NotFound: nothing of the load committed yet; Unavailable: still down
                # (the next attempt fails at once and waits longer).
                with contextlib.suppress(NotFound, Unavailable):
                    attempts.load_reached(self.get_load(attempts.load_id).committed)
                continue
            self._wrote(reply)
            committed = attempts.offset + reply.committed_count
            if source_error:
                failure = source_error[0]
                failure.add_note(f"the stream ended there: {committed} records committed")
                raise failure
            return committed

    def _fill_committed(self, error: KvError, attempts: _calls.StreamAttempts) -> None:
        """A load's stream that failed without a count (the server vanished): asks
        GetLoad (another server may answer), so ``error.committed`` is exact when it can be."""
        if attempts.load_id is None or error.committed is not None:
            return
        try:
            error.committed = attempts.committed_of(self.get_load(attempts.load_id).committed)
        except NotFound:
            error.committed = 0
        except KvError:
            pass  # unknown: the caller asks get_load later

    def _messages(
        self, records: Iterable[tuple[str, Value]], on_sent: Callable[[int], None] | None,
        load_id: str | None = None, start_index: int = 0,
        source_error: list[BaseException] | None = None,
    ) -> Iterator[kv_pb2.StreamPutRequest]:
        if self._limits is None:
            with contextlib.suppress(KvError):  # then the stream itself says what is wrong
                self.limits()
        batcher = _calls.StreamBatcher(self.batch_records,
                                       _calls.stream_batch_bytes(self.batch_bytes, self._limits),
                                       load_id=load_id, start_index=start_index)
        return _calls.stream_messages(records, batcher, on_sent, source_error)


class Watch:
    """An open watch (see :meth:`KeyValueClient.watch`): an iterator of
    :class:`~kvgrpc.records.Event`.

    ``revision`` is how far it has got: every matching change up to that revision has
    been delivered (None until the server has answered). Use it as a context manager, or
    call :meth:`cancel` (from any thread) to end it; the iteration then stops.
    """

    RETRY_MAX_SECONDS = _calls.WATCH_RETRY_MAX_SECONDS

    def __init__(self, stub: kv_pb2_grpc.KeyValueStub, key: str | None, prefix: str | None,
                 start_revision: int | None, resume: bool) -> None:
        self._stub = stub
        self._resume = resume
        self._cursor = _calls.WatchCursor(key, prefix, start_revision)
        self._call: Any = None
        self._cancelled = threading.Event()
        self._events = self._run()

    @property
    def revision(self) -> int | None:
        """Every matching change up to this revision has been delivered (None until the
        server has answered)."""
        return self._cursor.revision

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Ends the watch (from any thread): the iteration stops."""
        self._cancelled.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _run(self) -> Iterator[Event]:
        failures = 0
        cursor = self._cursor
        while not self._cancelled.is_set():
            # Reopened after a break: the server sends again the events above `revision`
            # that were already delivered (a revision cut short); the cursor skips them.
            cursor.reopened()
            self._call = self._stub.Watch(cursor.request())
            try:
                if self._cancelled.is_set():
                    self._call.cancel()
                for response in self._call:
                    failures = 0
                    yield from cursor.events(response)
                raise Unavailable("the server ended the watch")  # it never does so normally
            except (grpc.RpcError, Unavailable) as exc:
                if self._cancelled.is_set():
                    return
                error = _error_from(exc) if isinstance(exc, grpc.RpcError) else exc
                if not (self._resume and _calls.watch_resumable(error)):
                    raise error from None
                failures += 1
                self._cancelled.wait(_calls.watch_retry_delay(failures))


if __name__ == "__main__":  # `python -m kvgrpc.client ...`: the command line, kvgrpc.cli
    from kvgrpc.cli.commands import main

    sys.exit(main())
