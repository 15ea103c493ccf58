"""The command line, run as a separate process against a real server, with hard CSVs."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import pty
import re
import shlex
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest

from kvgrpc.records import Limits
from kvgrpc.cli.commands import main as cli_main
from tests.conftest import CLI_AS_IN_A_TERMINAL, run_cli

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


def assert_one_resume_command(result, target: str, path: str, *flags: str) -> list[str]:
    """The failed run printed exactly one resume command, for this target, file and flags;
    returns its words."""
    commands = re.findall(r"^resume with: (.*)$", result.stderr, re.M)
    assert len(commands) == 1, result.stderr
    words = shlex.split(commands[0])
    assert words[:5] == ["python", "-m", "kvgrpc.client", "--target", target]
    assert words[5:8] == ["stream", path, "--load-id"]
    assert uuid.UUID(words[8]).version == 4
    assert words[9:] == list(flags)
    return words


def cli(*args: str) -> tuple[int, str, str]:
    """Runs the command line in this process (faster than run_cli where stdin and the
    process boundary do not matter): (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = cli_main(list(args), out, err)
    return status, out.getvalue(), err.getvalue()


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
    target = re.escape(mysql_server.target)
    assert re.fullmatch(rf"9 records committed to {target} in \d+\.\d\d s \([\d,]+ records/s\)\n",
                        result.stdout)
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
    assert result.stderr == (f"error: {path}: line 1 is 'a,1', not the header 'key,value'; "
                             "pass --no-header if the file has no header row\n")
    assert result.stdout == ""  # checked before the load starts: nothing to resume
    assert _contents(sqlite_server, ["a", "b"]) == {}


def test_stream_malformed_row_stops_with_line_and_committed_count(mysql_server, sandbox, tmp_path):
    rows = ["key,value"] + [f"k{i},v{i}" for i in range(2000)]
    rows.insert(1502, "x,y,z")  # the 1501st data row: line 1503 of the file
    path = _write(tmp_path, "bad.csv", "\n".join(rows) + "\n")
    result = run_cli("--target", mysql_server.target, "stream", path)
    assert result.returncode == 1
    assert ("error: line 1503: row has 3 fields; expected 2 (key,value) "
            "(1501 records committed before it; --skip-bad skips such rows)") in result.stderr
    assert_one_resume_command(result, mysql_server.target, path)
    assert result.stdout.startswith("1501 records committed")
    got = _contents(mysql_server, [f"k{i}" for i in range(1000, 1510)], sandbox)
    assert set(got) == {f"k{i}" for i in range(1000, 1501)}


def test_stream_skip_bad_reports_and_skips(sqlite_server, tmp_path):
    text = "key,value\na,1\nx,y,z\n" + "€" * 1024 + "x,too long\n,empty key\nb,2\n"
    path = _write(tmp_path, "skip.csv", text)
    result = run_cli("--target", sqlite_server.target, "stream", "--skip-bad", path)
    assert result.returncode == 0, result.stderr
    assert "skipped line 3: row has 3 fields" in result.stderr
    assert "skipped line 4: key is 3073 bytes; the limit is 3072 bytes" in result.stderr
    assert "skipped line 5: key is empty" in result.stderr
    assert result.stdout.startswith("2 records committed") and "3 bad rows skipped" in result.stdout
    assert _contents(sqlite_server, ["a", "b"]) == {"a": b"1", "b": b"2"}


def test_stream_oversized_key_stops_the_load(sqlite_server, tmp_path):
    path = _write(tmp_path, "long.csv", "key,value\na,1\n" + "k" * 3073 + ",v\nb,2\n")
    result = run_cli("--target", sqlite_server.target, "stream", path)
    assert result.returncode == 1
    assert ("error: line 3: key is 3073 bytes; the limit is 3072 bytes (1 record committed before "
            "it; --skip-bad skips such rows)\n") in result.stderr


def test_stream_broken_quoting_stops_the_load(sqlite_server, tmp_path):
    path = _write(tmp_path, "quote.csv", 'key,value\na,1\n"b"x,2\nc,3\n')
    result = run_cli("--target", sqlite_server.target, "stream", "--skip-bad", path)
    assert result.returncode == 1
    assert ("error: line 3: malformed CSV (',' expected after '\"') (1 record committed before it)\n"
            in result.stderr)  # no --skip-bad hint: it cannot skip broken quoting
    assert_one_resume_command(result, sqlite_server.target, path, "--skip-bad")


def test_a_value_over_the_servers_limit_is_a_bad_row_at_its_line(start_server, tmp_path):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), limits=Limits(max_value_bytes=10))
    path = _write(tmp_path, "big.csv", 'key,value\na,1\n"b\nb",2\nc,' + "x" * 11 + "\nd,4\n")
    result = run_cli("--target", server.target, "stream", path)
    assert result.returncode == 1
    assert ("error: line 5: value is 11 bytes; the server's limit is 10 bytes "
            "(2 records committed before it; --skip-bad skips such rows)\n") in result.stderr
    assert _contents(server, ["a", "b\nb", "c", "d"]) == {"a": b"1", "b\nb": b"2"}
    skipping = run_cli("--target", server.target, "stream", "--skip-bad", path)
    assert skipping.returncode == 0, skipping.stderr
    assert "skipped line 5: value is 11 bytes; the server's limit is 10 bytes\n" in skipping.stderr
    assert skipping.stdout.startswith("3 records committed") and "; 1 bad row skipped\n" in skipping.stdout
    assert _contents(server, ["a", "b\nb", "c", "d"]) == {"a": b"1", "b\nb": b"2", "d": b"4"}
    status, out, _ = cli("--target", server.target, "stream", "--skip-bad", "-o", "json", path)
    summary = json.loads(out)
    assert status == 0 and uuid.UUID(summary.pop("load_id")) and summary.pop("seconds") >= 0
    assert summary == {"target": server.target, "committed": 3, "committed_before": 0,
                       "bad_rows_skipped": 1, "blank_lines_skipped": 0, "ok": True}


