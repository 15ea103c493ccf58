"""kvgrpc: a gRPC key-value service on MySQL/MariaDB replication.

The public surface: :class:`KeyValueClient` (the Python client; its asyncio twin is
``kvgrpc.aio.KeyValueClient``), :class:`Record`, and the exceptions of :mod:`kvgrpc.errors`.
The generated stubs are ``kvgrpc.kv_pb2`` and ``kvgrpc.kv_pb2_grpc``; they need only grpcio and
protobuf.
"""

from __future__ import annotations

# mysql-connector-python's C extension bundles its own OpenSSL; once anything has imported
# `ssl` (grpc does) it fails to load and the driver silently falls back to pure Python,
# ~30% slower on writes and ~3x on reads (DEVELOPERS.md). Loading it first avoids that.
# It is optional: a consumer of the stubs has no MySQL driver installed.
try:
    import _mysql_connector  # noqa: F401
except ImportError:
    pass

from kvgrpc.errors import (
    Aborted,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KvError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

from kvgrpc.records import Record

__all__ = [
    "KeyValueClient",
    "Record",
    "KvError",
    "InvalidArgument",
    "NotFound",
    "FailedPrecondition",
    "Aborted",
    "ResourceExhausted",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "Unauthenticated",
    "Internal",
]


def __getattr__(name: str):
    # The client is imported on first use, so that `python -m kvgrpc.client` does not
    # find the module already imported by its own package.
    if name == "KeyValueClient":
        from kvgrpc.client import KeyValueClient

        return KeyValueClient
    raise AttributeError(f"module 'kvgrpc' has no attribute {name!r}")
