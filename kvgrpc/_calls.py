"""What the blocking and the asyncio client share: building requests, converting replies,
mapping errors, the channel's options (with the read-retry service config), the batching
of StreamPut messages, BatchGet's rounds and Watch's resume bookkeeping.

Private: the public surface is :mod:`kvgrpc.client` and :mod:`kvgrpc.aio`. Nothing here
performs a call; each function is pure or keeps only the state of one call, so both
clients drive the same logic, one with blocking calls and one with ``await``.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from kvgrpc import kv_pb2
from kvgrpc.errors import (
    COMMITTED_METADATA_KEY,
    CURRENT_VERSION_METADATA_KEY,
    Aborted,
    Cancelled,
    Internal,
    InvalidArgument,
    KvError,
    Unavailable,
    error_class,
)
from kvgrpc.records import Commit, EndpointStatus, Event, Limits, LoadProgress, Record
from kvgrpc.tokens import latest

Value = bytes | str

SERVICE = "kvgrpc.v1.KeyValue"

CONSISTENCY: dict[str | None, kv_pb2.ReadConsistency] = {
    None: kv_pb2.READ_CONSISTENCY_UNSPECIFIED,
    "eventual": kv_pb2.READ_CONSISTENCY_EVENTUAL,
    "strong": kv_pb2.READ_CONSISTENCY_STRONG,
    "bounded": kv_pb2.READ_CONSISTENCY_BOUNDED_STALENESS,
}


#: The largest ``expected_version`` and ``max_staleness_ms`` the messages can carry (int64,
#: uint32): beyond them protobuf says only "Value out of range".
MAX_EXPECTED_VERSION = 2**63 - 1
MAX_STALENESS_MS = 2**32 - 1


def as_key(key: object, what: str = "key") -> str:
    """``key`` (or a prefix, a scan bound: ``what``) checked before it is sent: a str
    (TypeError otherwise: protobuf would say "bad argument type for built-in operation")
    that is valid UTF-8 text (InvalidArgument otherwise, as the server says it: a lone
    surrogate, e.g. from undecodable bytes in a command line, cannot be sent)."""
    if not isinstance(key, str):
        raise TypeError(f"a {what} must be str, not {type(key).__name__}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} {key!r}: {what} is not valid UTF-8 text "
                              f"(character {exc.start}: {exc.reason})") from None
    return key


def as_bytes(value: Value, key: str | None = None) -> bytes:
    """``value`` as bytes: str is UTF-8 encoded (InvalidArgument naming ``key`` if it is
    not valid UTF-8 text); bytes-like objects are copied; anything else is a TypeError
    (``bytes(5)`` would be five zero bytes)."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            where = "" if key is None else f"key {key!r}: "
            raise InvalidArgument(f"{where}the value is str but not valid UTF-8 text (character "
                                  f"{exc.start}: {exc.reason}); pass bytes for binary data") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a value must be bytes or str, not {type(value).__name__}")


def as_record(record: object, index: int) -> tuple[str, Value]:
    """One record of a ``stream_put`` source: a ``(key, value)`` pair; TypeError naming
    its index otherwise (a 2-character string would unpack as a key and a value)."""
    if not isinstance(record, (tuple, list)) or len(record) != 2:
        shown = repr(record)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise TypeError(f"record {index}: a record is a (key, value) pair, not "
                        f"{type(record).__name__} {shown}")
    return record[0], record[1]


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class _StatusLike(Protocol):
    def code(self) -> grpc.StatusCode: ...

    def details(self) -> str | None: ...

    def trailing_metadata(self) -> Any: ...


