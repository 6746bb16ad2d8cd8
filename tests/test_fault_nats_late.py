"""Fault: the collector starts while NATS is down (boot order, an outage).

It loads its probes anyway, collects into memory and the spill, and sends
everything (its "ready" report included) once a server answers on its URL.
Figure: files created before the server existed vs create events stored.
`--require-nats` keeps the old answer instead (tests/test_cli.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import decode_map, event_subject, meta_subject
from tests.conftest import free_port, stop_process, stored_messages
from tests.test_fault_nats_kill import stream_events

pytestmark = pytest.mark.kernel

FILES = 2000


async def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(60):
        while text not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            await asyncio.sleep(0.1)


async def test_a_collector_started_before_nats_spills_then_delivers_everything(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    work = tmp_path / "work"
    work.mkdir()
    spill = tmp_path / "spill"
    host = f"late{port}"
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snoopbus.app", "collect", "--nats", url,
             "--host", host, "--include-path", str(work), "--buffer-events", "300",
             "--spill-dir", str(spill)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    server = NatsServer(state_dir=tmp_path / "nats", port=port)
    try:
        await wait_for_line(log, "Collecting anyway", proc)
        await wait_for_line(log, "collector ready", proc)
        ready_at = time.monotonic()
        for i in range(FILES):
            (work / f"f{i}").touch()
        async with asyncio.timeout(30):  # past the memory bound: on disk
            while not list(spill.rglob("*.seg")):
                await asyncio.sleep(0.1)
        started = time.monotonic()
        server.start()
        subject = event_subject(host, "create")
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while len(events) < FILES:
                await asyncio.sleep(0.5)
                with contextlib.suppress(NotFoundError):  # until the collector makes the stream
                    events = await stream_events(server.url, subject)
        caught_up_s = time.monotonic() - started
        ready = [decode_map(m.data) for m in await stored_messages(
            server.url, meta_subject(host, "status"))]
    finally:
        code = stop_process(proc)
        server.stop()
    assert code == 0, log.read_text(errors="replace")
    paths = [e["file"]["path"] for e in events]
    expected = {str(work / f"f{i}") for i in range(FILES)}
    figure = {
        "generated": FILES,
        "in_stream": len(set(paths) & expected),
        "duplicated": len(paths) - len(set(paths)),
        "collecting_without_nats_s": round(started - ready_at, 1),
        "caught_up_s": round(caught_up_s, 1),
    }
    print(f"\nFAULT collector started before NATS, {FILES} creates while it was down: {figure}")
    assert figure["in_stream"] == FILES and figure["duplicated"] == 0
    # Replayed in the order they were read (one process, one thread: ts order).
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    # The report made during the outage came through too.
    assert any(r.get("state") == "ready" for r in ready), ready
    assert not list(spill.rglob("*.seg")), "the spill drained and was deleted"

