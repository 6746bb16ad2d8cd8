"""The forward benchmark's documented command runs and prints its table (small N)."""

from __future__ import annotations

import subprocess
import sys


def test_benchmark_runs_and_reports() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.forward", "--events", "300",
         "--sinks", "jsonl,syslog+tcp"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert rows["jsonl+file"][-1] == "300" and rows["syslog+tcp"][-1] == "300"
    assert float(rows["jsonl+file"][2].replace(",", "")) > 0
