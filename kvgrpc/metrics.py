"""Prometheus metrics of a kvgrpc server, served over HTTP (``--metrics-port``).

- ``kvgrpc_rpc_requests_total{method, code}`` and ``kvgrpc_rpc_duration_seconds{method,
  code}`` (a histogram) for every unary and client-streaming call, observed by the
  handler as it ends, refused calls (UNAUTHENTICATED, RESOURCE_EXHAUSTED...) included;
  and for every Watch as it ends (cancelled by its client: OK);
- ``kvgrpc_records_written_total``: records committed by Put and StreamPut;
- ``kvgrpc_coalesced_groups_total{kind}`` and ``kvgrpc_coalesced_calls_total{kind}``
  (``kind`` ``read`` or ``write``): the groups of two or more concurrent Gets (one SELECT)
  or Puts/Deletes (one transaction) the server ran, and the calls in them
  (:mod:`kvgrpc.coalesce`); calls / groups is the mean group size;
- per database endpoint (``endpoint``, ``role`` labels), read at scrape time from the
  service's measured state: ``kvgrpc_endpoint_up``, ``kvgrpc_endpoint_healthy``,
  ``kvgrpc_replica_lag_seconds``, ``kvgrpc_pool_connections_in_use``,
  ``kvgrpc_pool_connections_max``. ``endpoint`` is the role and its index (``master``,
  ``replica-0``, ``replica-1``...): no host, port, user or database name is shown.

Each server has its own registry (tests run several servers in one process). The HTTP
endpoint listens on loopback unless told otherwise, and with a token set it answers only
requests carrying ``Authorization: Bearer TOKEN`` (401 otherwise).
"""

from __future__ import annotations

import errno
import hmac
import http.server
import socket
import threading

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: Where the metrics endpoint listens by default: this host only.
DEFAULT_METRICS_HOST = "127.0.0.1"

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _EndpointCollector:
    """Turns the service's endpoint status and counters into metrics at scrape time."""

    def __init__(self, service) -> None:
        self._service = service

    def collect(self):
        labels = ["endpoint", "role"]
        up = GaugeMetricFamily("kvgrpc_endpoint_up", "Whether the last check reached the endpoint.", labels=labels)
        healthy = GaugeMetricFamily("kvgrpc_endpoint_healthy", "Whether the endpoint serves reads now.", labels=labels)
        lag = GaugeMetricFamily("kvgrpc_replica_lag_seconds", "Measured replication lag.", labels=labels)
        in_use = GaugeMetricFamily("kvgrpc_pool_connections_in_use", "Connections in use.", labels=labels)
        size = GaugeMetricFamily("kvgrpc_pool_connections_max", "Most connections opened.", labels=labels)
        replicas = 0
        for e in self._service.status():
            if e.role == "replica":
                name, replicas = f"replica-{replicas}", replicas + 1
            else:
                name = e.role  # master, or embedded (SQLite)
            values = [name, e.role]
            up.add_metric(values, float(e.reachable))
            healthy.add_metric(values, float(e.healthy))
            if e.lag_ms is not None:
                lag.add_metric(values, e.lag_ms / 1000)
            in_use.add_metric(values, e.pool_in_use)
            size.add_metric(values, e.pool_size)
        written = CounterMetricFamily("kvgrpc_records_written", "Records committed by Put and StreamPut.")
        written.add_metric([], self._service.records_written)
        return [up, healthy, lag, in_use, size, written]


class _GroupCollector:
    """Reads the coalescers' counts of shared groups at scrape time."""

    def __init__(self, coalescers: dict) -> None:
        self._coalescers = coalescers  # kind -> kvgrpc.coalesce.Coalescer

    def collect(self):
        groups = CounterMetricFamily("kvgrpc_coalesced_groups",
                                     "Groups of two or more concurrent calls run as one.", labels=["kind"])
        calls = CounterMetricFamily("kvgrpc_coalesced_calls", "Calls run in those groups.", labels=["kind"])
        for kind, coalescer in self._coalescers.items():
            groups.add_metric([kind], coalescer.groups)
            calls.add_metric([kind], coalescer.grouped_ops)
        return [groups, calls]


class Metrics:
    """The metrics of one server: what its handlers observe, and an HTTP endpoint."""

    def __init__(self, service) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("kvgrpc_rpc_requests", "Calls, by method and status code.",
                                 ["method", "code"], registry=self.registry)
        self._duration = Histogram("kvgrpc_rpc_duration_seconds", "Call latency, by method and status code.",
                                   ["method", "code"], buckets=_BUCKETS, registry=self.registry)
        self.registry.register(_EndpointCollector(service))
        self._http: http.server.ThreadingHTTPServer | None = None

    def count_groups(self, **coalescers) -> None:
        """Exports the shared groups of these coalescers (by kind: ``read=``, ``write=``)."""
        self.registry.register(_GroupCollector(coalescers))

    def serve(self, host: str = DEFAULT_METRICS_HOST, port: int = 0, *, token: str | None = None) -> int:
        """Serves /metrics over HTTP on ``host`` (default: loopback only); returns the port
        (``port`` 0 picks one). With ``token``, a request needs ``Authorization: Bearer
        TOKEN`` (compared in constant time), else it gets 401 and no metrics. Raises
        OSError with a one-line message naming the flag when the port cannot be bound."""
        registry = self.registry
        expected = f"Bearer {token}".encode() if token else None

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if expected is not None and not hmac.compare_digest(
                        self.headers.get("Authorization", "").encode(), expected):
                    self._reply(401, b"a bearer token is required\n", "text/plain; charset=utf-8",
                                [("WWW-Authenticate", 'Bearer realm="kvgrpc-metrics"')])
                    return
                if self.path.split("?", 1)[0] not in ("/", "/metrics"):
                    self._reply(404, b"not found\n", "text/plain; charset=utf-8")
                    return
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

            def _reply(self, code: int, body: bytes, content_type: str, headers=()) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass  # scrapes are not logged (one every few seconds)

        server_class = _HTTPServer6 if ":" in host else http.server.ThreadingHTTPServer
        try:
            http_server = server_class((host, port), Handler)
        except OSError as exc:  # one line naming the flag, not a traceback
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"the metrics port {port} on {host} is in use (--metrics-port)") from None
            raise OSError(f"cannot serve metrics on {host}:{port} (--metrics-host, --metrics-port): "
                          f"{exc.strerror or exc}") from None
        http_server.daemon_threads = True
        threading.Thread(target=http_server.serve_forever, name="kvgrpc-metrics", daemon=True).start()
        self._http = http_server
        return http_server.server_address[1]

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._requests.labels(method, code).inc()
        self._duration.labels(method, code).observe(seconds)


class _HTTPServer6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
