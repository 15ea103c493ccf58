"""The domain layer: validation, read consistency and StreamPut's commit policy.

Plain Python types in and out; raises only :mod:`kvgrpc.errors` exceptions; imports no
gRPC code. The transport (:mod:`kvgrpc.server`) converts messages and calls this;
:mod:`kvgrpc.routing` holds the measured replica state that reads are routed on.
"""

from __future__ import annotations

import base64
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kvgrpc.errors import FailedPrecondition, InvalidArgument, KvError, NotFound, Unavailable
from kvgrpc.records import (
    MAX_KEY_BYTES,
    EndpointStatus,
    Limits,
    Record,
    check_key,
    check_value,
    describe_key,
)
from kvgrpc.routing import EVENTUAL, ReadOptions, ReadRouter
from kvgrpc.store import Store
from kvgrpc.store.base import Commit, KeyFilter
from kvgrpc.tokens import token_kind

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """When StreamPut commits: after this many records or bytes, and at the end."""

    max_records: int = 10000
    max_bytes: int = 16 << 20


#: Scan pages: the most records per page, and how many are read per query.
MAX_SCAN_PAGE = 1000
SCAN_CHUNK = 100
_PAGE_TOKEN_PREFIX = "kvgrpc-scan-1:"
#: The largest version or revision a client may name: a version one above it must still
#: fit the int64 fields of the replies.
MAX_VERSION = (1 << 63) - 2
#: The largest staleness bound a read may give (max_staleness_ms is a uint32: ~49 days).
MAX_STALENESS_SECONDS = ((1 << 32) - 1) / 1000


@dataclass(frozen=True, slots=True)
class ScanPage:
    """What one Scan call asks for (see ScanRequest in the proto)."""

    prefix: str = ""
    start_key: str = ""
    end_key: str = ""
    size: int = 100
    max_bytes: int = 1 << 20
    page_token: str = ""
    keys_only: bool = False


def _key_range(prefix: str, start: str, end: str) -> tuple[bytes, bytes | None]:
    """The bytewise range [lower, upper) of keys that match a prefix and a start/end."""
    p = prefix.encode("utf-8")
    lower = max(start.encode("utf-8"), p)
    upper = end.encode("utf-8") or None
    successor = p.rstrip(b"\xff")  # the first byte string after every key with prefix p
    if successor:
        successor = successor[:-1] + bytes([successor[-1] + 1])
        upper = successor if upper is None else min(upper, successor)
    return lower, upper


def _encode_page_token(last_key: bytes) -> str:
    return _PAGE_TOKEN_PREFIX + base64.urlsafe_b64encode(last_key).decode("ascii")


