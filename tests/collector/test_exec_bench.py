"""The exec-storm benchmark runs and prints its figures (small N; figures are not asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel


def test_exec_storm_reports_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.exec_storm", "--execs", "300"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for label in ("storm rate, no collector", "storm rate, with collector",
                  "exec events seen on NATS", "events lost (by reason)",
                  "in-kernel cost per probe run", "collector CPU during storm",
                  "collector RSS", "collector start-up"):
        assert label in out.stdout, out.stdout
    assert "exec events seen on NATS                  300 (100.00%)" in out.stdout
