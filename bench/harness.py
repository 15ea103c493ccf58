"""What the benchmark starts and how it reads processes: the MariaDB sandbox pair
(scripts/mysql-sandbox.sh), the kvgrpc server subprocess, CSV data, CPU and RSS from /proc.

Imported by bench/run.py after it has loaded the MySQL C extension (DEVELOPERS.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import mysql.connector
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
SANDBOX_SCRIPT = REPO / "scripts" / "mysql-sandbox.sh"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TABLE_DDL = ("CREATE TABLE IF NOT EXISTS `{}` (k VARBINARY(3072) NOT NULL PRIMARY KEY, "
             "v LONGBLOB NOT NULL, version BIGINT NOT NULL DEFAULT 1) ENGINE=InnoDB")


# --------------------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, from /proc/PID/stat (all its threads; 1/CLK_TCK s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/TID/children), e.g. the processes a
    ``--processes N`` server forks; [] once it has exited."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(current)
        for task in tasks:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a forking server's children)."""
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(p)
    return total


def thread_count(pid: int) -> int | None:
    """The Threads line of /proc/PID/status; None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def tcp_local_ports(pids: list[int]) -> set[int]:
    """The local TCP ports of every socket the processes hold (their /proc/PID/fd links
    matched to /proc/net/tcp{,6} by inode): how a database connection is traced to them."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def own_cpu_seconds() -> float:
    """User + system CPU of this process, every thread (gRPC's C-core threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb(pid: int) -> float | None:
    """Resident set size in MB (10^6 bytes) from /proc/PID/statm; None once it has exited."""
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return resident * PAGE_BYTES / 1e6 or None  # a zombie reads 0


class CpuMeter:
    """CPU seconds of the named processes between ``start()`` and ``stop()``.

    ``pids`` maps a process name to its PID (read from /proc/PID/stat, with its live
    descendants: a ``--processes N`` server's children); the name "client" without a PID
    means this very process (getrusage), for clients that run in-process.
    """

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {name: own_cpu_seconds() if pid is None else tree_cpu_seconds(pid)
                for name, pid in self.pids.items()}

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        now = self._read()
        return {name: now[name] - self._start[name] for name in self.pids}


@dataclass
class RssSampler:
    """Samples the RSS of some processes every ``interval`` s on a thread, while in a ``with``."""

    pids: dict[str, int]
    interval: float = 0.2
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def __enter__(self) -> RssSampler:
        self.samples = {name: [] for name in self.pids}
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            now = time.perf_counter() - self._t0
            for name, pid in self.pids.items():
                mb = rss_mb(pid)
                if mb is not None:
                    self.samples[name].append((round(now, 3), round(mb, 2)))
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------
# Ports and data
# --------------------------------------------------------------------------------------


def free_ports(count: int) -> int:
    """A port P below the ephemeral range (32768+) with P .. P+count-1 free on loopback."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with contextlib.ExitStack() as stack:
                for offset in range(count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
    raise RuntimeError("no free ports below 32768")


def key_of(index: int) -> str:
    """The key of record ``index`` in the generated data: 14 bytes."""
    return f"key{index:011d}"


def write_csv(path: Path, records: int, seed: int = 1, chunk: int = 10_000) -> None:
    """A `key,value` CSV of ``records`` rows: 14-byte keys, 100-byte base64 values (no
    commas or quotes). Written chunk by chunk, so a 10M-record file never sits in memory."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(b"key,value\n")
        for start in range(0, records, chunk):
            n = min(chunk, records - start)
            values = base64.b64encode(rng.randbytes(75 * n))  # 100 characters per record
            f.write(b"".join(b"%s,%s\n" % (key_of(start + j).encode(), values[j * 100:(j + 1) * 100])
                             for j in range(n)))


# --------------------------------------------------------------------------------------
# The MariaDB pair
# --------------------------------------------------------------------------------------


def _connect_url(url: str, **extra):
    parts = urllib.parse.urlsplit(url)
    return mysql.connector.connect(
        host=parts.hostname, port=parts.port or 3306, user=urllib.parse.unquote(parts.username),
        password=urllib.parse.unquote(parts.password or ""), database=parts.path.lstrip("/"),
        autocommit=True, **extra)


def load_data(cnx, table: str, csv: Path) -> None:
    """``LOAD DATA LOCAL INFILE`` of a :func:`write_csv` file into ``table`` over ``cnx``
    (a :meth:`Sandbox.loader` connection): the benchmarks' baseline ingest."""
    cnx.cursor().execute(
        f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` FIELDS TERMINATED BY ',' "
        "OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' IGNORE 1 LINES (k, v)", (str(csv),))


class Sandbox:
    """A master + one GTID replica started by scripts/mysql-sandbox.sh in ``directory``."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.script_env = dict(os.environ, KVGRPC_SANDBOX_DIR=str(directory),
                               KVGRPC_SANDBOX_PORT=str(port), KVGRPC_SANDBOX_REPLICAS="1")
        self.env: dict[str, str] = {}
        self._cnx: dict[str, object] = {}

    def up(self) -> None:
        # Its own session, so a Ctrl-C meant for the benchmark does not reach mariadbd
        # before `down` stops it in order.
        result = subprocess.run(["bash", str(SANDBOX_SCRIPT), "up"], env=self.script_env,
                                capture_output=True, text=True, start_new_session=True)
        if result.returncode != 0:
            raise RuntimeError(f"mysql-sandbox.sh up failed:\n{result.stderr[-3000:]}")
        for line in (self.directory / "env").read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                self.env[name.strip()] = value.strip().strip("'\"")

    def down(self) -> None:
        for cnx in self._cnx.values():
            with contextlib.suppress(Exception):
                cnx.close()
        self._cnx.clear()
        subprocess.run(["bash", str(SANDBOX_SCRIPT), "down", "--purge"], env=self.script_env,
                       capture_output=True)

    def url(self, role: str) -> str:
        """The role's URL with its account's password (the env file keeps them apart)."""
        url = self.env[f"KVGRPC_{role.upper()}_URL"].split(",")[0]
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            password = self.env["KVGRPC_ADMIN_PASSWORD" if role.startswith("admin") else "KVGRPC_MYSQL_PASSWORD"]
            netloc = f"{parts.username}:{urllib.parse.quote(password, safe='')}@{parts.hostname}:{parts.port}"
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        return url

    def pid(self, role: str) -> int:
        return int(self.env[f"KVGRPC_SANDBOX_{role.upper()}_PID"])

    def connect(self, role: str, **extra):
        """A new autocommit connection as the application account."""
        return _connect_url(self.url(role), **extra)

    def loader(self, csv: Path):
        """A master connection that may send the server ``csv`` (and only files beside it)
        for :func:`load_data`."""
        return self.connect("master", allow_local_infile=True, allow_local_infile_in_path=str(csv.parent))

    def _cursor(self, role: str):
        """A cursor on a connection kept open for the benchmark's own queries."""
        if role not in self._cnx:
            self._cnx[role] = self.connect(role)
        return self._cnx[role].cursor()

    def query(self, role: str, sql: str, params=()) -> list[tuple]:
        cur = self._cursor(role)
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.with_rows else []
        cur.close()
        return rows

    def wait_replica(self, timeout: float = 1800) -> None:
        """Returns once the replica has applied everything the master has committed
        (MASTER_GTID_WAIT on the master's @@gtid_binlog_pos)."""
        ((pos,),) = self.query("master", "SELECT @@gtid_binlog_pos")
        ((result,),) = self.query("replica", "SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))
        if result != 0:
            raise RuntimeError(f"the replica did not reach {pos} within {timeout} s")

    def head_revision(self) -> int:
        """The master's latest revision: the sequence number of its last GTID."""
        ((pos,),) = self.query("master", "SELECT @@gtid_binlog_pos")
        return int(str(pos).rsplit("-", 1)[1])

    def empty_table(self, table: str) -> None:
        """Creates ``table`` if missing, empties it, and waits until the replica has too."""
        self.query("master", TABLE_DDL.format(table))
        self.query("master", f"TRUNCATE TABLE `{table}`")
        self.wait_replica()

    def count(self, table: str, role: str = "replica") -> int:
        return self.query(role, f"SELECT COUNT(*) FROM `{table}`")[0][0]

    def version(self) -> str:
        return self.query("master", "SELECT VERSION()")[0][0]

    def connections(self, role: str, ports: set[int] | None = None) -> dict[str, int]:
        """The application account's connections to ``role``: see :func:`connection_census`
        (on this object's own query connection, which is not counted)."""
        if role not in self._cnx:
            self._cnx[role] = self.connect(role)
        return connection_census(self._cnx[role], ports)


def connection_census(cnx, ports: set[int] | None = None, user: str = "kvgrpc") -> dict[str, int]:
    """``user``'s connections to the database of ``cnx`` (information_schema.PROCESSLIST),
    ``cnx`` itself excluded: ``total``; ``binlog_dump`` (COMMAND 'Binlog Dump...': a change
    feed); and, given ``ports`` (a process's local TCP ports, :func:`tcp_local_ports`),
    ``held`` / ``held_binlog_dump``: those whose client port is one of them."""
    cur = cnx.cursor()
    cur.execute("SELECT HOST, COMMAND FROM information_schema.PROCESSLIST "
                "WHERE USER = %s AND ID <> CONNECTION_ID()", (user,))
    rows = [(str(h), str(c)) for h, c in cur.fetchall()]
    cur.close()

    def port(host: str) -> int | None:
        tail = host.rsplit(":", 1)[-1]
        return int(tail) if ":" in host and tail.isdigit() else None

    held = [r for r in rows if ports is not None and port(r[0]) in ports]
    return {"total": len(rows), "binlog_dump": sum(1 for r in rows if r[1].startswith("Binlog Dump")),
            "held": len(held), "held_binlog_dump": sum(1 for r in held if r[1].startswith("Binlog Dump"))}


# --------------------------------------------------------------------------------------
# The kvgrpc server and CLI clients
# --------------------------------------------------------------------------------------


def _split_password(url: str) -> tuple[str, str]:
    """``mysql://user:pw@host:port/db`` -> (``mysql://user@host:port/db``, ``pw``)."""
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), urllib.parse.unquote(parts.password or "")


class KvServer:
    """``python -m kvgrpc.server`` as a subprocess, logging to ``log_path``. The database
    password goes in KVGRPC_MYSQL_PASSWORD, not on the command line (where ps shows it)."""

    def __init__(self, port: int, master_url: str, replica_url: str, table: str,
                 log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.log_path = log_path
        (master, password), (replica, _) = _split_password(master_url), _split_password(replica_url)
        self.env = dict(os.environ, KVGRPC_MYSQL_PASSWORD=password)
        self.command = [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1",
                        "--port", str(port), "--master", master, "--replica", replica,
                        "--table", table, "--shutdown-grace", "2", "--log-level", "INFO",
                        *extra_args]
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's processes: itself, and the children ``--processes N`` forks."""
        return tree_pids(self.proc.pid)

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.log_path.parent, env=self.env,
                                         start_new_session=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Waits for the channel to connect, then for a health Check to say SERVING."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kvgrpc server exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except (grpc.FutureTimeoutError, grpc.RpcError):
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"kvgrpc server not serving after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def driver(self) -> str:
        """The MySQL driver the server says it runs (its `driver:` log line)."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "driver:" in line:
                return line.split("driver:", 1)[1].strip()
        return "unknown (no 'driver:' line in the server log)"

    def stop(self) -> None:
        """SIGTERM (graceful, 2 s grace), then SIGKILL if it is still there after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class ClientRun:
    """One finished `python -m kvgrpc.client` process."""

    seconds: float  # from just before spawning it to its exit
    cpu: float  # its user + system CPU seconds (os.wait4: the process and all its threads)
    summary: str  # its last stdout line: "N records committed in S s (R records/s)"


def run_client(target: str, args: list[str], workdir: Path, on_start=None,
               command: list[str] | None = None) -> ClientRun:
    """Runs the kvgrpc CLI with ``args`` (or ``command``, another client program);
    ``on_start(pid)`` returns a context manager held while the process runs (e.g. an RSS
    sampler). Raises if it exits non-zero."""
    out, err = workdir / "client.out", workdir / "client.err"
    started = time.perf_counter()
    with open(out, "wb") as fout, open(err, "wb") as ferr:
        proc = subprocess.Popen(command or [sys.executable, "-m", "kvgrpc.client", "--target", target, *args],
                                stdout=fout, stderr=ferr, start_new_session=True)
    try:
        with on_start(proc.pid) if on_start else contextlib.nullcontext():
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"kvgrpc client {' '.join(args)} exited {proc.returncode}:\n"
                           f"{err.read_text(errors='replace')[-3000:]}")
    lines = out.read_text().strip().splitlines()
    return ClientRun(seconds, usage.ru_utime + usage.ru_stime, lines[-1] if lines else "")


# --------------------------------------------------------------------------------------
# Watcher processes (bench/watchers.py)
# --------------------------------------------------------------------------------------


@dataclass
class WatcherResult:
    counts: list[int]  # events received per watch
    done_at: float  # time.monotonic() when the process's last watch had everything
    resumes: int  # streams reopened after UNAVAILABLE or a server-sent CANCELLED
    server_cancelled: int  # of those, CANCELLED
    cancelled_unopened: int  # ... before the watch's first response
    cancelled_after_events: int  # ... once it had received events
    cpu: float  # user + system CPU of the process (os.wait4)
    error: str | None


class WatcherProcesses:
    """``processes`` x ``python bench/watchers.py`` (``watches`` each over ``channels``
    connections): ``start()`` returns once every watch is open; ``wait()`` once all have
    ``expect`` events, or raises."""

    def __init__(self, target: str, processes: int, watches: int, channels: int, expect: int,
                 workdir: Path, prefix: str = "", timeout: float = 1800.0) -> None:
        self.command = [sys.executable, str(REPO / "bench" / "watchers.py"), "--target", target,
                        "--watches", str(watches), "--channels", str(channels),
                        "--expect", str(expect), "--prefix", prefix, "--timeout", str(timeout)]
        self.count, self.expect, self.watches = processes, expect, watches
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self, timeout: float = 120.0) -> None:
        for i in range(self.count):
            err = open(self.workdir / f"watchers-{i}.err", "wb")  # noqa: SIM115 - the child's stderr
            self.procs.append(subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=err,
                                               text=True, start_new_session=True))
            err.close()
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            line = ""
            # readline blocks; a watcher process prints "ready" or its result and exits.
            while time.monotonic() < deadline and not line:
                line = proc.stdout.readline().strip()
                if not line and proc.poll() is not None:
                    break
            if line != "ready":
                self.kill()
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    line = f"error {json.loads(line)['error']}"
                raise RuntimeError(f"watcher process {i} did not get ready: {line[:500]} "
                                   f"{(self.workdir / f'watchers-{i}.err').read_text()[-2000:]}")

    def wait(self) -> list[WatcherResult]:
        results = []
        try:
            for i, proc in enumerate(self.procs):
                line = proc.stdout.readline()
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                try:
                    data = json.loads(line)
                except ValueError:
                    raise RuntimeError(f"watcher process {i} exited {proc.returncode}: {line[:300]} "
                                       f"{(self.workdir / f'watchers-{i}.err').read_text()[-2000:]}") from None
                results.append(WatcherResult(data["counts"], data["done_at"], data["resumes"],
                                             data["server_cancelled"], data["cancelled_unopened"],
                                             data["cancelled_after_events"],
                                             usage.ru_utime + usage.ru_stime, data["error"]))
        finally:
            self.kill()
        bad = [(i, r.error, sum(1 for n in r.counts if n != self.expect))
               for i, r in enumerate(results) if r.error or any(n != self.expect for n in r.counts)]
        if bad:
            raise RuntimeError(f"watchers did not receive {self.expect:,} events each: "
                               + "; ".join(f"process {i}: {n} watches short ({e})" for i, e, n in bad))
        return results

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
