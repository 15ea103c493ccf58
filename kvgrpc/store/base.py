"""The storage contract: :class:`Store` and the plain types it uses.

The types a store shares with the layers above it (:class:`~kvgrpc.records.Record`,
:class:`~kvgrpc.records.Commit`, :class:`~kvgrpc.records.WriteResult`,
:class:`~kvgrpc.records.LoadProgress`, :class:`~kvgrpc.records.Event`) live in
:mod:`kvgrpc.records`; the ones here are the store's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from kvgrpc.errors import Aborted, FailedPrecondition, InvalidArgument
from kvgrpc.records import NO_COMMIT, Commit, Event, LoadProgress, Record, WriteResult

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


#: The table (in the same database or file as the records) where stores keep the progress
#: of named loads; one row per (records table, load id).
LOADS_TABLE = "kvgrpc_loads"
#: A load id is 1 to this many bytes of UTF-8.
MAX_LOAD_ID_BYTES = 128


@dataclass(frozen=True, slots=True)
class LoadMark:
    """The progress a ``put_many`` batch of a named load records with it.

    The batch's transaction sets the load's committed count from ``before`` to ``after``
    (``before`` + the batch's records), but only if the recorded count is still
    ``before`` (no row: 0); otherwise nothing of the batch is written and Aborted is
    raised: another stream of the same load got there first. ``last`` is the commit of
    the load's previous batch: a store that cannot know its own transaction's revision
    and token before committing (a GTID is assigned at commit) records ``last`` instead,
    until ``record_load_commit`` catches up.
    """

    load_id: str
    before: int
    after: int
    last: Commit = NO_COMMIT


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One write of a group (:meth:`Store.write_group`): a put of ``value`` (with
    ``expected_version``, a compare-and-set; 0: the key must not exist), or, with
    ``value`` None, a delete."""

    key: bytes
    value: bytes | None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """The changes of one revision, in the order they were made: :class:`Event` s whose
    ``revision`` is the batch's, keys decoded from UTF-8 (invalid bytes replaced).

    A batch without events reports that the feed has reached ``revision`` (a write to
    another table, or a quiet interval): every change up to it has been delivered.
    """

    revision: int
    events: Sequence[Event] = ()


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Which keys a change feed reports: those starting with ``prefix`` (b"": all), or with
    ``exact``, only the key ``prefix`` itself."""

    prefix: bytes = b""
    exact: bool = False

    def __call__(self, key: bytes) -> bool:
        return key == self.prefix if self.exact else key.startswith(self.prefix)


#: Every key.
ALL_KEYS = KeyFilter()


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """How many of an endpoint's connections are in use, and how many it may open."""

    in_use: int
    size: int


class Store(Protocol):
    """One storage endpoint. Implementations are safe to share between threads.

    Writes (each reports the :class:`Commit` of its transaction):
    - ``put`` writes one record durably (committed) and returns a :class:`WriteResult`:
      done, the new version and the commit. With ``expected_version`` it writes only if
      the key's version equals it (0: the key must not exist) and otherwise raises
      FailedPrecondition with ``current_version`` set.
    - ``put_many`` writes the records in order in one transaction: all or none; when a
      key occurs twice, the later record wins. Calling it again with the same records
      leaves the same content.
      With ``progress`` (a named load's :class:`LoadMark`), the load's progress row is
      written in the same transaction, conditionally (see LoadMark): the recorded
      progress of a load can never disagree with its data.
    - ``delete`` returns a :class:`WriteResult`: done when the key existed (version 0),
      with the commit (``NO_COMMIT`` when it did not).
    - ``write_group(ops)`` runs puts and deletes (:class:`WriteOp`) in one transaction,
      in order, each seeing the ones before it, and commits once: the group commit of
      concurrent calls. Returns one :class:`WriteResult` per op (as ``put`` and ``delete``
      would): each op that was done carries the transaction's Commit, each that was not
      ``NO_COMMIT`` (a list, not a list and one Commit: every caller of a group gets its
      own op's result whole). A compare-and-set that does not match is not done (its
      result holds the key's current version, 0: absent), changes nothing and does not
      stop the others.

    Loads: ``load_progress(load_id)`` returns the :class:`LoadProgress` (None: unknown or
    expired); its count is always exact; its commit is that of its last batch, or of the
    one before when the store could not know it in the batch's transaction and
    ``record_load_commit(load_id, committed, commit)`` (called at the end of a stream) has
    not recorded it since (it does nothing once the count moved on).
    ``expire_loads(older_than)`` deletes the progress of loads not updated for ``older_than`` seconds; returns how many.
    The progress lives in :data:`LOADS_TABLE`, which the change feed never reports.

    Change feed (the master): ``head_revision()`` is the revision of the latest write;
    ``changes(after, stopped, keys)`` yields a :class:`ChangeBatch` per revision after
    ``after``, in commit order, with no gaps and no repeats, including writes made through
    other servers; a batch holds the changes to the keys the :class:`KeyFilter` accepts.
    It first yields an empty batch once the feed is open, then waits for new writes, yields
    an empty batch at least every second while quiet, and returns once ``stopped()`` is
    true. A revision no longer held (or ahead of the head) raises OutOfRange; a feed the
    database cannot give raises FailedPrecondition.

    Reads return :class:`Record` s, keys decoded from UTF-8 (invalid bytes replaced).
    ``get``/``get_many`` read committed data; ``get_many`` returns only found keys, in a
    dict keyed by the encoded key (as asked).
    ``get_within(keys, max_bytes)`` is ``get_many`` with a byte budget: it returns the
    records found and the set of keys it left unread because the records before them (in
    ``keys`` order) already hold ``max_bytes`` of keys and values (the first record is
    always read; unread keys may or may not exist). Values past the budget are never
    brought into the server's memory.
    ``scan(lower, upper, after, limit, keys_only)`` returns up to ``limit`` records with
    ``lower <= key < upper`` (``upper`` None: no end) and ``key > after`` (if given), in
    bytewise key order; with ``keys_only`` their values are empty. ``scan_page(...,
    max_bytes)`` is the same with a byte budget: it stops before the first record that
    would take the keys and values past ``max_bytes`` (the first record always comes) and
    says whether it stopped for that; values past the budget never reach this process.

    Replication (endpoints without replication answer trivially):
    - ``has_applied(token, timeout)`` waits up to ``timeout`` seconds until the endpoint
      holds the write ``token`` names; returns whether it does.
    - ``write_heartbeat()`` (master) records the current time in a heartbeat row;
      ``replication_lag()`` (replica) returns how many seconds old the newest heartbeat
      it has applied is — an upper bound on how stale its data is — or ``None`` if it has
      none yet.
    - ``semi_sync_active()`` (master) tells whether semi-synchronous replication is on,
      so that a committed write is also on a replica; ``None`` if not applicable.

    Failures raise :class:`~kvgrpc.errors.KvError` subclasses only: ``Unavailable`` when
    the endpoint cannot be reached, ``ResourceExhausted`` when it is at its concurrency
    limit, ``Aborted`` on a transaction conflict, ``Internal`` otherwise.
    """

    #: Where the data lives, for logs and messages (never holds a password).
    description: str

    def connect(self) -> None:
        """Opens the endpoint now rather than on first use; raises Unavailable if it cannot."""
        ...

    def put(self, key: bytes, value: bytes, expected_version: int | None = None) -> WriteResult: ...

    def put_many(self, records: Sequence[tuple[bytes, bytes]],
                 progress: LoadMark | None = None) -> Commit: ...

    def load_progress(self, load_id: str) -> LoadProgress | None: ...

    def record_load_commit(self, load_id: str, committed: int, commit: Commit) -> None: ...

    def expire_loads(self, older_than: float) -> int: ...

    def delete(self, key: bytes) -> WriteResult: ...

    def write_group(self, ops: Sequence[WriteOp]) -> list[WriteResult]: ...

    def head_revision(self) -> int: ...

    def changes(self, after: int, stopped: Callable[[], bool],
                keys: KeyFilter = ALL_KEYS) -> Iterator[ChangeBatch]: ...

    def get(self, key: bytes) -> Record | None: ...

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Record]: ...

    def get_within(self, keys: Sequence[bytes],
                   max_bytes: int) -> tuple[dict[bytes, Record], set[bytes]]: ...

    def scan(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
             keys_only: bool = False) -> list[Record]: ...

    def scan_page(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
                  keys_only: bool, max_bytes: int) -> tuple[list[Record], bool]: ...

    def has_applied(self, token: str, timeout: float) -> bool: ...

    def has_written(self, token: str) -> bool: ...

    def write_heartbeat(self) -> None: ...

    def replication_lag(self) -> float | None: ...

    def semi_sync_active(self) -> bool | None: ...

    def pool_usage(self) -> PoolUsage: ...

    def close(self) -> None: ...


