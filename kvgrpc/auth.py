"""Transport security: bearer-token authentication, TLS credentials, per-client limits.

- Tokens: the server accepts calls whose metadata carries one ``authorization: Bearer
  <token>`` for one of its tokens (from ``KVGRPC_AUTH_TOKENS``, comma-separated, or a file
  of one token per line); any other call ends with UNAUTHENTICATED. The health service
  stays open (load balancers probe it without credentials). Tokens are compared in
  constant time and never logged.
- TLS: the server presents a certificate; with a client CA it also requires and checks
  client certificates (mutual TLS).
- Identity: the server's per-client limits are keyed by the validated token
  (:class:`Authenticator`); without tokens there is no client identity, and only
  server-wide and per-connection limits apply.
"""

from __future__ import annotations

import hmac
import logging
import re
import ssl
from collections.abc import Iterable
from pathlib import Path

import grpc

from kvgrpc.errors import Unauthenticated

_LOGGER = logging.getLogger(__name__)

AUTHORIZATION = "authorization"


def load_tokens(environ_value: str | None, path: str | None) -> list[str]:
    """Tokens from a comma-separated value and/or a file of one token per line (blank
    lines and ``#`` comments skipped). A file that holds no token is an error (ValueError),
    not "no authentication": the server would otherwise start open to anyone."""
    tokens = [t.strip() for t in (environ_value or "").split(",") if t.strip()]
    if path:
        listed = [line.strip() for line in Path(path).read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
        mode = Path(path).stat().st_mode
        if mode & 0o077:
            _LOGGER.warning("%s is readable or writable by other users (mode %03o); the tokens "
                            "in it are secrets: chmod 600 it", path, mode & 0o777)
        if not listed:
            raise ValueError(f"{path} holds no token (one per line; blank lines and # comments "
                             "are skipped); refusing to start without authentication")
        tokens += listed
    return tokens


class Authenticator:
    """Checks a call's bearer token; returns who is calling (the validated token's identity).

    A call must carry exactly one ``authorization`` entry, ``Bearer <token>`` for one of
    the configured tokens; anything else (none, several, another scheme, an unknown token)
    raises Unauthenticated. Identities are ``token:<n>``, the token's position in the
    configuration, so a per-client limit can never be raised by made-up headers.
    Without tokens every call is anonymous (identity None). Thread-safe; tokens are
    compared in constant time and never logged.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def identify(self, metadata) -> str | None:
        if not self._tokens:
            return None
        offered = [value for key, value in metadata or () if key == AUTHORIZATION]
        scheme, _, credentials = offered[0].partition(" ") if len(offered) == 1 and isinstance(
            offered[0], str) else ("", "", "")
        if scheme.lower() == "bearer":  # the scheme is case-insensitive (RFC 9110 11.1)
            candidate = credentials.strip().encode()
            # Compare with every token, so the time taken says nothing about which matched.
            matches = [hmac.compare_digest(candidate, t) for t in self._tokens]
            if any(matches):
                return f"token:{matches.index(True)}"
        raise Unauthenticated(
            "missing or invalid bearer token (exactly one metadata entry "
            "'authorization: Bearer <token>' is needed)")


def server_credentials(cert_file: str, key_file: str, client_ca_file: str | None) -> grpc.ServerCredentials:
    """TLS for the server; with ``client_ca_file``, clients must present a certificate it signed."""
    pair = (Path(key_file).read_bytes(), Path(cert_file).read_bytes())
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=Path(client_ca_file).read_bytes(),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([pair])


def check_key_pair(cert_file: str, key_file: str, cert_name: str, key_name: str) -> None:
    """ValueError unless ``cert_file`` and ``key_file`` (PEM) are a certificate and its
    unencrypted private key; the error names them by ``cert_name``/``key_name`` (a flag or
    an argument) with OpenSSL's reason. grpc would only fail later, and not say why."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # An encrypted key gets the empty password (grpc cannot use one) instead of a prompt.
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except FileNotFoundError as exc:
        raise ValueError(f"{cert_name} {cert_file} / {key_name} {key_file}: "
                         f"no such file: {exc.filename}") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(f"{cert_name} {cert_file} and {key_name} {key_file} do not form a pair "
                         f"({ssl_reason(exc)}): the key must be the certificate's private key, "
                         "both PEM, the key unencrypted") from None


def ssl_reason(exc: Exception) -> str:
    """OpenSSL's words for a failed load, without CPython's source position."""
    reason = getattr(exc, "reason", None)
    library = getattr(exc, "library", None)
    if reason:
        return f"{library}: {reason}" if library else str(reason)
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc)) or type(exc).__name__


def channel_credentials(ca_file: str | None = None, cert_file: str | None = None,
                        key_file: str | None = None) -> grpc.ChannelCredentials:
    """TLS for a client: trust ``ca_file`` (default: the system's roots); present a client
    certificate when the server requires one (``cert_file`` and ``key_file`` together:
    ValueError if one is missing or they do not form a pair, which grpc would answer by
    aborting the process)."""
    if (cert_file is None) != (key_file is None):
        given, missing = ("cert_file", "key_file") if key_file is None else ("key_file", "cert_file")
        raise ValueError(f"a client certificate needs both files: {given} is set but {missing} is not")
    if cert_file is not None and key_file is not None:
        check_key_pair(cert_file, key_file, "cert_file", "key_file")
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
