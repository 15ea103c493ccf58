"""Storage: one interface, :class:`Store`, and two backends.

- :class:`SQLiteStore` (:mod:`kvgrpc.store.sqlite`) — an embedded SQLite file, the
  zero-setup default.
- :class:`MySQLStore` (:mod:`kvgrpc.store.mysql`) — one MySQL/MariaDB endpoint (a master
  or a replica) through a ``mysql.connector`` pool.

A store is one endpoint: a file or one database server. It knows nothing of routing or
gRPC; the domain layer (:mod:`kvgrpc.service`, :mod:`kvgrpc.routing`) decides which store
serves what. It does expose what only the endpoint can measure — the token of a write,
whether it has applied a token, its replication lag — as plain values. Keys and values
go in as bytes; what comes out is the shared types of :mod:`kvgrpc.records` (a
:class:`~kvgrpc.records.Record` has its key decoded). Every driver error is translated at this boundary into a
:mod:`kvgrpc.errors` exception whose message holds no SQL, driver text or password; the
original is logged.
"""

from kvgrpc.store.base import PoolUsage, Store, check_table_name
from kvgrpc.store.mysql import MySQLEndpoint, MySQLStore, mysql_driver, redact_url
from kvgrpc.store.sqlite import SQLiteStore

__all__ = [
    "Store",
    "PoolUsage",
    "check_table_name",
    "SQLiteStore",
    "MySQLStore",
    "MySQLEndpoint",
    "mysql_driver",
    "redact_url",
]
