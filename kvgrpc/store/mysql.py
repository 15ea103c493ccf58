"""The MySQL/MariaDB store: one endpoint (a master or a replica) behind a connection pool."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from kvgrpc.deadlines import time_left
from kvgrpc.logs import DEFAULT_INTERVAL, RateLimitedLog
from kvgrpc.tokens import token_kind
from kvgrpc.errors import (
    Aborted,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KvError,
    ResourceExhausted,
    Unavailable,
)
from kvgrpc.store.base import (
    ALL_KEYS,
    NO_COMMIT,
    ChangeBatch,
    Commit,
    KeyFilter,
    PoolUsage,
    StoredRecord,
    check_table_name,
    scan_query,
    scanned,
    version_conflict,
)

_LOGGER = logging.getLogger(__name__)

#: The table where the master records the time every few 100 ms; replicas read it back
#: to measure their lag (precisely, unlike Seconds_Behind_Master, which also reads 0 when
#: replication has stopped).
HEARTBEAT_TABLE = "kvgrpc_heartbeat"

# Some calls of the C extension (commit, rollback) raise its own error type, not a
# mysql.connector.Error: a lost connection during COMMIT arrives as one of these.
try:
    from _mysql_connector import MySQLInterfaceError as _CInterfaceError

    _C_ERRORS: tuple[type[Exception], ...] = (_CInterfaceError,)
except ImportError:
    _C_ERRORS = ()

#: Batches this large go through LOAD DATA LOCAL INFILE first (smaller ones gain nothing).
BULK_LOAD_MIN_RECORDS = 256
#: Batch directories are named ``kvgrpc-load-PID-RANDOM`` (the PID of the server that
#: made it), so that a server starting later can tell which ones were left by a dead one.
BATCH_DIR_PREFIX = "kvgrpc-load-"
_BATCH_DIR_NAME = re.compile(r"^kvgrpc-load-(\d+)-[A-Za-z0-9_]+$")
#: Batch directories of versions before the PID was in the name: swept once this old.
_LEGACY_BATCH_DIR_MAX_AGE = 24 * 3600.0
#: LOAD DATA LOCAL refused: not allowed by the server / the client library / the server's
#: config (MySQL 3948, 3950; MariaDB 4166: local_infile=0).
_LOCAL_INFILE_REFUSED = frozenset({1148, 2068, 3948, 3950, 4166})

_SEMI_SYNC_STATUS_SQL = (
    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
    "WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS'"
)

#: Client error numbers that mean "the server cannot be reached or the link broke".
_CONNECTION_ERRNOS = frozenset({2002, 2003, 2005, 2006, 2013, 2026, 2027, 2048, 2055})
_CONFLICT_ERRNOS = frozenset({1205, 1213})  # lock wait timeout, deadlock
_TOO_BIG_ERRNOS = frozenset({1153, 1301, 2020})  # packet too large
_READ_ONLY_ERRNO = 1290  # --read-only: e.g. a replica configured as the master
_ACCESS_DENIED_ERRNOS = frozenset({1044, 1045, 1142, 1227})
_NO_TABLE_ERRNO = 1146
_DUPLICATE_KEY_ERRNO = 1062


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

    Thread-safe. Connections come from :class:`_Pool` (not ``mysql.connector.pooling``,
    whose per-use ping and session reset cost six round trips per request; and whose pool
    never waits: an exhausted one raises ``PoolError`` at once). A semaphore of
    ``pool_size`` permits (at most 32) bounds the borrowers: a caller waits up to ``pool_timeout``
    seconds for a permit (less if its call's deadline comes first, see
    :mod:`kvgrpc.deadlines`), then gets ``ResourceExhausted``. The pool is created on first
    use and again after a connection failure, so an endpoint that is down at start-up or
    restarts later is picked up without restarting the server.

    With ``create_table`` (the master), every new pool first creates the table and the
    heartbeat table if they are missing. With ``require_semi_sync``, a write is only
    acknowledged if semi-synchronous replication is active after its commit, i.e. a
    replica confirmed it; otherwise it raises Unavailable (the write may be on the master
    only; repeating it is safe).

    Only a ``role="master"`` store with ``bulk_load`` writes batch files and lets its
    connections send them (LOCAL INFILE confined to its private directory; see
    :func:`local_infile_settings`); other stores' connections send no file at all.
    ``driver_options`` are extra ``mysql.connector.connect()`` arguments (tests pass
    ``use_pure=True``); they cannot turn LOCAL INFILE on. A failure that repeats is logged
    when it starts or changes, then at most every ``repeat_log_interval`` seconds.
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
        require_semi_sync: bool = False,
        bulk_load: bool = True,
        driver_options: Mapping[str, object] | None = None,
        repeat_log_interval: float = DEFAULT_INTERVAL,
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
        self._in_use = 0  # permits taken, for pool_usage()
        self._usage_lock = threading.Lock()
        self._require_semi_sync = require_semi_sync
        self._mariadb = True  # refined on first connection (MariaDB or MySQL GTIDs)
        self._sql_written = self._written_query()  # rebuilt once _mariadb is known
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
        self._sql_create_heartbeat = (
            f"CREATE TABLE IF NOT EXISTS `{HEARTBEAT_TABLE}` ("
            " id TINYINT UNSIGNED NOT NULL PRIMARY KEY, ts DATETIME(6) NOT NULL) ENGINE=InnoDB"
        )
        self._sql_load = (
            f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE {t} CHARACTER SET binary "
            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (k, v)"
        )
        self._sql_create_only = f"INSERT INTO {t} (k, v) VALUES (%s, %s)"
        self._sql_update_if = f"UPDATE {t} SET v = %s, version = version + 1 WHERE k = %s AND version = %s"
        self._sql_version = f"SELECT version FROM {t} WHERE k = %s"
        self._sql_get = f"SELECT v, version FROM {t} WHERE k = %s"
        self._sql_get_many = f"SELECT k, v, version FROM {t} WHERE k IN ({{}})"
        self._sql_delete = f"DELETE FROM {t} WHERE k = %s"
        self._create_table = create_table
        # Where put_many writes batch files for LOAD DATA LOCAL INFILE: a private directory
        # (0700, files 0600; memory-backed when /dev/shm exists), made by the master's store
        # only. Its connections may send the server files from there and nowhere else;
        # replica stores never allow LOCAL INFILE at all. ``_bulk_load`` turns off (the
        # directory stays until close) once the server has refused LOAD DATA LOCAL.
        self._bulk_load_dir: str | None = None
        if bulk_load and role == "master":
            base = batch_dir_base()
            sweep_stale_batch_dirs(base)
            self._bulk_load_dir = tempfile.mkdtemp(prefix=f"{BATCH_DIR_PREFIX}{os.getpid()}-", dir=base)
        self._bulk_load = self._bulk_load_dir is not None
        self._batch_numbers = itertools.count()
        self._driver_options = dict(driver_options or {})
        # A failure that repeats (an endpoint down fails every monitor round, every 100 ms)
        # is logged when it starts or changes, then once per repeat_log_interval seconds.
        self._log = RateLimitedLog(_LOGGER, repeat_log_interval)

    # -- connections ---------------------------------------------------------------

    def _new_pool(self) -> _Pool:
        import mysql.connector

        settings = dict(
            host=self.endpoint.host,
            port=self.endpoint.port,
            user=self.endpoint.user,
            password=self.endpoint.password,
            database=self.endpoint.database,
            autocommit=True,
            connection_timeout=max(1, round(self._connect_timeout)),  # the C extension wants an int
            charset="utf8mb4",
        )
        settings.update(self._driver_options)
        # LOAD DATA LOCAL may read the batch files this store writes, and nothing else.
        settings.update(local_infile_settings(self._bulk_load_dir))
        pool = _Pool(lambda: mysql.connector.connect(**settings))
        cnx = pool.borrow()
        broken = True
        try:
            cur = _cursor(cnx)
            if self._create_table:
                cur.execute(self._sql_create_table)
                cur.execute(self._sql_create_heartbeat)
            cur.execute("SELECT @@max_allowed_packet, VERSION()")
            max_packet, version = cur.fetchone()
            self._mariadb = "mariadb" in str(version).lower()
            self._sql_written = self._written_query()
            broken = False
        finally:
            pool.give_back(cnx, broken)
        # Leave room for the statement text and escaping (binary data can double in size).
        self._max_statement_bytes = max(1 << 20, int(max_packet) // 3)
        for condition in ("unreachable", "access", "no-table"):
            if self._log.clear(condition) and condition == "unreachable":
                _LOGGER.info("the %s database at %s:%d is reachable again",
                             self.role, self.endpoint.host, self.endpoint.port)
        return pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator:
        """Borrows a pooled connection, translating driver errors on the way out."""
        if not self._permits.acquire(timeout=time_left(self._pool_timeout)):
            raise ResourceExhausted(
                f"the {self.role} database is at its limit of {self.pool_size} concurrent "
                "requests and none finished in time; retry later"
            )
        with self._usage_lock:
            self._in_use += 1
        pool = cnx = None
        broken = True
        try:
            with self._translate_errors():
                pool = self._pool
                if pool is None:
                    with self._pool_lock:
                        if self._pool is None:
                            self._pool = self._new_pool()
                        pool = self._pool
                cnx = pool.borrow()
                yield cnx
                broken = False
        finally:
            if cnx is not None:
                pool.give_back(cnx, broken)
            with self._usage_lock:
                self._in_use -= 1
            self._permits.release()

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        import mysql.connector

        try:
            yield
        except KvError:
            raise
        except (mysql.connector.Error, *_C_ERRORS) as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc) -> KvError:
        errno = getattr(exc, "errno", None)
        where = f"the {self.role} database at {self.endpoint.host}:{self.endpoint.port}"
        log = self._log
        if errno in _CONNECTION_ERRNOS or (errno is None or errno == -1):
            log.warning("unreachable", "%s is unreachable: %s", where, exc)
            self._drop_pool()
            return Unavailable(f"{where} is unreachable; retry later")
        if errno in _LOCAL_INFILE_REFUSED:  # put_many falls back to INSERTs and says so once
            return Internal(f"{where} refuses LOAD DATA LOCAL INFILE")
        if errno in _CONFLICT_ERRNOS:
            _LOGGER.info("transaction conflict on %s: %s", where, exc)
            return Aborted("the write conflicted with a concurrent write; retry it")
        if errno in _TOO_BIG_ERRNOS:
            _LOGGER.warning("statement too large for %s: %s", where, exc)
            return ResourceExhausted(f"the request is too large for {where}")
        if errno == _READ_ONLY_ERRNO:
            log.error("read-only", "%s is read-only: is a replica configured as the master? %s", where, exc)
            return Unavailable(f"{where} is read-only and cannot take writes")
        if errno in _ACCESS_DENIED_ERRNOS:
            log.error("access", "%s refused the configured credentials: %s", where, exc)
            return Unavailable(f"{where} refused the server's credentials")
        if errno == _NO_TABLE_ERRNO:
            log.warning("no-table", "table %s missing on %s", self.table, where)
            return Unavailable(f"{where} does not have the table yet; retry later")
        log.error(("unexpected", errno), "unexpected error from %s: %s", where, exc)
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

    def put(self, key: bytes, value: bytes, expected_version: int | None = None) -> tuple[int, Commit]:
        if expected_version is not None:
            return self._put_if(key, value, expected_version)
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(f"{self._sql_put}; {self._sql_written}", (key, value))
            version = int(cur.lastrowid)
            return version, self._written_result(cur)

    def _put_if(self, key: bytes, value: bytes, expected: int) -> tuple[int, Commit]:
        """Compare-and-set: one conditional statement (the row lock makes it atomic)."""
        import mysql.connector

        with self._connection() as cnx:
            cur = _cursor(cnx)
            if expected == 0:
                try:
                    cur.execute(f"{self._sql_create_only}; {self._sql_written}", (key, value))
                except mysql.connector.IntegrityError as exc:
                    if exc.errno != _DUPLICATE_KEY_ERRNO:
                        raise
                    done = False  # the server ran nothing after the failed INSERT
                else:
                    done, commit = True, self._written_result(cur)
            else:
                cur.execute(f"{self._sql_update_if}; {self._sql_written}", (value, key, expected))
                done = cur.rowcount == 1
                commit = self._written_result(cur)
            if done:
                return expected + 1, commit
            cur.execute(self._sql_version, (key,))
            row = cur.fetchone()
        raise version_conflict(expected, 0 if row is None else int(row[0]))

    def put_many(self, records: Sequence[tuple[bytes, bytes]]) -> Commit:
        if not records:
            return NO_COMMIT
        if len(records) >= BULK_LOAD_MIN_RECORDS and self._bulk_load:
            commit = self._load_new_keys(records)
            if commit is not None:
                return commit
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cnx.start_transaction()
            try:
                for chunk in self._chunks(records):
                    cur.executemany(self._sql_put_many, chunk)
                cnx.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    cnx.rollback()
                raise
            return self._written(cur)

    def _load_new_keys(self, records: Sequence[tuple[bytes, bytes]]) -> Commit | None:
        """The fast path of put_many: ``LOAD DATA LOCAL INFILE ... IGNORE`` of the batch.

        The database ingests a file several times faster than a multi-row INSERT it must
        parse, but LOAD DATA cannot upsert (bump versions). So the batch is loaded with
        IGNORE inside a transaction, and committed only if every record became a new row
        (no key existed, none repeated, no warning); otherwise it is rolled back and the
        caller upserts it the slow way. Keys and values travel as bytes with backslash,
        tab and newline escaped (:func:`_escape`; hex costs the master a third more CPU).
        Returns the commit, or None when the batch must take the slow path.

        The batch file is created new (``O_EXCL``, never following a link) with mode 0600
        in the store's private directory, and removed on every path out of here: loaded,
        rolled back, refused by the server, a failed write (a full /dev/shm: the slow path
        then takes the batch), or an exception.
        """
        path = os.path.join(self._bulk_load_dir, f"batch-{next(self._batch_numbers)}.tsv")
        created = False
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                created = True
                with os.fdopen(fd, "wb") as f:
                    f.writelines(b"%s\t%s\n" % (_escape(k), _escape(v)) for k, v in records)
            except OSError as exc:
                self._log.warning(
                    "batch-file", "cannot write a batch file in %s (%s); "
                    "this batch takes the multi-row INSERT path", self._bulk_load_dir, exc.strerror or exc)
                return None
            with self._connection() as cnx:
                cur = _cursor(cnx)
                cnx.start_transaction()
                try:
                    cur.execute(self._sql_load, (path,))
                    loaded = cur.rowcount == len(records) and not cur.warning_count
                    if loaded:
                        cnx.commit()
                    else:
                        cnx.rollback()
                except BaseException:
                    with contextlib.suppress(Exception):
                        cnx.rollback()
                    raise
                return self._written(cur) if loaded else None
        except Internal as exc:
            if isinstance(exc.__cause__, Exception) and getattr(exc.__cause__, "errno", None) in _LOCAL_INFILE_REFUSED:
                _LOGGER.warning("%s refuses LOAD DATA LOCAL INFILE; using multi-row INSERTs only",
                                self.description)
                self._bulk_load = False
                return None
            raise
        finally:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def delete(self, key: bytes) -> tuple[bool, Commit]:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(f"{self._sql_delete}; {self._sql_written}", (key,))
            deleted = cur.rowcount > 0
            commit = self._written_result(cur)
            return deleted, commit if deleted else NO_COMMIT

    def _written_query(self) -> str:
        """The query that reads where a commit sits: its token and, if required, the
        semi-sync state. ON after the commit returned means a replica acknowledged it (had
        the wait timed out, the master would have switched semi-sync OFF before returning).
        A one-statement write sends it in the same round trip (``write; query``)."""
        token_sql = "@@last_gtid" if self._mariadb else "@@global.gtid_executed"
        if not self._require_semi_sync:
            return f"SELECT {token_sql}"
        return f"SELECT {token_sql}, ({_SEMI_SYNC_STATUS_SQL})"

    def _written(self, cur) -> Commit:
        """After a commit: where it sits, once semi-sync has confirmed it where that is required."""
        cur.execute(self._sql_written)
        return self._commit_row(cur.fetchone())

    def _written_result(self, cur) -> Commit:
        """The same, from the second result of a ``write; query`` statement."""
        cur.nextset()
        return self._commit_row(cur.fetchone())

    def _commit_row(self, row) -> Commit:
        """The Commit a written-query row names; Unavailable if semi-sync did not confirm it."""
        if self._require_semi_sync:
            token, status = row
        else:
            (token,), status = row, "ON"
        if str(status).upper() != "ON":
            raise Unavailable(
                "semi-synchronous replication is off, so no replica confirmed the write; "
                "it is not acknowledged (it may be on the master only; repeating it is safe)"
            )
        token = str(token or "")
        # MariaDB: the GTID's sequence number is the revision (see kvgrpc.store.binlog).
        return Commit(token, _revision_of(token) if self._mariadb else 0)

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
            cur = _cursor(cnx)
            cur.execute(self._sql_get, (key,))
            row = cur.fetchone()
        return None if row is None else StoredRecord(key, bytes(row[0]), int(row[1]))

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, StoredRecord]:
        found: dict[bytes, StoredRecord] = {}
        if not keys:
            return found
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(self._sql_get_many.format(", ".join(["%s"] * len(keys))), tuple(keys))
            for k, v, version in cur.fetchall():
                found[bytes(k)] = StoredRecord(bytes(k), bytes(v), int(version))
        return found

    def scan(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
             keys_only: bool = False) -> list[StoredRecord]:
        sql, params = scan_query(f"`{self.table}`", "%s", lower, upper, after, limit, keys_only)
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(sql, params)
            return scanned(cur.fetchall())

    # -- replication -------------------------------------------------------------------

    def has_applied(self, token: str, timeout: float) -> bool:
        if not token:
            return True
        kind = token_kind(token)  # a malformed token never reaches the database
        if kind != ("mariadb" if self._mariadb else "mysql"):
            raise InvalidArgument(
                f"read_options.min_write_token is a {'MariaDB' if kind == 'mariadb' else 'MySQL'} "
                f"GTID, but the database is {'MariaDB' if self._mariadb else 'MySQL'}: "
                "pass a token a write to this database returned"
            )
        sql = ("SELECT MASTER_GTID_WAIT(%s, %s)" if self._mariadb
               else "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)")
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(sql, (token, max(0.0, timeout)))
            (result,) = cur.fetchone()
        return result == 0

    def write_heartbeat(self) -> None:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(
                f"INSERT INTO `{HEARTBEAT_TABLE}` (id, ts) VALUES (1, NOW(6)) "
                "ON DUPLICATE KEY UPDATE ts = NOW(6)"
            )

    def replication_lag(self) -> float | None:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(
                f"SELECT TIMESTAMPDIFF(MICROSECOND, ts, NOW(6)) FROM `{HEARTBEAT_TABLE}` WHERE id = 1"
            )
            row = cur.fetchone()
        return None if row is None else max(0.0, int(row[0]) / 1e6)

    # -- the change feed -----------------------------------------------------------------

    def _feed(self):
        if not self._mariadb:
            raise FailedPrecondition(
                "Watch needs a MariaDB master; MySQL's GTIDs are not supported yet"
            )
        from kvgrpc.store.binlog import BinlogFeed  # only servers that watch load the binlog reader

        settings = dict(host=self.endpoint.host, port=self.endpoint.port,
                        user=self.endpoint.user, password=self.endpoint.password)
        return BinlogFeed(settings, self.endpoint.database, self.table, self._query_one)

    def _query_one(self, sql: str) -> tuple:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(sql)
            return cur.fetchone()

    def head_revision(self) -> int:
        self.connect()  # learns whether the server is MariaDB
        return self._feed().head()

    def changes(self, after: int, stopped: Callable[[], bool],
                keys: KeyFilter = ALL_KEYS) -> Iterator[ChangeBatch]:
        self.connect()
        return self._feed().changes(after, stopped, keys)

    def semi_sync_active(self) -> bool | None:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(_SEMI_SYNC_STATUS_SQL)
            row = cur.fetchone()
        return None if row is None else str(row[0]).upper() == "ON"

    def pool_usage(self) -> PoolUsage:
        with self._usage_lock:
            return PoolUsage(self._in_use, self.pool_size)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        _close_idle(pool)
        self._bulk_load = False
        if self._bulk_load_dir is not None:
            shutil.rmtree(self._bulk_load_dir, ignore_errors=True)


def local_infile_settings(batch_dir: str | None) -> dict[str, object]:
    """The mysql.connector arguments that confine LOAD DATA LOCAL INFILE to ``batch_dir``.

    ``allow_local_infile`` stays False: with it True, mysql-connector's C extension (as
    libmysqlclient) ignores ``allow_local_infile_in_path`` and sends the database server
    any file it asks for, at any time (even in answer to the connect-time ``SET NAMES``).
    With it False and a directory named, both drivers send only files in that directory;
    with no directory (replica stores), none at all.
    """
    return {"allow_local_infile": False, "allow_local_infile_in_path": batch_dir}


def batch_dir_base() -> str | None:
    """Where batch directories go: ``/dev/shm`` (memory) when it exists, else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def sweep_stale_batch_dirs(base: str | None = None) -> list[str]:
    """Removes the batch directories that servers which are no longer running left in
    ``base`` (default: :func:`batch_dir_base`), e.g. after ``kill -9``; returns their paths.

    Only directories owned by this user are touched. A name ``kvgrpc-load-PID-…`` is
    removed when no process PID exists; one of the older form without a PID when it has
    not changed for a day. A PID that exists (a live server, or an unrelated process that
    reused the number) keeps its directory.
    """
    base = base if base is not None else (batch_dir_base() or tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(BATCH_DIR_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != os.getuid() or not entry.is_dir(follow_symlinks=False):
            continue
        match = _BATCH_DIR_NAME.match(entry.name)
        if match:
            stale = not _process_exists(int(match.group(1)))
        else:
            stale = time.time() - st.st_mtime > _LEGACY_BATCH_DIR_MAX_AGE
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    if removed:
        _LOGGER.info("removed %d batch director%s left by stopped servers in %s",
                     len(removed), "y" if len(removed) == 1 else "ies", base)
    return removed


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OverflowError, ValueError):
        return False
    return True


def _close_idle(pool: _Pool | None) -> None:
    if pool is not None:
        pool.close()


class _Pool:
    """Open connections to one endpoint, reused as they are.

    mysql.connector's pool pings a connection when lending it and, with
    ``pool_reset_session`` (which it needs: without it one borrower can commit another's
    rows), pings, resets and re-initialises the session when it comes back: six round
    trips around a one-statement Get (measured: 7 commands per Get on the replica). This
    pool keeps what makes that reset necessary from happening instead: a connection that
    comes back with an open transaction, or from a call that raised, is closed, never
    lent again; the store never changes session state otherwise (autocommit stays on).
    A connection idle for more than ``STALE_AFTER`` seconds is pinged before it is lent,
    so one left over from before a server restart is replaced, not handed out; the
    borrower count is bounded by the store's semaphore, not here. Thread-safe.
    """

    STALE_AFTER = 0.25

    def __init__(self, connect: Callable[[], object]) -> None:
        self._connect = connect
        self._idle: list[tuple[object, float]] = []  # a stack: the warmest connection first
        self._lock = threading.Lock()
        self._closed = False

    def borrow(self):
        while True:
            with self._lock:
                cnx, since = self._idle.pop() if self._idle else (None, 0.0)
            if cnx is None:
                return self._connect()
            if time.monotonic() - since <= self.STALE_AFTER or cnx.is_connected():
                return cnx
            _quietly_close(cnx)

    def give_back(self, cnx, broken: bool) -> None:
        if not broken and cnx.in_transaction:
            broken = True  # never lend a connection with someone's uncommitted rows
        with self._lock:
            if not broken and not self._closed:
                self._idle.append((cnx, time.monotonic()))
                return
        _quietly_close(cnx)

    def close(self) -> None:
        """Closes the idle connections; borrowed ones are closed when given back."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for cnx, _ in idle:
            _quietly_close(cnx)


def _revision_of(token: str) -> int:
    """The sequence number of a MariaDB GTID ``domain-server-sequence``; 0 if none."""
    parts = token.split("-")
    return int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else 0


def _escape(data: bytes) -> bytes:
    """Escapes bytes for LOAD DATA with ``ESCAPED BY '\\'``: every backslash is doubled,
    so no escape sequence (``\\N`` for NULL, ``\\0``...) can appear by accident."""
    return data.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")


def _cursor(cnx):
    """The connection's one cursor, made on first use and kept with it.

    mysql.connector's ``cursor()`` pings the server every time (a round trip per call);
    a buffered cursor has read its whole result by the time ``execute`` returns, so it can
    be reused for the connection's next statement.
    """
    cur = getattr(cnx, "_kvgrpc_cursor", None)
    if cur is None:
        cur = cnx._kvgrpc_cursor = cnx.cursor(buffered=True)
    return cur


def _quietly_close(cnx) -> None:
    with contextlib.suppress(Exception):
        cnx.close()
