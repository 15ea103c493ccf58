#!/usr/bin/env python3
"""kvgrpc soak: mixed traffic against one server for a while; its resources must not grow.

    bench/soak.py [--minutes 10] [--interval 30] [--out DIR]
    bench/soak.py --minutes 1              (a quick check)

(Run with the project's .venv; started with another interpreter it re-executes itself with
.venv/bin/python, which bench/run.sh creates.)

It starts a MariaDB master + GTID replica (scripts/mysql-sandbox.sh, temporary directory,
free ports below 32768) and one `python -m kvgrpc.server` on them (default flags), then
runs at once, until the time is up:

- unary traffic: 2 threads on one KeyValueClient, each looping Put, Get, BatchGet (20 keys)
  and Scan (one page of 50) over 5,000 keys;
- loads: `python -m kvgrpc.client stream` of a 20,000-record CSV, one after another;
- watch churn: 10 watches opened (8 of a prefix the unary traffic writes, 2 of every key),
  read for ~2 s, cancelled; again;
- one slow watch reader: a watch of every key on the raw stub that reads one response per
  second (it falls behind the server's buffer and is ended with UNAVAILABLE, then resumes
  from the revision it reached, as a client should).

Every --interval seconds (and 10 s after the start, at the end with the traffic still on,
and 5 s after it stopped) it samples the server's RSS (/proc/PID/statm), thread count
(/proc/PID/status Threads) and its database connections: information_schema.PROCESSLIST on
the master and on the replica, user kvgrpc, traced to the server's own sockets; 'Binlog
Dump' threads (change feeds) counted apart. Printed as a table, with a verdict per figure:
RSS is flat when the median of the samples of the run's second half is no larger than the
median of its first half plus 16 MB; threads and connections are flat when, 5 s after the
traffic stopped, they are back at the start, and never exceeded it by more than a transient
(the slow reader catching up through a history feed: a thread and two master connections);
"start" is the sample at 10 s (pools and feed warmed up).
Also written as JSON to --out (default bench/out/soak.json).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

_VENV_PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
if importlib.util.find_spec("grpc") is None and _VENV_PYTHON.exists() \
        and Path(sys.executable) != _VENV_PYTHON:
    os.execv(str(_VENV_PYTHON), [str(_VENV_PYTHON), *sys.argv])

# mysql-connector-python's C extension must load before ssl/hashlib (DEVELOPERS.md).
import _mysql_connector  # noqa: F401  isort: skip

import argparse
import collections
import contextlib
import json
import random
import signal
import statistics
import tempfile
import threading
import time

import grpc

import harness
from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.client import KeyValueClient

TABLE = "soak_kv"
UNARY_THREADS = 2
UNARY_KEYS = 5000
LOAD_RECORDS = 20_000
CHURN_WATCHES = 10
RSS_TOLERANCE_MB = 16.0
FIGURES = ("rss_mb", "threads", "master", "master_binlog_dump", "replica")


class Traffic:
    """The soak's load generators, each on its own thread, until ``stop`` is set."""

    def __init__(self, target: str, csv: Path, workdir: Path) -> None:
        self.target, self.csv, self.workdir = target, csv, workdir
        self.stop = threading.Event()
        self.counts: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def error(self, what: str, exc: BaseException) -> None:
        name = getattr(exc, "code", None)
        label = f"{what}: {type(exc).__name__} {str(exc)[:80]}" if name is None else \
            f"{what}: {type(exc).__name__}"
        with self._lock:
            self.errors[label] += 1

    def start(self, kv: KeyValueClient) -> None:
        jobs = [(self.unary, (kv, i)) for i in range(UNARY_THREADS)]
        jobs += [(self.loads, ()), (self.churn, (kv,)), (self.slow_reader, ())]
        for fn, args in jobs:
            t = threading.Thread(target=self._guard, args=(fn, args), name=fn.__name__, daemon=True)
            t.start()
            self.threads.append(t)

    def _guard(self, fn, args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - a generator that dies is reported
            self.error(f"{fn.__name__} died", exc)

    def join(self, timeout: float = 60.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def unary(self, kv: KeyValueClient, index: int) -> None:
        rng = random.Random(index)
        value = os.urandom(50).hex().encode()  # 100 bytes
        while not self.stop.is_set():
            for what, call in (
                ("Put", lambda: kv.put(f"soak/u/{rng.randrange(UNARY_KEYS):05d}", value)),
                ("Get", lambda: kv.get(f"soak/u/{rng.randrange(UNARY_KEYS):05d}")),
                ("BatchGet", lambda: kv.batch_get(
                    [f"soak/u/{rng.randrange(UNARY_KEYS):05d}" for _ in range(20)])),
                ("Scan", lambda: next(iter(kv.scan("soak/u/", start=f"soak/u/{rng.randrange(UNARY_KEYS):05d}",
                                                   page_size=50)), None)),
            ):
                try:
                    call()
                    self.count(what)
                except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
                    self.error(what, exc)

    def loads(self) -> None:
        while not self.stop.is_set():
            try:
                run = harness.run_client(self.target, ["stream", str(self.csv)], self.workdir)
                self.count("loads")
                self.count("load records", int(run.summary.split()[0]))
            except Exception as exc:  # noqa: BLE001
                self.error("load", exc)
                self.stop.wait(1)

    def churn(self, kv: KeyValueClient) -> None:
        rng = random.Random(7)
        while not self.stop.is_set():
            watches = [kv.watch(prefix="soak/u/1" if i < 8 else "") for i in range(CHURN_WATCHES)]
            readers = [threading.Thread(target=self._drain, args=(w,), daemon=True) for w in watches]
            for r in readers:
                r.start()
            self.count("watches opened", len(watches))
            self.stop.wait(rng.uniform(1.0, 3.0))
            for w in watches:
                w.cancel()
            for r in readers:
                r.join(10)
            self.count("watches cancelled", len(watches))

    def _drain(self, watch) -> None:
        try:
            for _ in watch:
                self.count("churn events")
        except Exception as exc:  # noqa: BLE001
            self.error("churn watch", exc)

    def slow_reader(self) -> None:
        """A watch of every key that reads one response a second; resumes after UNAVAILABLE."""
        with grpc.insecure_channel(self.target, options=[("grpc.max_receive_message_length", -1),
                                                         ("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = kv_pb2_grpc.KeyValueStub(ch)
            revision = None
            while not self.stop.is_set():
                request = kv_pb2.WatchRequest(prefix="")
                if revision is not None:
                    request.start_revision = revision
                call = stub.Watch(request)
                try:
                    for response in call:
                        self.count("slow reader responses")
                        revision = max(revision or 0, response.revision)
                        if self.stop.wait(1.0):
                            break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        self.error("slow reader", exc)
                        self.stop.wait(1)
                    else:
                        self.count("slow reader resumes (UNAVAILABLE)")
                finally:
                    call.cancel()


def sample(sandbox: harness.Sandbox, server: harness.KvServer, cnx: dict, t: float,
           label: str) -> dict:
    ports = harness.tcp_local_ports(server.pids())
    master = harness.connection_census(cnx["master"], ports)
    replica = harness.connection_census(cnx["replica"], ports)
    return {"label": label, "t": round(t, 1), "rss_mb": harness.rss_mb(server.pid),
            "threads": harness.thread_count(server.pid), "master": master["held"],
            "master_binlog_dump": master["held_binlog_dump"], "replica": replica["held"],
            "master_kvgrpc_total": master["total"], "replica_kvgrpc_total": replica["total"]}


#: What one catch-up of the slow reader holds while it lasts (a history feed: a thread, its
#: binlog dump and the library's control connection on the master); counts may exceed the
#: start by this much while traffic runs, never after it stopped.
TRANSIENT = {"threads": 1, "master": 2, "master_binlog_dump": 1, "replica": 0}


def verdicts(samples: list[dict]) -> dict[str, dict]:
    """Per figure: start (10 s), end (traffic on), after (stopped), max, growth, and whether
    it grows. RSS: the median of the samples of the run's second half (by time) against the
    median of its first half, within RSS_TOLERANCE_MB (medians: a leak raises the whole
    second half, a spike does not). Threads and connections: flat when, once the traffic
    stopped, they are back at (or below) the start, and never exceeded it by more than one
    catch-up's :data:`TRANSIENT` (the slow reader may catch up for minutes, so medians
    would take it for growth)."""
    running = [s for s in samples if s["label"] != "after"]
    half = running[-1]["t"] / 2
    first = [s for s in running if s["t"] <= half] or running[:1]
    second = [s for s in running if s["t"] > half] or running[-1:]
    out = {}
    for f in FIGURES:
        start, after, peak = running[0][f], samples[-1][f], max(s[f] for s in samples)
        if f == "rss_mb":
            growth = statistics.median(s[f] for s in second) - statistics.median(s[f] for s in first)
            flat = growth <= RSS_TOLERANCE_MB
        else:
            growth = after - start
            flat = after <= start and peak <= start + TRANSIENT.get(f, 0)
        out[f] = {"start": start, "end": running[-1][f], "after": after, "max": peak,
                  "growth": growth, "flat": flat}
    return out


def table(result: dict) -> str:
    lines = [f"kvgrpc soak: {result['minutes']:g} min of mixed traffic on one server "
             f"(MariaDB {result['mariadb']}, {os.cpu_count()} CPUs); samples every "
             f"{result['interval']:g} s", "",
             f"{'sample':<8} {'t (s)':>7} {'RSS MB':>8} {'threads':>8} {'master':>7} "
             f"{'binlog':>7} {'replica':>8}   (connections held by the server, user kvgrpc)"]
    for s in result["samples"]:
        lines.append(f"{s['label']:<8} {s['t']:>7.0f} {s['rss_mb']:>8.1f} {s['threads']:>8} "
                     f"{s['master']:>7} {s['master_binlog_dump']:>7} {s['replica']:>8}")
    lines += ["", f"{'figure':<22} {'start':>8} {'end':>8} {'after':>8} {'max':>8} "
              f"{'growth':>8}  verdict (RSS: median of the 2nd half vs the 1st's; counts: after vs start)"]
    for f, v in result["verdicts"].items():
        fmt = (lambda x: f"{x:8.1f}") if f == "rss_mb" or f == "growth" else (lambda x: f"{x:8g}")
        lines.append(f"{f:<22} {fmt(v['start'])} {fmt(v['end'])} {fmt(v['after'])} "
                     f"{fmt(v['max'])} {fmt(v['growth'])}  {'flat' if v['flat'] else 'GROWS'}")
    lines += ["", "traffic: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result["counts"].items()))]
    errors = result["errors"]
    lines.append("errors: " + (", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))
                               if errors else "none"))
    return "\n".join(lines)


def soak(args, workdir: Path) -> dict:
    csv = workdir / "load.csv"
    harness.write_csv(csv, LOAD_RECORDS, seed=5)
    port = harness.free_ports(3)
    sandbox = harness.Sandbox(workdir / "sandbox", port)
    server = None
    cnx: dict = {}
    traffic = None
    try:
        print("starting the MariaDB sandbox pair and the kvgrpc server", file=sys.stderr, flush=True)
        sandbox.up()
        server = harness.KvServer(port + 2, sandbox.url("master"), sandbox.url("replica"), TABLE,
                                  workdir / "server.log")
        server.start()
        sandbox.empty_table(TABLE)
        cnx = {role: sandbox.connect(role) for role in ("master", "replica")}
        samples = []
        started = time.monotonic()

        def take(label: str) -> None:
            samples.append(sample(sandbox, server, cnx, time.monotonic() - started, label))
            s = samples[-1]
            print(f"  {s['label']:<6} t={s['t']:>6.0f}s rss={s['rss_mb']:.1f}MB threads={s['threads']} "
                  f"master={s['master']} (binlog {s['master_binlog_dump']}) replica={s['replica']} "
                  f"| {dict(traffic.counts)} errors={sum(traffic.errors.values())}",
                  file=sys.stderr, flush=True)

        with KeyValueClient(server.target) as kv:
            # Every key the unary traffic reads exists (on the replica too) before it starts.
            kv.stream_put((f"soak/u/{i:05d}", b"v" * 100) for i in range(UNARY_KEYS))
            sandbox.wait_replica()
            traffic = Traffic(server.target, csv, workdir)
            traffic.start(kv)
            end = started + args.minutes * 60
            time.sleep(min(10.0, args.minutes * 60 / 4))
            take("start")
            next_at = started + args.interval
            while (now := time.monotonic()) < end:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{server.log_tail()}")
                if now >= next_at:
                    take("sample")
                    next_at += args.interval
                time.sleep(min(1.0, max(0.05, min(next_at, end) - now)))
            take("end")
            traffic.join()
        time.sleep(5)
        take("after")
        return {"minutes": args.minutes, "interval": args.interval, "mariadb": sandbox.version(),
                "samples": samples, "verdicts": verdicts(samples),
                "counts": dict(traffic.counts), "errors": dict(traffic.errors),
                "server_command": " ".join(server.command[1:])}
    except Exception:
        if server is not None and server.proc is not None:
            print(f"server log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if traffic is not None:
            traffic.stop.set()
        for c in cnx.values():
            with contextlib.suppress(Exception):
                c.close()
        if server is not None:
            server.stop()
        sandbox.down()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = p.parse_args()
    if args.minutes <= 0 or args.interval <= 0:
        p.error("--minutes and --interval must be positive")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="kvgrpc-soak-") as tmp:
        result = soak(args, Path(tmp))
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "soak.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten: {path}")
    flat = all(v["flat"] for v in result["verdicts"].values())
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
