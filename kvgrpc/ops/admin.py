"""Operating kvgrpc and its databases: ``kvgrpc-admin`` (or ``python -m kvgrpc.ops.admin``;
``python -m kvgrpc.admin`` still works).

    kvgrpc-admin status [--target HOST:PORT]
        what the server sees of each database endpoint: role, reachable, lag, pool use
    kvgrpc-admin check --master URL --replica URL [--table kv]
        compares master and replica: row counts, checksums over key ranges, differing keys
    kvgrpc-admin restore --from REPLICA_URL --to MASTER_URL
        rebuilds an emptied or replaced master from a replica, then re-attaches the replica

Every command takes ``--dry-run``: it reads what it needs and prints what it would do,
changing nothing. Commands that change servers put back what they changed when a step
fails, and do nothing when their goal already holds (see :mod:`kvgrpc.ops.mysql_admin`).

Database URLs are ``mysql://user[:password]@host:port/database[?ssl-mode=...]`` of an
administrative account; a password missing from a URL is read from
``KVGRPC_ADMIN_PASSWORD``, else ``KVGRPC_MYSQL_PASSWORD``. Exit status: 0 when all is well,
1 when ``check`` finds differences or a command fails.
"""

from __future__ import annotations

import kvgrpc  # noqa: F401 - loads the MySQL C extension before grpc imports ssl

import argparse
import os
import sys
from collections.abc import Sequence

from kvgrpc.client import DEFAULT_TARGET, KeyValueClient
from kvgrpc.errors import KvError
from kvgrpc.store import MySQLEndpoint


def _endpoint(url: str) -> MySQLEndpoint:
    return MySQLEndpoint.from_url(
        url, os.environ.get("KVGRPC_ADMIN_PASSWORD") or os.environ.get("KVGRPC_MYSQL_PASSWORD"))


def _status(args, out) -> int:
    if args.dry_run:
        print(f"would: ask the server at {args.target} for its endpoints' status", file=out)
        return 0
    with KeyValueClient(args.target, timeout=args.timeout) as kv:
        endpoints = kv.status()
    print(f"{'role':<9} {'reachable':<9} {'healthy':<7} {'lag ms':>7} {'pool':>7}  endpoint", file=out)
    for e in endpoints:
        lag = "-" if e.lag_ms is None else str(e.lag_ms)
        extra = " semi-sync on" if e.semi_sync_active else ""
        problem = f"  ({e.problem})" if e.problem else ""
        print(f"{e.role:<9} {'yes' if e.reachable else 'NO':<9} {'yes' if e.healthy else 'NO':<7} "
              f"{lag:>7} {e.pool_in_use:>3}/{e.pool_size:<3}  {e.name}{extra}{problem}", file=out)
    return 0 if all(e.healthy for e in endpoints) else 1


def _check(args, out) -> int:
    from kvgrpc.ops.mysql_admin import check

    if args.dry_run:
        print(f"would: compare table {args.table} on {_endpoint(args.master)} and "
              f"{_endpoint(args.replica)} (read-only)", file=out)
        return 0
    result = check(_endpoint(args.master), _endpoint(args.replica), args.table, chunk=args.chunk)
    print(f"table {result.table}: master {result.master_rows} rows, replica {result.replica_rows} "
          f"rows; {result.ranges} key ranges compared, {result.differing_ranges} differ", file=out)
    for key in result.differing_keys:
        print(f"  differs: {key.decode('utf-8', 'backslashreplace')}", file=out)
    print("clean" if result.clean else "DIFFERENT", file=out)
    return 0 if result.clean else 1


def _restore(args, out) -> int:
    from kvgrpc.ops.mysql_admin import restore

    result = restore(_endpoint(args.source), _endpoint(args.target), force=args.force,
                     dry_run=args.dry_run, log=lambda line: print(line, file=out, flush=True))
    if args.dry_run or not result.changed:
        return 0
    rows = sum(result.tables.values())
    print(f"restored {rows} rows in {len(result.tables)} tables in {result.seconds:.2f} s; "
          f"master GTID state {result.gtid_position or '(empty)'}", file=out)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvgrpc-admin", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="the server's view of its database endpoints")
    status.add_argument("--target", default=os.environ.get("KVGRPC_TARGET", DEFAULT_TARGET))
    status.add_argument("--timeout", type=float, default=10.0)
    chk = sub.add_parser("check", help="compare master and replica")
    chk.add_argument("--master", required=True, metavar="URL")
    chk.add_argument("--replica", required=True, metavar="URL")
    chk.add_argument("--table", default="kv")
    chk.add_argument("--chunk", type=int, default=1000, help="keys per checksummed range")
    rst = sub.add_parser("restore", help="rebuild an empty master from a replica")
    rst.add_argument("--from", dest="source", required=True, metavar="REPLICA_URL")
    rst.add_argument("--to", dest="target", required=True, metavar="MASTER_URL")
    rst.add_argument("--force", action="store_true", help="overwrite a master that has data")
    for command in (status, chk, rst):
        command.add_argument("--dry-run", action="store_true",
                             help="print what would be done; change nothing")
    return p


def main(argv: Sequence[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    command = {"status": _status, "check": _check, "restore": _restore}[args.command]
    try:
        return command(args, out)
    except KvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a database refused a step: its message, not a traceback
        import mysql.connector

        if not isinstance(exc, mysql.connector.Error):
            raise
        print(f"error: the database refused a step: {exc.msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
