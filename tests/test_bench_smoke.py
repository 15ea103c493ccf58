"""The benchmark suite still runs: bench/run.py at its small size (a smoke test, not a
measurement: its figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_benchmark_runs_at_small_size(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--size", "small", "--repeat", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ingest: kvgrpc stream / LOAD DATA" in result.stdout
    figures = json.loads((tmp_path / "bench-small.json").read_text())
    assert figures  # the same figures as the table, for the chart and for comparisons
    assert (tmp_path / "bench-small.png").stat().st_size > 10_000
