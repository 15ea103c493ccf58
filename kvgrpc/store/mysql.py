"""The MySQL/MariaDB store: one endpoint (a master or a replica) behind a connection pool."""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvgrpc.deadlines import time_left
from kvgrpc.logs import DEFAULT_INTERVAL, RateLimitedLog
from kvgrpc.tokens import covers, token_kind
from kvgrpc.errors import (
    Aborted,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KvError,
    ResourceExhausted,
    Unavailable,
)
from kvgrpc.records import NO_COMMIT, Commit, LoadProgress, Record, WriteResult
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
_DEADLOCK_ERRNO = 1213
#: How many times put_many runs a batch InnoDB rolled back as a deadlock's victim.
DEADLOCK_ATTEMPTS = 5
_TOO_BIG_ERRNOS = frozenset({1153, 1301, 2020})  # packet too large
#: --read-only (1290), and 1836 ("running in read-only mode"): a replica configured as the
#: master, or a master fenced by a switchover or turned into a reader behind a fixed endpoint.
_READ_ONLY_ERRNOS = frozenset({1290, 1836})
_ACCESS_DENIED_ERRNOS = frozenset({1044, 1045, 1142, 1227})
_NO_TABLE_ERRNO = 1146
_DUPLICATE_KEY_ERRNO = 1062
#: The database refuses a new connection: max_connections (1040) or max_user_connections (1203).
_TOO_MANY_CONNECTIONS_ERRNOS = frozenset({1040, 1203})
#: Driver messages of a failed TLS set-up (both drivers, OpenSSL's words).
_TLS_FAILURE = re.compile(r"SSL|TLS|certificate|encrypt", re.IGNORECASE)


#: ``ssl-mode`` values (the MySQL client's), weakest first.
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
_URL_OPTIONS = ("ssl-mode", "ssl-ca", "ssl-cert", "ssl-key")


class TlsNotActive(Exception):
    """A connection that ``ssl-mode`` says must be encrypted is not (the server has TLS off).

    ``errno`` 2026 (CR_SSL_CONNECTION_ERROR), so stores treat it as an unreachable server.
    """

    errno = 2026


