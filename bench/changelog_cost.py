"""What the other Watch route would cost: a change-log table written in the same transaction.

    .venv/bin/python bench/changelog_cost.py [--records 1000000] [--repeat 3]

kvgrpc's Watch reads the master's binlog, which the writes produce anyway. The other route
the issue names writes every change a second time, into a change-log table, in the same
transaction (on SQLite kvgrpc does that, with triggers). This measures that second write on
the MariaDB pair, side by side in one run: ``LOAD DATA LOCAL INFILE`` of the same CSV into
a table without and with an ``AFTER INSERT`` trigger that appends each row to a change log
(k, v, version, an AUTO_INCREMENT revision), both timed until the replica holds it (the
trigger's rows are binlogged and applied too). Prints median (min-max) records/s and the
ratio with/without.
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


def load(sandbox: harness.Sandbox, csv: Path, table: str) -> float:
    """Seconds to LOAD DATA ``csv`` into ``table`` until the replica has applied it."""
    cnx = sandbox.loader(csv)
    try:
        started = time.perf_counter()
        harness.load_data(cnx, table, csv)
        sandbox.wait_replica()
        return time.perf_counter() - started
    finally:
        cnx.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rates: dict[str, list[float]] = {"plain table": [], "table + change-log trigger": []}
    with tempfile.TemporaryDirectory(prefix="kvgrpc-changelog-") as tmp:
        csv = Path(tmp) / "records.csv"
        harness.write_csv(csv, args.records, seed=1)
        sandbox = harness.Sandbox(Path(tmp) / "sandbox", harness.free_ports(2))
        try:
            sandbox.up()
            sandbox.query("master", "CREATE TABLE IF NOT EXISTS changes (rev BIGINT AUTO_INCREMENT "
                          "PRIMARY KEY, k VARBINARY(3072) NOT NULL, v LONGBLOB NOT NULL, "
                          "version BIGINT NOT NULL) ENGINE=InnoDB")
            for _ in range(args.repeat):
                for name, table in (("plain table", "plain"), ("table + change-log trigger", "logged")):
                    sandbox.query("master", f"DROP TABLE IF EXISTS `{table}`")
                    sandbox.empty_table(table)
                    if table == "logged":
                        sandbox.query("master", "TRUNCATE TABLE changes")
                        admin = sandbox.connect("admin_master")  # triggers need SUPER with a binlog
                        try:
                            admin.cursor().execute(
                                "CREATE TRIGGER logged_changes AFTER INSERT ON logged FOR EACH ROW "
                                "INSERT INTO changes (k, v, version) VALUES (NEW.k, NEW.v, NEW.version)")
                        finally:
                            admin.close()
                    seconds = load(sandbox, csv, table)
                    rates[name].append(args.records / seconds)
                    print(f"  {name}: {args.records / seconds:,.0f} records/s", file=sys.stderr)
        finally:
            sandbox.down()
    for name, values in rates.items():
        print(f"{name:<28} {statistics.median(values):>10,.0f} records/s "
              f"({min(values):,.0f}-{max(values):,.0f})")
    ratios = [b / a for a, b in zip(*rates.values())]
    print(f"{'with / without':<28} {statistics.median(ratios):>10.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
