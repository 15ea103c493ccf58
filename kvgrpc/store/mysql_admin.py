"""Operations on a MySQL/MariaDB master and replica pair, for ``python -m kvgrpc.admin``.

- :func:`check` compares a table on two endpoints: row counts and checksums over key
  ranges, then the differing keys inside ranges whose checksums differ.
- :func:`restore` rebuilds an emptied or replaced master from a replica (the original
  design's restore path) and re-attaches the replica to it.

These connect with an administrative account (restore needs ``SUPER``-level privileges on
both servers); they are not used by the server. MariaDB only (GTID positions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from kvgrpc.errors import FailedPrecondition, Unavailable
from kvgrpc.store.base import check_table_name
from kvgrpc.store.mysql import HEARTBEAT_TABLE, MySQLEndpoint

_LOGGER = logging.getLogger(__name__)

# A 64-bit checksum per row, XORed over a range (the technique of pt-table-checksum):
# order-independent, and the length prefix keeps (k, v) pairs from running together.
_ROW_HASH = "CAST(CONV(SUBSTRING(MD5(CONCAT(LENGTH(k), ':', k, v)), 1, 16), 16, 10) AS UNSIGNED)"


def connect(endpoint: MySQLEndpoint, *, database: bool = True):
    """A plain autocommit connection (translating failure to Unavailable)."""
    import mysql.connector

    try:
        return mysql.connector.connect(
            host=endpoint.host, port=endpoint.port, user=endpoint.user,
            password=endpoint.password, database=endpoint.database if database else None,
            autocommit=True, connection_timeout=5,
        )
    except mysql.connector.Error as exc:
        raise Unavailable(f"cannot connect to {endpoint}: {getattr(exc, 'msg', 'error')}") from exc


def _one(cnx, sql: str, params=()):
    cur = cnx.cursor()
    cur.execute(sql, params)
    row = cur.fetchone()
    cur.fetchall()
    cur.close()
    return row


@dataclass
class CheckResult:
    """What :func:`check` found."""

    table: str
    master_rows: int
    replica_rows: int
    ranges: int
    differing_ranges: int
    differing_keys: list[bytes] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.differing_ranges == 0 and self.master_rows == self.replica_rows


def _boundaries(cnx, table: str, chunk: int) -> Iterator[bytes]:
    """The last key of every ``chunk`` keys of ``table`` on ``cnx``, in key order."""
    last = b""
    first = True
    while True:
        row = _one(
            cnx,
            f"SELECT k FROM `{table}` WHERE k > %s OR %s ORDER BY k LIMIT 1 OFFSET %s",
            (last, first, chunk - 1),
        )
        if row is None:
            return
        last, first = bytes(row[0]), False
        yield last


def _range_sql(table: str, lo: bytes | None, hi: bytes | None, what: str) -> tuple[str, tuple]:
    where, params = [], []
    if lo is not None:
        where.append("k > %s")
        params.append(lo)
    if hi is not None:
        where.append("k <= %s")
        params.append(hi)
    clause = " AND ".join(where) or "TRUE"
    return f"SELECT {what} FROM `{table}` WHERE {clause}", tuple(params)


def check(master: MySQLEndpoint, replica: MySQLEndpoint, table: str = "kv", *,
          chunk: int = 1000, wait: float = 30.0, max_keys: int = 1000) -> CheckResult:
    """Compares ``table`` on the master and the replica, once the replica has caught up.

    Waits up to ``wait`` seconds for the replica to apply the master's current position,
    so that a check right after writes compares like with like.
    """
    check_table_name(table)
    m, r = connect(master), connect(replica)
    try:
        (pos,) = _one(m, "SELECT @@gtid_binlog_pos")
        if pos and _one(r, "SELECT MASTER_GTID_WAIT(%s, %s)", (pos, wait))[0] != 0:
            _LOGGER.warning("the replica did not reach the master's position %s in %g s", pos, wait)
        (master_rows,) = _one(m, f"SELECT COUNT(*) FROM `{table}`")
        (replica_rows,) = _one(r, f"SELECT COUNT(*) FROM `{table}`")
        edges = list(_boundaries(m, table, chunk))
        ranges = list(zip([None, *edges], [*edges, None]))
        result = CheckResult(table, master_rows, replica_rows, len(ranges), 0)
        summary = f"COUNT(*), COALESCE(BIT_XOR({_ROW_HASH}), 0)"
        for lo, hi in ranges:
            sql, params = _range_sql(table, lo, hi, summary)
            if _one(m, sql, params) == _one(r, sql, params):
                continue
            result.differing_ranges += 1
            sql, params = _range_sql(table, lo, hi, "k, MD5(v)")
            sides = []
            for cnx in (m, r):
                cur = cnx.cursor()
                cur.execute(sql, params)
                sides.append({bytes(k): h for k, h in cur.fetchall()})
                cur.close()
            a, b = sides
            differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            result.differing_keys.extend(differing[: max(0, max_keys - len(result.differing_keys))])
        return result
    finally:
        m.close()
        r.close()


@dataclass
class RestoreResult:
    """What :func:`restore` did."""

    tables: dict[str, int]  # table -> rows copied
    gtid_position: str
    seconds: float


def restore(source: MySQLEndpoint, target: MySQLEndpoint, *, force: bool = False,
            batch: int = 1000, log: Callable[[str], None] = _LOGGER.info) -> RestoreResult:
    """Rebuilds the master ``target`` from the replica ``source``, then re-attaches it.

    ``target`` must be reachable and empty (a replacement or an emptied master), unless
    ``force``; kvgrpc servers may stay pointed at it, but must not write meanwhile. Steps: stop replication on the source and read its GTID position; on the
    target, reset the binlog and set its GTID state to that position (so the replica can
    resume from it), then copy every table of the database with binlogging off (the
    replica already holds the rows); finally restart replication on the source.
    """
    started = time.monotonic()
    src, dst = connect(source), connect(target, database=False)
    try:
        database = source.database
        cur = dst.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS `%s`" % check_table_name(database))
        cur.execute(f"USE `{database}`")
        cur.execute("SHOW TABLES")
        # The heartbeat table is the servers' own (they write it to a blank master too):
        # no sign of data. It is copied like the rest, so both sides hold the same row.
        existing = [t for (t,) in cur.fetchall() if t != HEARTBEAT_TABLE]
        nonempty = [t for t in existing if _one(dst, f"SELECT COUNT(*) FROM `{t}`")[0] > 0]
        if nonempty and not force:
            raise FailedPrecondition(
                f"the target master already has data in {', '.join(nonempty)}; "
                "restore only rebuilds an empty master (pass --force to overwrite)"
            )
        # Servers still pointed at the target (their heartbeats) must not write while its
        # binlog is reset; read_only stops them, not this administrative session.
        cur.execute("SET GLOBAL read_only = 1")
        log("stopping replication on the source replica")
        src.cursor().execute("STOP SLAVE")
        (position,) = _one(src, "SELECT @@gtid_slave_pos")
        log(f"source replica is at GTID position {position or '(empty)'}")
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute("RESET MASTER")
        cur.execute("SET GLOBAL gtid_binlog_state = %s", (position,))
        tables: dict[str, int] = {}
        src_cur = src.cursor()
        src_cur.execute("SHOW TABLES")
        for (table,) in src_cur.fetchall():
            check_table_name(table)
            (_, ddl) = _one(src, f"SHOW CREATE TABLE `{table}`")
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            cur.execute(ddl)
            tables[table] = _copy_table(src, dst, table, batch)
            log(f"copied {tables[table]} rows of {table}")
        cur.execute("SET GLOBAL read_only = 0")
        cur.close()
        log("restarting replication on the source replica")
        src.cursor().execute("START SLAVE")
        return RestoreResult(tables, position, time.monotonic() - started)
    finally:
        src.close()
        dst.close()


def _copy_table(src, dst, table: str, batch: int) -> int:
    read = src.cursor(buffered=False)
    read.execute(f"SELECT * FROM `{table}`")
    columns = ", ".join(f"`{c}`" for c in read.column_names)
    marks = ", ".join(["%s"] * len(read.column_names))
    write = dst.cursor()
    sql = f"INSERT INTO `{table}` ({columns}) VALUES ({marks})"
    copied = 0
    while rows := read.fetchmany(batch):
        write.executemany(sql, rows)
        copied += len(rows)
    read.close()
    write.close()
    return copied
