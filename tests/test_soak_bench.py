"""The soak benchmark, run short end to end: it samples every process of the
real stack and its accounting holds (its figures are for the long run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.soak import PROCESSES

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.kernel


def test_a_short_soak_samples_every_process_and_accounts_for_every_event(
    tmp_path: Path,
) -> None:
    samples = tmp_path / "samples.json"
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.soak", "--duration", "8s", "--rate", "200",
         "--sample-every", "1", "--drain", "60", "--archive-roll", "2", "--samples", str(samples)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "soak: passed" in out.stdout
    r = json.loads(samples.read_text())
    for name in (*PROCESSES, "load"):
        p = r["processes"][name]
        assert len(p["pids"]) == 1, (name, p["pids"])  # sampled, never restarted
        assert len(p["rss_mb"]) >= 5 and all(mb > 0 for _, mb in p["rss_mb"]), name
        assert p["cpu_s"] > 0, name
    assert set(r["lag"]) == {"rename", "alert", "archive"}
    assert r["after_drain"] == {"rename": 0, "alert": 0, "archive": 0}
    # Whole ten-operation cycles of 19 events each (as many as a busy machine allowed).
    expected = r["load"]["expected"]
    assert sum(expected.values()) == 19 * r["load"]["done"]["exec"] // 2 >= 19 * 20
    missing = sum(n - r["delivered"].get(t, 0) for t, n in expected.items())
    assert 0 <= missing <= r["collector_lost"]
    assert r["delivered"].keys() <= expected.keys()
    assert r["stream_mb"][-1][1] > 0
    # Everything it started is gone, and its temporary folder too.
    for p in r["processes"].values():
        for pid in p["pids"]:
            assert not Path(f"/proc/{pid}").exists() or _zombie_or_reused(pid)
    folder = re.search(r" in (/\S+)/load, sampling", out.stdout)
    assert folder is not None and not Path(folder.group(1)).exists()


def _zombie_or_reused(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"snoopbus" not in cmd and b"nats-server" not in cmd and b"soak" not in cmd
