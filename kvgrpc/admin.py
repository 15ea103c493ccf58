"""``python -m kvgrpc.admin``: kept for existing scripts; the admin CLI is :mod:`kvgrpc.ops.admin`."""

from __future__ import annotations

import sys

from kvgrpc.ops.admin import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