def error_from(exc: grpc.RpcError | _StatusLike) -> KvError:
    """Turns a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``) into the
    project's exception (:func:`kvgrpc.errors.error_class`), keeping the committed count
    and the current version from the trailing metadata."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or code.name.lower()
    numbers: dict[str, int] = {}
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key in (COMMITTED_METADATA_KEY, CURRENT_VERSION_METADATA_KEY):
            numbers[key] = int(value)
    if code is grpc.StatusCode.UNAVAILABLE:
        details = connection_problem(details)
    return error_class(code.name)(
        details, committed=numbers.get(COMMITTED_METADATA_KEY),
        current_version=numbers.get(CURRENT_VERSION_METADATA_KEY),
    )


_CONNECT_FAILED = re.compile(r"failed to connect to all addresses; last error: [A-Z_]+: "
                             r"(?:ipv4:|ipv6:|unix:)?(?P<address>\S+?): (?P<reason>.*)", re.S)


def connection_problem(details: str) -> str:
    """grpc's words for a connection that failed, as a user can act on them: the address
    and the reason, without grpc's internal status names (``last error: UNKNOWN: ...``)
    and with the likely cause of a TLS mismatch. Other details are returned as they are."""
    found = _CONNECT_FAILED.match(details)
    if found is None:
        return _closed(details.strip()) or details
    address = urllib.parse.unquote(found["address"])
    reason = re.sub(r"(: OK)+$", "", found["reason"].strip())
    if _closed(reason):
        reason = _closed(reason)
    elif "Connection refused" in reason:
        reason = "connection refused (no server listens there)"
    elif "CERTIFICATE_VERIFY_FAILED" in reason:
        reason = ("the TLS handshake failed: the server's certificate is not signed by a CA this "
                  "client trusts (CERTIFICATE_VERIFY_FAILED; see the CA file given, ca_file / --tls-ca)")
    elif "WRONG_VERSION_NUMBER" in reason or "handshake" in reason.lower():
        reason = (f"the TLS handshake failed ({reason}): is the server serving TLS, and this "
                  "client connecting with the right CA and certificate?")
    return f"cannot connect to {address}: {reason}"


def _closed(reason: str) -> str:
    """The words for a connection the server closed at once ('' for another reason)."""
    if reason not in ("Socket closed", "Connection reset by peer", "recvmsg:Connection reset by peer"):
        return ""
    return (f"the server closed the connection ({reason}): if it serves TLS, connect with TLS "
            "(and with a client certificate if it requires one)")


# --------------------------------------------------------------------------------------
# The channel: options and the read-retry policy
# --------------------------------------------------------------------------------------

#: The RPCs gRPC retries by itself on UNAVAILABLE: the reads. Put and Delete are not in
#: it: a write whose reply was lost may have been committed, and repeating it would bump
#: the version again (or fail a compare-and-set that in fact succeeded); StreamPut and
#: Watch are streams, resumed by the clients from what they know (a load's committed
#: count, a watch's revision).
RETRIED_READS: tuple[str, ...] = ("Get", "BatchGet", "Scan", "GetStatus", "GetLoad")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How gRPC retries a read that failed with UNAVAILABLE (gRFC A6 ``retryPolicy``).

    Attempt ``n`` (n ≥ 2) starts after a random delay in ``[0, min(initial_backoff *
    multiplier**(n-2), max_backoff)]`` seconds; at most ``max_attempts`` attempts in all
    (gRPC caps it at 5), all within the call's deadline. The channel's reconnection
    backoff starts at 100 ms and is held to ``max_backoff``, so that a server that is
    back is reconnected to within the retries.

    The defaults wait at most 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s in all (0.75 s on average):
    enough for a move to another of the client's servers, a dropped connection, or a
    server back within about a second. A longer policy rides out longer restarts, but
    keep its worst case (the sum of the caps) under the client's ``timeout``: a deadline
    that passes while waiting to retry ends the call with DeadlineExceeded, not with the
    Unavailable that says why.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 1.0
    multiplier: float = 2.0

    def worst_case_seconds(self) -> float:
        """The longest the retries may wait in all (the sum of the backoff caps)."""
        return sum(min(self.initial_backoff * self.multiplier ** n, self.max_backoff)
                   for n in range(self.max_attempts - 1))

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be 2 to 5 (gRPC's limit)")
        if self.initial_backoff <= 0 or self.max_backoff <= 0 or self.multiplier <= 0:
            raise ValueError("backoffs and multiplier must be positive")

    def service_config(self) -> str:
        """The channel's service config (JSON) naming every read of :data:`RETRIED_READS`."""
        return json.dumps({
            "methodConfig": [{
                "name": [{"service": SERVICE, "method": method} for method in RETRIED_READS],
                "retryPolicy": {
                    "maxAttempts": self.max_attempts,
                    "initialBackoff": f"{self.initial_backoff:.3f}s",
                    "maxBackoff": f"{self.max_backoff:.3f}s",
                    "backoffMultiplier": self.multiplier,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }],
        })


DEFAULT_RETRY = RetryPolicy()

#: The first pause before reconnecting to a server that went away, in milliseconds
#: (then ×1.6 per attempt, up to the retry policy's ``max_backoff``).
RECONNECT_INITIAL_MS = 100


def channel_options(several: bool, retry: RetryPolicy | None) -> list[tuple[str, Any]]:
    """The options of a client channel: no receive limit (the server bounds its replies),
    round-robin over ``several`` servers, and the read-retry policy (None: no retries)."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", -1)]
    if several:
        options.append(("grpc.lb_policy_name", "round_robin"))
    if retry is not None:
        options += [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry.service_config()),
            ("grpc.service_config_disable_resolution", 1),  # ours, not one from DNS
            # gRPC waits 1 s, then up to 120 s, between attempts to reconnect, failing
            # calls at once meanwhile: a server back after a restart would be found
            # only after the retries are spent.
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
            ("grpc.max_reconnect_backoff_ms", int(retry.max_backoff * 1000)),
        ]
    else:
        options.append(("grpc.enable_retries", 0))
    return options


# --------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------


def read_options(consistency: str | None, max_staleness_ms: int, min_write_token: str | None,
                 session_token: str | None) -> kv_pb2.ReadOptions:
    """A read's ``ReadOptions``; ``session_token`` (read-your-writes) and
    ``min_write_token`` combine to the later of the two."""
    if consistency not in CONSISTENCY:
        raise ValueError(f"consistency must be one of {sorted(k for k in CONSISTENCY if k)}")
    if not 0 <= max_staleness_ms <= MAX_STALENESS_MS:
        raise ValueError(f"max_staleness_ms must be 0 to {MAX_STALENESS_MS}, not {max_staleness_ms}")
    token = min_write_token or ""
    if session_token is not None:
        token = latest(session_token, token)
    return kv_pb2.ReadOptions(consistency=CONSISTENCY[consistency],
                              max_staleness_ms=max_staleness_ms, min_write_token=token)


def put_request(key: str, value: Value, expected_version: int | None) -> kv_pb2.PutRequest:
    request = kv_pb2.PutRequest(key=as_key(key), value=as_bytes(value, key))
    if expected_version is not None:
        if not -MAX_EXPECTED_VERSION - 1 <= expected_version <= MAX_EXPECTED_VERSION:
            # (a negative one that fits is refused by the server, with the valid range)
            raise ValueError(f"expected_version must be 0 (the key must be absent) to "
                             f"{MAX_EXPECTED_VERSION}, not {expected_version}")
        request.expected_version = expected_version
    return request


def scan_request(prefix: str, start: str, end: str, page_size: int, page_bytes: int,
                 keys_only: bool, options: kv_pb2.ReadOptions, token: str) -> kv_pb2.ScanRequest:
    return kv_pb2.ScanRequest(
        prefix=as_key(prefix, "prefix"), start_key=as_key(start, "start key"),
        end_key=as_key(end, "end key"), page_size=page_size,
        page_bytes=page_bytes, page_token=token, keys_only=keys_only, read_options=options,
    )


def watch_request(key: str | None, prefix: str | None, revision: int | None) -> kv_pb2.WatchRequest:
    request = (kv_pb2.WatchRequest(key=as_key(key)) if key is not None
               else kv_pb2.WatchRequest(prefix=as_key(prefix, "prefix")))
    if revision is not None:
        request.start_revision = revision
    return request


def check_watch_target(key: str | None, prefix: str | None) -> None:
    if (key is None) == (prefix is None):
        raise ValueError("watch one key, or a prefix (prefix='' watches every key)")


# --------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------


def record_from(message: kv_pb2.Record) -> Record:
    return Record(message.key, message.value, message.version)


def endpoints_from(reply: kv_pb2.GetStatusResponse) -> list[EndpointStatus]:
    return [
        EndpointStatus(
            name=e.name, role=kv_pb2.EndpointRole.Name(e.role).removeprefix("ENDPOINT_ROLE_").lower(),
            reachable=e.reachable, healthy=e.healthy,
            lag_ms=None if e.lag_ms < 0 else e.lag_ms, pool_in_use=e.pool_in_use,
            pool_size=e.pool_size, semi_sync_active=e.semi_sync_active, problem=e.problem,
        )
        for e in reply.endpoints
    ]


def limits_from(reply: kv_pb2.GetStatusResponse) -> Limits:
    """The server's limits; a server that does not report them gets the defaults
    (``Limits()``), field by field for any it leaves at 0."""
    defaults = Limits()
    message = reply.limits
    return Limits(**{
        name: getattr(message, name) or getattr(defaults, name)
        for name in Limits.__dataclass_fields__
    })


def load_from(reply: kv_pb2.GetLoadResponse) -> LoadProgress:
    return LoadProgress(reply.load_id, reply.committed_count,
                        Commit(reply.write_token, reply.revision), reply.updated_unix_ms)


class BatchGetRounds:
    """The rounds of one ``batch_get``: ask :attr:`pending`, :meth:`add` each reply, until
    :attr:`pending` is empty; then :meth:`result`.

    A reply's ``unprocessed_keys`` (the server's byte budget was reached) are asked again
    in the next round. A round that reads none of the keys it asked is an error: the loop
    is bounded by the number of keys.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, (str, bytes)):  # its characters would be taken for keys
            raise TypeError("keys must be a sequence of keys, not one string")
        self._keys = [as_key(key) for key in keys]
        self.pending: list[str] = self._keys
        self.rounds = 0
        self._found: dict[str, bytes] = {}

    def add(self, reply: kv_pb2.BatchGetResponse) -> None:
        self.rounds += 1
        for record in reply.records:
            self._found[record.key] = record.value
        unprocessed = list(reply.unprocessed_keys)
        if unprocessed and not reply.records and not reply.missing_keys:
            raise Internal(
                f"BatchGet made no progress: the server read none of the {len(self.pending)} "
                f"keys asked in round {self.rounds} and returned them all as unprocessed"
            )
        self.pending = unprocessed

    def result(self) -> dict[str, bytes]:
        """``{key: value}`` for the keys that exist, in request order."""
        return {key: self._found[key] for key in dict.fromkeys(self._keys) if key in self._found}


