"""The gRPC transport: ``python -m kvgrpc.server --port 1313``.

Each servicer method has the same beats: convert the request, call the domain service
(:mod:`kvgrpc.service`), build the reply. Errors are turned into a status in one place,
:func:`_status_on_error`, through the table in :mod:`kvgrpc.errors`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import kvgrpc  # noqa: F401 - loads the MySQL C extension before grpc imports ssl
import grpc
from kvgrpc.extras import exit_unless_server_extra
exit_unless_server_extra(__name__)  # a one-line hint, not a traceback, without the [server] extra
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kvgrpc import kv_pb2, kv_pb2_grpc
from kvgrpc.auth import StreamLimitInterceptor, TokenAuthInterceptor, load_tokens, server_credentials
from kvgrpc.metrics import Metrics
from kvgrpc.deadlines import call_deadline, current as current_deadline
from kvgrpc.errors import COMMITTED_METADATA_KEY, CURRENT_VERSION_METADATA_KEY, Internal, InvalidArgument, KvError, status_name
from kvgrpc.routing import Consistency, ReadOptions, ReadRouter
from kvgrpc.service import KeyValueService, ScanPage
from kvgrpc.store import MySQLEndpoint, MySQLStore, SQLiteStore, Store, mysql_driver
from kvgrpc.records import DEFAULT_MAX_VALUE_BYTES, MAX_KEY_BYTES, EndpointStatus, Limits

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = kv_pb2.DESCRIPTOR.services_by_name["KeyValue"].full_name


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; built once by :func:`main` (or by a test)."""

    host: str = "[::]"
    port: int = 1313
    sqlite_path: str = "kvgrpc.sqlite3"
    master: MySQLEndpoint | None = None
    replicas: Sequence[MySQLEndpoint] = field(default_factory=tuple)
    table: str = "kv"
    pool_size: int = 8
    pool_timeout: float = 5.0
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_message_bytes: int = 4 << 20
    max_workers: int = 32
    max_concurrent_rpcs: int | None = None  # None: max_workers (no call waits for a thread)
    shutdown_grace: float = 30.0
    max_replica_lag: float = 5.0
    monitor_interval: float = 0.1
    require_semi_sync: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # set: clients must present a certificate it signed
    auth_tokens: Sequence[str] = field(default_factory=tuple, repr=False)
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    max_streams_per_client: int = 8
    keepalive_time: float = 60.0  # seconds between pings on an idle connection
    keepalive_timeout: float = 20.0  # seconds to wait for the ping's answer


# --------------------------------------------------------------------------------------
# Servicer
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _status_on_error(context: grpc.ServicerContext) -> Iterator[None]:
    """Ends the call with the status that the table assigns to a raised error.

    The only place that calls ``context.abort``. Anything unexpected is logged and
    becomes INTERNAL with no detail, never UNKNOWN with internal text. It also makes the
    call's deadline current (:mod:`kvgrpc.deadlines`) for the layers below.
    """
    try:
        with call_deadline(_deadline(context)):
            yield
    except grpc.RpcError:
        raise  # the transport's own (e.g. the client cancelled a stream): nothing to add
    except KvError as exc:
        error = exc
    except Exception:
        _LOGGER.exception("unexpected error")
        error = Internal("internal server error; see the server log")
    else:
        return
    trailing = []
    if error.committed is not None:
        trailing.append((COMMITTED_METADATA_KEY, str(error.committed)))
    if error.current_version is not None:
        trailing.append((CURRENT_VERSION_METADATA_KEY, str(error.current_version)))
    if trailing:
        context.set_trailing_metadata(tuple(trailing))
    context.abort(getattr(grpc.StatusCode, status_name(error)), error.message)


def _record_pb(record) -> kv_pb2.Record:
    return kv_pb2.Record(key=record.key, value=record.value, version=record.version)


