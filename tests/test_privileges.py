"""After loading the probes the collector keeps CAP_SYS_PTRACE only, in every
thread, and still reads the ring buffer and its maps (collector/privileges.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from snoopbus.collector.privileges import CAP_SYS_PTRACE
from tests.conftest import EventWatch, RunningCollector

pytestmark = pytest.mark.kernel


def thread_caps(pid: int) -> dict[str, tuple[int, int]]:
    """thread name -> (CapEff, CapBnd)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines()
                      if ":\t" in line)
        out[f"{fields['Name']}/{task.name}"] = (int(fields["CapEff"], 16),
                                                int(fields["CapBnd"], 16))
    return out


async def test_collector_keeps_only_ptrace_and_still_works(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    caps = thread_caps(collector.process.pid)
    assert caps and all(eff == 1 << CAP_SYS_PTRACE == bnd for eff, bnd in caps.values()), caps
    status = Path(f"/proc/{collector.process.pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    subprocess.run(["/bin/true", "after-drop"], check=True)  # events still flow
    await watch.wait_for(lambda e: e["type"] == "exec"
                         and e["proc"].get("argv") == ["/bin/true", "after-drop"])
    print(f"\ncollector threads after load: {sorted(caps)} all CapEff=CapBnd="
          f"{1 << CAP_SYS_PTRACE:#x} (CAP_SYS_PTRACE)")
