"""Storage: one interface, :class:`Store`, and two backends.

- :class:`SQLiteStore` — an embedded SQLite file (standard library), the zero-setup default.
- :class:`MySQLStore` — one MySQL/MariaDB endpoint through a ``mysql.connector`` pool.

A store is one endpoint: a file or one database server. It knows nothing of replicas,
routing or gRPC; the domain layer (:mod:`kvgrpc.service`) decides which store serves
what. Keys and values are bytes here. Every driver error is translated at this boundary
into a :mod:`kvgrpc.errors` exception whose message holds no SQL, driver text or
password; the original is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvgrpc.errors import Aborted, Internal, InvalidArgument, KvError, ResourceExhausted, Unavailable

_LOGGER = logging.getLogger(__name__)

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as stored: key, value and version (1 on creation, +1 per overwrite)."""

    key: bytes
    value: bytes
    version: int


class Store(Protocol):
    """One storage endpoint. Implementations are safe to share between threads.

    Contract:
    - ``put`` writes one record durably (committed) and returns its new version.
    - ``put_many`` writes the records in order in one transaction: all or none; when a
      key occurs twice, the later record wins. Calling it again with the same records
      leaves the same content.
    - ``get``/``get_many`` read committed data; ``get_many`` returns only found keys.
    - ``delete`` reports whether the key existed.
    - Failures raise :class:`~kvgrpc.errors.KvError` subclasses only: ``Unavailable``
      when the endpoint cannot be reached, ``ResourceExhausted`` when it is at its
      concurrency limit, ``Aborted`` on a transaction conflict, ``Internal`` otherwise.
    """

    #: Where the data lives, for logs and messages (never holds a password).
    description: str

    def connect(self) -> None:
        """Opens the endpoint now rather than on first use; raises Unavailable if it cannot."""
        ...

    def put(self, key: bytes, value: bytes) -> int: ...

    def put_many(self, records: Sequence[tuple[bytes, bytes]]) -> None: ...

    def get(self, key: bytes) -> StoredRecord | None: ...

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, StoredRecord]: ...

    def delete(self, key: bytes) -> bool: ...

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


