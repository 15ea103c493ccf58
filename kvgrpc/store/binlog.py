"""The MariaDB change feed: the master's binlog, read the way a replica reads it.

Every committed transaction has a GTID ``domain-server-sequence``; within the master's
replication domain the sequence numbers grow by one per transaction, in commit order.
The feed uses that sequence number as the *revision*: a write's revision is the sequence
number of its transaction (``@@last_gtid`` after the commit), and all the records one
transaction wrote (a StreamPut batch) share it. Transactions that touch no record (the
heartbeat, DDL) still take a number, so revisions of records are increasing but not
contiguous.

The binlog is read with python-mysql-replication (`pymysqlreplication`), which speaks the
replication protocol; the rows of our table are decoded here (:func:`_decode_rows`), ~20×
faster than the library's generic per-column decoding, because the table's layout is
ours and fixed (``k VARBINARY``, ``v LONGBLOB``, ``version BIGINT``; checked against each
table map). The master must log rows (``binlog_format=ROW``) with full row images
(``binlog_row_image=FULL``, the default), and the account needs ``REPLICATION SLAVE``.
"""

from __future__ import annotations

import logging
import random
import ssl
import struct
from collections.abc import Callable, Iterator

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from kvgrpc.errors import FailedPrecondition, Internal, KvError, OutOfRange, Unavailable
from kvgrpc.records import Event
from kvgrpc.store.base import ALL_KEYS, ChangeBatch, KeyFilter

_LOGGER = logging.getLogger(__name__)
# The library warns, on every stream, that binlog_row_metadata is not FULL: it needs that
# for column names, which the feed does not use (it decodes rows by position).
logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)

#: Seconds between the master's heartbeats on an idle stream: the feed's pulse, and how
#: long a stop request may wait when nothing at all is written.
HEARTBEAT_SECONDS = 1.0
#: A stream silent this long (no heartbeat either) is taken as lost.
READ_TIMEOUT_SECONDS = 10.0

_SETTINGS_SQL = (
    "SELECT @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image, "
    "@@global.gtid_domain_id, @@global.gtid_binlog_state"
)
# MySQL column type codes (mysql/field_types.h) of the table's columns, in order.
_VARCHAR, _BLOB, _LONGLONG = 15, 252, 8
_ACCESS_DENIED = frozenset({1044, 1045, 1142, 1227})
_FL_STANDALONE = 1  # MariaDB GTID event flag: the transaction is one event, no XID
_NOT_IN_BINLOG = 1236  # "connecting slave requested to start from GTID ..., which is not in the master's binlog"


