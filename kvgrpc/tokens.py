"""Write tokens: what a client keeps to read its own writes.

A token names a write's place in the master's replication stream. On MariaDB it is a
GTID position, ``domain-server-sequence`` (comma-separated, one per replication domain);
sequence numbers grow within a domain, so the later of two tokens is the one with the
larger sequence per domain, and :func:`latest` merges two tokens that way. Any other
form (a MySQL GTID set, which is cumulative) is kept as the most recent one seen.
"""

from __future__ import annotations

import re

_MARIADB_GTID = re.compile(r"^\d+-\d+-\d+$")


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
