"""Throw-away MariaDB master + GTID read replicas for kvgrpc: ``python -m kvgrpc.ops.sandbox``.

    python -m kvgrpc.ops.sandbox up [--replicas N] [--tls]
    python -m kvgrpc.ops.sandbox down [--purge] | status | env | install
    python -m kvgrpc.ops.sandbox kill ROLE | stop ROLE | start ROLE | wipe master

``up`` creates (from nothing) and starts a master and N replicas (1 to 9; roles ``master``,
``replica``, ``replica2`` …) on 127.0.0.1, with semi-synchronous GTID replication
(``AFTER_SYNC``), ``gtid_strict_mode`` and durable settings on every node; waits until every
replica has caught up; writes ``<dir>/env`` and prints ``export NAME=value`` lines, so that
``eval "$(python -m kvgrpc.ops.sandbox up)"`` sets them. Printed URLs hold no password: the
application accounts' password is ``KVGRPC_MYSQL_PASSWORD`` (which the server and the CLI
read), the admin account's ``KVGRPC_ADMIN_PASSWORD``. If the sandbox already runs, ``up``
prints them again.

Every node starts ``read_only``; ``up`` opens the master (``read_only=0``) once it is set
up, and ``start`` re-opens the node the sandbox opened last only when no other running node
is writable, so that a restarted old master never becomes a second master after a
promotion.

Accounts (each on ``127.0.0.1`` and ``localhost``), least privilege:

============== ================================================ ==============================
URL variable   account and grants                               for
============== ================================================ ==============================
WRITER_URL     ``kvgrpc_writer``: SELECT, INSERT, UPDATE,       a server's ``--master``
               DELETE, CREATE on ``kvgrpc.*``
READER_URL     ``kvgrpc_reader``: SELECT on ``kvgrpc.*``        a server's ``--replica``
FEED_URL       ``kvgrpc_feed``: REPLICATION SLAVE, BINLOG       Watch's binlog feed
               MONITOR on ``*.*``; SELECT on ``kvgrpc.*``
MASTER_URL,    ``kvgrpc``: all of the above plus SLAVE MONITOR   one account for everything a
REPLICA_URL    and PROCESS (what a server given one URL needs)  server does (the tests)
ADMIN_*_URL    ``kvgrpc_admin``: ALL PRIVILEGES WITH GRANT       ``kvgrpc-admin``
============== ================================================ ==============================

The writer, reader, feed and ``kvgrpc`` accounts share ``KVGRPC_MYSQL_PASSWORD`` (a server
takes one password for all its URLs); the replication account ``repl`` and the admin
account have their own. ``<dir>/secrets`` (mode 600) keeps them all.

``--tls`` makes a CA and a server certificate (openssl; SAN ``IP:127.0.0.1``,
``DNS:localhost``), starts every node with it and ``require_secure_transport``, replicates
over TLS, and puts ``?ssl-mode=VERIFY_IDENTITY&ssl-ca=<dir>/tls/ca.pem`` in every URL; the CA
is ``KVGRPC_SANDBOX_CA``.

Fault injection (bounded; each updates the PIDs in ``<dir>/env``): ``kill ROLE`` (SIGKILL,
waits until it is gone), ``stop ROLE`` (clean shutdown), ``start ROLE`` (starts a stopped
node again on its datadir; a replica reconnects by itself), ``wipe master`` (only while the
master is down: a blank master in its place, same accounts and port, nothing binlogged).

Environment: ``KVGRPC_SANDBOX_DIR`` (default ``<repo>/.sandbox``), ``KVGRPC_SANDBOX_PORT``
(the master's port, default 23306; replica N uses port+N, all below 32768),
``KVGRPC_SANDBOX_REPLICAS`` (default 1; ``--replicas`` wins), ``KVGRPC_SANDBOX_TLS=1`` (as
``--tls``). Commands other than ``up`` use the port and replica count recorded in the env
file. The nodes never read ``/etc/mysql`` or ``~/.my.cnf`` (``--defaults-file``), use their
own datadir, socket, pid file and tmpdir, and listen on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import fcntl
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 23306
MAX_REPLICAS = 9
#: Seconds to wait for start-up, replication and shutdown.
TIMEOUT = 30.0
#: How long (ms) a commit on the master waits for a replica's ack before semi-sync falls
#: back to asynchronous replication.
SEMISYNC_TIMEOUT_MS = 1000
#: Written into the sandbox directory; only a directory holding it is ever emptied.
MARKER = ".kvgrpc-mysql-sandbox"
DATABASE = "kvgrpc"
_BINARIES = ("mariadbd", "mariadb-install-db", "mariadb", "mariadb-admin")
_PACKAGES = ("mariadb-server", "mariadb-client")


class SandboxError(Exception):
    """A sandbox command failed; the message says why (and holds the error log's tail)."""


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

#: mariadbd processes started by this Python process, so that they are reaped (no zombie
#: lingers in a test run that kills one).
_STARTED: dict[int, subprocess.Popen] = {}


def _pid_alive(pid: int) -> bool:
    """Is ``pid`` a live process (not a zombie)?"""
    proc = _STARTED.get(pid)
    if proc is not None and proc.poll() is not None:
        _STARTED.pop(pid, None)
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def find_binary(name: str) -> str | None:
    """``name`` in PATH or the usual system directories (a user's PATH often lacks sbin)."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return shutil.which(name, path=path)


def ensure_binaries() -> dict[str, str]:
    """The MariaDB binaries; installs Debian's packages with apt-get (as root) if missing.

    Only installs when missing: an existing system server is never touched.
    """
    found = {name: find_binary(name) for name in _BINARIES}
    if all(found.values()):
        return found  # type: ignore[return-value]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SandboxError(
            "MariaDB binaries (" + ", ".join(n for n, p in found.items() if not p) + ") not found; "
            f"install them, e.g.: sudo apt-get install -y --no-install-recommends {' '.join(_PACKAGES)}")
    _LOGGER.info("MariaDB binaries not found; installing %s with apt-get", " ".join(_PACKAGES))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *_PACKAGES]):
        subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
    found = {name: find_binary(name) for name in _BINARIES}
    if not all(found.values()):
        raise SandboxError(f"MariaDB binaries still missing after installing {' '.join(_PACKAGES)}")
    return found  # type: ignore[return-value]


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise SandboxError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def gtid_ahead(position: str, other: str) -> str:
    """The GTIDs of ``position`` in domains where ``other`` is behind or absent ('' if none)."""
    seq = {}
    for gtid in filter(None, (g.strip() for g in other.split(","))):
        domain, _, n = gtid.split("-")
        seq[domain] = int(n)
    ahead = [g.strip() for g in position.split(",") if g.strip()
             and (g.strip().split("-")[0] not in seq or int(g.strip().split("-")[2]) > seq[g.strip().split("-")[0]])]
    return ",".join(ahead)


# --------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------


def role_index(role: str) -> int:
    """0 for ``master``, 1 for ``replica``, N for ``replicaN``."""
    if role == "master":
        return 0
    if role == "replica":
        return 1
    match = re.fullmatch(r"replica([2-9])", role)
    if not match:
        raise SandboxError(f"unknown role {role!r}: master, replica, replica2 … replica{MAX_REPLICAS}")
    return int(match.group(1))


def role_name(index: int) -> str:
    return "master" if index == 0 else "replica" if index == 1 else f"replica{index}"


@dataclass
class Sandbox:
    """A sandbox directory and how its nodes are laid out. Not thread-safe; commands on one
    directory are serialised across processes by a lock on the directory itself."""

    dir: Path
    port: int = DEFAULT_PORT
    replicas: int = 1
    tls: bool = False

    @classmethod
    def from_environ(cls, environ: dict[str, str] | os._Environ = os.environ, *,
                     replicas: int | None = None, tls: bool | None = None) -> Sandbox:
        """The sandbox the environment names (``KVGRPC_SANDBOX_*``); validated."""
        directory = Path(environ.get("KVGRPC_SANDBOX_DIR") or REPO_DIR / ".sandbox")
        port_text = environ.get("KVGRPC_SANDBOX_PORT") or str(DEFAULT_PORT)
        count_text = str(replicas) if replicas is not None else environ.get("KVGRPC_SANDBOX_REPLICAS") or "1"
        if not port_text.isdigit():
            raise SandboxError(f"KVGRPC_SANDBOX_PORT must be a number, got {port_text!r}")
        if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_REPLICAS:
            raise SandboxError(f"the number of replicas must be 1..{MAX_REPLICAS}, got {count_text!r}")
        if tls is None:
            tls = environ.get("KVGRPC_SANDBOX_TLS", "") in ("1", "yes", "on", "true")
        box = cls(directory.absolute(), int(port_text), int(count_text), tls)
        box.validate()
        return box

    def validate(self) -> None:
        if not (self.port >= 1024 and self.port + self.replicas < 32768):
            raise SandboxError(
                f"KVGRPC_SANDBOX_PORT must be in 1024..{32767 - self.replicas} (replicas use "
                f"port+1..port+{self.replicas}, all below 32768, the ephemeral range)")
        if self.dir in (Path.home(), REPO_DIR, Path("/")):
            raise SandboxError(f"refusing to use {self.dir} as the sandbox directory")
        sock = str(self.socket(self.roles[-1]))
        if len(sock) > 107:
            raise SandboxError(f"socket path {sock} is too long; set a shorter KVGRPC_SANDBOX_DIR")

    # -- layout ---------------------------------------------------------------------

    @property
    def roles(self) -> list[str]:
        return [role_name(i) for i in range(self.replicas + 1)]

    @property
    def replica_roles(self) -> list[str]:
        return self.roles[1:]

    def role_dir(self, role: str) -> Path:
        return self.dir / role

    def cnf(self, role: str) -> Path:
        return self.role_dir(role) / "my.cnf"

    def socket(self, role: str) -> Path:
        return self.role_dir(role) / "mysqld.sock"

    def pid_file(self, role: str) -> Path:
        return self.role_dir(role) / "mysqld.pid"

    def error_log(self, role: str) -> Path:
        return self.role_dir(role) / "error.log"

    def port_of(self, role: str) -> int:
        return self.port + role_index(role)

    @property
    def env_file(self) -> Path:
        return self.dir / "env"

    @property
    def secrets_file(self) -> Path:
        return self.dir / "secrets"

    @property
    def ca_file(self) -> Path:
        return self.dir / "tls" / "ca.pem"

    # -- env file ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The env file's values ({} when there is none)."""
        return _read_env(self.env_file)

    def adopt_recorded(self) -> None:
        """For every command but ``up``: the port, replica count and TLS recorded in the
        env file win over the environment."""
        env = self.env()
        if env.get("KVGRPC_SANDBOX_REPLICAS", "").isdigit():
            self.replicas = int(env["KVGRPC_SANDBOX_REPLICAS"])
        if env.get("KVGRPC_SANDBOX_MASTER_PORT", "").isdigit():
            self.port = int(env["KVGRPC_SANDBOX_MASTER_PORT"])
        self.tls = env.get("KVGRPC_SANDBOX_TLS") == "1"

    def exports(self) -> str:
        """``export NAME=value`` lines for the shell (connection details, no PIDs)."""
        env = self.env()
        names = ["KVGRPC_MASTER_URL", "KVGRPC_REPLICA_URL", "KVGRPC_MYSQL_PASSWORD",
                 "KVGRPC_WRITER_URL", "KVGRPC_READER_URL", "KVGRPC_FEED_URL",
                 "KVGRPC_ADMIN_MASTER_URL", "KVGRPC_ADMIN_REPLICA_URL", "KVGRPC_ADMIN_PASSWORD",
                 "KVGRPC_REPL_PASSWORD", "KVGRPC_SANDBOX_CA"]
        return "".join(f"export {n}={shlex.quote(env[n])}\n" for n in names if env.get(n))

    def _url(self, user: str, roles: Sequence[str]) -> str:
        query = f"?ssl-mode=VERIFY_IDENTITY&ssl-ca={self.ca_file}" if self.tls else ""
        return ",".join(f"mysql://{user}@127.0.0.1:{self.port_of(r)}/{DATABASE}{query}" for r in roles)

    def _write_env(self, passwords: dict[str, str], writable: str) -> None:
        values = {
            "KVGRPC_MASTER_URL": self._url("kvgrpc", ["master"]),
            "KVGRPC_REPLICA_URL": self._url("kvgrpc", self.replica_roles),
            "KVGRPC_MYSQL_PASSWORD": passwords["app"],
            "KVGRPC_WRITER_URL": self._url("kvgrpc_writer", ["master"]),
            "KVGRPC_READER_URL": self._url("kvgrpc_reader", self.replica_roles),
            "KVGRPC_FEED_URL": self._url("kvgrpc_feed", ["master"]),
            "KVGRPC_ADMIN_MASTER_URL": self._url("kvgrpc_admin", ["master"]),
            "KVGRPC_ADMIN_REPLICA_URL": self._url("kvgrpc_admin", self.replica_roles),
            "KVGRPC_ADMIN_PASSWORD": passwords["admin"],
            # For `kvgrpc-admin switchover` (attaching the old master as a replica).
            "KVGRPC_REPL_USER": "repl",
            "KVGRPC_REPL_PASSWORD": passwords["repl"],
        }
        if self.tls:
            values["KVGRPC_SANDBOX_CA"] = str(self.ca_file)
        for role in self.roles:
            prefix = f"KVGRPC_SANDBOX_{role.upper()}"
            values[f"{prefix}_SOCKET"] = str(self.socket(role))
            values[f"{prefix}_PID"] = str(self.running_pid(role) or "")
            values[f"{prefix}_PORT"] = str(self.port_of(role))
        values["KVGRPC_SANDBOX_REPLICAS"] = str(self.replicas)
        values["KVGRPC_SANDBOX_TLS"] = "1" if self.tls else "0"
        values["KVGRPC_SANDBOX_WRITABLE"] = writable
        _write_private(self.env_file, "".join(f"{k}={shlex.quote(v) if v else ''}\n"
                                              for k, v in values.items()))

    def _refresh_pids(self, writable: str | None = None) -> None:
        env = self.env()
        if not env:
            return
        for role in self.roles:
            env[f"KVGRPC_SANDBOX_{role.upper()}_PID"] = str(self.running_pid(role) or "")
        if writable is not None:
            env["KVGRPC_SANDBOX_WRITABLE"] = writable
        _write_private(self.env_file, "".join(f"{k}={shlex.quote(v) if v else ''}\n"
                                              for k, v in env.items()))

    def _passwords(self) -> dict[str, str]:
        values = _read_env(self.secrets_file)
        passwords = {"app": values.get("KVGRPC_SANDBOX_APP_PASSWORD", ""),
                     "admin": values.get("KVGRPC_SANDBOX_ADMIN_PASSWORD", ""),
                     "repl": values.get("KVGRPC_SANDBOX_REPL_PASSWORD", "")}
        if not all(passwords.values()):
            raise SandboxError(f"passwords missing from {self.secrets_file}; run down and up")
        return passwords

    # -- processes ----------------------------------------------------------------------

    def _is_ours(self, role: str, pid: int) -> bool:
        """Is ``pid`` a live mariadbd of ``role`` of this sandbox (not a reused PID)?"""
        if not _pid_alive(pid):
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"--defaults-file={self.cnf(role)}".encode() in argv

    def running_pid(self, role: str) -> int | None:
        """The PID of ``role``'s mariadbd if it runs."""
        try:
            text = self.pid_file(role).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and self._is_ours(role, int(text)) else None

    def _start_process(self, role: str, binaries: dict[str, str]) -> tuple[subprocess.Popen, int]:
        """Starts ``role``'s mariadbd detached (own session, no inherited descriptors);
        returns it and where this start's messages begin in its error log."""
        log = self.error_log(role)
        offset = log.stat().st_size if log.exists() else 0
        argv = [binaries["mariadbd"], f"--defaults-file={self.cnf(role)}"]
        if os.geteuid() == 0:
            argv.append("--user=root")  # mariadbd refuses to run as root unless told
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)
        _STARTED[proc.pid] = proc
        return proc, offset

    def _wait_ready(self, role: str, proc: subprocess.Popen, offset: int) -> None:
        """Waits until ``role`` accepts connections on its socket (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                self.sql(role, "SELECT 1", timeout=1).close()
                return
            except SandboxError:
                pass
            if proc.poll() is not None:
                _STARTED.pop(proc.pid, None)
                tail = self._log_tail(role, offset)
                if "Address already in use" in tail:
                    raise SandboxError(f"{role} mariadbd could not listen on 127.0.0.1:"
                                       f"{self.port_of(role)}: the port is in use by another process")
                raise SandboxError(f"{role} mariadbd exited during start-up:\n{tail}")
            if time.monotonic() >= deadline:
                raise SandboxError(f"{role} did not accept connections within {TIMEOUT:g} s:\n"
                                   f"{self._log_tail(role, offset)}")
            time.sleep(0.05)

    def _log_tail(self, role: str, offset: int = 0, lines: int = 25) -> str:
        try:
            with open(self.error_log(role), "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no error log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def _stop_pid(self, role: str, pid: int, sig: int = signal.SIGTERM) -> None:
        """Sends ``sig`` (TERM: clean shutdown; KILL: a crash) and waits until it is gone."""
        if not self._is_ours(role, pid):
            return
        _LOGGER.info("%s %s (pid %d)", "killing" if sig == signal.SIGKILL else "stopping", role, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        try:
            _wait(lambda: not self._is_ours(role, pid), TIMEOUT, f"{role} (pid {pid}) to exit", 0.02)
        except SandboxError:
            if sig == signal.SIGKILL:
                raise
            _LOGGER.warning("%s (pid %d) did not stop within %g s; sending KILL", role, pid, TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait(lambda: not self._is_ours(role, pid), 5, f"{role} (pid {pid}) to die")
        proc = _STARTED.pop(pid, None)
        if proc is not None:
            proc.wait(timeout=5)
        if sig == signal.SIGKILL:
            self.pid_file(role).unlink(missing_ok=True)  # a killed server leaves it behind

    def _stop_every_node(self) -> bool:
        """Stops every node of this directory (any replica count), replicas first."""
        stopped = False
        roles = sorted((p.name for p in self.dir.iterdir() if (p / "my.cnf").exists()),
                       key=lambda r: -role_index(r)) if self.dir.is_dir() else []
        for role in roles:
            pid = self.running_pid(role)
            if pid:
                self._stop_pid(role, pid)
                stopped = True
        return stopped

    # -- SQL ------------------------------------------------------------------------------

    def sql(self, role: str, *statements: str, timeout: int = 5):
        """Runs ``statements`` as root over ``role``'s unix socket; returns the connection
        (autocommit) for more. Raises SandboxError when it cannot connect."""
        import mysql.connector

        try:
            cnx = mysql.connector.connect(unix_socket=str(self.socket(role)), user="root",
                                          autocommit=True, connection_timeout=timeout)
        except (mysql.connector.Error, OSError) as exc:
            raise SandboxError(f"cannot connect to {role}: {exc}") from exc
        cur = cnx.cursor()
        for statement in statements:
            cur.execute(statement)
            if cur.with_rows:  # type: ignore[union-attr]
                cur.fetchall()
        cur.close()
        return cnx

    def query(self, role: str, statement: str, params: Sequence = ()) -> list[tuple]:
        """Rows of one statement run as root on ``role``."""
        cnx = self.sql(role)
        try:
            cur = cnx.cursor()
            cur.execute(statement, tuple(params))
            return cur.fetchall() if cur.with_rows else []
        finally:
            cnx.close()

    def _status_var(self, role: str, name: str) -> str:
        rows = self.query(role, "SHOW GLOBAL STATUS LIKE %s", (name,))
        return str(rows[0][1]) if rows else ""

    def slave_status(self, role: str) -> dict[str, str]:
        cnx = self.sql(role)
        try:
            cur = cnx.cursor(dictionary=True)
            cur.execute("SHOW SLAVE STATUS")
            rows = cur.fetchall()
            return {k: "" if v is None else str(v) for k, v in rows[0].items()} if rows else {}
        finally:
            cnx.close()

    # -- set-up ------------------------------------------------------------------------------

    def _write_cnf(self, role: str) -> None:
        d = self.role_dir(role)
        (d / "data").mkdir(parents=True, exist_ok=True)
        (d / "tmp").mkdir(exist_ok=True)
        master = role == "master"
        tls = ""
        if self.tls:
            t = self.dir / "tls"
            tls = (f"ssl_ca = {t / 'ca.pem'}\nssl_cert = {t / 'server.pem'}\nssl_key = {t / 'server.key'}\n"
                   "# Unix sockets count as secure; TCP needs TLS.\nrequire_secure_transport = ON\n")
        self.cnf(role).write_text(f"""\
