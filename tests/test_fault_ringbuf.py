"""Fault: the kernel ring buffer deliberately overrun (one 4 KiB page, a storm of
creates). Figure: creates delivered to the stream + creates counted lost by
the kernel == files created, exactly.

The include-path filter is decided in the kernel before a record is written,
so only the storm's own creates can be delivered or counted. Longer runs:
`.venv/bin/python -m tests.bench.faults ringbuf --files 200000`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import decode_map, event_subject, meta_subject
from tests.conftest import start_collector, stop_process
from tests.test_fault_nats_kill import stream_events

pytestmark = pytest.mark.kernel

STORM = """
import os, sys
for i in range(int(sys.argv[1])):
    os.close(os.open(f"f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
"""


async def run_ringbuf_overrun(tmp_path: Path, files: int) -> dict[str, int]:
    server = NatsServer(state_dir=tmp_path / "nats")
    server.start()
    work = tmp_path / "storm"
    work.mkdir()
    nc = await nats.connect(server.url)
    try:
        running = await start_collector(server.url, nc, tmp_path, "--include-path", str(work),
                                        "--ringbuf-pages", "1")
        status = await nc.subscribe(meta_subject(running.host, "status"))
        try:
            await asyncio.to_thread(subprocess.run, [sys.executable, "-I", "-c", STORM,
                                                     str(files)], cwd=work, check=True)
            await asyncio.sleep(1)  # the reader drains what the ring buffer holds
        finally:
            code = stop_process(running.process)
        assert code == 0, running.log()
        final: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while final.get("state") != "stopped":
                final = decode_map((await status.next_msg(timeout=30)).data)
        events = await stream_events(server.url, event_subject(running.host, "create"))
        paths = [e["file"]["path"] for e in events]
        lost = final["lost_by_type"]
        return {
            "generated": files,
            "delivered": len(set(paths)),
            "lost_counted": int(lost.get("create", 0)),
            "duplicated": len(paths) - len(set(paths)),
            "unattributed": int(lost.get("any_file_event(inflight_map_full)", 0)),
        }
    finally:
        await nc.close()
        server.stop()


async def test_ring_buffer_overrun_is_accounted_exactly(tmp_path: Path) -> None:
    fig = await run_ringbuf_overrun(tmp_path, files=20_000)
    print(f"\nFAULT ring buffer of 1 page, 20000 creates: {fig}")
    assert fig["lost_counted"] > 0, "the storm did not overrun the ring buffer"
    assert fig["delivered"] + fig["lost_counted"] == fig["generated"], fig
    assert fig["duplicated"] == 0 and fig["unattributed"] == 0
