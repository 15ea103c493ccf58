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


def test_soak_runs_briefly(tmp_path):
    """bench/soak.py for a few seconds: every traffic generator runs without an error and
    the table and JSON come out (growth is not judged on so short a run)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", "0.25", "--interval", "5",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    assert "errors: none" in result.stdout, result.stdout[-3000:]
    figures = json.loads((tmp_path / "soak.json").read_text())
    assert figures["counts"]["loads"] >= 1 and figures["counts"]["Get"] > 0
    assert figures["counts"]["watches cancelled"] > 0
    assert [s["label"] for s in figures["samples"]][-1] == "after"