# Generated by python -m kvgrpc.ops.sandbox -- do not edit; recreated by 'up'.
# Only this file is read (--defaults-file); /etc/mysql is ignored.
[mysqld]
datadir              = {d / 'data'}
socket               = {self.socket(role)}
pid-file             = {self.pid_file(role)}
log-error            = {self.error_log(role)}
# Private tmpdir: at start-up mariadbd deletes every '#sql*' file in its tmpdir.
tmpdir               = {d / 'tmp'}
port                 = {self.port_of(role)}
bind-address         = 127.0.0.1
skip-name-resolve
max_connections      = 300
innodb_buffer_pool_size = 256M
max_allowed_packet   = 64M
local_infile         = 1
character-set-server = utf8mb4
{tls}
# Durability: every commit is fsynced to the redo log and the binlog.
innodb_flush_log_at_trx_commit = 1
sync_binlog          = 1
binlog_format        = ROW
server_id            = {role_index(role) + 1}
log_bin              = {d / 'data' / role}-bin
log_slave_updates    = 1
relay_log            = {d / 'data'}/relay-bin
relay_log_index      = {d / 'data'}/relay-bin.index
report_host          = 127.0.0.1
report_port          = {self.port_of(role)}
# A replica refuses a GTID out of sequence instead of silently skipping or reordering:
# a blank master at the old address, or a row written on a replica alone, stops it.
gtid_strict_mode     = ON
# Every node starts read-only; only a promotion (or 'up' for the first master) opens one,
# so that no node restarted after a failover becomes a second master.
read_only            = 1

