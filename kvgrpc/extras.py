"""Which optional dependencies (setup.cfg extras) a part of kvgrpc needs, and a one-line
hint instead of an import traceback when they are missing.

``pip install kvgrpc`` installs only the stubs' runtime (grpcio, protobuf) and the
client; the server needs the ``[server]`` extra.
"""

from __future__ import annotations

import importlib.util
import os
import sys

#: Modules the server imports that only the [server] extra installs.
SERVER_MODULES = ("grpc_health", "grpc_reflection", "prometheus_client", "mysql.connector",
                  "pymysqlreplication", "uvloop")


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            absent.append(name)
    return absent


def exit_unless_server_extra(module_name: str) -> None:
    """When the server is being run as a program (``python -m kvgrpc.server`` gives
    ``module_name == "__main__"``, or the ``kvgrpc-server`` script) and the [server] extra
    is missing, exits with a one-line hint. An ordinary import is left to fail as usual."""
    if module_name != "__main__" and os.path.basename(sys.argv[0]) != "kvgrpc-server":
        return
    absent = missing(SERVER_MODULES)
    if absent:
        sys.exit(f"kvgrpc-server: the server needs the [server] extra ({', '.join(absent)} "
                 "missing): pip install 'kvgrpc[server]', or from a clone: pip install '.[server]'")
