"""Fault: each consumer SIGKILLed and restarted mid-batch; its outputs exactly
once, or at least once where the consumer documents that. A figure per
consumer.

The rename pairer and the archiver have their own SIGKILL tests, not repeated
here (tests/test_rename_pairer.py::test_sigkill_mid_stream_loses_no_half_and_duplicates_no_rename:
3000 renames, every one exactly once; tests/test_archive_crash.py::
test_sigkill_at_random_points_leaves_every_event_exactly_once: 9000 events,
five kills, every one archived exactly once). This file adds the alerter
(alerts exactly once in the stream, through Nats-Msg-Id dedup) and the
forwarder (a JSON-lines file sink: every event at least once, as
consumers/forward/docs/jsonl.md documents; the figure counts the repeats).
Longer runs: `.venv/bin/python -m tests.bench.faults consumers --events 20000 --kills 10`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    STREAM_NAME,
    alerts_filter,
    decode_map,
    encode_batch,
    ensure_stream,
    event_subject,
)
from tests.conftest import start_consumer, stored_messages

HOST = "fk"


def tmp_exec(n: int) -> dict[str, object]:
    """An exec that the default rule proc_exec_from_tmp alerts on."""
    return {"v": 1, "id": f"fk-{n}", "ts": 1_700_000_000_000_000_000 + n, "host": HOST,
            "type": "exec", "proc": {"pid": 1000 + n, "comm": "x", "exe": f"/tmp/x{n}",
                                     "argv": [f"/tmp/x{n}"], "cwd": "/tmp"}}


async def settled(js: JetStreamContext, limit: float = 60) -> None:
    """Until every durable has handled and acked everything."""
    async with asyncio.timeout(limit):
        while True:
            infos = await js.consumers_info(STREAM_NAME)
            durables = [i for i in infos if i.config.durable_name]
            if durables and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in durables):
                return
            await asyncio.sleep(0.1)


async def bound(js: JetStreamContext, limit: float = 30) -> None:
    async with asyncio.timeout(limit):
        while True:
            infos = await js.consumers_info(STREAM_NAME)
            if any(i.config.durable_name and i.num_waiting for i in infos):
                return
            await asyncio.sleep(0.05)


async def batch_in_hand(js: JetStreamContext, limit: float = 2) -> int:
    """Waits (up to `limit`) until a durable holds delivered, unacked messages: 1 if seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        infos = await js.consumers_info(STREAM_NAME)
        if any(i.config.durable_name and i.num_ack_pending for i in infos):
            return 1
        await asyncio.sleep(0.002)
    return 0


async def kill_mid_stream(
    url: str, js: JetStreamContext, args: list[str], log_dir: Path, events: int, kills: int
) -> int:
    """Feeds `events` in messages of 10 while SIGKILLing the consumer `kills` times;
    returns how many kills landed while it held delivered, unacked messages."""

    def spawn(i: int) -> subprocess.Popen[bytes]:
        return start_consumer(url, log_dir / f"consumer-{i}.log", *args,
                              "--batch", "16", "--ack-wait", "2")

    proc = spawn(0)
    in_hand = 0
    try:
        await bound(js)
        messages = [[tmp_exec(n) for n in range(i, min(i + 10, events))]
                    for i in range(0, events, 10)]
        every = len(messages) // (kills + 1)
        for i, batch in enumerate(messages):
            await js.publish(event_subject(HOST, "exec"), encode_batch(batch))
            if i and i % every == 0 and i // every <= kills:
                in_hand += await batch_in_hand(js)  # then kill it: mid-batch
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc = spawn(i)
                await bound(js)
        await settled(js)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert in_hand, "no kill landed while a batch was in hand"
        return in_hand
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_alerter_sigkilled_mid_batch_alerts_exactly_once(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js)
    events, kills = 1500, 3
    mid = await kill_mid_stream(nats_server.url, js, ["alert"], tmp_path, events, kills)
    stored = await stored_messages(nats_server.url, alerts_filter(HOST))
    ids: list[str] = [decode_map(msg.data)["id"] for msg in stored]
    counts = Counter(i.rsplit(":", 1)[1] for i in ids)
    fig = {"events": events, "kills": kills, "kills_mid_batch": mid, "alerts": len(ids),
           "events_alerted": len(counts), "duplicated": sum(v - 1 for v in counts.values())}
    print(f"\nFAULT alerter SIGKILLed x{kills} mid-batch: {fig}")
    assert fig["events_alerted"] == events and fig["duplicated"] == 0


async def test_forwarder_sigkilled_mid_batch_forwards_at_least_once(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js)
    out = tmp_path / "out.jsonl"
    events, kills = 1500, 3
    mid = await kill_mid_stream(nats_server.url, js, ["forward", "--to", f"jsonl+file://{out}"],
                                tmp_path, events, kills)
    counts = Counter(json.loads(line)["id"] for line in out.read_text().splitlines())
    fig = {"events": events, "kills": kills, "kills_mid_batch": mid, "forwarded": len(counts),
           "repeated_lines": sum(v - 1 for v in counts.values())}
    print(f"\nFAULT forwarder (jsonl file) SIGKILLed x{kills} mid-batch: {fig}")
    assert fig["forwarded"] == events  # at least once: nothing lost, repeats allowed
