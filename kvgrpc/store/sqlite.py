"""The embedded SQLite store: the zero-setup default."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from kvgrpc.errors import Internal, ResourceExhausted, Unavailable
from kvgrpc.store.base import (
    PoolUsage,
    StoredRecord,
    check_table_name,
    scan_query,
    scanned,
    version_conflict,
)

_LOGGER = logging.getLogger(__name__)


class SQLiteStore:
    """A SQLite file in WAL mode, with ``synchronous=FULL`` so that commits are durable.

    Thread-safe: each operation borrows one connection from a small pool (connections
    are never used by two threads at once). SQLite allows one writer at a time; writers
    wait up to ``busy_timeout`` seconds for each other.
    """

    def __init__(self, path: str, table: str = "kv", *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.table = check_table_name(table)
        self.description = f"sqlite:{os.path.abspath(path)} (table {table})"
        self._busy_timeout = busy_timeout
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        t = f'"{self.table}"'
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
        with self._connection() as cnx:
            cnx.execute(
                f"CREATE TABLE IF NOT EXISTS {t} ("
                "k BLOB NOT NULL PRIMARY KEY, v BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 1"
                ") WITHOUT ROWID"
            )

    def _connect(self) -> sqlite3.Connection:
        cnx = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        cnx.execute("PRAGMA journal_mode=WAL")
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
            self._idle.put(cnx)

    def connect(self) -> None:
        with self._connection():
            pass

    def put(self, key: bytes, value: bytes, expected_version: int | None = None) -> tuple[int, str]:
        with self._connection() as cnx:
            if expected_version is None:
                (version,) = cnx.execute(self._sql_put, (key, value)).fetchone()
                return int(version), ""
            cnx.execute("BEGIN IMMEDIATE")  # the check and the write see the same version
            if expected_version == 0:
                done = cnx.execute(self._sql_create_only, (key, value)).rowcount == 1
            else:
                done = cnx.execute(self._sql_update_if, (value, key, expected_version)).rowcount == 1
            row = None if done else cnx.execute(self._sql_version, (key,)).fetchone()
            cnx.execute("COMMIT")
        if not done:
            raise version_conflict(expected_version, 0 if row is None else int(row[0]))
        return expected_version + 1, ""

    def put_many(self, records: Sequence[tuple[bytes, bytes]]) -> str:
        if records:
            with self._connection() as cnx:
                cnx.execute("BEGIN IMMEDIATE")
                cnx.executemany(self._sql_put_many, records)
                cnx.execute("COMMIT")
        return ""

    def get(self, key: bytes) -> StoredRecord | None:
        with self._connection() as cnx:
            row = cnx.execute(self._sql_get, (key,)).fetchone()
        return None if row is None else StoredRecord(key, bytes(row[0]), int(row[1]))

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, StoredRecord]:
        found: dict[bytes, StoredRecord] = {}
        with self._connection() as cnx:
            for start in range(0, len(keys), 500):  # SQLite's default variable limit is 999+
                chunk = keys[start : start + 500]
                sql = self._sql_get_many.format(", ".join("?" * len(chunk)))
                for k, v, version in cnx.execute(sql, chunk):
                    found[bytes(k)] = StoredRecord(bytes(k), bytes(v), int(version))
        return found

    def scan(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
             keys_only: bool = False) -> list[StoredRecord]:
        sql, params = scan_query(f'"{self.table}"', "?", lower, upper, after, limit, keys_only)
        with self._connection() as cnx:
            return scanned(cnx.execute(sql, params).fetchall())

    def delete(self, key: bytes) -> tuple[bool, str]:
        with self._connection() as cnx:
            return cnx.execute(self._sql_delete, (key,)).rowcount > 0, ""

    # A single file has no replication: every write is applied where it is read.

    def has_applied(self, token: str, timeout: float) -> bool:
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
        with self._lock:
            connections, self._all = self._all, []
        for cnx in connections:
            cnx.close()

