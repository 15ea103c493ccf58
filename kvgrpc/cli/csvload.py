"""Reading a CSV file of ``key,value`` records, for the ``stream`` command.

The file is RFC 4180 CSV (quoted fields may hold commas, quotes and newlines), UTF-8
with or without a BOM. It is read as bytes, lazily, and split into rows by the quoting
rules alone: a newline ends a row unless it lies inside quotes. Each row is then parsed
and its fields decoded as UTF-8 on their own, so a row that is bad in any way (an invalid
UTF-8 sequence, a wrong number of fields, an empty or oversized key, a value over the
server's limit) is reported at its true line and does not affect the rows after it.

Memory stays bounded whatever the file holds: the file is read in blocks of
``BLOCK_BYTES``, and a row larger than any valid record can be (:func:`row_bound`) is not
kept, only measured up to its end and reported.

Rows that can be skipped (``--skip-bad``) are :class:`BadRow` with ``skippable`` set. Broken
quoting cannot be skipped: where the next row starts is then unknown, so the load stops.
A blank line (no field at all; a trailing one is common) holds no record: it is a
:class:`BlankLine`, passed over without an error and counted in the summary.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import shlex
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from kvgrpc.cli.output import count, json_line
from kvgrpc.client import KeyValueClient
from kvgrpc.errors import Aborted, Cancelled, Internal, InvalidArgument, KvError, NotFound
from kvgrpc.records import Limits

#: Defaults of the flags that a resume command repeats only when they differ.
DEFAULT_TIMEOUT = 30.0
DEFAULT_BATCH_SIZE = 500

#: Bytes read at a time: a long line arrives in pieces of this size at most.
BLOCK_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"


class HeaderError(InvalidArgument):
    """The file's first row is not the ``key,value`` header (and ``--no-header`` was not given)."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be sent: ``line`` is its first line in the file (1-based)."""

    line: int
    reason: str
    skippable: bool = True

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class BlankLine:
    """An empty line between records (``""`` or ``,`` is a row, and bad): ``line`` (1-based)."""

    line: int


#: A record read from the file: ``(line, key, value)``, ``line`` its first line in the
#: file (1-based). A plain tuple: one is made per record, and it is the cheapest to build.
CsvRow = tuple[int, str, bytes]


class _Malformed(Exception):
    """Broken CSV quoting in a row."""


class _LoneCarriageReturn(_Malformed):
    """A carriage return outside quotes (not part of a CRLF line ending)."""


_LONE_CR = "row holds a carriage return (\\r) outside quotes; quote the field that holds it"


def row_bound(limits: Limits) -> int:
    """The most bytes a valid row can take: both fields at their limits, quoted, every
    byte a doubled quote, a comma and CRLF. A longer row is bad whatever it holds."""
    return 2 * (limits.max_key_bytes + limits.max_value_bytes) + 8


def _fields(body: bytes) -> list[bytes]:
    """The fields of one row (its bytes, without its line ending), unquoted."""
    # latin-1 maps each byte to one character and back, so the csv module splits the
    # bytes exactly (every delimiter is ASCII, and no UTF-8 sequence contains ASCII).
    try:
        fields = next(csv.reader([body.decode("latin-1")], strict=True), [])
    except csv.Error as exc:
        if "new-line character" in str(exc):
            raise _LoneCarriageReturn() from None
        raise _Malformed(str(exc)) from None
    return [field.encode("latin-1") for field in fields]


