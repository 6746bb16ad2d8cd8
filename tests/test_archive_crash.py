"""The archiver as a process, SIGKILLed at random points while events stream in."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.archive import layout
from snoopbus.proto import STREAM_NAME, encode_batch, ensure_stream, event_subject

from .test_archive_support import archived_ids, make_event, settled


@pytest.fixture
def spawn(spawn_consumer: Callable[..., subprocess.Popen]) -> Callable[[Path], subprocess.Popen]:
    return lambda root: spawn_consumer(
        "archive", "--dir", str(root), "--batch", "32", "--ack-wait", "2",
        "--roll-seconds", "0.15", "--roll-events", "400",
    )


async def wait_bound(js: JetStreamContext, limit: float = 20) -> None:
    """Until a process pulls from the durable."""
    async with asyncio.timeout(limit):
        while True:
            try:
                if (await js.consumer_info(STREAM_NAME, "archive")).num_waiting:
                    return
            except Exception:
                pass
            await asyncio.sleep(0.05)


async def test_sigkill_at_random_points_leaves_every_event_exactly_once(
    nats_server: NatsServer, js: JetStreamContext, spawn: Callable[..., subprocess.Popen],
    tmp_path: Path,
) -> None:
    await ensure_stream(js)
    rng = random.Random(7)
    root = tmp_path / "archive"
    events = [make_event(n, host=f"h{n % 3}") for n in range(9000)]
    messages: list[list[dict]] = []
    by_key: dict[tuple[str, str], list[dict]] = {}
    for ev in events:
        by_key.setdefault((ev["host"], ev["type"]), []).append(ev)
    for evs in by_key.values():
        i = 0
        while i < len(evs):
            size = rng.randint(1, 25)
            messages.append(evs[i : i + size])
            i += size
    rng.shuffle(messages)

    async def feed(batches: list[list[dict]]) -> None:
        for batch in batches:
            await js.publish(event_subject(batch[0]["host"], batch[0]["type"]),
                             encode_batch(batch))
            await asyncio.sleep(0.004)

    # Six chunks; each of the first five is cut short by a SIGKILL while it is
    # being published and archived, whatever the machine's speed.
    chunks = [messages[i::6] for i in range(6)]
    proc = spawn(root)
    await wait_bound(js)
    kills = 0
    for chunk in chunks[:5]:
        feeding = asyncio.create_task(feed(chunk))
        await asyncio.sleep(rng.uniform(0.1, 0.5))
        os.kill(proc.pid, signal.SIGKILL)  # no flush, no ack, no release
        proc.wait()
        kills += 1
        proc = spawn(root)
        await feeding
        await wait_bound(js)
    await feed(chunks[5])
    await settled(js, limit=60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    counts = Counter(archived_ids(root))
    fig = {"events": len(events), "messages": len(messages), "kills": kills,
           "archived": len(counts), "rows": sum(counts.values()),
           "lost": len({e["id"] for e in events} - set(counts)),
           "duplicated": sum(v - 1 for v in counts.values())}  # fmt: skip
    print(f"\nFAULT archiver SIGKILLed x{kills} at random points: {fig}")
    assert len(counts) == len(events), "events lost"
    assert max(counts.values()) == 1, f"duplicates: {[k for k, v in counts.items() if v > 1][:5]}"
    for f in layout.files(root):
        pq.read_table(f.path)  # every file readable
    assert not list(root.rglob("*.tmp")), "temporaries left behind"
    assert kills == 5
    logs = "".join(p.read_text() for p in tmp_path.glob("archive-*.log"))
    assert "recalled" in logs
