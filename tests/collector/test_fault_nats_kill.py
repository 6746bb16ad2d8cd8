"""Fault: nats-server SIGKILLed and restarted several times during a steady
file workload, with the real collector and probes. Figure: files created vs
create events in the stream; zero lost, zero duplicated.

The collector holds only a few hundred events in memory (--buffer-events), so
every outage also goes through the spill on disk and its in-order replay.
Longer runs: `.venv/bin/python -m tests.bench.faults nats-kill --kills 10`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.faults import run_nats_kill

pytestmark = pytest.mark.kernel


async def test_nats_server_sigkilled_three_times_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    fig = await run_nats_kill(tmp_path, files=3000, rate=400, kills=3, down_s=1.0)
    print(f"\nFAULT nats-server SIGKILL x3 during 3000 creates at 400/s: {fig}")
    assert fig["lost"] == 0 and fig["duplicated"] == 0 and fig["in_stream"] == fig["generated"]
    assert fig["collector_lost"] == 0 and fig["left_on_disk"] == 0
    assert fig["spilled"] > 0  # the outages did go through the spill