# --------------------------------------------------------------------------------------
# StreamPut messages
# --------------------------------------------------------------------------------------


#: Room left in a StreamPut message for what is not a record (the load's name and start).
STREAM_MESSAGE_OVERHEAD = 1024


def stream_batch_bytes(batch_bytes: int, limits: Limits | None) -> int:
    """The byte budget of a StreamPut message: the client's ``batch_bytes``, within the
    largest message the server accepts (``limits``, when known: a bigger message would be
    refused whole, RESOURCE_EXHAUSTED, committing nothing of it)."""
    if limits is None:
        return batch_bytes
    return max(1, min(batch_bytes, limits.max_receive_message_bytes - STREAM_MESSAGE_OVERHEAD))


class StreamAttempts:
    """The attempts of one ``stream_put`` (both clients drive it; only the calls differ).

    A source that can be iterated again (``reiterable``) is retried on UNAVAILABLE (and on
    ABORTED once resuming: the late commit of a vanished server's last batch) up to
    ``retries`` times; for that a stream without a load id is named (``auto-`` and a
    random UUID). :attr:`offset` counts the leading records known committed, not sent
    again; errors' ``committed`` are made relative to the caller's records.
    """

    def __init__(self, load_id: str | None, start_index: int, reiterable: bool, retries: int) -> None:
        check_stream_start(load_id, start_index)
        self.retry = retries > 0 and reiterable
        self.load_id = load_id if load_id is not None or not self.retry else f"auto-{uuid.uuid4()}"
        self.start_index = start_index
        self.retries = retries
        self.offset = 0
        self.failures = 0

    @property
    def start(self) -> int:
        """The load index of this attempt's first record."""
        return self.start_index + self.offset

    def failed(self, error: KvError) -> float | None:
        """After ``error``: the pause before the next attempt, or None to raise it. Its
        ``committed`` is made a count of the caller's records."""
        if self.load_id is not None and error.committed is not None:
            error.committed = max(0, error.committed - self.start_index - self.offset) + self.offset
        resuming = isinstance(error, Unavailable) or (isinstance(error, Aborted) and self.failures > 0)
        if not (self.retry and resuming) or self.failures >= self.retries:
            return None
        self.failures += 1
        if error.committed is not None:  # the server said how far the load got
            self.offset = max(self.offset, error.committed)
        return min(STREAM_RETRY_MAX_SECONDS, 0.25 * 2 ** (self.failures - 1))

    def name_load(self, error: KvError) -> None:
        """Before ``error`` ends the stream: names its load on it (``error.load_id``) and,
        when no server could say how many records are committed, notes what is known."""
        if self.load_id is None:
            return
        error.load_id = self.load_id
        if error.committed is None:
            error.add_note(
                f"no server said how many records are committed (at least {self.offset}); "
                f"get_load({self.load_id!r}) reads it, and stream_put(the same records, "
                f"load_id={self.load_id!r}) finishes the load")

    def load_reached(self, committed: int) -> None:
        """GetLoad's count before an attempt: the records to skip."""
        self.offset = max(self.offset, committed - self.start_index)

    def committed_of(self, load_committed: int) -> int:
        """The caller's records committed, from the load's count."""
        return max(0, load_committed - self.start_index)


