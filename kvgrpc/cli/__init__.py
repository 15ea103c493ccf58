"""The kvgrpc command line: ``python -m kvgrpc.cli`` (also ``python -m kvgrpc.client``
and the ``kvgrpc`` console script).

::

    kvgrpc [--target HOST:PORT] [--output text|json] COMMAND ...
        put KEY VALUE | put KEY - | put KEY --value-file FILE  [--expected-version N]
        get KEY [KEY ...] [--consistency eventual|strong|bounded]
        delete KEY
        scan [PREFIX] [--keys-only] [--limit N]
        status
        stream FILE.csv [--no-header] [--skip-bad] [--load-id ID]
        watch KEY | --prefix PREFIX [--from-revision N] [--count N]
        shell

Modules: :mod:`~kvgrpc.cli.commands` (parsing, one function per command),
:mod:`~kvgrpc.cli.csvload` (the CSV reader and ``stream``), :mod:`~kvgrpc.cli.shell`,
:mod:`~kvgrpc.cli.output` (text and JSON lines). The library is :mod:`kvgrpc.client`.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv=None, out=None, err=None) -> int:
    """Runs the command line; returns the exit status."""
    from kvgrpc.cli.commands import main as run

    return run(argv, out, err)
