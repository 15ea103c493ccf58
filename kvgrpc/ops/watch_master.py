"""Automatic failover: ``kvgrpc-admin watch-master`` watches the master and runs
:func:`~kvgrpc.ops.mysql_admin.failover` by itself once the master has been lost.

The guard is orchestrator's: the master must be unreachable for ``after`` seconds *from
here* and, at that moment, *every reachable replica must have lost it too* (its
replication IO thread is not running, or reports a connection error: ``Slave_IO_Running``
not ``Yes`` or ``Last_IO_Errno`` set). A master that only this process cannot reach (a
partition of its own) is never failed over: the replicas still see it, so they would
still apply its writes. At least one replica must be reachable (failover needs one).

One failover per outage: after a promotion the watch moves to the new master and the
replicas it repointed (the old master, which may hold writes no replica received, is
left out: rebuild it as a replica). A failover that is refused (nothing was changed: see
:class:`~kvgrpc.ops.mysql_admin.Plan`) is tried again only after another ``after``
seconds. Every decision is logged, one line each, with what it saw; a decision that
repeats round after round is logged once, when it starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kvgrpc.errors import KvError
from kvgrpc.ops.mysql_admin import Node, failover, probe
from kvgrpc.store.mysql import MySQLEndpoint


@dataclass
class WatchResult:
    """What :func:`watch_master` did before it was stopped."""

    failovers: list[MySQLEndpoint] = field(default_factory=list)  # the masters it promoted
    decisions: int = 0


def _replica_view(node: Node, master: MySQLEndpoint) -> tuple[bool, str]:
    """(whether this replica has lost the master, what it reports)."""
    if not node.reachable:
        return False, f"{node.endpoint}: unreachable ({node.problem})"
    s = node.slave
    if not s:
        return False, f"{node.endpoint}: replicates from nobody"
    io, errno = s.get("Slave_IO_Running", ""), s.get("Last_IO_Errno", "0") or "0"
    if not node.replicates_from(master):
        return False, (f"{node.endpoint}: replicates from {s.get('Master_Host')}:"
                       f"{s.get('Master_Port')}, not from the master")
    lost = io != "Yes" or errno != "0"
    what = f"{node.endpoint}: IO thread {io or '?'}, Last_IO_Errno {errno}"
    if errno != "0":
        what += f" ({(s.get('Last_IO_Error') or '')[:120]})"
    return lost, what + (" - lost the master" if lost else " - still sees the master")


def watch_master(master: MySQLEndpoint, replicas: list[MySQLEndpoint], *, after: float,
                 interval: float = 1.0, wait: float = 30.0, dry_run: bool = False,
                 log: Callable[[str], None] = print,
                 stop: threading.Event | None = None) -> WatchResult:
    """Watches ``master`` every ``interval`` seconds until ``stop`` is set; fails over
    (see the module's docstring) once the master has been unreachable for ``after``
    seconds from here and from every reachable replica. ``wait`` is failover's bound on
    applying the relay log. With ``dry_run`` it logs ``would: failover`` instead."""
    if after <= 0 or interval <= 0:
        raise ValueError("--after and --interval must be positive (seconds)")
    stop = stop or threading.Event()
    result = WatchResult()
    down_since: float | None = None
    not_before = 0.0  # after a refused failover: not again before this
    last = ""

    def decide(key: str, line: str) -> None:
        nonlocal last
        if key != last:
            log(line)
            result.decisions += 1
        last = key

    log(f"watching the master {master} with {len(replicas)} replica(s); failover after "
        f"{after:g} s unreachable from here and from every reachable replica")
    while True:
        node = probe(master, timeout=max(1, round(interval)))
        reachable, problem = node.reachable, node.problem
        writable = node.reachable and not node.read_only
        node.close()
        now = time.monotonic()
        if reachable:
            if down_since is not None:
                decide("up", f"no failover: the master {master} is reachable again after "
                       f"{now - down_since:.1f} s ({'writable' if writable else 'read-only'})")
            else:
                decide("up", f"no failover: the master {master} is reachable "
                       f"({'writable' if writable else 'read-only'})")
            down_since = None
        else:
            down_since = down_since if down_since is not None else now
            down = now - down_since
            nodes = [probe(r) for r in replicas]
            try:
                views = [_replica_view(n, master) for n in nodes]
                seen = "; ".join(what for _, what in views)
                reachable_replicas = [n for n in nodes if n.reachable]
                all_lost = bool(reachable_replicas) and all(
                    lost for (lost, _), n in zip(views, nodes) if n.reachable)
            finally:
                for n in nodes:
                    n.close()
            evidence = f"the master {master} unreachable for {down:.1f} s ({problem}); replicas: {seen}"
            if not reachable_replicas:
                decide("no-replica", f"no failover: no replica is reachable to promote; {evidence}")
            elif not all_lost:
                decide("partition", "no failover: a replica still sees the master (a partition "
                       f"between it and this process?); {evidence}")
            elif down < after:
                decide("waiting", f"waiting: {after:g} s must pass before a failover; {evidence}")
            elif now < not_before:
                decide("refused-wait", f"waiting: the last failover was refused; again in "
                       f"{not_before - now:.1f} s; {evidence}")
            else:
                decide(f"failover-{now}", f"failover: {evidence}")
                if dry_run:
                    log(f"would: failover (promote the most advanced of {len(replicas)} replicas)")
                    not_before = now + after
                else:
                    try:
                        change = failover(master, replicas, wait=wait, log=lambda line: log(f"  {line}"))
                    except KvError as exc:
                        log(f"failover refused (nothing changed): {exc}; again in {after:g} s")
                        not_before = time.monotonic() + after
                    except Exception as exc:  # noqa: BLE001 - a database refused a step; Plan undid it
                        log(f"failover failed (undone): {getattr(exc, 'msg', None) or exc}; "
                            f"again in {after:g} s")
                        not_before = time.monotonic() + after
                    else:
                        log(f"failover done in {change.seconds:.2f} s: new master {change.new_master}; "
                            f"now watching it and {len(change.repointed)} replica(s); the old master "
                            f"{master} is left out (rebuild it as a replica)")
                        result.failovers.append(change.new_master)
                        master, replicas = change.new_master, list(change.repointed)
                        down_since, last = None, ""
        if stop.wait(interval):
            return result
