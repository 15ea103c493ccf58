"""The plain types every layer shares, one per idea, and the checks of keys and values.

- :class:`Record`: a record (key, value, version), as stores return it, the service
  serves it and the clients give it.
- :class:`Commit`: where a committed write sits (its token and revision).
- :class:`WriteResult`: what one write (Put, compare-and-set, Delete) did.
- :class:`LoadProgress`: how far a named load has got.
- :class:`Event`: one change, as the stores' change feeds make it, the change hub fans it
  out and the clients' watches deliver it.

Used by the stores, the service, the transport, the clients and the CLI; imports no gRPC
or database code.

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
    """A stored record: its key, its value, and its version (1 on creation, +1 per Put).

    Stores keep the key as its UTF-8 bytes and decode it when they read a record (keys
    are checked to be UTF-8 on the way in)."""

    key: str
    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Where a committed write sits.

    ``token``: its place in the replication stream (a GTID on MariaDB/MySQL): a replica
    that has applied it holds the write; ``""``: nothing to wait for. ``revision``: its
    place in the change feed (``Store.changes``), growing with every write to the
    database; 0 when the write changed nothing (or the store cannot tell).
    """

    token: str = ""
    revision: int = 0


#: The commit of a write that changed nothing.
NO_COMMIT = Commit()


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write did: a Put, a compare-and-set, a Delete, or one write of a group.

    A put: ``done`` and the new ``version``; a compare-and-set whose expected version did
    not match: not done, and the key's current version (0: absent). A delete: ``done``
    when the key existed, ``version`` 0. ``commit`` is where the write's transaction sits;
    :data:`NO_COMMIT` when the write changed nothing.
    """

    done: bool
    version: int
    commit: Commit = NO_COMMIT


@dataclass(slots=True)
class Event:
    """One change: a put (the record as written) or a delete (the key, an empty value and
    the version the record had), and the ``revision`` of the write.

    Not frozen: a change feed makes one per row written, and a frozen dataclass is slower
    to build. Treat it as read-only: the change hub shares one with every watcher.
    """

    key: str
    value: bytes
    version: int
    revision: int
    deleted: bool = False

    @property
    def type(self) -> str:
        """``"delete"`` or ``"put"`` (the name the clients' watches have always used)."""
        return "delete" if self.deleted else "put"


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
    ``committed`` records are committed; ``commit`` is that of its last committed batch
    (or of the one before, see ``Store.load_progress``); ``updated_unix_ms`` when that was
    recorded."""

    load_id: str
    committed: int
    commit: Commit = NO_COMMIT
    updated_unix_ms: int = 0

    @property
    def revision(self) -> int:
        """The revision of the last committed batch (``commit.revision``)."""
        return self.commit.revision

    @property
    def token(self) -> str:
        """The write token of the last committed batch (``commit.token``)."""
        return self.commit.token


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
