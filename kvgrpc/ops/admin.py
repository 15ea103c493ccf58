"""Operating kvgrpc and its databases: ``kvgrpc-admin`` (or ``python -m kvgrpc.ops.admin``;
``python -m kvgrpc.admin`` still works).

    kvgrpc-admin status [--target HOST:PORT]
        what the server sees of each database endpoint: role, reachable, lag, pool use
    kvgrpc-admin check --master URL --replica URL [--table kv]
        compares master and replica: row counts, checksums over key ranges, differing keys
    kvgrpc-admin restore --from REPLICA_URL --to MASTER_URL
        rebuilds an emptied or replaced master from a replica, then re-attaches the replica
    kvgrpc-admin switchover --master URL --replica URL [--replica URL ...] --to URL
        makes that replica the master, without losing a write; the old master follows it
    kvgrpc-admin failover --master URL --replica URL [--replica URL ...]
        the master is lost: promotes the replica that has received the most; prints it
    kvgrpc-admin watch-master --master URL --replica URL [--replica URL ...] --after SECONDS
        runs failover by itself once the master has been unreachable for SECONDS, from here
        and from every reachable replica (their IO threads lost it too); logs each decision

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
import time
from collections.abc import Sequence

from kvgrpc.client import DEFAULT_TARGET, KeyValueClient
from kvgrpc.errors import InvalidArgument, KvError
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

    master, replicas = _topology(args)
    status = 0
    for replica in replicas:
        if len(replicas) > 1:
            print(f"replica {replica}:", file=out)
        if args.dry_run:
            print(f"would: compare table {args.table} on {master} and {replica} (read-only)", file=out)
            continue
        result = check(master, replica, args.table, chunk=args.chunk)
        print(f"table {result.table}: master {result.master_rows} rows, replica {result.replica_rows} "
              f"rows; {result.ranges} key ranges compared, {result.differing_ranges} differ", file=out)
        for key in result.differing_keys:
            print(f"  differs: {key.decode('utf-8', 'backslashreplace')}", file=out)
        print("clean" if result.clean else "DIFFERENT", file=out)
        status = status if result.clean else 1
    return status


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


def _topology(args) -> tuple:
    master = args.master or os.environ.get("KVGRPC_ADMIN_MASTER_URL")
    # --replica may be repeated, and each may be a comma-separated list (as the variable is).
    given = ",".join(args.replica) if args.replica else os.environ.get("KVGRPC_ADMIN_REPLICA_URL", "")
    replicas = [u.strip() for u in given.split(",") if u.strip()]
    if not master or not replicas:
        raise InvalidArgument("give the master and the replicas: --master URL --replica URL ... "
                              "(or KVGRPC_ADMIN_MASTER_URL, KVGRPC_ADMIN_REPLICA_URL)")
    return _endpoint(master), [_endpoint(u) for u in replicas]


def _report(change, out) -> int:
    for endpoint in change.repointed:
        print(f"repointed: {endpoint}", file=out)
    for line in change.left_out:
        print(f"NOT repointed: {line}", file=out)
    print(f"new master: {change.new_master}", file=out)
    return 0


def _switchover(args, out) -> int:
    from kvgrpc.ops.mysql_admin import switchover

    master, replicas = _topology(args)
    change = switchover(master, replicas, _endpoint(args.to), repl_user=args.repl_user,
                        repl_password=os.environ.get("KVGRPC_REPL_PASSWORD", ""), dry_run=args.dry_run,
                        wait=args.wait, log=lambda line: print(line, file=out, flush=True))
    if not args.dry_run and change.changed:
        print(f"switchover done in {change.seconds:.2f} s", file=out)
    return _report(change, out) if not args.dry_run else 0


def _failover(args, out) -> int:
    from kvgrpc.ops.mysql_admin import failover

    master, replicas = _topology(args)
    change = failover(master, replicas, dry_run=args.dry_run, wait=args.wait,
                      log=lambda line: print(line, file=out, flush=True))
    if not args.dry_run and change.changed:
        print(f"failover done in {change.seconds:.2f} s", file=out)
    return _report(change, out) if not args.dry_run else 0


def _watch_master(args, out) -> int:
    import signal
    import threading

    from kvgrpc.ops.watch_master import watch_master

    master, replicas = _topology(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())

    def log(line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        print(f"{stamp}Z {line}", file=out, flush=True)

    if args.after <= 0 or args.interval <= 0:
        raise InvalidArgument(f"--after ({args.after:g}) and --interval ({args.interval:g}) must be "
                              "positive (seconds)")
    result = watch_master(master, replicas, after=args.after, interval=args.interval, wait=args.wait,
                          dry_run=args.dry_run, log=log, stop=stop)
    log(f"stopped after {len(result.failovers)} failover(s)")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvgrpc-admin", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="the server's view of its database endpoints")
    status.add_argument("--target", default=os.environ.get("KVGRPC_TARGET", DEFAULT_TARGET))
    status.add_argument("--timeout", type=float, default=10.0)
    chk = sub.add_parser("check", help="compare master and replica")
    chk.add_argument("--master", metavar="URL", help="default: $KVGRPC_ADMIN_MASTER_URL")
    chk.add_argument("--replica", action="append", metavar="URL",
                     help="a replica to compare with the master; repeat, or separate with commas, "
                          "for several (default: $KVGRPC_ADMIN_REPLICA_URL)")
    chk.add_argument("--table", default="kv")
    chk.add_argument("--chunk", type=int, default=1000, help="keys per checksummed range")
    rst = sub.add_parser("restore", help="rebuild an empty master from a replica")
    rst.add_argument("--from", dest="source", required=True, metavar="REPLICA_URL")
    rst.add_argument("--to", dest="target", required=True, metavar="MASTER_URL")
    rst.add_argument("--force", action="store_true", help="overwrite a master that has data")
    sw = sub.add_parser("switchover", help="make a replica the master, without losing a write")
    fo = sub.add_parser("failover", help="the master is lost: promote the most advanced replica")
    wm = sub.add_parser("watch-master", help="fail over by itself when the master is lost "
                        "(from here and from the replicas) for --after seconds")
    wm.add_argument("--after", type=float, required=True, metavar="SECONDS",
                    help="seconds the master must be unreachable before a failover")
    wm.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                    help="seconds between checks (default 1)")
    for command in (sw, fo, wm):
        command.add_argument("--master", metavar="URL", help="the (old) master (default: $KVGRPC_ADMIN_MASTER_URL)")
        command.add_argument("--replica", metavar="URL", action="append",
                             help="a replica; repeat for each (default: $KVGRPC_ADMIN_REPLICA_URL)")
        command.add_argument("--wait", type=float, default=30.0,
                             help="seconds the new master may take to apply what it received (default 30)")
    sw.add_argument("--to", required=True, metavar="URL", help="the replica to promote")
    sw.add_argument("--repl-user", default="", help="replication account for the old master "
                    "(default: the one the new master replicates with; password: $KVGRPC_REPL_PASSWORD)")
    for command in (status, chk, rst, sw, fo, wm):
        command.add_argument("--dry-run", action="store_true",
                             help="print what would be done; change nothing")
    return p


def main(argv: Sequence[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    command = {"status": _status, "check": _check, "restore": _restore, "switchover": _switchover,
               "failover": _failover, "watch-master": _watch_master}[args.command]
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