def read_csv(path: str, *, header: bool = True,
             limits: Limits = Limits()) -> Iterator[CsvRow | BadRow | BlankLine]:
    """Yields each data row of the file as a :class:`CsvRow`, or a :class:`BadRow`, and
    each blank line after the header as a :class:`BlankLine`.

    With ``header``, the first row must be ``key,value`` (any case, spaces around);
    otherwise (an empty file included) :class:`HeaderError` is raised on the first ``next()``. A row over the
    limits in ``limits`` (key bytes, value bytes) is a skippable BadRow. Broken quoting
    yields a BadRow that is not skippable, and ends the iteration. ``OSError`` from
    reading the file propagates.
    """
    bound = row_bound(limits)
    max_key, max_value = limits.max_key_bytes, limits.max_value_bytes
    if csv.field_size_limit() < bound:
        csv.field_size_limit(bound)

    def check(start: int, fields: list[bytes]) -> CsvRow | BadRow:
        if len(fields) != 2:
            what = "is empty" if fields == [b""] else f"has {len(fields)} fields"
            return BadRow(start, f"row {what}; expected 2 (key,value)")
        key_bytes, value = fields
        try:
            key = key_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            return BadRow(start, _not_utf8(key_bytes, exc, "key"))
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                return BadRow(start, _not_utf8(value, exc, "value"))
        if not key_bytes:
            return BadRow(start, f"key is empty; a key must be 1 to {max_key} bytes")
        if len(key_bytes) > max_key:
            return BadRow(start, f"key is {len(key_bytes)} bytes; the limit is {max_key} bytes")
        if len(value) > max_value:
            return BadRow(start, f"value is {len(value)} bytes; the server's limit is "
                                 f"{max_value} bytes")
        return (start, key, value)

    with open(path, "rb") as f:
        if f.read(len(_BOM)) != _BOM:
            f.seek(0)
        line = 1  # the line the next segment belongs to
        expect_header = header
        # A row in progress (over several lines, or a line over several blocks):
        start = 0  # its first line; 0 when there is none
        parts: list[bytes] = []  # its bytes so far, unless it is too large to be valid
        size = quotes = 0
        over = False
        while True:
            block = f.read(BLOCK_BYTES)
            segments = block.split(b"\n")  # all but the last end a line
            last = len(segments) - 1
            for i, data in enumerate(segments):
                ends_line = i < last
                if not start:
                    if ends_line and b'"' not in data:  # the common case: a whole unquoted line
                        if data[-1:] == b"\r":
                            data = data[:-1]
                        row_line = line
                        line += 1
                        if b"\r" in data:
                            yield BadRow(row_line, _LONE_CR)
                            continue
                        fields = data.split(b",")
                        if expect_header:
                            expect_header = False
                            _check_header(path, fields)
                            continue
                        yield check(row_line, fields) if data else BlankLine(row_line)
                        continue
                    if not data and not ends_line:
                        continue  # the block ended at the end of a line
                    start, parts, size, quotes, over = line, [], 0, 0, False
                quotes += data.count(b'"')
                size += len(data) + ends_line
                if not over:
                    if size > bound:  # too large to be a record: measured to its end, not kept
                        over, parts = True, []
                    else:
                        parts.append(data)
                        if ends_line:
                            parts.append(b"\n")
                if ends_line:
                    line += 1
                    if quotes & 1:
                        continue  # a newline inside quotes: the row goes on
                elif block:
                    continue  # the line goes on in the next block
                elif quotes & 1:
                    yield BadRow(start, 'malformed CSV: a quote (") here is never closed '
                                        "before the end of the file: a quoted field not closed, or "
                                        "a quote inside an unquoted field (a field holding quotes "
                                        'must be quoted, each quote doubled: "a""b")',
                                 skippable=False)
                    return
                # The row is complete.
                row_start, start = start, 0
                if over:
                    end = line - 1 if ends_line else line
                    lines = f"line {row_start}" if end == row_start else f"lines {row_start}-{end}"
                    yield BadRow(row_start, f"row is {size} bytes ({lines}): larger than any "
                                            f"record the server accepts (key up to {max_key} "
                                            f"bytes, value up to {max_value} bytes)")
                    continue
                if ends_line:
                    parts.pop()  # the row's own line ending
                body = b"".join(parts)
                if body[-1:] == b"\r":
                    body = body[:-1]
                try:
                    fields = _fields(body)
                except _LoneCarriageReturn:
                    yield BadRow(row_start, _LONE_CR)
                    continue
                except _Malformed as exc:
                    yield BadRow(row_start, f"malformed CSV ({exc})", skippable=False)
                    return
                if expect_header:
                    expect_header = False
                    _check_header(path, fields)
                    continue
                # (A blank line reaches here only when its CR and LF lay in two blocks.)
                yield check(row_start, fields) if body else BlankLine(row_start)
            if not block:
                if expect_header:
                    raise HeaderError(f"{path}: the file is empty, without the header "
                                      "'key,value'")
                return


def _check_header(path: str, fields: list[bytes]) -> None:
    names = [f.decode("utf-8", "replace").strip().lower() for f in fields]
    if names != ["key", "value"]:
        shown = b",".join(fields).decode("utf-8", "backslashreplace")[:60]
        raise HeaderError(f"{path}: line 1 is {shown!r}, not the header 'key,value'; "
                          "pass --no-header if the file has no header row")


def _not_utf8(field: bytes, exc: UnicodeDecodeError, what: str) -> str:
    return (f"{what} is not valid UTF-8 (byte 0x{field[exc.start]:02x} at byte {exc.start} "
            f"of the {what})")


# --------------------------------------------------------------------------------------
# The `stream` command
# --------------------------------------------------------------------------------------


