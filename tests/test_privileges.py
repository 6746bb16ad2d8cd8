"""After loading the probes the collector keeps CAP_SYS_PTRACE and
CAP_DAC_READ_SEARCH only, in every thread, and still reads the ring buffer and
its maps (collector/privileges.py)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.privileges import CAP_SYS_PTRACE, KEEP_MASK
from tests.conftest import (
    EventWatch,
    RunningCollector,
    free_port,
    start_collector,
    stop_process,
)

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
    assert caps and all(eff == KEEP_MASK == bnd for eff, bnd in caps.values()), caps
    status = Path(f"/proc/{collector.process.pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    subprocess.run(["/bin/true", "after-drop"], check=True)  # events still flow
    await watch.wait_for(lambda e: e["type"] == "exec"
                         and e["proc"].get("argv") == ["/bin/true", "after-drop"])
    print(f"\ncollector threads after load: {sorted(caps)} all CapEff=CapBnd="
          f"{KEEP_MASK:#x} (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH)")


async def test_threads_started_before_the_drop_drop_too(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    """The metrics server starts before the probes load (so /healthz answers
    during it), and resolving a NATS host name starts a pool thread: neither
    may keep the capabilities they were born with, nor may the threads the
    metrics server starts for requests."""
    port = free_port()
    url = nats_server.url.replace("127.0.0.1", "localhost")  # resolved in a pool thread
    running = await start_collector(url, nc, tmp_path, "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 5
        while True:  # until the metrics thread has taken its turn after the drop
            caps = thread_caps(running.process.pid)
            if all(eff == KEEP_MASK == bnd for eff, bnd in caps.values()):
                break
            assert time.monotonic() < deadline, caps
            time.sleep(0.05)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"snoopbus_collector_ready 1.0" in body
        assert len(caps) >= 2  # the loop's and the metrics server's, at least
        caps = thread_caps(running.process.pid)
        assert all(eff == KEEP_MASK == bnd for eff, bnd in caps.values()), caps
    finally:
        assert stop_process(running.process) == 0, running.log()


PROBE = """
import os, sys
from snoopbus.collector import privileges
privileges.drop_to({int(c) for c in sys.argv[2:]})
try:
    print(os.readlink(f"/proc/{sys.argv[1]}/exe"))
except OSError as e:
    print("denied", e.errno)
"""


def test_ptrace_is_what_reading_another_users_exe_needs() -> None:
    """Measured, not assumed: with no capability root cannot read /proc/<pid>/exe
    of a process of another user; with CAP_SYS_PTRACE alone it can."""
    other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              "sleep", "30"])
    try:
        def probe(*caps: int) -> str:
            return subprocess.run([sys.executable, "-c", PROBE, str(other.pid),
                                   *map(str, caps)], capture_output=True, text=True,
                                  check=True).stdout.strip()

        deadline = time.monotonic() + 5
        while "sleep" not in probe(CAP_SYS_PTRACE) and time.monotonic() < deadline:
            time.sleep(0.02)  # until setpriv has exec'd sleep
        assert probe().startswith("denied")
        assert probe(CAP_SYS_PTRACE).endswith("/sleep")
    finally:
        other.kill()
        other.wait()
