"""Operating kvgrpc's databases: the admin commands and the MariaDB sandbox.

- :mod:`kvgrpc.ops.admin` — the ``kvgrpc-admin`` command line (status, check, restore).
- :mod:`kvgrpc.ops.mysql_admin` — what those commands do to the databases, as a library.
- :mod:`kvgrpc.ops.sandbox` — throw-away MariaDB master + replicas for development and
  tests (``python -m kvgrpc.ops.sandbox up``).

Nothing here is used by the server.
"""
