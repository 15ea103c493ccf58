"""kvgrpc: a gRPC key-value service on MySQL/MariaDB replication.

The public surface: :class:`KeyValueClient` (the Python client), :class:`Record`, and the
exceptions of :mod:`kvgrpc.errors`. The generated stubs are ``kvgrpc.kv_pb2`` and
``kvgrpc.kv_pb2_grpc``; they need only grpcio and protobuf.
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

from kvgrpc.client import KeyValueClient, Record
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
