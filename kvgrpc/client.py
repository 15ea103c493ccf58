"""The Python client of kvgrpc (its command line is :mod:`kvgrpc.cli`).

API::

    from kvgrpc import KeyValueClient, NotFound

    with KeyValueClient("localhost:1313") as kv:
        kv.put("greeting", b"hello")
        kv.get("greeting")                  # b'hello'
        kv.stream_put(("k%d" % i, b"v") for i in range(100_000))   # -> 100000
        for event in kv.watch(prefix="k"):  # every change to keys starting with "k"
            print(event.type, event.key, event.revision)

The command line, ``python -m kvgrpc.client --help`` (or ``python -m kvgrpc.cli``), is
the package :mod:`kvgrpc.cli`.

The client takes and returns plain Python values and raises the exceptions of
:mod:`kvgrpc.errors`; no protobuf or gRPC type leaks out.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields as dataclass_fields
from typing import NamedTuple

import grpc

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.auth import channel_credentials, with_token
from kvgrpc.errors import (
    COMMITTED_METADATA_KEY,
    CURRENT_VERSION_METADATA_KEY,
    KvError,
    Unavailable,
    error_class,
)
from kvgrpc.records import EndpointStatus, Limits, LoadProgress, Record
from kvgrpc.tokens import latest

__all__ = ["KeyValueClient", "Record", "EndpointStatus", "Watch", "WatchEvent", "DEFAULT_TARGET"]

DEFAULT_TARGET = "localhost:1313"

Value = bytes | str

_CONSISTENCY = {
    None: kv_pb2.READ_CONSISTENCY_UNSPECIFIED,
    "eventual": kv_pb2.READ_CONSISTENCY_EVENTUAL,
    "strong": kv_pb2.READ_CONSISTENCY_STRONG,
    "bounded": kv_pb2.READ_CONSISTENCY_BOUNDED_STALENESS,
}


def _as_bytes(value: Value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _error_from(exc: grpc.RpcError) -> KvError:
    """Turns a failed call into the project's exception, keeping the committed count."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or code.name.lower()
    numbers: dict[str, int] = {}
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key in (COMMITTED_METADATA_KEY, CURRENT_VERSION_METADATA_KEY):
            numbers[key] = int(value)
    return error_class(code.name)(
        details, committed=numbers.get(COMMITTED_METADATA_KEY),
        current_version=numbers.get(CURRENT_VERSION_METADATA_KEY),
    )


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
    ) -> None:
        self.target = target
        self.read_your_writes = read_your_writes
        self._token = ""
        self._revision = 0
        self._token_lock = threading.Lock()
        self.timeout = timeout
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        options = [("grpc.max_receive_message_length", -1)]
        if "," in target:  # several servers: spread calls over them
            options.append(("grpc.lb_policy_name", "round_robin"))
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

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
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

    def _wrote(self, reply) -> None:
        with self._token_lock:
            if reply.write_token:
                self._token = latest(self._token, reply.write_token)
            self._revision = max(self._revision, reply.revision)

    def _read_options(self, consistency, max_staleness_ms, min_write_token) -> kv_pb2.ReadOptions:
        if consistency not in _CONSISTENCY:
            raise ValueError(f"consistency must be one of {sorted(k for k in _CONSISTENCY if k)}")
        token = min_write_token or ""
        if self.read_your_writes:
            token = latest(self.last_write_token, token)
        return kv_pb2.ReadOptions(consistency=_CONSISTENCY[consistency],
                                  max_staleness_ms=max_staleness_ms, min_write_token=token)

    def put(self, key: str, value: Value, *, expected_version: int | None = None) -> int:
        """Stores ``value`` under ``key`` (str values are UTF-8 encoded); returns the new version.

        With ``expected_version`` it is a compare-and-set: the write happens only if the key
        is at that version (0: does not exist); otherwise
        :class:`~kvgrpc.errors.FailedPrecondition` is raised, with ``current_version``.
        """
        request = kv_pb2.PutRequest(key=key, value=_as_bytes(value))
        if expected_version is not None:
            request.expected_version = expected_version
        reply = self._call(self._stub.Put, request)
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
        reply = self._call(self._stub.Get, kv_pb2.GetRequest(key=key, read_options=options))
        return Record(reply.record.key, reply.record.value, reply.record.version)

    def delete(self, key: str) -> bool:
        """Removes ``key``; returns whether it existed."""
        reply = self._call(self._stub.Delete, kv_pb2.DeleteRequest(key=key))
        self._wrote(reply)
        return reply.deleted

    def batch_get(self, keys: Sequence[str], *, consistency: str | None = None,
                  max_staleness_ms: int = 0, min_write_token: str | None = None) -> dict[str, bytes]:
        """Returns ``{key: value}`` for the keys that exist (1 to 1000 keys per call)."""
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        reply = self._call(self._stub.BatchGet,
                           kv_pb2.BatchGetRequest(keys=list(keys), read_options=options))
        return {r.key: r.value for r in reply.records}

    def scan(self, prefix: str = "", *, start: str = "", end: str = "", page_size: int = 100,
             page_bytes: int = 0, keys_only: bool = False, consistency: str | None = None,
             max_staleness_ms: int = 0, min_write_token: str | None = None) -> Iterator[Record]:
        """Yields the records in key order (bytewise UTF-8) with ``prefix`` and in
        ``[start, end)``, fetching pages of ``page_size`` records / ``page_bytes`` bytes lazily.
        With ``keys_only`` the values are empty."""
        options = self._read_options(consistency, max_staleness_ms, min_write_token)
        token = ""
        while True:
            reply = self._call(self._stub.Scan, kv_pb2.ScanRequest(
                prefix=prefix, start_key=start, end_key=end, page_size=page_size,
                page_bytes=page_bytes, page_token=token, keys_only=keys_only,
                read_options=options,
            ))
            for r in reply.records:
                yield Record(r.key, r.value, r.version)
            token = reply.next_page_token
            if not token:
                return

    def watch(self, key: str | None = None, *, prefix: str | None = None,
              start_revision: int | None = None, resume: bool = True) -> Watch:
        """Watches one ``key``, or every key starting with ``prefix`` (``""``: all keys).

        Returns a :class:`Watch`: iterate it for :class:`WatchEvent` s, in commit order,
        from the changes after ``start_revision`` (None: from now). With ``resume``, a
        stream that breaks with UNAVAILABLE (a server stopping, a lost connection) is
        reopened from the last revision received, on any of the client's servers, without
        losing or repeating an event. Other errors (e.g. OutOfRange: the revision is no
        longer kept) are raised from the iteration. ``cancel()`` ends it.
        """
        if (key is None) == (prefix is None):
            raise ValueError("watch one key, or a prefix (prefix='' watches every key)")
        return Watch(self._stub, key, prefix, start_revision, resume)

    def status(self) -> list[EndpointStatus]:
        """The server's database endpoints and their measured state, the master first."""
        reply = self._call(self._stub.GetStatus, kv_pb2.GetStatusRequest())
        return [
            EndpointStatus(
                name=e.name, role=kv_pb2.EndpointRole.Name(e.role).removeprefix("ENDPOINT_ROLE_").lower(),
                reachable=e.reachable, healthy=e.healthy,
                lag_ms=None if e.lag_ms < 0 else e.lag_ms, pool_in_use=e.pool_in_use,
                pool_size=e.pool_size, semi_sync_active=e.semi_sync_active, problem=e.problem,
            )
            for e in reply.endpoints
        ]

    def stream_put(
        self,
        records: Iterable[tuple[str, Value]],
        *,
        load_id: str | None = None,
        start_index: int = 0,
        on_sent: Callable[[int], None] | None = None,
    ) -> int:
        """Streams records over one call, in order; returns how many were committed.

        Records are sent in messages of up to ``batch_records`` records / ``batch_bytes``
        bytes, read lazily from ``records`` (memory stays flat). ``on_sent(n)`` is called
        after each message with the number of records it carried. On failure the raised
        error's ``committed`` says how many leading records of ``records`` were committed.

        ``load_id`` names the load (see :meth:`get_load`); ``start_index`` is the index
        within the load of the first of ``records``. (Minimal version for the CLI: no
        retry of its own; the ``loads`` branch brings the full one.)
        """
        try:
            reply = self._stub.StreamPut(self._messages(records, on_sent, load_id, start_index))
        except grpc.RpcError as exc:
            error = _error_from(exc)
            if load_id and error.committed is not None:  # the load's count: make it ours
                error.committed = max(0, error.committed - start_index)
            raise error from None
        self._wrote(reply)
        return reply.committed_count

    def get_load(self, load_id: str) -> LoadProgress:
        """How far the named load has got; raises NotFound when the server has no record of it."""
        reply = self._call(self._stub.GetLoad, kv_pb2.GetLoadRequest(load_id=load_id))
        return LoadProgress(reply.load_id, reply.committed_count, reply.revision,
                            reply.write_token, reply.updated_unix_ms)

    def limits(self) -> Limits:
        """The limits the server enforces (from GetStatus)."""
        reported = self._call(self._stub.GetStatus, kv_pb2.GetStatusRequest()).limits
        return Limits(**{f.name: getattr(reported, f.name) for f in dataclass_fields(Limits)})

    def _messages(
        self, records: Iterable[tuple[str, Value]], on_sent: Callable[[int], None] | None,
        load_id: str | None = None, start_index: int = 0,
    ) -> Iterator[kv_pb2.StreamPutRequest]:
        first = {"load_id": load_id, "start_index": start_index} if load_id else {}
        batch: list[kv_pb2.KeyValuePair] = []
        size = 0
        for key, value in records:
            pair = kv_pb2.KeyValuePair(key=key, value=_as_bytes(value))
            pair_size = len(pair.key) + len(pair.value) + 8
            if batch and (len(batch) >= self.batch_records or size + pair_size > self.batch_bytes):
                yield kv_pb2.StreamPutRequest(records=batch, **first)
                first = {}
                if on_sent:
                    on_sent(len(batch))
                batch, size = [], 0
            batch.append(pair)
            size += pair_size
        if batch or first:
            yield kv_pb2.StreamPutRequest(records=batch, **first)
            if on_sent and batch:
                on_sent(len(batch))


