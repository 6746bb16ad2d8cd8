"""The pairer benchmark runs end to end (small N; the real run is 1M halves)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_runs_and_reports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.rename_pairer", "--halves", "4000", "--window", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "1,980 renamed from 4,000 halves (40 unpaired)" in out.stdout
    assert "renamed/s" in out.stdout and "peak RSS" in out.stdout
