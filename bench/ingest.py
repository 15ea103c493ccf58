"""Ingest benchmark: `kvgrpc.client stream` of a CSV into the MariaDB pair, timed until the
replica holds every record, beside `LOAD DATA LOCAL INFILE` of the same file in the same run.

    .venv/bin/python bench/ingest.py --records 1000000 --repeat 3

Starts its own sandbox (scripts/mysql-sandbox.sh, in a temporary directory) and a kvgrpc
server process; prints medians (min-max), the ratio to LOAD DATA, and CPU seconds per
record of each process (client, server, master, replica).
"""

from __future__ import annotations

import _mysql_connector  # noqa: F401 - before anything imports ssl (DEVELOPERS.md)

import argparse
import os
import random
import re
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mysql.connector

REPO = Path(__file__).resolve().parent.parent
SANDBOX = REPO / "scripts" / "mysql-sandbox.sh"


def free_port_pair() -> int:
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def make_csv(path: Path, records: int, seed: int = 1) -> None:
    """~14-byte keys, ~100-byte values, with a header row."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    with open(path, "w", newline="") as f:
        f.write("key,value\n")
        chunk = []
        for i in range(records):
            value = "".join(rng.choices(alphabet, k=100))
            chunk.append(f"key{i:011d},{value}\n")
            if len(chunk) == 10000:
                f.writelines(chunk)
                chunk.clear()
        f.writelines(chunk)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Pair:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def connect(self, role: str, **extra):
        url = self.env[f"KVGRPC_{role.upper()}_URL"]
        m = re.match(r"mysql://([^:]+):([^@]+)@([^:]+):(\d+)/(\w+)", url)
        user, password, host, port, db = m.groups()
        return mysql.connector.connect(user=user, password=password, host=host, port=int(port),
                                       database=db, autocommit=True, **extra)

    def pids(self) -> dict[str, int]:
        return {"master": int(self.env["KVGRPC_SANDBOX_MASTER_PID"]),
                "replica": int(self.env["KVGRPC_SANDBOX_REPLICA_PID"])}

    def wait_replica(self) -> None:
        m = self.connect("master")
        cur = m.cursor()
        cur.execute("SELECT @@gtid_binlog_pos")
        (pos,) = cur.fetchone()
        m.close()
        r = self.connect("replica")
        cur = r.cursor()
        cur.execute("SELECT MASTER_GTID_WAIT(%s, 600)", (pos,))
        assert cur.fetchone()[0] == 0, "replica did not catch up"
        r.close()

    def recreate(self, table: str) -> None:
        m = self.connect("master")
        cur = m.cursor()
        cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        cur.execute(f"CREATE TABLE `{table}` (k VARBINARY(3072) NOT NULL PRIMARY KEY, "
                    "v LONGBLOB NOT NULL, version BIGINT NOT NULL DEFAULT 1) ENGINE=InnoDB")
        m.close()
        self.wait_replica()

    def count(self, table: str, role: str) -> int:
        c = self.connect(role)
        cur = c.cursor()
        cur.execute(f"SELECT COUNT(*) FROM `{table}`")
        (n,) = cur.fetchone()
        c.close()
        return n


def run_load_data(pair: Pair, csv_path: Path, table: str) -> dict:
    pair.recreate(table)
    cpu0 = {role: cpu_seconds(pid) for role, pid in pair.pids().items()}
    start = time.perf_counter()
    m = pair.connect("master", allow_local_infile=True,
                     allow_local_infile_in_path=str(csv_path.parent))
    cur = m.cursor()
    cur.execute(
        f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` FIELDS TERMINATED BY ',' "
        "OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' IGNORE 1 LINES (k, v)",
        (str(csv_path),),
    )
    m.close()
    pair.wait_replica()
    seconds = time.perf_counter() - start
    cpu = {role: cpu_seconds(pid) - cpu0[role] for role, pid in pair.pids().items()}
    return {"seconds": seconds, "cpu": cpu}


def run_stream(pair: Pair, csv_path: Path, table: str, server_pid: int, port: int) -> dict:
    pair.recreate(table)
    cpu0 = {role: cpu_seconds(pid) for role, pid in pair.pids().items()}
    cpu0["server"] = cpu_seconds(server_pid)
    start = time.perf_counter()
    client = subprocess.Popen(
        [sys.executable, "-m", "kvgrpc.client", "--target", f"127.0.0.1:{port}", "stream", str(csv_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _, status, usage = os.wait4(client.pid, 0)  # the client's own CPU, exactly
    out, err = client.stdout.read(), client.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0, err
    pair.wait_replica()
    seconds = time.perf_counter() - start
    cpu = {role: cpu_seconds(pid) - cpu0[role] for role, pid in pair.pids().items()}
    cpu["server"] = cpu_seconds(server_pid) - cpu0["server"]
    cpu["client"] = usage.ru_utime + usage.ru_stime
    return {"seconds": seconds, "cpu": cpu, "client_out": out.strip()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="kvgrpc-bench-") as tmp:
        tmp = Path(tmp)
        csv_path = tmp / "records.csv"
        make_csv(csv_path, args.records)
        env = dict(os.environ, KVGRPC_SANDBOX_DIR=str(tmp / "sandbox"),
                   KVGRPC_SANDBOX_PORT=str(free_port_pair()))
        subprocess.run(["bash", str(SANDBOX), "up"], env=env, check=True, stdout=subprocess.DEVNULL)
        server = None
        try:
            values = dict(line.split("=", 1) for line in (tmp / "sandbox" / "env").read_text().split()
                          if "=" in line)
            values = {k: v.strip("'\"") for k, v in values.items()}
            pair = Pair(values)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = subprocess.Popen(
                [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--port", str(port),
                 "--master", values["KVGRPC_MASTER_URL"], "--replica", values["KVGRPC_REPLICA_URL"],
                 "--table", "bench_stream", "--log-level", "WARNING"],
            )
            time.sleep(1.0)  # the server's start-up; the benchmark is not a test
            results: dict[str, list[dict]] = {"LOAD DATA LOCAL INFILE": [], "kvgrpc stream": []}
            for i in range(args.repeat):
                results["LOAD DATA LOCAL INFILE"].append(run_load_data(pair, csv_path, "bench_load"))
                r = run_stream(pair, csv_path, "bench_stream", server.pid, port)
                assert pair.count("bench_stream", "replica") == args.records
                results["kvgrpc stream"].append(r)
                print(f"run {i + 1}: LOAD DATA {results['LOAD DATA LOCAL INFILE'][-1]['seconds']:.2f} s, "
                      f"stream {r['seconds']:.2f} s ({r['client_out']})", file=sys.stderr)
        finally:
            if server is not None:
                server.terminate()
                server.wait()
            subprocess.run(["bash", str(SANDBOX), "down", "--purge"], env=env, stdout=subprocess.DEVNULL)

    n = args.records
    base = statistics.median(r["seconds"] for r in results["LOAD DATA LOCAL INFILE"])
    print(f"\n{n:,} records (~14-byte keys, ~100-byte values), {args.repeat} runs, "
          "timed until the replica holds every record\n")
    print(f"{'method':<24} {'records/s median (min-max)':>34} {'ratio':>6}   CPU µs/record")
    for name, runs in results.items():
        rates = [n / r["seconds"] for r in runs]
        med = statistics.median(r["seconds"] for r in runs)
        roles = sorted(runs[0]["cpu"])
        cpu = ", ".join(f"{role} {statistics.median(r['cpu'][role] for r in runs) / n * 1e6:.1f}"
                        for role in roles)
        print(f"{name:<24} {n / med:>14,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
              f" {base / med:>8.2f}×   {cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
