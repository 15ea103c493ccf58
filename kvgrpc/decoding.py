"""Undecodable requests get INVALID_ARGUMENT and one log line, not INTERNAL and a traceback.

gRPC deserializes a request before any handler runs. When the bytes are not a valid
message (broken protobuf, or a ``string`` field that is not UTF-8), grpcio's own code logs
"Exception deserializing request!" with a traceback and ends the call with INTERNAL.
:func:`deserializer` wraps a message parser so that it never raises: it returns an
:class:`Undecodable` in place of the message, and :class:`DecodeGuard`, a server
interceptor, installs such parsers and answers those calls with INVALID_ARGUMENT (a
StreamPut with the records before the bad message committed, like a bad record).

Transport only (grpc); the lead's grpc.aio server can reuse :func:`deserializer` and
:func:`undecodable_error` as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import grpc

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


def deserializer(parse: Callable[[bytes], object], method: str = "") -> Callable[[bytes], object]:
    """Returns a parser that gives ``parse(data)``, or an :class:`Undecodable` when that
    raises (it never raises itself)."""

    def parse_or_flag(data: bytes) -> object:
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


class DecodeGuard(grpc.ServerInterceptor):
    """Installs :func:`deserializer` on every method with a request deserializer and
    turns an :class:`Undecodable` into INVALID_ARGUMENT before the handler sees it.

    It must be the innermost interceptor (last in the list), so that the interceptors
    around it pass its deserializer on. ``abort(context, error)`` ends a call with a
    KvError's status (the server's one place that aborts).
    """

    def __init__(self, abort: Callable[[grpc.ServicerContext, InvalidArgument], None]) -> None:
        self._abort = abort
        # One line per method when the first undecodable request comes, then one a minute.
        self._log = RateLimitedLog(_LOGGER)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        parse = deserializer(handler.request_deserializer, method)
        abort, log = self._abort, self._log

        if handler.request_streaming and handler.response_streaming:
            return handler  # bidi (reflection): not ours to answer for
        if handler.request_streaming:
            def messages(requests) -> Iterator[object]:
                for index, request in enumerate(requests):
                    if isinstance(request, Undecodable):
                        raise undecodable_error(request, index, log=log)  # the handler maps it
                    yield request

            behavior = handler.stream_unary
            return grpc.stream_unary_rpc_method_handler(
                lambda requests, context: behavior(messages(requests), context),
                parse, handler.response_serializer)

        def checked(behavior):
            def call(request, context):
                if isinstance(request, Undecodable):
                    abort(context, undecodable_error(request, log=log))
                return behavior(request, context)
            return call

        if handler.response_streaming:
            def streamed(request, context):
                if isinstance(request, Undecodable):
                    abort(context, undecodable_error(request, log=log))
                yield from handler.unary_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(streamed, parse, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(
            checked(handler.unary_unary), parse, handler.response_serializer)
