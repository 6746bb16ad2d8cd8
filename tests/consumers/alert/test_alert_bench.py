"""The alerter benchmark runs end to end (small N; the documented run is 50,000 events)."""

from __future__ import annotations

import subprocess
import sys


def test_benchmark_runs_and_reports() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench.alerter", "--events", "2000", "--top", "3",
         "--nats-events", "2000", "--before", ""],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "in process (Engine.match)" in out and "through NATS" in out
    assert "slowest 3 rules" in out
    table = out.split("slowest 3 rules", 1)[1].splitlines()[2:]
    assert len([line for line in table if line.strip()]) == 3