def _watch_response_pb(batch) -> kv_pb2.WatchResponse:
    # Filled in place: 2.5x faster than building an Event and a Record per event and
    # copying them in (a watch of every key does this for every record written).
    response = kv_pb2.WatchResponse(created=batch.created, revision=batch.revision)
    add = response.events.add
    put, delete = kv_pb2.EVENT_TYPE_PUT, kv_pb2.EVENT_TYPE_DELETE
    for event in batch.events:
        record = add(type=delete if event.deleted else put, revision=event.revision).record
        record.key, record.value, record.version = event.key, event.value, event.version
    return response


_CONSISTENCY = {
    kv_pb2.READ_CONSISTENCY_UNSPECIFIED: Consistency.EVENTUAL,
    kv_pb2.READ_CONSISTENCY_EVENTUAL: Consistency.EVENTUAL,
    kv_pb2.READ_CONSISTENCY_STRONG: Consistency.STRONG,
    kv_pb2.READ_CONSISTENCY_BOUNDED_STALENESS: Consistency.BOUNDED_STALENESS,
}

_ROLE = {
    "master": kv_pb2.ENDPOINT_ROLE_MASTER,
    "replica": kv_pb2.ENDPOINT_ROLE_REPLICA,
    "embedded": kv_pb2.ENDPOINT_ROLE_EMBEDDED,
}


def _read_options(message: kv_pb2.ReadOptions) -> ReadOptions:
    consistency = _CONSISTENCY.get(message.consistency)
    if consistency is None:
        raise InvalidArgument(f"read_options.consistency {message.consistency} is not a known value")
    return ReadOptions(consistency, message.max_staleness_ms / 1000.0, message.min_write_token)


