"""Hostile text through the real consumer processes: events whose paths and
argv hold control characters, bytes that are not UTF-8 and 4 KiB paths go
through the rename pairer, alerter, archiver and forwarder (JSON lines), all
running at once. None dead-letters anything; each output is whole: every id
archived, one JSON document per forwarded line, renames and alerts valid.

The same text, at random and at length, is in tests/test_fuzz.py (hypothesis).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    STREAM_NAME,
    decode_batch,
    decode_map,
    encode_batch,
    ensure_stream,
    event_subject,
    validate_event,
)
from tests.conftest import start_consumer
from tests.test_archive_support import archived_ids
from tests.test_fault_consumers import settled

NASTY = ["\n", "\r", "\x00", "\x1b[2J", "\x7f", "]", '"', "\\", "|", "=", "%n", "\u2028",
         "\udc80", "\udcff", "é", "日本", " ", "\t"]


def nasty(rng: random.Random, n: int = 12) -> str:
    return "".join(rng.choice(NASTY) if rng.random() < 0.5 else chr(rng.randrange(33, 127))
                   for _ in range(n))


def events(n: int) -> list[list[dict[str, Any]]]:
    """Messages of hostile events: execs from /tmp (the alerter fires) and rename halves."""
    rng = random.Random(11)
    out = []
    for i in range(n):
        proc = {"pid": i + 1, "tid": i + 1, "ppid": 1, "uid": 0, "gid": 0, "comm": nasty(rng, 8),
                "exe": "/tmp/" + nasty(rng), "argv": [nasty(rng) for _ in range(rng.randrange(4))],
                "cwd": "/" + "d" * rng.choice([1, 100, 4000])}
        base = {"v": 1, "ts": 1_700_000_000_000_000_000 + i, "host": f"fz{i % 2}", "proc": proc}
        exec_ = {**base, "id": f"fz-x{i}", "type": "exec"}
        path = "/" + nasty(rng, rng.choice([5, 40])) + "/" + "p" * rng.choice([1, 3000])
        moves = [{**base, "id": f"fz-{k}{i}", "type": k, "cookie": i,
                  "file": {"path": f"{path}{k}"}} for k in ("moved_from", "moved_to")]
        for ev in (exec_, *moves):
            validate_event(ev)
            out.append([ev])
    return out


async def all_bound(js: JetStreamContext, durables: int, limit: float = 60) -> None:
    """Until `durables` durables each have a pull waiting: every process is up (on a
    loaded machine one may take seconds to start, and would miss what it should see)."""
    async with asyncio.timeout(limit):
        while True:
            infos = await js.consumers_info(STREAM_NAME)
            waiting = [i for i in infos if i.config.durable_name and i.num_waiting]
            if len(waiting) >= durables:
                return
            await asyncio.sleep(0.05)


@pytest.fixture
def consumers(nats_server: NatsServer, tmp_path: Path) -> Iterator[dict[str, Path]]:
    paths = {"archive": tmp_path / "archive", "forward": tmp_path / "out.jsonl"}
    args = {
        "rename": ["rename", "--window", "1"],
        "alert": ["alert"],
        "archive": ["archive", "--dir", str(paths["archive"]), "--roll-seconds", "0.2"],
        "forward": ["forward", "--to", f"jsonl+file://{paths['forward']}"],
    }
    procs = []
    for name, a in args.items():
        procs.append(start_consumer(nats_server.url, tmp_path / f"{name}.log", *a))
    try:
        yield paths
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(20) == 0, (tmp_path / "rename.log").read_text()


async def test_hostile_text_through_every_consumer_process(
    nats_server: NatsServer, js: JetStreamContext, consumers: dict[str, Path]
) -> None:
    await ensure_stream(js)
    n = 60
    await all_bound(js, 5)  # rename, alert, archive, forward and its sink's
    for batch in events(n):
        await js.publish(event_subject(batch[0]["host"], batch[0]["type"]), encode_batch(batch))
    await settled(js)
    info = await js.stream_info(STREAM_NAME, subjects_filter="snoopbus.>")
    subjects = info.state.subjects or {}
    assert not [s for s in subjects if s.startswith("snoopbus.dlq.")], subjects
    # Archiver: every event stored (and the pairer's and alerter's outputs as they come).
    assert {f"fz-x{i}" for i in range(n)} <= set(archived_ids(consumers["archive"]))
    # Forwarder: one JSON document per "\n"-ended line (U+2028 stays raw inside
    # strings, as JSON allows: str.splitlines would cut there), each event at least once.
    text = consumers["forward"].read_text(errors="strict")
    docs = [json.loads(line) for line in text.split("\n")[:-1]]
    assert {f"fz-x{i}" for i in range(n)} <= {d.get("id") for d in docs}
    # Pairer and alerter: their outputs decode as the contract says.
    renamed = alerts = 0
    for subject in subjects:
        if ".file.renamed" in subject or subject.startswith("snoopbus.alerts."):
            sub = await js.subscribe(subject, ordered_consumer=True)
            for _ in range(subjects[subject]):
                msg = await sub.next_msg(timeout=5)
                if subject.startswith("snoopbus.alerts."):
                    decode_map(msg.data)
                    alerts += 1
                else:
                    renamed += len(decode_batch(msg.data))
            await sub.unsubscribe()
    assert renamed == n and alerts >= n, (renamed, alerts)
