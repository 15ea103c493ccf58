"""TLS, mutual TLS and bearer tokens, against real servers; and no secret in the logs."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvgrpc import kv_pb2
from kvgrpc.errors import Unauthenticated, Unavailable

TOKEN = "s3cret-token-for-tests-0123456789"


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(directory, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def _make_cert(directory, name: str, ca: str, san: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and an
    unrelated CA — made with openssl for this test run."""
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_cert(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    _make_cert(d, "client", "ca", "DNS:client")
    return d


def test_token_required(start_server, tmp_path, caplog, client_kind):
    caplog.set_level(logging.DEBUG)
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), auth_tokens=(TOKEN,))
    with server.client() as anonymous:
        with pytest.raises(Unauthenticated, match="missing or invalid bearer token"):
            anonymous.put("k", b"v")
        with pytest.raises(Unauthenticated):
            list(anonymous.scan())
        with pytest.raises(Unauthenticated):
            anonymous.stream_put([("k", b"v")])
    with server.client(token="wrong-token") as wrong:
        with pytest.raises(Unauthenticated):
            wrong.get("k")
    with server.client(token=TOKEN) as kv:
        assert kv.put("k", b"v") == 1 and kv.get("k") == b"v"
        assert kv.stream_put([("a", b"1"), ("b", b"2")]) == 2
    # The scheme is case-insensitive (RFC 9110); the token is not.
    with grpc.insecure_channel(server.target) as channel:
        get = channel.unary_unary("/kvgrpc.v1.KeyValue/Get", request_serializer=kv_pb2.GetRequest.SerializeToString,
                                  response_deserializer=kv_pb2.GetResponse.FromString)
        assert get(kv_pb2.GetRequest(key="k"), metadata=[("authorization", f"bearer {TOKEN}")],
                   timeout=5).record.value == b"v"
        with pytest.raises(grpc.RpcError) as refused:
            get(kv_pb2.GetRequest(key="k"), metadata=[("authorization", f"bearer {TOKEN.upper()}x")], timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Load balancers' health checks need no token.
    with grpc.insecure_channel(server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def _raw_get(target: str, headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """A Get sent as raw HTTP/2 frames (grpc clients refuse metadata that is not UTF-8);
    returns the response's trailers (grpc-status, grpc-message)."""
    import socket
    import struct

    import h2.config
    import h2.connection
    import h2.events

    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        conn.initiate_connection()
        conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"),
                              (b":path", b"/kvgrpc.v1.KeyValue/Get"), (b":authority", b"localhost"),
                              (b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers])
        body = kv_pb2.GetRequest(key="k").SerializeToString()
        conn.send_data(1, b"\x00" + struct.pack(">I", len(body)) + body, end_stream=True)
        sock.sendall(conn.data_to_send())
        trailers: dict[bytes, bytes] = {}
        while b"grpc-status" not in trailers:
            data = sock.recv(65536)
            assert data, "the server closed the connection without a status"
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    trailers.update(dict(event.headers))
            sock.sendall(conn.data_to_send())
        return trailers


def test_metadata_that_is_not_utf8_is_refused_and_not_logged(start_server, tmp_path, caplog):
    """grpc logs such a value, a token with it, with a traceback per call: kvgrpc keeps
    that out of its log and says only that such calls came, once."""
    caplog.set_level(logging.INFO)  # (h2's DEBUG lines show the headers this client sends)
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"), auth_tokens=(TOKEN,))
    for _ in range(5):
        trailers = _raw_get(server.target, [(b"authorization", f"Bearer {TOKEN}".encode() + b"\xff")])
        assert trailers[b"grpc-status"] == str(grpc.StatusCode.UNAUTHENTICATED.value[0]).encode()
        trailers = _raw_get(server.target, [(b"authorization", f"Bearer {TOKEN}".encode()),
                                            (b"x-note", b"caf\xe9 \xff")])
        assert trailers[b"grpc-status"] == str(grpc.StatusCode.NOT_FOUND.value[0]).encode()
    assert TOKEN not in caplog.text and "Invalid encoding" not in caplog.text
    assert "Traceback" not in caplog.text
    notes = [r for r in caplog.records if "metadata value that is not UTF-8" in r.getMessage()]
    assert len(notes) == 1


def test_tls_and_a_wrong_ca(start_server, tmp_path, pki, client_kind):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"),
                          tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"))
    with server.client(ca_file=str(pki / "ca.pem"), timeout=5) as kv:
        assert kv.put("k", b"over tls") == 1
    with server.client(ca_file=str(pki / "other-ca.pem"), timeout=3) as impostor_trust:
        with pytest.raises(Unavailable, match="certificate is not signed by a CA this client trusts") as wrong_ca:
            impostor_trust.get("k")
    with server.client(timeout=3) as plaintext:
        with pytest.raises(Unavailable, match="if it serves TLS, connect with TLS") as no_tls:
            plaintext.get("k")
    server.server.stop(0)
    with server.client(timeout=3) as nobody:
        with pytest.raises(Unavailable, match=f"cannot connect to 127.0.0.1:{server.port}: connection "
                           "refused") as refused:
            nobody.get("k")
    for error in (wrong_ca, no_tls, refused):  # grpc's internal status names are not shown
        assert "UNKNOWN" not in str(error.value) and "last error" not in str(error.value), error.value


def test_mutual_tls_requires_a_client_certificate(start_server, tmp_path, pki, client_kind):
    server = start_server(sqlite_path=str(tmp_path / "kv.sqlite3"),
                          tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
                          tls_client_ca=str(pki / "ca.pem"), auth_tokens=(TOKEN,))
    with server.client(ca_file=str(pki / "ca.pem"), cert_file=str(pki / "client.pem"),
                       key_file=str(pki / "client.key"), token=TOKEN, timeout=5) as kv:
        assert kv.put("k", b"mutual") == 1
    with server.client(ca_file=str(pki / "ca.pem"), token=TOKEN, timeout=3) as no_cert:
        with pytest.raises(Unavailable):
            no_cert.get("k")


def test_a_client_certificate_without_its_key_is_refused_clearly(pki, tmp_path):
    """grpc aborts the whole process (a C-core check) on a certificate without its key:
    the library refuses first with ValueError, the CLI with a one-line error."""
    from kvgrpc.aio import KeyValueClient as AsyncKeyValueClient
    from kvgrpc.client import KeyValueClient

    ca, cert, key = str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key")
    for kwargs, match in (({"cert_file": cert}, "cert_file is set but key_file is not"),
                          ({"key_file": key, "tls": True}, "key_file is set but cert_file is not"),
                          ({"cert_file": cert, "key_file": str(pki / "server.key")},
                           "do not form a pair")):
        with pytest.raises(ValueError, match=match):
            KeyValueClient("localhost:1", ca_file=ca, **kwargs)
        with pytest.raises(ValueError, match=match):
            AsyncKeyValueClient("localhost:1", ca_file=ca, **kwargs)
    cli = subprocess.run([sys.executable, "-m", "kvgrpc.client", "--target", "localhost:1",
                          "--tls-ca", ca, "--tls-cert", cert, "get", "k"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2, cli
    assert "--tls-cert and --tls-key go together" in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr and "Check failed" not in cli.stderr


def test_cli_with_tls_and_token_and_no_secret_in_server_log(tmp_path, pki, sandbox):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# tokens\n{TOKEN}\n")
    env = sandbox.process_env(KVGRPC_MASTER_URL=sandbox.env["KVGRPC_MASTER_URL"],
                              KVGRPC_REPLICA_URL=sandbox.env["KVGRPC_REPLICA_URL"])
    password = sandbox.env["KVGRPC_MYSQL_PASSWORD"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvgrpc.server", "--host", "127.0.0.1", "--port", "0",
         "--table", f"sec{os.getpid()}", "--auth-tokens-file", str(token_file),
         "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
         "--log-level", "DEBUG"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        log = ""
        for line in proc.stderr:
            log += line
            if "driver:" in line:
                break
        port = re.search(r"listening on 127\.0\.0\.1:(\d+) \(TLS, bearer tokens required \(1 configured\)\)",
                         log).group(1)
        cli = [sys.executable, "-m", "kvgrpc.client", "--target", f"localhost:{port}",
               "--tls-ca", str(pki / "ca.pem")]
        refused = subprocess.run([*cli, "get", "k"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "missing or invalid bearer token" in refused.stderr
        accepted = subprocess.run([*cli, "put", "k", "v"], capture_output=True, text=True, timeout=60,
                                  env=dict(os.environ, KVGRPC_TOKEN=TOKEN))
        assert accepted.returncode == 0, accepted.stderr
    finally:
        proc.terminate()
        log += proc.communicate(timeout=30)[1]
    assert TOKEN not in log and password not in log


@pytest.mark.parametrize(("flag", "content"), [
    ("--auth-tokens-file", ""), ("--auth-tokens-file", "\n  \n"),
    ("--auth-tokens-file", "# the tokens\n\n"), ("--metrics-token-file", ""),
    ("--metrics-token-file", " \n")])
def test_a_token_file_without_a_token_refuses_to_start(tmp_path, flag, content):
    """An empty tokens file would otherwise mean no authentication at all."""
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(content)
    extra = ["--metrics-port", "0"] if flag == "--metrics-token-file" else []
    result = subprocess.run(
        [sys.executable, "-m", "kvgrpc.server", "--port", "0", "--sqlite",
         str(tmp_path / "kv.sqlite3"), flag, str(tokens), *extra],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert str(tokens) in result.stderr and "refusing to" in result.stderr
    assert "Traceback" not in result.stderr
