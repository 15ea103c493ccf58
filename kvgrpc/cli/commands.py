"""The command line: argument parsing and one function per command.

Global flags (``--target``, ``--timeout``, ``--output``, credentials) may come before or
after the command. Every command exits 0 on success and 1 with one ``error: ...`` line on
stderr on failure (2 for a usage error); data goes to stdout, summaries name the target.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from kvgrpc.auth import check_key_pair
from kvgrpc.cli.csvload import DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT, stream_file
from kvgrpc.cli.output import event_line, json_line, record_line
from kvgrpc.cli.shell import run_shell, status_line
from kvgrpc.client import DEFAULT_TARGET, KeyValueClient
from kvgrpc.errors import KvError, Unavailable
from kvgrpc.records import Record

#: BatchGet takes at most this many keys per call (ServerLimits.max_batch_get_keys).
_BATCH_GET_KEYS = 1000


#: The longest --timeout: a year. grpc counts a deadline in int64 nanoseconds since the
#: epoch, so ~7e9 s from now (and inf) overflows and every call fails at once.
MAX_TIMEOUT = 365 * 24 * 3600


def _positive(kind: Callable[[str], Any], most: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` greater than 0 (and at most ``most``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} is not greater than 0")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{text} is more than {most:.0f}")
        return value
    return parse


def _target_problem(target: str) -> str | None:
    """What is wrong with a ``--target`` (``HOST:PORT``, ``[IPV6]:PORT``, several of them
    comma-separated), or None. grpc would take a port over 65535 modulo 65536 and a
    missing port as 443."""
    for part in target.split(","):
        part = part.strip()
        if not part:
            return f"{target!r} holds an empty server; expected HOST:PORT[,HOST:PORT...]"
        host, sep, port = part.rpartition(":")
        if not sep or not host:
            return f"{part!r} is not HOST:PORT"
        if host.startswith("["):
            try:
                if not host.endswith("]"):
                    raise ValueError
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                return f"{part!r}: {host!r} is not an IPv6 address in brackets ([ADDRESS]:PORT)"
        elif ":" in host:
            return f"{part!r}: an IPv6 address goes in brackets ([ADDRESS]:PORT)"
        elif any(ch.isspace() or ch in "/[]" for ch in host):
            return f"{part!r}: {host!r} is not a host name or address"
        if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
            return f"{part!r}: the port must be 1 to 65535"
    return None


def _target(text: str) -> str:
    """An argparse type: a valid ``--target``."""
    problem = _target_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _add_global_flags(p: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The flags every command takes. Given after the command, they override the ones
    before it (their defaults there are SUPPRESS, so an absent flag changes nothing)."""

    def default(value):
        return argparse.SUPPRESS if after_command else value

    # Without --target: $KVGRPC_TARGET, else DEFAULT_TARGET (checked in main(), where an
    # error can name the variable rather than the flag).
    p.add_argument("--target", type=_target, default=default(None), metavar="HOST:PORT",
                   help="server HOST:PORT, or several comma-separated to spread calls over them "
                        f"(default: $KVGRPC_TARGET or {DEFAULT_TARGET})")
    p.add_argument("--timeout", type=_positive(float, MAX_TIMEOUT), default=default(DEFAULT_TIMEOUT), metavar="SECONDS",
                   help="deadline of each call, and how long watch waits to connect (default 30; "
                        f"at most {MAX_TIMEOUT}, a year)")
    p.add_argument("--output", "-o", choices=["text", "json"], default=default("text"),
                   help="text for people (tabs, newlines and non-printing bytes escaped), or "
                        "json: one JSON object per line")
    p.add_argument("--token-file", metavar="FILE", default=default(None),
                   help="send the bearer token in FILE (default: $KVGRPC_TOKEN, if set)")
    p.add_argument("--tls", action="store_true", default=default(False),
                   help="connect with TLS (system CAs)")
    p.add_argument("--tls-ca", metavar="FILE", default=default(None),
                   help="connect with TLS, trusting this CA (PEM)")
    p.add_argument("--tls-cert", metavar="FILE", default=default(None),
                   help="client certificate for mutual TLS (PEM)")
    p.add_argument("--tls-key", metavar="FILE", default=default(None),
                   help="the client certificate's key (PEM)")


def _add_read_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--consistency", choices=["eventual", "strong", "bounded"], default=None,
                   help="eventual: any healthy replica (the server's default); strong: the "
                        "master; bounded: a replica within --max-staleness-ms, else the master")
    p.add_argument("--max-staleness-ms", type=int, default=0, metavar="MS",
                   help="with --consistency bounded: the most lag accepted")


