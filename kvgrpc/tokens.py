"""Write tokens: what a client keeps to read its own writes.

A token names a write's place in the master's replication stream. On MariaDB it is a
GTID position, ``domain-server-sequence`` (comma-separated, one per replication domain);
sequence numbers grow within a domain, so the later of two tokens is the one with the
larger sequence per domain, and :func:`latest` merges two tokens that way. Any other
form (a MySQL GTID set, which is cumulative) is kept as the most recent one seen.
"""

from __future__ import annotations

import re

from kvgrpc.errors import InvalidArgument

_MARIADB_GTID = re.compile(r"^\d+-\d+-\d+$", re.ASCII)

#: The longest write token accepted (a GTID list of many domains, or a MySQL GTID set
#: of many servers, stays far below it).
MAX_TOKEN_CHARS = 4096

# MariaDB: domain-server-sequence (u32-u32-u64), comma-separated, one per domain.
_MARIADB_LIST = re.compile(r"\d{1,10}-\d{1,10}-\d{1,20}(?:,[ \n]?\d{1,10}-\d{1,10}-\d{1,20})*", re.ASCII)
# MySQL: UUID:interval[:interval...] (interval N or N-M; 8.3+ also UUID:tag:interval),
# comma-separated; @@gtid_executed puts a newline after each comma.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_INTERVAL = r"\d{1,19}(?:-\d{1,19})?"
_SID = rf"{_UUID}(?::(?:[A-Za-z_][A-Za-z0-9_]{{0,31}}:)?{_INTERVAL})+"
_MYSQL_SET = re.compile(rf"{_SID}(?:,[ \n]?{_SID})*", re.ASCII)
_U32, _U64, _I63 = (1 << 32) - 1, (1 << 64) - 1, (1 << 63) - 1


def token_kind(token: str, what: str = "min_write_token") -> str:
    """Checks a write token a client sent; returns ``"mariadb"``, ``"mysql"`` or ``""`` (none).

    Raises InvalidArgument (naming ``what``) unless ``token`` is empty, a MariaDB GTID
    list (``domain-server-sequence``, comma-separated, each number within its type) or a
    MySQL GTID set (``uuid:N-M``...), of at most :data:`MAX_TOKEN_CHARS` characters. Run
    before any database call, so a malformed token never reaches the database.
    """
    if not token:
        return ""
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(f"{what} is too long to be a write token ({MAX_TOKEN_CHARS} characters at most)")
    if _MARIADB_LIST.fullmatch(token):
        for gtid in token.split(","):
            domain, server, seq = (int(x) for x in gtid.strip().split("-"))
            if domain > _U32 or server > _U32 or seq > _U64:
                raise InvalidArgument(f"{what}: GTID {gtid.strip()!r} has a number out of range")
        return "mariadb"
    if _MYSQL_SET.fullmatch(token):
        for interval in re.findall(r":(\d+)(?:-(\d+))?", token, re.ASCII):
            start, end = int(interval[0]), int(interval[1] or interval[0])
            if not 1 <= start <= end <= _I63:
                raise InvalidArgument(f"{what}: GTID interval {start}-{end} is out of range")
        return "mysql"
    raise InvalidArgument(
        f"{what} is not a write token: expected a MariaDB GTID list (domain-server-sequence) "
        "or a MySQL GTID set (uuid:N-M), as a write returned it"
    )


def _parse(token: str) -> dict[int, tuple[int, int]] | None:
    parts = [p.strip() for p in token.split(",") if p.strip()]
    if not parts or not all(_MARIADB_GTID.match(p) for p in parts):
        return None
    result: dict[int, tuple[int, int]] = {}
    for part in parts:
        domain, server, seq = (int(x) for x in part.split("-"))
        if domain not in result or seq > result[domain][1]:
            result[domain] = (server, seq)
    return result


def latest(current: str, new: str) -> str:
    """The token covering both ``current`` and ``new`` (``new`` if they cannot be merged)."""
    if not current:
        return new
    if not new:
        return current
    a, b = _parse(current), _parse(new)
    if a is None or b is None:
        return new
    merged = dict(a)
    for domain, (server, seq) in b.items():
        if domain not in merged or seq > merged[domain][1]:
            merged[domain] = (server, seq)
    return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(merged.items()))


def _by_origin(gtids: str) -> dict[tuple[int, int], int] | None:
    """A MariaDB GTID list as {(domain, server): highest sequence}; None if it is not one."""
    parts = [p.strip() for p in gtids.split(",") if p.strip()]
    if not all(_MARIADB_GTID.match(p) for p in parts):
        return None
    result: dict[tuple[int, int], int] = {}
    for part in parts:
        domain, server, seq = (int(x) for x in part.split("-"))
        result[(domain, server)] = max(seq, result.get((domain, server), 0))
    return result


def covers(state: str, token: str) -> bool | None:
    """Whether a MariaDB binlog ``state`` (``@@gtid_binlog_state``: the last GTID of each
    domain and server id) holds the write ``token`` names. The server id counts: after a
    failover that lost a write ``0-1-55``, the new master writes ``0-3-55`` and on, whose
    sequence numbers pass it, but its state's ``0-1-`` entry stays below 55. None when
    either is not a MariaDB GTID list (not comparable here)."""
    have, want = _by_origin(state), _by_origin(token)
    if have is None or want is None or not want:
        return None
    return all(have.get(origin, -1) >= seq for origin, seq in want.items())


def merged_state(state: str, token: str) -> str:
    """``state`` with ``token``'s GTIDs added (per domain and server id, the higher)."""
    have, want = _by_origin(state) or {}, _by_origin(token) or {}
    for origin, seq in want.items():
        have[origin] = max(seq, have.get(origin, 0))
    return ",".join(f"{d}-{s}-{n}" for (d, s), n in sorted(have.items()))