def test_put_get_delete_commands(sqlite_server):
    target = ("--target", sqlite_server.target)
    assert run_cli(*target, "put", "k", "välue").stdout == f"ok (version 1 on {sqlite_server.target})\n"
    assert run_cli(*target, "get", "k").stdout == "välue\n"
    assert run_cli(*target, "delete", "k").stdout == f"deleted (on {sqlite_server.target})\n"
    missing = run_cli(*target, "get", "k")
    assert missing.returncode == 1 and missing.stderr == "error: key 'k' not found\n"


def test_target_from_environment(sqlite_server):
    assert run_cli("put", "e", "1", env={"KVGRPC_TARGET": sqlite_server.target}).returncode == 0


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
    assert result.returncode == 1, result.stderr  # piped, and commands failed
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


# --------------------------------------------------------------------------------------
# The CSV loader never misreports (issue 10, item 3)
# --------------------------------------------------------------------------------------


def _mib_value(size: int) -> bytes:
    """``size`` bytes of UTF-8 text full of what CSV must quote: commas, quotes, CR, LF."""
    unit = 'a,b "quoted" ñ€🦤\r\nline\n'.encode()
    value = (unit * (size // len(unit) + 1))[: size - len(unit)]
    return value + b"x" * (size - len(value))  # ASCII padding: never cuts a character


def test_a_1_mib_value_loads_byte_exact(mysql_server, sandbox, tmp_path):
    value = _mib_value(1 << 20)
    assert len(value) == 1 << 20
    value.decode("utf-8")  # valid UTF-8 throughout
    quoted = b'"' + value.replace(b'"', b'""') + b'"'
    too_big = b"y" * ((1 << 20) + 1)
    path = tmp_path / "mib.csv"
    path.write_bytes(b"key,value\r\nsmall,1\r\nmib," + quoted + b"\r\ntoo-big," + too_big
                     + b"\r\nafter,2\r\n")
    result = run_cli("--target", mysql_server.target, "stream", "--skip-bad", str(path))
    assert result.returncode == 0, result.stderr
    line = 4 + value.count(b"\n")  # the 1 MiB value spans lines 3 to 3 + its newlines
    assert result.stderr == f"skipped line {line}: value is 1048577 bytes; the server's limit is 1048576 bytes\n"
    assert result.stdout.startswith("3 records committed") and "; 1 bad row skipped\n" in result.stdout
    sandbox.wait_for_replica()
    rows = dict(sandbox.query(f"SELECT k, v FROM `{mysql_server.config.table}`", role="replica"))
    assert rows == {b"small": b"1", b"mib": value, b"after": b"2"}


def test_invalid_utf8_is_reported_at_its_true_line_and_skipped_alone(sqlite_server, tmp_path):
    rows = [b"key,value"] + [b"k%d,value %d" % (i, i) for i in range(20_000)]
    rows[4000] = b"k3999,caf\xe9 latin-1"  # line 4001 of the file
    path = tmp_path / "utf8.csv"
    path.write_bytes(b"\n".join(rows) + b"\n")
    stopped = run_cli("--target", sqlite_server.target, "stream", str(path))
    assert stopped.returncode == 1
    assert ("error: line 4001: value is not valid UTF-8 (byte 0xe9 at byte 3 of the value) "
            "(3999 records committed before it; --skip-bad skips such rows)\n") in stopped.stderr
    assert stopped.stdout.startswith("3999 records committed")
    assert_one_resume_command(stopped, sqlite_server.target, str(path))

    skipping = run_cli("--target", sqlite_server.target, "stream", "--skip-bad", str(path))
    assert skipping.returncode == 0, skipping.stderr
    assert skipping.stderr == ("skipped line 4001: value is not valid UTF-8 (byte 0xe9 at byte 3 "
                               "of the value)\n")
    assert skipping.stdout.startswith("19999 records committed to ")
    assert skipping.stdout.endswith("; 1 bad row skipped\n")
    with sqlite_server.client() as kv:
        keys = [r.key for r in kv.scan(keys_only=True, page_size=1000)]
    assert len(keys) == 19_999 and "k3999" not in keys and {"k3998", "k4000", "k19999"} <= set(keys)


def test_the_resume_command_sends_exactly_the_records_not_committed(sqlite_server, tmp_path):
    # Needs the server side of named loads (GetLoad; the `loads` branch).
    rows = ["key,value"] + [f"k{i},v{i}" for i in range(2000)]
    rows.insert(1502, "x,y,z")  # line 1503: stops the load after 1501 records
    path = _write(tmp_path, "resume.csv", "\n".join(rows) + "\n")
    first = run_cli("--target", sqlite_server.target, "stream", path)
    assert first.returncode == 1 and first.stdout.startswith("1501 records committed")
    words = assert_one_resume_command(first, sqlite_server.target, path)
    rows[1502] = "x,fixed"  # the user fixes the row, then pastes the command
    Path(path).write_text("\n".join(rows) + "\n")
    second = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert f"load {words[8]}: 1501 records committed by earlier runs; sending the rest" in second.stderr
    assert second.stdout.startswith(f"500 records committed to {sqlite_server.target} in ")
    assert "; 1501 records committed before, by earlier runs of the load" in second.stdout
    with sqlite_server.client() as kv:
        records = list(kv.scan(page_size=1000))
    assert {r.key: r.value for r in records} == {
        **{f"k{i}": f"v{i}".encode() for i in range(2000)}, "x": b"fixed"}
    assert {r.version for r in records} == {1}  # nothing was written twice


# --------------------------------------------------------------------------------------
# Parity with etcdctl / redis-cli (issue 10, item 4)
# --------------------------------------------------------------------------------------


def test_get_scan_status_and_watch_in_text_and_json(sqlite_server):
    t = ("--target", sqlite_server.target)
    assert cli("put", "tab\tkey", "line1\nline2\x01", *t)[0] == 0  # global flag after the command
    assert cli(*t, "put", "plain", "välue")[0] == 0
    assert cli(*t, "get", "tab\tkey", "plain") == (0, "tab\\tkey\tline1\\nline2\\x01\nplain\tvälue\n", "")
    status, out, err = cli(*t, "get", "plain", "nope", "-o", "json")
    assert status == 1 and err == "error: key 'nope' not found\n"
    assert [json.loads(line) for line in out.splitlines()] == [{"key": "plain", "value": "välue"}]
    assert cli("get", "plain", "--output", "json", *t)[1] == '{"key":"plain","value":"välue","version":1}\n'
    assert cli(*t, "scan") == (0, "plain\tvälue\ntab\\tkey\tline1\\nline2\\x01\n", "")
    assert cli(*t, "scan", "--keys-only", "--limit", "1") == (0, "plain\n", "")
    assert cli(*t, "scan", "t", "-o", "json", "--consistency", "strong")[1] == (
        '{"key":"tab\\tkey","value":"line1\\nline2\\u0001","version":1}\n')
    status, out, _ = cli(*t, "status")
    assert status == 0 and out.splitlines()[0] == f"server {sqlite_server.target}:"
    max_value = sqlite_server.config.limits.max_value_bytes
    assert f"limits: max_value_bytes {max_value}, " in out.splitlines()[-1]
    status, out, _ = cli("status", "-o", "json", *t)
    endpoint, limits = map(json.loads, out.splitlines())
    assert endpoint["target"] == sqlite_server.target and endpoint["role"] == "embedded"
    assert limits["limits"]["max_value_bytes"] == max_value and limits["limits"]["max_scan_page_size"] > 0
    status, out, _ = cli(*t, "watch", "--prefix", "", "--from-revision", "0", "--count", "2")
    first, second = out.splitlines()
    assert first.split("\t")[1:] == ["PUT", "tab\\tkey", "line1\\nline2\\x01"]
    assert second.split("\t")[1:] == ["PUT", "plain", "välue"]
    status, out, _ = cli(*t, "-o", "json", "watch", "plain", "--from-revision", "0", "--count", "1")
    event = json.loads(out)
    assert {k: event[k] for k in ("type", "key", "value", "version")} == {
        "type": "put", "key": "plain", "value": "välue", "version": 1}


def test_put_from_stdin_from_a_file_and_compare_and_set(sqlite_server, tmp_path):
    t = ("--target", sqlite_server.target)
    binary = bytes(range(256))
    result = subprocess.run([sys.executable, "-m", "kvgrpc.client", *t, "put", "bin", "-"],
                            input=binary, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (tmp_path / "value").write_bytes(b"from a file\n")
    assert cli(*t, "put", "file", "--value-file", str(tmp_path / "value"))[0] == 0
    with sqlite_server.client() as kv:
        assert kv.get("bin") == binary and kv.get("file") == b"from a file\n"
    out = cli(*t, "get", "bin", "-o", "json")[1]
    assert json.loads(out)["value_base64"] == base64.b64encode(bytes(range(256))).decode()
    assert cli(*t, "put", "file", "new", "--expected-version", "0") == (
        1, "", "error: key 'file': the key is at version 1; the write expected it not to exist\n")
    assert cli(*t, "put", "file", "new", "--expected-version", "1", "-o", "json") == (
        0, f'{{"key":"file","version":2,"target":"{sqlite_server.target}"}}\n', "")
    with pytest.raises(SystemExit) as usage:  # a value and --value-file: a usage error
        cli(*t, "put", "k", "v", "--value-file", "x")
    assert usage.value.code == 2


def test_every_command_fails_fast_with_one_line_when_the_server_is_down(tmp_path):
    path = _write(tmp_path, "r.csv", "key,value\na,1\n")
    down = ("--target", "127.0.0.1:1", "--timeout", "3")
    commands = [("put", "k", "v"), ("get", "k"), ("get", "a", "b"), ("delete", "k"), ("scan",),
                ("status",), ("stream", path), ("watch", "k"), ("watch", "--prefix", "")]
    for command in commands:  # one at a time, so that each is timed alone
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "kvgrpc.client", *down, *command],
                              capture_output=True, text=True, timeout=60)
        seconds = time.monotonic() - started
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert proc.stdout == "" and proc.stderr.startswith("error: 127.0.0.1:1"), (command, proc.stderr)
        assert proc.stderr.count("\n") == 1, (command, proc.stderr)
        # within the 3 s deadline (watch waits it to connect; reads are retried within it),
        # plus the interpreter's start-up on a busy machine
        assert seconds < 3 + 5, (command, seconds)


def test_entry_points(sqlite_server):
    for argv in ([sys.executable, "-m", "kvgrpc.cli"], [sys.executable, "-m", "kvgrpc.client"],
                 [str(Path(sys.executable).with_name("kvgrpc"))]):
        result = subprocess.run([*argv, "--target", sqlite_server.target, "put", "e", "1"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith("ok (version"), (argv, result.stderr)



def test_ctrl_c_ends_the_load_with_the_resume_command_which_completes_it(sqlite_server, tmp_path):
    path = _write(tmp_path, "big.csv", "key,value\n" + "".join(f"k{i:06d},v{i}\n" for i in range(200_000)))
    load = subprocess.Popen(  # Ctrl-C as in a terminal (see CLI_AS_IN_A_TERMINAL)
        [sys.executable, "-c", CLI_AS_IN_A_TERMINAL, "--target", sqlite_server.target, "stream", path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    table = sqlite3.connect(sqlite_server.config.sqlite_path)
    deadline = time.monotonic() + 60
    while not table.execute(f"SELECT COUNT(*) FROM {sqlite_server.config.table}").fetchone()[0]:
        assert time.monotonic() < deadline and load.poll() is None, "no batch committed"
        time.sleep(0.02)
    load.send_signal(signal.SIGINT)  # after the first batch, long before the last
    out, err = load.communicate(timeout=60)
    assert load.returncode == 1, (out, err)
    assert "error: interrupted\n" in err
    words = assert_one_resume_command(subprocess.CompletedProcess(load.args, 1, out, err),
                                      sqlite_server.target, path)
    resumed = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    count, versions = table.execute(
        f"SELECT COUNT(*), GROUP_CONCAT(DISTINCT version) FROM {sqlite_server.config.table}").fetchone()
    assert (count, versions) == (200_000, "1")  # the whole file, nothing written twice


@pytest.mark.parametrize("args", [["stream", "--batch-size", "0", "x.csv"],
                                  ["stream", "--batch-size", "-5", "x.csv"],
                                  ["--timeout", "0", "get", "k"], ["scan", "--limit", "-1"],
                                  ["watch", "k", "--count", "0"], ["scan", "--limit", "ten"]])
def test_counts_and_timeouts_must_be_positive(args):
    """Checked before anything is sent (was: --batch-size 0 streamed on silently)."""
    result = run_cli("--target", "127.0.0.1:1", *args)
    assert result.returncode == 2
    assert re.search(r"error: argument --[a-z-]+: .* (is not greater than 0|is not a number)",
                     result.stderr), result.stderr


# --------------------------------------------------------------------------------------
# An outside tester's findings: the shell, flag checks, blank lines, empty files
# --------------------------------------------------------------------------------------


def _shell(target: str, script: bytes, **env: str) -> subprocess.CompletedProcess:
    """The shell with ``script`` piped in (bytes: it may hold bytes that are not UTF-8)."""
    return subprocess.run([sys.executable, "-m", "kvgrpc.client", "--target", target, "shell"],
                          input=script, capture_output=True, timeout=60,
                          env=dict(os.environ, **env))


def test_a_bad_shell_line_is_one_error_and_the_shell_goes_on(sqlite_server):
    # Strict UTF-8 stdin, as in a UTF-8 locale: the byte 0xe9 used to end the shell with
    # a codec error (exit 1, the lines after it never run).
    script = b"put lat:x caf\xe9\nput caf\xe9 v\nput ok:1 v\nget lat:x\n"
    result = _shell(sqlite_server.target, script, PYTHONIOENCODING="utf-8")
    assert result.returncode == 1, result.stderr  # piped input, and a command failed
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "ok (version 1)"  # a value keeps its bytes, as `put KEY VALUE` does
    assert lines[1].startswith("error: ") and "utf-8" in lines[1].lower()  # a key cannot be sent
    assert lines[2:4] == ["ok (version 1)", "caf\\xe9"]
    assert result.stderr == b""
    with sqlite_server.client() as kv:
        assert kv.get("ok:1") == b"v" and kv.get("lat:x") == b"caf\xe9"
    clean = _shell(sqlite_server.target, b"put ok:2 v\nget ok:2\n")
    assert clean.returncode == 0 and clean.stdout.decode().splitlines()[:2] == ["ok (version 1)", "v"]


def test_shell_scan_limit_must_be_at_least_1(sqlite_server):
    script = b"put sc:1 a\nput sc:2 b\nscan sc: 0\nscan sc: -1\nscan sc: ten\nscan sc: 1\n"
    result = _shell(sqlite_server.target, script)
    assert result.returncode == 1
    assert result.stdout.decode().splitlines()[:6] == [
        "ok (version 1)", "ok (version 1)",
        "error: LIMIT must be a whole number of at least 1, not '0'",
        "error: LIMIT must be a whole number of at least 1, not '-1'",
        "error: LIMIT must be a whole number of at least 1, not 'ten'",
        "sc:1 = a",
    ]
    assert "... (more)" in result.stdout.decode()


def test_shell_help_does_not_list_eof(sqlite_server):
    result = _shell(sqlite_server.target, b"help\n")
    assert result.returncode == 0
    commands = result.stdout.decode().split("=\n", 1)[1].split()
    assert "quit" in commands and "scan" in commands and "EOF" not in commands


@pytest.mark.parametrize("value, problem", [
    ("inf", "'inf' is not a finite number"), ("-inf", "'-inf' is not a finite number"),
    ("nan", "'nan' is not a finite number"), ("1e10", "1e10 is more than 31536000"),
])
def test_timeout_must_be_finite(capsys, value, problem):
    """--timeout inf was taken, and every call then failed at once ("Deadline Exceeded")."""
    with pytest.raises(SystemExit) as usage:
        cli("--target", "127.0.0.1:1", f"--timeout={value}", "get", "k")
    assert usage.value.code == 2
    assert f"error: argument --timeout: {problem}\n" in capsys.readouterr().err


@pytest.mark.parametrize("target, problem", [
    ("localhost:99999", "'localhost:99999': the port must be 1 to 65535"),  # was port 34463
    ("localhost:0", "'localhost:0': the port must be 1 to 65535"),
    ("localhost", "'localhost' is not HOST:PORT"),  # was port 443
    ("localhost:", "'localhost:': the port must be 1 to 65535"),
    ("::1:1313", "'::1:1313': an IPv6 address goes in brackets ([ADDRESS]:PORT)"),
    ("[nope]:1313", "'[nope]:1313': '[nope]' is not an IPv6 address in brackets ([ADDRESS]:PORT)"),
    ("a:1,b", "'b' is not HOST:PORT"),
    ("a:1,,b:2", "'a:1,,b:2' holds an empty server; expected HOST:PORT[,HOST:PORT...]"),
])
def test_target_must_be_host_and_port(capsys, monkeypatch, target, problem):
    with pytest.raises(SystemExit) as usage:
        cli("get", "k", "--target", target)
    assert usage.value.code == 2
    assert f"error: argument --target: {problem}\n" in capsys.readouterr().err
    monkeypatch.setenv("KVGRPC_TARGET", target)
    with pytest.raises(SystemExit) as usage:
        cli("get", "k")
    assert usage.value.code == 2
    assert f"error: $KVGRPC_TARGET: {problem}\n" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["localhost:1313", "127.0.0.1:1", "[::1]:65535",
                                    "a.example:80, b.example:81"])
def test_valid_targets_are_taken(target):
    from kvgrpc.cli.commands import build_parser

    assert build_parser().parse_args(["status", "--target", target]).target == target


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["0-bytes", "bom-only"])
def test_an_empty_csv_file_is_refused_like_a_missing_header(sqlite_server, tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    status, out, err = cli("--target", sqlite_server.target, "stream", str(path))
    assert (status, out) == (1, "")  # was: "0 records committed", exit 0
    assert err == f"error: {path}: the file is empty, without the header 'key,value'\n"


def test_blank_lines_are_skipped_but_empty_fields_are_not(sqlite_server, tmp_path):
    path = _write(tmp_path, "blank.csv", "key,value\r\na,1\r\n\r\n\nb,2\r\n\r\n")
    status, out, err = cli("--target", sqlite_server.target, "stream", path)
    assert status == 0, err  # was: "line 3: row is empty", exit 1
    assert out.startswith("2 records committed") and out.endswith("; 3 blank lines skipped\n")
    assert _contents(sqlite_server, ["a", "b"]) == {"a": b"1", "b": b"2"}
    for row, problem in (('""', "row is empty; expected 2"), (",", "key is empty"),
                         (",,", "row has 3 fields")):
        bad = _write(tmp_path, "bad.csv", f"key,value\na,1\n\n{row}\nb,2\n")
        status, _, err = cli("--target", sqlite_server.target, "stream", bad)
        assert status == 1 and f"error: line 4: {problem}" in err, (row, err)


def test_a_resumed_load_with_blank_lines_sends_each_record_once(sqlite_server, tmp_path):
    rows = (["key,value"] + [f"k{i},v{i}" for i in range(10)] + ["", ""]
            + [f"k{i},v{i}" for i in range(10, 20)] + ["x,y,z"] + [f"k{i},v{i}" for i in range(20, 30)])
    path = _write(tmp_path, "blank.csv", "\n".join(rows) + "\n\n")  # and a trailing blank line
    first = run_cli("--target", sqlite_server.target, "stream", path)
    assert first.returncode == 1
    assert first.stdout.startswith("20 records committed") and "; 2 blank lines skipped" in first.stdout
    assert "error: line 24: row has 3 fields" in first.stderr  # the line counts the blank lines
    words = assert_one_resume_command(first, sqlite_server.target, path)
    rows[23] = "x,fixed"
    Path(path).write_text("\n".join(rows) + "\n\n")
    second = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("11 records committed")
    assert second.stdout.endswith("; 20 records committed before, by earlier runs of the load; "
                                  "1 blank line skipped\n")
    with sqlite_server.client() as kv:
        records = list(kv.scan(page_size=1000))
    assert {r.key: r.value for r in records} == {
        **{f"k{i}": f"v{i}".encode() for i in range(30)}, "x": b"fixed"}
    assert {r.version for r in records} == {1}  # every record once


def test_stream_needs_a_file_not_stdin(sqlite_server):
    dash = run_cli("--target", sqlite_server.target, "stream", "-", stdin="key,value\na,1\n")
    assert dash.returncode == 2 and dash.stderr.startswith("usage: kvgrpc stream ")
    assert dash.stderr.endswith("kvgrpc stream: error: stream needs a file, not stdin ('-'): a load "
                                "is resumable, and a resumed load reads its file again; save the "
                                "input to a file first\n")
    pipe = run_cli("--target", sqlite_server.target, "stream", "/dev/stdin", stdin="key,value\na,1\n")
    assert (pipe.returncode, pipe.stdout) == (1, "")
    assert pipe.stderr == ("error: /dev/stdin: not a regular file; stream needs a file, which a "
                           "resumed load reads again\n")
    assert _contents(sqlite_server, ["a"]) == {}


@pytest.mark.parametrize("args, problem", [
    (["put", "k"], "put needs a VALUE ('-' for stdin) or --value-file FILE"),
    (["put", "k", "v", "--value-file", "x"],
     "put takes a VALUE ('-' for stdin) or --value-file FILE, not both"),
])
def test_put_value_usage_errors(capsys, args, problem):
    with pytest.raises(SystemExit) as usage:
        cli("--target", "127.0.0.1:1", *args)
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kvgrpc put ") and err.endswith(f"kvgrpc put: error: {problem}\n")
