"""Loss is counted, never silent: a ring buffer too small for a burst.

With a one-page ring buffer the probes find no room during a burst of file
operations; the records they drop are counted per CPU and per event type
and reported on snoopbus.meta.<host>.loss and in the final status.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import decode_map, meta_subject
from tests.support.collector import start_collector
from tests.support.processes import stop_process

pytestmark = pytest.mark.kernel

BURST = """
import os
for i in range(20000):
    fd = os.open("f", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, b"x")
    os.close(fd)
    os.unlink("f")
"""


async def test_ring_buffer_overflow_is_reported_by_type(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    # Fair shares off: the burst overflows the ring instead of being summarized.
    running = await start_collector(nats_server.url, nc, tmp_path, "--ringbuf-pages", "1",
                                    "--source-rate", "0")
    loss = await nc.subscribe(meta_subject(running.host, "loss"))
    status = await nc.subscribe(meta_subject(running.host, "status"))
    await nc.flush()
    try:
        proc = subprocess.run([sys.executable, "-I", "-B", "-c", BURST], cwd=tmp_path,
                              timeout=120, check=True)
        assert proc.returncode == 0
        report: dict[str, Any] = decode_map((await loss.next_msg(timeout=15)).data)
    finally:
        assert stop_process(running.process) == 0, running.log()
    assert report["dropped"]["kernel_ringbuf_full"] > 0
    per_type = report["kernel_per_cpu"]
    assert set(per_type) & {"create", "modify", "close_write", "delete"}, per_type
    assert all(isinstance(n, int) for counts in per_type.values() for n in counts)
    final: dict[str, Any] = {}
    while final.get("state") != "stopped":
        final = decode_map((await status.next_msg(timeout=15)).data)
    assert final["lost"] >= report["total"] and final["lost_by_type"]
    assert "events lost" in running.log() and "in the kernel, by type: " in running.log()
