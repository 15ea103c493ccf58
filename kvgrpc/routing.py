"""Read routing: which database endpoint answers a read.

The domain decides consistency; this module holds the measured state it decides on.
A monitor thread, every ``interval`` seconds, writes a heartbeat on the master and reads
back each replica's heartbeat age (its lag), so that:

- EVENTUAL reads go to a healthy replica (reachable, lag under ``max_lag``), rotating
  among them, else to the master;
- BOUNDED_STALENESS reads go to a healthy replica whose lag, plus the age of that
  measurement, is within the bound, else to the master;
- STRONG reads go to the master;
- a read carrying a write token goes to a replica only once it has applied that write
  (waiting briefly), else to the master.

A replica that fails a read is marked unreachable at once and skipped until the monitor
reaches it again, so a killed replica costs no failed read and comes back by itself.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from kvgrpc import deadlines
from kvgrpc.errors import KvError, Unavailable
from kvgrpc.logs import DEFAULT_INTERVAL, RateLimitedLog
from kvgrpc.records import EndpointStatus
from kvgrpc.store import Store

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


class Consistency(enum.Enum):
    """Which endpoints may answer a read (see ``ReadConsistency`` in the proto)."""

    EVENTUAL = "eventual"
    STRONG = "strong"
    BOUNDED_STALENESS = "bounded_staleness"


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How fresh a read must be. ``max_staleness`` (seconds) is for BOUNDED_STALENESS."""

    consistency: Consistency = Consistency.EVENTUAL
    max_staleness: float = 0.0
    min_token: str = ""


EVENTUAL = ReadOptions()


class _Endpoint:
    """The mutable state of one endpoint; guarded by the router's lock."""

    def __init__(self, store: Store, role: str) -> None:
        self.store = store
        self.role = role
        self.reachable = True  # optimistic until a check or a call says otherwise
        self.lag: float | None = 0.0 if role != "replica" else None
        self.measured_at = 0.0  # time.monotonic() of the last lag measurement
        self.semi_sync: bool | None = None
        self.problem = ""


