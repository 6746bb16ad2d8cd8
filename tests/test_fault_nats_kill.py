"""Fault: nats-server SIGKILLed and restarted several times during a steady
file workload, with the real collector and probes. Figure: files created vs
create events in the stream; zero lost, zero duplicated.

The collector holds only a few hundred events in memory (--buffer-events), so
every outage also goes through the spill on disk and its in-order replay.
Longer runs: `.venv/bin/python -m tests.bench.faults nats-kill --kills 10`.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import decode_batch, decode_map, event_subject, meta_subject
from tests.conftest import start_collector, stop_process, stored_messages

pytestmark = pytest.mark.kernel

WORKLOAD = """
import os, sys, time
n, rate = int(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
for i in range(n):
    fd = os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    ahead = start + (i + 1) / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
"""


async def stream_events(url: str, subject: str) -> list[dict[str, Any]]:
    """Every event stored under `subject`, read back message by message."""
    return [ev for msg in await stored_messages(url, subject) for ev in decode_batch(msg.data)]


async def run_nats_kill(tmp_path: Path, files: int, rate: float, kills: int,
                        down_s: float) -> dict[str, int]:
    """Runs the fault and returns its figure."""
    server = NatsServer(state_dir=tmp_path / "nats")
    server.start()
    server.port = int(server.url.rsplit(":", 1)[1])  # restarts come back on the same port
    work = tmp_path / "work"
    work.mkdir()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        running = await start_collector(
            server.url, nc, tmp_path, "--include-path", str(work),
            "--buffer-events", "300", "--spill-dir", str(tmp_path / "spill"),
        )
        status = await nc.subscribe(meta_subject(running.host, "status"))
        try:
            load = subprocess.Popen([sys.executable, "-I", "-c", WORKLOAD, str(files), str(rate)],
                                    cwd=work)
            period = files / rate / (kills + 1)
            for _ in range(kills):
                await asyncio.sleep(period - down_s)
                server.stop(signal.SIGKILL)
                await asyncio.sleep(down_s)
                server.start()
            await asyncio.to_thread(load.wait, 120)
            assert load.returncode == 0
            subject = event_subject(running.host, "create")
            async with asyncio.timeout(90):  # what waited in memory and the spill arrives
                while len(await stream_events(server.url, subject)) < files:
                    await asyncio.sleep(1)
        finally:
            code = stop_process(running.process)
        assert code == 0, running.log()
        final: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while final.get("state") != "stopped":
                final = decode_map((await status.next_msg(timeout=30)).data)
        events = await stream_events(server.url, subject)
        ids = [e["id"] for e in events]
        paths = {e["file"]["path"] for e in events}
        expected = {str(work / f"f{i}") for i in range(files)}
        return {
            "generated": files,
            "in_stream": len(paths & expected),
            "lost": len(expected - paths),
            "duplicated": len(ids) - len(set(ids)),
            "spilled": int(final.get("spilled_total", 0)),
            "collector_lost": int(final.get("lost", -1)),
            "left_on_disk": len(list((tmp_path / "spill").rglob("*.seg"))),
        }
    finally:
        await nc.close()
        server.stop()


async def test_nats_server_sigkilled_three_times_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    fig = await run_nats_kill(tmp_path, files=3000, rate=400, kills=3, down_s=1.0)
    print(f"\nFAULT nats-server SIGKILL x3 during 3000 creates at 400/s: {fig}")
    assert fig["lost"] == 0 and fig["duplicated"] == 0 and fig["in_stream"] == fig["generated"]
    assert fig["collector_lost"] == 0 and fig["left_on_disk"] == 0
    assert fig["spilled"] > 0  # the outages did go through the spill
