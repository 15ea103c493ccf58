"""How long writes stop when the master changes, through servers that follow the topology.

    .venv/bin/python bench/failover_times.py [--runs 5] [--after 2]

For each way of changing the master — ``failover`` (``kill -9`` the master, then run
``kvgrpc-admin failover`` at once), ``switchover`` (``kvgrpc-admin switchover --to`` a
replica, master alive) and ``automatic`` (``kill -9`` the master under a running
``kvgrpc-admin watch-master --after SECONDS``, no command run) — it runs ``--runs`` times
on a fresh sandbox (master + 2 replicas, semi-sync), with two in-process servers started
with ``follow_topology`` and 8 writer threads putting unique keys through them (each
write retried after a failure), and prints per mode the median of

- kill → first write: from the kill to the first write acknowledged afterwards through
  *each* of the two servers (the later of the two). For switchover there is no kill: it is
  from the command's start, and writes acknowledged by the old master before it was
  fenced count, so read the write gap instead;
- write gap: the longest time in which no write was acknowledged at all (for switchover,
  the time writes stopped: from the fence to the servers writing to the new master);

and the number of acknowledged writes checked: after each run, every acknowledged key
must be on the new master (a lost one fails the run).
"""

from __future__ import annotations

import _mysql_connector  # noqa: F401 - the MySQL C extension first (DEVELOPERS.md)

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kvgrpc.client import KeyValueClient  # noqa: E402
from kvgrpc.errors import KvError  # noqa: E402
from kvgrpc.ops import sandbox as ops_sandbox  # noqa: E402
from kvgrpc.server import ServerConfig, build_server  # noqa: E402
from kvgrpc.store import MySQLEndpoint  # noqa: E402

from harness import free_ports  # noqa: E402 - bench/harness.py, beside this file

MODES = ("failover", "switchover", "automatic")


class Writers:
    """8 threads putting unique keys through the clients; each success is timestamped."""

    def __init__(self, clients: list[KeyValueClient], threads: int = 8) -> None:
        self.acked: list[tuple[float, int, str]] = []  # (time, server, key)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(clients, t), daemon=True)
                         for t in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, clients: list[KeyValueClient], t: int) -> None:
        i = 0
        server = t % len(clients)
        while not self._stop.is_set():
            key = f"w{t}-{i}"
            i += 1
            try:
                clients[server].put(key, "x")
            except KvError:
                time.sleep(0.01)
                continue
            with self._lock:
                self.acked.append((time.monotonic(), server, key))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def one_run(mode: str, after: float, workdir: Path) -> tuple[float, float, int]:
    box = ops_sandbox.Sandbox(workdir, free_ports(3), 2, False)
    box.validate()
    box.up()
    servers, clients = [], []
    watcher = None
    try:
        env = box.env()
        password = env["KVGRPC_MYSQL_PASSWORD"]
        master = MySQLEndpoint.from_url(env["KVGRPC_MASTER_URL"], password)
        replicas = tuple(MySQLEndpoint.from_url(u, password) for u in env["KVGRPC_REPLICA_URL"].split(","))
        admin_env = dict(__import__("os").environ, KVGRPC_ADMIN_PASSWORD=env["KVGRPC_ADMIN_PASSWORD"],
                         KVGRPC_MYSQL_PASSWORD=password, KVGRPC_REPL_PASSWORD=env["KVGRPC_REPL_PASSWORD"])
        topology = ["--master", env["KVGRPC_ADMIN_MASTER_URL"],
                    *[a for u in env["KVGRPC_ADMIN_REPLICA_URL"].split(",") for a in ("--replica", u)]]
        admin = [sys.executable, "-m", "kvgrpc.ops.admin"]
        for _ in range(2):
            server = build_server(ServerConfig(host="127.0.0.1", port=0, master=master, replicas=replicas,
                                               table="bench", require_semi_sync=True, follow_topology=True,
                                               watch_feed_retry=60.0))
            server.start()
            servers.append(server)
            clients.append(KeyValueClient(f"127.0.0.1:{server.port}", timeout=5))
        if mode == "automatic":
            watcher = subprocess.Popen([*admin, "watch-master", "--after", str(after), "--interval", "0.5",
                                        *topology], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env=admin_env, cwd=REPO)
        writers = Writers(clients)
        time.sleep(2)
        event = time.monotonic()
        if mode == "switchover":
            to = env["KVGRPC_ADMIN_REPLICA_URL"].split(",")[1]
            done = subprocess.run([*admin, "switchover", "--to", to, *topology], capture_output=True,
                                  text=True, env=admin_env, cwd=REPO, timeout=120)
        else:
            box.kill("master")
            event = time.monotonic()
            done = None
            if mode == "failover":
                done = subprocess.run([*admin, "failover", *topology], capture_output=True, text=True,
                                      env=admin_env, cwd=REPO, timeout=120)
        if done is not None and done.returncode != 0:
            raise RuntimeError(f"{mode} failed: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            servers_back = {s for t, s, _ in writers.acked if t > event}
            if len(servers_back) == len(clients):
                break
            time.sleep(0.05)
        time.sleep(1)
        writers.stop()
        firsts = [min((t for t, s, _ in writers.acked if t > event and s == i), default=float("inf"))
                  for i in range(len(clients))]
        back = max(firsts) - event
        times = sorted(t for t, _, _ in writers.acked)
        gap = max(b - a for a, b in zip(times, times[1:]))
        new_master = next(r for r in box.roles if box.running_pid(r)
                          and box.query(r, "SELECT @@read_only")[0][0] == 0)
        keys = {row[0].decode() for row in box.query(new_master, "SELECT k FROM kvgrpc.bench")}
        lost = [k for _, _, k in writers.acked if k not in keys]
        if lost:
            raise RuntimeError(f"{mode}: {len(lost)} acknowledged writes missing on the new master "
                               f"{new_master}, e.g. {lost[:3]}")
        return back, gap, len(writers.acked)
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(10)
        for client in clients:
            client.close()
        for server in servers:
            server.stop(grace=1)
        box.down(purge=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--after", type=float, default=2.0, help="watch-master --after (default 2)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--verbose", action="store_true", help="show the servers' log")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL,
                        format="%(asctime)s %(name)s %(message)s")
    print(f"{'mode':<11} {'runs':>4} {'kill->write s (median)':>23} {'write gap s (median)':>21} "
          f"{'acked writes checked':>21}  per run (kill->write)", flush=True)
    for mode in args.modes.split(","):
        results = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="kvgrpc-failover-bench-") as tmp:
                results.append(one_run(mode, args.after, Path(tmp) / "sandbox"))
        backs, gaps, acked = zip(*results)
        print(f"{mode:<11} {len(results):>4} {statistics.median(backs):>23.2f} "
              f"{statistics.median(gaps):>21.2f} {sum(acked):>21}  "
              + " ".join(f"{b:.2f}" for b in backs), flush=True)
    print(f"(automatic: watch-master --after {args.after:g} --interval 0.5; switchover: from the "
          "command's start; servers: follow_topology, monitor interval 0.1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
