"""What a group commit of plain Puts costs in each statement shape, in one run.

    .venv/bin/python bench/group_commit_sql.py [--rows 4] [--groups 1500] [--repeat 3]

``MySQLStore._put_group`` writes a group of concurrent Puts in one round trip. It used an
explicit transaction (five statements: ``START TRANSACTION``, the multi-row upsert, a
SELECT of the keys' versions, ``COMMIT``, ``SELECT @@last_gtid``); on MariaDB it now sends
the upsert with ``RETURNING version`` as its own (autocommit) transaction, then
``SELECT @@last_gtid``: two statements. This script sends ``--groups`` groups of ``--rows``
100-byte upserts of existing keys through one connection (mysql-connector's C extension,
as the server does) in each shape, alternating, and prints per group: wall time, the
client's CPU (the driver: what a server worker spends) and the master's CPU. Durable
settings and semi-sync are on, as in every sandbox.
"""

from __future__ import annotations

import _mysql_connector  # noqa: F401  isort: skip  (before ssl; DEVELOPERS.md)

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

TABLE = "group_commit"
VALUE = b"x" * 100


def shapes(rows: int) -> dict[str, tuple[str, bool]]:
    """Shape name -> (SQL, whether the keys follow the rows as parameters)."""
    upsert = (f"INSERT INTO `{TABLE}` (k, v) VALUES {', '.join(['(%s, %s)'] * rows)} "
              "ON DUPLICATE KEY UPDATE v = VALUES(v), version = version + 1")
    keys = ", ".join(["%s"] * rows)
    return {
        "transaction (5 statements)": (
            f"START TRANSACTION; {upsert}; SELECT k, version FROM `{TABLE}` WHERE k IN ({keys}); "
            "COMMIT; SELECT @@last_gtid", True),
        "RETURNING (2 statements)": (f"{upsert} RETURNING version; SELECT @@last_gtid", False),
    }


def run(cur, sql: str, with_keys: bool, rows: int, groups: int) -> None:
    for i in range(groups):
        keys = [f"g{i % 50}-{j}".encode() for j in range(rows)]
        params = [x for k in keys for x in (k, VALUE)] + (keys if with_keys else [])
        cur.execute(sql, params)
        while True:
            if cur.with_rows:
                cur.fetchall()
            if not cur.nextset():
                break


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4, help="Puts per group (default: 4)")
    p.add_argument("--groups", type=int, default=1500)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvgrpc-group-commit-") as tmp:
        sandbox = harness.Sandbox(Path(tmp) / "sandbox", harness.free_ports(2))
        sandbox.up()
        try:
            sandbox.empty_table(TABLE)
            master = sandbox.pid("master")
            cnx = sandbox.connect("master")
            cur = cnx.cursor(buffered=True)
            results: dict[str, list[tuple[float, float, float]]] = {}
            for repeat in range(args.repeat):
                for name, (sql, with_keys) in shapes(args.rows).items():
                    wall, client, db = time.perf_counter(), time.process_time(), harness.cpu_seconds(master)
                    run(cur, sql, with_keys, args.rows, args.groups)
                    per = [(time.perf_counter() - wall) / args.groups * 1e6,
                           (time.process_time() - client) / args.groups * 1e6,
                           (harness.cpu_seconds(master) - db) / args.groups * 1e6]
                    results.setdefault(name, []).append(tuple(per))  # type: ignore[arg-type]
                    print(f"repeat {repeat + 1} {name}: {per[0]:,.0f} µs per group, client CPU "
                          f"{per[1]:,.0f} µs, master CPU {per[2]:,.0f} µs", flush=True)
            cnx.close()
            print(f"medians per group of {args.rows} Puts:")
            for name, runs in results.items():
                wall, client, db = (statistics.median(r[i] for r in runs) for i in range(3))
                print(f"  {name}: {wall:,.0f} µs wall, client CPU {client:,.0f} µs, "
                      f"master CPU {db:,.0f} µs")
        finally:
            sandbox.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