# Semi-synchronous replication: AFTER_SYNC waits for a replica's ack after the binlog
# fsync and before the engine commit, so no session sees a transaction no replica has.
# Every node has both sides on, so that a promoted replica is a semi-sync master at once
# and a repointed old master acknowledges.
rpl_semi_sync_master_enabled    = ON
rpl_semi_sync_master_timeout    = {SEMISYNC_TIMEOUT_MS}
rpl_semi_sync_master_wait_point = AFTER_SYNC
rpl_semi_sync_slave_enabled     = ON
# ON on the master: with no replica connected a commit waits the timeout once, then falls
# back. OFF on replicas: otherwise the first transaction applied after every start waits
# the timeout for acks from replicas of the replica that do not exist.
rpl_semi_sync_master_wait_no_slave = {'ON' if master else 'OFF'}

# For manual poking: mariadb --defaults-file={self.cnf(role)}
[client]
socket               = {self.socket(role)}
user                 = root
""")

    def _make_certificates(self) -> None:
        """A CA and a server certificate for 127.0.0.1 and localhost (EC P-256: quick)."""
        if not shutil.which("openssl"):
            raise SandboxError("--tls needs the openssl command (apt-get install openssl)")
        t = self.dir / "tls"
        t.mkdir(exist_ok=True)
        (t / "server.ext").write_text(
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n"
            "keyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for cmd in (
            ["req", "-x509", *ec, "-days", "30", "-subj", "/CN=kvgrpc sandbox CA",
             "-keyout", "ca.key", "-out", "ca.pem"],
            ["req", *ec, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "30", "-extfile", "server.ext", "-out", "server.pem"],
        ):
            result = subprocess.run(["openssl", *cmd], cwd=t, capture_output=True, text=True)
            if result.returncode != 0:
                raise SandboxError(f"openssl {cmd[0]} failed: {result.stderr.strip()}")

    def _install_db(self, role: str, binaries: dict[str, str], datadir: Path | None = None) -> None:
        """mariadb-install-db into ``datadir`` (default: ``<role>/data.installed``, copied
        from there to the nodes)."""
        datadir = datadir or self.role_dir(role) / "data.installed"
        datadir.mkdir(parents=True, exist_ok=True)
        argv = [binaries["mariadb-install-db"], f"--defaults-file={self.cnf(role)}", f"--datadir={datadir}",
                "--auth-root-authentication-method=normal", "--skip-test-db",
                "--skip-name-resolve", "--force"]
        if os.geteuid() == 0:
            argv.insert(2, "--user=root")
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise SandboxError(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}"
                               f"{self._log_tail(role)}")

    def _template(self, binaries: dict[str, str]) -> Path:
        """A freshly installed datadir to copy: kept in a private cache directory
        (``KVGRPC_SANDBOX_CACHE``, default ``~/.cache/kvgrpc``; ``0`` turns it off), one per
        MariaDB build and layout version, made by mariadb-install-db on first use. Saves
        install-db's ~0.6 s on every later ``up``."""
        setting = os.environ.get("KVGRPC_SANDBOX_CACHE", "")
        if setting == "0":
            self._install_db("master", binaries)
            return self.role_dir("master") / "data.installed"
        base = Path(setting) if setting else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvgrpc"
        stats = [os.stat(binaries[name]) for name in ("mariadbd", "mariadb-install-db")]
        key = "-".join(f"{int(st.st_mtime)}.{st.st_size}" for st in stats)
        template = base / f"sandbox-datadir-v{_DATADIR_LAYOUT}-{os.geteuid()}-{key}"
        if (template / "mysql").is_dir():
            return template
        self._install_db("master", binaries)
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            _LOGGER.info("no datadir cache (%s)", exc)
            return self.role_dir("master") / "data.installed"
        staging = Path(f"{template}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        _copy_datadir(self.role_dir("master") / "data.installed", staging)
        try:
            staging.rename(template)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
        return template

    def _repl_account_sql(self, password: str) -> list[str]:
        ssl = " REQUIRE SSL" if self.tls else ""
        return [f"CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '{password}'{ssl}",
                "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'"]

    def _accounts_sql(self, passwords: dict[str, str]) -> list[str]:
        ssl = " REQUIRE SSL" if self.tls else ""
        out = [
            # root keeps only the unix socket (install-db also opened it on 127.0.0.1 and ::1).
            "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1'",
            f"CREATE DATABASE IF NOT EXISTS `{DATABASE}` CHARACTER SET utf8mb4",
        ]
        grants = {
            "kvgrpc": [f"ALL PRIVILEGES ON `{DATABASE}`.*",
                       # Observing replication, reading the binlog for Watch.
                       "BINLOG MONITOR, SLAVE MONITOR, PROCESS, REPLICATION SLAVE ON *.*"],
            "kvgrpc_writer": [f"SELECT, INSERT, UPDATE, DELETE, CREATE ON `{DATABASE}`.*"],
            "kvgrpc_reader": [f"SELECT ON `{DATABASE}`.*"],
            # The feed's library reads the table's columns (information_schema needs SELECT).
            "kvgrpc_feed": ["REPLICATION SLAVE, BINLOG MONITOR ON *.*", f"SELECT ON `{DATABASE}`.*"],
            "kvgrpc_admin": ["ALL PRIVILEGES ON *.*"],
        }
        for user, privileges in grants.items():
            password = passwords["admin" if user == "kvgrpc_admin" else "app"]
            hosts = f"'{user}'@'127.0.0.1', '{user}'@'localhost'"
            out.append(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}', "
                       f"'{user}'@'localhost' IDENTIFIED BY '{password}'")
            if ssl:
                out.append(f"ALTER USER {hosts}{ssl}")
            for privilege in privileges:
                grant_option = " WITH GRANT OPTION" if user == "kvgrpc_admin" else ""
                out.append(f"GRANT {privilege} TO {hosts}{grant_option}")
        return out

    def _change_master_sql(self, password: str, master: str = "master") -> str:
        ssl = f", MASTER_SSL=1, MASTER_SSL_CA='{self.ca_file}'" if self.tls else ""
        return (f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.port_of(master)}, "
                f"MASTER_USER='repl', MASTER_PASSWORD='{password}', MASTER_USE_GTID=slave_pos, "
                f"MASTER_CONNECT_RETRY=1{ssl}")

    def _wait_replicated(self, role: str, position: str) -> None:
        """Waits until ``role`` has applied ``position`` with both threads running."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            (done,) = self.query(role, "SELECT MASTER_GTID_WAIT(%s, 1)", (position,))[0]
            st = self.slave_status(role)
            io, sql = st.get("Slave_IO_Running"), st.get("Slave_SQL_Running")
            if done == 0 and io == "Yes" and sql == "Yes":
                return
            if io == "No" or sql == "No" or time.monotonic() >= deadline:
                raise SandboxError(
                    f"{role} did not catch up with the master's position {position} (IO={io} "
                    f"SQL={sql}; IO error: {st.get('Last_IO_Error')!r}; SQL error: "
                    f"{st.get('Last_SQL_Error')!r}):\n{self._log_tail(role)}")

    def _wait_status(self, role: str, name: str, want: Callable[[str], bool], what: str) -> None:
        _wait(lambda: want(self._status_var(role, name)), TIMEOUT, f"{role}: {what}")

    # -- locking ------------------------------------------------------------------------------

    def _claim_dir(self) -> None:
        """Creates the directory (or adopts an empty one) and marks it as the sandbox's."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / MARKER).exists():
            if any(self.dir.iterdir()):
                raise SandboxError(f"{self.dir} exists, is not empty and was not created by the "
                                   "sandbox; refusing to use it")
            (self.dir / MARKER).write_text("created by kvgrpc.ops.sandbox; safe to delete when "
                                           "the servers are down\n")
        gitignore = self.dir / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("*\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises commands on this directory (other processes, e.g. test workers)."""
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _LOGGER.info("waiting for another sandbox command on %s", self.dir)
                deadline = time.monotonic() + 120
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise SandboxError(f"timed out waiting for the lock on {self.dir}") from None
                        time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def _require(self, role: str) -> None:
        if not (self.dir / MARKER).exists():
            raise SandboxError(f"no sandbox in {self.dir} (run: python -m kvgrpc.ops.sandbox up)")
        if not self.env_file.exists():
            raise SandboxError(f"the sandbox in {self.dir} was never completely set up (no env file); run up")
        role_index(role)
        if role not in self.roles or not self.cnf(role).exists():
            raise SandboxError(f"unknown role {role!r}; this sandbox has: {', '.join(self.roles)}")

    def is_up(self) -> bool:
        """Every node recorded in the env file runs."""
        env = self.env()
        if not env:
            return False
        count = int(env.get("KVGRPC_SANDBOX_REPLICAS", "1"))
        return all(self.running_pid(role_name(i)) for i in range(count + 1))

    # -- commands ---------------------------------------------------------------------------

    def up(self) -> str:
        """Creates and starts the sandbox (or finds it running); returns the export lines."""
        self._claim_dir()
        with self._locked():
            if self.is_up():
                env = self.env()
                recorded = (int(env.get("KVGRPC_SANDBOX_MASTER_PORT", 0)),
                            int(env.get("KVGRPC_SANDBOX_REPLICAS", 1)), env.get("KVGRPC_SANDBOX_TLS") == "1")
                if recorded != (self.port, self.replicas, self.tls):
                    raise SandboxError(
                        f"the sandbox in {self.dir} already runs with port {recorded[0]}, "
                        f"{recorded[1]} replica(s), TLS {'on' if recorded[2] else 'off'}; run 'down' "
                        "first to change them")
                _LOGGER.info("already up (%s)", self.dir)
                return self.exports()
            binaries = ensure_binaries()
            # Half-alive (a node died, an interrupted up): start over from nothing.
            self._stop_every_node()
            for role in self.roles:
                if _port_in_use(self.port_of(role)):
                    raise SandboxError(f"port {self.port_of(role)} on 127.0.0.1 is already in use; "
                                       "set KVGRPC_SANDBOX_PORT")
            for path in self.dir.iterdir():
                if path.name not in (MARKER, ".gitignore"):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            started: list[tuple[str, subprocess.Popen]] = []
            try:
                self._up(binaries, started)
            except BaseException:
                for role, proc in reversed(started):
                    with contextlib.suppress(Exception):
                        self._stop_pid(role, proc.pid, signal.SIGKILL)
                _LOGGER.error("up failed; logs are in %s", self.dir)
                raise
            _LOGGER.info("env written to %s", self.env_file)
            return self.exports()

    def _up(self, binaries: dict[str, str], started: list) -> None:
        t0 = time.monotonic()
        for role in self.roles:
            self._write_cnf(role)
        with ThreadPoolExecutor(max_workers=len(self.roles)) as pool:
            certificates = pool.submit(self._make_certificates) if self.tls else None
            # One install-db, copied for each node: a fresh datadir holds no server identity
            # (server_id, binlog and GTID state come from my.cnf and replication);
            # mysql-test-run does the same. The copy is kept (see _template) for the next up.
            template = self._template(binaries)
            copies = [pool.submit(_copy_datadir, template, self.role_dir(role) / "data")
                      for role in self.roles]
            for future in copies:
                future.result()
            if certificates is not None:
                certificates.result()
            procs = {}
            for role in self.roles:
                proc, offset = self._start_process(role, binaries)
                started.append((role, proc))
                procs[role] = (proc, offset)
            # The first on this thread: the MySQL client library (the connector's C extension)
            # initialises itself on a process's first connection, which is not thread-safe
            # (mysql_library_init); the nodes start meanwhile all the same.
            first, *others = self.roles
            self._wait_ready(first, *procs[first])
            for future in [pool.submit(self._wait_ready, role, *procs[role]) for role in others]:
                future.result()
            _LOGGER.info("master up on 127.0.0.1:%d, replicas on port(s) %s (%.1f s)", self.port_of("master"),
                         ", ".join(str(self.port_of(r)) for r in self.replica_roles), time.monotonic() - t0)

            passwords = {name: secrets.token_hex(12) for name in ("app", "admin", "repl")}
            # The replication account on every node, not binlogged, before replication starts
            # (a semi-sync master without replicas would make its first commit wait the timeout).
            repl = ["SET sql_log_bin = 0", *self._repl_account_sql(passwords["repl"])]

            def setup(role: str) -> None:
                statements = list(repl)
                if role != "master":
                    statements += [self._change_master_sql(passwords["repl"]), "START SLAVE"]
                self.sql(role, *statements).close()

            for future in [pool.submit(setup, role) for role in self.roles]:
                future.result()
        self._wait_status("master", "Rpl_semi_sync_master_clients", lambda v: v.isdigit() and int(v) >= self.replicas,
                          f"{self.replicas} semi-sync replica(s) connected")
        # The database and the other accounts, binlogged: they reach the replicas.
        cnx = self.sql("master", *self._accounts_sql(passwords))
        cur = cnx.cursor()
        cur.execute("SELECT @@gtid_binlog_pos")
        (position,) = cur.fetchone()
        cnx.close()
        for role in self.replica_roles:
            self._wait_replicated(role, position)
        self._wait_status("master", "Rpl_semi_sync_master_status", lambda v: v == "ON", "semi-sync ON")
        for role in self.replica_roles:
            self._wait_status(role, "Rpl_semi_sync_slave_status", lambda v: v == "ON", "semi-sync ON")
        # Only now is the master opened for writes.
        self.sql("master", "SET GLOBAL read_only = 0").close()
        _write_private(self.secrets_file,
                       "# Passwords of the sandbox accounts; read by 'wipe master'.\n"
                       f"KVGRPC_SANDBOX_APP_PASSWORD={passwords['app']}\n"
                       f"KVGRPC_SANDBOX_ADMIN_PASSWORD={passwords['admin']}\n"
                       f"KVGRPC_SANDBOX_REPL_PASSWORD={passwords['repl']}\n")
        self._write_env(passwords, "master")
        _LOGGER.info("replicas in sync with the master at GTID %s; semi-sync ON; up in %.1f s",
                     position, time.monotonic() - t0)

    def down(self, purge: bool = False) -> None:
        """Stops every node (by the PIDs in their pid files only); ``purge`` removes the directory."""
        if not self.dir.exists():
            _LOGGER.info("nothing to do: %s does not exist", self.dir)
            return
        if not (self.dir / MARKER).exists():
            raise SandboxError(f"{self.dir} was not created by the sandbox; not touching it")
        with self._locked():
            if not self._stop_every_node():
                _LOGGER.info("no sandbox server was running")
            if purge:
                shutil.rmtree(self.dir)
                _LOGGER.info("removed %s", self.dir)
            else:
                self._refresh_pids()

    def status(self) -> tuple[str, bool]:
        """A report of every node, replication and semi-sync; and whether all is healthy
        (every node runs, threads run, semi-sync active, no replica ahead of the master)."""
        lines, healthy = [], True
        for role in self.roles:
            pid = self.running_pid(role)
            if pid:
                lines.append(f"{role + ':':<9} running (pid {pid}, 127.0.0.1:{self.port_of(role)}, "
                             f"socket {self.socket(role)})")
            else:
                lines.append(f"{role + ':':<9} not running")
                healthy = False
        master_up = self.running_pid("master") is not None
        if master_up:
            values = {n: self._status_var("master", f"Rpl_semi_sync_master_{n}")
                      for n in ("status", "clients", "yes_tx", "no_tx")}
            (read_only,) = self.query("master", "SELECT @@read_only")[0]
            lines.append(f"semi-sync master: Rpl_semi_sync_master_status={values['status']} clients="
                         f"{values['clients']} yes_tx={values['yes_tx']} no_tx={values['no_tx']}"
                         f" read_only={read_only}")
            healthy &= values["status"] == "ON"
        for role in self.replica_roles:
            if not self.running_pid(role):
                continue
            st = self.slave_status(role)
            sss = self._status_var(role, "Rpl_semi_sync_slave_status")
            lines.append(f"replication {role}: Slave_IO_Running={st.get('Slave_IO_Running', '?')} "
                         f"Slave_SQL_Running={st.get('Slave_SQL_Running', '?')} Seconds_Behind_Master="
                         f"{st.get('Seconds_Behind_Master', '')} Gtid_IO_Pos={st.get('Gtid_IO_Pos', '')} "
                         f"Rpl_semi_sync_slave_status={sss or '?'}")
            for name in ("Last_IO_Error", "Last_SQL_Error"):
                if st.get(name):
                    lines.append(f"{role} {name}: {st[name]}")
            healthy &= st.get("Slave_IO_Running") == "Yes" and st.get("Slave_SQL_Running") == "Yes" and sss == "ON"
            if master_up:
                # Replica first: the master only moves ahead in between.
                (spos,) = self.query(role, "SELECT @@GLOBAL.gtid_slave_pos")[0]
                (mpos,) = self.query("master", "SELECT @@GLOBAL.gtid_binlog_pos")[0]
                ahead = gtid_ahead(str(spos or ""), str(mpos or ""))
                if ahead:
                    lines.append(f"{role} DIVERGED: has applied {ahead}, beyond the master's binlog "
                                 f"(gtid_binlog_pos {mpos or 'empty'})")
                    healthy = False
        return "\n".join(lines), healthy

    def kill(self, role: str) -> None:
        """SIGKILL, as a crash would; waits (bounded) until it is gone."""
        self._require(role)
        with self._locked():
            pid = self.running_pid(role)
            if pid is None:
                _LOGGER.info("%s is not running", role)
            else:
                self._stop_pid(role, pid, signal.SIGKILL)
            self._refresh_pids()

    def stop(self, role: str) -> None:
        """Clean shutdown (TERM, bounded wait, then KILL)."""
        self._require(role)
        with self._locked():
            pid = self.running_pid(role)
            if pid is None:
                _LOGGER.info("%s is not running", role)
            else:
                self._stop_pid(role, pid)
            self._refresh_pids()

    def start(self, role: str) -> None:
        """Starts a stopped or killed node again on its datadir and waits until it accepts
        connections (a replica reconnects by itself; this does not wait for it to catch up).

        The node starts read-only. If it is the node the sandbox opened last
        (``KVGRPC_SANDBOX_WRITABLE``) and no other running node is writable, it is opened.
        """
        self._require(role)
        binaries = ensure_binaries()
        with self._locked():
            pid = self.running_pid(role)
            if pid is not None:
                _LOGGER.info("%s is already running (pid %d)", role, pid)
                self._refresh_pids()
                return
            if not (self.role_dir(role) / "data" / "mysql").is_dir():
                hint = " (use 'wipe master' to create a blank one)" if role == "master" else ""
                raise SandboxError(f"{role} has no initialised datadir in {self.role_dir(role)}/data{hint}")
            self._check_port_free(role)
            proc, offset = self._start_process(role, binaries)
            try:
                self._wait_ready(role, proc, offset)
            except BaseException:
                self._stop_pid(role, proc.pid, signal.SIGKILL)
                raise
            if self.env().get("KVGRPC_SANDBOX_WRITABLE") == role:
                others = [r for r in self.roles if r != role and self.running_pid(r)
                          and not self.query(r, "SELECT @@read_only")[0][0]]
                if others:
                    _LOGGER.warning("%s stays read-only: %s is writable", role, ", ".join(others))
                else:
                    self.sql(role, "SET GLOBAL read_only = 0").close()
            self._refresh_pids()
            _LOGGER.info("%s started (pid %d, 127.0.0.1:%d)", role, proc.pid, self.port_of(role))

    def wipe(self, role: str) -> None:
        """A blank master (accounts only, nothing binlogged, read-only) in place of a dead
        one. The replicas are not touched: they reconnect to it, and ``status`` reports them
        as diverged (they have GTIDs its binlog lacks) until ``kvgrpc-admin restore``."""
        if role != "master":
            raise SandboxError(f"wipe supports only the master, not {role!r}")
        self._require(role)
        binaries = ensure_binaries()
        with self._locked():
            pid = self.running_pid(role)
            if pid is not None:
                raise SandboxError(f"master is running (pid {pid}); kill or stop it first")
            passwords = self._passwords()
            self._check_port_free(role)
            _LOGGER.info("destroying the master's datadir %s/data", self.role_dir(role))
            shutil.rmtree(self.role_dir(role) / "data")
            self.pid_file(role).unlink(missing_ok=True)
            (self.role_dir(role) / "data").mkdir()
            self._install_db(role, binaries, self.role_dir(role) / "data")
            proc, offset = self._start_process(role, binaries)
            try:
                self._wait_ready(role, proc, offset)
                self.sql(role, "SET sql_log_bin = 0", *self._repl_account_sql(passwords["repl"]),
                         *self._accounts_sql(passwords)).close()
            except BaseException:
                self._stop_pid(role, proc.pid, signal.SIGKILL)
                raise
            self._refresh_pids()
            _LOGGER.info("master replaced by a blank, read-only server (pid %d, 127.0.0.1:%d); "
                         "replicas untouched", proc.pid, self.port_of(role))

    def _check_port_free(self, role: str) -> None:
        if _port_in_use(self.port_of(role)):
            raise SandboxError(f"cannot start {role}: port {self.port_of(role)} on 127.0.0.1 is "
                               "already in use by another process")


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


#: Bump when the generated my.cnf changes what mariadb-install-db writes (the cache key).
_DATADIR_LAYOUT = 1


def _copy_datadir(source: Path, target: Path) -> None:
    """Copies a datadir (sparse: the redo log is mostly zeros)."""
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["cp", "-a", "--sparse=always", "--", f"{source}/.", f"{target}/"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(f"copying a fresh datadir to {target} failed: {result.stderr.strip()}")


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            parsed = shlex.split(value) if value.strip() else [""]
            values[name.strip()] = parsed[0] if parsed else ""
    return values


def _write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically, mode 600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kvgrpc.ops.sandbox",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Environment: KVGRPC_SANDBOX_DIR, KVGRPC_SANDBOX_PORT, "
                                       "KVGRPC_SANDBOX_REPLICAS, KVGRPC_SANDBOX_TLS.")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create and start the sandbox; print export lines")
    up.add_argument("--replicas", type=int, default=None, help=f"1..{MAX_REPLICAS} (default 1)")
    up.add_argument("--tls", action="store_true", default=None, help="TLS on every node")
    down = sub.add_parser("down", help="stop every node")
    down.add_argument("--purge", action="store_true", help="also remove the sandbox directory")
    sub.add_parser("status", help="nodes, replication and semi-sync; exit 1 unless healthy")
    sub.add_parser("env", help="print the env file if the sandbox is up")
    sub.add_parser("install", help="install the MariaDB binaries if missing")
    for name, text in (("kill", "SIGKILL a node"), ("stop", "stop a node cleanly"),
                       ("start", "start a stopped node"), ("wipe", "a blank master in place of a dead one")):
        sub.add_parser(name, help=text).add_argument("role", metavar="ROLE")
    return p


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A crash in a C extension (a CI run once saw `up` die of SIGSEGV, silently) then
    # leaves a Python stack on stderr.
    faulthandler.enable()
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("mysql-sandbox: %(message)s"))
        _LOGGER.addHandler(handler)
        _LOGGER.setLevel(logging.INFO)
        _LOGGER.propagate = False
    environ = dict(os.environ if environ is None else environ)
    try:
        if args.command == "install":
            found = ensure_binaries()
            _LOGGER.info("using %s", ", ".join(found.values()))
            return 0
        box = Sandbox.from_environ(environ, replicas=getattr(args, "replicas", None),
                                   tls=getattr(args, "tls", None))
        if args.command == "up":
            sys.stdout.write(box.up())
            return 0
        box.adopt_recorded()
        if args.command == "down":
            box.down(args.purge)
        elif args.command == "status":
            report, healthy = box.status()
            print(report)
            return 0 if healthy else 1
        elif args.command == "env":
            if not box.is_up():
                raise SandboxError(f"the sandbox in {box.dir} is not up (run: python -m kvgrpc.ops.sandbox up)")
            sys.stdout.write(box.env_file.read_text())
        else:
            getattr(box, args.command)(args.role)
        return 0
    except SandboxError as exc:
        _LOGGER.error("error: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