@dataclass(frozen=True)
class MySQLEndpoint:
    """Where one MySQL/MariaDB server is and how to log in. ``str()`` hides the password.

    TLS follows the MySQL client's ``--ssl-mode``: ``""`` (not given) and ``PREFERRED``
    encrypt when the server offers it; ``REQUIRED`` refuses an unencrypted connection
    but checks no certificate; ``VERIFY_CA`` also checks the server's certificate against
    ``ssl_ca``; ``VERIFY_IDENTITY`` also checks that it names ``host``. ``ssl_cert`` and
    ``ssl_key`` are a client certificate.
    """

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)
    ssl_mode: str = ""
    ssl_ca: str = ""
    ssl_cert: str = ""
    ssl_key: str = ""

    @classmethod
    def from_url(cls, url: str, default_password: str | None = None) -> MySQLEndpoint:
        """Parses ``mysql://user[:password]@host[:port]/database[?options]``.

        A password absent from the URL is taken from ``default_password`` (the server
        passes ``KVGRPC_MYSQL_PASSWORD``), so none needs to appear on a command line.
        Options are the MySQL client's: ``ssl-mode`` (DISABLED, PREFERRED, REQUIRED,
        VERIFY_CA, VERIFY_IDENTITY), ``ssl-ca``, ``ssl-cert``, ``ssl-key`` (files). An
        ``ssl-ca`` without ``ssl-mode`` means VERIFY_CA, as for the ``mysql`` client. Raises
        InvalidArgument naming an unknown option, a bad value, or a missing file.
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
        options: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            key = name.lower().replace("_", "-")
            if key not in _URL_OPTIONS:
                raise InvalidArgument(
                    f"database URL {redact_url(url)!r}: unknown option {name!r} (known: "
                    f"{', '.join(_URL_OPTIONS)})")
            options[key] = value
        mode = options.get("ssl-mode", "").upper().replace("-", "_")
        if mode and mode not in SSL_MODES:
            raise InvalidArgument(f"database URL {redact_url(url)!r}: ssl-mode {options['ssl-mode']!r} "
                                  f"is not one of {', '.join(SSL_MODES)}")
        if not mode and options.get("ssl-ca"):
            mode = "VERIFY_CA"
        if mode in ("VERIFY_CA", "VERIFY_IDENTITY") and not options.get("ssl-ca"):
            raise InvalidArgument(f"database URL {redact_url(url)!r}: ssl-mode={mode} needs "
                                  "ssl-ca=FILE (the CA that signed the server's certificate)")
        if bool(options.get("ssl-cert")) != bool(options.get("ssl-key")):
            raise InvalidArgument(f"database URL {redact_url(url)!r}: ssl-cert and ssl-key go together")
        for key in ("ssl-ca", "ssl-cert", "ssl-key"):
            if options.get(key) and not os.path.isfile(options[key]):
                raise InvalidArgument(f"database URL {redact_url(url)!r}: {key} file "
                                      f"{options[key]!r} does not exist")
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname,
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            database=database,
            password=password if password is not None else (default_password or ""),
            ssl_mode=mode,
            ssl_ca=options.get("ssl-ca", ""),
            ssl_cert=options.get("ssl-cert", ""),
            ssl_key=options.get("ssl-key", ""),
        )

    @property
    def tls_required(self) -> bool:
        """Whether a connection must be encrypted (REQUIRED or stronger)."""
        return self.ssl_mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")

    def connector_settings(self, *, database: bool = True) -> dict:
        """Keyword arguments of ``mysql.connector.connect`` for this endpoint (both drivers:
        the C extension and pure Python take the same TLS arguments)."""
        settings: dict = dict(host=self.host, port=self.port, user=self.user,
                              password=self.password)
        if database:
            settings["database"] = self.database
        if self.ssl_mode == "DISABLED":
            settings["ssl_disabled"] = True
        elif self.ssl_mode:
            settings["ssl_disabled"] = False
            if self.ssl_ca:
                settings["ssl_ca"] = self.ssl_ca
            if self.ssl_cert:
                settings["ssl_cert"] = self.ssl_cert
                settings["ssl_key"] = self.ssl_key
            settings["ssl_verify_cert"] = self.ssl_mode in ("VERIFY_CA", "VERIFY_IDENTITY")
            settings["ssl_verify_identity"] = self.ssl_mode == "VERIFY_IDENTITY"
        return settings

    def pymysql_settings(self) -> dict:
        """Keyword arguments of ``pymysql.connect`` (the binlog feed's driver)."""
        import ssl

        settings: dict = dict(host=self.host, port=self.port, user=self.user, password=self.password)
        if self.ssl_mode == "DISABLED":
            settings["ssl_disabled"] = True
        elif self.tls_required:
            context = ssl.create_default_context(cafile=self.ssl_ca or None)
            context.check_hostname = self.ssl_mode == "VERIFY_IDENTITY"
            context.verify_mode = ssl.CERT_REQUIRED if self.ssl_mode != "REQUIRED" else ssl.CERT_NONE
            if self.ssl_cert:
                context.load_cert_chain(self.ssl_cert, self.ssl_key)
            settings["ssl"] = context
        return settings

    def connect(self, *, database: bool = True, **extra):
        """A new ``mysql.connector`` connection (``extra``: more ``connect`` arguments);
        with REQUIRED or stronger, checked to be encrypted (a driver may fall back to
        plaintext when the server has TLS off): raises :class:`TlsNotActive` if it is not."""
        import mysql.connector

        cnx = mysql.connector.connect(**self.connector_settings(database=database), **extra)
        if self.tls_required:
            cur = cnx.cursor()
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            row = cur.fetchone()
            cur.close()
            if not row or not row[1]:  # type: ignore[index]
                cnx.close()
                raise TlsNotActive(f"{self} does not encrypt the connection (ssl-mode={self.ssl_mode})")
        return cnx

    def __str__(self) -> str:
        mode = f"?ssl-mode={self.ssl_mode}" if self.ssl_mode else ""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}{mode}"


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
    replica confirmed it; otherwise it raises Unavailable (the write is committed on the
    master only: the caller reads the key before repeating it).

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
        self._pool: _Pool | None = None
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
        self._sql_create_loads = (
            f"CREATE TABLE IF NOT EXISTS `{LOADS_TABLE}` ("
            " tbl VARCHAR(64) NOT NULL, load_id VARBINARY(128) NOT NULL,"
            " committed BIGINT NOT NULL, revision BIGINT NOT NULL DEFAULT 0,"
            " token VARCHAR(1024) NOT NULL DEFAULT '',"
            " updated TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),"
            " PRIMARY KEY (tbl, load_id), KEY (updated)) ENGINE=InnoDB"
        )
        # The batch's transaction locks the load's row first: a second stream of the same
        # load through another server waits, then finds a count it did not expect. A new
        # load's row is inserted (committed 0) before it is locked: a locking read of a
        # row that does not exist locks the gap where it would go, and two new loads
        # holding the same gap deadlock when each then inserts its row there.
        self._sql_load_claim = (f"INSERT INTO `{LOADS_TABLE}` (tbl, load_id, committed) VALUES "
                                "(%s, %s, 0) ON DUPLICATE KEY UPDATE committed = committed")
        self._sql_load_lock = (f"SELECT committed FROM `{LOADS_TABLE}` "
                               "WHERE tbl = %s AND load_id = %s FOR UPDATE")
        self._sql_load_set = (
            f"INSERT INTO `{LOADS_TABLE}` (tbl, load_id, committed, revision, token, updated) "
            "VALUES (%s, %s, %s, %s, %s, NOW(3)) ON DUPLICATE KEY UPDATE "
            "committed = VALUES(committed), revision = VALUES(revision), token = VALUES(token), "
            "updated = VALUES(updated)"
        )
        self._sql_load_commit = (f"UPDATE `{LOADS_TABLE}` SET revision = %s, token = %s "
                                 "WHERE tbl = %s AND load_id = %s AND committed = %s")
        self._sql_load_get = (f"SELECT committed, revision, token, UNIX_TIMESTAMP(updated) "
                              f"FROM `{LOADS_TABLE}` WHERE tbl = %s AND load_id = %s")
        self._sql_load_expire = (f"DELETE FROM `{LOADS_TABLE}` "
                                 "WHERE tbl = %s AND updated < TIMESTAMPADD(MICROSECOND, %s, NOW(3))")
        self._sql_load = (
            f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE {t} CHARACTER SET binary "
            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (k, v)"
        )
        self._sql_create_only = f"INSERT INTO {t} (k, v) VALUES (%s, %s)"
        self._sql_update_if = f"UPDATE {t} SET v = %s, version = version + 1 WHERE k = %s AND version = %s"
        self._sql_version = f"SELECT version FROM {t} WHERE k = %s"
        self._sql_versions = f"SELECT k, version FROM {t} WHERE k IN ({{}})"
        self._sql_get = f"SELECT v, version FROM {t} WHERE k = %s"
        self._sql_get_many = f"SELECT k, v, version FROM {t} WHERE k IN ({{}})"
        self._sql_get_sized = (f"SELECT k, version, LENGTH(k) + LENGTH(v), CASE WHEN LENGTH(k) + "
                               f"LENGTH(v) <= %s THEN v END FROM {t} WHERE k IN ({{}})")
        self._sql_delete = f"DELETE FROM {t} WHERE k = %s"
        self._create_table = create_table
        # Where put_many writes batch files for LOAD DATA LOCAL INFILE: a private directory
        # (0700, files 0600; memory-backed when /dev/shm exists), made by the master's store
        # only. Its connections may send the server files from there and nowhere else;
        # replica stores never allow LOCAL INFILE at all. ``_bulk_load`` turns off (the
        # directory stays until close) once the server has refused LOAD DATA LOCAL.
        self._bulk_load_dir: str | None = None
        if bulk_load and role in ("master", "node"):
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
        settings: dict[str, Any] = dict(
            autocommit=True,
            connection_timeout=max(1, round(self._connect_timeout)),  # the C extension wants an int
            charset="utf8mb4",
        )
        settings.update(self._driver_options)
        # LOAD DATA LOCAL may read the batch files this store writes, and nothing else.
        settings.update(local_infile_settings(self._bulk_load_dir))
        pool = _Pool(lambda: self.endpoint.connect(**settings))  # with the endpoint's TLS
        cnx = pool.borrow()
        broken = True
        try:
            cur = _cursor(cnx)
            if self._create_table:
                try:
                    cur.execute(self._sql_create_table)
                    cur.execute(self._sql_create_heartbeat)
                    cur.execute(self._sql_create_loads)
                except Exception as exc:
                    # A read-only node (a server following the topology opens every node
                    # this way): the master it replicates from creates the tables.
                    if getattr(exc, "errno", None) not in _READ_ONLY_ERRNOS:
                        raise
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
        pool: _Pool | None = None
        cnx: Any = None
        broken = True
        try:
            with self._translate_errors():
                pool = self._pool
                if pool is None:
                    with self._pool_lock:
                        if self._pool is None:
                            self._pool = self._new_pool()
                        pool = self._pool
                assert pool is not None
                cnx = pool.borrow()
                yield cnx
                broken = False
        finally:
            if cnx is not None and pool is not None:
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
        except (mysql.connector.Error, TlsNotActive, *_C_ERRORS) as exc:  # type: ignore[misc]
            raise self._translate(exc) from exc

    def _translate(self, exc) -> KvError:
        errno = getattr(exc, "errno", None)
        where = f"the {self.role} database at {self.endpoint.host}:{self.endpoint.port}"
        log = self._log
        if errno in _CONNECTION_ERRNOS or (errno is None or errno == -1):
            log.warning("unreachable", "%s is unreachable: %s", where, exc)
            self._drop_pool()
            if self.endpoint.tls_required and _TLS_FAILURE.search(str(exc)):
                return Unavailable(
                    f"{where} failed the TLS check (ssl-mode={self.endpoint.ssl_mode}): its "
                    "certificate is not signed by ssl-ca, does not name the host, or it does "
                    "not encrypt; see the server log")
            return Unavailable(f"{where} is unreachable; retry later")
        if errno in _TOO_MANY_CONNECTIONS_ERRNOS:
            _LOGGER.warning("%s refuses new connections: %s", where, exc)
            self._drop_pool()
            return Unavailable(f"{where} has no free connections (its max_connections is "
                               "reached); retry later")
        if errno in _LOCAL_INFILE_REFUSED:  # put_many falls back to INSERTs and says so once
            return Internal(f"{where} refuses LOAD DATA LOCAL INFILE")
        if errno in _CONFLICT_ERRNOS:
            _LOGGER.info("transaction conflict on %s: %s", where, exc)
            return Aborted("the write conflicted with a concurrent write; retry it")
        if errno in _TOO_BIG_ERRNOS:
            _LOGGER.warning("statement too large for %s: %s", where, exc)
            return ResourceExhausted(f"the request is too large for {where}")
        if errno in _READ_ONLY_ERRNOS:
            # Behind a fixed endpoint that fails over by itself (Aurora, RDS), the node these
            # connections reach was demoted: drop them, so the next call reconnects (and
            # reaches the new master). The statement was refused: nothing was applied.
            log.error("read-only", "%s is read-only (a replica configured as the master, or a "
                      "demoted master; reconnecting): %s", where, exc)
            self._drop_pool()
            return Unavailable(f"{where} is read-only: the write was not applied; retry")
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

    def put(self, key: bytes, value: bytes, expected_version: int | None = None) -> WriteResult:
        if expected_version is not None:
            return self._put_if(key, value, expected_version)
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(f"{self._sql_put}; {self._sql_written}", (key, value))
            version = int(cur.lastrowid)
            return WriteResult(True, version, self._written_result(cur))

    def _put_if(self, key: bytes, value: bytes, expected: int) -> WriteResult:
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
                return WriteResult(True, expected + 1, commit)
            cur.execute(self._sql_version, (key,))
            row = cur.fetchone()
        raise version_conflict(expected, 0 if row is None else int(row[0]))

    def put_many(self, records: Sequence[tuple[bytes, bytes]],
                 progress: LoadMark | None = None) -> Commit:
        """A batch in one transaction. A batch chosen as a deadlock's victim (streams
        writing the same keys in different orders) was rolled back whole, so it is run
        again, up to ``DEADLOCK_ATTEMPTS`` times in all, after a short random pause
        (within the call's deadline); then the stream ends with Aborted."""
        if not records:
            return NO_COMMIT
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return self._put_many(records, progress)
            except Aborted as exc:
                pause = random.uniform(0.005, 0.02) * attempt
                if (attempt == DEADLOCK_ATTEMPTS or time_left(pause) < pause
                        or getattr(exc.__cause__, "errno", None) != _DEADLOCK_ERRNO):
                    raise
                _LOGGER.info("a batch of %d records was a deadlock's victim on %s; running it "
                             "again (attempt %d of %d)", len(records), self.description,
                             attempt + 1, DEADLOCK_ATTEMPTS)
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _put_many(self, records: Sequence[tuple[bytes, bytes]], progress: LoadMark | None) -> Commit:
        if len(records) >= BULK_LOAD_MIN_RECORDS and self._bulk_load:
            commit = self._load_new_keys(records, progress)
            if commit is not None:
                return commit
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cnx.start_transaction()
            try:
                self._lock_load(cur, progress)
                for chunk in self._chunks(records):
                    cur.executemany(self._sql_put_many, chunk)
                self._record_load(cur, progress)
                self._commit(cnx)
            except BaseException:
                with contextlib.suppress(Exception):
                    cnx.rollback()
                raise
            return self._written(cur)

    def _commit(self, cnx) -> None:
        """COMMIT. A failure here leaves the outcome unknown: the server may have committed
        before the connection died (with semi-sync, while it waited for a replica's
        acknowledgement, and the replica may be the next master). The error says so
        (``in_doubt``), so nobody reports what the transaction wrote as not committed."""
        import mysql.connector

        try:
            cnx.commit()
        except (mysql.connector.Error, TlsNotActive, *_C_ERRORS) as exc:  # type: ignore[misc]
            error = self._translate(exc)
            error.in_doubt = isinstance(error, Unavailable)  # (a conflict there rolled back)
            raise error from exc

    def _lock_load(self, cur, progress: LoadMark | None) -> None:
        """In a batch's transaction: locks the load's progress row and checks that it is
        at ``progress.before`` (Aborted otherwise; the caller rolls back)."""
        if progress is None:
            return
        load_id = progress.load_id.encode("utf-8")
        cur.execute(self._sql_load_claim, (self.table, load_id))
        cur.execute(self._sql_load_lock, (self.table, load_id))
        row = cur.fetchone()
        found = 0 if row is None else int(row[0])
        if found != progress.before:
            raise load_conflict(progress, found)

    def _record_load(self, cur, progress: LoadMark | None) -> None:
        """In a batch's transaction, after its rows: the load's new committed count, with
        the previous batch's revision and token (this one's GTID exists only after COMMIT;
        a second commit per batch to record it would cost a sync and a semi-sync wait)."""
        if progress is not None:
            cur.execute(self._sql_load_set,
                        (self.table, progress.load_id.encode("utf-8"), progress.after,
                         progress.last.revision, progress.last.token))

    def record_load_commit(self, load_id: str, committed: int, commit: Commit) -> None:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(self._sql_load_commit, (commit.revision, commit.token, self.table,
                                                load_id.encode("utf-8"), committed))

    def load_progress(self, load_id: str) -> LoadProgress | None:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(self._sql_load_get, (self.table, load_id.encode("utf-8")))
            row = cur.fetchone()
        if row is None:
            return None
        committed, revision, token, updated = row
        return LoadProgress(load_id, int(committed), Commit(str(token or ""), int(revision)),
                            int(float(updated) * 1000))

    def expire_loads(self, older_than: float) -> int:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(self._sql_load_expire, (self.table, -int(older_than * 1e6)))
            return cur.rowcount

    def _load_new_keys(self, records: Sequence[tuple[bytes, bytes]],
                       progress: LoadMark | None = None) -> Commit | None:
        """The fast path of put_many: ``LOAD DATA LOCAL INFILE ... IGNORE`` of the batch.

        The database ingests a file several times faster than a multi-row INSERT it must
        parse, but LOAD DATA cannot upsert (bump versions). So the batch is loaded with
        IGNORE inside a transaction, and committed only if every record became a new row
        (no key existed, none repeated, no warning); otherwise it is rolled back and the
        caller upserts it the slow way. Keys and values travel as bytes with backslash,
        tab and newline escaped (:func:`_escape`; hex costs the master a third more CPU).
        A load's progress row is locked before and written after the LOAD DATA, in the
        same transaction (outside its row count). Returns the commit, or None when the
        batch must take the slow path.

        The batch file is created new (``O_EXCL``, never following a link) with mode 0600
        in the store's private directory, and removed on every path out of here: loaded,
        rolled back, refused by the server, a failed write (a full /dev/shm: the slow path
        then takes the batch), or an exception.
        """
        assert self._bulk_load_dir is not None
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
                    self._lock_load(cur, progress)
                    cur.execute(self._sql_load, (path,))
                    loaded = cur.rowcount == len(records) and not cur.warning_count
                    if loaded:
                        self._record_load(cur, progress)
                        self._commit(cnx)
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

    def delete(self, key: bytes) -> WriteResult:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(f"{self._sql_delete}; {self._sql_written}", (key,))
            deleted = cur.rowcount > 0
            commit = self._written_result(cur)
            return WriteResult(deleted, 0, commit if deleted else NO_COMMIT)

    def write_group(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """One round trip: ``START TRANSACTION``, each op followed by a SELECT of its row
        count and the key's version after it, ``COMMIT``, and where the commit sits. A
        group of plain Puts (the common case) is one multi-row upsert instead."""
        if all(op.value is not None and op.expected_version is None for op in ops):
            return self._put_group(ops)
        t = f"`{self.table}`"
        after = f"SELECT ROW_COUNT(), (SELECT version FROM {t} WHERE k = %s)"
        statements: list[str] = ["START TRANSACTION"]
        params: list[object] = []
        for op in ops:
            if op.value is None:
                statements.append(self._sql_delete)
                params.append(op.key)
            elif op.expected_version is None:
                statements.append(self._sql_put_many)
                params += [op.key, op.value]
            elif op.expected_version == 0:
                statements.append(f"INSERT IGNORE INTO {t} (k, v) VALUES (%s, %s)")
                params += [op.key, op.value]
            else:
                statements.append(self._sql_update_if)
                params += [op.value, op.key, op.expected_version]
            statements.append(after)
            params.append(op.key)
        statements += ["COMMIT", self._sql_written]
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute("; ".join(statements), tuple(params))
            rows = []
            while True:
                if cur.with_rows:
                    rows.append(cur.fetchone())
                if not cur.nextset():
                    break
        *counts, written = rows
        outcomes = []
        for op, (count, version) in zip(ops, counts):
            version = int(version or 0)
            if op.value is None:
                done = int(count) > 0
            elif op.expected_version is None:
                done = True
            else:
                done = int(count) == 1
            outcomes.append((done, version if op.value is not None else 0))
        commit = self._commit_row(written) if any(done for done, _ in outcomes) else NO_COMMIT
        return [WriteResult(done, version, commit if done else NO_COMMIT) for done, version in outcomes]

    def _put_group(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Plain Puts in one multi-row upsert (rows applied in order, each bumping its
        key's version) and one round trip. On MariaDB the upsert is the transaction
        (autocommit) and ``RETURNING`` gives each row's version after it, in row order: a
        key written k times in the group gets k versions. Two statements, against five
        for an explicit transaction: ~30% less master CPU and driver CPU per group
        (``bench/group_commit_sql.py``). MySQL has no ``RETURNING``: there the keys'
        versions are read inside the transaction (the upsert's row locks hold them) and
        each op's own version counts back from the last."""
        upsert = self._sql_put_many.replace("(%s, %s)", ", ".join(["(%s, %s)"] * len(ops)), 1)
        params: list[bytes] = []
        for op in ops:
            params += [op.key, op.value]  # type: ignore[list-item]  # plain Puts: value set
        keys = list(dict.fromkeys(op.key for op in ops))
        if self._mariadb:
            sql, args = f"{upsert} RETURNING version; {self._sql_written}", params
        else:
            sql = (f"START TRANSACTION; {upsert}; "
                   f"{self._sql_versions.format(', '.join(['%s'] * len(keys)))}; COMMIT; {self._sql_written}")
            args = [*params, *keys]
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(sql, tuple(args))
            results = []  # the rows of the two SELECTs: the versions, where the commit sits
            while True:
                if cur.with_rows:
                    results.append(cur.fetchall())
                if not cur.nextset():
                    break
        (version_rows, (written,)) = results
        commit = self._commit_row(written)
        if self._mariadb:
            return [WriteResult(True, int(version), commit) for (version,) in version_rows]
        versions = {bytes(k): int(v) for k, v in version_rows}
        later = collections.Counter(op.key for op in ops)
        outcomes = []
        for op in ops:
            later[op.key] -= 1
            outcomes.append(WriteResult(True, versions[op.key] - later[op.key], commit))
        return outcomes

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
                "semi-synchronous replication is off, so no replica confirmed the write: it is "
                "not acknowledged, yet committed on the master only (a failover may lose it); read "
                "the key before repeating it (a repeated compare-and-set would meet its own write, "
                "a repeated Put makes another version)"
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

    def get(self, key: bytes) -> Record | None:
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(self._sql_get, (key,))
            row = cur.fetchone()
        return None if row is None else Record(key.decode("utf-8", "replace"), bytes(row[0]), int(row[1]))

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Record]:
        found: dict[bytes, Record] = {}
        if not keys:
            return found
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(self._sql_get_many.format(", ".join(["%s"] * len(keys))), tuple(keys))
            for k, v, version in cur.fetchall():
                key = bytes(k)
                found[key] = Record(key.decode("utf-8", "replace"), bytes(v), int(version))
        return found

    def get_within(self, keys: Sequence[bytes],
                   max_bytes: int) -> tuple[dict[bytes, Record], set[bytes]]:
        found: dict[bytes, Record] = {}
        unread: set[bytes] = set()
        if not keys:
            return found, unread
        # One plain SELECT in the usual case. A value comes back inline only if its record
        # (key + value) is at most an equal share of the budget, so the inline values
        # together never pass it; every row brings its size. The budget is then applied in
        # request order here, and the few records that fit but were too large to come
        # inline are read by a second SELECT. (A window function over the request order
        # did it in one query, but cost the replica ~2.5x the plain SELECT's CPU.)
        share = max(1, max_bytes // len(keys))
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(self._sql_get_sized.format(", ".join(["%s"] * len(keys))), (share, *keys))
            rows = {bytes(k): (int(version), int(size), v) for k, version, size, v in cur.fetchall()}
            used, cut = 0, False
            later: list[bytes] = []
            for k in keys:
                row = rows.get(k)
                if cut:
                    unread.add(k)
                elif row is not None:
                    version, size, v = row
                    if used + size > max_bytes and (found or later):
                        cut = True
                        unread.add(k)
                        continue
                    used += size
                    if v is None:
                        later.append(k)
                    else:
                        found[k] = Record(k.decode("utf-8", "replace"), bytes(v), version)
            if later:  # fit the budget by the first SELECT's sizes
                cur.execute(self._sql_get_many.format(", ".join(["%s"] * len(later))), tuple(later))
                for k, v, version in cur.fetchall():
                    key = bytes(k)
                    found[key] = Record(key.decode("utf-8", "replace"), bytes(v), int(version))
        return found, unread

    def scan(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
             keys_only: bool = False) -> list[Record]:
        return self.scan_page(lower, upper, after, limit, keys_only, None)[0]

    def scan_page(self, lower: bytes, upper: bytes | None, after: bytes | None, limit: int,
                  keys_only: bool, max_bytes: int | None) -> tuple[list[Record], bool]:
        sql, params = scan_query(f"`{self.table}`", "%s", lower, upper, after, limit, keys_only,
                                 max_bytes)
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(sql, params)
            return scanned(cur.fetchall())

    # -- replication -------------------------------------------------------------------

    def has_applied(self, token: str, timeout: float) -> bool:
        if not token:
            return True
        self._check_token_kind(token)
        sql = ("SELECT MASTER_GTID_WAIT(%s, %s)" if self._mariadb
               else "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)")
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute(sql, (token, max(0.0, timeout)))
            (result,) = cur.fetchone()
        return result == 0

    def has_written(self, token: str) -> bool:
        """Whether this endpoint's server has the write ``token`` names in its binary log
        (made or applied it): on the master, whether the write exists at all. One round trip."""
        if not token:
            return True
        self._check_token_kind(token)
        with self._connection() as cnx:
            cur = _cursor(cnx)
            if self._mariadb:
                cur.execute("SELECT @@global.gtid_binlog_state")
                (state,) = cur.fetchone()
                return bool(covers(str(state or ""), token))
            cur.execute("SELECT GTID_SUBSET(%s, @@global.gtid_executed)", (token,))
            (subset,) = cur.fetchone()
        return bool(subset)

    def _check_token_kind(self, token: str) -> None:
        kind = token_kind(token)  # a malformed token never reaches the database
        if kind != ("mariadb" if self._mariadb else "mysql"):
            raise InvalidArgument(
                f"read_options.min_write_token is a {'MariaDB' if kind == 'mariadb' else 'MySQL'} "
                f"GTID, but the database is {'MariaDB' if self._mariadb else 'MySQL'}: "
                "pass a token a write to this database returned"
            )

    def node_role(self) -> tuple[bool, bool]:
        """(writable, replicating) of this endpoint's server: ``read_only`` off, and
        whether it has replication configured (``SHOW SLAVE STATUS`` not empty). A server
        that follows the topology writes only to a node that is writable and replicates
        from nobody. Needs ``SLAVE MONITOR`` (``REPLICATION CLIENT`` on MySQL); without
        it, Unavailable naming the privilege. Unavailable when unreachable."""
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute("SELECT @@global.read_only")
            (read_only,) = cur.fetchone()
            try:
                cur.execute("SHOW SLAVE STATUS")
            except Exception as exc:
                if getattr(exc, "errno", None) in _ACCESS_DENIED_ERRNOS:
                    raise Unavailable(
                        f"{self.description}: following the topology needs the SLAVE MONITOR "
                        "privilege (SHOW SLAVE STATUS) for the server's account") from None
                raise
            replicating = bool(cur.fetchall())
        return not int(read_only), replicating

    def writable(self) -> bool:
        """Whether ``read_only`` is off on this endpoint's server now (one round trip)."""
        with self._connection() as cnx:
            cur = _cursor(cnx)
            cur.execute("SELECT @@global.read_only")
            (read_only,) = cur.fetchone()
        return not int(read_only)

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

        return BinlogFeed(self.endpoint.pymysql_settings(), self.endpoint.database, self.table,
                          self._query_one)

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
    removed: list[str] = []
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
