"""Faults against real mariadbd processes: kill -9 a replica, the master, the kvgrpc server;
destroy the master's data and restore it from the replica.

Each test has its own sandbox (it kills servers). Figures each test observed are printed
(`pytest -s tests/test_faults.py` shows them).
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

from kvgrpc.client import KeyValueClient
from kvgrpc.errors import KvError, NotFound, Unavailable
from tests.conftest import server_process
from tests.test_consistency import replica_only_row, wait_until


def value_of(kv, key: str) -> bytes | None:
    try:
        return kv.get(key)
    except NotFound:
        return None


class ReadLoop:
    """Gets in a loop on another thread, counting successes and failures."""

    def __init__(self, client: KeyValueClient, key: str) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self.values: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, key))
        self._thread.start()

    def _run(self, client: KeyValueClient, key: str) -> None:
        while not self._stop.is_set():
            try:
                self.values.add(client.get(key))
                self.ok += 1
            except KvError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> ReadLoop:
        self._stop.set()
        self._thread.join()
        return self


def write_csv(path, n: int) -> dict[str, str]:
    records = {f"row{i:07d}": f"value {i} " + "x" * 80 for i in range(n)}
    with open(path, "w") as f:
        f.write("key,value\n")
        f.writelines(f"{k},{v}\n" for k, v in records.items())
    return records


def content(sandbox, table: str, role: str = "master") -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in sandbox.query(f"SELECT k, v FROM `{table}`", role=role)}


def rows(sandbox, table: str, role: str = "master") -> int:
    return sandbox.query(f"SELECT COUNT(*) FROM `{table}`", role=role)[0][0]


def test_replica_killed_reads_never_fail_and_return_to_it(own_sandbox, start_server, table_name):
    box = own_sandbox()
    server = start_server(master=box.master, replicas=box.replicas, table=table_name)
    with server.client() as kv:
        kv.put("k", b"from-master")
        box.wait_for_replica()
        replica_only_row(box, table_name, "k2", "from-replica")
        wait_until(lambda: value_of(kv, "k2") == b"from-replica", what="reads served by the replica")

        loop = ReadLoop(kv, "k")
        box.run("kill", "replica")
        killed = time.monotonic()
        wait_until(lambda: not kv.status()[1].reachable, what="the replica marked unreachable")
        reads_at_kill = loop.ok
        wait_until(lambda: loop.ok > reads_at_kill + 200, what="reads after the kill")
        box.run("start", "replica")
        restarted = time.monotonic()
        wait_until(lambda: value_of(kv, "k2") == b"from-replica", timeout=20,
                   what="reads served by the replica again")
        back = time.monotonic() - restarted
        loop.stop()
    print(f"\nreplica kill: {loop.ok} reads, {len(loop.failures)} failed; "
          f"replica down {restarted - killed:.2f} s; reads back on it {back:.2f} s after restart")
    assert loop.failures == []
    assert back < 10


def test_reads_spread_over_two_replicas_and_survive_losing_one(own_sandbox, start_server, table_name):
    box = own_sandbox(replicas=2)
    server = start_server(master=box.master, replicas=box.replicas, table=table_name)
    with server.client() as kv:
        kv.put("seed", b"m")
        for role in ("replica", "replica2"):
            box.wait_for_replica(role=role)
        # The same key written on each replica alone: the value says who answered.
        for role in ("replica", "replica2"):
            cnx = box.connect(role, root=True)
            cur = cnx.cursor()
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute(f"INSERT INTO kvgrpc.`{table_name}` (k, v) VALUES ('who', %s)", (role,))
            cnx.close()
        wait_until(lambda: all(e.healthy for e in kv.status()), what="both replicas healthy")
        answers = {kv.get("who") for _ in range(40)}
        assert answers == {b"replica", b"replica2"}

        loop = ReadLoop(kv, "who")
        box.run("kill", "replica2")
        wait_until(lambda: not kv.status()[2].reachable, what="replica2 marked unreachable")
        mark = loop.ok
        wait_until(lambda: loop.ok > mark + 100, what="reads after the kill")
        after = {kv.get("who") for _ in range(40)}
        loop.stop()
    assert loop.failures == []
    assert after == {b"replica"}


def test_master_killed_writes_fail_fast_reads_continue_then_recover(own_sandbox, start_server, table_name):
    box = own_sandbox()
    server = start_server(master=box.master, replicas=box.replicas, table=table_name)
    with server.client(timeout=10) as kv:
        kv.put("k", b"v")
        box.wait_for_replica()
        wait_until(lambda: kv.status()[1].healthy, what="a measured, healthy replica")
        box.run("kill", "master")
        started = time.monotonic()
        with pytest.raises(Unavailable, match="master database .* is unreachable"):
            kv.put("k", b"w")
        to_unavailable = time.monotonic() - started
        for _ in range(50):
            assert kv.get("k") == b"v"  # eventual reads, from the replica
        with pytest.raises(Unavailable):
            kv.get("k", consistency="strong")
        box.run("start", "master")
        restarted = time.monotonic()

        def write_succeeds():
            try:
                return kv.put("k", b"after") >= 2
            except Unavailable:
                return False

        wait_until(write_succeeds, timeout=20, what="writes to succeed again")
        recovered = time.monotonic() - restarted
    print(f"\nmaster kill: first write UNAVAILABLE after {to_unavailable * 1000:.0f} ms "
          f"(deadline 10 s); writes back {recovered:.2f} s after the master restarted")
    assert to_unavailable < 1.0


def _stream(target: str, path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kvgrpc.client", "--target", target, "stream", str(path), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _committed(output: str) -> int:
    """The records a `stream` run reports committed; 0 when it could not know (server killed)."""
    match = re.match(r"(\d+) records? committed", output)
    return int(match.group(1)) if match else 0


def _resume(err: str) -> list[str]:
    """The one resume command a failed `stream` printed, to run with this interpreter."""
    (command,) = re.findall(r"^resume with: (.*)$", err, re.M)
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "kvgrpc.client"]
    return [sys.executable, *words[1:]]


def _versions(sandbox, table: str) -> set[int]:
    return {v for (v,) in sandbox.query(f"SELECT DISTINCT version FROM `{table}`")}


def test_server_killed_mid_stream_then_resume(own_sandbox, tmp_path, table_name):
    box = own_sandbox()
    records = write_csv(tmp_path / "load.csv", 300_000)

    def server():
        return server_process(box, table_name)

    first, target = server()
    try:
        client = _stream(target, tmp_path / "load.csv")
        wait_until(lambda: rows(box, table_name) > 20_000, what="part of the load committed")
        first.send_signal(signal.SIGKILL)
        first.wait()
        out, err = client.communicate(timeout=60)
        assert client.returncode == 1 and "error:" in err
        acknowledged = _committed(out)
        found = rows(box, table_name)
        print(f"\nserver kill: client saw {acknowledged} acknowledged; {found} rows in the database")
        assert found >= acknowledged
        stored = content(box, table_name)
        assert all(stored[k] == records[k] for k in list(records)[:acknowledged])

        command = _resume(err)
        second, target = server()
        command[command.index("--target") + 1] = target  # the restarted server's new port
        resume = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = resume.communicate(timeout=300)
        assert resume.returncode == 0, err
        before = int(re.search(r"; (\d+) records? committed before", out).group(1))
        assert before >= acknowledged and _committed(out) == len(records) - before
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert content(box, table_name) == records
    assert _versions(box, table_name) == {1}  # exactly once: nothing written twice


def test_master_killed_mid_stream_then_resume(own_sandbox, start_server, tmp_path, table_name):
    box = own_sandbox()
    records = write_csv(tmp_path / "load.csv", 300_000)
    server = start_server(master=box.master, replicas=box.replicas, table=table_name)
    client = _stream(server.target, tmp_path / "load.csv")
    wait_until(lambda: rows(box, table_name) > 20_000, what="part of the load committed")
    box.run("kill", "master")
    out, err = client.communicate(timeout=60)
    assert client.returncode == 1
    assert "UNAVAILABLE" in err.upper() or "unreachable" in err
    acknowledged = _committed(out)
    command = _resume(err)
    box.run("start", "master")
    found = rows(box, table_name)
    print(f"\nmaster kill mid-stream: client saw {acknowledged} acknowledged; {found} rows after restart")
    assert found >= acknowledged > 0
    stored = content(box, table_name)
    assert all(stored[k] == records[k] for k in list(records)[:acknowledged])

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert content(box, table_name) == records
    assert _versions(box, table_name) == {1}  # exactly once: nothing written twice
    box.wait_for_replica()
    assert content(box, table_name, role="replica") == records


def test_semi_sync_off_means_writes_are_refused(own_sandbox, start_server, table_name):
    box = own_sandbox()
    server = start_server(master=box.master, replicas=box.replicas, table=table_name,
                          require_semi_sync=True)
    with server.client() as kv:
        kv.put("a", b"1")
        kv.stream_put([("l0", "x"), ("l1", "y")], load_id="semi-sync-load")
        box.run("stop", "replica")  # no replica left to confirm writes
        with pytest.raises(Unavailable, match="semi-synchronous replication is off") as refused:
            for _ in range(3):  # the first commit waits out the 1 s semi-sync timeout
                kv.put("b", b"2")
        # The write is on the master: the error must not call a repeat safe (a repeated
        # compare-and-set would meet its own write), and says to read the key first.
        assert "safe" not in str(refused.value) and "read the key before repeating" in str(refused.value)
        assert kv.get_record("b", consistency="strong").value == b"2"
        # Reading a load's progress is a read: not refused while writes are.
        assert kv.get_load("semi-sync-load").committed == 2
        box.run("start", "replica")

        def accepted():
            try:
                kv.put("c", b"3")
                return True
            except Unavailable:
                return False

        wait_until(accepted, timeout=20, what="writes accepted with semi-sync back")


def test_master_data_destroyed_restored_from_replica(own_sandbox, start_server, table_name):
    box = own_sandbox()
    server = start_server(master=box.master, replicas=box.replicas, table=table_name,
                          require_semi_sync=True)
    acknowledged = {}
    with server.client() as kv:
        for i in range(300):
            kv.put(f"ack{i}", f"v{i}")
            acknowledged[f"ack{i}"] = f"v{i}"
        kv.stream_put((f"bulk{i}", f"b{i}") for i in range(5000))
        acknowledged.update({f"bulk{i}": f"b{i}" for i in range(5000)})

        box.run("kill", "master")
        box.run("wipe", "master")  # a blank master at the same address
        admin = box.process_env()
        started = time.monotonic()
        restore = subprocess.run(
            [sys.executable, "-m", "kvgrpc.admin", "restore",
             "--from", box.env["KVGRPC_ADMIN_REPLICA_URL"].split(",")[0],
             "--to", box.env["KVGRPC_ADMIN_MASTER_URL"]],
            capture_output=True, text=True, env=admin, timeout=120,
        )
        seconds = time.monotonic() - started
        assert restore.returncode == 0, restore.stderr + restore.stdout
        assert content(box, table_name) == acknowledged

        check = subprocess.run(
            [sys.executable, "-m", "kvgrpc.admin", "check", "--table", table_name,
             "--master", box.env["KVGRPC_ADMIN_MASTER_URL"],
             "--replica", box.env["KVGRPC_ADMIN_REPLICA_URL"].split(",")[0]],
            capture_output=True, text=True, env=admin, timeout=120,
        )
        assert check.returncode == 0 and check.stdout.strip().endswith("clean"), check.stdout
        again = subprocess.run(restore.args, capture_output=True, text=True, env=admin, timeout=120)
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr

        # The same server, not restarted, writes again, and replication carries on.
        wait_until(lambda: _put_ok(kv, "after-restore"), timeout=20, what="writes after restore")
        box.wait_for_replica()
        assert box.query(f"SELECT v FROM `{table_name}` WHERE k = 'after-restore'",
                         role="replica") == [(b"x",)]
    print(f"\nrestore: {len(acknowledged)} acknowledged writes, all present after restore "
          f"({seconds:.2f} s); check clean")


def _put_ok(kv, key: str) -> bool:
    try:
        kv.put(key, b"x")
        return True
    except Unavailable:
        return False


def test_check_lists_differing_keys(sandbox, mysql_server):
    table = mysql_server.config.table
    with mysql_server.client() as kv:
        kv.stream_put((f"c{i:05d}", b"v") for i in range(2500))
    sandbox.wait_for_replica()
    replica_only_row(sandbox, table, "c01000x", "extra")
    cnx = sandbox.connect("replica", root=True)
    cur = cnx.cursor()
    cur.execute("SET SESSION sql_log_bin = 0")
    cur.execute(f"UPDATE kvgrpc.`{table}` SET v = 'changed' WHERE k = 'c02000'")
    cnx.close()
    result = run_cli_admin("check", "--table", table, "--master", sandbox.env["KVGRPC_ADMIN_MASTER_URL"],
                           "--replica", sandbox.env["KVGRPC_ADMIN_REPLICA_URL"].split(",")[0],
                           env=sandbox.process_env())
    assert result.returncode == 1
    assert "master 2500 rows, replica 2501 rows" in result.stdout
    assert "differs: c01000x" in result.stdout and "differs: c02000" in result.stdout
    assert result.stdout.count("differs:") == 2 and result.stdout.strip().endswith("DIFFERENT")


def test_check_takes_the_replicas_from_the_environment_and_a_node_replicating_from_nobody(
        sandbox, mysql_server):
    """`check` with no URL compares the master with every replica of the variables (a
    comma-separated list was taken for one URL: "names no database"); a node that
    replicates from nobody is compared as it is at once (it waited 30 s for nothing)."""
    table = mysql_server.config.table
    with mysql_server.client() as kv:
        kv.put("c-env", "v")
    sandbox.wait_for_replica()
    replica = sandbox.env["KVGRPC_ADMIN_REPLICA_URL"].split(",")[0]
    env = sandbox.process_env(KVGRPC_ADMIN_MASTER_URL=sandbox.env["KVGRPC_ADMIN_MASTER_URL"],
                              KVGRPC_ADMIN_REPLICA_URL=f"{replica},{replica}")
    both = run_cli_admin("check", "--table", table, env=env)
    assert both.returncode == 0, both.stdout + both.stderr
    assert both.stdout.count("replica mysql://") == 2 and both.stdout.count("clean") == 2, both.stdout
    started = time.monotonic()
    alone = run_cli_admin("check", "--table", table, "--master", env["KVGRPC_ADMIN_MASTER_URL"],
                          "--replica", env["KVGRPC_ADMIN_MASTER_URL"], env=env)
    assert alone.returncode == 0 and alone.stdout.strip().endswith("clean"), alone.stdout + alone.stderr
    assert "replicates from nobody" in alone.stderr and time.monotonic() - started < 20


def run_cli_admin(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvgrpc.admin", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_status_reports_semi_sync_without_require_semi_sync(sandbox, start_server, table_name):
    """GetStatus's semi_sync_active is whether semi-sync is on (the sandbox runs it), not
    whether the server was told to require it."""
    server = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    with server.client() as kv:
        master, replica = kv.status()
    assert master.role == "master" and master.semi_sync_active
    assert replica.role == "replica" and not replica.semi_sync_active


def test_admin_status_prints_each_endpoint(own_sandbox, start_server, table_name):
    box = own_sandbox()
    server = start_server(master=box.master, replicas=box.replicas, table=table_name,
                          require_semi_sync=True)
    with server.client() as kv:
        wait_until(lambda: kv.status()[1].lag_ms is not None and kv.status()[0].semi_sync_active,
                   what="first measurements")
    healthy = run_cli_admin("status", "--target", server.target)
    assert healthy.returncode == 0, healthy.stdout
    master_line, replica_line = healthy.stdout.splitlines()[1:]
    assert master_line.startswith("master    yes       yes") and "semi-sync on" in master_line
    assert replica_line.startswith("replica   yes       yes") and f":{box.replica.port}/" in replica_line
    box.run("kill", "replica")
    with server.client() as kv:
        wait_until(lambda: not kv.status()[1].reachable, what="the replica marked unreachable")
    degraded = run_cli_admin("status", "--target", server.target)
    assert degraded.returncode == 1
    assert degraded.stdout.splitlines()[2].startswith("replica   NO        NO")
    assert "unreachable" in degraded.stdout


def test_restore_puts_back_what_it_changed_when_a_step_fails(own_sandbox, start_server, table_name):
    """A table the target refuses to drop (another table references it) makes restore fail
    after it fenced the master and stopped the replica: both are put back. --dry-run
    changes nothing."""
    box = own_sandbox()
    server = start_server(master=box.master, replicas=box.replicas, table=table_name)
    with server.client() as kv:
        kv.put("k", b"v")
    box.wait_for_replica()
    for role, tables in (("replica", ["aparent"]), ("master", ["aparent", "achild"])):
        cnx = box.connect(role, root=True)
        cur = cnx.cursor()
        cur.execute("SET SESSION sql_log_bin = 0")  # on this node alone
        cur.execute("CREATE TABLE kvgrpc.aparent (id INT PRIMARY KEY)")
        if "achild" in tables:
            cur.execute("CREATE TABLE kvgrpc.achild (id INT, FOREIGN KEY (id) REFERENCES aparent (id))")
        cnx.close()
    urls = ["--from", box.env["KVGRPC_ADMIN_REPLICA_URL"], "--to", box.env["KVGRPC_ADMIN_MASTER_URL"]]
    dry = run_cli_admin("restore", *urls, "--force", "--dry-run", env=box.process_env())
    assert dry.returncode == 0, dry.stderr
    assert "would: fence the target master" in dry.stdout and "would: copy table aparent" in dry.stdout
    assert box.query("SELECT @@read_only", role="master", root=True) == [(0,)]
    failed = run_cli_admin("restore", *urls, "--force", env=box.process_env())
    assert failed.returncode == 1 and "foreign key" in failed.stderr, failed.stderr
    assert "undo: START SLAVE on the source replica" in failed.stdout
    assert box.query("SELECT @@read_only", role="master", root=True) == [(0,)]
    status = box.box.slave_status("replica")
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    with server.client() as kv:
        kv.put("k", b"after")  # the master still takes writes


class KeyCounter:
    """A watcher of every key (through its own server), counting each key's events."""

    def __init__(self, client: KeyValueClient, start_revision: int) -> None:
        self.counts: dict[str, int] = {}
        self._watch = client.watch(prefix="", start_revision=start_revision)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._watch:
                self.counts[event.key] = self.counts.get(event.key, 0) + 1
        except KvError:
            pass

    def stop(self) -> None:
        self._watch.cancel()
        self._thread.join(10)


