"""Undecodable requests get INVALID_ARGUMENT and one log line, not INTERNAL and a traceback.

gRPC deserializes a request before any handler runs. When the bytes are not a valid
message (broken protobuf, or a ``string`` field that is not UTF-8), grpcio's own code logs
"Exception deserializing request!" with a traceback and ends the call with INTERNAL.
:func:`deserializer` wraps a message parser so that it never raises: it returns an
:class:`Undecodable` in place of the message, which the server's handlers answer with
INVALID_ARGUMENT (:func:`undecodable_error`; a StreamPut with the records before the bad
message committed, like a bad record). A message over the server's own size limit becomes
an :class:`Oversized`, which the handlers answer with RESOURCE_EXHAUSTED naming the limit.
Transport code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvgrpc.errors import InvalidArgument
from kvgrpc.logs import RateLimitedLog

_LOGGER = logging.getLogger(__name__)


class Undecodable:
    """Stands for a request message whose bytes could not be parsed."""

    __slots__ = ("method", "size", "reason")

    def __init__(self, method: str, size: int, reason: str) -> None:
        self.method = method
        self.size = size
        self.reason = reason


class Oversized:
    """Stands for a request message larger than the server accepts (not parsed)."""

    __slots__ = ("method", "size")

    def __init__(self, method: str, size: int) -> None:
        self.method = method
        self.size = size


def deserializer(parse: Callable[[bytes], object], method: str = "",
                 max_bytes: int | None = None) -> Callable[[bytes], object]:
    """Returns a parser that gives ``parse(data)``, or an :class:`Undecodable` when that
    raises, or an :class:`Oversized` for data over ``max_bytes`` (it never raises itself)."""

    def parse_or_flag(data: bytes) -> object:
        if max_bytes is not None and len(data) > max_bytes:
            return Oversized(method, len(data))
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or anything a parser may raise on garbage
            return Undecodable(method, len(data), type(exc).__name__)

    return parse_or_flag


def undecodable_error(request: Undecodable, index: int | None = None, *,
                      log: RateLimitedLog | None = None) -> InvalidArgument:
    """The error for an undecodable request (``index``: its place in a request stream),
    logged through ``log`` (one line per method, then at most one a minute); a new
    server should pass one ``RateLimitedLog(logging.getLogger("kvgrpc.decoding"))``."""
    log = log or RateLimitedLog(_LOGGER)
    log.warning(request.method, "rejected an undecodable %s request (%s: not protobuf, "
                      "or a string field that is not UTF-8)", request.method or "gRPC", request.reason)
    where = "the request" if index is None else f"message {index} of the stream"
    return InvalidArgument(
        f"{where} is not a valid protobuf message of this method "
        "(malformed, or a string field that is not UTF-8)"
    )