class WatchEvent(NamedTuple):
    """One change: ``type`` is ``"put"`` (``value`` and ``version`` as written) or
    ``"delete"`` (``version`` the record had, no value); ``revision`` is the write's.
    (A named tuple: a watch of busy keys makes many, and it is the cheapest to build.)"""

    type: str
    key: str
    value: bytes
    version: int
    revision: int


class Watch:
    """An open watch (see :meth:`KeyValueClient.watch`): an iterator of :class:`WatchEvent`.

    ``revision`` is how far it has got: every matching change up to that revision has
    been delivered (None until the server has answered). Use it as a context manager, or
    call :meth:`cancel` (from any thread) to end it; the iteration then stops.
    """

    RETRY_MAX_SECONDS = 2.0

    def __init__(self, stub, key: str | None, prefix: str | None, start_revision: int | None,
                 resume: bool) -> None:
        self._stub = stub
        self._key = key
        self._prefix = prefix
        self._resume = resume
        self.revision = start_revision
        self._beyond = 0  # events delivered with a revision above self.revision
        self._call = None
        self._cancelled = threading.Event()
        self._events = self._run()

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        return next(self._events)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info) -> None:
        self.cancel()

    def cancel(self) -> None:
        self._cancelled.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _request(self) -> kv_pb2.WatchRequest:
        request = (kv_pb2.WatchRequest(key=self._key) if self._key is not None
                   else kv_pb2.WatchRequest(prefix=self._prefix))
        if self.revision is not None:
            request.start_revision = self.revision
        return request

    def _run(self) -> Iterator[WatchEvent]:
        failures = 0
        delete = kv_pb2.EVENT_TYPE_DELETE
        while not self._cancelled.is_set():
            # Reopened after a break: the server sends again the events above `revision`
            # that were already delivered (a revision cut short); they are skipped.
            skip = self._beyond
            self._call = self._stub.Watch(self._request())
            try:
                if self._cancelled.is_set():
                    self._call.cancel()
                for response in self._call:
                    failures = 0
                    for e in response.events:
                        if skip:
                            skip -= 1
                            continue
                        self._beyond += 1
                        record = e.record
                        yield WatchEvent("delete" if e.type == delete else "put",
                                         record.key, record.value, record.version, e.revision)
                    if self.revision is None or response.revision > self.revision:
                        self.revision = response.revision
                        self._beyond = 0
                raise Unavailable("the server ended the watch")  # it never does so normally
            except (grpc.RpcError, Unavailable) as exc:
                if self._cancelled.is_set():
                    return
                error = _error_from(exc) if isinstance(exc, grpc.RpcError) else exc
                if not (self._resume and isinstance(error, Unavailable)):
                    raise error from None
                failures += 1
                self._cancelled.wait(min(self.RETRY_MAX_SECONDS, 0.05 * 2 ** failures))


# The command line lives in kvgrpc.cli; this keeps `python -m kvgrpc.client` and the
# `kvgrpc` console script working.
def main(argv: Sequence[str] | None = None, out=None, err=None) -> int:
    """Runs the command line (:mod:`kvgrpc.cli`); returns the exit status."""
    from kvgrpc.cli.commands import main as cli_main

    return cli_main(argv, out, err)


if __name__ == "__main__":
    sys.exit(main())
