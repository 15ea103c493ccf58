"""Log hygiene: a condition that repeats is logged when it starts or changes, then at most
every so often, with a count of what was held back.

An unreachable database endpoint fails every monitor round (every 100 ms) and every
request routed to it; logging each failure wrote ~10 WARNING lines a second per endpoint.
:class:`RateLimitedLog` keeps one line per condition instead::

    _UNREACHABLE = RateLimitedLog(_LOGGER, interval=60.0)
    _UNREACHABLE.warning(("unreachable", where), "%s is unreachable: %s", where, exc)
    ...
    _UNREACHABLE.clear(("unreachable", where))   # it recovered: the next failure logs at once
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

#: Seconds between two lines of the same repeated condition, by default.
DEFAULT_INTERVAL = 60.0
#: Conditions remembered at once; the oldest is forgotten beyond this (it then logs again).
MAX_CONDITIONS = 1024


class RateLimitedLog:
    """Logs each condition (a hashable ``key``) when it first occurs or its message changes,
    then at most once every ``interval`` seconds while it repeats unchanged; a line after a
    quiet period says how many were held back. Thread-safe.

    ``interval`` 0 logs every occurrence. At most ``max_conditions`` keys are remembered
    (least recently seen forgotten first), so memory stays bounded whatever the keys.
    """

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL, *,
                 max_conditions: int = MAX_CONDITIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval < 0:
            raise ValueError("interval must be 0 or more seconds")
        self.logger = logger
        self.interval = interval
        self._max = max_conditions
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [message, time it was last logged, occurrences held back since]
        self._seen: OrderedDict[Hashable, list] = OrderedDict()

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Logs ``msg % args`` at ``level`` unless the same message was logged for ``key``
        less than ``interval`` seconds ago; returns whether it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        text = msg % args if args else msg
        now = self._clock()
        with self._lock:
            state = self._seen.get(key)
            if state is not None and state[0] == text and now - state[1] < self.interval:
                state[2] += 1
                self._seen.move_to_end(key)
                return False
            held = state[2] if state is not None and state[0] == text else 0
            since = now - state[1] if state is not None else 0.0
            self._seen[key] = [text, now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        if held:
            self.logger.log(level, "%s (%d more like it in the last %.0f s)", text, held, since)
        else:
            self.logger.log(level, "%s", text)
        return True

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def clear(self, key: Hashable) -> bool:
        """Forgets ``key`` (its condition ended), so that its next occurrence logs at once;
        returns whether it was being tracked."""
        with self._lock:
            return self._seen.pop(key, None) is not None

    def active(self, key: Hashable) -> bool:
        """Whether ``key`` has been logged and not cleared since."""
        with self._lock:
            return key in self._seen
