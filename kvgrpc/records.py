"""Records: the :class:`Record` type and the checks of keys and values.

Shared by the service, the client and its CLI; imports no gRPC or database code.

A key is UTF-8 text of 1 to 3072 bytes (the InnoDB primary-key limit); a value is
0 bytes up to a configurable limit. Each check raises :class:`InvalidArgument` whose
message names the record (``where``) and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvgrpc.errors import InvalidArgument

MAX_KEY_BYTES = 3072
DEFAULT_MAX_VALUE_BYTES = 1 << 20  # 1 MiB


@dataclass(frozen=True, slots=True)
class Record:
    """A stored record: its key, its value, and its version (1 on creation, +1 per Put)."""

    key: str
    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One database endpoint of a server, as the server last measured it."""

    name: str  # where it is: a URL without password, or a file
    role: str  # "master", "replica" or "embedded"
    reachable: bool
    healthy: bool  # serving reads now
    lag_ms: int | None  # replication lag; None when unknown, 0 for the master
    pool_in_use: int
    pool_size: int
    semi_sync_active: bool  # master: a replica confirms each commit
    problem: str  # the last problem seen, in words; "" when healthy


@dataclass(frozen=True, slots=True)
class Limits:
    """The sizes and counts a server accepts and sends (``ServerLimits`` in the proto).

    The server enforces them; clients read them with ``GetStatus`` to size their
    requests (the CLI's CSV loader takes its field limit from ``max_value_bytes``).
    """

    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_batch_get_keys: int = 1000
    max_key_bytes: int = MAX_KEY_BYTES
    max_receive_message_bytes: int = 4 << 20
    max_send_message_bytes: int = 16 << 20
    #: A BatchGet response holds about this many bytes of keys and values at most; the
    #: keys it had no room for come back as ``unprocessed_keys``.
    max_batch_get_bytes: int = 4 << 20
    max_scan_page_size: int = 1000
    #: Scan's ``page_bytes`` is clamped to this.
    max_scan_page_bytes: int = 4 << 20


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """How far a named load (a StreamPut with a ``load_id``) has got: its first
    ``committed`` records are committed; ``revision`` and ``token`` are those of its last
    committed batch; ``updated_unix_ms`` when that was recorded."""

    load_id: str
    committed: int
    revision: int = 0
    token: str = ""
    updated_unix_ms: int = 0


def describe_key(key: str, width: int = 40) -> str:
    """Returns ``key`` quoted and shortened for an error message."""
    text = key if len(key) <= width else key[: width - 1] + "…"
    return repr(text)


def check_key(key: str, where: str) -> bytes:
    """Returns ``key`` as the UTF-8 bytes that are stored; raises InvalidArgument if invalid."""
    if not key:
        raise InvalidArgument(f"{where}: key is empty; a key must be 1 to {MAX_KEY_BYTES} bytes")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{where}: key is not valid UTF-8 text") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidArgument(
            f"{where}: key is {len(encoded)} bytes; the limit is {MAX_KEY_BYTES} bytes"
        )
    return encoded


def check_value(value: bytes, where: str, limits: Limits) -> bytes:
    """Returns ``value``; raises InvalidArgument if it is over the value limit."""
    if len(value) > limits.max_value_bytes:
        raise InvalidArgument(
            f"{where}: value is {len(value)} bytes; the limit is {limits.max_value_bytes} bytes"
        )
    return value