def check_stream_start(load_id: str | None, start_index: int) -> None:
    """A stream_put's ``start_index``: 0 or more, and only with a named load."""
    if start_index < 0:
        raise ValueError("start_index must be 0 or more")
    if start_index and not load_id:
        raise ValueError("start_index is the index of a named load's first record: it needs load_id")


class StreamBatcher:
    """Groups records into ``StreamPutRequest`` messages of at most ``batch_records``
    records / ``batch_bytes`` bytes as encoded (a message holds at least one record); the
    first message carries ``load_id`` and ``start_index`` when a load is named."""

    def __init__(self, batch_records: int, batch_bytes: int, *, load_id: str | None = None,
                 start_index: int = 0) -> None:
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        self._first: dict[str, Any] = {"load_id": load_id, "start_index": start_index} if load_id else {}
        self._batch: list[kv_pb2.KeyValuePair] = []
        self._size = 0

    def _message(self) -> kv_pb2.StreamPutRequest:
        message = kv_pb2.StreamPutRequest(records=self._batch, **self._first)
        self._first = {}
        self._batch, self._size = [], 0
        return message

    def add(self, key: str, value: Value) -> kv_pb2.StreamPutRequest | None:
        """Adds a record; returns a full message to send first, if any."""
        pair = kv_pb2.KeyValuePair(key=as_key(key), value=as_bytes(value, key))
        pair_size = pair.ByteSize() + 6  # as encoded, with its tag and length in the message
        out = None
        if self._batch and (len(self._batch) >= self._batch_records
                            or self._size + pair_size > self._batch_bytes):
            out = self._message()
        self._batch.append(pair)
        self._size += pair_size
        return out

    def finish(self) -> kv_pb2.StreamPutRequest | None:
        """The last message: what is left, or an empty first message naming the load."""
        if self._batch or self._first:
            return self._message()
        return None


