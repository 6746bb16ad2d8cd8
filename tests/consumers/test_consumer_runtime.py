"""The consumer runtime against a real nats-server: ack, retry, dead letters, sharing, stop."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import msgpack
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer, find_binary
from snoopbus.consumers import Batch, Consumer, Runtime, Settings, consumer
from snoopbus.consumers import dlq as dlq_headers
from snoopbus.proto import (
    STREAM_NAME,
    event_subject,
    events_filter,
)
from tests.support.bus import dead_letters
from tests.support.consumers import FAST, Collector, running
from tests.support.events import bare_exec, publish
from tests.support.processes import free_port
from tests.support.waits import until


async def test_batches_are_handled_and_acked(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    for _ in range(10):
        await publish(stream, bare_exec(), bare_exec(), bare_exec())
    c = Collector()
    async with running(c, nats_server.url) as rt:
        await until(lambda: len(c.events) == 30)
        await until(lambda: rt.counters.processed == 10)
    info = await stream.consumer_info(STREAM_NAME, "collect")
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert rt.counters.failed == rt.counters.dead_lettered == 0


async def test_malformed_messages_go_to_the_dlq_and_the_rest_flows(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    subject = event_subject("h1", "exec")
    newer = msgpack.packb([{**bare_exec(), "v": 99}])
    no_id = msgpack.packb([{k: v for k, v in bare_exec().items() if k != "id"}])
    bad = {b"\xc1 not msgpack": "decode", newer: "schema", no_id: "schema",
           msgpack.packb({"not": "an array"}): "decode"}  # fmt: skip
    await publish(stream, bare_exec(comm="before"))
    for payload in bad:
        await stream.publish(subject, payload)
    await publish(stream, bare_exec(comm="after"))
    c = Collector()
    async with running(c, nats_server.url) as rt:
        letters = await dead_letters(stream, "collect", len(bad))
        await until(lambda: len(c.events) == 2)
    assert [e["proc"]["comm"] for e in c.events] == ["before", "after"]
    assert rt.counters.dead_letter_reasons == {"decode": 2, "schema": 2}
    by_payload = {m.data: m.headers or {} for m in letters}
    assert set(by_payload) == set(bad)  # the original bytes, unchanged
    for payload, kind in bad.items():
        h = by_payload[payload]
        assert h[dlq_headers.KIND] == kind
        assert h[dlq_headers.SUBJECT] == subject
        assert h[dlq_headers.CONSUMER] == "collect"
    assert "schema version 99" in by_payload[newer][dlq_headers.REASON]
    assert by_payload[no_id][dlq_headers.REASON] == "event[0].id: required key is missing"
    info = await stream.consumer_info(STREAM_NAME, "collect")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_failing_message_is_retried_then_dead_lettered(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    await publish(stream, bare_exec(comm="poison"))
    await publish(stream, bare_exec(comm="fine"))
    c = Collector(poison=frozenset({"poison"}))
    async with running(c, nats_server.url) as rt:
        (letter,) = await dead_letters(stream, "collect", 1)
        await until(lambda: len(c.events) == 1)
    assert c.attempts["poison"] >= FAST.max_attempts  # batch run plus one-by-one retries
    assert [e["proc"]["comm"] for e in c.events] == ["fine"]  # not dragged along
    headers = letter.headers or {}
    assert headers[dlq_headers.KIND] == "attempts"
    assert "RuntimeError: cannot handle poison (attempt 3 of 3)" in headers[dlq_headers.REASON]
    assert rt.counters.failed == 3 and rt.counters.retried == 2 and rt.counters.dead_lettered == 1
    assert rt.counters.processed == 1


async def test_a_restart_resumes_where_the_durable_stopped(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    await publish(stream, bare_exec(comm="first"))
    c = Collector()
    async with running(c, nats_server.url):
        await until(lambda: len(c.events) == 1)
    await publish(stream, bare_exec(comm="second"))
    again = Collector()
    async with running(again, nats_server.url):
        await until(lambda: len(again.events) == 1)
        await asyncio.sleep(0.3)  # a second fetch round: nothing else may come
    assert [e["proc"]["comm"] for e in again.events] == ["second"]


async def test_two_instances_share_one_durable(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    sent = [bare_exec(comm=f"c{i}") for i in range(300)]
    for event in sent:
        await publish(stream, event)
    a, b = Collector(), Collector()
    a.delay = b.delay = 0.02  # so neither drains the stream alone
    small = Settings(batch=5, fetch_timeout=0.2, concurrency=1)
    async with running(a, nats_server.url, small), running(b, nats_server.url, small):
        await until(lambda: len(a.events) + len(b.events) >= 300)
    assert a.events and b.events
    ids = [e["id"] for e in a.events + b.events]
    assert sorted(ids) == sorted(e["id"] for e in sent)


async def test_handlers_run_at_most_concurrency_at_once(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    for _ in range(20):
        await publish(stream, bare_exec())
    now = peak = 0

    @consumer("bounded", filters=[events_filter(family="proc")])
    async def bounded(batch: Batch) -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.05)
        now -= 1

    settings = Settings(batch=1, fetch_timeout=0.2, concurrency=3)
    async with running(bounded, nats_server.url, settings) as rt:
        await until(lambda: rt.counters.processed == 20)
    assert peak == 3


async def test_handle_bytes_hands_a_fetch_on_in_runs_of_at_most_that_many_bytes(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    # Messages of 1 to 6 events, so runs cut at different points.
    for i in range(40):
        await publish(stream, *[bare_exec(comm=f"m{i}e{j}") for j in range(1 + i % 6)])
    calls: list[list[int]] = []  # payload sizes of each handler call's messages
    comms: list[str] = []

    @consumer("runs", filters=[events_filter(family="proc")])
    async def runs(batch: Batch) -> None:
        calls.append([len(d.msg.data) for d in batch])
        comms.extend(e["proc"]["comm"] for e in batch.events)

    limit = 1200  # bytes: a few messages
    settings = Settings(batch=40, fetch_timeout=0.2, concurrency=1, handle_bytes=limit)
    async with running(runs, nats_server.url, settings) as rt:
        await until(lambda: rt.counters.processed == 40)
    # Every event once, in stream order, though handed on in parts.
    assert comms == [f"m{i}e{j}" for i in range(40) for j in range(1 + i % 6)]
    for sizes in calls:
        # A run stops at the message that reaches the limit: below it before that one.
        assert sum(sizes[:-1]) < limit
    # Runs of several messages, not one call per message nor one per fetch.
    total, largest = sum(map(sum, calls)), max(map(max, calls))
    assert any(len(sizes) > 1 for sizes in calls)
    assert len(calls) >= total // (limit + largest)


async def test_held_messages_outlive_ack_wait_and_are_released_on_stop(
    nats_server: NatsServer, stream: JetStreamContext, nc: Client
) -> None:
    holder = Collector(name="holder")
    held: list = []

    async def hold(batch: Batch) -> None:
        for delivery in batch:
            delivery.hold()
            held.append(delivery)

    holder.handle = hold  # type: ignore[method-assign]
    await publish(stream, bare_exec(comm="kept"))
    settings = Settings(batch=8, fetch_timeout=0.2, ack_wait=0.6)
    async with running(holder, nats_server.url, settings) as rt:
        await until(lambda: len(held) == 1)
        await asyncio.sleep(1.5)  # 2.5 ack_waits: only in-progress acks keep it ours
        assert len(held) == 1 and rt.held == 1
    assert rt.counters.released == 1
    # Released, not lost: the next instance gets it at once, no ack_wait to sit out.
    again = Collector(name="holder")
    async with running(again, nats_server.url, settings):
        await until(lambda: len(again.events) == 1, within=2)
    info = await stream.consumer_info(STREAM_NAME, "holder")
    assert info.num_ack_pending == 0


async def test_held_message_acked_later(nats_server: NatsServer, stream: JetStreamContext) -> None:
    later: list = []

    @consumer("later", filters=[events_filter(family="proc")])
    async def later_handler(batch: Batch) -> None:
        for delivery in batch:
            delivery.hold()
            later.append(delivery)

    await publish(stream, bare_exec())
    async with running(later_handler, nats_server.url) as rt:
        await until(lambda: len(later) == 1)
        info = await stream.consumer_info(STREAM_NAME, "later")
        assert info.num_ack_pending == 1
        await later[0].ack()
        assert rt.held == 0
        await until(lambda: rt.counters.processed == 1)


async def test_stop_lets_in_flight_batches_finish(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    c = Collector()
    c.delay = 0.5
    await publish(stream, bare_exec())
    async with running(c, nats_server.url) as rt:
        await until(lambda: rt.counters.fetched == 1)
    assert len(c.events) == 1 and rt.counters.processed == 1


async def test_a_runtime_needs_a_name_and_filters() -> None:
    with pytest.raises(ValueError, match="name"):
        Runtime(Consumer(), servers="nats://127.0.0.1:1")
    with pytest.raises(ValueError, match="filter"):
        consumer("x", filters=[])


async def test_tick_comes_periodically_survives_a_failure_and_stops_with_the_consumer(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    ticker = Collector(name="ticker")
    ticker.tick_every = 0.05
    ticks: list[float] = []
    torn_down: list[int] = []

    async def tick() -> None:
        ticks.append(asyncio.get_running_loop().time())
        if len(ticks) == 2:
            raise RuntimeError("a bad tick")

    async def teardown() -> None:
        torn_down.append(len(ticks))

    ticker.tick = tick  # type: ignore[method-assign]
    ticker.teardown = teardown  # type: ignore[method-assign]
    async with running(ticker, nats_server.url) as rt:
        await publish(stream, bare_exec(comm="during"))
        await until(lambda: len(ticks) >= 5 and len(ticker.events) == 1)
    assert rt.counters.tick_failures == 1  # the failing one, and the next came anyway
    assert torn_down == [len(ticks)]  # no tick after teardown began
    await asyncio.sleep(0.2)
    assert torn_down == [len(ticks)]  # nor after the runtime ended
    quiet = Collector(name="quiet")  # tick_every 0: never called
    quiet.tick = tick  # type: ignore[method-assign]
    before = len(ticks)
    async with running(quiet, nats_server.url):
        await asyncio.sleep(0.3)
    assert len(ticks) == before


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_a_consumer_started_before_jetstream_binds_once_it_is_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that has no JetStream yet (a node starting, a cluster electing its
    leader) answers the durable's requests with 503 or not at all: the runtime
    tries again with back-off instead of ending at the first answer."""
    port = free_port()
    plain = subprocess.Popen([find_binary(), "-a", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    server = NatsServer(tmp_path / "nats", port=port)
    c = Collector()
    runtime = Runtime(c, servers=f"nats://127.0.0.1:{port}", settings=FAST)
    task: asyncio.Task[None] | None = None
    try:
        await until(lambda: listening(port))
        task = asyncio.create_task(runtime.run())
        await until(lambda: "binding the durable failed" in caplog.text, within=30)
        assert not task.done() and not runtime.ready.is_set()
        plain.terminate()
        plain.wait(10)
        server.start()  # the same port, now with JetStream
        await asyncio.wait_for(runtime.ready.wait(), 60)
        nc = await nats.connect(server.url)
        try:
            await publish(nc.jetstream(), bare_exec())
            await until(lambda: len(c.events) == 1)
        finally:
            await nc.close()
    finally:
        runtime.stop()
        if task is not None:
            await asyncio.wait_for(task, 20)
        if plain.poll() is None:
            plain.kill()
            plain.wait()
        server.stop()


@pytest.mark.parametrize(
    "settings",
    [
        Settings(batch=1, fetch_timeout=0.2, ack_wait=0.6, concurrency=1),
        # One fetch, one message a part: the later ones wait undecoded.
        Settings(batch=10, fetch_timeout=0.2, ack_wait=0.6, concurrency=1, handle_bytes=1),
    ],
    ids=["fetched", "parts"],
)
async def test_messages_waiting_behind_a_slow_batch_are_not_redelivered(
    nats_server: NatsServer, stream: JetStreamContext, settings: Settings
) -> None:
    """A fetched message waits for a handler's slot while the batch before it takes
    longer than ack_wait, then is held (as the rename pairer holds halves): it was
    kept ours from the fetch on, so nothing is delivered twice."""
    seen: list[tuple[str, int]] = []

    @consumer("slow", filters=[events_filter(family="proc")])
    async def slow(batch: Batch) -> None:
        for delivery in batch:
            delivery.hold()
            seen.append((delivery.events[0]["proc"]["comm"], delivery.attempt))
        if len(seen) == 1:
            await asyncio.sleep(1.5)  # 2.5 ack_waits, with the next message fetched meanwhile

    for i in range(3):
        await publish(stream, bare_exec(comm=f"c{i}"))
    async with running(slow, nats_server.url, settings):
        await until(lambda: len(seen) >= 3)
        await asyncio.sleep(1.2)  # two more ack_waits: a redelivery would show by now
    assert seen == [("c0", 1), ("c1", 1), ("c2", 1)]


def test_a_handle_bytes_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="handle_bytes must be >= 1"):
        Settings(handle_bytes=0)
