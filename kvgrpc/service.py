"""The domain layer: validation, read consistency and StreamPut's commit policy.

Plain Python types in and out; raises only :mod:`kvgrpc.errors` exceptions; imports no
gRPC code. The transport (:mod:`kvgrpc.server`) converts messages and calls this;
:mod:`kvgrpc.routing` holds the measured replica state that reads are routed on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvgrpc.errors import InvalidArgument, KvError, NotFound, Unavailable
from kvgrpc.records import Limits, Record, check_key, check_value, describe_key
from kvgrpc.routing import EVENTUAL, EndpointStatus, ReadOptions, ReadRouter
from kvgrpc.store import Store

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """When StreamPut commits: after this many records or bytes, and at the end."""

    max_records: int = 2000
    max_bytes: int = 4 << 20


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a write: the key's version (Put), and the write's token."""

    version: int
    token: str


@dataclass(frozen=True, slots=True)
class StreamResult:
    """The outcome of StreamPut: records committed, and the last batch's token."""

    committed: int
    token: str


class KeyValueService:
    """Stores records on the master and serves reads as each request's consistency asks.

    Writes go to the master. Reads are routed by a :class:`ReadRouter` (replicas when
    allowed and healthy, else the master). With ``require_semi_sync``, a write is refused
    with Unavailable while semi-synchronous replication is off (an acknowledged write must
    exist on a replica). Thread-safe.
    """

    def __init__(
        self,
        writer: Store,
        readers: Sequence[Store] = (),
        *,
        limits: Limits = Limits(),
        commit_policy: CommitPolicy = CommitPolicy(),
        router: ReadRouter | None = None,
        require_semi_sync: bool = False,
    ) -> None:
        self.writer = writer
        self.readers = list(readers)
        self.limits = limits
        self.commit_policy = commit_policy
        self.router = router or ReadRouter(writer, self.readers, watch_semi_sync=require_semi_sync)
        self.require_semi_sync = require_semi_sync

    def start(self) -> None:
        """Starts measuring replicas (the router's monitor thread)."""
        self.router.start()

    # -- writes --------------------------------------------------------------------

    def _write(self, operation):
        if self.require_semi_sync and self.router.semi_sync_off:
            raise Unavailable(
                "semi-synchronous replication is off (no replica confirms writes), so the "
                "server refuses writes until it is back"
            )
        return self.router.write(operation)

    def put(self, key: str, value: bytes) -> Written:
        """Stores one record durably on the master; returns its new version and token."""
        where = f"key {describe_key(key)}"
        k = check_key(key, where)
        v = check_value(value, where, self.limits)
        version, token = self._write(lambda store: store.put(k, v))
        return Written(version, token)

    def delete(self, key: str) -> tuple[bool, str]:
        """Removes a key on the master; returns whether it existed, and the write's token."""
        k = check_key(key, f"key {describe_key(key)}")
        return self._write(lambda store: store.delete(k))

    def stream_put(self, batches: Iterable[Sequence[tuple[str, bytes]]]) -> StreamResult:
        """Commits a stream of records in order, in batches.

        Records are validated as they arrive. On a bad record, the valid records before
        it are committed and ``InvalidArgument`` names the bad record's index in the
        stream; on any failure the raised error's ``committed`` is the number of leading
        records committed (acknowledged), and no record after them is.
        """
        policy = self.commit_policy
        committed = 0
        token = ""
        pending: list[tuple[bytes, bytes]] = []
        pending_bytes = 0

        def commit() -> None:
            nonlocal committed, token, pending, pending_bytes
            if pending:
                batch = pending
                token = self._write(lambda store: store.put_many(batch)) or token
                committed += len(pending)
                pending, pending_bytes = [], 0

        index = 0
        try:
            for batch in batches:
                for key, value in batch:
                    where = f"record {index}"
                    try:
                        record = (check_key(key, where), check_value(value, where, self.limits))
                    except InvalidArgument:
                        commit()  # the valid prefix stays committed
                        raise
                    pending.append(record)
                    pending_bytes += len(record[0]) + len(record[1])
                    index += 1
                    if len(pending) >= policy.max_records or pending_bytes >= policy.max_bytes:
                        commit()
            commit()
        except KvError as exc:
            exc.committed = committed
            raise
        return StreamResult(committed, token)

    # -- reads ---------------------------------------------------------------------

    def get(self, key: str, options: ReadOptions = EVENTUAL, deadline: float | None = None) -> Record:
        """Returns the record under ``key``; raises NotFound if there is none."""
        k = check_key(key, f"key {describe_key(key)}")
        self._check_read_options(options)
        stored = self.router.read(lambda store: store.get(k), options, deadline)
        if stored is None:
            raise NotFound(f"key {describe_key(key)} not found")
        return Record(key, stored.value, stored.version)

    def batch_get(self, keys: Sequence[str], options: ReadOptions = EVENTUAL,
                  deadline: float | None = None) -> tuple[list[Record], list[str]]:
        """Returns the records found (in request order, once each) and the missing keys."""
        if not keys:
            raise InvalidArgument(
                f"keys is empty; ask for 1 to {self.limits.max_batch_get_keys} keys"
            )
        if len(keys) > self.limits.max_batch_get_keys:
            raise InvalidArgument(
                f"{len(keys)} keys requested; the limit is {self.limits.max_batch_get_keys}"
            )
        self._check_read_options(options)
        unique = list(dict.fromkeys(keys))
        encoded = [check_key(key, f"keys[{i}]") for i, key in enumerate(unique)]
        found = self.router.read(lambda store: store.get_many(encoded), options, deadline)
        records: list[Record] = []
        missing: list[str] = []
        for key, k in zip(unique, encoded):
            stored = found.get(k)
            if stored is None:
                missing.append(key)
            else:
                records.append(Record(key, stored.value, stored.version))
        return records, missing

    @staticmethod
    def _check_read_options(options: ReadOptions) -> None:
        if options.max_staleness < 0:
            raise InvalidArgument("max_staleness_ms must not be negative")
        if len(options.min_token) > 4096:
            raise InvalidArgument("min_write_token is too long to be a write token")

    # -- operations ----------------------------------------------------------------

    def status(self) -> list[EndpointStatus]:
        """Every database endpoint's measured state, the master first."""
        return self.router.status()

    def close(self) -> None:
        """Stops the monitor and closes every store."""
        self.router.stop()
        for store in [self.writer, *self.readers]:
            store.close()
