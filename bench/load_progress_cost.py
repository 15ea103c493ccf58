"""What recording a named load's progress costs a StreamPut batch on MariaDB.

    .venv/bin/python bench/load_progress_cost.py [--batches 40] [--batch-records 10000]

kvgrpc records a named load's progress in the transaction of each batch (issue 10):
``SELECT ... FOR UPDATE`` of the load's row before the batch, an upsert of it after. This
measures ``MySQLStore.put_many`` of the same kind of batch (new 14-byte keys, 100-byte
values: the LOAD DATA fast path, as in a fresh load) without and with a progress mark,
alternating the two batch by batch on one sandbox pair (semi-sync on, durable commits), so
that a busy machine slows both alike. Prints the median (min-max) milliseconds per batch of
each and the median of the per-pair ratios with/without (records/s, i.e. <= 1).
"""

from __future__ import annotations

import _mysql_connector  # noqa: F401  isort: skip  (before ssl; DEVELOPERS.md)

import argparse
import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness
from kvgrpc.store import MySQLEndpoint, MySQLStore
from kvgrpc.store.base import LoadMark


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=40, help="batches of each kind (default 40)")
    p.add_argument("--batch-records", type=int, default=10_000,
                   help="records per batch (default 10000, StreamPut's commit size)")
    args = p.parse_args()
    rng = random.Random(1)
    n = args.batch_records
    seconds: dict[str, list[float]] = {"without progress": [], "with progress": []}
    with tempfile.TemporaryDirectory(prefix="kvgrpc-loadcost-") as tmp:
        sandbox = harness.Sandbox(Path(tmp) / "sandbox", harness.free_ports(2))
        stores = []
        try:
            sandbox.up()
            master = MySQLEndpoint.from_url(sandbox.url("master"))
            plain = MySQLStore(master, "plain", create_table=True)
            named = MySQLStore(master, "named", create_table=True)
            stores = [plain, named]
            for i in range(args.batches):
                values = base64.b64encode(rng.randbytes(75 * n))
                batch = [(b"%014d" % (i * n + j), values[j * 100:(j + 1) * 100]) for j in range(n)]
                for name, store, mark in (
                        ("without progress", plain, None),
                        ("with progress", named, LoadMark("cost", i * n, (i + 1) * n))):
                    started = time.perf_counter()
                    store.put_many(batch, mark)
                    seconds[name].append(time.perf_counter() - started)
            assert named.load_progress("cost").committed == args.batches * n
        finally:
            for store in stores:
                store.close()
            sandbox.down()
    for name, values in seconds.items():
        ms = [v * 1000 for v in values]
        print(f"{name:<18} {statistics.median(ms):8.1f} ms per {n}-record batch "
              f"({min(ms):.1f}-{max(ms):.1f})")
    ratios = [a / b for a, b in zip(*seconds.values())]  # rate with / rate without
    print(f"{'with / without':<18} {statistics.median(ratios):8.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f}) records/s, per pair")
    return 0


if __name__ == "__main__":
    sys.exit(main())
