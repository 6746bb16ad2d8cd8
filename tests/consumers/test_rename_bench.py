"""The pairer benchmark runs end to end (small N, this branch only; the real run
is 1M halves beside main) and finds every output right."""

import subprocess
import sys

from tests.support.paths import ROOT


def test_benchmark_runs_and_reports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.rename_pairer", "--halves", "4000", "--window", "0.5",
         "--idle-after", "1", "--before", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "1,980 renamed from 4,000 halves (40 unpaired)" in out.stdout
    assert "(0 false, 0 pairs missed, 0 outputs twice)" in out.stdout
    assert "renamed/s" in out.stdout and "peak RSS" in out.stdout
