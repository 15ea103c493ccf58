"""Operations on MySQL/MariaDB masters and replicas, for ``kvgrpc-admin`` (:mod:`kvgrpc.ops.admin`).

- :func:`check` compares a table on two endpoints: row counts and checksums over key
  ranges, then the differing keys inside ranges whose checksums differ. Changes nothing.
- :func:`restore` rebuilds an emptied or replaced master from a replica (the original
  design's restore path) and re-attaches the replica to it.
- :func:`switchover` makes a replica the master without losing a write (planned).
- :func:`failover` promotes the most advanced replica when the master is lost.

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
from typing import Any

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
        if not slave_status(r):
            _LOGGER.warning("%s replicates from nobody: compared as it is, without waiting for it "
                            "to catch up", replica)
        elif pos and _one(r, "SELECT MASTER_GTID_WAIT(%s, %s)", (pos, wait))[0] != 0:
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
                rows = plan.step(f"copy table {table}",
                                 lambda t=table: _replace_table(src, dst, t, batch))  # type: ignore[misc]
                if rows is not None:
                    tables[table] = int(rows)  # type: ignore[call-overload]
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


# --------------------------------------------------------------------------------------
# Switchover and failover
# --------------------------------------------------------------------------------------


@dataclass
class Node:
    """What :func:`probe` saw of one server (``cnx`` is None when it is unreachable)."""

    endpoint: MySQLEndpoint
    cnx: Any = None
    problem: str = ""
    read_only: bool = True
    server_id: int = 0
    binlog_pos: str = ""
    slave_pos: str = ""
    log_bin: bool = False
    log_slave_updates: bool = False
    slave: dict[str, str] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.cnx is not None

    @property
    def received(self) -> str:
        """The GTID position it has received (relay log included)."""
        return self.slave.get("Gtid_IO_Pos") or self.slave_pos

    @property
    def is_master(self) -> bool:
        """Writable and replicating from nobody."""
        return self.reachable and not self.read_only and not self.slave

    def replicates_from(self, endpoint: MySQLEndpoint) -> bool:
        return bool(self.slave) and _same_server(self.slave.get("Master_Host", ""),
                                                 int(self.slave.get("Master_Port") or 0), endpoint)

    def close(self) -> None:
        if self.cnx is not None:
            self.cnx.close()


def probe(endpoint: MySQLEndpoint, timeout: int = 3) -> Node:
    """Connects and reads the server's replication state; never raises for an
    unreachable server (``problem`` says why)."""
    import mysql.connector

    node = Node(endpoint)
    try:
        node.cnx = endpoint.connect(database=False, autocommit=True, connection_timeout=timeout)
    except (mysql.connector.Error, TlsNotActive) as exc:
        node.problem = getattr(exc, "msg", None) or str(exc)
        return node
    row = _one(node.cnx, "SELECT @@GLOBAL.read_only, @@GLOBAL.server_id, @@GLOBAL.gtid_binlog_pos, "
                         "@@GLOBAL.gtid_slave_pos, @@GLOBAL.log_bin, @@GLOBAL.log_slave_updates")
    node.read_only, node.server_id = bool(int(row[0])), int(row[1])
    node.binlog_pos, node.slave_pos = str(row[2] or ""), str(row[3] or "")
    node.log_bin, node.log_slave_updates = bool(int(row[4])), bool(int(row[5]))
    node.slave = slave_status(node.cnx)
    return node


def _repoint(node: Node, to: MySQLEndpoint) -> Callable[[], None]:
    def run() -> None:
        _exec(node.cnx, "STOP SLAVE")
        cur = node.cnx.cursor()
        cur.execute("CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USE_GTID = slave_pos",
                    (to.host, to.port))
        cur.close()
        _exec(node.cnx, "START SLAVE")
    return run


@dataclass
class TopologyChange:
    """What :func:`switchover` or :func:`failover` did."""

    new_master: MySQLEndpoint
    repointed: list[MySQLEndpoint]
    left_out: list[str]  # endpoints not repointed, with the reason
    seconds: float
    changed: bool = True


def _one_master_already(nodes: list[Node]) -> Node | None:
    """The node that is already the only master with every other reachable node
    replicating from it (a finished switchover or failover), if there is one."""
    masters = [n for n in nodes if n.is_master]
    if len(masters) != 1:
        return None
    others = [n for n in nodes if n.reachable and n is not masters[0]]
    return masters[0] if all(n.replicates_from(masters[0].endpoint) for n in others) else None


def failover(master: MySQLEndpoint, replicas: list[MySQLEndpoint], *, dry_run: bool = False,
             wait: float = 30.0, log: Callable[[str], None] = _LOGGER.info) -> TopologyChange:
    """Promotes the most advanced replica when the master is lost, and repoints the others.

    Picks, among the reachable replicas, the one that has *received* the most (its relay log
    included: with semi-sync AFTER_SYNC every acknowledged write is on at least one replica),
    lets it apply its relay log (up to ``wait`` seconds), repoints the other reachable
    replicas to it, opens it (read_only=0) and drops its replication settings. Refuses,
    saying why, when the master is reachable (use :func:`switchover`), no replica is
    reachable, the replicas have diverged, or the candidate cannot apply its relay log or
    lacks a binlog. On any error before the end, what was done is undone. Idempotent: when
    one of them is already the master of the others, nothing changes.
    """
    started = time.monotonic()
    old = probe(master)
    nodes = [probe(r) for r in replicas]
    try:
        done = _one_master_already(nodes)
        if done is not None and not old.is_master:
            log(f"nothing to do: {done.endpoint} is already the master of every reachable replica")
            if old.reachable and not old.replicates_from(done.endpoint):
                log(f"the old master {master} is up, read-only, and replicates from nobody: it may "
                    "hold transactions no replica received; rebuild it as a replica")
            return TopologyChange(done.endpoint, [], [], time.monotonic() - started, changed=False)
        if old.reachable:
            state = "writable" if not old.read_only else "read-only"
            raise FailedPrecondition(
                f"the master {master} is reachable ({state}): failover is for a lost master; "
                "use switchover --to REPLICA for a planned change without loss")
        log(f"the master {master} is unreachable: {old.problem}")
        reachable = [n for n in nodes if n.reachable]
        for n in nodes:
            if not n.reachable:
                log(f"replica {n.endpoint} is unreachable ({n.problem}); it will not be repointed")
        if not reachable:
            raise FailedPrecondition("no replica is reachable: none can be promoted")
        for n in reachable:
            log(f"replica {n.endpoint}: received {n.received or '(nothing)'}, applied "
                f"{n.slave_pos or '(nothing)'}")
        leaders = [n for n in reachable if all(gtid_covers(n.received, o.received) for o in reachable)]
        if not leaders:
            raise FailedPrecondition(
                "the replicas have diverged (none has received everything the others have: "
                + "; ".join(f"{n.endpoint} at {n.received}" for n in reachable)
                + "): promoting any would lose transactions; resolve by hand")
        # Among equals: the one that has applied the most, then the lowest server id.
        candidate = sorted(leaders, key=lambda n: (-sum(s for s, _ in gtid_positions(n.slave_pos).values()),
                                                   n.server_id))[0]
        if candidate.slave.get("Last_SQL_Errno", "0") not in ("", "0"):
            raise FailedPrecondition(
                f"{candidate.endpoint} has everything but cannot apply its relay log (SQL thread "
                f"error {candidate.slave['Last_SQL_Errno']}: {candidate.slave.get('Last_SQL_Error')})")
        if not (candidate.log_bin and candidate.log_slave_updates):
            raise FailedPrecondition(
                f"{candidate.endpoint} cannot lead replicas: it needs log_bin and log_slave_updates")
        others = [n for n in reachable if n is not candidate]
        log(f"promoting {candidate.endpoint} (received {candidate.received})")
        # MariaDB (GTID mode) discards a replica's relay log when one of its replication
        # threads starts while both are stopped, and fetches again from what it applied:
        # from a lost master, nothing. So the SQL thread, if stopped, starts while the IO
        # thread still runs, and no step (no undo either) starts the IO thread again.
        sql_running = candidate.slave.get("Slave_SQL_Running") == "Yes"
        io_running = candidate.slave.get("Slave_IO_Running") in ("Yes", "Connecting")
        unapplied = not gtid_covers(candidate.slave_pos, candidate.received)
        if unapplied and not sql_running and not io_running:
            raise FailedPrecondition(
                f"{candidate.endpoint} has received up to {candidate.received} but applied only "
                f"{candidate.slave_pos or '(nothing)'}, and both its replication threads are "
                "stopped: starting either would make MariaDB discard the rest of its relay log, "
                "so it cannot be applied here; apply it by hand, or promote without it by hand")
        with Plan(log, dry_run) as plan:
            if unapplied and not sql_running:
                log(f"{candidate.endpoint}'s SQL thread is stopped (without an error): starting it "
                    "to apply the relay log")
                plan.step(f"start applying the relay log on {candidate.endpoint}: START SLAVE "
                          "SQL_THREAD (left running if the failover fails: applying what was received "
                          "is never wrong)", lambda: _exec(candidate.cnx, "START SLAVE SQL_THREAD"))
            plan.step(f"stop fetching from the lost master on {candidate.endpoint} (the relay log is "
                      "kept; a failed failover leaves this thread stopped)",
                      lambda: _exec(candidate.cnx, "STOP SLAVE IO_THREAD"))
            plan.step(f"let {candidate.endpoint} apply its relay log up to {candidate.received} "
                      f"(at most {wait:g} s)", lambda: _wait_applied(candidate, candidate.received, wait))
            plan.step(f"stop replication on {candidate.endpoint}", lambda: _exec(candidate.cnx, "STOP SLAVE"),
                      (f"START SLAVE SQL_THREAD on {candidate.endpoint}",
                       lambda: _exec(candidate.cnx, "START SLAVE SQL_THREAD")))
            for n in others:
                plan.step(f"repoint {n.endpoint} to {candidate.endpoint}", _repoint(n, candidate.endpoint),
                          (f"repoint {n.endpoint} back to {master}", _repoint(n, master)))
            plan.step(f"open {candidate.endpoint} for writes: SET GLOBAL read_only = 0",
                      lambda: _exec(candidate.cnx, "SET GLOBAL read_only = 0"),
                      (f"SET GLOBAL read_only = 1 on {candidate.endpoint}",
                       lambda: _exec(candidate.cnx, "SET GLOBAL read_only = 1")))
            plan.step(f"forget {candidate.endpoint}'s old master: RESET SLAVE ALL",
                      lambda: _exec(candidate.cnx, "RESET SLAVE ALL"))
        left_out = [f"{n.endpoint} (unreachable: repoint it to the new master by hand)"
                    for n in nodes if not n.reachable]
        return TopologyChange(candidate.endpoint, [n.endpoint for n in others], left_out,
                              time.monotonic() - started, changed=not dry_run)
    finally:
        for n in (old, *nodes):
            n.close()


def _wait_applied(node: Node, position: str, wait: float) -> None:
    if not position:
        return
    (result,) = _one(node.cnx, "SELECT MASTER_GTID_WAIT(%s, %s)", (position, wait))
    if result != 0:
        state = slave_status(node.cnx)
        why = ""
        if state.get("Slave_SQL_Running") != "Yes":
            error = state.get("Last_SQL_Error") or "no error given"
            why = f": its SQL thread is not running ({error})"
        raise FailedPrecondition(f"{node.endpoint} did not apply up to {position} within {wait:g} s{why}")


def switchover(master: MySQLEndpoint, replicas: list[MySQLEndpoint], to: MySQLEndpoint, *,
               repl_user: str = "", repl_password: str = "", dry_run: bool = False,
               wait: float = 30.0, log: Callable[[str], None] = _LOGGER.info) -> TopologyChange:
    """Makes the replica ``to`` the master without losing a write (a planned change).

    Fences the master (read_only=1), waits up to ``wait`` seconds until ``to`` has applied
    everything the master wrote, stops its replication, repoints the other reachable
    replicas to it, attaches the old master as its replica (account ``repl_user`` /
    ``repl_password``; the user defaults to the one ``to`` replicates with), opens ``to``
    and drops its replication settings. On any error, what was done is undone (the master
    is opened again). Idempotent: when ``to`` is already the master of the others, nothing
    changes.
    """
    started = time.monotonic()
    old = probe(master)
    nodes = [probe(r) for r in replicas]
    try:
        target = next((n for n in nodes if _same_server(to.host, to.port, n.endpoint)), None)
        if target is None:
            raise FailedPrecondition(f"{to} is not one of the replicas given (--replica)")
        done = _one_master_already([old, *nodes])
        if done is target:
            log(f"nothing to do: {to} is already the master of every reachable server")
            return TopologyChange(to, [], [], time.monotonic() - started, changed=False)
        if not old.reachable:
            raise FailedPrecondition(f"the master {master} is unreachable ({old.problem}): use failover")
        if not old.is_master:
            raise FailedPrecondition(f"{master} is not a master (read-only, or replicating): "
                                     "give the current master as --master")
        if not target.reachable:
            raise FailedPrecondition(f"{to} is unreachable ({target.problem})")
        if not target.replicates_from(master) or target.slave.get("Slave_SQL_Running") != "Yes":
            raise FailedPrecondition(f"{to} is not replicating from {master} (its SQL thread must run)")
        if not (target.log_bin and target.log_slave_updates):
            raise FailedPrecondition(f"{to} cannot lead replicas: it needs log_bin and log_slave_updates")
        user = repl_user or target.slave.get("Master_User", "")
        if not repl_password:
            raise FailedPrecondition(
                f"attaching the old master as a replica needs the replication account's password "
                f"(user {user!r}; KVGRPC_REPL_PASSWORD)")
        others = [n for n in nodes if n.reachable and n is not target]
        ssl = ""
        if target.slave.get("Master_SSL_Allowed") == "Yes":
            ca = target.slave.get("Master_SSL_CA_File", "").replace("'", "''")
            ssl = ", MASTER_SSL = 1" + (f", MASTER_SSL_CA = '{ca}'" if ca else "")
        (was_slave_pos,) = _one(old.cnx, "SELECT @@GLOBAL.gtid_slave_pos")

        def attach_old_master() -> None:
            _exec(old.cnx, "SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")
            cur = old.cnx.cursor()
            cur.execute("CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, "
                        f"MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1{ssl}",
                        (to.host, to.port, user, repl_password))
            cur.close()
            _exec(old.cnx, "START SLAVE")

        def detach_old_master() -> None:
            _exec(old.cnx, "STOP SLAVE", "RESET SLAVE ALL")
            cur = old.cnx.cursor()
            cur.execute("SET GLOBAL gtid_slave_pos = %s", (was_slave_pos or "",))
            cur.close()

        with Plan(log, dry_run) as plan:
            plan.step(f"fence the master {master}: SET GLOBAL read_only = 1",
                      lambda: _exec(old.cnx, "SET GLOBAL read_only = 1"),
                      (f"open {master} again: SET GLOBAL read_only = 0",
                       lambda: _exec(old.cnx, "SET GLOBAL read_only = 0")))
            position = old.binlog_pos
            if not dry_run:
                (position,) = _one(old.cnx, "SELECT @@GLOBAL.gtid_binlog_pos")
            plan.step(f"wait until {to} has applied {position or '(nothing)'} (at most {wait:g} s)",
                      lambda: _wait_applied(target, str(position or ""), wait))
            plan.step(f"stop replication on {to}", lambda: _exec(target.cnx, "STOP SLAVE"),
                      (f"START SLAVE on {to}", lambda: _exec(target.cnx, "START SLAVE")))
            for n in others:
                plan.step(f"repoint {n.endpoint} to {to}", _repoint(n, to),
                          (f"repoint {n.endpoint} back to {master}", _repoint(n, master)))
            plan.step(f"attach the old master {master} as a replica of {to}", attach_old_master,
                      (f"detach {master} again", detach_old_master))
            plan.step(f"open {to} for writes: SET GLOBAL read_only = 0",
                      lambda: _exec(target.cnx, "SET GLOBAL read_only = 0"),
                      (f"SET GLOBAL read_only = 1 on {to}", lambda: _exec(target.cnx, "SET GLOBAL read_only = 1")))
            plan.step(f"forget {to}'s old master: RESET SLAVE ALL", lambda: _exec(target.cnx, "RESET SLAVE ALL"))
        left_out = [f"{n.endpoint} (unreachable: repoint it to {to} by hand)" for n in nodes if not n.reachable]
        return TopologyChange(to, [n.endpoint for n in others] + [master], left_out,
                              time.monotonic() - started, changed=not dry_run)
    finally:
        for n in (old, *nodes):
            n.close()