def server_limits(client: KeyValueClient) -> Limits:
    """The server's limits (GetStatus; the defaults for any it does not report); the
    defaults when it answers UNIMPLEMENTED (a server older than GetStatus)."""
    try:
        return client.limits()
    except Internal:  # UNIMPLEMENTED (and other unmapped codes) arrive as Internal
        return Limits()


def resume_command(args, load_id: str) -> str:
    """The one command that resumes this load: the same file and flags, with its id."""
    words = ["python", "-m", "kvgrpc.client", "--target", args.target]
    if args.timeout != DEFAULT_TIMEOUT:
        words += ["--timeout", f"{args.timeout:g}"]
    if args.output != "text":
        words += ["--output", args.output]
    for flag, value in (("--token-file", args.token_file), ("--tls-ca", args.tls_ca),
                        ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if value:
            words += [flag, value]
    if args.tls:
        words.append("--tls")
    words += ["stream", args.file, "--load-id", load_id]
    if not args.header:
        words.append("--no-header")
    if args.skip_bad:
        words.append("--skip-bad")
    if args.batch_size != DEFAULT_BATCH_SIZE:
        words += ["--batch-size", str(args.batch_size)]
    return shlex.join(words)


def stream_file(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The ``stream`` command: loads a CSV file as one named load; returns the exit status.

    Record indices count the records sent (good rows; skipped bad rows do not count), so
    the same file with the same flags gives the same indices. With ``--load-id`` it asks
    the server how many records of that load are committed and sends only the rest. On
    any failure after the load has started it prints the one command that resumes it.
    """
    with open(args.file, "rb") as f:  # a missing or unreadable file fails before anything else
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a pipe cannot be read again
            print(f"error: {args.file}: not a regular file; stream needs a file, which a "
                  "resumed load reads again", file=err)
            return 1
    limits = server_limits(client)
    load_id = args.load_id or str(uuid.uuid4())
    resume = resume_command(args, load_id)
    start = 0
    if args.load_id:
        start = _load_start(client, args, load_id, err)
    first_start = start
    progress = _progress_bar(err)
    started = time.monotonic()
    try:
        for attempt in range(1, RESUME_ATTEMPTS + 1):
            try:
                run = _send(client, args, load_id, start, limits, err, progress)
            except HeaderError as exc:  # checked before the load starts: nothing to resume
                print(f"error: {exc}", file=err)
                return 1
            if not isinstance(run.failure, Aborted) or attempt == RESUME_ATTEMPTS:
                break
            # The load moved on under this stream (a vanished server's last batch committed
            # after the count was read): nothing was written twice; ask again, send the rest.
            start = _load_start(client, args, load_id, err)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.monotonic() - started
    committed = None if run.committed is None else run.committed + start - first_start
    if committed is None:
        summary = (f"the number of records committed to {args.target} is not known here (the "
                   "resume command asks the server)")
    else:
        rate = committed / seconds if seconds > 0 else 0.0
        summary = (f"{count(committed, 'record')} committed to {args.target} in {seconds:.2f} s "
                   f"({rate:,.0f} records/s)")
    if first_start:
        summary += f"; {count(first_start, 'record')} committed before, by earlier runs of the load"
    if run.skipped:
        summary += f"; {count(run.skipped, 'bad row')} skipped"
    if run.blank:
        summary += f"; {count(run.blank, 'blank line')} skipped"
    if args.output == "json":  # for programs: the same facts, one JSON object
        print(json_line({"target": args.target, "load_id": load_id, "committed": committed,
                         "committed_before": first_start, "bad_rows_skipped": run.skipped,
                         "blank_lines_skipped": run.blank,
                         "seconds": round(seconds, 3), "ok": run.failure is None and not run.stopped}),
              file=out)
    else:
        print(summary, file=out)
    before = ("" if run.committed is None
              else f"{count(run.committed + start, 'record')} of the load committed before it"
              if start else f"{count(run.committed, 'record')} committed before it")
    if run.failure is not None:
        where = _locate_record(args, run.failure, start, limits)
        print(f"error: {where}{run.failure}" + (f" ({before})" if before else ""), file=err)
    elif run.stopped:
        problem = run.stopped[0]
        notes = [before] if before else []
        if isinstance(problem, BadRow) and problem.skippable and not args.skip_bad:
            notes.append("--skip-bad skips such rows")
        shown = (f"{args.file}: {problem.strerror or problem}" if isinstance(problem, OSError)
                 else str(problem))
        print(f"error: {shown}" + (f" ({'; '.join(notes)})" if notes else ""), file=err)
    else:
        return 0
    print(f"resume with: {resume}", file=err)
    return 1


#: How many times ``stream`` starts its stream again when the load moved on under it (ABORTED).
RESUME_ATTEMPTS = 3


@dataclass
class _Run:
    """What one stream of a ``stream`` command did."""

    committed: int | None  # records of this stream committed (None: unknown)
    failure: KvError | None  # how the stream failed
    stopped: list[BadRow | Exception]  # what ended the records early (a bad row, a read error)
    skipped: int  # bad rows skipped
    blank: int  # blank lines passed over


def _load_start(client: KeyValueClient, args, load_id: str, err) -> int:
    """How many records of the load are committed (0 when the server never saw it)."""
    try:
        start = client.get_load(load_id).committed
    except NotFound:
        print(f"load {load_id}: none of its records is committed; sending from the first "
              "record", file=err)
        return 0
    except Internal as exc:  # UNIMPLEMENTED: a server without named loads
        raise Internal(f"{args.target} cannot resume a load ({exc}): it predates named "
                       "loads") from None
    print(f"load {load_id}: {count(start, 'record')} committed by earlier runs; "
          "sending the rest", file=err)
    return start


def _send(client: KeyValueClient, args, load_id: str, start: int, limits: Limits, err,
          progress) -> _Run:
    """Streams the file's records from index ``start`` on as the load ``load_id``."""
    items: Iterator[CsvRow | BadRow | BlankLine] = read_csv(args.file, header=args.header,
                                                            limits=limits)
    first = next(items, None)  # raises HeaderError before the stream opens
    if first is not None:
        items = itertools.chain([first], items)
    run = _Run(committed=None, failure=None, stopped=[], skipped=0, blank=0)

    # gRPC consumes this generator on its own thread, where an exception would cancel the
    # call with an opaque status; so it never raises: it records the problem and ends the
    # stream, and the server commits every record sent before it.
    def records() -> Iterator[tuple[str, bytes]]:
        index = 0  # of the next good record in the file
        try:
            for item in items:
                if not isinstance(item, tuple):  # a BadRow or a BlankLine, not a record
                    if isinstance(item, BlankLine):
                        if index >= start:  # as skipped rows: counted once, by this run
                            run.blank += 1
                        continue
                    if args.skip_bad and item.skippable:
                        if index >= start:  # rows before were reported by earlier runs
                            run.skipped += 1
                            print(f"skipped {item}", file=err)
                        continue
                    run.stopped.append(item)
                    return
                index += 1
                if index > start:
                    yield item[1], item[2]
        except Exception as exc:  # noqa: BLE001 - reported by the caller, after the stream ends
            run.stopped.append(exc)

    try:
        run.committed = client.stream_put(
            records(), load_id=load_id, start_index=start,
            on_sent=progress.update if progress is not None else None,
        )
    except KvError as exc:
        run.committed, run.failure = exc.committed, exc
        if run.committed is None:  # no count came with the error: ask the load's progress
            run.committed = _committed_since(client, load_id, start)
    except KeyboardInterrupt:  # the batch in flight may still commit: the resume command asks
        run.failure = Cancelled("interrupted")
    return run


def _committed_since(client: KeyValueClient, load_id: str, start: int) -> int | None:
    """How many records after ``start`` the load has committed, or None if the server cannot say."""
    try:
        return max(0, client.get_load(load_id).committed - start)
    except NotFound:
        return 0  # nothing of the load was ever committed
    except KvError:
        return None


def _locate_record(args, failure: KvError, start: int, limits: Limits) -> str:
    """For a server error naming 'record N' (N counted from the stream's first record),
    returns 'line L: ' by reading the file again; else ''."""
    if not isinstance(failure, InvalidArgument) or not failure.message.startswith("record "):
        return ""
    try:
        index = start + int(failure.message.split()[1].rstrip(":"))
    except (IndexError, ValueError):
        return ""
    sent = 0
    try:
        for item in read_csv(args.file, header=args.header, limits=limits):
            if not isinstance(item, tuple):
                continue  # a blank line, a bad row skipped (or the stop point, after every sent record)
            if sent == index:
                return f"line {item[0]}: "
            sent += 1
    except (OSError, InvalidArgument):
        pass
    return ""


def _progress_bar(err):
    """A tqdm progress bar on stderr when it is a terminal, else None."""
    if not err.isatty():
        return None
    from tqdm import tqdm

    return tqdm(file=err, unit=" records", unit_scale=True, desc="sent", smoothing=0.1)
