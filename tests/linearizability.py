"""A linearizability checker for a history of operations on versioned registers with
compare-and-set, per key (the model of kvgrpc's Put / CAS Put / Get), in the style of
Knossos and Porcupine: the Wing & Gong search with Lowe's memoisation, run per key
(P-compositionality: a history is linearizable iff each key's sub-history is).

The state of a key is ``(value, version)``, version 0 meaning absent. Operations:

- ``put v``: state becomes ``(v, version + 1)``; returns the new version.
- ``cas v expected``: if version == expected, state becomes ``(v, expected + 1)`` and it
  returns that; otherwise it fails (FailedPrecondition), changing nothing.
- ``get``: returns ``(value, version)`` (``(None, 0)``: not found).

An operation whose outcome is unknown (timed out, UNAVAILABLE: it may have been applied)
has no end: it may take effect at any point after it began, or never.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from dataclasses import dataclass


@dataclass
class Op:
    key: str
    kind: str  # "put", "cas" or "get"
    start: float
    end: float = math.inf  # inf: the outcome is unknown
    value: str | None = None  # written (put, cas) or read (get; None: not found)
    expected: int | None = None  # cas
    version: int | None = None  # returned (put, cas, get)
    failed: bool = False  # cas: FailedPrecondition (no effect)

    @property
    def unknown(self) -> bool:
        return self.end == math.inf


def _step(op: Op, state: tuple[str | None, int]) -> list[tuple[str | None, int]]:
    """The states ``op`` may leave when applied to ``state`` ([] if it cannot happen there)."""
    value, version = state
    if op.kind == "get":
        return [state] if (op.value, op.version) == (value, version) else []
    if op.kind == "put":
        if op.unknown or op.version == version + 1:
            return [(op.value, version + 1)]
        return []
    # cas
    if op.failed:
        return [state] if version != op.expected else []
    if version == op.expected and (op.unknown or op.version == version + 1):
        return [(op.value, version + 1)]
    return [state] if op.unknown else []  # an unknown CAS that found another version: no effect


def check_key(ops: list[Op]) -> bool:
    """Whether one key's history is linearizable (from the absent state)."""
    ops = sorted(ops, key=lambda o: o.start)
    known = sum(1 << i for i, o in enumerate(ops) if not o.unknown)
    seen: set[tuple[int, tuple]] = set()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * len(ops) + 100))

    def search(done: int, state: tuple) -> bool:
        if done & known == known:
            return True  # every completed operation placed; unknown ones may never happen
        if (done, state) in seen:
            return False
        seen.add((done, state))
        remaining = [i for i in range(len(ops)) if not done >> i & 1]
        horizon = min(ops[i].end for i in remaining)
        for i in remaining:
            if ops[i].start > horizon:
                break  # began after some remaining operation ended: cannot be next
            for after in _step(ops[i], state):
                if search(done | 1 << i, after):
                    return True
        return False

    return search(0, (None, 0))


def check(history: list[Op]) -> list[str]:
    """The keys whose histories are not linearizable (empty: the history is)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind == "get" and op.unknown:
            continue  # a read with no answer tells nothing
        by_key[op.key].append(op)
    return sorted(key for key, ops in by_key.items() if not check_key(ops))
