"""The exceptions of kvgrpc, and the one table that maps them to gRPC status codes.

Every layer raises only these (storage translates its driver's errors at its boundary);
the server turns them into a status with :func:`status_for`, and the client turns a
status back into the same class with :func:`error_for`::

    KvError                      base class; ``committed`` is set for a failed StreamPut,
                                 ``current_version`` for a failed compare-and-set
    ├── InvalidArgument          INVALID_ARGUMENT    bad key, value or record; bad request
    ├── NotFound                 NOT_FOUND           no record under the key
    ├── FailedPrecondition       FAILED_PRECONDITION the request conflicts with the current state
    ├── OutOfRange               OUT_OF_RANGE        a position that does not exist (a compacted revision)
    ├── Aborted                  ABORTED             a transaction conflict; retrying may succeed
    ├── ResourceExhausted        RESOURCE_EXHAUSTED  server busy, or a message over the size limit
    ├── Unavailable              UNAVAILABLE         the database (or server) cannot be reached
    ├── DeadlineExceeded         DEADLINE_EXCEEDED   the call's deadline passed
    ├── Cancelled                CANCELLED           the caller cancelled the call
    ├── Unauthenticated          UNAUTHENTICATED     missing or invalid credentials
    └── Internal                 INTERNAL            an unexpected failure (details only in the server log)

Messages are written for the caller: they name the record and the reason and never
contain SQL, driver text or passwords. This module imports no gRPC code: the status
codes are named by their canonical names so that the domain layer stays transport-free.
"""

from __future__ import annotations

__all__ = [
    "KvError",
    "InvalidArgument",
    "NotFound",
    "FailedPrecondition",
    "OutOfRange",
    "Aborted",
    "ResourceExhausted",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "Unauthenticated",
    "Internal",
    "STATUS_BY_ERROR",
    "ERROR_BY_STATUS",
    "COMMITTED_METADATA_KEY",
    "CURRENT_VERSION_METADATA_KEY",
    "status_name",
    "error_class",
]

#: Trailing-metadata key of a failed StreamPut: how many leading records were committed.
COMMITTED_METADATA_KEY = "kvgrpc-committed"
#: Trailing-metadata key of a failed compare-and-set: the key's current version (0: absent).
CURRENT_VERSION_METADATA_KEY = "kvgrpc-current-version"


class KvError(Exception):
    """Base class of every kvgrpc error.

    ``committed`` is the number of leading records of a StreamPut that were committed
    before the failure, or ``None`` when the error does not come from a StreamPut.
    ``current_version`` is the key's version when a compare-and-set failed (0: absent).
    ``load_id`` names the load of a failed ``stream_put`` that was named (by its caller, or
    by the client to retry it): ``get_load(load_id)`` reads its progress when ``committed``
    is unknown, and ``stream_put(the same records, load_id=load_id)`` finishes it.
    ``in_doubt`` (server side): the connection to the master was lost during a COMMIT,
    which may have taken effect; what it wrote is neither known committed nor known not.
    """

    def __init__(self, message: str, *, committed: int | None = None,
                 current_version: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.committed = committed
        self.current_version = current_version
        self.load_id: str | None = None
        self.in_doubt = False

    def __str__(self) -> str:
        return self.message


class InvalidArgument(KvError):
    """A key, value, record or request is invalid; the message says which and why."""


class NotFound(KvError):
    """No record exists under the key."""


class FailedPrecondition(KvError):
    """The request conflicts with the current state (e.g. an expected version)."""


class OutOfRange(KvError):
    """The request names a position that does not exist (e.g. a compacted revision)."""


class Aborted(KvError):
    """A transaction conflict stopped the request; retrying it may succeed."""


class ResourceExhausted(KvError):
    """The server is at a limit (concurrency, message size); the message states it."""


class Unavailable(KvError):
    """The database or the server cannot be reached right now; retrying may succeed."""


class DeadlineExceeded(KvError):
    """The call's deadline passed before it completed."""


class Cancelled(KvError):
    """The caller cancelled the call."""


class Unauthenticated(KvError):
    """The call has no valid credentials."""


class Internal(KvError):
    """An unexpected failure; the server logs the details, the caller gets none."""


#: The one table: exception class -> canonical gRPC status code name.
STATUS_BY_ERROR: dict[type[KvError], str] = {
    InvalidArgument: "INVALID_ARGUMENT",
    NotFound: "NOT_FOUND",
    FailedPrecondition: "FAILED_PRECONDITION",
    OutOfRange: "OUT_OF_RANGE",
    Aborted: "ABORTED",
    ResourceExhausted: "RESOURCE_EXHAUSTED",
    Unavailable: "UNAVAILABLE",
    DeadlineExceeded: "DEADLINE_EXCEEDED",
    Cancelled: "CANCELLED",
    Unauthenticated: "UNAUTHENTICATED",
    Internal: "INTERNAL",
}

#: The same table read the other way: status code name -> exception class.
ERROR_BY_STATUS: dict[str, type[KvError]] = {code: cls for cls, code in STATUS_BY_ERROR.items()}


def status_name(error: KvError) -> str:
    """Returns the status code name for ``error`` (its class or nearest mapped base)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]  # type: ignore[index]
    return "INTERNAL"


def error_class(code_name: str) -> type[KvError]:
    """Returns the exception class for a status code name; unmapped codes become Internal."""
    return ERROR_BY_STATUS.get(code_name, Internal)