def _server_process(box, table: str):
    return server_process(box, table, "--shutdown-grace", "10")


@pytest.mark.parametrize("fault", ["kill -9 server", "kill -9 master", "SIGTERM server"])
def test_a_cli_load_survives_the_fault_and_its_resume_command_completes_it_exactly_once(
        fault, own_sandbox, start_server, tmp_path, table_name):
    """Issue 10's acceptance: at a random point of a 300k-row CSV load through the CLI, the
    fault; the CLI exits non-zero with the resume command; running it completes the load;
    the table equals the file; every version is 1; a watcher opened before the load (on
    another server) received each key exactly once."""
    import random

    box = own_sandbox()
    records = write_csv(tmp_path / "load.csv", 300_000)
    watching = start_server(master=box.master, replicas=box.replicas, table=table_name)
    with watching.client() as kv:
        kv.put("before-the-load", b"")
        watcher = KeyCounter(kv, kv.last_revision - 1)  # from the put just made
        loading, target = _server_process(box, table_name)
        try:
            client = _stream(target, tmp_path / "load.csv")
            point = random.randrange(20_000, 250_000)
            wait_until(lambda: rows(box, table_name) > point or client.poll() is not None,
                       timeout=120, what=f"{point} rows committed")
            if fault == "kill -9 server":
                loading.send_signal(signal.SIGKILL)
            elif fault == "SIGTERM server":
                loading.send_signal(signal.SIGTERM)
            else:
                box.run("kill", "master")
            out, err = client.communicate(timeout=120)
            assert client.returncode == 1, (out, err)
            command = _resume(err)
            if fault == "kill -9 master":
                box.run("start", "master")
            else:
                loading.wait(30)
                loading, target = _server_process(box, table_name)
            command[command.index("--target") + 1] = target
            resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert resumed.returncode == 0, resumed.stderr
        finally:
            if loading.poll() is None:
                loading.kill()
        stored = content(box, table_name)
        assert stored.pop("before-the-load") == ""
        assert stored == records
        assert _versions(box, table_name) == {1}  # exactly once: nothing written twice
        wait_until(lambda: len(watcher.counts) >= len(records) + 1, timeout=120,
                   what="the watcher has every key")
        watcher.stop()
    repeated = {k: n for k, n in watcher.counts.items() if n != 1}
    print(f"\n{fault} at ~{point} rows: resumed; watcher saw {len(watcher.counts)} keys, "
          f"{len(repeated)} more than once")
    assert not repeated and set(watcher.counts) == {*records, "before-the-load"}


