"""The domain layer: validation, read routing and StreamPut's commit policy.

Plain Python types in and out; raises only :mod:`kvgrpc.errors` exceptions; imports no
gRPC code. The transport (:mod:`kvgrpc.server`) converts messages and calls this.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvgrpc.errors import InvalidArgument, KvError, NotFound, Unavailable
from kvgrpc.store import Store
from kvgrpc.records import Limits, Record, check_key, check_value, describe_key

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """When StreamPut commits: after this many records or bytes, and at the end."""

    max_records: int = 2000
    max_bytes: int = 4 << 20


class KeyValueService:
    """Stores records on the master (``writer``) and serves reads from ``readers``.

    With no readers, the master serves reads. With several, reads rotate among them; a
    read whose replica is unreachable is answered by the master instead, so losing a
    replica costs no failed read. Thread-safe: the stores are, and the only shared
    state here is the rotation counter.
    """

    def __init__(
        self,
        writer: Store,
        readers: Sequence[Store] = (),
        *,
        limits: Limits = Limits(),
        commit_policy: CommitPolicy = CommitPolicy(),
    ) -> None:
        self.writer = writer
        self.readers = list(readers)
        self.limits = limits
        self.commit_policy = commit_policy
        self._next_reader = itertools.cycle(self.readers) if self.readers else None
        self._rotation_lock = threading.Lock()

    # -- writes --------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> int:
        """Stores one record durably on the master; returns the key's new version."""
        where = f"key {describe_key(key)}"
        k = check_key(key, where)
        v = check_value(value, where, self.limits)
        return self.writer.put(k, v)

    def delete(self, key: str) -> bool:
        """Removes a key on the master; returns whether it existed."""
        return self.writer.delete(check_key(key, f"key {describe_key(key)}"))

    def stream_put(self, batches: Iterable[Sequence[tuple[str, bytes]]]) -> int:
        """Commits a stream of records in order, in batches; returns how many were committed.

        Records are validated as they arrive. On a bad record, the valid records before
        it are committed and ``InvalidArgument`` names the bad record's index in the
        stream; on any failure the raised error's ``committed`` is the number of leading
        records committed, and no record after them is.
        """
        policy = self.commit_policy
        committed = 0
        pending: list[tuple[bytes, bytes]] = []
        pending_bytes = 0

        def commit() -> None:
            nonlocal committed, pending, pending_bytes
            if pending:
                self.writer.put_many(pending)
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
        return committed

    # -- reads ---------------------------------------------------------------------

    def get(self, key: str) -> Record:
        """Returns the record under ``key``; raises NotFound if there is none."""
        k = check_key(key, f"key {describe_key(key)}")
        stored = self._read(lambda store: store.get(k))
        if stored is None:
            raise NotFound(f"key {describe_key(key)} not found")
        return Record(key, stored.value, stored.version)

    def batch_get(self, keys: Sequence[str]) -> tuple[list[Record], list[str]]:
        """Returns the records found (in request order, once each) and the missing keys."""
        if not keys:
            raise InvalidArgument("keys is empty; ask for 1 to "
                                  f"{self.limits.max_batch_get_keys} keys")
        if len(keys) > self.limits.max_batch_get_keys:
            raise InvalidArgument(
                f"{len(keys)} keys requested; the limit is {self.limits.max_batch_get_keys}"
            )
        unique = list(dict.fromkeys(keys))
        encoded = [check_key(key, f"keys[{i}]") for i, key in enumerate(unique)]
        found = self._read(lambda store: store.get_many(encoded))
        records: list[Record] = []
        missing: list[str] = []
        for key, k in zip(unique, encoded):
            stored = found.get(k)
            if stored is None:
                missing.append(key)
            else:
                records.append(Record(key, stored.value, stored.version))
        return records, missing

    def _read(self, operation):
        """Runs a read on the next replica, or on the master if there is none or it fails."""
        if self._next_reader is None:
            return operation(self.writer)
        with self._rotation_lock:
            reader = next(self._next_reader)
        try:
            return operation(reader)
        except Unavailable as exc:
            _LOGGER.warning("read from %s failed (%s); reading from the master", reader.description, exc)
            return operation(self.writer)

    def close(self) -> None:
        """Closes every store."""
        for store in [self.writer, *self.readers]:
            store.close()