class ReadRouter:
    """Chooses the endpoint of each read from measured replica state. Thread-safe.

    ``start()`` runs the monitor thread (only needed when there are replicas);
    ``check()`` runs one monitoring round, for tests and the first measurement.
    """

    def __init__(
        self,
        master: Store,
        replicas: Sequence[Store] = (),
        *,
        master_role: str = "master",
        max_lag: float = 5.0,
        interval: float = 0.1,
        token_wait: float = 0.5,
        watch_semi_sync: bool = False,
        repeat_log_interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.master = _Endpoint(master, master_role)
        self.replicas = [_Endpoint(store, "replica") for store in replicas]
        self.max_lag = max_lag
        self.interval = interval
        self.token_wait = token_wait
        self._watch_semi_sync = watch_semi_sync
        self._lock = threading.Lock()
        self._rotation = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # An endpoint that stays down fails every round: logged on change, then every N s.
        self._log = RateLimitedLog(_LOGGER, repeat_log_interval)

    # -- monitoring --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None and (self.replicas or self._watch_semi_sync):
            self.check()
            self._thread = threading.Thread(target=self._run, name="kvgrpc-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> None:
        """One round: heartbeat on the master, then each replica's lag."""
        if self.replicas:
            self._probe(self.master, self.master.store.write_heartbeat)
        if self._watch_semi_sync:
            semi_sync = self._probe(self.master, self.master.store.semi_sync_active)
            with self._lock:
                self.master.semi_sync = semi_sync
        for replica in self.replicas:
            started = time.monotonic()
            lag = self._probe(replica, replica.store.replication_lag)
            with self._lock:
                if replica.reachable:
                    replica.lag, replica.measured_at = lag, started
                    if lag is None:
                        replica.problem = "no heartbeat replicated yet"
                    elif lag > self.max_lag:
                        replica.problem = f"lagging {lag * 1000:.0f} ms behind the master"
                    else:
                        replica.problem = ""

    def _probe(self, endpoint: _Endpoint, measure: Callable[[], T]) -> T | None:
        try:
            value = measure()
        except KvError as exc:
            self._mark_unreachable(endpoint, exc)
            return None
        with self._lock:
            if self._log.clear(id(endpoint)):
                _LOGGER.info("%s is reachable again", endpoint.store.description)
            endpoint.reachable, endpoint.problem = True, ""
        return value

    def _mark_unreachable(self, endpoint: _Endpoint, exc: KvError) -> None:
        with self._lock:
            self._log.warning(id(endpoint), "%s: %s", endpoint.store.description, exc)
            endpoint.reachable, endpoint.problem = False, str(exc)
            if endpoint.role == "replica":
                endpoint.lag = None

    def _healthy(self, replica: _Endpoint) -> bool:
        """Serving eventual reads: reachable and not lagging — or, while the master is
        unreachable (no heartbeats, so every lag grows), merely reachable: then a replica
        is the best copy there is."""
        if not replica.reachable or replica.lag is None:
            return False
        return replica.lag <= self.max_lag or not self.master.reachable

    @property
    def semi_sync_off(self) -> bool:
        """True when the monitor last saw semi-synchronous replication inactive."""
        with self._lock:
            return self.master.semi_sync is False

    # -- routing -----------------------------------------------------------------------

    def _candidates(self, options: ReadOptions) -> list[_Endpoint]:
        """The replicas allowed to answer, in this read's rotation order."""
        if options.consistency is Consistency.STRONG or not self.replicas:
            return []
        now = time.monotonic()
        with self._lock:
            allowed = [r for r in self.replicas if self._healthy(r)]
            if options.consistency is Consistency.BOUNDED_STALENESS:
                # The data's staleness is at most the lag measured, plus the time since.
                allowed = [r for r in allowed
                           if r.lag + (now - r.measured_at) <= options.max_staleness]
        if len(allowed) > 1:
            shift = next(self._rotation) % len(allowed)
            allowed = allowed[shift:] + allowed[:shift]
        return allowed

    def read(self, operation: Callable[[Store], T], options: ReadOptions = EVENTUAL) -> T:
        """Runs ``operation`` on the endpoint the options allow, falling back to the master."""
        for replica in self._candidates(options):
            try:
                if options.min_token and not replica.store.has_applied(
                    options.min_token, self._wait_budget(deadlines.current())
                ):
                    break  # not there yet: the master has it
                return operation(replica.store)
            except Unavailable as exc:
                self._mark_unreachable(replica, exc)
        try:
            return operation(self.master.store)
        except Unavailable as exc:
            self._mark_unreachable(self.master, exc)
            raise

    def _wait_budget(self, deadline: float | None) -> float:
        """How long a replica may wait for a token: short, and leaving time for the master."""
        if deadline is None:
            return self.token_wait
        return max(0.0, min(self.token_wait, (deadline - time.monotonic()) / 2))

    def write(self, operation: Callable[[Store], T]) -> T:
        """Runs a write on the master, recording whether it was reachable."""
        try:
            result = operation(self.master.store)
        except Unavailable as exc:
            self._mark_unreachable(self.master, exc)
            raise
        with self._lock:
            self.master.reachable = True
        return result

    # -- status ------------------------------------------------------------------------

    def status(self) -> list[EndpointStatus]:
        """Every endpoint, the master first."""
        result = []
        with self._lock:
            endpoints = [self.master, *self.replicas]
            snapshot = [(e, e.reachable, e.lag, e.semi_sync, e.problem) for e in endpoints]
        for endpoint, reachable, lag, semi_sync, problem in snapshot:
            usage = endpoint.store.pool_usage()
            with self._lock:
                healthy = self._healthy(endpoint) if endpoint.role == "replica" else reachable
            result.append(EndpointStatus(
                name=endpoint.store.description, role=endpoint.role, reachable=reachable,
                healthy=healthy, lag_ms=None if lag is None else round(lag * 1000),
                pool_in_use=usage.in_use, pool_size=usage.size,
                semi_sync_active=bool(semi_sync), problem=problem,
            ))
        return result
