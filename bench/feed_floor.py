"""The floor under "ingest with a watcher >= 0.75x LOAD DATA": LOAD DATA with kvgrpc's feed
reading every row in a process of its own, against LOAD DATA alone, in one run.

    .venv/bin/python bench/feed_floor.py [--records 1000000] [--repeat 3]

A Watch of every key needs every written row read and decoded from the master's binlog.
This script measures what kvgrpc's feed (``kvgrpc.store.binlog``, the one reader a server
runs for all its watches: python-mysql-replication's stream, rows decoded by kvgrpc's own
code) costs the ingest on its own: no gRPC, no server, no fan-out, and the cheapest writer
there is (`LOAD DATA LOCAL INFILE`):

1. LOAD DATA of the file into an empty table, timed until the replica holds every row;
2. the same, while a separate process reads the feed from the revision before the load
   (``MySQLStore.changes``, every row an Event), timed until the replica holds every row
   *and* the reader has them all.

2 / 1 bounds "ingest with a watcher / LOAD DATA" for this feed on this machine (2 shared
cores): kvgrpc's stream then adds its client, its server and the watcher on top. Repeats alternate
1 and 2; medians and each repeat's ratio are printed, with the reader's CPU per row.
"""

from __future__ import annotations

import _mysql_connector  # noqa: F401  isort: skip  (before ssl; DEVELOPERS.md)

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

TABLE = "floor_load"

READER = r"""
import _mysql_connector  # before ssl
import sys, resource
from kvgrpc.store import MySQLEndpoint, MySQLStore
url, table, after, expect = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = MySQLStore(MySQLEndpoint.from_url(url), table)
print("ready", flush=True)
rows = 0
for batch in store.changes(after, lambda: False):
    for event in batch.events:
        rows += 1
    if rows >= expect:
        break
usage = resource.getrusage(resource.RUSAGE_SELF)
print(rows, usage.ru_utime + usage.ru_stime, flush=True)
"""


def load(sandbox: harness.Sandbox, csv: Path) -> None:
    cnx = sandbox.loader(csv)
    try:
        harness.load_data(cnx, TABLE, csv)
    finally:
        cnx.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvgrpc-feed-floor-") as tmp:
        work = Path(tmp)
        csv = work / "records.csv"
        harness.write_csv(csv, args.records)
        sandbox = harness.Sandbox(work / "sandbox", harness.free_ports(2))
        sandbox.up()
        try:
            alone, with_reader, ratios, reader_cpu = [], [], [], []
            for i in range(args.repeat):
                sandbox.empty_table(TABLE)
                started = time.perf_counter()
                load(sandbox, csv)
                sandbox.wait_replica()
                alone.append(time.perf_counter() - started)

                sandbox.empty_table(TABLE)
                reader = subprocess.Popen(
                    [sys.executable, "-c", READER, sandbox.url("master"), TABLE,
                     str(sandbox.head_revision()), str(args.records)],
                    stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
                if reader.stdout.readline().strip() != "ready":
                    raise RuntimeError("the binlog reader did not start")
                started = time.perf_counter()
                load(sandbox, csv)
                sandbox.wait_replica()
                rows, cpu = reader.stdout.readline().split()
                with_reader.append(time.perf_counter() - started)
                reader.wait(60)
                if int(rows) != args.records:
                    raise RuntimeError(f"the reader saw {rows} rows, expected {args.records}")
                reader_cpu.append(float(cpu) / args.records * 1e6)
                ratios.append(alone[-1] / with_reader[-1])
                print(f"repeat {i + 1}: LOAD DATA {args.records / alone[-1]:,.0f} rows/s; with the "
                      f"reader {args.records / with_reader[-1]:,.0f} rows/s; ratio {ratios[-1]:.2f}; "
                      f"reader CPU {reader_cpu[-1]:.1f} µs/row", flush=True)
            print(f"LOAD DATA with the feed reading every row / LOAD DATA alone: median "
                  f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}); reader CPU "
                  f"{statistics.median(reader_cpu):.1f} µs per row (kvgrpc's feed)")
        finally:
            sandbox.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
