"""The command line, run as a separate process against a real server, with hard CSVs."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading

import pytest

from kvgrpc.records import Limits
from tests.conftest import run_cli

# Every difficult case the issue lists, written by hand (not by the csv module) so the
# test does not share the parser's assumptions.
HARD_CSV = (
    "key,value\r\n"
    'plain,simple value\r\n'
    '"comma,key","a, b, c"\r\n'
    '"quote""key","she said ""hi"""\r\n'
    '"multi\nline key","line one\nline two\r\nline three"\r\n'
    "ñandú,日本語 🦤 ünïcödé\r\n"
    "\"'; DROP TABLE kv; --\",\"\\\\ %s %(x)s ' \"\" \\n\"\r\n"
    "empty-value,\r\n"
    + "€" * 1024 + ",the longest key: 3072 bytes\r\n"
    "last,end without newline"
)
HARD_EXPECTED = {
    "plain": "simple value",
    "comma,key": "a, b, c",
    'quote"key': 'she said "hi"',
    "multi\nline key": "line one\nline two\r\nline three",
    "ñandú": "日本語 🦤 ünïcödé",
    "'; DROP TABLE kv; --": "\\\\ %s %(x)s ' \" \\n",
    "empty-value": "",
    "€" * 1024: "the longest key: 3072 bytes",
    "last": "end without newline",
}


def _write(tmp_path, name: str, text: str, bom: bool = False):
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


def _contents(server, keys, sandbox=None) -> dict[str, bytes]:
    if sandbox is not None:
        sandbox.wait_for_replica()
    with server.client() as kv:
        return kv.batch_get(list(keys))


@pytest.mark.parametrize("bom", [False, True], ids=["utf8", "utf8-bom"])
def test_stream_hard_csv_lands_exactly_on_the_replica(mysql_server, sandbox, tmp_path, bom):
    path = _write(tmp_path, "hard.csv", HARD_CSV, bom=bom)
    result = run_cli("--target", mysql_server.target, "stream", path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"9 records committed in \d+\.\d\d s \([\d,]+ records/s\)\n", result.stdout)
    expected = {k: v.encode() for k, v in HARD_EXPECTED.items()}
    assert _contents(mysql_server, expected, sandbox) == expected
    # The replica itself holds exactly these rows.
    rows = sandbox.query(f"SELECT k, v FROM `{mysql_server.config.table}`", role="replica")
    assert {k.decode(): v for k, v in rows} == expected
    # Loading the same file again is idempotent.
    again = run_cli("--target", mysql_server.target, "stream", path)
    assert again.returncode == 0 and again.stdout.startswith("9 records committed")
    assert _contents(mysql_server, expected, sandbox) == expected


def test_stream_no_header(sqlite_server, tmp_path):
    path = _write(tmp_path, "nohdr.csv", "a,1\nb,2\n")
    result = run_cli("--target", sqlite_server.target, "stream", "--no-header", path)
    assert result.returncode == 0, result.stderr
    assert _contents(sqlite_server, ["a", "b"]) == {"a": b"1", "b": b"2"}


def test_stream_missing_header_is_a_clear_error_not_a_lost_record(sqlite_server, tmp_path):
    path = _write(tmp_path, "nohdr.csv", "a,1\nb,2\n")
    result = run_cli("--target", sqlite_server.target, "stream", path)
    assert result.returncode == 1
    assert "line 1 is 'a,1', not the header 'key,value'; pass --no-header" in result.stderr
    assert "0 records committed" in result.stdout
    assert _contents(sqlite_server, ["a", "b"]) == {}


def test_stream_malformed_row_stops_with_line_and_committed_count(mysql_server, sandbox, tmp_path):
    rows = ["key,value"] + [f"k{i},v{i}" for i in range(2000)]
    rows.insert(1502, "x,y,z")  # the 1501st data row: line 1503 of the file
    path = _write(tmp_path, "bad.csv", "\n".join(rows) + "\n")
    result = run_cli("--target", mysql_server.target, "stream", path)
    assert result.returncode == 1
    assert ("error: line 1503: row has 3 fields; expected 2 (key,value) "
            "(1501 records committed before it; --skip-bad skips such rows)") in result.stderr
    assert result.stdout.startswith("1501 records committed")
    got = _contents(mysql_server, [f"k{i}" for i in range(1000, 1510)], sandbox)
    assert set(got) == {f"k{i}" for i in range(1000, 1501)}


