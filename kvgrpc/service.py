"""The domain layer: validation, read consistency and StreamPut's commit policy.

Plain Python types in and out; raises only :mod:`kvgrpc.errors` exceptions; imports no
gRPC code. The transport (:mod:`kvgrpc.server`) converts messages and calls this;
:mod:`kvgrpc.routing` holds the measured replica state that reads are routed on.
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvgrpc.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    KvError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from kvgrpc.records import (
    MAX_KEY_BYTES,
    NO_COMMIT,
    Commit,
    EndpointStatus,
    Limits,
    LoadProgress,
    Record,
    WriteResult,
    check_key,
    check_value,
    describe_key,
)
from kvgrpc.routing import EVENTUAL, ReadOptions, ReadRouter
from kvgrpc.store import Store
from kvgrpc.store.base import (
    MAX_LOAD_ID_BYTES,
    KeyFilter,
    LoadMark,
    WriteOp,
    version_conflict,
)
from kvgrpc.tokens import token_kind

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """When StreamPut commits: after this many records or bytes, and at the end."""

    max_records: int = 10000
    max_bytes: int = 4 << 20


#: How long the progress of a named load is kept after its last batch (--load-retention).
DEFAULT_LOAD_RETENTION = 7 * 24 * 3600.0

#: Scan pages are read from the store this many records per query.
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
    """The last key of the page before; InvalidArgument for anything Scan could not have
    returned (strict: the token must be exactly the encoding of a key, 1 byte or more)."""
    if not token:
        return None
    try:
        if not token.startswith(_PAGE_TOKEN_PREFIX):
            raise ValueError
        key = base64.b64decode(token[len(_PAGE_TOKEN_PREFIX):].encode("ascii"), altchars=b"-_",
                               validate=True)
        if not key or _encode_page_token(key) != token:
            raise ValueError
        return key
    except (ValueError, UnicodeEncodeError):
        raise InvalidArgument("page_token is not one that Scan returned") from None


@dataclass(frozen=True, slots=True)
class StreamResult:
    """The outcome of StreamPut: records of the stream committed (for a named load,
    including the ``skipped`` ones an earlier stream committed), the last batch's commit,
    and for a named load its committed count after this stream."""

    committed: int
    commit: Commit = NO_COMMIT
    skipped: int = 0
    load_committed: int = 0


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
        load_retention: float = DEFAULT_LOAD_RETENTION,
    ) -> None:
        if load_retention <= 0:
            raise ValueError("the load retention must be positive (seconds)")
        self.writer = writer
        self.readers = list(readers)
        self.limits = limits
        self.commit_policy = commit_policy
        self.router = router or ReadRouter(writer, self.readers, watch_semi_sync=require_semi_sync)
        self.require_semi_sync = require_semi_sync
        self.records_written = 0  # committed by Put and StreamPut since start, for metrics
        self._count_lock = threading.Lock()
        self._closing = threading.Event()  # set when the server begins to shut down
        self.load_retention = load_retention
        self._open_loads: set[str] = set()  # named loads with a stream open here
        self._loads_lock = threading.Lock()
        self._stopped = threading.Event()  # set by close(): ends the expiry thread
        self._expiry: threading.Thread | None = None

    def _count_written(self, n: int) -> None:
        with self._count_lock:
            self.records_written += n

    def start(self) -> None:
        """Starts measuring replicas (the router's monitor thread), and a thread that
        deletes the progress of loads older than ``load_retention`` (at start, then every
        hour, or every quarter of the retention if that is shorter)."""
        self.router.start()
        self._expiry = threading.Thread(target=self._expire_loop, name="kvgrpc-load-expiry",
                                        daemon=True)
        self._expiry.start()

    def _expire_loop(self) -> None:
        interval = max(1.0, min(3600.0, self.load_retention / 4))
        while True:
            try:
                self.expire_loads()
            except KvError as exc:  # the master may be down: try again next time
                _LOGGER.warning("could not expire old load progress: %s", exc)
            if self._stopped.wait(interval):
                return

    def expire_loads(self) -> int:
        """Deletes the progress of loads not written for ``load_retention`` seconds;
        returns how many."""
        expired = self._write(lambda store: store.expire_loads(self.load_retention))
        if expired:
            _LOGGER.info("expired the progress of %d loads older than %g s", expired,
                         self.load_retention)
        return expired

    # -- writes --------------------------------------------------------------------

    def _write(self, operation):
        if self.require_semi_sync and self.router.semi_sync_off:
            raise Unavailable(
                "semi-synchronous replication is off (no replica confirms writes), so the "
                "server refuses writes until it is back"
            )
        return self.router.write(operation)

    # Puts and Deletes run as groups: :meth:`run_writes` runs the writes the transport
    # coalesced (kvgrpc.coalesce) in one transaction; ``put`` and ``delete`` are groups of one.

    def check_put(self, key: str, value: bytes, expected_version: int | None = None) -> WriteOp:
        """The write of a Put (``expected_version``: a compare-and-set, 0: the key must be
        absent); raises InvalidArgument for a bad key, value or version. No I/O."""
        where = f"key {describe_key(key)}"
        k = check_key(key, where)
        v = check_value(value, where, self.limits)
        if expected_version is not None and not 0 <= expected_version <= MAX_VERSION:
            raise InvalidArgument(f"{where}: expected_version must be 0 or more and at most "
                                  f"{MAX_VERSION}, not {expected_version}")
        return WriteOp(k, v, expected_version)

    def check_delete(self, key: str) -> WriteOp:
        """The write of a Delete; raises InvalidArgument for a bad key. No I/O."""
        return WriteOp(check_key(key, f"key {describe_key(key)}"), None)

    def run_writes(self, ops: Sequence[WriteOp]) -> list[WriteResult | KvError]:
        """Runs checked writes (blocking) in one transaction on the master, in order, each
        seeing the ones before; returns per op its :class:`WriteResult` or its error. A
        compare-and-set that does not match gets FailedPrecondition (the current version
        set) and does not stop the others; a transaction conflict or a full pool runs
        each op alone; any other failure is every op's error. A Delete's ``done`` says
        whether the key existed (``NO_COMMIT`` if not: nothing changed)."""
        try:
            if len(ops) == 1:
                results: list[WriteResult | KvError] = [self._write_alone(ops[0])]
            else:
                try:
                    results = list(self._write(lambda store: store.write_group(ops)))
                except (Aborted, ResourceExhausted):
                    results = [self._write_alone(op) for op in ops]
        except KvError as exc:
            return [exc] * len(ops)
        written = 0
        for i, (op, result) in enumerate(zip(ops, results)):
            if isinstance(result, WriteResult) and not result.done and op.value is not None:
                error = version_conflict(op.expected_version or 0, result.version)
                error.message = f"key {describe_key(op.key.decode('utf-8'))}: {error.message}"
                results[i] = error
            elif op.value is not None:
                written += 1
        if written:
            self._count_written(written)
        return results

    def put(self, key: str, value: bytes, expected_version: int | None = None) -> WriteResult:
        """Stores one record durably on the master; returns its new version and commit.

        With ``expected_version`` it is a compare-and-set: the write happens only if the
        key is at that version (0: absent), else FailedPrecondition with the current one.
        """
        return _answer(self.run_writes([self.check_put(key, value, expected_version)])[0])

    def delete(self, key: str) -> WriteResult:
        """Removes a key on the master; returns whether it existed (``done``), and the
        write's commit (``NO_COMMIT`` if it did not)."""
        return _answer(self.run_writes([self.check_delete(key)])[0])

    def _write_alone(self, op: WriteOp) -> WriteResult:
        """One write in its own transaction: the store's single-statement paths."""
        if op.value is None:
            return self._write(lambda store: store.delete(op.key))
        try:
            return self._write(lambda store: store.put(op.key, op.value, op.expected_version))
        except FailedPrecondition as exc:
            if exc.current_version is None:
                raise
            return WriteResult(False, exc.current_version)

    def open_stream(self, load_id: str | None = None, start_index: int = 0) -> StreamWriter:
        """A StreamPut in progress: the transport feeds it records as they arrive and
        commits the batches it hands back (see :class:`StreamWriter`). Blocking for a
        named load (it reads the load's progress); ``close()`` the writer at the end.

        A named load (``load_id``: 1 to 128 bytes of UTF-8) is exactly-once: the stream's
        first record is record ``start_index`` of the load; records whose index is below
        the load's recorded committed count C are skipped, the others are written once,
        each batch in one transaction with the load's new count (see
        :class:`~kvgrpc.store.base.LoadMark`). ``start_index`` > C raises
        FailedPrecondition (records would be missing). A second stream of a load already
        open in this process gets Aborted at once; one through another server gets
        Aborted at its first batch (the stores' conditional progress update). For a named
        load, an error's ``committed`` is the load's committed count, not the stream's.
        """
        if start_index < 0:
            raise InvalidArgument(f"start_index {start_index} is negative; it must be 0 or more")
        if load_id is None:
            if start_index:
                raise InvalidArgument("start_index is set but load_id is not: only a named "
                                      "load can start after its first record")
            return StreamWriter(self)
        _check_load_id(load_id)
        with self._loads_lock:
            busy = load_id in self._open_loads
            if not busy:
                self._open_loads.add(load_id)
        if busy:  # the count so far, as every error of a named load carries it
            try:
                stored = self._write(lambda store: store.load_progress(load_id))
                committed: int | None = 0 if stored is None else stored.committed
            except KvError:  # unknown now: the refusal stands, without a count
                committed = None
            raise Aborted(f"load {load_id!r} is already being written by another stream "
                          "on this server; wait for it to end, then resume the load",
                          committed=committed)
        try:
            stored = self._write(lambda store: store.load_progress(load_id))
            done = 0 if stored is None else stored.committed
            if start_index > done:
                raise FailedPrecondition(
                    f"load {load_id!r} has {done} records committed, but this stream starts at "
                    f"record {start_index}: records {done}..{start_index - 1} would be missing; "
                    f"resume from record {done}", committed=done)
            last = NO_COMMIT if stored is None else stored.commit
            return StreamWriter(self, load_id, start_index, done, last)
        except BaseException:
            self._release_load(load_id)
            raise

    def _release_load(self, load_id: str) -> None:
        with self._loads_lock:
            self._open_loads.discard(load_id)

    def stream_put(self, batches: Iterable[Sequence[tuple[str, bytes]]], *,
                   load_id: str | None = None, start_index: int = 0) -> StreamResult:
        """Commits a stream of records in order, in batches (blocking; for in-process use:
        the server drives a :class:`StreamWriter` itself, so no thread waits on the network).

        On a bad record, the valid records before it are committed and ``InvalidArgument``
        names the bad record's index in the stream; on any failure the raised error's
        ``committed`` is the number of leading records committed (for a named load: the
        load's count), and none after them is. See :meth:`open_stream` for named loads.
        When the server begins to shut down, the stream stops after the message in hand,
        commits what it holds and raises Unavailable with the committed count.
        """
        writer = self.open_stream(load_id, start_index)
        try:
            for batch in batches:
                ready = writer.add(batch)
                if ready:
                    writer.commit(ready)
                if self._closing.is_set():
                    break
            writer.commit(writer.flush())
            writer.finish()
            if self._closing.is_set():
                raise writer.drained()
        except InvalidArgument as exc:
            try:
                writer.commit(writer.flush())  # the valid prefix stays committed
            except KvError:
                pass
            exc.committed = writer.reported()
            raise
        except KvError as exc:
            if exc.committed is None:  # (a store's load conflict knows the load's newer count)
                exc.committed = writer.reported()
            raise
        finally:
            writer.close()
        return writer.result()

    def open_loads(self) -> frozenset[str]:
        """The named loads with a stream open on this server now."""
        with self._loads_lock:
            return frozenset(self._open_loads)

    def get_load(self, load_id: str) -> LoadProgress:
        """The progress of a named load; NotFound if none is recorded (never started, or
        expired after ``load_retention`` seconds without a batch)."""
        _check_load_id(load_id)
        # Read on the master, where loads commit; a read, so not refused without semi-sync.
        progress = self.router.write(lambda store: store.load_progress(load_id))
        if progress is None:
            raise NotFound(
                f"load {load_id!r} is not recorded: it never committed a record, or its "
                f"progress expired ({self.load_retention / 86400:g} days after its last batch)"
            )
        return progress

    # -- changes -------------------------------------------------------------------

    def watch_target(self, key: str | None, prefix: str | None,
                     start_revision: int | None) -> tuple[KeyFilter, int | None]:
        """Checks a Watch request; returns the keys it watches and the revision after which
        it starts (None: from now). The change hub (:mod:`kvgrpc.watch`) does the rest."""
        if (key is None) == (prefix is None):
            raise InvalidArgument("set one of key and prefix (an empty prefix watches every key)")
        if key is not None:
            keys = KeyFilter(check_key(key, f"key {describe_key(key)}"), exact=True)
        else:
            assert prefix is not None
            keys = KeyFilter(prefix.encode("utf-8"))
            if len(keys.prefix) > MAX_KEY_BYTES:
                raise InvalidArgument(f"prefix is longer than the {MAX_KEY_BYTES}-byte key limit")
        if start_revision is not None and not 0 <= start_revision <= MAX_VERSION:
            raise InvalidArgument(f"start_revision must be 0 or more and at most {MAX_VERSION}, "
                                  f"not {start_revision}")
        return keys, start_revision

    # -- reads ---------------------------------------------------------------------

    def check_get(self, key: str, options: ReadOptions) -> bytes:
        """The stored form of a Get's key; raises InvalidArgument for a bad key or
        options. No I/O."""
        k = check_key(key, f"key {describe_key(key)}")
        self._check_read_options(options)
        return k

    def get_group(self, gets: Sequence[tuple[str, bytes, ReadOptions]]) -> list[Record | KvError]:
        """Runs checked Gets (``(key, stored key, options)``, blocking) together: those
        with the same options share one endpoint and one multi-key SELECT. Returns per
        Get its record, or its error (NotFound when there is none)."""
        by_options: dict[ReadOptions, list[bytes]] = {}
        for _, k, options in gets:
            by_options.setdefault(options, []).append(k)
        found: dict[ReadOptions, dict[bytes, Record] | KvError] = {}
        for options, keys in by_options.items():
            unique = list(dict.fromkeys(keys))
            try:
                found[options] = self.router.read(functools.partial(_read_keys, unique), options)
            except KvError as exc:
                found[options] = exc
        results: list[Record | KvError] = []
        for key, k, options in gets:
            records = found[options]
            if isinstance(records, KvError):
                results.append(records)
            elif (record := records.get(k)) is None:
                results.append(NotFound(f"key {describe_key(key)} not found"))
            else:
                results.append(record)
        return results

    def get(self, key: str, options: ReadOptions = EVENTUAL) -> Record:
        """Returns the record under ``key``; raises NotFound if there is none."""
        return _answer(self.get_group([(key, self.check_get(key, options), options)])[0])

    def batch_get(self, keys: Sequence[str],
                  options: ReadOptions = EVENTUAL) -> tuple[list[Record], list[str], list[str]]:
        """Returns the records found (in request order, once each), the missing keys, and
        the keys left unread because the response reached ``limits.max_batch_get_bytes``
        (at least one record is always read)."""
        limit = self.limits.max_batch_get_keys
        if not keys:
            raise InvalidArgument(f"keys is empty; ask for 1 to {limit} keys")
        if len(keys) > limit:
            raise InvalidArgument(f"{len(keys)} keys requested; the limit is {limit}")
        self._check_read_options(options)
        unique = list(dict.fromkeys(keys))
        encoded = [check_key(key, f"keys[{i}]") for i, key in enumerate(unique)]
        budget = self.limits.max_batch_get_bytes
        found, unread = self.router.read(lambda store: store.get_within(encoded, budget), options)
        records: list[Record] = []
        missing: list[str] = []
        unprocessed: list[str] = []
        for key, k in zip(unique, encoded):
            record = found.get(k)
            if record is not None:
                records.append(record)
            elif k in unread:
                unprocessed.append(key)
            else:
                missing.append(key)
        return records, missing, unprocessed

    def scan(self, page: ScanPage, options: ReadOptions = EVENTUAL) -> tuple[list[Record], str]:
        """One page of records in key order; returns them and the next page's token ("" at the end).

        The page is read from one endpoint, in chunks, until it holds ``page.size``
        records or the next record would pass ``page.max_bytes`` (a page holds at least one).
        """
        if not 1 <= page.size <= self.limits.max_scan_page_size:
            raise InvalidArgument(
                f"page_size {page.size} is out of range: 1 to {self.limits.max_scan_page_size}")
        if page.max_bytes < 1:
            raise InvalidArgument("page_bytes must be positive")
        max_bytes = min(page.max_bytes, self.limits.max_scan_page_bytes)  # clamped, not refused
        self._check_read_options(options)
        lower, upper = _key_range(page.prefix, page.start_key, page.end_key)
        after = _decode_page_token(page.page_token)

        def read_page(store: Store) -> tuple[list[Record], bytes | None, bool]:
            found: list[Record] = []
            last: bytes | None = None  # the last found record's key, encoded
            used, cursor = 0, after
            while len(found) < page.size:
                want = min(SCAN_CHUNK, page.size - len(found))
                # The store holds back values past the budget (but always sends a chunk's
                # first record, which may not fit once the page has some).
                chunk, cut = store.scan_page(lower, upper, cursor, want, page.keys_only,
                                             max(1, max_bytes - used))
                for record in chunk:
                    k = record.key.encode("utf-8")
                    size = len(k) + len(record.value)
                    if found and used + size > max_bytes:
                        return found, last, True
                    found.append(record)
                    used += size
                    last = k
                if cut:
                    return found, last, True
                if len(chunk) < want:
                    return found, last, False
                cursor = last
            return found, last, True

        records, last, more = self.router.read(read_page, options)
        token = _encode_page_token(last) if more and last is not None else ""
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
        """Makes open StreamPuts stop taking records: they commit what they hold and end
        with Unavailable and the exact committed count, so their clients resume elsewhere.
        (The transport ends the watches, and interrupts a read of the next message.)"""
        self._closing.set()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def close(self) -> None:
        """Stops the monitor and the load expiry, and closes every store."""
        self._stopped.set()
        self.router.stop()
        for store in [self.writer, *self.readers]:
            store.close()


def _check_load_id(load_id: str) -> None:
    try:
        size = len(load_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument("load_id is not valid UTF-8 text") from None
    if not 1 <= size <= MAX_LOAD_ID_BYTES:
        raise InvalidArgument(
            f"load_id is {size} bytes; a load id must be 1 to {MAX_LOAD_ID_BYTES} bytes of UTF-8"
        )


def _read_keys(keys: list[bytes], store: Store) -> dict[bytes, Record]:
    """The records of ``keys`` found on ``store`` (one key: the cheaper point read)."""
    if len(keys) == 1:
        found = store.get(keys[0])
        return {keys[0]: found} if found is not None else {}
    return store.get_many(keys)


def _answer(result):
    """A group result as a single call's: the value, or its error raised."""
    if isinstance(result, KvError):
        raise result
    return result


class StreamWriter:
    """One StreamPut in progress, driven by the transport without a thread of its own.

    ``add(records)`` checks a message's records and returns a batch to commit when the
    commit policy says so (else None); ``flush()`` returns what is left at the end;
    ``commit(batch)`` (blocking: run it on an executor) commits one batch; ``finish()``
    (blocking) records a named load's last revision; ``close()`` releases the load. The
    transport commits batches one at a time, in order, and may receive the next message
    while one commits. ``committed`` counts the stream's records in committed batches; a
    failed commit stops the stream (nothing after it is committed). For a named load
    (built by :meth:`KeyValueService.open_stream`), the first ``done - start_index``
    records are skipped (an earlier stream committed them) and each batch carries the
    load's progress mark. Not thread-safe: one caller at a time, except that ``add``
    may run while ``commit`` does.
    """

    def __init__(self, service: KeyValueService, load_id: str | None = None,
                 start_index: int = 0, done: int = 0, last: Commit = NO_COMMIT) -> None:
        self._service = service
        self._policy = service.commit_policy
        self._max_value = service.limits.max_value_bytes
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0
        self.load_id = load_id
        self.load_committed = done
        self.skipped = 0
        self._to_skip = done - start_index  # committed by an earlier stream of the load
        self.received = 0  # records of the stream received (the index of the next one)
        self.committed = 0  # records of the stream in committed batches (skipped ones too)
        self.commit_info = last  # the last committed batch's (of the load, if named)
        self.in_doubt = 0  # records of a batch whose COMMIT's outcome is unknown

    def add(self, records: Sequence[tuple[str, bytes]]) -> list[tuple[bytes, bytes]] | None:
        """Checks and queues records; returns a full batch to commit, or None.

        Raises InvalidArgument naming the record's index for a bad record (the records
        before it stay queued: ``flush`` returns them)."""
        if self._to_skip:
            skip = min(self._to_skip, len(records))
            self._to_skip -= skip
            self.received += skip
            self.skipped += skip
            self.committed += skip
            records = records[skip:]
        policy, max_key, max_value = self._policy, MAX_KEY_BYTES, self._max_value
        pending = self._pending
        ready: list[tuple[bytes, bytes]] | None = None
        for key, value in records:
            k = key.encode("utf-8")
            if not k or len(k) > max_key or len(value) > max_value:
                where = f"record {self.received}"  # built only for the error
                check_key(key, where)
                check_value(value, where, self._service.limits)
            pending.append((k, value))
            self._pending_bytes += len(k) + len(value)
            self.received += 1
            if len(pending) >= policy.max_records or self._pending_bytes >= policy.max_bytes:
                if ready is not None:  # a message larger than a batch: commit in one go
                    ready.extend(pending)
                else:
                    ready = pending
                pending = self._pending = []
                self._pending_bytes = 0
        return ready

    def flush(self) -> list[tuple[bytes, bytes]]:
        """The records queued but not yet handed out as a batch."""
        ready, self._pending, self._pending_bytes = self._pending, [], 0
        return ready

    def commit(self, batch: list[tuple[bytes, bytes]]) -> None:
        """Commits ``batch`` on the master (blocking), with the load's progress if named."""
        if not batch:
            return
        mark = None
        if self.load_id is not None:
            mark = LoadMark(self.load_id, self.load_committed,
                            self.load_committed + len(batch), self.commit_info)
        try:
            commit = self._service._write(lambda store: store.put_many(batch, mark))
        except KvError as exc:
            if exc.in_doubt:
                self.in_doubt = len(batch)
                exc.message = self._in_doubt_message(exc.message)
            raise
        self.committed += len(batch)
        self.load_committed += len(batch)
        self.commit_info = commit
        self._service._count_written(len(batch))

    def finish(self) -> None:
        """At the end of a load's stream: records its last batch's revision and token
        (best effort: the count is exact anyway; see Store.record_load_commit)."""
        if self.load_id is None or self.committed == self.skipped:
            return
        try:
            self._service._write(lambda store: store.record_load_commit(
                self.load_id, self.load_committed, self.commit_info))
        except KvError as exc:
            _LOGGER.warning("load %r: could not record its last revision: %s", self.load_id, exc)

    def close(self) -> None:
        """Releases the load (another stream may then write it)."""
        if self.load_id is not None:
            self._service._release_load(self.load_id)

    def reported(self) -> int | None:
        """The committed count an error reports: the load's for a named load, else the
        stream's; None when the last batch's commit is in doubt (then nobody knows it here)."""
        if self.in_doubt:
            return None
        return self.load_committed if self.load_id is not None else self.committed

    def _in_doubt_message(self, message: str) -> str:
        """``message`` of an in-doubt batch commit, with what is known."""
        first, last = self.committed, self.committed + self.in_doubt - 1
        known = (f"records {first}..{last} of this stream were being committed when the "
                 f"connection to the master was lost: they may be stored or not; the {first} "
                 "before them are")
        if self.load_id is None:
            return f"{message}; {known} (read records {first}..{last} to see)"
        return (f"{message}; {known}; GetLoad({self.load_id!r}) gives the load's exact count "
                "once the master is back (a batch and the count commit together)")

    def drained(self) -> Unavailable:
        """The error that ends a stream cut short by the server shutting down."""
        if self.load_id is None:
            n = self.committed
            message = (f"the server is shutting down; the stream's first {n} records are "
                       f"committed and none after them: resume from record {n} on another server")
        else:
            n = self.load_committed
            message = (f"the server is shutting down; load {self.load_id!r} has {n} records "
                       f"committed; resume it from record {n} on another server")
        return Unavailable(message, committed=n)

    def result(self) -> StreamResult:
        return StreamResult(self.committed, self.commit_info, self.skipped,
                            self.load_committed if self.load_id is not None else 0)