# --------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------


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

    def put(self, key: bytes, value: bytes) -> int:
        with self._connection() as cnx:
            (version,) = cnx.execute(self._sql_put, (key, value)).fetchone()
            return int(version)

    def put_many(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        if not records:
            return
        with self._connection() as cnx:
            cnx.execute("BEGIN IMMEDIATE")
            cnx.executemany(self._sql_put_many, records)
            cnx.execute("COMMIT")

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

    def delete(self, key: bytes) -> bool:
        with self._connection() as cnx:
            return cnx.execute(self._sql_delete, (key,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for cnx in connections:
            cnx.close()


# --------------------------------------------------------------------------------------
# MySQL / MariaDB
# --------------------------------------------------------------------------------------

#: Client error numbers that mean "the server cannot be reached or the link broke".
_CONNECTION_ERRNOS = frozenset({2002, 2003, 2005, 2006, 2013, 2026, 2027, 2048, 2055})
_CONFLICT_ERRNOS = frozenset({1205, 1213})  # lock wait timeout, deadlock
_TOO_BIG_ERRNOS = frozenset({1153, 1301, 2020})  # packet too large
_READ_ONLY_ERRNO = 1290  # --read-only: e.g. a replica configured as the master
_ACCESS_DENIED_ERRNOS = frozenset({1044, 1045, 1142, 1227})
_NO_TABLE_ERRNO = 1146


@dataclass(frozen=True)
class MySQLEndpoint:
    """Where one MySQL/MariaDB server is and how to log in. ``str()`` hides the password."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)

    @classmethod
    def from_url(cls, url: str, default_password: str | None = None) -> MySQLEndpoint:
        """Parses ``mysql://user[:password]@host[:port]/database``.

        A password absent from the URL is taken from ``default_password`` (the server
        passes ``KVGRPC_MYSQL_PASSWORD``), so none needs to appear on a command line.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise InvalidArgument(
                f"database URL {redact_url(url)!r} is not of the form "
                "mysql://user:password@host:port/database"
            )
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise InvalidArgument(f"database URL {redact_url(url)!r} names no database")
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname,
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            database=database,
            password=password if password is not None else (default_password or ""),
        )

    def __str__(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


def redact_url(url: str) -> str:
    """Returns ``url`` with any password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def mysql_driver() -> str:
    """Names the mysql-connector-python build in use: C extension or pure Python."""
    import mysql.connector

    kind = "C extension" if mysql.connector.HAVE_CEXT else "pure Python (slower; see DEVELOPERS.md)"
    return f"mysql-connector-python {mysql.connector.__version__}, {kind}"


class MySQLStore:
    """One MySQL/MariaDB endpoint (a master or a replica) behind a connection pool.

    Thread-safe. ``mysql.connector``'s pool never waits (an exhausted pool raises
    ``PoolError`` at once) and holds at most 32 connections, so a semaphore of
    ``pool_size`` permits bounds the borrowers: a caller waits up to ``pool_timeout``
    seconds for a permit, then gets ``ResourceExhausted``. The pool is created on first
    use and again after a connection failure, so an endpoint that is down at start-up or
    restarts later is picked up without restarting the server. ``pool_reset_session`` stays on:
    without it one borrower can commit another's rows.
    """

    def __init__(
        self,
        endpoint: MySQLEndpoint,
        table: str = "kv",
        *,
        role: str = "master",
        pool_size: int = 8,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        create_table: bool = False,
    ) -> None:
        if not 1 <= pool_size <= 32:
            raise InvalidArgument(f"pool size {pool_size} is out of range: 1 to 32")
        self.endpoint = endpoint
        self.table = check_table_name(table)
        self.role = role
        self.pool_size = pool_size
        self.description = f"{role} {endpoint} (table {table})"
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._permits = threading.BoundedSemaphore(pool_size)
        self._pool_lock = threading.Lock()
        self._pool = None
        self._pool_generation = 0
        self._max_statement_bytes = 8 << 20  # refined from max_allowed_packet on first use
        t = f"`{self.table}`"
        # LAST_INSERT_ID(expr) makes the new version come back in the OK packet (lastrowid),
        # so a Put is one statement and one round trip.
        self._sql_put = (
            f"INSERT INTO {t} (k, v, version) VALUES (%s, %s, LAST_INSERT_ID(1)) "
            f"ON DUPLICATE KEY UPDATE v = VALUES(v), version = LAST_INSERT_ID(version + 1)"
        )
        self._sql_put_many = (
            f"INSERT INTO {t} (k, v) VALUES (%s, %s) "
            f"ON DUPLICATE KEY UPDATE v = VALUES(v), version = version + 1"
        )
        self._sql_create_table = (
            f"CREATE TABLE IF NOT EXISTS {t} ("
            " k VARBINARY(3072) NOT NULL PRIMARY KEY,"
            " v LONGBLOB NOT NULL,"
            " version BIGINT NOT NULL DEFAULT 1"
            ") ENGINE=InnoDB"
        )
        self._sql_get = f"SELECT v, version FROM {t} WHERE k = %s"
        self._sql_get_many = f"SELECT k, v, version FROM {t} WHERE k IN ({{}})"
        self._sql_delete = f"DELETE FROM {t} WHERE k = %s"
        self._create_table = create_table

    # -- connections ---------------------------------------------------------------

    def _new_pool(self):  # -> MySQLConnectionPool
        from mysql.connector import pooling

        self._pool_generation += 1
        pool = pooling.MySQLConnectionPool(
            pool_name=f"kvgrpc-{self.role}-{id(self):x}-{self._pool_generation}"[:64],
            pool_size=self.pool_size,
            pool_reset_session=True,
            host=self.endpoint.host,
            port=self.endpoint.port,
            user=self.endpoint.user,
            password=self.endpoint.password,
            database=self.endpoint.database,
            autocommit=True,
            connection_timeout=max(1, round(self._connect_timeout)),  # the C extension wants an int
            charset="utf8mb4",
        )
        cnx = pool.get_connection()
        try:
            cur = cnx.cursor()
            if self._create_table:
                cur.execute(self._sql_create_table)
            cur.execute("SELECT @@max_allowed_packet")
            (max_packet,) = cur.fetchone()
            cur.close()
        finally:
            cnx.close()
        # Leave room for the statement text and escaping (binary data can double in size).
        self._max_statement_bytes = max(1 << 20, int(max_packet) // 3)
        return pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator:
        """Borrows a pooled connection, translating driver errors on the way out."""
        if not self._permits.acquire(timeout=self._pool_timeout):
            raise ResourceExhausted(
                f"the {self.role} database is at its limit of {self.pool_size} concurrent "
                f"requests for {self._pool_timeout:g} s; retry later"
            )
        cnx = None
        try:
            with self._translate_errors():
                pool = self._pool
                if pool is None:
                    with self._pool_lock:
                        if self._pool is None:
                            self._pool = self._new_pool()
                        pool = self._pool
                cnx = pool.get_connection()
                yield cnx
        finally:
            if cnx is not None:
                try:
                    cnx.close()  # returns it to the pool (and resets the session)
                except Exception:  # noqa: BLE001 - a broken link is reconnected on next borrow
                    _LOGGER.debug("returning a connection to the %s pool failed", self.role)
            self._permits.release()

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        import mysql.connector

        try:
            yield
        except KvError:
            raise
        except mysql.connector.errors.PoolError as exc:
            raise ResourceExhausted(
                f"the {self.role} database has no free connection; retry later"
            ) from exc
        except mysql.connector.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc) -> KvError:
        errno = getattr(exc, "errno", None)
        where = f"the {self.role} database at {self.endpoint.host}:{self.endpoint.port}"
        if errno in _CONNECTION_ERRNOS or (errno is None or errno == -1):
            _LOGGER.warning("%s is unreachable: %s", where, exc)
            self._drop_pool()
            return Unavailable(f"{where} is unreachable; retry later")
        if errno in _CONFLICT_ERRNOS:
            _LOGGER.info("transaction conflict on %s: %s", where, exc)
            return Aborted("the write conflicted with a concurrent write; retry it")
        if errno in _TOO_BIG_ERRNOS:
            _LOGGER.warning("statement too large for %s: %s", where, exc)
            return ResourceExhausted(f"the request is too large for {where}")
        if errno == _READ_ONLY_ERRNO:
            _LOGGER.error("%s is read-only: is a replica configured as the master? %s", where, exc)
            return Unavailable(f"{where} is read-only and cannot take writes")
        if errno in _ACCESS_DENIED_ERRNOS:
            _LOGGER.error("%s refused the configured credentials: %s", where, exc)
            return Unavailable(f"{where} refused the server's credentials")
        if errno == _NO_TABLE_ERRNO:
            _LOGGER.warning("table %s missing on %s", self.table, where)
            return Unavailable(f"{where} does not have the table yet; retry later")
        _LOGGER.error("unexpected error from %s: %s", where, exc)
        return Internal("storage failure; see the server log")

    def _drop_pool(self) -> None:
        """Forgets the pool after a connection failure, so the next call builds a new one."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        _close_idle(pool)

    # -- the Store interface ---------------------------------------------------------

    def connect(self) -> None:
        """Opens the pool now (creating the table if asked) instead of on first use.

        Raises Unavailable if the endpoint cannot be reached; a later call retries.
        """
        with self._connection():
            pass

    def put(self, key: bytes, value: bytes) -> int:
        with self._connection() as cnx:
            cur = cnx.cursor()
            cur.execute(self._sql_put, (key, value))
            version = cur.lastrowid
            cur.close()
            return int(version)

    def put_many(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        if not records:
            return
        with self._connection() as cnx:
            cur = cnx.cursor()
            cnx.start_transaction()
            try:
                for chunk in self._chunks(records):
                    cur.executemany(self._sql_put_many, chunk)
                cnx.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    cnx.rollback()
                raise
            finally:
                cur.close()

    def _chunks(self, records: Sequence[tuple[bytes, bytes]]) -> Iterator[Sequence[tuple[bytes, bytes]]]:
        """Splits records into multi-row INSERTs that fit in ``max_allowed_packet``."""
        limit = self._max_statement_bytes
        start, size = 0, 0
        for i, (k, v) in enumerate(records):
            row = 2 * (len(k) + len(v)) + 32  # escaping can double binary data
            if size and size + row > limit:
                yield records[start:i]
                start, size = i, 0
            size += row
        yield records[start:]

    def get(self, key: bytes) -> StoredRecord | None:
        with self._connection() as cnx:
            cur = cnx.cursor()
            cur.execute(self._sql_get, (key,))
            row = cur.fetchone()
            cur.close()
        return None if row is None else StoredRecord(key, bytes(row[0]), int(row[1]))

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, StoredRecord]:
        found: dict[bytes, StoredRecord] = {}
        if not keys:
            return found
        with self._connection() as cnx:
            cur = cnx.cursor()
            cur.execute(self._sql_get_many.format(", ".join(["%s"] * len(keys))), tuple(keys))
            for k, v, version in cur.fetchall():
                found[bytes(k)] = StoredRecord(bytes(k), bytes(v), int(version))
            cur.close()
        return found

    def delete(self, key: bytes) -> bool:
        with self._connection() as cnx:
            cur = cnx.cursor()
            cur.execute(self._sql_delete, (key,))
            deleted = cur.rowcount > 0
            cur.close()
            return deleted

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        _close_idle(pool)


def _close_idle(pool) -> None:
    """Closes a pool's idle connections; borrowed ones close when the pool is collected."""
    if pool is not None:
        with contextlib.suppress(Exception):
            pool._remove_connections()  # the pool has no public close
