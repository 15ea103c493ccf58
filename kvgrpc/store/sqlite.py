"""The embedded SQLite store: the zero-setup default."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from kvgrpc.deadlines import time_left
from kvgrpc.errors import Internal, InvalidArgument, OutOfRange, ResourceExhausted, Unavailable
from kvgrpc.records import NO_COMMIT, Commit, Event, LoadProgress, Record, WriteResult
from kvgrpc.store.base import (
    ALL_KEYS,
    LOADS_TABLE,
    ChangeBatch,
    KeyFilter,
    LoadMark,
    PoolUsage,
    WriteOp,
    check_table_name,
    load_conflict,
    scan_query,
    scanned,
    version_conflict,
)

_LOGGER = logging.getLogger(__name__)


#: How many of the latest changes the change log keeps; older revisions are compacted.
CHANGES_KEPT = 100_000
#: While no change arrives, how often a watcher looks again (writes made by another
#: process on the same file are only seen this way) and reports its progress.
POLL_SECONDS = 0.2
PROGRESS_SECONDS = 1.0


class SQLiteStore:
    """A SQLite file in WAL mode, with ``synchronous=FULL`` so that commits are durable.

    Thread-safe: each operation borrows one connection from a small pool (connections
    are never used by two threads at once). SQLite allows one writer at a time; writers
    wait up to ``busy_timeout`` seconds for each other.

    The change feed is a change-log table, ``<table>_changes``, filled by triggers in the
    writing transaction: its row id is the revision (one per record written), and the
    newest ``CHANGES_KEPT`` rows are kept. The progress of named loads is in
    ``kvgrpc_loads`` (no triggers: the change log holds records only).
    """

    def __init__(self, path: str, table: str = "kv", *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.table = check_table_name(table)
        self.description = f"sqlite:{os.path.abspath(path)} (table {table})"
        self._busy_timeout = busy_timeout
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._closed = False  # close() was called: connections given back are closed
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writing transaction of this process at a time
        self._committed = threading.Condition()  # notified after each write, for watchers
        self._commits = 0  # writes committed through this store, under self._committed
        self._pruned_at = 0
        t = f'"{self.table}"'
        log = f'"{self.table}_changes"'
        self._sql_put = (
            f"INSERT INTO {t} (k, v, version) VALUES (?, ?, 1) "
            f"ON CONFLICT (k) DO UPDATE SET v = excluded.v, version = {t}.version + 1 "
            f"RETURNING version"
        )
        self._sql_put_many = (
            f"INSERT INTO {t} (k, v, version) VALUES (?, ?, 1) "
            f"ON CONFLICT (k) DO UPDATE SET v = excluded.v, version = {t}.version + 1"
        )
        self._sql_create_only = f"INSERT INTO {t} (k, v, version) VALUES (?, ?, 1) ON CONFLICT (k) DO NOTHING"
        self._sql_update_if = f"UPDATE {t} SET v = ?, version = version + 1 WHERE k = ? AND version = ?"
        self._sql_version = f"SELECT version FROM {t} WHERE k = ?"
        self._sql_get = f"SELECT v, version FROM {t} WHERE k = ?"
        self._sql_delete = f"DELETE FROM {t} WHERE k = ?"
        self._sql_get_many = f"SELECT k, v, version FROM {t} WHERE k IN ({{}})"
        self._sql_head = f"SELECT seq FROM sqlite_sequence WHERE name = '{self.table}_changes'"
        self._sql_oldest = f"SELECT min(rev) FROM {log}"
        self._sql_changes = f"SELECT rev, k, v, version, deleted FROM {log} WHERE rev > ? ORDER BY rev LIMIT 1000"
        self._sql_prune = f"DELETE FROM {log} WHERE rev <= ?"
        self._sql_load_get = (f"SELECT committed, revision, token, updated FROM {LOADS_TABLE} "
                              "WHERE tbl = ? AND load_id = ?")
        self._sql_load_set = (
            f"INSERT INTO {LOADS_TABLE} (tbl, load_id, committed, revision, token, updated) "
            "VALUES (?, ?, ?, ?, '', ?) ON CONFLICT (tbl, load_id) DO UPDATE SET "
            "committed = excluded.committed, revision = excluded.revision, updated = excluded.updated"
        )
        self._sql_load_expire = f"DELETE FROM {LOADS_TABLE} WHERE tbl = ? AND updated < ?"
        with self._connection() as cnx:
            cnx.execute(
                f"CREATE TABLE IF NOT EXISTS {t} ("
                "k BLOB NOT NULL PRIMARY KEY, v BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 1"
                ") WITHOUT ROWID"
            )
            cnx.execute(
                f"CREATE TABLE IF NOT EXISTS {log} (rev INTEGER PRIMARY KEY AUTOINCREMENT,"
                " k BLOB NOT NULL, v BLOB NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL)"
            )
            cnx.execute(
                f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (tbl TEXT NOT NULL, load_id TEXT NOT NULL,"
                " committed INTEGER NOT NULL, revision INTEGER NOT NULL, token TEXT NOT NULL,"
                " updated REAL NOT NULL, PRIMARY KEY (tbl, load_id)) WITHOUT ROWID"
            )
            for name, event, row in (("insert", "INSERT", "NEW.k, NEW.v, NEW.version, 0"),
                                     ("update", "UPDATE", "NEW.k, NEW.v, NEW.version, 0"),
                                     ("delete", "DELETE", "OLD.k, x'', OLD.version, 1")):
                cnx.execute(
                    f'CREATE TRIGGER IF NOT EXISTS "{self.table}_log_{name}" AFTER {event} ON {t} '
                    f"BEGIN INSERT INTO {log} (k, v, version, deleted) VALUES ({row}); END"
                )

    def _connect(self) -> sqlite3.Connection:
        cnx = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        # Switching a new file to WAL takes a lock SQLite's busy handler does not wait for:
        # processes opening a new file at once got "database is locked". Retried here,
        # within busy_timeout (a file already in WAL mode does not switch again).
        give_up = time.monotonic() + self._busy_timeout
        while True:
            try:
                cnx.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= give_up:
                    cnx.close()
                    raise
                time.sleep(0.01)
        cnx.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._all.append(cnx)
        return cnx

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            try:
                cnx = self._idle.get_nowait()
            except queue.Empty:
                cnx = self._connect()
        except sqlite3.Error as exc:
            _LOGGER.error("cannot open %s: %s", self.description, exc)
            raise Unavailable(f"the database file {self.path} cannot be opened") from exc
        try:
            yield cnx
        except sqlite3.OperationalError as exc:
            if cnx.in_transaction:
                cnx.rollback()
            if "locked" in str(exc) or "busy" in str(exc):
                raise ResourceExhausted("the database is busy; retry later") from exc
            _LOGGER.exception("SQLite operation failed on %s", self.description)
            raise Internal("storage failure; see the server log") from exc
        except sqlite3.Error as exc:
            if cnx.in_transaction:
                cnx.rollback()
            _LOGGER.exception("SQLite operation failed on %s", self.description)
            raise Internal("storage failure; see the server log") from exc
        finally:
            with self._lock:
                closed = self._closed
            if closed:
                cnx.close()
            else:
                self._idle.put(cnx)

    @contextlib.contextmanager
    def _writing(self, begin: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection in a write transaction (``BEGIN IMMEDIATE``), one writer of this
        process at a time. SQLite has one writer anyway; queueing here, in order, instead of
        in SQLite's busy handler (which sleeps and retries) keeps 100 concurrent streams from
        starving one another past ``busy_timeout``. The wait is bounded by the call's
        deadline and ``busy_timeout``; other processes on the file still meet the busy handler."""
        if not self._write_lock.acquire(timeout=time_left(self._busy_timeout)):
            raise ResourceExhausted("the database is busy with other writes; retry later")
        try:
            with self._connection() as cnx:
                if begin:
                    cnx.execute("BEGIN IMMEDIATE")
                yield cnx
        finally:
            self._write_lock.release()

    def connect(self) -> None:
        with self._connection():
            pass

    def put(self, key: bytes, value: bytes, expected_version: int | None = None) -> WriteResult:
        with self._writing() as cnx:  # the check and the write see the same version
            if expected_version is None:
                (version,) = cnx.execute(self._sql_put, (key, value)).fetchone()
                return WriteResult(True, int(version), self._commit(cnx))
            if expected_version == 0:
                done = cnx.execute(self._sql_create_only, (key, value)).rowcount == 1
            else:
                done = cnx.execute(self._sql_update_if, (value, key, expected_version)).rowcount == 1
            if done:
                return WriteResult(True, expected_version + 1, self._commit(cnx))
            row = cnx.execute(self._sql_version, (key,)).fetchone()
            cnx.execute("COMMIT")
        raise version_conflict(expected_version, 0 if row is None else int(row[0]))

    def put_many(self, records: Sequence[tuple[bytes, bytes]],
                 progress: LoadMark | None = None) -> Commit:
        if not records:
            return NO_COMMIT
        with self._writing() as cnx:  # the write lock: the progress check holds
            if progress is not None:
                row = cnx.execute(self._sql_load_get, (self.table, progress.load_id)).fetchone()
                found = 0 if row is None else int(row[0])
                if found != progress.before:
                    cnx.execute("ROLLBACK")
                    raise load_conflict(progress, found)
            cnx.executemany(self._sql_put_many, records)
            return self._commit(cnx, progress)

    def write_group(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        # Each record written is its own change here (a change-log row, by trigger): a
        # write's revision is its row's, as Watch reports it, not the group's last.
        outcomes: list[tuple[bool, int, int]] = []  # done, version, revision
        changed = False
        with self._writing() as cnx:
            for op in ops:
                if op.value is None:
                    done = cnx.execute(self._sql_delete, (op.key,)).rowcount > 0
                elif op.expected_version is None:
                    cnx.execute(self._sql_put_many, (op.key, op.value))
                    done = True
                elif op.expected_version == 0:
                    done = cnx.execute(self._sql_create_only, (op.key, op.value)).rowcount == 1
                else:
                    done = cnx.execute(self._sql_update_if,
                                       (op.value, op.key, op.expected_version)).rowcount == 1
                version = 0
                if op.value is not None:
                    row = cnx.execute(self._sql_version, (op.key,)).fetchone()
                    version = 0 if row is None else int(row[0])
                changed = changed or done
                outcomes.append((done, version, self._head(cnx) if done else 0))
            if changed:
                self._commit(cnx)
            else:
                cnx.execute("COMMIT")
        return [WriteResult(done, version, Commit("", revision) if done else NO_COMMIT)
                for done, version, revision in outcomes]

    def load_progress(self, load_id: str) -> LoadProgress | None:
        with self._connection() as cnx:
            row = cnx.execute(self._sql_load_get, (self.table, load_id)).fetchone()
        if row is None:
            return None
        committed, revision, token, updated = row
        return LoadProgress(load_id, int(committed), Commit(str(token), int(revision)),
                            int(float(updated) * 1000))

    def record_load_commit(self, load_id: str, committed: int, commit: Commit) -> None:
        pass  # put_many records each batch's own revision (known before COMMIT here)

    def expire_loads(self, older_than: float) -> int:
        with self._writing(begin=False) as cnx:
            return cnx.execute(self._sql_load_expire, (self.table, time.time() - older_than)).rowcount

    def _commit(self, cnx: sqlite3.Connection, progress: LoadMark | None = None) -> Commit:
        """Commits the open write transaction (recording ``progress`` in it); returns its
        revision (the last change's)."""
        revision = self._head(cnx)
        if progress is not None:
            cnx.execute(self._sql_load_set,
                        (self.table, progress.load_id, progress.after, revision, time.time()))
        if revision - self._pruned_at >= 1000:  # keep the change log at CHANGES_KEPT rows
            cnx.execute(self._sql_prune, (revision - CHANGES_KEPT,))
            self._pruned_at = revision
        cnx.execute("COMMIT")
        with self._committed:
            self._commits += 1
            self._committed.notify_all()
        return Commit("", revision)

    def _head(self, cnx: sqlite3.Connection) -> int:
        row = cnx.execute(self._sql_head).fetchone()
        return 0 if row is None else int(row[0])

    def get(self, key: bytes) -> Record | None:
        with self._connection() as cnx:
            row = cnx.execute(self._sql_get, (key,)).fetchone()
        return None if row is None else Record(key.decode("utf-8", "replace"), bytes(row[0]), int(row[1]))

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Record]:
        found: dict[bytes, Record] = {}
        with self._connection() as cnx:
            for start in range(0, len(keys), 500):  # SQLite's default variable limit is 999+
                chunk = keys[start : start + 500]
                sql = self._sql_get_many.format(", ".join("?" * len(chunk)))
                for k, v, version in cnx.execute(sql, chunk):
                    key = bytes(k)
                    found[key] = Record(key.decode("utf-8", "replace"), bytes(v), int(version))
        return found

    def get_within(self, keys: Sequence[bytes],
                   max_bytes: int) -> tuple[dict[bytes, Record], set[bytes]]:
        found: dict[bytes, Record] = {}
        unread: set[bytes] = set()
        used = 0
        with self._connection() as cnx:
            for start in range(0, len(keys), 400):
                chunk = keys[start : start + 400]
                if used > max_bytes or (used == max_bytes and found):
                    unread.update(chunk)
                    continue
                # Values are returned only while the running total (in request order) fits.
                sql = (f"WITH req(i, k) AS (VALUES {', '.join(['(?, ?)'] * len(chunk))}) "
                       f"SELECT t.k, t.version, length(t.k) + length(t.v), CASE WHEN ? + "
                       f"sum(length(t.k) + length(t.v)) OVER w <= ? OR (? = 0 AND "
                       f"row_number() OVER w = 1) THEN t.v END FROM req JOIN \"{self.table}\" t "
                       f"ON t.k = req.k WINDOW w AS (ORDER BY req.i ROWS UNBOUNDED PRECEDING) "
                       f"ORDER BY req.i")
                params = [x for i, k in enumerate(chunk) for x in (i, k)]
                params += [used, max_bytes, len(found)]
                for k, version, size, v in cnx.execute(sql, params):
                    key = bytes(k)
                    if v is None:
                        unread.add(key)
                        used = max_bytes + 1
                    else:
                        found[key] = Record(key.decode("utf-8", "replace"), bytes(v), int(version))
                        used += int(size)
                if used > max_bytes:  # keys after the cut that have no row are unread too
                    cut = False
                    for k in chunk:
                        if cut and k not in found:
                            unread.add(k)
                        cut = cut or k in unread
        return found, unread

    def scan(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
             keys_only: bool = False) -> list[Record]:
        return self.scan_page(lower, upper, after, limit, keys_only, None)[0]

    def scan_page(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
                  keys_only: bool, max_bytes: int | None) -> tuple[list[Record], bool]:
        sql, params = scan_query(f'"{self.table}"', "?", lower, upper, after, limit, keys_only,
                                 max_bytes)
        with self._connection() as cnx:
            return scanned(cnx.execute(sql, params).fetchall())

    def delete(self, key: bytes) -> WriteResult:
        with self._writing() as cnx:
            if cnx.execute(self._sql_delete, (key,)).rowcount > 0:
                return WriteResult(True, 0, self._commit(cnx))
            cnx.execute("COMMIT")
        return WriteResult(False, 0)

    # The change feed: the change log, read in revision order.

    def head_revision(self) -> int:
        with self._connection() as cnx:
            return self._head(cnx)

    def changes(self, after: int, stopped: Callable[[], bool],
                keys: KeyFilter = ALL_KEYS) -> Iterator[ChangeBatch]:
        with self._connection() as cnx:
            head = self._head(cnx)
            (oldest,) = cnx.execute(self._sql_oldest).fetchone()
        if after > head:
            raise OutOfRange(f"revision {after} is ahead of the database's latest revision {head}")
        if oldest is not None and after < oldest - 1:
            raise OutOfRange(
                f"revision {after} has been compacted (the change log keeps the latest "
                f"{CHANGES_KEPT} changes, from revision {oldest}); start from a later revision"
            )
        yield ChangeBatch(after)  # the feed is open
        reported = time.monotonic()
        while not stopped():
            with self._committed:
                commits = self._commits
            with self._connection() as cnx:
                rows = cnx.execute(self._sql_changes, (after,)).fetchall()
            for rev, k, v, version, deleted in rows:
                if rev != after + 1:  # pruned while this watcher was behind
                    raise OutOfRange(f"revision {after + 1} was compacted before this watch read it")
                after = rev
                key = bytes(k)
                yield ChangeBatch(rev, [Event(key.decode("utf-8", "replace"), bytes(v), int(version),
                                              rev, bool(deleted))] if keys(key) else ())
            if rows:
                reported = time.monotonic()
                continue
            if time.monotonic() - reported >= PROGRESS_SECONDS:
                reported = time.monotonic()
                yield ChangeBatch(after)
            with self._committed:
                if self._commits == commits:  # nothing committed since the query
                    self._committed.wait(POLL_SECONDS)

    # A single file has no replication: every write is applied where it is read.

    def has_applied(self, token: str, timeout: float) -> bool:
        return self.has_written(token)

    def has_written(self, token: str) -> bool:
        """Every write here returns the empty token; any other is from another database."""
        if token:
            raise InvalidArgument(
                "read_options.min_write_token is from another database: the embedded SQLite "
                "database's writes return an empty token (every read sees every write here)")
        return True

    def write_heartbeat(self) -> None:
        pass

    def replication_lag(self) -> float | None:
        return 0.0

    def semi_sync_active(self) -> bool | None:
        return None

    def pool_usage(self) -> PoolUsage:
        with self._lock:
            return PoolUsage(len(self._all) - self._idle.qsize(), len(self._all))

    def close(self) -> None:
        """Closes the idle connections; one in use (a watch's feed thread still reading)
        is closed by its borrower when it gives it back: closing a sqlite3 connection
        under another thread's statement can crash the process."""
        with self._lock:
            self._closed, self._all = True, []
        while True:
            try:
                cnx = self._idle.get_nowait()
            except queue.Empty:
                return
            cnx.close()

