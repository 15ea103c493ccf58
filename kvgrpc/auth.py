"""Transport security: bearer-token authentication, TLS credentials, per-client limits.

- Tokens: the server accepts calls whose metadata carries ``authorization: Bearer
  <token>`` for one of its tokens (from ``KVGRPC_AUTH_TOKENS``, comma-separated, or a file
  of one token per line); any other call ends with UNAUTHENTICATED. The health service
  stays open (load balancers probe it without credentials). Tokens are compared in
  constant time and never logged.
- TLS: the server presents a certificate; with a client CA it also requires and checks
  client certificates (mutual TLS).
- Per-client limit: at most N concurrent client streams (StreamPut) per client, where a
  client is its bearer token if it has one, else its IP address; more get
  RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

_LOGGER = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
_OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def load_tokens(environ_value: str | None, path: str | None) -> list[str]:
    """Tokens from a comma-separated value and/or a file of one token per line."""
    tokens = [t.strip() for t in (environ_value or "").split(",") if t.strip()]
    if path:
        tokens += [line.strip() for line in Path(path).read_text().splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
    return tokens


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a valid bearer token (UNAUTHENTICATED)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in tokens]
        if not self._tokens:
            raise ValueError("token authentication needs at least one token")

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or invalid bearer token (metadata 'authorization: Bearer ...')")

        self._refusals = {
            "unary": grpc.unary_unary_rpc_method_handler(refuse),
            "stream": grpc.stream_unary_rpc_method_handler(refuse),
            "server_stream": grpc.unary_stream_rpc_method_handler(refuse),
            "bidi": grpc.stream_stream_rpc_method_handler(refuse),
        }

    def _valid(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == AUTHORIZATION and isinstance(value, str) and value.startswith("Bearer "):
                offered = value[len("Bearer "):].encode()
                # Compare with every token, so the time taken says nothing about which matched.
                return sum(hmac.compare_digest(offered, t) for t in self._tokens) > 0
        return False

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_OPEN_SERVICES) or self._valid(
            handler_call_details.invocation_metadata
        ):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return self._refusals["bidi"]
        if handler.request_streaming:
            return self._refusals["stream"]
        if handler.response_streaming:
            return self._refusals["server_stream"]
        return self._refusals["unary"]


def server_credentials(cert_file: str, key_file: str, client_ca_file: str | None) -> grpc.ServerCredentials:
    """TLS for the server; with ``client_ca_file``, clients must present a certificate it signed."""
    pair = (Path(key_file).read_bytes(), Path(cert_file).read_bytes())
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=Path(client_ca_file).read_bytes(),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([pair])


def channel_credentials(ca_file: str | None = None, cert_file: str | None = None,
                        key_file: str | None = None) -> grpc.ChannelCredentials:
    """TLS for a client: trust ``ca_file`` (default: the system's roots); present a client
    certificate when the server requires one."""
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor,
                   grpc.UnaryStreamClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call (on plaintext channels too)."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION, f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """``channel``, sending ``token`` with every call when one is given."""
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


def _client_identity(context, metadata) -> str:
    """Who is calling: a digest of the bearer token, else the peer's IP address."""
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            return "token:" + hashlib.sha256(value.encode()).hexdigest()[:16]
    peer = context.peer()  # "ipv4:127.0.0.1:53122" / "ipv6:[::1]:53122"
    return "ip:" + peer.rsplit(":", 1)[0]


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """Allows each client at most ``limit`` concurrent streams: client-streaming calls
    (StreamPut) and server-streaming ones (Watch) together."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the per-client stream limit must be at least 1")
        self._limit = limit
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def open_streams(self) -> int:
        """How many client streams are open now, all clients together."""
        with self._lock:
            return sum(self._open.values())

    @contextlib.contextmanager
    def _admitted(self, context, metadata) -> Iterator[None]:
        who = _client_identity(context, metadata)
        with self._lock:
            admitted = self._open[who] < self._limit
            if admitted:
                self._open[who] += 1
        if not admitted:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"this client already has {self._limit} streams open (the limit "
                          "per client); wait for one to finish")
        try:
            yield
        finally:
            with self._lock:
                self._open[who] -= 1
                if not self._open[who]:
                    del self._open[who]

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming == handler.response_streaming:
            return handler  # unary calls, and bidi ones (reflection)
        metadata = handler_call_details.invocation_metadata
        if handler.request_streaming:
            behavior = handler.stream_unary

            def limited(request_iterator, context):
                with self._admitted(context, metadata):
                    return behavior(request_iterator, context)

            return grpc.stream_unary_rpc_method_handler(
                limited, handler.request_deserializer, handler.response_serializer)
        server_streaming = handler.unary_stream

        def limited_responses(request, context):
            with self._admitted(context, metadata):
                yield from server_streaming(request, context)

        return grpc.unary_stream_rpc_method_handler(
            limited_responses, handler.request_deserializer, handler.response_serializer)
