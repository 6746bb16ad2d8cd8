"""The collector's publisher against a real nats-server: batching, ids, loss, outages."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.loss import PUBLISH_BACKLOG, LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.proto import STREAM_NAME, connect, decode_batch, ensure_stream, event_subject
from snoopbus.proto.msgid import id_count, id_host

EXEC = event_subject("h1", "exec")
EXIT = event_subject("h1", "exit")


def events(n: int, type_: str = "exec", start: int = 0) -> list[tuple[str, dict]]:
    subject = EXEC if type_ == "exec" else EXIT
    return [
        (subject, {"v": 1, "id": f"inst-{start + i}", "ts": i, "host": "h1", "type": type_})
        for i in range(n)
    ]


async def stored(js: JetStreamContext) -> list[tuple[str, dict[str, str], list[dict]]]:
    """Every message in the stream: subject, headers, events."""
    info = await js.stream_info(STREAM_NAME)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM_NAME, seq)
        out.append((msg.subject, dict(msg.headers or {}), decode_batch(msg.data)))
    return out


async def run_publisher(
    js: JetStreamContext, cfg: PublisherConfig, loss: LossCounters
) -> tuple[Publisher, asyncio.Task[None]]:
    pub = Publisher(js, loss, cfg)
    return pub, asyncio.create_task(pub.run())


async def test_batches_per_subject_with_message_ids(nc: Client, js: JetStreamContext) -> None:
    await ensure_stream(js)
    loss = LossCounters()
    pub, task = await run_publisher(js, PublisherConfig(max_batch=100), loss)
    pub.submit(events(250) + events(30, "exit", start=1000))
    await pub.close()
    await task
    msgs = await stored(js)
    by_subject: dict[str, list[dict]] = {EXEC: [], EXIT: []}
    ids: set[str] = set()
    for subject, headers, evs in msgs:
        assert len(evs) <= 100
        msg_id = headers["Nats-Msg-Id"]  # <host token>.<run>.<seq>.<nonce>+<count>
        assert id_host(msg_id) == "h1" and id_count(msg_id) == len(evs)
        ids.add(msg_id)
        by_subject[subject].extend(evs)
    assert [e["id"] for e in by_subject[EXEC]] == [f"inst-{i}" for i in range(250)]
    assert len(by_subject[EXIT]) == 30
    assert len(msgs) == 4 == len(ids)  # 100 + 100 + 50, and 30
    assert loss.total == 0 and pub.buffered == 0


async def test_backlog_beyond_the_bound_is_dropped_and_counted(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nc = await connect(nats_server.url, name="t")
    js = nc.jetstream()
    await ensure_stream(js)
    nats_server.stop()  # NATS away: nothing can be acked
    loss = LossCounters()
    pub, task = await run_publisher(js, PublisherConfig(max_buffered=100, ack_timeout=0.2), loss)
    pub.submit(events(60))
    pub.submit(events(60, start=60))
    assert loss.dropped[PUBLISH_BACKLOG] == 20
    assert pub.buffered == 100
    await pub.close(grace=0.5)
    await task
    with contextlib.suppress(ConnectionResetError):  # nats-py flushes into a dead socket
        await nc.close()


async def test_publishes_survive_a_server_restart_exactly_once(tmp_path: Path) -> None:
    server = NatsServer(state_dir=tmp_path / "n")
    server.start()
    server.port = int(server.url.rsplit(":", 1)[1])  # come back on the same port
    try:
        nc = await connect(server.url, name="t", reconnect_time_wait=0.1)
        js = nc.jetstream()
        await ensure_stream(js)
        loss = LossCounters()
        pub, task = await run_publisher(js, PublisherConfig(max_batch=50, ack_timeout=0.5), loss)
        pub.submit(events(100))
        await asyncio.sleep(0.2)
        server.stop()
        pub.submit(events(100, start=100))  # while NATS is down
        await asyncio.sleep(0.5)
        server.start()
        await pub.close(grace=30)
        await task
        checker = await nats.connect(server.url)
        ids = [e["id"] for _, _, evs in await stored(checker.jetstream()) for e in evs]
        await checker.close()
        assert sorted(ids, key=lambda i: int(i.split("-")[1])) == [f"inst-{i}" for i in range(200)]
        assert loss.total == 0
        await nc.close()
    finally:
        server.stop()
