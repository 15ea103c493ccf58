"""The dependency floors in setup.cfg are versions the code works with: a virtualenv with
exactly the floors (``name==floor`` for every ``name>=floor`` of install_requires and the
server extra) runs a smoke test — import, a SQLite server's Put/Get/Watch, and a MySQL Put,
Delete and bulk StreamPut through the sandbox (a server, and a store on each driver).

The venv is kept between runs under ~/.cache/kvgrpc-floors (one per set of floors), so
after the first run this costs a few seconds; pip's cache serves the packages.
"""

from __future__ import annotations

import configparser
import hashlib
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SMOKE = r'''
import sys, os
import kvgrpc  # first: the MySQL C extension before ssl
import grpc, google.protobuf, mysql.connector, pymysqlreplication, prometheus_client, tqdm
from kvgrpc.client import KeyValueClient
from kvgrpc.server import ServerConfig, build_server
from kvgrpc.store import MySQLEndpoint

versions = dict(arg.split("==") for arg in sys.argv[1:])
assert mysql.connector.__version__ == versions["mysql-connector-python"], mysql.connector.__version__
assert grpc.__version__ == versions["grpcio"], grpc.__version__

def serve(**config):
    server = build_server(ServerConfig(host="127.0.0.1", port=0, **config))
    server.start()
    return server

server = serve(sqlite_path=os.environ["SMOKE_SQLITE"])
try:
    with KeyValueClient(f"127.0.0.1:{server.port}") as kv:
        assert kv.put("k", b"v1") == 1 and kv.get("k") == b"v1"
        watch = kv.watch("k", start_revision=0)
        event = next(iter(watch))
        assert (event.key, event.value) == ("k", b"v1"), event
        watch.cancel()
finally:
    server.stop(grace=1)

MASTER = MySQLEndpoint.from_url(os.environ["SMOKE_MASTER_URL"], os.environ["KVGRPC_MYSQL_PASSWORD"])
server = serve(master=MASTER, table=os.environ["SMOKE_TABLE"])
try:
    with KeyValueClient(f"127.0.0.1:{server.port}") as kv:
        assert kv.put("k", b"v1") == 1 and kv.put("k", b"v2") == 2
        assert kv.get("k", consistency="strong") == b"v2"
        assert kv.delete("k")
        assert kv.stream_put([(f"b{i}", b"x") for i in range(300)]) == 300  # LOAD DATA path
        assert kv.get("b299", consistency="strong") == b"x"
finally:
    server.stop(grace=1)
# Both drivers: the pure-Python one is what runs when the C extension fails to load, and
# 9.1's pure-Python cursor had no nextset() (every Put and Delete failed).
from kvgrpc.store import MySQLStore
for options in ({}, {"use_pure": True}):
    store = MySQLStore(MASTER, os.environ["SMOKE_TABLE"],
                       create_table=True, driver_options=options)
    try:
        written = store.put(b"d", b"1")
        assert written.version >= 1 and written.commit.token, written
        assert store.delete(b"d").done
        store.put_many([(b"p%d" % i, b"x") for i in range(300)])
    finally:
        store.close()
print("smoke ok", mysql.connector.__version__, "C extension" if mysql.connector.HAVE_CEXT else "pure")
'''


def floors() -> list[str]:
    """``name==floor`` for every lower bound in install_requires and the server extra."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["server"].splitlines()
    pins = []
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", line)
        if match:
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def test_the_floors_install_and_work(sandbox, table_name, tmp_path):
    pins = floors()
    names = {p.split("==")[0] for p in pins}
    assert {"grpcio", "protobuf", "mysql-connector-python", "mysql-replication", "prometheus-client",
            "tqdm", "grpcio-health-checking", "grpcio-reflection"} <= names, pins
    assert "mysql-connector-python==9.2" in pins  # cursor.nextset(): every Put and Delete
    key = hashlib.sha256(" ".join(sorted(pins)).encode()).hexdigest()[:16]
    venv = Path.home() / ".cache" / "kvgrpc-floors" / key
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        (venv / ".installed").write_text("\n".join(pins) + "\n")
    exact = [p if p.count(".") >= 2 else p + ".0" for p in pins]  # pip reports 9.2 as 9.2.0
    env = sandbox.process_env(PYTHONPATH=str(REPO), SMOKE_SQLITE=str(tmp_path / "floors.sqlite3"),
                              SMOKE_MASTER_URL=sandbox.env["KVGRPC_MASTER_URL"], SMOKE_TABLE=table_name)
    smoke = subprocess.run([str(python), "-c", SMOKE, *exact], capture_output=True, text=True,
                           timeout=300, env=env, cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr[-4000:]
    assert "smoke ok" in smoke.stdout
