"""Loads a CSV file as one named load through the client library: what
``python -m kvgrpc.client stream FILE`` does, with the load's progress recorded in the
transaction of every batch (issue 10). Used by bench/run.py's "named load" ingest.

    .venv/bin/python bench/named_load.py TARGET FILE [LOAD_ID]

Prints the CLI's summary line: ``N records committed in S s (R records/s)``.
"""

from __future__ import annotations

import _mysql_connector  # noqa: F401  isort: skip - the order bench/run.py keeps (DEVELOPERS.md)

import csv
import sys
import time
import uuid
from collections.abc import Iterator

from kvgrpc.client import KeyValueClient
from kvgrpc.records import check_key


def records(path: str) -> Iterator[tuple[str, str]]:
    """The rows of a ``key,value`` CSV, each key checked as the CLI's loader checks it."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        next(reader)  # the header
        for key, value in reader:
            check_key(key, "key")
            yield key, value


def main(argv: list[str]) -> int:
    target, path = argv[0], argv[1]
    load_id = argv[2] if len(argv) > 2 else f"bench-{uuid.uuid4()}"
    started = time.perf_counter()
    with KeyValueClient(target) as kv:
        committed = kv.stream_put(records(path), load_id=load_id)  # a generator: no retries
        assert kv.get_load(load_id).committed == committed
    seconds = time.perf_counter() - started
    print(f"{committed} records committed in {seconds:.2f} s ({committed / seconds:,.0f} records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
