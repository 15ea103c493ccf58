"""kvgrpc-admin switchover and failover against real master + replicas (the sandbox):
no acknowledged write lost, refusals with reasons, undo on failure, idempotence."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

from kvgrpc.errors import KvError, Unavailable
from kvgrpc.ops.sandbox import role_name

from .test_consistency import wait_until


def admin(box, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvgrpc.ops.admin", *args, "--master",
                           box.env["KVGRPC_ADMIN_MASTER_URL"],
                           *[a for url in box.env["KVGRPC_ADMIN_REPLICA_URL"].split(",") for a in ("--replica", url)]],
                          capture_output=True, text=True, env=box.process_env(), timeout=120)


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


class Writers:
    """Threads putting distinct keys through a server; remembers what was acknowledged."""

    def __init__(self, kv, threads: int = 4) -> None:
        self.kv = kv
        self.acknowledged: dict[str, str] = {}
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, t: int) -> None:
        i = 0
        while not self._stop.is_set():
            key, value = f"w{t}-{i}", f"v{t}-{i}"
            try:
                self.kv.put(key, value)
                self.acknowledged[key] = value
            except KvError:
                self.failed += 1
                time.sleep(0.01)
            i += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_failover_keeps_every_acknowledged_write(own_sandbox, start_server, table_name):
    box = own_sandbox(replicas=2)
    server = start_server(master=box.master, replicas=box.replicas, table=table_name, require_semi_sync=True)
    with server.client(timeout=5) as kv:
        writers = Writers(kv)
        wait_until(lambda: len(writers.acknowledged) > 300, what="writes acknowledged")
        refused = admin(box, "failover")  # the master is up: not a failover
        assert refused.returncode == 1 and "is reachable (writable)" in refused.stderr, refused.stderr
        box.run("kill", "master")
        killed = time.monotonic()
        wait_until(lambda: writers.failed > 0, what="writes failing")
        writers.stop()
        dry = admin(box, "failover", "--dry-run")
        assert dry.returncode == 0 and "would: open" in dry.stdout, dry.stdout + dry.stderr
        done = admin(box, "failover")
        assert done.returncode == 0, done.stdout + done.stderr
        print("\n" + done.stdout)
        role = new_master_role(box, done.stdout)
        other = next(r for r in ("replica", "replica2") if r != role)
        table = {k.decode(): v.decode()
                 for k, v in box.query(f"SELECT k, v FROM kvgrpc.`{table_name}`", role=role, root=True)}
        lost = {k for k, v in writers.acknowledged.items() if table.get(k) != v}
        assert not lost, f"{len(lost)} acknowledged writes missing on the new master {role}"
        # Writes go on, through a server given the new topology, and reach the other replica.
        new_master = box._endpoint(re.sub(r":\d+/", f":{box.box.port_of(role)}/", box.env["KVGRPC_MASTER_URL"]))
        new_replica = box._endpoint(re.sub(r":\d+/", f":{box.box.port_of(other)}/", box.env["KVGRPC_MASTER_URL"]))
        follower = start_server(master=new_master, replicas=(new_replica,), table=table_name,
                                require_semi_sync=True)
        with follower.client(timeout=5) as kv2:
            wait_until(lambda: _put_ok(kv2, "after-failover"), timeout=20, what="writes on the new master")
            back = time.monotonic() - killed
            (pos,) = box.query("SELECT @@gtid_binlog_pos", role=role, root=True)[0]
            assert box.query("SELECT MASTER_GTID_WAIT(%s, 10)", (pos,), role=other, root=True) == [(0,)]
        assert topology(box)[other] == (1, str(box.box.port_of(role)))
        again = admin(box, "failover")
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
        # The old master comes back read-only: the server still pointed at it cannot write there.
        box.run("start", "master")
        assert box.query("SELECT @@read_only", role="master", root=True) == [(1,)]
        try:
            kv.put("to-the-old-master", "x")
            raise AssertionError("the old master took a write")
        except Unavailable:
            pass
    print(f"\nfailover: {len(writers.acknowledged)} acknowledged writes all on the new master "
          f"({role}); kill to the first write after failover {back:.2f} s")


def _put_ok(kv, key: str) -> bool:
    try:
        kv.put(key, "x")
        return True
    except KvError:
        return False


def test_switchover_and_its_undo(own_sandbox, start_server, table_name):
    box = own_sandbox(replicas=2)
    server = start_server(master=box.master, replicas=box.replicas, table=table_name)
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
    assert new_master_role(box, done.stdout) == "replica2"
    port = str(box.box.port_of("replica2"))
    assert topology(box) == {"master": (1, port), "replica": (1, port), "replica2": (0, "")}
    again = admin(box, "switchover", "--to", to)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    # Nothing lost; a write on the new master reaches the old one.
    rows = box.query(f"SELECT COUNT(*) FROM kvgrpc.`{table_name}`", role="replica2", root=True)
    assert rows == [(50,)]
    box.query(f"INSERT INTO kvgrpc.`{table_name}` (k, v) VALUES ('on-new-master', 'x')", role="replica2",
              root=True)
    (pos,) = box.query("SELECT @@gtid_binlog_pos", role="replica2", root=True)[0]
    for role in ("master", "replica"):
        assert box.query("SELECT MASTER_GTID_WAIT(%s, 10)", (pos,), role=role, root=True) == [(0,)]
