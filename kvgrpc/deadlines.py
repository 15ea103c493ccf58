"""The current call's deadline, visible to every layer without threading it through.

The transport sets it for the duration of each call (:func:`call_deadline`); the storage
layer bounds its waits for a pooled connection by it (:func:`time_left`), so a call that
cannot get a connection before its deadline fails with a clear status instead of timing
out at the client. Deadlines are on the ``time.monotonic()`` clock.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("kvgrpc_deadline", default=None)

#: Time kept back from a deadline so that the error reply still reaches the caller in time.
MARGIN = 0.05


@contextlib.contextmanager
def call_deadline(deadline: float | None) -> Iterator[None]:
    """Makes ``deadline`` the current call's deadline inside the ``with`` block."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current() -> float | None:
    """The current call's deadline, or None."""
    return _DEADLINE.get()


def time_left(limit: float) -> float:
    """``limit`` seconds, or less if the current call's deadline (less a margin) comes first."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return limit
    return max(0.0, min(limit, deadline - MARGIN - time.monotonic()))
