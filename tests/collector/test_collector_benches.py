"""The collector's benchmarks run end to end (tiny sizes; they print figures,
which are not judged here: speed is for the benchmarks themselves)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT


def run_bench(*args: str) -> str:
    # A session of its own: on a timeout the bench's nats-server and collector
    # go with it (killing the bench alone left them running, orphaned).
    bench = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = bench.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)
        stdout, stderr = bench.communicate()
        raise AssertionError(f"{args[0]} did not end within 300 s:\n{stderr}") from None
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 0, stderr
    return stdout


def test_collector_cpu_bench_reports_both_paths() -> None:
    text = run_bench("tests.bench.collector_cpu", "--iterations", "500", "--rounds", "1",
                     "--processes", "10")
    assert "2500 records -> 3000 events" in text
    # The collector's builder (native where built) beside the Python path alone.
    assert "(the collector)" in text and "Python path (reference)" in text
    assert "Python path, dir names" in text  # names resolved after the fact
    assert text.count("events/s on one core") == 4
    assert "native / Python, same run:" in text


@pytest.mark.kernel
def test_file_ops_bench_accounts_for_every_event() -> None:
    text = run_bench("tests.bench.file_ops", "--seconds", "0.5", "--rounds", "1")
    assert "round 1 (collector, then bpftrace" in text
    assert "median slowdown: collector" in text
    assert "in the stream + counted lost == generated" in text


@pytest.mark.kernel
def test_tree_ops_bench_finds_every_event_of_the_tree(tmp_path: Path) -> None:
    # Every kind tar makes: files (one empty), folders with missing parents, a
    # hard link, links inside and outside (GNU tar's placeholder for the latter).
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    for i in range(20):
        (src / "a" / "b" / f"f{i}").write_text("x" * i)
    (src / "a" / "lnk_in").symlink_to("b/f1")
    (src / "a" / "lnk_out").symlink_to("../../etc/hostname")
    (src / "a" / "lnk_abs").symlink_to("/etc/hostname")
    os.link(src / "a" / "b" / "f3", src / "a" / "hard")
    text = run_bench("tests.bench.tree_ops", "--rounds", "1", "--source", str(src / "a"))
    assert "round 1" in text and "median slowdown: collector" in text
    assert ("collector runs with exactly the tree's events (delivered or summarized) and none "
            "lost: 1 of 1") in text