def build_parser() -> argparse.ArgumentParser:
    """The ``kvgrpc`` argument parser (``python -m kvgrpc.client``)."""
    p = argparse.ArgumentParser(prog="kvgrpc", description="Talk to a kvgrpc server.")
    _add_global_flags(p, after_command=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help, description=help)
        _add_global_flags(parser, after_command=True)
        parser.set_defaults(command_parser=parser)  # for usage errors found after parsing
        return parser

    put = command("put", "store a value under KEY: VALUE as UTF-8 text, '-' for stdin "
                         "(bytes as they are), or --value-file FILE")
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value; '-' reads it from stdin")
    put.add_argument("--value-file", metavar="FILE", help="read the value from FILE (bytes)")
    put.add_argument("--expected-version", type=int, metavar="N",
                     help="compare-and-set: write only if KEY is at version N (0: absent)")
    get = command("get", "print the value under KEY; with several keys, KEY<TAB>VALUE lines")
    get.add_argument("keys", nargs="+", metavar="KEY")
    _add_read_flags(get)
    delete = command("delete", "remove KEY")
    delete.add_argument("key")
    scan = command("scan", "list the records whose keys start with PREFIX (all keys without "
                           "one), in key order: KEY<TAB>VALUE lines")
    scan.add_argument("prefix", nargs="?", default="")
    scan.add_argument("--keys-only", action="store_true", help="print keys only")
    scan.add_argument("--limit", type=_positive(int), metavar="N", help="stop after N records")
    _add_read_flags(scan)
    command("status", "the server's database endpoints: role, health, lag, pool use")
    stream = command("stream", "load a CSV file of key,value records over one stream, as a "
                               "resumable load")
    stream.add_argument("file", help="RFC 4180 CSV, UTF-8 (with or without BOM); a file, not "
                                     "stdin: a resumed load reads it again")
    stream.add_argument("--no-header", dest="header", action="store_false",
                        help="the file has no 'key,value' header row")
    stream.add_argument("--skip-bad", action="store_true",
                        help="report and skip bad rows (bad UTF-8, wrong field count, key or "
                             "value over the server's limits) instead of stopping")
    stream.add_argument("--batch-size", type=_positive(int), default=DEFAULT_BATCH_SIZE,
                        help=f"records per message (default {DEFAULT_BATCH_SIZE})")
    stream.add_argument("--load-id", metavar="ID",
                        help="resume the load ID (printed by a run that failed): send only the "
                             "records it has not committed (default: a new load)")
    watch = command("watch", "print changes to KEY (or to keys with --prefix) as they happen: "
                             "REVISION<TAB>TYPE<TAB>KEY<TAB>VALUE per line")
    watch.add_argument("key", nargs="?")
    watch.add_argument("--prefix", help="watch every key starting with PREFIX ('' for all keys)")
    watch.add_argument("--from-revision", type=int, metavar="N",
                       help="start with the changes after revision N (default: from now)")
    watch.add_argument("--count", type=_positive(int), metavar="N", help="stop after N events")
    command("shell", "an interactive shell: put, get, del, scan, watch, status")
    return p


