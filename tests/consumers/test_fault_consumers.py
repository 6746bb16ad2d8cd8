"""Fault: each consumer SIGKILLed and restarted mid-batch; its outputs exactly
once, or at least once where the consumer documents that. A figure per
consumer.

The rename pairer and the archiver have their own SIGKILL tests, not repeated
here (tests/consumers/test_rename_pairer.py::
test_sigkill_mid_stream_loses_no_half_and_duplicates_no_rename:
3000 renames, every one exactly once; tests/consumers/archive/test_archive_crash.py::
test_sigkill_at_random_points_leaves_every_event_exactly_once: 9000 events,
five kills, every one archived exactly once). This file adds the alerter
(alerts exactly once in the stream, through Nats-Msg-Id dedup) and the
forwarder (a JSON-lines file sink: every event at least once, as
consumers/forward/docs/jsonl.md documents; the figure counts the repeats).
Longer runs: `.venv/bin/python -m tests.bench.faults consumers --events 20000 --kills 10`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    alerts_filter,
    decode_map,
    ensure_stream,
)
from tests.support.bus import stored_messages
from tests.support.faults import HOST, kill_mid_stream


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
