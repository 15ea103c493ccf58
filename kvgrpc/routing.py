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

With ``follow_topology`` the endpoints are one candidate set, and the monitor also asks
every node its role (:meth:`~kvgrpc.store.mysql.MySQLStore.node_role`) each round: the
master is the one node that is writable (``read_only`` off) and replicates from nobody;
the others serve reads (a node that is read-only and replicates from nobody, such as a
restarted old master, serves nothing). After a switchover or a failover, writes go to the
new master from the next round on (``interval``). Writes are refused (Unavailable) while
no node, or more than one, qualifies, and after a write to the master failed with
Unavailable until a round confirms it again: the router never writes to a node it has not
just seen writable, and a demoted node refuses writes itself (``read_only``). A STRONG
read checks, after reading, that its node is still writable: a master is fenced before
its successor is opened, so that read did not miss a write acknowledged elsewhere.
:meth:`ReadRouter.feed_store` is the change feed of whichever node is the master.
"""

from __future__ import annotations

import enum
import itertools
import logging
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from kvgrpc import deadlines
from kvgrpc.errors import FailedPrecondition, KvError, Unavailable
from kvgrpc.logs import DEFAULT_INTERVAL, RateLimitedLog
from kvgrpc.records import EndpointStatus
from kvgrpc.store import Store
from kvgrpc.store.base import ALL_KEYS, ChangeBatch, KeyFilter
from kvgrpc.tokens import covers, merged_state, token_kind

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
        self.orphan = False  # follow_topology: a node other than the master replicating from nobody


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
        follow_topology: bool = False,
    ) -> None:
        self.master = _Endpoint(master, master_role)
        self.replicas = [_Endpoint(store, "replica") for store in replicas]
        self.follow = follow_topology
        self._nodes = [self.master, *self.replicas]  # follow_topology: the candidate set
        # follow_topology: whether self.master is confirmed (else why not).
        self._master_ok = not follow_topology
        self._no_master = "no node has been seen writable yet" if follow_topology else ""
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
        # MariaDB write tokens the master was seen to have, merged per domain and server id
        # (see _check_written; "" when none, or on MySQL, whose tokens are not merged).
        self._written = ""

    # -- monitoring --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None and (self.replicas or self._watch_semi_sync or self.follow):
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
        """One round: (following the topology: each node's role, and so the master), a
        heartbeat on the master, then each replica's lag."""
        if self.follow:
            self._find_master()
            if not self._master_ok:
                for replica in self.replicas:  # still measured: reads go on
                    self._measure(replica)
                return
        if self.replicas:
            self._probe(self.master, self.master.store.write_heartbeat)
        if self._watch_semi_sync:
            semi_sync = self._probe(self.master, self.master.store.semi_sync_active)
            with self._lock:
                self.master.semi_sync = semi_sync
        for replica in self.replicas:
            self._measure(replica)

    def _measure(self, replica: _Endpoint) -> None:
        if replica.orphan:
            return
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

    def _find_master(self) -> None:
        """follow_topology: asks every node its role; the one writable node that replicates
        from nobody becomes the master (none, or several: no master, writes refused)."""
        # follow_topology runs on MySQL stores only (node_role, writable): checked at wiring.
        roles = {id(node): self._probe(node, node.store.node_role)  # type: ignore[attr-defined]
                 for node in self._nodes}
        masters = [n for n in self._nodes if roles[id(n)] is not None and roles[id(n)] == (True, False)]
        with self._lock:
            if len(masters) == 1:
                new, problem = masters[0], ""
            elif masters:
                new, problem = None, ("more than one node is writable and replicates from nobody ("
                                      + ", ".join(n.store.description for n in masters)
                                      + "): writes are refused until all but one are fenced")
            else:
                new, problem = None, "no reachable node is writable and replicating from nobody"
            if new is not None and new is not self.master:
                _LOGGER.warning("the master is now %s (was %s)", new.store.description,
                                self.master.store.description)
                self._written = ""  # the new master may lack some of the old one's writes
            if problem and problem != self._no_master:
                _LOGGER.error("no master to write to: %s", problem)
            elif not problem and self._no_master:
                _LOGGER.info("writing to %s", (new or self.master).store.description)
            if new is not None:
                self.master = new
            for node in self._nodes:
                role = roles[id(node)]
                if node is self.master:  # the new one; or, with none, the last one (status shows why)
                    node.role, node.orphan, node.lag = "master", False, 0.0
                    continue
                if node.role != "replica":
                    node.role, node.lag, node.measured_at = "replica", None, 0.0
                # Replicating from nobody, it holds no copy kept up to date: read-only (a
                # demoted master), or writable (a second master: split brain, whose data
                # may be far behind or differ) alike, it is not read from.
                node.orphan = False
                if role is not None and not role[1]:
                    node.orphan, node.lag = True, None
                    node.problem = (f"{'writable' if role[0] else 'read-only'} and replicating "
                                    "from nobody: not read from")
            self.replicas = [n for n in self._nodes if n is not self.master]
            self._master_ok, self._no_master = new is not None, problem

    def _writer(self, purpose: str = "write to") -> _Endpoint:
        """The master to write to, or to ``purpose`` (following the topology: only a
        confirmed one)."""
        with self._lock:
            if self._master_ok:
                return self.master
            problem = self._no_master
        raise Unavailable(f"no master to {purpose}: {problem}; retry shortly")

    def master_store(self) -> Store:
        """The store of the master now; Unavailable when following the topology and no
        node is confirmed as the master."""
        return self._writer().store

    def feed_store(self) -> Store:
        """The store whose change feed Watch reads: the master's; following the topology,
        one that always reads the current master's (:class:`MasterFeed`)."""
        return MasterFeed(self) if self.follow else self.master.store  # type: ignore[return-value]

    def _lost_master(self, endpoint: _Endpoint, exc: KvError) -> None:
        """follow_topology: a call on the master failed; no writes until a round confirms it."""
        if not self.follow:
            return
        with self._lock:
            if endpoint is self.master and self._master_ok:
                self._master_ok = False
                self._no_master = f"{endpoint.store.description} failed: {exc}"

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
        if not replica.reachable or replica.lag is None or replica.orphan:
            return False
        return replica.lag <= self.max_lag or not self.master.reachable or not self._master_ok

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
                           if r.lag is not None and r.lag + (now - r.measured_at) <= options.max_staleness]
        if len(allowed) > 1:
            shift = next(self._rotation) % len(allowed)
            allowed = allowed[shift:] + allowed[:shift]
        return allowed

    def read(self, operation: Callable[[Store], T], options: ReadOptions = EVENTUAL) -> T:
        """Runs ``operation`` on the endpoint the options allow, falling back to the master."""
        if options.min_token:
            self._check_written(options.min_token)
        for replica in self._candidates(options):
            try:
                if options.min_token and not replica.store.has_applied(
                    options.min_token, self._wait_budget(deadlines.current())
                ):
                    break  # not there yet: the master has it
                return operation(replica.store)
            except Unavailable as exc:
                self._mark_unreachable(replica, exc)
        master = self._writer("read from")
        try:
            result = operation(master.store)
            if self.follow and options.consistency is Consistency.STRONG and not master.store.writable():  # type: ignore[attr-defined]
                # Fenced (a switchover under way): a write may already be acknowledged on
                # the next master, which this read did not see.
                raise Unavailable(f"{master.store.description} turned read-only: it is no longer "
                                  "the master; retry")
            return result
        except Unavailable as exc:
            self._mark_unreachable(master, exc)
            self._lost_master(master, exc)
            raise

    def _check_written(self, token: str) -> None:
        """Refuses (FailedPrecondition) a write token whose write the master does not have:
        no replica would ever apply it, so each read carrying it held a replica connection
        for the whole wait, then was answered by the master as if it reflected that write.
        One round trip to the master, unless an earlier check already covers the token;
        if the master cannot be asked, the replicas' wait decides as before."""
        with self._lock:
            known = self._written
        if known and covers(known, token):
            return
        try:
            master = self._writer()
            written = master.store.has_written(token)
        except Unavailable:
            return
        if not written:
            shown = token if len(token) <= 80 else token[:77] + "..."
            raise FailedPrecondition(
                f"read_options.min_write_token {shown!r} names a write that the master "
                f"({master.store.description}) does not have: a token from another database, "
                "or of a write lost when the master was replaced; read without it")
        with self._lock:
            self._written = merged_state(self._written, token) if token_kind(token) == "mariadb" else ""

    def _wait_budget(self, deadline: float | None) -> float:
        """How long a replica may wait for a token: short, and leaving time for the master."""
        if deadline is None:
            return self.token_wait
        return max(0.0, min(self.token_wait, (deadline - time.monotonic()) / 2))

    def write(self, operation: Callable[[Store], T]) -> T:
        """Runs a write on the master, recording whether it was reachable (following the
        topology: only on a confirmed master; Unavailable while there is none)."""
        master = self._writer()
        try:
            result = operation(master.store)
        except Unavailable as exc:
            self._mark_unreachable(master, exc)
            self._lost_master(master, exc)
            raise
        with self._lock:
            master.reachable = True
        return result

    # -- status ------------------------------------------------------------------------

    def status(self) -> list[EndpointStatus]:
        """Every endpoint, the master first."""
        result = []
        with self._lock:
            endpoints = [self.master, *self.replicas]
            snapshot = [(e, e.reachable, e.lag, e.semi_sync,
                         (self._no_master if e is self.master and self._no_master else e.problem))
                        for e in endpoints]
        for endpoint, reachable, lag, semi_sync, problem in snapshot:
            if endpoint.role != "master":
                semi_sync = False  # a master's property (a demoted one's last reading is void)
            elif semi_sync is None and reachable:  # not watched (no --require-semi-sync): ask
                with contextlib.suppress(KvError):
                    semi_sync = endpoint.store.semi_sync_active()
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


class MasterFeed:
    """The change feed of whichever node a topology-following router takes for the master
    now (see :meth:`kvgrpc.store.base.Store.changes`). When the master changes, the feed
    on the old one breaks (Unavailable); the change hub reopens it here from the revision
    it reached, and so on the new master: with ``gtid_strict_mode`` the new master's
    binlog holds the same GTIDs, so revisions continue with no gap and no repeat."""

    def __init__(self, router: ReadRouter) -> None:
        self._router = router

    @property
    def description(self) -> str:
        return "the master's change feed"

    def head_revision(self) -> int:
        return self._router.master_store().head_revision()

    def changes(self, after: int, stopped: Callable[[], bool],
                keys: KeyFilter = ALL_KEYS) -> Iterator[ChangeBatch]:
        return self._router.master_store().changes(after, stopped, keys)
