"""``python -m kvgrpc.cli``: the command line."""

from __future__ import annotations

import sys

from kvgrpc.cli.commands import main

sys.exit(main())
