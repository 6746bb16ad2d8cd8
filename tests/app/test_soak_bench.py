"""The soak benchmark, run short end to end: it samples every process of the
real stack and its accounting holds (its figures are for the long run)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.proto import STREAM_NAME, encode_batch, ensure_stream, event_subject
from tests.bench.soak import PROCESSES, Bus, count_events
from tests.support.events import event as build_event
from tests.support.paths import ROOT

HOST = "soakh"


def event(i: int, type_: str, path: str = "", argv: tuple[str, ...] = ()) -> dict[str, Any]:
    proc = {"pid": 7, "tid": 7, "ppid": 1, "uid": 0, "gid": 0, "comm": "x", "exe": "/bin/x",
            "argv": list(argv) or ["/bin/x"], "cwd": "/"}
    return build_event(type_, id=f"i-{i}", ts=1, host=HOST, proc=proc,
                       file={"path": path} if path else None)


async def publish_round(js: JetStreamContext, start: int) -> None:
    """10 messages of our events (3 each) and foreign ones the count must skip."""
    for i in range(start, start + 10):
        ours = [event(3 * i + k, "create", f"/l/d/{i}.{k}") for k in range(3)]
        await js.publish(event_subject(HOST, "create"), encode_batch(ours))
        await js.publish(event_subject(HOST, "create"),
                         encode_batch([event(10_000 + i, "create", f"/elsewhere/{i}")]))
        await js.publish(event_subject(HOST, "exec"),
                         encode_batch([event(20_000 + i, "exec", argv=("/bin/true", "mk", "1")),
                                       event(30_000 + i, "exec", argv=("/bin/ls",))]))
        await js.publish(event_subject(HOST, "renamed"),  # the pairer's: not the load's
                         encode_batch([event(40_000 + i, "renamed", "/l/d/r")]))


async def test_the_count_is_exact_across_a_lost_consumer(nc: Client, js: JetStreamContext) -> None:
    await ensure_stream(js)
    bus = Bus("/l/d/", "mk")
    stop = asyncio.Event()
    await publish_round(js, 0)
    task = asyncio.create_task(count_events(nc, bus, HOST, stop))
    try:
        async with asyncio.timeout(30):
            while bus.delivered["create"] < 30:
                await asyncio.sleep(0.05)
        # The consumer vanishes under it (as an inactive one would): it starts over
        # after the last message it counted, neither twice nor skipping.
        [name] = [c.name async for c in _consumers(js)]
        await js.delete_consumer(STREAM_NAME, name)
        await publish_round(js, 10)
        async with asyncio.timeout(30):
            while bus.delivered["create"] < 60 or bus.counted_pending:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # a late duplicate would show now
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert bus.delivered == {"create": 60, "exec": 20}
    assert bus.count_restarts, "the lost consumer went unnoticed"
    assert [c async for c in _consumers(js)] == []  # it deletes its consumer when stopped


async def _consumers(js: JetStreamContext) -> Any:
    for c in await js.consumers_info(STREAM_NAME):
        yield c.config


@pytest.mark.kernel


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