def main(argv: Sequence[str] | None = None, out=None, err=None) -> int:
    """Runs one command line; returns the exit status (``out``/``err``: where to print)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    usage = args.command_parser  # the command's own usage for its errors
    if args.target is None:
        args.target = os.environ.get("KVGRPC_TARGET") or DEFAULT_TARGET
        if problem := _target_problem(args.target):
            parser.error(f"$KVGRPC_TARGET: {problem}")
    if args.command == "put" and args.value is None and args.value_file is None:
        usage.error("put needs a VALUE ('-' for stdin) or --value-file FILE")
    if args.command == "put" and args.value is not None and args.value_file is not None:
        usage.error("put takes a VALUE ('-' for stdin) or --value-file FILE, not both")
    if args.command == "watch" and (args.key is None) == (args.prefix is None):
        usage.error("watch takes a KEY, or --prefix PREFIX ('' for every key)")
    if args.command == "stream" and args.file == "-":
        usage.error("stream needs a file, not stdin ('-'): a load is resumable, and a resumed "
                    "load reads its file again; save the input to a file first")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together: a client certificate and its key")
    if args.tls_cert is not None:
        try:
            check_key_pair(args.tls_cert, args.tls_key, "--tls-cert", "--tls-key")
        except ValueError as exc:
            parser.error(str(exc))
    try:
        token = (Path(args.token_file).read_text().strip() if args.token_file
                 else os.environ.get("KVGRPC_TOKEN") or None)
        with KeyValueClient(args.target, timeout=args.timeout,
                            batch_records=getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
                            token=token, tls=args.tls, ca_file=args.tls_ca,
                            cert_file=args.tls_cert, key_file=args.tls_key) as client:
            return COMMANDS[args.command](client, args, out, err)
    except Unavailable as exc:  # say which server could not be reached
        print(f"error: {args.target}: {exc}", file=err)
    except KvError as exc:
        print(f"error: {exc}", file=err)
    except socket.gaierror as exc:  # a host of several comma-separated targets
        print(f"error: {args.target}: {exc.strerror or exc}", file=err)
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=err)
    except ValueError as exc:  # e.g. a malformed --target
        print(f"error: {exc}", file=err)
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    return 1


def _put(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.value_file is not None:
        value: bytes = Path(args.value_file).read_bytes()
    elif args.value == "-":
        value = sys.stdin.buffer.read()
    else:
        value = args.value.encode("utf-8", "surrogateescape")
    version = client.put(args.key, value, expected_version=args.expected_version)
    if args.output == "json":
        print(json_line({"key": args.key, "version": version, "target": args.target}), file=out)
    else:
        print(f"ok (version {version} on {args.target})", file=out)
    return 0


def _read_options(args) -> dict:
    return {"consistency": args.consistency, "max_staleness_ms": args.max_staleness_ms}


def _get(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if len(args.keys) == 1 and args.output == "text":
        _write_value(client.get(args.keys[0], **_read_options(args)), out)
        return 0
    if len(args.keys) == 1:
        record = client.get_record(args.keys[0], **_read_options(args))
        print(record_line(record, "json"), file=out)
        return 0
    found: dict[str, bytes] = {}
    for i in range(0, len(args.keys), _BATCH_GET_KEYS):
        found.update(client.batch_get(args.keys[i:i + _BATCH_GET_KEYS], **_read_options(args)))
    missing = 0
    for key in dict.fromkeys(args.keys):  # in the order asked, each key once
        if key in found:
            print(record_line(Record(key, found[key], 0), args.output), file=out)
        else:
            missing += 1
            print(f"error: key {key!r} not found", file=err)
    return 1 if missing else 0


def _delete(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    deleted = client.delete(args.key)
    if args.output == "json":
        print(json_line({"key": args.key, "deleted": deleted, "target": args.target}), file=out)
    else:
        print(f"deleted (on {args.target})" if deleted
              else f"not found (nothing deleted on {args.target})", file=out)
    return 0


def _scan(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=err)
        return 2
    page_size = 1000 if args.limit is None else min(args.limit, 1000)
    records = client.scan(args.prefix, page_size=page_size, keys_only=args.keys_only,
                          **_read_options(args))
    for shown, record in enumerate(records):
        if args.limit is not None and shown >= args.limit:
            break
        print(record_line(record, args.output, keys_only=args.keys_only), file=out)
    return 0


def _status(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    endpoints = client.status()
    limits = asdict(client.limits())
    if args.output == "json":
        for endpoint in endpoints:
            print(json_line({"target": args.target, **asdict(endpoint)}), file=out)
        print(json_line({"target": args.target, "limits": limits}), file=out)
    else:
        print(f"server {args.target}:", file=out)
        for endpoint in endpoints:
            print(status_line(endpoint), file=out)
        print("limits: " + ", ".join(f"{name} {value}" for name, value in limits.items()), file=out)
    return 0


def _watch(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # A watch has no deadline; without this a server that is down would leave it
    # retrying silently. Once connected, a broken stream is resumed by the library.
    try:
        client.wait_until_connected(timeout=args.timeout)
    except Unavailable:
        raise Unavailable(f"no connection within {args.timeout:g} s (--timeout)") from None
    seen = 0
    with client.watch(args.key, prefix=args.prefix, start_revision=args.from_revision) as watch:
        try:
            for event in watch:
                print(event_line(event, args.output), file=out, flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        except KeyboardInterrupt:
            print(f"stopped at revision {watch.revision} (resume with --from-revision "
                  f"{watch.revision})", file=err)
    return 0


def _shell(client: KeyValueClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return run_shell(client, out)


def _write_value(value: bytes, out) -> None:
    """Prints a value as it is: text if it is UTF-8, else raw bytes to a binary stdout."""
    try:
        print(value.decode("utf-8"), file=out)
    except UnicodeDecodeError:
        buffer = getattr(out, "buffer", None)
        if buffer is None:
            print(repr(value), file=out)
        else:
            out.flush()
            buffer.write(value)


COMMANDS = {
    "put": _put,
    "get": _get,
    "delete": _delete,
    "scan": _scan,
    "status": _status,
    "stream": stream_file,
    "watch": _watch,
    "shell": _shell,
}