def test_a_batch_whose_commit_was_cut_off_is_reported_in_doubt(own_sandbox, start_server, table_name):
    """The master dies while a StreamPut batch's COMMIT waits for a replica's semi-sync
    acknowledgement. The batch is in the binlog, and crash recovery commits it: the
    server used to report the count before it as exact (committed=0), and a client
    resending from there wrote the batch twice. Now the count is unknown (no
    kvgrpc-committed), the message says which records are in doubt, and GetLoad gives
    the exact count once the master is back."""
    box = own_sandbox()
    server = start_server(master=box.master, replicas=(box.replica,), table=table_name)
    with server.client() as kv:
        kv.put("warm", b"1")
    box.wait_for_replica()
    box.query("SET GLOBAL rpl_semi_sync_master_timeout = 60000", root=True)  # the COMMIT waits
    box.query("STOP SLAVE IO_THREAD", role="replica", root=True)
    failure: list[KvError] = []

    def load() -> None:
        with server.client(timeout=60) as kv:
            try:
                kv.stream_put(((f"d{i}", b"v") for i in range(10)), load_id="doubt")
            except KvError as exc:
                failure.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    wait_until(lambda: box.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE '%semi-sync%'",
        root=True)[0][0] > 0, what="the batch's COMMIT to wait for the acknowledgement")
    box.run("kill", "master")
    loader.join(60)
    assert len(failure) == 1 and isinstance(failure[0], Unavailable), failure
    error = failure[0]
    assert error.committed is None, error.committed
    assert "records 0..9 of this stream were being committed" in str(error)
    assert "may be stored or not" in str(error) and "GetLoad('doubt')" in str(error)
    box.run("start", "master")
    with server.client(timeout=10) as kv:
        wait_until(lambda: _put_ok(kv, "after"), timeout=60, what="writes after the restart")
        assert kv.get_load("doubt").committed == 10  # the batch was committed after all
        assert kv.batch_get([f"d{i}" for i in range(10)], consistency="strong") == {
            f"d{i}": b"v" for i in range(10)}
