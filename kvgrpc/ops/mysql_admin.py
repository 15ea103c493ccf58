"""Operations on MySQL/MariaDB masters and replicas, for ``kvgrpc-admin`` (:mod:`kvgrpc.ops.admin`).

- :func:`check` compares a table on two endpoints: row counts and checksums over key
  ranges, then the differing keys inside ranges whose checksums differ. Changes nothing.
- :func:`restore` rebuilds an emptied or replaced master from a replica (the original
  design's restore path) and re-attaches the replica to it.

Every command that changes a server runs as a :class:`Plan`: steps in order, each with the
step that undoes it; on any error the undo steps of what was done run in reverse, so the
servers are left as they were found (the few irreversible steps say so, and come after
the checks that make them safe). Each is idempotent: when the goal already holds, it says
so and changes nothing. ``dry_run`` only reads, and logs what would be done.

These connect with an administrative account (``SUPER``-level privileges, ``READ_ONLY
ADMIN`` on MariaDB 10.11); they are not used by the server. MariaDB only (GTID positions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from kvgrpc.errors import FailedPrecondition, KvError, Unavailable
from kvgrpc.store.base import check_table_name
from kvgrpc.store.mysql import HEARTBEAT_TABLE, MySQLEndpoint, TlsNotActive

_LOGGER = logging.getLogger(__name__)

# A 64-bit checksum per row, XORed over a range (the technique of pt-table-checksum):
# order-independent, and the length prefix keeps (k, v) pairs from running together.
_ROW_HASH = "CAST(CONV(SUBSTRING(MD5(CONCAT(LENGTH(k), ':', k, v)), 1, 16), 16, 10) AS UNSIGNED)"


def connect(endpoint: MySQLEndpoint, *, database: bool = True):
    """A plain autocommit connection, with the endpoint's TLS settings (translating
    failure to Unavailable)."""
    import mysql.connector

    try:
        return endpoint.connect(database=database, autocommit=True, connection_timeout=5)
    except (mysql.connector.Error, TlsNotActive) as exc:
        raise Unavailable(f"cannot connect to {endpoint}: {getattr(exc, 'msg', None) or exc}") from exc


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


class Plan:
    """Runs steps in order and, if any step (or anything else in the ``with`` block)
    fails, the undo steps of what was done, in reverse; then re-raises.

    With ``dry_run`` no step runs: each is logged as ``would: ...``. Not thread-safe.
    """

    def __init__(self, log: Callable[[str], None], dry_run: bool = False) -> None:
        self.log = log
        self.dry_run = dry_run
        self.done: list[str] = []
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def step(self, description: str, action: Callable[[], object],
             undo: tuple[str, Callable[[], object]] | None = None) -> object:
        """Runs ``action`` (unless dry-run); ``undo`` is (description, callable)."""
        if self.dry_run:
            self.log(f"would: {description}")
            return None
        self.log(description)
        result = action()
        self.done.append(description)
        if undo is not None:
            self._undo.append(undo)
        return result

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            return
        if self._undo:
            self.log(f"failed ({exc}); undoing what was done")
        for description, undo in reversed(self._undo):
            try:
                self.log(f"undo: {description}")
                undo()
            except Exception as undo_exc:  # keep undoing the rest; the original error wins
                _LOGGER.error("could not undo (%s): %s", description, undo_exc)
                self.log(f"could NOT undo: {description} ({_reason(undo_exc)})")


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, KvError) else getattr(exc, "msg", None) or type(exc).__name__


def _exec(cnx, *statements: str) -> None:
    cur = cnx.cursor()
    for sql in statements:
        cur.execute(sql)
        if cur.with_rows:
            cur.fetchall()
    cur.close()


def slave_status(cnx) -> dict[str, str]:
    """SHOW SLAVE STATUS as a dict ({} when the server replicates from nobody)."""
    cur = cnx.cursor(dictionary=True)
    cur.execute("SHOW SLAVE STATUS")
    rows = cur.fetchall()
    cur.close()
    return {k: "" if v is None else str(v) for k, v in rows[0].items()} if rows else {}


def gtid_positions(position: str) -> dict[int, tuple[int, int]]:
    """``D-S-N,...`` -> {domain: (sequence, server)}."""
    out = {}
    for gtid in filter(None, (g.strip() for g in (position or "").split(","))):
        domain, server, seq = (int(x) for x in gtid.split("-"))
        out[domain] = (seq, server)
    return out


def gtid_covers(position: str, other: str) -> bool:
    """Whether ``position`` has every transaction of ``other`` (per domain, the sequence
    number is at least as high)."""
    mine = gtid_positions(position)
    return all(mine.get(d, (0, 0))[0] >= seq for d, (seq, _) in gtid_positions(other).items())


def _same_server(host: str, port: int, endpoint: MySQLEndpoint) -> bool:
    loopback = {"127.0.0.1", "localhost", "::1"}
    same_host = host == endpoint.host or (host in loopback and endpoint.host in loopback)
    return same_host and int(port or 0) == endpoint.port


@dataclass
class RestoreResult:
    """What :func:`restore` did (``changed`` is False when there was nothing to do)."""

    tables: dict[str, int]  # table -> rows copied
    gtid_position: str
    seconds: float
    changed: bool = True


def restore(source: MySQLEndpoint, target: MySQLEndpoint, *, force: bool = False,
            dry_run: bool = False, batch: int = 1000,
            log: Callable[[str], None] = _LOGGER.info) -> RestoreResult:
    """Rebuilds the master ``target`` from the replica ``source``, then re-attaches it.

    ``target`` must be reachable and empty (a replacement or an emptied master), unless
    ``force``; kvgrpc servers may stay pointed at it, but cannot write meanwhile (it is
    read-only throughout). Steps: fence the target (read-only); stop replication on the
    source and read its GTID position; on the target, reset the binlog and set its GTID
    state to that position (so the replica can resume from it) and copy every table of
    the database with binlogging off (the replica already holds the rows); open the target
    (read_only=0: it is the master); restart replication on the source.

    On any error, the source's replication is restarted and the target's read_only is put
    back as it was; the target's binlog and tables are not (replacing them is the purpose,
    and only an empty target, or ``force``, gets that far). Idempotent: when the source
    already replicates from the target and has nothing the target lacks, there is nothing
    to restore and nothing changes (unless ``force``).
    """
    started = time.monotonic()
    src, dst = connect(source), connect(target, database=False)
    try:
        database = check_table_name(source.database)
        state = slave_status(src)
        (src_pos,) = _one(src, "SELECT @@GLOBAL.gtid_slave_pos")
        (dst_pos,) = _one(dst, "SELECT @@GLOBAL.gtid_binlog_pos")
        if (not force and state and _same_server(state["Master_Host"], int(state["Master_Port"] or 0), target)
                and state["Slave_IO_Running"] == "Yes" and state["Slave_SQL_Running"] == "Yes"
                and gtid_covers(str(dst_pos or ""), str(src_pos or ""))):
            log(f"nothing to do: the replica {source} replicates from {target}, which has "
                f"everything it has (GTID {dst_pos or '(empty)'})")
            return RestoreResult({}, str(dst_pos or ""), time.monotonic() - started, changed=False)
        cur = dst.cursor()
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))
        # The heartbeat table is the servers' own (they write it to a blank master too):
        # no sign of data. It is copied like the rest, so both sides hold the same row.
        existing = [t for (t,) in cur.fetchall() if t != HEARTBEAT_TABLE]
        nonempty = [t for t in existing
                    if _one(dst, f"SELECT COUNT(*) FROM `{database}`.`{t.replace('`', '``')}`")[0] > 0]
        if nonempty and not force:
            raise FailedPrecondition(
                f"the target master already has data in {', '.join(nonempty)}; "
                "restore only rebuilds an empty master (pass --force to overwrite)"
            )
        src_cur = src.cursor()
        src_cur.execute("SHOW TABLES")
        source_tables = [check_table_name(t) for (t,) in src_cur.fetchall()]  # before any change
        src_cur.close()
        (was_read_only,) = _one(dst, "SELECT @@GLOBAL.read_only")
        was_replicating = state.get("Slave_IO_Running") == "Yes" or state.get("Slave_SQL_Running") == "Yes"
        tables: dict[str, int] = {}
        position = str(src_pos or "")
        with Plan(log, dry_run) as plan:
            # Servers still pointed at the target (their heartbeats) must not write while
            # its binlog is reset; read_only stops them, not this administrative session.
            plan.step("fence the target master: SET GLOBAL read_only = 1",
                      lambda: _exec(dst, "SET GLOBAL read_only = 1"),
                      (f"SET GLOBAL read_only = {int(was_read_only)} on the target",
                       lambda: _exec(dst, f"SET GLOBAL read_only = {int(was_read_only)}")))
            plan.step("stop replication on the source replica", lambda: _exec(src, "STOP SLAVE"),
                      ("START SLAVE on the source replica", lambda: _exec(src, "START SLAVE"))
                      if was_replicating else None)
            if not dry_run:
                (position,) = _one(src, "SELECT @@GLOBAL.gtid_slave_pos")
            log(f"source replica is at GTID position {position or '(empty)'}")
            plan.step(f"reset the target's binlog and give it GTID state {position or '(empty)'} "
                      "(irreversible)",
                      lambda: _reset_binlog(dst, position))
            plan.step(f"CREATE DATABASE IF NOT EXISTS `{database}` on the target",
                      lambda: _exec(dst, f"CREATE DATABASE IF NOT EXISTS `{database}`", f"USE `{database}`"))
            for table in source_tables:
                rows = plan.step(f"copy table {table}", lambda t=table: _replace_table(src, dst, t, batch))
                if rows is not None:
                    tables[table] = int(rows)
                    log(f"copied {rows} rows of {table}")
            plan.step("open the target master: SET GLOBAL read_only = 0",
                      lambda: _exec(dst, "SET GLOBAL read_only = 0"))
            plan.step("restart replication on the source replica", lambda: _exec(src, "START SLAVE"))
        return RestoreResult(tables, str(position or ""), time.monotonic() - started, changed=not dry_run)
    finally:
        src.close()
        dst.close()


def _reset_binlog(dst, position: str) -> None:
    cur = dst.cursor()
    cur.execute("SET SESSION sql_log_bin = 0")
    cur.execute("RESET MASTER")
    cur.execute("SET GLOBAL gtid_binlog_state = %s", (position,))
    cur.close()


def _replace_table(src, dst, table: str, batch: int) -> int:
    (_, ddl) = _one(src, f"SHOW CREATE TABLE `{table}`")
    _exec(dst, f"DROP TABLE IF EXISTS `{table}`", ddl)
    return _copy_table(src, dst, table, batch)


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
