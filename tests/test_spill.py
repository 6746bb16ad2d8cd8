"""The spill: a bounded on-disk FIFO of publish-ready messages, and the publisher
using it through a NATS outage (memory bound -> spill bound -> counted loss)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.loss import PUBLISH_BACKLOG, SPILL_TORN, LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.collector.spill import Spill
from snoopbus.proto import connect, ensure_stream
from tests.test_publisher import EXEC, events, stored


def fill(spill: Spill, n: int, size: int = 100) -> None:
    for i in range(n):
        assert spill.append(EXEC, f"m{i}", 2, bytes([i % 256]) * size)


def segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.seg"))


def test_fifo_bounded_and_deleted_when_drained(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=10_000, segment_bytes=1_000)
    fill(spill, 30)
    assert spill.events == 60 and len(segments(tmp_path)) > 3
    assert not spill.append(EXEC, "over", 1, b"x" * 9_000)  # past the bound: refused
    got = [spill.next() for _ in range(30)]
    assert spill.next() is None
    assert [m.msg_id for m in got if m] == [f"m{i}" for i in range(30)]
    for m in reversed(got):  # acks in any order; the position moves past acked prefixes
        assert m is not None
        spill.ack(m)
    assert spill.empty and spill.events == 0 and segments(tmp_path) == []
    spill.close()


def test_reopen_replays_only_what_was_not_acked(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=100_000, segment_bytes=1_000)
    fill(spill, 20)
    first = [spill.next() for _ in range(12)]
    for m in first[:10]:
        assert m is not None
        spill.ack(m)  # 10, 11 handed out but never acked: a crash right now
    spill.close()
    again = Spill(tmp_path, max_bytes=100_000, segment_bytes=1_000)
    assert again.events == 20
    ids = []
    while (m := again.next()) is not None:
        ids.append(m.msg_id)
    assert ids == [f"m{i}" for i in range(10, 20)]
    again.close()


def test_torn_tail_is_dropped_and_counted(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=100_000)
    spill.append(EXEC, "a", 3, b"x" * 50)
    spill.append(EXEC, "b", 7, b"y" * 50)
    spill.close()
    (seg,) = tmp_path.glob("*.seg")
    os.truncate(seg, seg.stat().st_size - 10)  # the last frame cut by a crash
    again = Spill(tmp_path, max_bytes=100_000)
    assert (again.events, again.torn_events) == (3, 7)
    m = again.next()
    assert m is not None and m.msg_id == "a" and again.next() is None
    again.append(EXEC, "c", 1, b"z")  # appends after the cut, not after the torn bytes
    assert [again.next().msg_id] == ["c"]  # type: ignore[union-attr]
    again.close()
    loss = LossCounters()
    loss.add(SPILL_TORN, again.torn_events)
    assert loss.total == 7


async def outage(tmp_path: Path) -> tuple[NatsServer, JetStreamContext, object]:
    server = NatsServer(state_dir=tmp_path / "n")
    server.start()
    server.port = int(server.url.rsplit(":", 1)[1])  # come back on the same port
    nc = await connect(server.url, name="t", reconnect_time_wait=0.1)
    js = nc.jetstream()
    await ensure_stream(js)
    server.stop()
    return server, js, nc


async def close_quietly(nc: object) -> None:
    with contextlib.suppress(ConnectionResetError):
        await nc.close()  # type: ignore[attr-defined]


async def test_outage_memory_then_spill_then_in_order_replay(tmp_path: Path) -> None:
    server, js, nc = await outage(tmp_path)
    try:
        loss = LossCounters()
        cfg = PublisherConfig(max_batch=50, max_buffered=100, ack_timeout=0.3,
                              spill_dir=tmp_path / "spill")
        pub = Publisher(js, loss, cfg)
        task = asyncio.create_task(pub.run())
        for i in range(20):
            pub.submit(events(50, start=i * 50))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert pub.buffered == 100 and pub.spilled == 900, (pub.buffered, pub.spilled)
        server.start()
        await pub.close(grace=30)
        await task
        ids = [e["id"] for _, _, evs in await stored(js) for e in evs]
        # Ids unchanged, nothing lost or doubled, and in the order they were read.
        assert ids == [f"inst-{i}" for i in range(1000)]
        assert loss.total == 0 and segments(tmp_path / "spill") == []
        await close_quietly(nc)
    finally:
        server.stop()


async def test_both_bounds_full_drops_exactly_what_did_not_fit(tmp_path: Path) -> None:
    server, js, nc = await outage(tmp_path)
    try:
        loss = LossCounters()
        cfg = PublisherConfig(max_batch=10, max_buffered=100, ack_timeout=0.3,
                              spill_dir=tmp_path / "spill", spill_max_bytes=20_000)
        pub = Publisher(js, loss, cfg)
        task = asyncio.create_task(pub.run())
        for i in range(100):
            pub.submit(events(10, start=i * 10))
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.1)
        dropped = loss.dropped[PUBLISH_BACKLOG]
        assert dropped > 0 and pub.spilled > 0
        server.start()
        await pub.close(grace=30)
        await task
        ids = [e["id"] for _, _, evs in await stored(js) for e in evs]
        assert len(ids) == len(set(ids)) == 1000 - dropped, (len(ids), dropped)
        print(f"\nspill bound: 1000 submitted = {len(ids)} stored + {dropped} dropped")
        await close_quietly(nc)
    finally:
        server.stop()


async def test_stop_during_an_outage_keeps_events_for_the_next_start(tmp_path: Path) -> None:
    server, js, nc = await outage(tmp_path)
    try:
        cfg = PublisherConfig(max_batch=25, ack_timeout=0.2, spill_dir=tmp_path / "spill")
        loss = LossCounters()
        pub = Publisher(js, loss, cfg)
        task = asyncio.create_task(pub.run())
        pub.submit(events(100))
        await pub.close(grace=0.5)  # NATS still away: nothing acked
        await task
        assert loss.total == 0 and pub.spilled == 100
        server.start()
        pub2 = Publisher(js, loss, cfg)  # the next collector start
        task2 = asyncio.create_task(pub2.run())
        pub2.submit(events(10, start=100))
        await pub2.close(grace=30)
        await task2
        ids = [e["id"] for _, _, evs in await stored(js) for e in evs]
        assert ids == [f"inst-{i}" for i in range(110)] and loss.total == 0
        await close_quietly(nc)
    finally:
        server.stop()
