"""A small hostile MySQL server for tests: it speaks enough of the protocol for
mysql-connector (C extension and pure Python) and PyMySQL to log in and run queries, and
answers chosen queries with a LOCAL INFILE request (``0xFB`` + a file name) — what a
spoofed or compromised database server would do to read files of the client's host.

It accepts any user and password (it switches every client to ``mysql_native_password``
and then says OK), answers ``SELECT @@max_allowed_packet, VERSION()`` and the heartbeat
lag query with plausible rows, other SELECTs with an empty result and anything else with
OK. Everything a client sends in answer to a file request is kept in ``received``.
Loopback only; each connection has its own thread; ``close()`` stops it.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

_CAPABILITIES = (
    0x1 | 0x2 | 0x4 | 0x8  # long password, found rows, long flag, connect with db
    | 0x80  # LOCAL_FILES
    | 0x200 | 0x2000 | 0x8000  # protocol 4.1, transactions, secure connection
    | 0x10000 | 0x20000 | 0x40000  # multi statements / results, PS multi results
    | 0x80000 | 0x100000 | 0x200000  # plugin auth, connect attrs, lenenc auth data
)
_SCRAMBLE = b"abcdefghijklmnopqrst"


def _lenenc_int(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def _lenenc_str(data: bytes) -> bytes:
    return _lenenc_int(len(data)) + data


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    def read(self) -> bytes:
        """One logical packet (joining 16 MiB continuation packets)."""
        payload = b""
        while True:
            header = self._read_exact(4)
            length = header[0] | header[1] << 8 | header[2] << 16
            self.seq = (header[3] + 1) & 0xFF
            payload += self._read_exact(length)
            if length < 0xFFFFFF:
                return payload

    def write(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) & 0xFF

    def ok(self, status: int = 0x0002) -> None:
        self.write(b"\x00\x00\x00" + struct.pack("<HH", status, 0))

    def eof(self, status: int = 0x0002) -> None:
        self.write(b"\xfe" + struct.pack("<HH", 0, status))

    def result(self, columns: list[str], rows: list[list[bytes]]) -> None:
        self.write(_lenenc_int(len(columns)))
        for name in columns:
            self.write(b"".join(_lenenc_str(x) for x in (b"def", b"", b"", b"", name.encode(), b""))
                       + b"\x0c" + struct.pack("<HIBHB", 63, 255, 253, 0, 0) + b"\x00\x00")
        self.eof()
        for row in rows:
            self.write(b"".join(_lenenc_str(v) for v in row))
        self.eof()


class FakeMySQLServer:
    """Listens on 127.0.0.1 (``port``). ``trap(sql, n)`` says whether the ``n``-th query
    (0-based) of a connection gets a request for ``steal`` instead of an answer."""

    def __init__(self, steal: str, trap: Callable[[str, int], bool]) -> None:
        self.steal = steal
        self.trap = trap
        self.received: list[bytes] = []  # what clients sent in answer to file requests
        self.requests = 0  # file requests made
        self.queries: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket, number: int) -> None:
        sock.settimeout(1)  # a client that stops answering (e.g. it refused a file) is dropped
        conn = _Conn(sock)
        try:
            self._handshake(conn, number)
            n = 0
            while not self._closed.is_set():
                packet = conn.read()
                command, body = packet[0], packet[1:]
                if command in (0x01, 0x12):  # COM_QUIT; COM_BINLOG_DUMP: no binlog here
                    return
                if command != 0x03:  # COM_PING, COM_INIT_DB, reset...: fine
                    conn.ok()
                    continue
                sql = body.decode("utf-8", "replace")
                with self._lock:
                    self.queries.append(sql)
                if self.trap(sql, n):
                    self._request_file(conn)
                else:
                    self._answer(conn, sql)
                n += 1
        except (ConnectionError, OSError):
            pass
        finally:
            sock.close()

    def _handshake(self, conn: _Conn, number: int) -> None:
        conn.seq = 0
        conn.write(
            b"\x0a" + b"5.5.5-10.11.6-MariaDB-fake\x00" + struct.pack("<I", number)
            + _SCRAMBLE[:8] + b"\x00" + struct.pack("<H", _CAPABILITIES & 0xFFFF)
            + bytes([45]) + struct.pack("<H", 0x0002) + struct.pack("<H", _CAPABILITIES >> 16)
            + bytes([21]) + b"\x00" * 10 + _SCRAMBLE[8:] + b"\x00" + b"mysql_native_password\x00"
        )
        conn.read()  # the handshake response: any user, any password
        conn.write(b"\xfe" + b"mysql_native_password\x00" + _SCRAMBLE + b"\x00")  # auth switch
        conn.read()  # the scrambled password: accepted whatever it is
        conn.ok()

    def _request_file(self, conn: _Conn) -> None:
        with self._lock:
            self.requests += 1
        conn.write(b"\xfb" + self.steal.encode())
        data = b""
        while True:  # the file's content, then an empty packet (or only the empty packet)
            packet = conn.read()
            if not packet:
                break
            data += packet
        with self._lock:
            self.received.append(data)
        conn.ok()

    def _answer(self, conn: _Conn, sql: str) -> None:
        upper = sql.upper()
        if "@@MAX_ALLOWED_PACKET" in upper:
            conn.result(["a", "b"], [[b"16777216", b"10.11.6-MariaDB-fake"]])
        elif "TIMESTAMPDIFF" in upper:
            conn.result(["lag"], [[b"0"]])
        elif upper.lstrip().startswith(("SELECT", "SHOW")):
            conn.result(["x"], [])
        else:
            conn.ok()

    def got(self, secret: bytes) -> bool:
        """Whether any client sent ``secret``."""
        with self._lock:
            return any(secret in data for data in self.received)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=6)
