"""TLS to the database: the URL's ssl-* options, applied by both mysql-connector drivers,
the binlog feed (PyMySQL) and the admin tools, against a TLS-enabled sandbox (``--tls``)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import mysql.connector
import pymysql
import pytest

from kvgrpc.errors import InvalidArgument, Unavailable
from kvgrpc.store import MySQLEndpoint, MySQLStore
from kvgrpc.store.mysql import TlsNotActive

from .conftest import Sandbox

DRIVERS = [pytest.param(False, id="C-extension"), pytest.param(True, id="pure-Python")]


@pytest.fixture(scope="module")
def tls_box(tmp_path_factory):
    """A master + replica with TLS on (require_secure_transport, REQUIRE SSL accounts)."""
    box = Sandbox.up(tmp_path_factory.mktemp("tls-sandbox"), tls=True)
    yield box
    box.down()


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificate(directory, name: str, ca_dir, san: str) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", *ec, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             cwd=directory)
    (directory / f"{name}.ext").write_text(f"subjectAltName = {san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca_dir / "ca.pem"), "-CAkey",
             str(ca_dir / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
             "-out", f"{name}.pem", cwd=directory)


def _connects(endpoint: MySQLEndpoint, use_pure: bool) -> bool:
    try:
        endpoint.connect(use_pure=use_pure, connection_timeout=5).close()
        return True
    except mysql.connector.Error as exc:
        assert exc.errno in (2026, 2055), exc  # a TLS failure, not e.g. access denied
        return False


def test_url_options(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    ep = MySQLEndpoint.from_url(f"mysql://u@db:3306/kv?ssl-mode=verify_identity&ssl-ca={ca}"
                                f"&ssl-cert={ca}&ssl-key={ca}", "pw")
    assert (ep.ssl_mode, ep.ssl_ca, ep.ssl_cert, ep.ssl_key) == ("VERIFY_IDENTITY", str(ca), str(ca), str(ca))
    assert str(ep) == "mysql://u@db:3306/kv?ssl-mode=VERIFY_IDENTITY"
    assert ep.connector_settings()["ssl_verify_identity"] is True
    assert MySQLEndpoint.from_url(f"mysql://u@db/kv?ssl-ca={ca}").ssl_mode == "VERIFY_CA"  # as the mysql client
    assert MySQLEndpoint.from_url("mysql://u@db/kv?ssl-mode=REQUIRED").connector_settings()["ssl_verify_cert"] is False
    for query, message in [
        ("sslmode=REQUIRED", "unknown option 'sslmode'"),
        ("ssl-mode=SOMETIMES", "ssl-mode 'SOMETIMES' is not one of DISABLED, PREFERRED, REQUIRED"),
        ("ssl-mode=VERIFY_CA", "ssl-mode=VERIFY_CA needs ssl-ca=FILE"),
        (f"ssl-mode=REQUIRED&ssl-cert={ca}", "ssl-cert and ssl-key go together"),
        ("ssl-ca=/nonexistent/ca.pem", "ssl-ca file '/nonexistent/ca.pem' does not exist"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            MySQLEndpoint.from_url(f"mysql://u:secret@db/kv?{query}")
        assert message in str(info.value) and "secret" not in str(info.value)


def test_put_get_watch_and_admin_over_verified_tls(tls_box, start_server, table_name):
    assert "ssl-mode=VERIFY_IDENTITY" in tls_box.env["KVGRPC_MASTER_URL"]
    server = start_server(master=tls_box.master, replicas=tls_box.replicas, table=table_name)
    with server.client() as kv:
        kv.put("k", b"over tls")
        revision = kv.last_revision
        assert kv.get("k", consistency="strong") == b"over tls"
        tls_box.wait_for_replica()
        assert kv.get("k") == b"over tls"
        with kv.watch("k", start_revision=revision - 1) as watch:  # the binlog feed, over TLS
            event = next(iter(watch))
        assert (event.key, event.value, event.revision) == ("k", b"over tls", revision)
    check = subprocess.run(
        [sys.executable, "-m", "kvgrpc.admin", "check", "--table", table_name,
         "--master", tls_box.env["KVGRPC_ADMIN_MASTER_URL"],
         "--replica", tls_box.env["KVGRPC_ADMIN_REPLICA_URL"]],
        capture_output=True, text=True, env=tls_box.process_env(), timeout=60)
    assert check.returncode == 0 and check.stdout.strip().endswith("clean"), check.stdout + check.stderr


@pytest.mark.parametrize("use_pure", DRIVERS)
def test_a_wrong_ca_is_refused(tls_box, tmp_path, use_pure):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=other", "-keyout", "ca.key", "-out", "ca.pem", cwd=tmp_path)
    wrong = dataclasses.replace(tls_box.master, ssl_ca=str(tmp_path / "ca.pem"))
    assert not _connects(wrong, use_pure)
    assert _connects(tls_box.master, use_pure)
    with pytest.raises(pymysql.OperationalError):
        pymysql.connect(**wrong.pymysql_settings(), connect_timeout=5)


def test_a_wrong_ca_makes_the_server_answer_unavailable(tls_box, tmp_path, start_server, table_name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=other", "-keyout", "ca.key", "-out", "ca.pem", cwd=tmp_path)
    wrong = dataclasses.replace(tls_box.master, ssl_ca=str(tmp_path / "ca.pem"))
    server = start_server(master=wrong, replicas=(), table=table_name)
    with server.client() as kv:
        with pytest.raises(Unavailable) as info:
            kv.put("k", b"v")
    assert info.value.message == (
        f"the master database at 127.0.0.1:{wrong.port} failed the TLS check (ssl-mode="
        "VERIFY_IDENTITY): its certificate is not signed by ssl-ca, does not name the host, or "
        "it does not encrypt; see the server log")


def test_required_refuses_a_server_without_tls(sandbox, table_name):
    """The plain sandbox has TLS off: REQUIRED must not fall back to plaintext (the pure
    driver and older PyMySQL would, silently)."""
    required = dataclasses.replace(sandbox.master, ssl_mode="REQUIRED")
    for use_pure in (False, True):
        with pytest.raises((TlsNotActive, mysql.connector.Error)):
            required.connect(use_pure=use_pure).close()
    with pytest.raises(pymysql.OperationalError):
        pymysql.connect(**required.pymysql_settings(), connect_timeout=5)
    store = MySQLStore(required, table_name, create_table=True)
    with pytest.raises(Unavailable, match="failed the TLS check"):
        store.put(b"k", b"v")
    store.close()


def test_the_host_name_is_checked_only_with_verify_identity(tls_box, tmp_path):
    """The master gets a certificate (same CA) naming only ``localhost``: connecting to
    127.0.0.1 passes VERIFY_CA and fails VERIFY_IDENTITY; ``localhost`` passes both."""
    tls = tls_box.dir / "tls"
    _certificate(tmp_path, "localhost-only", tls, "DNS:localhost")
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy(tls / name, saved / name)
    shutil.copy(tmp_path / "localhost-only.pem", tls / "server.pem")
    shutil.copy(tmp_path / "localhost-only.key", tls / "server.key")
    tls_box.query("FLUSH SSL", role="master", root=True)
    try:
        by_ip = tls_box.master
        assert by_ip.host == "127.0.0.1" and by_ip.ssl_mode == "VERIFY_IDENTITY"
        by_ip_ca_only = dataclasses.replace(by_ip, ssl_mode="VERIFY_CA")
        by_name = dataclasses.replace(by_ip, host="localhost")
        for use_pure in (False, True):
            assert not _connects(by_ip, use_pure)
            assert _connects(by_ip_ca_only, use_pure)
            assert _connects(by_name, use_pure)
        with pytest.raises(pymysql.OperationalError, match="certificate"):
            pymysql.connect(**by_ip.pymysql_settings(), connect_timeout=5)
        pymysql.connect(**by_ip_ca_only.pymysql_settings(), connect_timeout=5).close()
    finally:
        for name in ("server.pem", "server.key"):
            shutil.copy(saved / name, tls / name)
        tls_box.query("FLUSH SSL", role="master", root=True)
