"""Log hygiene: a condition that repeats is logged when it starts or changes, then at
most every N seconds — not every monitor round (100 ms) while a replica is down."""

from __future__ import annotations

import logging
import time

from kvgrpc.logs import RateLimitedLog


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_on_change_then_every_interval(caplog):
    caplog.set_level(logging.INFO)
    clock = _Clock()
    log = RateLimitedLog(logging.getLogger("kvgrpc.test"), interval=10, clock=clock)
    assert log.warning("db", "%s is down", "replica")
    for _ in range(50):
        clock.now += 0.1
        assert not log.warning("db", "%s is down", "replica")  # repeats: held back
    assert log.warning("db", "%s is down: %s", "replica", "timeout")  # changed: logged at once
    clock.now += 10
    assert log.warning("db", "%s is down: %s", "replica", "timeout")
    clock.now += 0.5
    assert not log.warning("db", "%s is down: %s", "replica", "timeout")
    clock.now += 10
    assert log.warning("db", "%s is down: %s", "replica", "timeout")
    assert log.clear("db") and not log.clear("db")
    assert log.warning("db", "%s is down: %s", "replica", "timeout")  # after recovery: at once
    assert log.warning("other", "another condition")  # keys are independent
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "replica is down",
        "replica is down: timeout",
        "replica is down: timeout",
        "replica is down: timeout (1 more like it in the last 10 s)",
        "replica is down: timeout",
        "another condition",
    ]


def test_bounded_conditions():
    log = RateLimitedLog(logging.getLogger("kvgrpc.test"), interval=60, max_conditions=4)
    for i in range(100):
        log.warning(i, "condition %d", i)
    assert len(log._seen) == 4


def test_a_dead_replica_logs_a_few_lines_not_ten_a_second(own_sandbox, start_server, table_name, caplog):
    box = own_sandbox()
    server = start_server(master=box.master, replicas=(box.replica,), table=table_name)
    with server.client() as kv:
        kv.put("k", b"v")
        box.run("kill", "replica")
        caplog.clear()
        caplog.set_level(logging.INFO)
        started = time.monotonic()
        while time.monotonic() - started < 4:  # ~40 monitor rounds, and reads meanwhile
            assert kv.get("k") == b"v"  # answered by the master
            time.sleep(0.05)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    about_replica = [r.getMessage() for r in lines if str(box.replica.port) in r.getMessage()]
    # One line from the store (unreachable) and one from the router (taken out of service).
    assert 1 <= len(about_replica) <= 3, about_replica
    assert len(lines) <= 4, [r.getMessage() for r in lines]
