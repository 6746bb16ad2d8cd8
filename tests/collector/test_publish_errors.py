"""The publisher meeting permanent errors, each against a real nats-server: a
subject the server's permissions deny, the stream deleted under it, a bad
subject, a tiny max_payload, a max_payload that shrinks across a reconnect.
None may block the queue: what cannot be sent is counted lost by reason and
the rest flows; reports keep their own lane; at stop nothing is unaccounted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.collector.loss import (
    PUBLISH_BAD_SUBJECT,
    PUBLISH_DENIED,
    PUBLISH_FAILED,
    PUBLISH_NO_STREAM,
    LossCounters,
)
from snoopbus.collector.publisher import HEADER_ROOM, Publisher, PublisherConfig
from snoopbus.proto import (
    STREAM_NAME,
    NatsAuth,
    connect,
    decode_batch,
    decode_map,
    encode_map,
    ensure_stream,
    meta_subject,
    published_subject,
)
from tests.support.publisher import ADMIN, COLLECTOR, EXEC, EXIT, permissions_conf, to_submit
from tests.support.servers import serve


async def publisher_on(
    url: str, cfg: PublisherConfig, auth: NatsAuth | None = None, **options: Any
) -> tuple[Publisher, Client, LossCounters, asyncio.Task[None]]:
    """A publisher wired as the collector wires it: the connection's errors reach
    note_error, and it reads max_payload from the connection."""
    holder: list[Publisher] = []

    async def on_error(err: Exception) -> None:
        if holder:
            holder[0].note_error(err)

    nc = await connect(url, name="t", auth=auth or NatsAuth(), error_cb=on_error, **options)
    js = nc.jetstream()
    info = await ensure_stream(js)
    loss = LossCounters()
    pub = Publisher(None, loss, cfg)
    pub.attach(js, nc, info.config.max_msg_size)
    holder.append(pub)
    return pub, nc, loss, asyncio.create_task(pub.run())


async def stored(js: JetStreamContext) -> list[tuple[str, dict[str, str], list[Any]]]:
    """Every message in the stream: subject (as published), headers, events (a report as
    [its map])."""
    info = await js.stream_info(STREAM_NAME)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM_NAME, seq)
        body = [decode_map(msg.data)] if ".meta." in msg.subject else decode_batch(msg.data)
        out.append((published_subject(msg.subject), dict(msg.headers or {}), body))
    return out


async def admin_view(url: str) -> tuple[Client, JetStreamContext]:
    nc = await connect(url, name="admin", auth=ADMIN)
    return nc, nc.jetstream()


async def test_a_denied_subject_is_counted_lost_and_the_rest_flows(tmp_path: Path) -> None:
    with serve(tmp_path, permissions_conf(EXEC)) as srv:
        cfg = PublisherConfig(max_batch=10)  # a denial's retry budget: retry_denied_s
        pub, nc, loss, task = await publisher_on(srv.url, cfg, COLLECTOR)
        started = time.monotonic()
        for i in range(10):  # exec (denied) and exit (allowed) interleaved
            pub.submit(to_submit(10, "exec", start=i * 10)
                       + to_submit(10, "exit", start=1000 + i * 10))
            await asyncio.sleep(0.05)
        pub.submit_meta(meta_subject("h1", "heartbeat"), "m+0", encode_map({"ok": 1}))
        await pub.close(grace=30)
        took = time.monotonic() - started
        await task
        admin, js = await admin_view(srv.url)
        msgs = await stored(js)
        await admin.close()
        await nc.close()
    ids = [e["id"] for subject, _, evs in msgs if subject == EXIT for e in evs]
    assert ids == [f"inst-{1000 + i}" for i in range(100)]  # every exit, in order
    assert not [m for m in msgs if m[0] == EXEC]
    assert loss.dropped[PUBLISH_DENIED] == 100 and loss.total == 100
    assert any(m[0] == meta_subject("h1", "heartbeat") for m in msgs)  # the report went
    assert "permissions violation" in pub.last_error
    # Bounded: all of it settled as denied within close()'s grace, none failed at stop
    # (one retry budget for the first denied message, then one try each).
    print(f"\ndenied subject: 100 exit stored, 100 exec counted {PUBLISH_DENIED}, "
          f"{took:.1f}s in all")


async def test_reports_are_not_stuck_behind_events(tmp_path: Path) -> None:
    with serve(tmp_path, permissions_conf(EXEC)) as srv:
        # A long retry budget: the events lane holds a denied message for 60 s.
        pub, nc, loss, task = await publisher_on(
            srv.url, PublisherConfig(retry_denied_s=60, stall_after=0.5), COLLECTOR)
        admin, _ = await admin_view(srv.url)
        beats = await admin.subscribe(meta_subject("h1", "heartbeat"))
        await admin.flush()
        pub.submit(to_submit(5))
        await asyncio.sleep(1)
        assert pub.stalled and pub.stalled_for() >= 0.5  # captured, none published
        for i in range(3):
            pub.submit_meta(meta_subject("h1", "heartbeat"), f"b{i}+0", encode_map({"n": i}))
        got = [await beats.next_msg(timeout=3) for _ in range(3)]
        assert len(got) == 3 and loss.total == 0  # the events still wait, not lost yet
        await pub.close(grace=0.5)  # nothing spilled without a spill: counted at stop
        await task
        assert loss.dropped[PUBLISH_FAILED] == 5
        await admin.close()
        await nc.close()


async def test_the_stream_deleted_under_the_publisher(tmp_path: Path) -> None:
    with serve(tmp_path) as srv:
        pub, nc, loss, task = await publisher_on(
            srv.url, PublisherConfig(max_batch=10, retry_permanent_s=1.0))
        pub.submit(to_submit(20))
        await pub.drain()
        assert pub.published_events == 20
        admin, js = await admin_view(srv.url)
        await js.delete_stream(STREAM_NAME)  # an attacker with the rights, or an admin
        for i in range(5):
            pub.submit(to_submit(10, start=100 + i * 10))
            await asyncio.sleep(0.1)
        async with asyncio.timeout(20):  # counted lost after the retry budget, not held
            while loss.dropped[PUBLISH_NO_STREAM] < 50:
                await asyncio.sleep(0.1)
        assert not pub.buffered
        await ensure_stream(js)  # the stream is back: publishing resumes by itself
        pub.submit(to_submit(10, start=500))
        await pub.close(grace=20)
        await task
        ids = [e["id"] for _, _, evs in await stored(js) for e in evs]
        await admin.close()
        await nc.close()
    assert ids == [f"inst-{500 + i}" for i in range(10)]
    assert loss.total == loss.dropped[PUBLISH_NO_STREAM] == 50


async def test_a_bad_subject_is_counted_and_does_not_block(tmp_path: Path) -> None:
    with serve(tmp_path) as srv:
        pub, nc, loss, task = await publisher_on(srv.url, PublisherConfig())
        bad = "snoopbus.events.h1.file.bad subject"
        pub.submit([(bad, e) for _, e in to_submit(3)] + to_submit(4, start=10))
        await pub.close(grace=10)
        await task
        ids = [e["id"] for _, _, evs in await stored(nc.jetstream()) for e in evs]
        await nc.close()
    assert ids == [f"inst-{10 + i}" for i in range(4)]
    assert loss.dropped[PUBLISH_BAD_SUBJECT] == 3 and loss.total == 3


def big_events(n: int, argv_bytes: int, start: int = 0) -> list[tuple[str, dict[str, Any]]]:
    out = to_submit(n, start=start)
    for _, ev in out:
        ev["proc"] = {"pid": 1, "argv": ["prog", "x" * argv_bytes]}
    return out


async def test_a_tiny_max_payload_cuts_batches_and_truncates_what_cannot_fit(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, "max_payload: 2048\n") as srv:
        pub, nc, loss, task = await publisher_on(srv.url, PublisherConfig())
        assert pub.payload_limit() == 2048  # from the server's INFO
        pub.submit(big_events(50, 200) + big_events(1, 5000, start=50) + big_events(5, 200, 51))
        await pub.close(grace=20)
        await task
        msgs = await stored(nc.jetstream())
        await nc.close()
    got = [e for _, _, evs in msgs for e in evs]
    assert [e["id"] for e in got] == [f"inst-{i}" for i in range(56)] and loss.total == 0
    # every message fits with room for its headers
    sizes = [len(h["Nats-Msg-Id"]) for _, h, _ in msgs]
    assert len(msgs) > 5 and max(sizes) < 64
    cut = got[50]["proc"]
    assert cut["argv_truncated"] is True and 0 < len(cut["argv"][1]) < 2048 - HEADER_ROOM
    assert not any(e["proc"].get("argv_truncated") for e in got[:50] + got[51:])


async def test_max_payload_is_read_again_after_a_reconnect(tmp_path: Path) -> None:
    with serve(tmp_path) as first:
        port = int(first.url.rsplit(":", 1)[1])
        pub, nc, loss, task = await publisher_on(
            first.url, PublisherConfig(spill_dir=tmp_path / "spill", max_buffered=100),
            reconnect_time_wait=0.1)
        pub.submit(big_events(100, 1000))
        await pub.drain()
        assert pub.payload_limit() == 1 << 20 and pub.largest_message > 50_000
    # The same store, back on the same port with a max_payload of 8 KiB; meanwhile
    # events wait in memory and the spill, cut for the old limit.
    pub.submit(big_events(300, 1000, start=100))
    await asyncio.sleep(0.5)
    assert pub.spilled > 0
    with serve(tmp_path, "max_payload: 8192\n", port=port) as second:
        await pub.close(grace=30)
        await task
        assert nc.max_payload == 8192 and pub.payload_limit() == 8192
        msgs = await stored(nc.jetstream())
        await nc.close()
        assert second.url
    ids = [e["id"] for _, _, evs in msgs for e in evs]
    assert ids == [f"inst-{i}" for i in range(400)] and loss.total == 0  # in order, all there
    assert max(len(evs) for _, _, evs in msgs[:2]) > 50  # cut for 1 MiB before
    after = [len(evs) for _, _, evs in msgs if int(evs[0]["id"][5:]) >= 100]
    assert len(after) > 30 and max(after) <= 7  # ~1.1 KB events under 8 KiB with headers


async def test_stop_during_a_permanent_error_keeps_the_held_events(tmp_path: Path) -> None:
    with serve(tmp_path, permissions_conf(EXEC)) as srv:
        spill = tmp_path / "spill"
        cfg = PublisherConfig(retry_denied_s=60, spill_dir=spill)
        pub, nc, loss, task = await publisher_on(srv.url, cfg, COLLECTOR)
        pub.submit(to_submit(7) + to_submit(3, "exit", start=100))
        await asyncio.sleep(1)  # exec held in its retry budget; exit stored
        pub.submit_meta(meta_subject("h1", "status"), "s+0", encode_map({"state": "x"}))
        await pub.close(grace=1)
        await task
        await nc.close()
        assert pub.published_events == 3
        # Not lost: the held events (and a report, if unsent) wait in the spill.
        assert loss.total == 0 and pub.spill is not None and pub.spill.events == 7
        # The next start (permissions fixed by then: admin publishes it all).
        again = Publisher(None, LossCounters(), PublisherConfig(spill_dir=spill))
        admin, js = await admin_view(srv.url)
        again.attach(js, admin)
        await again.close(grace=10)
        ids = [e["id"] for s, _, evs in await stored(js) if s == EXEC for e in evs]
        await admin.close()
    assert ids == [f"inst-{i}" for i in range(7)]


@pytest.mark.parametrize("spill", [False, True])
async def test_stop_with_nats_gone_spills_or_counts_every_event(
    tmp_path: Path, spill: bool
) -> None:
    with serve(tmp_path) as srv:
        cfg = PublisherConfig(spill_dir=tmp_path / "spill" if spill else None, ack_timeout=0.5)
        pub, nc, loss, task = await publisher_on(srv.url, cfg, reconnect_time_wait=0.1)
        pub.submit(to_submit(30))
        await pub.drain()
    pub.submit(to_submit(70, start=30))  # NATS gone
    await pub.close(grace=0.5)
    await task
    with contextlib.suppress(Exception):
        await nc.close()
    kept = pub.spill.events if pub.spill is not None else 0
    assert pub.published_events == 30
    assert kept + loss.dropped[PUBLISH_FAILED] == 70 and loss.total == (0 if spill else 70)