def stream_messages(records: Iterable[tuple[str, Value]], batcher: StreamBatcher,
                    on_sent: Callable[[int], None] | None = None,
                    source_error: list[BaseException] | None = None) -> Iterator[kv_pb2.StreamPutRequest]:
    """The messages of a StreamPut of ``records``, read lazily; ``on_sent(n)`` is called
    after each message is taken by gRPC, with the number of records it carried (what
    ``KeyValueClient._messages`` does). With ``source_error``, an exception raised by
    ``records`` (or by a record that is not a ``(str, bytes or str)`` pair) is kept there
    and ends the stream after the records before it (gRPC would turn it into an opaque
    status and send none of them); the caller raises it once the stream is answered."""
    try:
        for index, record in enumerate(records):
            message = batcher.add(*as_record(record, index))
            if message is not None:
                yield message
                if on_sent:
                    on_sent(len(message.records))
    except Exception as exc:
        if source_error is None:
            raise
        source_error.append(exc)
    last = batcher.finish()
    if last is not None:
        yield last
        if on_sent:
            on_sent(len(last.records))


# --------------------------------------------------------------------------------------
# Watch
# --------------------------------------------------------------------------------------


#: The longest pause between two attempts to reopen a broken watch, in seconds.
WATCH_RETRY_MAX_SECONDS = 2.0
#: The longest pause between two attempts of a retried stream_put, in seconds.
STREAM_RETRY_MAX_SECONDS = 5.0


