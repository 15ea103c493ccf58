"""The metrics endpoint: loopback by default, an optional bearer token, and no
connection details (hosts, ports, users, database names) in what it shows."""

from __future__ import annotations

import urllib.error
import urllib.request


from kvgrpc.metrics import DEFAULT_METRICS_HOST, Metrics

TOKEN = "metrics-token-5d1e"


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_need_the_token_and_show_no_connection_details(start_server, sandbox, table_name):
    server = start_server(master=sandbox.master, replicas=(sandbox.replica,), table=table_name)
    with server.client() as kv:
        kv.put("m", b"1")
    metrics = Metrics(server.server.service)
    port = metrics.serve(port=0, token=TOKEN)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        assert _get(url)[0] == 401
        assert _get(url, "wrong")[0] == 401
        assert _get(url, TOKEN + "x")[0] == 401
        status, text = _get(url, TOKEN)
        assert status == 200
        assert 'kvgrpc_endpoint_up{endpoint="master",role="master"} 1.0' in text
        assert 'kvgrpc_endpoint_up{endpoint="replica-0",role="replica"} 1.0' in text
        for detail in (sandbox.master.host, str(sandbox.master.port), str(sandbox.replica.port),
                       f"{sandbox.master.user}@", "mysql://", table_name):
            assert detail not in text, detail
    finally:
        metrics.stop()


def test_metrics_listen_on_loopback_by_default(tmp_path, start_server):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"))
    metrics = Metrics(server.server.service)
    port = metrics.serve()
    try:
        assert DEFAULT_METRICS_HOST == "127.0.0.1"
        assert metrics._http.server_address[0] == "127.0.0.1"
        status, text = _get(f"http://127.0.0.1:{port}/metrics")  # no token set: open
        assert status == 200 and 'kvgrpc_endpoint_up{endpoint="embedded",role="embedded"} 1.0' in text
        assert _get(f"http://127.0.0.1:{port}/other")[0] == 404
    finally:
        metrics.stop()
