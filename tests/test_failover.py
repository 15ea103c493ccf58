"""kvgrpc-admin switchover and failover against real master + replicas (the sandbox):
no acknowledged write lost, refusals with reasons, undo on failure, idempotence."""

from __future__ import annotations

import dataclasses
import random
import re
import subprocess
import sys
import threading
import time

import pytest

from kvgrpc.errors import FailedPrecondition, KvError, NotFound, Unavailable
from kvgrpc.ops.sandbox import role_name

from .linearizability import Op, check
from .tcp_proxy import TcpProxy
from .test_consistency import wait_until


def admin_args(box, *args: str) -> list[str]:
    return [sys.executable, "-m", "kvgrpc.ops.admin", *args, "--master", box.env["KVGRPC_ADMIN_MASTER_URL"],
            *[a for url in box.env["KVGRPC_ADMIN_REPLICA_URL"].split(",") for a in ("--replica", url)]]


def admin(box, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(admin_args(box, *args), capture_output=True, text=True, env=box.process_env(),
                          timeout=120)


def new_master_role(box, output: str) -> str:
    port = int(re.search(r"^new master: mysql://[^@]+@127\.0\.0\.1:(\d+)/", output, re.M).group(1))
    return role_name(port - box.box.port)


def topology(box) -> dict[str, tuple[int, str]]:
    """role -> (read_only, the port it replicates from or ''), of the nodes that run."""
    out = {}
    for role in box.box.roles:
        if not box.box.running_pid(role):
            continue
        (read_only,) = box.query("SELECT @@read_only", role=role, root=True)[0]
        slave = box.box.slave_status(role)
        out[role] = (read_only, slave.get("Master_Port", ""))
    return out


KEYS = [f"reg{i}" for i in range(8)]


class Workload:
    """8 writers (Put and compare-and-set) and 2 STRONG readers on 8 shared keys, spread
    over the given clients (servers); records every operation for the history checker.
    A thread stops at its first operation with an unknown outcome (UNAVAILABLE, deadline):
    the master is gone."""

    def __init__(self, clients, writers: int = 8, readers: int = 2, prefix: str = "") -> None:
        self.prefix = prefix  # of every value written: histories of two phases stay distinct
        self.history: list[Op] = []
        self.errors: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(clients[t % len(clients)], t), daemon=True)
                         for t in range(writers)]
        self._threads += [threading.Thread(target=self._read, args=(clients[t % len(clients)], t), daemon=True)
                          for t in range(readers)]
        for thread in self._threads:
            thread.start()

    @property
    def acknowledged(self) -> int:
        return sum(1 for op in self.history if op.kind != "get" and not op.unknown and not op.failed)

    @property
    def running(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def _record(self, op: Op) -> None:
        with self._lock:
            self.history.append(op)

    def _write(self, kv, t: int) -> None:
        rng = random.Random(t)
        versions: dict[str, int] = {}
        i = 0
        while not self._stop.is_set():
            key, value = rng.choice(KEYS), f"{self.prefix}{t}-{i}"
            i += 1
            cas = rng.random() < 0.5
            op = Op(key, "cas" if cas else "put", time.monotonic(), value=value,
                    expected=versions.get(key, 0) if cas else None)
            try:
                op.version = kv.put(key, value, expected_version=op.expected) if cas else kv.put(key, value)
                op.end = time.monotonic()
                versions[key] = op.version
            except FailedPrecondition as exc:
                op.end, op.failed = time.monotonic(), True
                versions[key] = exc.current_version or 0
            except KvError as exc:
                self.errors.add(type(exc).__name__)
                self._record(op)  # unknown outcome: end stays inf
                return
            self._record(op)

    def _read(self, kv, t: int) -> None:
        rng = random.Random(100 + t)
        while not self._stop.is_set():
            op = Op(rng.choice(KEYS), "get", time.monotonic())
            try:
                record = kv.get_record(op.key, consistency="strong")
                op.value, op.version = record.value.decode(), record.version
            except NotFound:
                op.version = 0
            except KvError as exc:
                self.errors.add(type(exc).__name__)
                return
            op.end = time.monotonic()
            self._record(op)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_history_checker_finds_lost_writes_and_stale_reads():
    ok = [Op("k", "put", 0, 1, "a", version=1), Op("k", "cas", 0.5, 3, "b", expected=1, version=2),
          Op("k", "get", 2, 4, "b", version=2), Op("k", "cas", 5, 6, "c", expected=1, failed=True),
          Op("k", "put", 7, value="d")]  # unknown outcome
    assert check(ok) == []
    assert check([*ok, Op("k", "get", 8, 9, "d", version=3)]) == []  # the unknown put happened
    assert check([*ok, Op("k", "get", 8, 9, "b", version=2)]) == []  # ... or not
    assert check([*ok, Op("k", "get", 8, 9, "a", version=1)]) == ["k"]  # a lost write
    assert check([Op("k", "put", 0, 1, "a", version=1), Op("k", "get", 2, 3, None, version=0)]) == ["k"]


class Watcher:
    """A watch of every ``reg`` key through one server, without the client's resume: it
    must cross the promotion on the server's change hub alone. Runs until it sees the key
    ``regend``."""

    def __init__(self, client) -> None:
        self.events: list = []
        self.error: BaseException | None = None
        self._watch = client.watch(prefix="reg", resume=False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._watch:
                self.events.append(event)
                if event.key == "regend":
                    return
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            self.error = exc

    def seen(self, key: str) -> bool:
        return any(e.key == key for e in self.events)

    def join(self) -> None:
        self._thread.join(timeout=20)
        self._watch.cancel()


def _following_servers(box, start_server, table_name, count: int = 2, semi_sync: bool = True):
    """Servers given every node, following the topology (--follow-topology)."""
    return [start_server(master=box.master, replicas=box.replicas, table=table_name, require_semi_sync=semi_sync,
                         follow_topology=True, watch_feed_retry=60.0) for _ in range(count)]


def _wait_writes_back(clients, timeout: float) -> float:
    """Waits until a Put succeeds through every client; returns when (monotonic)."""
    for i, kv in enumerate(clients):
        wait_until(lambda: _put_ok(kv, f"after{i}"), timeout=timeout,  # noqa: B023 - waited for here
                   what=f"writes through server {i}")
    return time.monotonic()


@pytest.mark.parametrize("mode", ["command", "automatic"])
def test_failover_keeps_every_acknowledged_write(own_sandbox, start_server, table_name, mode, tmp_path):
    """Kill -9 the master under writers and STRONG readers through two servers that follow
    the topology; fail over (the command, or watch-master by itself): writes succeed again
    through the same servers; the restarted old master receives no write; a watcher
    crosses the promotion with no gap and no repeat; the whole history, ended by the new
    master's content, is linearizable per key (every acknowledged write is there)."""
    box = own_sandbox(replicas=2)
    servers = _following_servers(box, start_server, table_name)
    clients = [server.client(timeout=5) for server in servers]
    watch_client = servers[0].client(timeout=5)
    watcher = Watcher(watch_client)
    wait_until(lambda: _put_ok(clients[1], "regstart") and watcher.seen("regstart"), what="the watch is open")
    watcher_log = None
    if mode == "automatic":
        watcher_log = (tmp_path / "watch-master.log").open("w+")
        auto = subprocess.Popen(admin_args(box, "watch-master", "--after", "2", "--interval", "0.5"),
                                stdout=watcher_log, stderr=subprocess.STDOUT, text=True, env=box.process_env())
    try:
        workload = Workload(clients)
        wait_until(lambda: workload.acknowledged > 300, what="writes acknowledged")
        if mode == "command":
            refused = admin(box, "failover")  # the master is up: not a failover
            assert refused.returncode == 1 and "is reachable (writable)" in refused.stderr, refused.stderr
        box.run("kill", "master")
        killed = time.monotonic()
        wait_until(lambda: workload.running == 0, timeout=30, what="every thread saw the master gone")
        workload.stop()
        assert workload.errors <= {"Unavailable", "DeadlineExceeded"}, workload.errors
        if mode == "command":
            dry = admin(box, "failover", "--dry-run")
            assert dry.returncode == 0 and "would: open" in dry.stdout, dry.stdout + dry.stderr
            done = admin(box, "failover")
            assert done.returncode == 0, done.stdout + done.stderr
            role = new_master_role(box, done.stdout)
        # Writes succeed again through the same two servers.
        back = _wait_writes_back(clients, timeout=20) - killed
        if mode == "automatic":
            assert back < 15, f"writes were back {back:.1f} s after the kill"
            role = next(r for r in ("replica", "replica2")
                        if box.query("SELECT @@read_only", role=r, root=True) == [(0,)])
    finally:
        if watcher_log is not None:
            auto.terminate()
            auto.wait(10)
            watcher_log.seek(0)
            auto_output = watcher_log.read()
            watcher_log.close()
    if mode == "automatic":
        print("\n" + auto_output)
        assert auto_output.count("failover done") == 1, auto_output
        decision = next(line for line in auto_output.splitlines() if "Z failover: " in line)
        assert "unreachable for" in decision and "lost the master" in decision, decision
    other = next(r for r in ("replica", "replica2") if r != role)
    assert topology(box)[other] == (1, str(box.box.port_of(role)))
    if mode == "command":
        again = admin(box, "failover")
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    # The old master comes back read-only, replicating from nobody: the servers leave it alone.
    box.run("start", "master")
    assert box.query("SELECT @@read_only", role="master", root=True) == [(1,)]
    (old_position,) = box.query("SELECT @@gtid_binlog_pos", role="master", root=True)[0]
    second = Workload(clients, prefix="p2-")
    time.sleep(2)
    second.stop()
    assert second.errors == set() and second.acknowledged > 50, (second.errors, second.acknowledged)
    assert _put_ok(clients[1], "regend")
    watcher.join()
    assert box.query("SELECT @@gtid_binlog_pos", role="master", root=True) == [(old_position,)]
    # The new master's content ends the history: a lost acknowledged write, or a write no
    # history allows, makes it non-linearizable.
    final = time.monotonic()
    rows = {k.decode(): (v.decode(), n) for k, v, n in
            box.query(f"SELECT k, v, version FROM kvgrpc.`{table_name}`", role=role, root=True)}
    history = workload.history + second.history + [
        Op(k, "get", final, final, value=rows.get(k, (None, 0))[0], version=rows.get(k, (None, 0))[1])
        for k in KEYS]
    assert check(history) == []
    (pos,) = box.query("SELECT @@gtid_binlog_pos", role=role, root=True)[0]
    assert box.query("SELECT MASTER_GTID_WAIT(%s, 10)", (pos,), role=other, root=True) == [(0,)]
    # The watcher crossed the promotion: every acknowledged write exactly once, revisions
    # never going back, nothing that was never written.
    assert watcher.error is None, watcher.error
    events = watcher.events
    assert all(a.revision <= b.revision for a, b in zip(events, events[1:]))
    seen = [(e.key, e.value.decode(), e.version) for e in events if e.key in KEYS]
    assert len(seen) == len(set(seen)), "an event was repeated"
    acknowledged = {(op.key, op.value, op.version) for op in workload.history + second.history
                    if op.kind != "get" and not op.failed and not op.unknown}
    missing = acknowledged - set(seen)
    assert not missing, f"{len(missing)} acknowledged writes were not watched, e.g. {sorted(missing)[:3]}"
    attempted = {(op.key, op.value) for op in workload.history + second.history if op.kind != "get"}
    assert {(k, v) for k, v, _ in seen} <= attempted
    for client in (*clients, watch_client):
        client.close()
    checked = workload.acknowledged + second.acknowledged
    print(f"{mode}: {checked} acknowledged writes checked ({len(history)} operations), linearizable "
          f"per key; {len(events)} watched events across the promotion; first write through the "
          f"same servers {back:.2f} s after the kill")


def _put_ok(kv, key: str) -> bool:
    try:
        kv.put(key, "x")
        return True
    except KvError:
        return False


def test_switchover_and_its_undo(own_sandbox, start_server, table_name):
    box = own_sandbox(replicas=2)
    server = start_server(master=box.master, replicas=box.replicas, table=table_name, follow_topology=True)
    with server.client() as kv:
        for i in range(50):
            kv.put(f"k{i}", "v")
    to = box.env["KVGRPC_ADMIN_REPLICA_URL"].split(",")[1]  # replica2
    before = topology(box)

    # Undo: a row lock held on replica2 blocks its SQL thread, so waiting for it to apply
    # the master's last write times out after the master was fenced: the master is opened
    # again, and nothing else has changed.
    lock = box.connect("replica2", root=True)
    cur = lock.cursor()
    cur.execute("BEGIN")
    cur.execute(f"SELECT * FROM kvgrpc.`{table_name}` WHERE k = 'k0' FOR UPDATE")
    cur.fetchall()
    with server.client() as kv:
        kv.put("k0", "changed")
    failed = admin(box, "switchover", "--to", to, "--wait", "1")
    lock.close()
    assert failed.returncode == 1 and "did not apply up to" in failed.stderr, failed.stdout + failed.stderr
    assert "undo: open" in failed.stdout
    assert topology(box) == before

    dry = admin(box, "switchover", "--to", to, "--dry-run")
    assert dry.returncode == 0 and "would: fence the master" in dry.stdout
    assert topology(box) == before
    done = admin(box, "switchover", "--to", to)
    assert done.returncode == 0, done.stdout + done.stderr
    print("\n" + done.stdout)
    assert new_master_role(box, done.stdout) == "replica2"
    port = str(box.box.port_of("replica2"))
    assert topology(box) == {"master": (1, port), "replica": (1, port), "replica2": (0, "")}
    again = admin(box, "switchover", "--to", to)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    # The server (following the topology) writes to the new master, without a restart.
    with server.client(timeout=5) as kv:
        wait_until(lambda: _put_ok(kv, "through-the-server"), what="writes on the new master")
        assert kv.get_record("through-the-server", consistency="strong").value == b"x"
    assert box.query(f"SELECT v FROM kvgrpc.`{table_name}` WHERE k = 'through-the-server'",
                     role="replica2", root=True) == [(b"x",)]
    # Nothing lost; a write on the new master reaches the old one.
    rows = box.query(f"SELECT COUNT(*) FROM kvgrpc.`{table_name}`", role="replica2", root=True)
    assert rows == [(51,)]
    box.query(f"INSERT INTO kvgrpc.`{table_name}` (k, v) VALUES ('on-new-master', 'x')", role="replica2",
              root=True)
    (pos,) = box.query("SELECT @@gtid_binlog_pos", role="replica2", root=True)[0]
    for role in ("master", "replica"):
        assert box.query("SELECT MASTER_GTID_WAIT(%s, 10)", (pos,), role=role, root=True) == [(0,)]
    # With every node gone there is nothing to promote: failover refuses and says why.
    for role in ("replica2", "replica", "master"):
        box.run("kill", role)
    refused = admin(box, "failover")
    assert refused.returncode == 1 and "no replica is reachable" in refused.stderr, refused.stderr


def test_failover_keeps_a_relay_log_whose_sql_thread_was_stopped(own_sandbox, start_server, table_name):
    """The most advanced replica has received the acknowledged writes but not applied them
    (its SQL thread stopped, no error): failover starts the SQL thread; and a failover that
    fails (the replica cannot apply in time) keeps the relay log: restarting the IO thread,
    as an undo once did, made MariaDB discard it and every such write was lost."""
    box = own_sandbox(replicas=2)
    server = start_server(master=box.master, replicas=box.replicas, table=table_name)
    with server.client(timeout=10) as kv:
        kv.put("k0", "first")
        (pos,) = box.query("SELECT @@gtid_binlog_pos", root=True)[0]
        for role in ("replica", "replica2"):
            assert box.query("SELECT MASTER_GTID_WAIT(%s, 10)", (pos,), role=role, root=True) == [(0,)]
        box.query("STOP SLAVE", role="replica", root=True)
        box.query("STOP SLAVE SQL_THREAD", role="replica2", root=True)
        # A row lock on replica2 keeps its SQL thread, once started, from applying k0's update.
        lock = box.connect("replica2", root=True)
        cur = lock.cursor()
        cur.execute("BEGIN")
        cur.execute(f"SELECT * FROM kvgrpc.`{table_name}` WHERE k = 'k0' FOR UPDATE")
        cur.fetchall()
        acknowledged = {"k0": (b"second", kv.put("k0", "second"))}
        for i in range(1, 40):
            acknowledged[f"k{i}"] = (b"v", kv.put(f"k{i}", "v"))
    box.run("kill", "master")
    failed = admin(box, "failover", "--wait", "1")
    assert failed.returncode == 1 and "did not apply up to" in failed.stderr, failed.stdout + failed.stderr
    assert "start applying the relay log" in failed.stdout and "START SLAVE IO_THREAD" not in failed.stdout
    lock.close()
    done = admin(box, "failover", "--wait", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert new_master_role(box, done.stdout) == "replica2"
    rows = {k.decode(): (v, n) for k, v, n in
            box.query(f"SELECT k, v, version FROM kvgrpc.`{table_name}`", role="replica2", root=True)}
    assert rows == acknowledged


def test_fixed_endpoint_that_fails_over_by_itself(own_sandbox, start_server, table_name):
    """Behind one endpoint that moves to the promoted replica (Aurora's, RDS's: here a TCP
    proxy), the server's open connections still reach the demoted master: the first write
    fails UNAVAILABLE (read-only, not applied), the server drops its connections, and the
    next write reaches the new master through a new connection."""
    box = own_sandbox(replicas=1)
    proxy = TcpProxy(box.master.port)
    try:
        server = start_server(master=dataclasses.replace(box.master, port=proxy.port), table=table_name)
        with server.client(timeout=5) as kv:
            for i in range(20):
                kv.put(f"k{i}", "before")
            accepted = proxy.connections
            done = admin(box, "switchover", "--to", box.env["KVGRPC_ADMIN_REPLICA_URL"].split(",")[0])
            assert done.returncode == 0, done.stdout + done.stderr
            proxy.flip(box.replica.port)
            try:
                kv.put("refused", "x")
                raise AssertionError("a write to the demoted master succeeded")
            except Unavailable as exc:
                assert "read-only" in str(exc) and "not applied" in str(exc), exc
            assert kv.put("k0", "after") == 2  # on the new master, through a new connection
            assert proxy.connections > accepted
            assert kv.get_record("k0", consistency="strong").value == b"after"
        (pos,) = box.query("SELECT @@gtid_binlog_pos", role="replica", root=True)[0]
        assert box.query("SELECT MASTER_GTID_WAIT(%s, 10)", (pos,), role="master", root=True) == [(0,)]
        for role in ("master", "replica"):
            rows = dict(box.query(f"SELECT k, v FROM kvgrpc.`{table_name}` WHERE k IN ('k0', 'refused')",
                                  role=role, root=True))
            assert rows == {b"k0": b"after"}, (role, rows)
    finally:
        proxy.close()


def test_following_servers_never_write_to_two_masters(own_sandbox, start_server, table_name):
    """A second node made writable and detached (as a botched promotion would leave it):
    the server refuses writes, naming both, until one is fenced; then it writes to the
    other, without a restart; STRONG reads follow."""
    box = own_sandbox(replicas=1)
    (server,) = _following_servers(box, start_server, table_name, count=1, semi_sync=False)
    with server.client(timeout=5) as kv:
        kv.put("k", "on-master")
        box.query("STOP SLAVE", role="replica", root=True)
        box.query("RESET SLAVE ALL", role="replica", root=True)
        box.query("SET GLOBAL read_only = 0", role="replica", root=True)

        def refused() -> bool:
            try:
                kv.put("k", "anywhere")
            except Unavailable as exc:
                return "more than one node is writable" in str(exc)
            return False

        wait_until(refused, what="writes refused with two writable nodes")
        assert "more than one node" in next(e.problem for e in kv.status() if e.role == "master")
        # The detached node holds what nobody else has: never read from (it was, as a
        # "replica" whose lag did not count without a master).
        box.query(f"UPDATE kvgrpc.`{table_name}` SET v = 'split' WHERE k = 'k'", role="replica", root=True)
        (detached,) = [e for e in kv.status() if e.role == "replica"]
        assert not detached.healthy and "writable and replicating from nobody" in detached.problem
        for _ in range(10):
            try:
                assert kv.get("k") != b"split"
            except Unavailable:
                pass  # no master and no replica to read: refused, not served stale
        box.query("SET GLOBAL read_only = 1", role="master", root=True)  # fence the old one
        fenced = box.query(f"SELECT v FROM kvgrpc.`{table_name}` WHERE k = 'k'", role="master", root=True)
        # (A write may have reached the old master before the router saw the second node.)
        assert fenced in ([(b"on-master",)], [(b"anywhere",)])
        wait_until(lambda: _put_ok(kv, "k"), what="writes on the only writable node")
        assert kv.put("k", "on-replica") >= 2
        assert kv.get_record("k", consistency="strong").value == b"on-replica"
    assert box.query(f"SELECT v FROM kvgrpc.`{table_name}` WHERE k = 'k'", role="replica", root=True) == \
        [(b"on-replica",)]
    assert box.query(f"SELECT v FROM kvgrpc.`{table_name}` WHERE k = 'k'", role="master", root=True) == fenced


def test_follow_and_watch_master_flags_refuse_nonsense(tmp_path):
    from kvgrpc.server import ServerConfig, build_service, config_from_args

    with pytest.raises(ValueError, match="--follow-topology needs the database endpoints"):
        build_service(ServerConfig(follow_topology=True, sqlite_path=str(tmp_path / "kv.sqlite3")))
    with pytest.raises(ValueError, match="--watch-feed-retry must be more than 0"):
        config_from_args(["--watch-feed-retry", "0"], environ={})
    bad = subprocess.run([sys.executable, "-m", "kvgrpc.ops.admin", "watch-master", "--after", "0",
                          "--master", "mysql://a@127.0.0.1:1/d", "--replica", "mysql://a@127.0.0.1:2/d"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--after (0) and --interval (1) must be positive" in bad.stderr, bad.stderr
