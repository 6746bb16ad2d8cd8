"""The collector's benchmarks run end to end (tiny sizes; they print figures,
which are not judged here: speed is for the benchmarks themselves)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_collector_cpu_bench_reports_both_paths() -> None:
    text = run_bench("tests.bench.collector_cpu", "--iterations", "500", "--rounds", "1",
                     "--processes", "10")
    assert "2500 records -> 3000 events" in text
    assert "build_raw (the collector)" in text and "decode -> build_all" in text
    assert "build_raw, dir names" in text  # names resolved after the fact
    assert text.count("events/s on one core") == 3


@pytest.mark.kernel
def test_file_ops_bench_accounts_for_every_event() -> None:
    text = run_bench("tests.bench.file_ops", "--seconds", "0.5", "--rounds", "1")
    assert "round 1 (collector, then bpftrace" in text
    assert "median slowdown: collector" in text
    assert "in the stream + counted lost == generated" in text