def check_table_name(table: str) -> str:
    """Returns ``table`` if it is a plain SQL identifier; raises InvalidArgument otherwise.

    Table names are the one thing interpolated into SQL, so only ``[A-Za-z_][A-Za-z0-9_]*``
    (at most 64 characters) is accepted.
    """
    if not _TABLE_NAME.fullmatch(table):
        raise InvalidArgument(
            f"table name {table!r} is not allowed: use letters, digits and '_' (at most 64)"
        )
    return table


def version_conflict(expected: int, current: int) -> FailedPrecondition:
    """The error of a compare-and-set whose expected version did not match."""
    state = "does not exist" if current == 0 else f"is at version {current}"
    wanted = "not to exist" if expected == 0 else f"to be at version {expected}"
    return FailedPrecondition(f"the key {state}; the write expected it {wanted}",
                              current_version=current)


def scan_query(table: str, mark: str, lower: bytes, upper: bytes | None, after: bytes | None,
               limit: int, keys_only: bool, max_bytes: int | None = None) -> tuple[str, tuple]:
    """The SELECT of ``Store.scan`` for a quoted ``table`` and a placeholder ``mark``
    (``%s`` or ``?``), with its parameters; rows are read back by :func:`scanned`.

    With ``max_bytes``, a value is sent only while the running total of keys and values
    (in key order) stays within it — the first row always — so the rest never leaves the
    database: the page of at most ``limit`` rows is taken first (a derived table, so the
    window runs over it alone), then the running total over that page."""
    where, params = [f"k >= {mark}"], [lower]  # type: list[str], list[bytes | int]
    if upper is not None:
        where.append(f"k < {mark}")
        params.append(upper)
    if after is not None:
        where.append(f"k > {mark}")
        params.append(after)
    columns = "k, version" if keys_only else "k, version, v"
    sql = f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY k LIMIT {mark}"
    params.append(limit)
    if max_bytes is None or keys_only:
        return sql, tuple(params)
    sql = (f"SELECT k, version, CASE WHEN ROW_NUMBER() OVER w = 1 OR "
           f"SUM(LENGTH(k) + LENGTH(v)) OVER w <= {mark} THEN v END "
           f"FROM ({sql}) AS page WINDOW w AS (ORDER BY k) ORDER BY k")
    return sql, (max_bytes, *params)  # the budget comes first in the text


def scanned(rows) -> tuple[list[Record], bool]:
    """The records of the rows a :func:`scan_query` returned (no value when keys only),
    up to the first row whose value the byte budget held back; and whether one did."""
    records: list[Record] = []
    for row in rows:
        if len(row) > 2 and row[2] is None:
            return records, True
        records.append(Record(bytes(row[0]).decode("utf-8", "replace"),
                              bytes(row[2]) if len(row) > 2 else b"", int(row[1])))
    return records, False


def load_conflict(mark: LoadMark, found: int) -> Aborted:
    """The error of a load batch whose expected progress was not the recorded one."""
    return Aborted(
        f"load {mark.load_id!r} is at {found} committed records, not {mark.before}: another "
        "stream of the same load (or the last batch of a server that stopped) committed "
        f"records meanwhile; nothing of this batch was written; resume from record {found}",
        committed=found,
    )