class BinlogFeed:
    """The change feed of one table on a MariaDB master.

    ``query(sql)`` runs one statement on the master (through the store's pool) and
    returns its first row; ``settings`` are how to log in (host, port, user, password).
    """

    def __init__(self, settings: dict, database: str, table: str,
                 query: Callable[[str], tuple]) -> None:
        self._settings = settings
        self._database = database
        self._table = table
        self._query = query

    def _state(self) -> tuple[int, dict[int, int]]:
        """The master's domain and, per server id, the last sequence number it wrote there.

        Raises FailedPrecondition when the master's binlog cannot give the feed.
        """
        log_bin, fmt, image, domain, state = self._query(_SETTINGS_SQL)
        needs = []
        if not int(log_bin):
            needs.append("log_bin (the binary log) on")
        if str(fmt).upper() != "ROW":
            needs.append(f"binlog_format=ROW (it is {fmt})")
        if str(image).upper() != "FULL":
            needs.append(f"binlog_row_image=FULL (it is {image})")
        if needs:
            raise FailedPrecondition("Watch needs the master's " + " and ".join(needs))
        domain = int(domain)
        servers: dict[int, int] = {}
        for gtid in filter(None, (g.strip() for g in str(state or "").split(","))):
            d, server, seq = (int(x) for x in gtid.split("-"))
            if d == domain:
                servers[server] = seq
        return domain, servers

    def head(self) -> int:
        """The revision of the master's latest transaction (0 before the first)."""
        _, servers = self._state()
        return max(servers.values(), default=0)

    def changes(self, after: int, stopped: Callable[[], bool],
                keys: KeyFilter = ALL_KEYS) -> Iterator[ChangeBatch]:
        """See :meth:`kvgrpc.store.base.Store.changes`."""
        domain, servers = self._state()
        head = max(servers.values(), default=0)
        if after > head:
            raise OutOfRange(f"revision {after} is ahead of the database's latest revision {head}")
        if after == head:
            starts = [f"{domain}-{server}-{seq}" for server, seq in servers.items() if seq == head]
        elif after == 0:
            starts = [""]  # from the first binlog; checked below that nothing is missing
        else:
            # The GTID of revision `after` names the server that wrote it, which only the
            # binlog knows: try each server that has written that far in the domain.
            starts = [f"{domain}-{server}-{after}" for server, seq in servers.items() if seq >= after]
        for i, start in enumerate(starts):
            try:
                yield from self._read(start, domain, after, stopped, keys)
                return
            except _NotInBinlog:
                if i == len(starts) - 1:
                    raise OutOfRange(
                        f"revision {after} is no longer in the master's binlog (purged); "
                        "start from a later revision, or read the current state with Scan"
                    ) from None

    def _read(self, start: str, domain: int, after: int, stopped: Callable[[], bool],
              keys: KeyFilter) -> Iterator[ChangeBatch]:
        stream = BinLogStreamReader(
            # local_infile off (pymysql's default, stated): a binlog connection never
            # sends the database a file (both of the library's connections use these).
            connection_settings=dict(self._settings, connect_timeout=5,
                                     read_timeout=READ_TIMEOUT_SECONDS, local_infile=False),
            # Replicas of one master need distinct ids; the master drops the older of two.
            server_id=random.SystemRandom().randint(1 << 30, (1 << 32) - 1),
            is_mariadb=True, auto_position=start, blocking=True,
            only_events=[MariadbGtidEvent, XidEvent, QueryEvent, HeartbeatLogEvent, RotateEvent,
                         WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
            only_schemas=[self._database], only_tables=[self._table],
            slave_heartbeat=HEARTBEAT_SECONDS, pymysql_wrapper=_StreamConnection,
            enable_logging=False,
        )
        revision = after  # the last revision delivered in full
        current = None  # the revision of the transaction being read (None: another domain's)
        standalone = False  # that transaction is one statement (DDL) with no XID
        pending: list[Event] = []
        checked_tables: set[int] = set()
        try:
            while not stopped():
                try:
                    event = stream.fetchone()
                except pymysql.OperationalError as exc:
                    code = exc.args[0] if exc.args else None
                    if code == _NOT_IN_BINLOG:
                        raise _NotInBinlog() from exc
                    if code in _ACCESS_DENIED:
                        _LOGGER.error("the master refused the binlog stream: %s", exc)
                        raise FailedPrecondition(
                            "Watch needs the database account to have the REPLICATION SLAVE "
                            "privilege on the master"
                        ) from exc
                    raise _lost(exc) from exc
                except (_StreamLost, OSError) as exc:
                    raise _lost(exc) from exc
                if isinstance(event, MariadbGtidEvent):
                    # Table ids are the master's in-memory numbers: a restarted master hands
                    # them out again, so kv's old id may now be another table's. The library
                    # maps ids from the table-map events it keeps (ours only) and forgets them
                    # only at a timestamped Rotate, which a restart does not write. Each
                    # transaction maps its tables again before its rows: forget them all here.
                    stream.table_map.clear()
                    checked_tables.clear()
                    current = event.gtid_seq_no if event.domain_id == domain else None
                    standalone = bool(event.flags & _FL_STANDALONE)
                    if current is not None and revision == 0 and start == "" and current != 1:
                        raise OutOfRange(
                            "revision 0 (the whole history) is no longer in the master's "
                            f"binlog; the oldest kept is {current - 1}"
                        )
                    pending = []
                elif isinstance(event, (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)):
                    if event.table_id not in checked_tables:
                        _check_layout(event, self._table)
                        checked_tables.add(event.table_id)
                    if current is not None:
                        _decode_rows(event, pending, keys, current)
                elif isinstance(event, XidEvent) or (isinstance(event, QueryEvent) and (
                        standalone or event.query.strip().upper() == "COMMIT")):
                    # XID: a transaction's commit. A Query event ends a standalone (DDL)
                    # transaction, or commits a non-transactional one; other queries
                    # (BEGIN, SAVEPOINT) are inside a transaction.
                    if current is not None and current > revision:
                        revision = current
                        yield ChangeBatch(revision, pending)
                    pending, current = [], None
                elif isinstance(event, (HeartbeatLogEvent, RotateEvent)):
                    # The master sends a Rotate first when the stream opens: the feed is up.
                    yield ChangeBatch(revision)
        finally:
            stream.close()


class _NotInBinlog(Exception):
    """The master does not hold the starting GTID (wrong server id, or purged)."""


class _StreamLost(ConnectionError):
    """The binlog connection broke; raised instead of pymysql's OperationalError so that
    pymysqlreplication does not reconnect silently from its *first* position (that would
    repeat changes): the feed's caller resumes from the last revision it delivered."""


def _lost(exc: Exception) -> KvError:
    _LOGGER.warning("the master's binlog stream broke: %s", exc)
    return Unavailable("the master's change stream was interrupted; resume the watch")


class _StreamConnection(pymysql.connections.Connection):
    """The binlog stream's connection: a broken link raises :class:`_StreamLost`; an
    ``ssl`` setting (``MySQLEndpoint.pymysql_settings``: ssl-mode REQUIRED or stronger)
    that did not end up encrypting fails (older PyMySQL fall back to plaintext silently)."""

    def connect(self, *args, **kwargs):
        super().connect(*args, **kwargs)
        if self.ssl and getattr(self, "_ssl_required", True) and not isinstance(self._sock, ssl.SSLSocket):
            self.close()
            raise pymysql.OperationalError(2026, "the master does not encrypt the binlog connection")

    def _read_packet(self, *args, **kwargs):
        try:
            return super()._read_packet(*args, **kwargs)
        except pymysql.OperationalError as exc:
            if exc.args and exc.args[0] in (2006, 2013):
                raise _StreamLost(str(exc)) from exc
            raise


def _check_layout(event, table: str) -> None:
    """Raises Internal unless the rows are (VARBINARY k, LONGBLOB v, BIGINT version), all
    present in every image: the layout :func:`_decode_rows` reads."""
    types = [c.type for c in event.columns]
    full = b"\x07"
    images = [event.columns_present_bitmap]
    if hasattr(event, "columns_present_bitmap2"):
        images.append(event.columns_present_bitmap2)
    layout_ok = (types == [_VARCHAR, _BLOB, _LONGLONG] and event.columns[0].max_length > 255
                 and event.columns[1].length_size == 4)
    if not layout_ok or any(bytes(i) != full for i in images):
        _LOGGER.error("table %s has layout %s in the binlog (images %s); expected "
                      "k VARBINARY, v LONGBLOB, version BIGINT with full row images",
                      table, types, images)
        raise Internal("the table's binlog layout is not the one kvgrpc created; see the server log")


_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I64 = struct.Struct("<q").unpack_from


def _decode_rows(event, out: list[Event], keys: KeyFilter, revision: int) -> None:
    """Appends the changes of a rows event to the keys ``keys`` accepts, read straight
    from its packet, as :class:`Event` s of ``revision`` (its transaction's).

    Each row image is a null bitmap (1 byte for 3 columns; no column is nullable), then
    ``k`` (2-byte length, bytes), ``v`` (4-byte length, bytes), ``version`` (8 bytes). An
    update has two images, before and after; the change is the after image. Keys are
    compared in place and only matching rows are copied out (the key decoded: the Event
    goes to the watchers as it is, with no conversion between the feed and the hub).
    """
    packet = event.packet
    data = packet.read(event.event_size - packet.read_bytes)
    images = 2 if isinstance(event, UpdateRowsEvent) else 1
    deleted = isinstance(event, DeleteRowsEvent)
    prefix, exact = keys.prefix, keys.exact
    i, end = 0, len(data)
    while i < end:
        for _ in range(images):
            (key_length,) = _U16(data, i + 1)  # after the null bitmap
            key_at = i + 3
            (value_length,) = _U32(data, key_at + key_length)
            value_at = key_at + key_length + 4
            i = value_at + value_length + 8
        if data.startswith(prefix, key_at, key_at + key_length) and (
                not exact or key_length == len(prefix)):
            value = b"" if deleted else data[value_at : value_at + value_length]
            key = data[key_at : key_at + key_length].decode("utf-8", "replace")
            out.append(Event(key, value, _I64(data, i - 8)[0], revision, deleted))