def test_stream_skip_bad_reports_and_skips(sqlite_server, tmp_path):
    text = "key,value\na,1\nx,y,z\n" + "€" * 1024 + "x,too long\n,empty key\nb,2\n"
    path = _write(tmp_path, "skip.csv", text)
    result = run_cli("--target", sqlite_server.target, "stream", "--skip-bad", path)
    assert result.returncode == 0, result.stderr
    assert "skipped line 3: row has 3 fields" in result.stderr
    assert "skipped line 4: key: key is 3073 bytes; the limit is 3072 bytes" in result.stderr
    assert "skipped line 5: key: key is empty" in result.stderr
    assert result.stdout.startswith("2 records committed") and "3 bad rows skipped" in result.stdout
    assert _contents(sqlite_server, ["a", "b"]) == {"a": b"1", "b": b"2"}


def test_stream_oversized_key_stops_the_load(sqlite_server, tmp_path):
    path = _write(tmp_path, "long.csv", "key,value\na,1\n" + "k" * 3073 + ",v\nb,2\n")
    result = run_cli("--target", sqlite_server.target, "stream", path)
    assert result.returncode == 1
    assert "line 3: key: key is 3073 bytes; the limit is 3072 bytes (1 records committed" in result.stderr


def test_stream_broken_quoting_stops_the_load(sqlite_server, tmp_path):
    path = _write(tmp_path, "quote.csv", 'key,value\na,1\n"b"x,2\nc,3\n')
    result = run_cli("--target", sqlite_server.target, "stream", "--skip-bad", path)
    assert result.returncode == 1
    assert "line 3: malformed CSV" in result.stderr and "(1 records committed" in result.stderr


def test_server_rejection_is_reported_with_the_file_line(start_server, tmp_path):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), limits=Limits(max_value_bytes=10))
    path = _write(tmp_path, "big.csv", 'key,value\na,1\n"b\nb",2\nc,' + "x" * 11 + "\nd,4\n")
    result = run_cli("--target", server.target, "stream", path)
    assert result.returncode == 1
    assert ("error: line 5: record 2: value is 11 bytes; the limit is 10 bytes "
            "(2 records committed before it)") in result.stderr
    assert _contents(server, ["a", "b\nb", "c", "d"]) == {"a": b"1", "b\nb": b"2"}


def test_put_get_delete_commands(sqlite_server):
    target = ("--target", sqlite_server.target)
    assert run_cli(*target, "put", "k", "välue").stdout == "ok (version 1)\n"
    assert run_cli(*target, "get", "k").stdout == "välue\n"
    assert run_cli(*target, "delete", "k").stdout == "deleted\n"
    missing = run_cli(*target, "get", "k")
    assert missing.returncode == 1 and missing.stderr == "error: key 'k' not found\n"


def test_target_from_environment_and_unreachable_server(sqlite_server):
    assert run_cli("put", "e", "1", env={"KVGRPC_TARGET": sqlite_server.target}).returncode == 0
    down = run_cli("--target", "127.0.0.1:1", "--timeout", "3", "get", "e")
    assert down.returncode == 1 and down.stderr.startswith("error: ")
    assert "Traceback" not in down.stderr


def test_stream_missing_file(sqlite_server, tmp_path):
    result = run_cli("--target", sqlite_server.target, "stream", str(tmp_path / "nope.csv"))
    assert result.returncode == 1 and "No such file" in result.stderr


def test_stream_shows_a_progress_bar_on_a_terminal(sqlite_server, tmp_path):
    path = _write(tmp_path, "p.csv", "key,value\n" + "".join(f"k{i},v\n" for i in range(5000)))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100x24 terminal
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvgrpc.client", "--target", sqlite_server.target, "stream", path],
        stdout=subprocess.PIPE, stderr=slave, text=True,
    )
    os.close(slave)
    chunks = []

    def read_terminal():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    out, _ = proc.communicate(timeout=60)
    reader.join(10)
    os.close(master)
    screen = b"".join(chunks)
    assert proc.returncode == 0 and out.startswith("5000 records committed")
    assert b"sent" in screen and b"5.00k" in screen  # tqdm's bar: "sent: 5.00k records [...]"


def test_shell_runs_commands_from_its_input(sqlite_server):
    script = "\n".join([
        "put greeting 'hello world'",
        "get greeting",
        "put other x",
        "scan",
        "scan gr",
        "del greeting",
        "get greeting",
        "put onlyone",
        "bogus",
        "status",
        "quit",
    ]) + "\n"
    result = run_cli("--target", sqlite_server.target, "shell", stdin=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ok (version 1)",
        "hello world",
        "ok (version 1)",
        "greeting = hello world",
        "other = x",
        "greeting = hello world",
        "deleted",
        "error: key 'greeting' not found",
        "error: expected 2 argument(s); try 'help'",
        "error: unknown command 'bogus'; try 'help'",
        f"embedded healthy, lag 0 ms, pool 0/1: {sqlite_server.server.service.writer.description}",
    ]