def _decode_page_token(token: str) -> bytes | None:
    if not token:
        return None
    try:
        if not token.startswith(_PAGE_TOKEN_PREFIX):
            raise ValueError
        return base64.urlsafe_b64decode(token[len(_PAGE_TOKEN_PREFIX):].encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise InvalidArgument("page_token is not one that Scan returned") from None


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a Put: the key's new version, and the write's token and revision."""

    version: int
    token: str
    revision: int


@dataclass(frozen=True, slots=True)
class StreamResult:
    """The outcome of StreamPut: records committed, and the last batch's token and revision."""

    committed: int
    token: str
    revision: int


#: Watch: the most events per response, and about the most bytes of keys and values.
WATCH_CHUNK_EVENTS = 1000
WATCH_CHUNK_BYTES = 1 << 20
#: Watch: how often a watch with nothing to deliver reports the revision it has reached.
WATCH_PROGRESS_SECONDS = 1.0


@dataclass(slots=True)
class Event:
    """One change a watch delivers: a put (the record as written) or a delete (the key and
    the version it had), and the revision of the write. (Not frozen: a watch makes one per
    record written, and frozen dataclasses are slower to build.)"""

    key: str
    value: bytes
    version: int
    revision: int
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One Watch response: events in commit order, and the revision up to which every
    matching change has been delivered. ``created`` marks the first one (no events)."""

    revision: int
    events: Sequence[Event] = ()
    created: bool = False


class KeyValueService:
    """Stores records on the master and serves reads as each request's consistency asks.

    Writes go to the master. Reads are routed by a :class:`ReadRouter` (replicas when
    allowed and healthy, else the master). With ``require_semi_sync``, a write is refused
    with Unavailable while semi-synchronous replication is off (an acknowledged write must
    exist on a replica). Thread-safe.
    """

    def __init__(
        self,
        writer: Store,
        readers: Sequence[Store] = (),
        *,
        limits: Limits = Limits(),
        commit_policy: CommitPolicy = CommitPolicy(),
        router: ReadRouter | None = None,
        require_semi_sync: bool = False,
    ) -> None:
        self.writer = writer
        self.readers = list(readers)
        self.limits = limits
        self.commit_policy = commit_policy
        self.router = router or ReadRouter(writer, self.readers, watch_semi_sync=require_semi_sync)
        self.require_semi_sync = require_semi_sync
        self.records_written = 0  # committed by Put and StreamPut since start, for metrics
        self._count_lock = threading.Lock()
        self._closing = threading.Event()  # set when the server begins to shut down

    def _count_written(self, n: int) -> None:
        with self._count_lock:
            self.records_written += n

    def start(self) -> None:
        """Starts measuring replicas (the router's monitor thread)."""
        self.router.start()

    # -- writes --------------------------------------------------------------------

    def _write(self, operation):
        if self.require_semi_sync and self.router.semi_sync_off:
            raise Unavailable(
                "semi-synchronous replication is off (no replica confirms writes), so the "
                "server refuses writes until it is back"
            )
        return self.router.write(operation)

    def put(self, key: str, value: bytes, expected_version: int | None = None) -> Written:
        """Stores one record durably on the master; returns its new version and token.

        With ``expected_version`` it is a compare-and-set: the write happens only if the
        key is at that version (0: absent), else FailedPrecondition with the current one.
        """
        where = f"key {describe_key(key)}"
        k = check_key(key, where)
        v = check_value(value, where, self.limits)
        if expected_version is not None and not 0 <= expected_version <= MAX_VERSION:
            raise InvalidArgument(f"{where}: expected_version must be 0 or more and at most "
                                  f"{MAX_VERSION}, not {expected_version}")
        try:
            version, commit = self._write(lambda store: store.put(k, v, expected_version))
        except FailedPrecondition as exc:
            exc.message = f"{where}: {exc.message}"
            raise
        self._count_written(1)
        return Written(version, commit.token, commit.revision)

    def delete(self, key: str) -> tuple[bool, Commit]:
        """Removes a key on the master; returns whether it existed, and the write's commit."""
        k = check_key(key, f"key {describe_key(key)}")
        return self._write(lambda store: store.delete(k))

    def stream_put(self, batches: Iterable[Sequence[tuple[str, bytes]]]) -> StreamResult:
        """Commits a stream of records in order, in batches.

        Records are validated as they arrive. On a bad record, the valid records before
        it are committed and ``InvalidArgument`` names the bad record's index in the
        stream; on any failure the raised error's ``committed`` is the number of leading
        records committed (acknowledged), and no record after them is.

        Batches are committed on a second thread, one at a time and in order, while this
        one receives and checks the next batch: the database works while Python parses.
        """
        policy = self.commit_policy
        max_key, max_value = MAX_KEY_BYTES, self.limits.max_value_bytes
        committer = _Committer(self._write, self._count_written)
        pending: list[tuple[bytes, bytes]] = []
        pending_bytes = 0
        index = 0
        try:
            for batch in batches:
                for key, value in batch:
                    k = key.encode("utf-8")
                    if not k or len(k) > max_key or len(value) > max_value:
                        where = f"record {index}"  # built only for the error
                        check_key(key, where)
                        check_value(value, where, self.limits)
                    pending.append((k, value))
                    pending_bytes += len(k) + len(value)
                    index += 1
                    if len(pending) >= policy.max_records or pending_bytes >= policy.max_bytes:
                        committer.submit(pending)
                        pending, pending_bytes = [], 0
            committer.submit(pending)
            committer.drain()
        except InvalidArgument as exc:
            exc.committed = committer.finish(pending)  # the valid prefix stays committed
            raise
        except KvError as exc:
            exc.committed = committer.finish()
            raise
        finally:
            committer.close()  # waits for a commit still in flight (e.g. the client left)
        return StreamResult(committer.committed, committer.commit.token, committer.commit.revision)

    # -- changes -------------------------------------------------------------------

    def watch(self, key: str | None, prefix: str | None, start_revision: int | None,
              cancelled: Callable[[], bool]) -> Iterator[WatchBatch]:
        """The changes to ``key``, or to the keys starting with ``prefix``, as committed.

        Yields a ``created`` batch once the master's change feed is open, then batches of
        events after ``start_revision`` (None: after the latest revision now), with
        progress reports while nothing matches. Returns when ``cancelled()``; raises
        Unavailable when the server shuts down (the caller resumes elsewhere from the
        last revision it got).
        """
        if (key is None) == (prefix is None):
            raise InvalidArgument("set one of key and prefix (an empty prefix watches every key)")
        if key is not None:
            keys = KeyFilter(check_key(key, f"key {describe_key(key)}"), exact=True)
        else:
            keys = KeyFilter(prefix.encode("utf-8"))
            if len(keys.prefix) > MAX_KEY_BYTES:
                raise InvalidArgument(f"prefix is longer than the {MAX_KEY_BYTES}-byte key limit")
        if start_revision is not None and not 0 <= start_revision <= MAX_VERSION:
            raise InvalidArgument(f"start_revision must be 0 or more and at most {MAX_VERSION}, "
                                  f"not {start_revision}")
        after = self.writer.head_revision() if start_revision is None else start_revision
        feed = self.writer.changes(after, lambda: cancelled() or self._closing.is_set(), keys)
        first = next(feed, None)  # raises if the feed cannot start from `after`
        yield WatchBatch(after, created=True)
        reported, last = time.monotonic(), after
        for batch in itertools.chain([first] if first else [], feed):
            revision = batch.revision
            events = [Event(c.key.decode("utf-8", "replace"), c.value, c.version, revision, c.deleted)
                      for c in batch.changes]
            if events:
                yield from _chunks(events, batch.revision)
            elif batch.revision > last and time.monotonic() - reported >= WATCH_PROGRESS_SECONDS:
                yield WatchBatch(batch.revision)
            else:
                continue
            reported, last = time.monotonic(), batch.revision
        if self._closing.is_set():
            raise Unavailable(
                f"the server is shutting down; resume the watch from revision {last} on another server"
            )

    # -- reads ---------------------------------------------------------------------

    def get(self, key: str, options: ReadOptions = EVENTUAL, deadline: float | None = None) -> Record:
        """Returns the record under ``key``; raises NotFound if there is none."""
        k = check_key(key, f"key {describe_key(key)}")
        self._check_read_options(options)
        stored = self.router.read(lambda store: store.get(k), options, deadline)
        if stored is None:
            raise NotFound(f"key {describe_key(key)} not found")
        return Record(key, stored.value, stored.version)

    def batch_get(self, keys: Sequence[str], options: ReadOptions = EVENTUAL,
                  deadline: float | None = None) -> tuple[list[Record], list[str]]:
        """Returns the records found (in request order, once each) and the missing keys."""
        if not keys:
            raise InvalidArgument(
                f"keys is empty; ask for 1 to {self.limits.max_batch_get_keys} keys"
            )
        if len(keys) > self.limits.max_batch_get_keys:
            raise InvalidArgument(
                f"{len(keys)} keys requested; the limit is {self.limits.max_batch_get_keys}"
            )
        self._check_read_options(options)
        unique = list(dict.fromkeys(keys))
        encoded = [check_key(key, f"keys[{i}]") for i, key in enumerate(unique)]
        found = self.router.read(lambda store: store.get_many(encoded), options, deadline)
        records: list[Record] = []
        missing: list[str] = []
        for key, k in zip(unique, encoded):
            stored = found.get(k)
            if stored is None:
                missing.append(key)
            else:
                records.append(Record(key, stored.value, stored.version))
        return records, missing

    def scan(self, page: ScanPage, options: ReadOptions = EVENTUAL,
             deadline: float | None = None) -> tuple[list[Record], str]:
        """One page of records in key order; returns them and the next page's token ("" at the end).

        The page is read from one endpoint, in chunks, until it holds ``page.size``
        records or the next record would pass ``page.max_bytes`` (a page holds at least one).
        """
        if not 1 <= page.size <= MAX_SCAN_PAGE:
            raise InvalidArgument(f"page_size {page.size} is out of range: 1 to {MAX_SCAN_PAGE}")
        if page.max_bytes < 1:
            raise InvalidArgument("page_bytes must be positive")
        self._check_read_options(options)
        lower, upper = _key_range(page.prefix, page.start_key, page.end_key)
        after = _decode_page_token(page.page_token)

        def read_page(store: Store):
            found: list = []
            used, cursor = 0, after
            while len(found) < page.size:
                want = min(SCAN_CHUNK, page.size - len(found))
                chunk = store.scan(lower, upper, cursor, want, page.keys_only)
                for stored in chunk:
                    size = len(stored.key) + len(stored.value)
                    if found and used + size > page.max_bytes:
                        return found, True
                    found.append(stored)
                    used += size
                if len(chunk) < want:
                    return found, False
                cursor = chunk[-1].key
            return found, True

        found, more = self.router.read(read_page, options, deadline)
        records = [Record(s.key.decode("utf-8", "replace"), s.value, s.version) for s in found]
        token = _encode_page_token(found[-1].key) if more and found else ""
        return records, token

    @staticmethod
    def _check_read_options(options: ReadOptions) -> None:
        """Checks a read's options before any database call: the staleness bound, and that
        a write token has the form of one (see :func:`kvgrpc.tokens.token_kind`)."""
        if not 0 <= options.max_staleness <= MAX_STALENESS_SECONDS:
            raise InvalidArgument(
                f"max_staleness_ms {options.max_staleness * 1000:.0f} is out of range: "
                f"0 to {MAX_STALENESS_SECONDS * 1000:.0f}"
            )
        token_kind(options.min_token, "read_options.min_write_token")

    # -- operations ----------------------------------------------------------------

    def status(self) -> list[EndpointStatus]:
        """Every database endpoint's measured state, the master first."""
        return self.router.status()

    def begin_shutdown(self) -> None:
        """Ends the open watches (with Unavailable, so that their clients resume elsewhere)."""
        self._closing.set()

    def close(self) -> None:
        """Stops the monitor and closes every store."""
        self.router.stop()
        for store in [self.writer, *self.readers]:
            store.close()


def _chunks(events: list[Event], revision: int) -> Iterator[WatchBatch]:
    """Splits one revision's events into responses of bounded size. All but the last report
    the revision before: the revision is complete only once its last event is sent."""
    start, size = 0, 0
    for i, event in enumerate(events):
        size += len(event.key) + len(event.value) + 16
        if i + 1 - start >= WATCH_CHUNK_EVENTS or size >= WATCH_CHUNK_BYTES:
            if i + 1 < len(events):
                yield WatchBatch(revision - 1, events[start : i + 1])
                start, size = i + 1, 0
    yield WatchBatch(revision, events[start:])


class _Committer:
    """Commits StreamPut batches on its own thread, in order, at most one at a time.

    ``submit`` hands over a batch after waiting for the previous one, so at most two
    batches are held in memory and a failure stops everything after it. ``committed``
    counts the records of batches whose commit succeeded.
    """

    def __init__(self, write: Callable, count: Callable[[int], None]) -> None:
        self._write = write
        self._count = count
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kvgrpc-commit")
        self._in_flight: Future | None = None
        self.committed = 0
        self.commit = Commit()  # the last batch's

    def _commit(self, batch: list[tuple[bytes, bytes]]) -> tuple[int, Commit]:
        return len(batch), self._write(lambda store: store.put_many(batch))

    def drain(self) -> None:
        """Waits for the batch in flight; raises its error if it failed."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            count, commit = future.result()
            self.committed += count
            self._count(count)
            self.commit = commit

    def submit(self, batch: list[tuple[bytes, bytes]]) -> None:
        self.drain()
        if batch:
            self._in_flight = self._executor.submit(self._commit, batch)

    def finish(self, last: list[tuple[bytes, bytes]] | None = None) -> int:
        """Ends the stream after a failure: commits ``last`` too if all went well so far.

        Returns how many records are committed; never raises (the caller is already
        reporting an error), except that a failed ``last`` commit is simply not counted.
        """
        try:
            self.drain()
            if last:
                self.submit(last)
                self.drain()
        except KvError:
            pass
        return self.committed

    def close(self) -> None:
        self._executor.shutdown(wait=True)