def _deadline(context) -> float | None:
    """The call's deadline on the time.monotonic() clock, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _endpoint_pb(status: EndpointStatus) -> kv_pb2.EndpointStatus:
    return kv_pb2.EndpointStatus(
        name=status.name, role=_ROLE[status.role], reachable=status.reachable,
        healthy=status.healthy, lag_ms=-1 if status.lag_ms is None else status.lag_ms,
        pool_in_use=status.pool_in_use, pool_size=status.pool_size,
        semi_sync_active=status.semi_sync_active, problem=status.problem,
    )


class KeyValueServicer(kv_pb2_grpc.KeyValueServicer):
    """The ``kvgrpc.v1.KeyValue`` service over a :class:`KeyValueService`."""

    def __init__(self, service: KeyValueService) -> None:
        self._service = service

    def Put(self, request: kv_pb2.PutRequest, context) -> kv_pb2.PutResponse:
        with _status_on_error(context):
            expected = request.expected_version if request.HasField("expected_version") else None
            written = self._service.put(request.key, request.value, expected)
        return kv_pb2.PutResponse(version=written.version, write_token=written.token,
                                  revision=written.revision)

    def Get(self, request: kv_pb2.GetRequest, context) -> kv_pb2.GetResponse:
        with _status_on_error(context):
            record = self._service.get(
                request.key, _read_options(request.read_options), current_deadline()
            )
        return kv_pb2.GetResponse(record=_record_pb(record))

    def Delete(self, request: kv_pb2.DeleteRequest, context) -> kv_pb2.DeleteResponse:
        with _status_on_error(context):
            deleted, commit = self._service.delete(request.key)
        return kv_pb2.DeleteResponse(deleted=deleted, write_token=commit.token,
                                     revision=commit.revision)

    def BatchGet(self, request: kv_pb2.BatchGetRequest, context) -> kv_pb2.BatchGetResponse:
        with _status_on_error(context):
            records, missing = self._service.batch_get(
                list(request.keys), _read_options(request.read_options), current_deadline()
            )
        return kv_pb2.BatchGetResponse(
            records=[_record_pb(r) for r in records], missing_keys=missing
        )

    def StreamPut(self, request_iterator, context) -> kv_pb2.StreamPutResponse:
        batches = ([(r.key, r.value) for r in message.records] for message in request_iterator)
        with _status_on_error(context):
            result = self._service.stream_put(batches)
        return kv_pb2.StreamPutResponse(committed_count=result.committed, write_token=result.token,
                                        revision=result.revision)

    def Scan(self, request: kv_pb2.ScanRequest, context) -> kv_pb2.ScanResponse:
        with _status_on_error(context):
            page = ScanPage(
                prefix=request.prefix, start_key=request.start_key, end_key=request.end_key,
                size=request.page_size or 100, max_bytes=request.page_bytes or (1 << 20),
                page_token=request.page_token, keys_only=request.keys_only,
            )
            records, token = self._service.scan(
                page, _read_options(request.read_options), current_deadline()
            )
        return kv_pb2.ScanResponse(records=[_record_pb(r) for r in records], next_page_token=token)

    def Watch(self, request: kv_pb2.WatchRequest, context) -> Iterator[kv_pb2.WatchResponse]:
        cancelled = threading.Event()
        context.add_callback(cancelled.set)  # the client left, or the call ended
        target = request.WhichOneof("target")
        start = request.start_revision if request.HasField("start_revision") else None
        with _status_on_error(context):
            batches = self._service.watch(
                request.key if target == "key" else None,
                request.prefix if target == "prefix" else None,
                start, cancelled.is_set,
            )
            for batch in batches:
                yield _watch_response_pb(batch)

    def GetStatus(self, request: kv_pb2.GetStatusRequest, context) -> kv_pb2.GetStatusResponse:
        with _status_on_error(context):
            endpoints = self._service.status()
        limits = kv_pb2.ServerLimits(**dataclasses.asdict(self._service.limits))
        return kv_pb2.GetStatusResponse(endpoints=[_endpoint_pb(e) for e in endpoints],
                                        limits=limits)


# --------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------


def build_service(config: ServerConfig) -> KeyValueService:
    """Opens the stores the config names and returns the domain service over them."""
    limits = Limits(max_value_bytes=config.max_value_bytes)
    if config.master is None:
        if config.replicas:
            raise ValueError("a replica is configured but no master: set --master too")
        if config.require_semi_sync:
            raise ValueError("--require-semi-sync needs a MySQL/MariaDB master")
        store = SQLiteStore(config.sqlite_path, config.table)
        return KeyValueService(store, limits=limits,
                               router=ReadRouter(store, master_role="embedded"))
    writer: Store = MySQLStore(
        config.master, config.table, role="master", pool_size=config.pool_size,
        pool_timeout=config.pool_timeout, create_table=True,
        require_semi_sync=config.require_semi_sync,
    )  # the master creates the table if it is missing
    readers = [
        MySQLStore(endpoint, config.table, role="replica", pool_size=config.pool_size,
                   pool_timeout=config.pool_timeout)
        for endpoint in config.replicas
    ]
    for store in (writer, *readers):
        try:
            store.connect()
        except KvError as exc:  # keep serving: each request retries, and says UNAVAILABLE
            _LOGGER.error("%s: %s; will retry on each request", store.description, exc)
    router = ReadRouter(
        writer, readers, max_lag=config.max_replica_lag, interval=config.monitor_interval,
        watch_semi_sync=config.require_semi_sync,
    )
    return KeyValueService(writer, readers, limits=limits, router=router,
                           require_semi_sync=config.require_semi_sync)


class KeyValueServer:
    """A running kvgrpc server: the gRPC server, its health service and its stores."""

    def __init__(self, config: ServerConfig, service: KeyValueService) -> None:
        if config.max_message_bytes < config.max_value_bytes + MAX_KEY_BYTES + 64:
            raise ValueError(
                f"max message size {config.max_message_bytes} bytes cannot hold a record "
                f"with the largest value ({config.max_value_bytes} bytes)"
            )
        self.config = config
        self.service = service
        self.health = health.HealthServicer()
        self.metrics = Metrics(service) if config.metrics_port is not None else None
        self.metrics_port: int | None = None
        interceptors: list[grpc.ServerInterceptor] = []
        if self.metrics is not None:  # outermost, so refused calls are counted too
            interceptors.append(self.metrics.interceptor())
        if config.auth_tokens:
            interceptors.append(TokenAuthInterceptor(config.auth_tokens))
        self.stream_limit = StreamLimitInterceptor(config.max_streams_per_client)
        interceptors.append(self.stream_limit)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="kvgrpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs or config.max_workers,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                # Keepalive: find dead client connections (and keep NATs open) when idle.
                ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
                ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
                ("grpc.http2.ping_timeout_ms", int(config.keepalive_timeout * 1000)),
                ("grpc.keepalive_permit_without_calls", 1),
                # Keep pinging an idle stream (a quiet Watch): by default the server stops
                # after 2 pings without data, and would never notice its client vanish.
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        kv_pb2_grpc.add_KeyValueServicer_to_server(KeyValueServicer(service), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        # Server reflection: `grpcurl -plaintext HOST:PORT list` / `describe` need no proto file.
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self._grpc,
        )
        address = f"{config.host}:{config.port}"
        if config.tls_cert or config.tls_key:
            if not (config.tls_cert and config.tls_key):
                raise ValueError("TLS needs both --tls-cert and --tls-key")
            credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
            self.port = self._grpc.add_secure_port(address, credentials)
        elif config.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        else:
            self.port = self._grpc.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.host}:{config.port}")

    def start(self) -> None:
        self.service.start()
        self._grpc.start()
        if self.metrics is not None:
            self.metrics_port = self.metrics.serve(self.config.host.strip("[]"), self.config.metrics_port)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> None:
        """Refuses new calls, lets in-flight ones finish for ``grace`` seconds, closes stores."""
        self.health.enter_graceful_shutdown()
        self.service.begin_shutdown()  # watches end now (UNAVAILABLE: resume elsewhere)
        self._grpc.stop(self.config.shutdown_grace if grace is None else grace).wait()
        if self.metrics is not None:
            self.metrics.stop()
        self.service.close()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._grpc.wait_for_termination(timeout)


def build_server(config: ServerConfig) -> KeyValueServer:
    """Wires stores, service and transport; the server is bound but not started."""
    service = build_service(config)
    try:
        return KeyValueServer(config, service)
    except BaseException:
        service.close()
        raise


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kvgrpc-server",
        description="Serve the kvgrpc.v1.KeyValue gRPC service. With no --master it stores "
        "records in an embedded SQLite file.",
        epilog="Environment: KVGRPC_MASTER_URL, KVGRPC_REPLICA_URL (comma-separated), "
        "KVGRPC_MYSQL_PASSWORD (used when a URL has no password).",
    )
    p.add_argument("--host", default="[::]", help="address to listen on (default: all, [::])")
    p.add_argument("--port", type=int, default=1313, help="port to listen on (default: 1313; 0 picks one)")
    p.add_argument("--sqlite", metavar="PATH", default="kvgrpc.sqlite3",
                   help="SQLite file used when no master is configured (default: ./kvgrpc.sqlite3)")
    p.add_argument("--master", metavar="URL", help="mysql://user:password@host:port/database of the master")
    p.add_argument("--replica", metavar="URL", action="append", default=None,
                   help="a read replica's URL; repeat for several")
    p.add_argument("--table", default="kv", help="table name (default: kv)")
    p.add_argument("--pool-size", type=int, default=8, help="connections per database endpoint, 1-32 (default: 8)")
    p.add_argument("--pool-timeout", type=float, default=5.0,
                   help="seconds a request waits for a free connection (default: 5)")
    p.add_argument("--max-value-bytes", type=int, default=DEFAULT_MAX_VALUE_BYTES,
                   help="largest value accepted (default: 1 MiB)")
    p.add_argument("--max-message-bytes", type=int, default=4 << 20,
                   help="largest request message accepted (default: 4 MiB)")
    p.add_argument("--max-workers", type=int, default=32, help="RPC worker threads (default: 32)")
    p.add_argument("--max-concurrent-rpcs", type=int, default=None,
                   help="calls in progress (running or waiting for a worker) beyond which new "
                   "ones get RESOURCE_EXHAUSTED (default: --max-workers, so none waits)")
    p.add_argument("--shutdown-grace", type=float, default=30.0,
                   help="seconds in-flight calls may take to finish on SIGTERM/SIGINT (default: 30)")
    p.add_argument("--max-replica-lag", type=float, default=5.0,
                   help="seconds of lag beyond which a replica stops serving reads (default: 5)")
    p.add_argument("--require-semi-sync", action="store_true",
                   help="acknowledge a write only if semi-synchronous replication confirmed it")
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--tls-client-ca", metavar="FILE",
                   help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--auth-tokens-file", metavar="FILE",
                   help="accept calls with 'authorization: Bearer TOKEN' for a token in FILE "
                   "(one per line; also KVGRPC_AUTH_TOKENS, comma-separated); others get "
                   "UNAUTHENTICATED")
    p.add_argument("--max-streams-per-client", type=int, default=8,
                   help="concurrent StreamPut calls per client (token, else IP); default 8")
    p.add_argument("--keepalive-time", type=float, default=60.0,
                   help="seconds of idleness before the server pings a connection (default 60)")
    p.add_argument("--keepalive-timeout", type=float, default=20.0,
                   help="seconds to wait for a ping's answer before closing (default 20)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text lines, or one JSON object per line (for log collectors)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
) -> tuple[ServerConfig, tuple[str, str]]:
    """Builds the config (and the log level and format) from the command line and environment."""
    args = _parser().parse_args(argv)
    password = environ.get("KVGRPC_MYSQL_PASSWORD")
    master_url = args.master or environ.get("KVGRPC_MASTER_URL") or None
    replica_urls = args.replica if args.replica is not None else [
        url.strip() for url in environ.get("KVGRPC_REPLICA_URL", "").split(",") if url.strip()
    ]
    return ServerConfig(
        host=args.host,
        port=args.port,
        sqlite_path=args.sqlite,
        master=MySQLEndpoint.from_url(master_url, password) if master_url else None,
        replicas=tuple(MySQLEndpoint.from_url(url, password) for url in replica_urls),
        table=args.table,
        pool_size=args.pool_size,
        pool_timeout=args.pool_timeout,
        max_value_bytes=args.max_value_bytes,
        max_message_bytes=args.max_message_bytes,
        max_workers=args.max_workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        shutdown_grace=args.shutdown_grace,
        max_replica_lag=args.max_replica_lag,
        require_semi_sync=args.require_semi_sync,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_tokens=tuple(load_tokens(environ.get("KVGRPC_AUTH_TOKENS"), args.auth_tokens_file)),
        metrics_port=args.metrics_port,
        max_streams_per_client=args.max_streams_per_client,
        keepalive_time=args.keepalive_time,
        keepalive_timeout=args.keepalive_timeout,
    ), (args.log_level, args.log_format)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message (and any exception)."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, log_level = config_from_args(argv)
    except (KvError, OSError) as exc:
        print(f"kvgrpc-server: {exc}", file=sys.stderr)
        return 2
    level, log_format = log_level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        server = build_server(config)
    except (KvError, ValueError, OSError) as exc:
        _LOGGER.error("cannot start: %s", exc)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    server.start()
    _LOGGER.info("listening on %s:%d (%s, %s)", config.host, server.port,
                 ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls_cert else "plaintext",
                 f"bearer tokens required ({len(config.auth_tokens)} configured)"
                 if config.auth_tokens else "no authentication")
    _LOGGER.info("writes: %s", server.service.writer.description)
    for reader in server.service.readers:
        _LOGGER.info("reads: %s", reader.description)
    if server.metrics_port is not None:
        _LOGGER.info("metrics on http://%s:%d/metrics", config.host, server.metrics_port)
    if config.master is not None:
        _LOGGER.info("driver: %s", mysql_driver())
    stop.wait()
    _LOGGER.info("stopping: letting in-flight calls finish (up to %g s)", config.shutdown_grace)
    server.stop()
    _LOGGER.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