def watch_resumable(error: KvError) -> bool:
    """Whether a Watch that ended with ``error`` (and that its caller did not cancel) is
    reopened from its revision: UNAVAILABLE (a server stopping, a feed broken, a watch
    fallen behind), and a CANCELLED the client did not ask for: when hundreds of streams
    open at once, grpc's own server ends some of them that way before their first response
    (``bench/grpc_cancelled_opens.py`` shows it with bare grpc servers, aio and thread-pool,
    and no kvgrpc code; a grpc-js client sees it too)."""
    return isinstance(error, (Unavailable, Cancelled))


def watch_retry_delay(failures: int) -> float:
    """Seconds to wait before reopening a watch after ``failures`` breaks in a row."""
    return min(WATCH_RETRY_MAX_SECONDS, 0.05 * 2 ** failures)


class WatchCursor:
    """How far a watch has got, so that it reopens without loss or repeat.

    ``revision`` is the highest revision whose every matching change has been delivered
    (None until the server has answered); ``beyond`` counts the events delivered with a
    higher revision (a revision's events may span several responses: all but its last
    report the revision before). On reopening from ``revision`` the server sends those
    again; :meth:`reopened` arms the cursor to skip them.
    """

    __slots__ = ("key", "prefix", "revision", "beyond", "_skip")

    def __init__(self, key: str | None, prefix: str | None, start_revision: int | None) -> None:
        self.key = key
        self.prefix = prefix
        self.revision = start_revision
        self.beyond = 0
        self._skip = 0

    def request(self) -> kv_pb2.WatchRequest:
        """The request that (re)opens the watch from :attr:`revision`."""
        return watch_request(self.key, self.prefix, self.revision)

    def reopened(self) -> None:
        """A new stream is opened from :attr:`revision`: skip what was already delivered."""
        self._skip = self.beyond

    def events(self, response: kv_pb2.WatchResponse) -> Iterator[Event]:
        """The events of ``response`` not yet delivered, one at a time. The cursor moves as
        each is handed out, not before: while a revision's events are being delivered,
        :attr:`revision` stays at the one before (a watch reopened from it then sends
        the rest, and the ones already delivered are skipped)."""
        delete = kv_pb2.EVENT_TYPE_DELETE
        events = response.events
        last = len(events) - 1
        for i, e in enumerate(events):
            if self._skip:
                self._skip -= 1
                continue
            record = e.record
            event = Event(record.key, record.value, record.version, e.revision, e.type == delete)
            if self.revision is not None and e.revision <= self.revision:
                pass  # at or below the cursor: nothing to move
            elif e.revision <= response.revision and (i == last or events[i + 1].revision != e.revision):
                self.revision, self.beyond = e.revision, 0  # its revision's last event
            else:
                self.beyond += 1
            yield event
        if self.revision is None or response.revision > self.revision:
            self.revision = response.revision
            # The events of this response above its revision (the first chunks of a
            # revision split over several responses) stay counted: a reopened stream
            # sends them again.
            self.beyond = sum(1 for e in events if e.revision > response.revision)
            self._skip = 0
