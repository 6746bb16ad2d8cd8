"""The consumer runtime against a real nats-server: ack, retry, dead letters, sharing, stop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Batch, Consumer, Runtime, Settings, consumer
from snoopbus.consumers import dlq as dlq_headers
from snoopbus.proto import (
    SCHEMA_VERSION,
    STREAM_NAME,
    dlq_subject,
    encode_batch,
    ensure_stream,
    event_subject,
    events_filter,
)

_ids = itertools.count(1)
FAST = Settings(batch=64, fetch_timeout=0.2, backoff=(0.05,), max_attempts=3)


def exec_event(host: str = "h1", comm: str = "sh", **extra: object) -> dict:
    return {
        "v": SCHEMA_VERSION, "id": f"t-{next(_ids)}", "ts": 1, "host": host, "type": "exec",
        "proc": {"pid": 1, "comm": comm}, **extra,
    }  # fmt: skip


async def publish(js: JetStreamContext, *events: dict) -> None:
    first = events[0]
    await js.publish(event_subject(first["host"], first["type"]), encode_batch(list(events)))


async def wait_for(cond: Callable[[], bool], limit: float = 10.0) -> None:
    """Until `cond()` holds; the runtime's counters have no event to wait on."""
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running(c: Consumer, url: str, settings: Settings = FAST) -> AsyncIterator[Runtime]:
    runtime = Runtime(c, servers=url, settings=settings)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        await task  # raises what went wrong
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 10)


class Collector(Consumer):
    """Records every event; fails (raises) on those whose comm is in `poison`."""

    def __init__(self, name: str = "collect", poison: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.filters = (events_filter(family="proc"),)
        self.events: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.poison = poison
        self.delay = 0.0

    async def handle(self, batch: Batch) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        for event in batch.events:
            comm = event["proc"]["comm"]
            if comm in self.poison:
                self.attempts[comm] = self.attempts.get(comm, 0) + 1
                raise RuntimeError(f"cannot handle {comm}")
        self.events.extend(batch.events)


async def dead_letters(js: JetStreamContext, consumer_name: str, n: int) -> list[Msg]:
    sub = await js.pull_subscribe(dlq_subject(consumer_name), stream=STREAM_NAME)
    got: list[Msg] = []
    async with asyncio.timeout(10):
        while len(got) < n:
            try:
                got += await sub.fetch(n - len(got), timeout=1)
            except TimeoutError:
                pass
    await sub.unsubscribe()
    return got


@pytest.fixture
async def stream(js: JetStreamContext) -> JetStreamContext:
    await ensure_stream(js)
    return js


async def test_batches_are_handled_and_acked(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    for _ in range(10):
        await publish(stream, exec_event(), exec_event(), exec_event())
    c = Collector()
    async with running(c, nats_server.url) as rt:
        await wait_for(lambda: len(c.events) == 30)
        await wait_for(lambda: rt.counters.processed == 10)
    info = await stream.consumer_info(STREAM_NAME, "collect")
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert rt.counters.failed == rt.counters.dead_lettered == 0


async def test_malformed_messages_go_to_the_dlq_and_the_rest_flows(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    subject = event_subject("h1", "exec")
    newer = msgpack.packb([{**exec_event(), "v": 99}])
    no_id = msgpack.packb([{k: v for k, v in exec_event().items() if k != "id"}])
    bad = {b"\xc1 not msgpack": "decode", newer: "schema", no_id: "schema",
           msgpack.packb({"not": "an array"}): "decode"}  # fmt: skip
    await publish(stream, exec_event(comm="before"))
    for payload in bad:
        await stream.publish(subject, payload)
    await publish(stream, exec_event(comm="after"))
    c = Collector()
    async with running(c, nats_server.url) as rt:
        letters = await dead_letters(stream, "collect", len(bad))
        await wait_for(lambda: len(c.events) == 2)
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
    await publish(stream, exec_event(comm="poison"))
    await publish(stream, exec_event(comm="fine"))
    c = Collector(poison=frozenset({"poison"}))
    async with running(c, nats_server.url) as rt:
        (letter,) = await dead_letters(stream, "collect", 1)
        await wait_for(lambda: len(c.events) == 1)
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
    await publish(stream, exec_event(comm="first"))
    c = Collector()
    async with running(c, nats_server.url):
        await wait_for(lambda: len(c.events) == 1)
    await publish(stream, exec_event(comm="second"))
    again = Collector()
    async with running(again, nats_server.url):
        await wait_for(lambda: len(again.events) == 1)
        await asyncio.sleep(0.3)  # a second fetch round: nothing else may come
    assert [e["proc"]["comm"] for e in again.events] == ["second"]


async def test_two_instances_share_one_durable(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    sent = [exec_event(comm=f"c{i}") for i in range(300)]
    for event in sent:
        await publish(stream, event)
    a, b = Collector(), Collector()
    a.delay = b.delay = 0.02  # so neither drains the stream alone
    small = Settings(batch=5, fetch_timeout=0.2, concurrency=1)
    async with running(a, nats_server.url, small), running(b, nats_server.url, small):
        await wait_for(lambda: len(a.events) + len(b.events) >= 300)
    assert a.events and b.events
    ids = [e["id"] for e in a.events + b.events]
    assert sorted(ids) == sorted(e["id"] for e in sent)


async def test_handlers_run_at_most_concurrency_at_once(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    for _ in range(20):
        await publish(stream, exec_event())
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
        await wait_for(lambda: rt.counters.processed == 20)
    assert peak == 3


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
    await publish(stream, exec_event(comm="kept"))
    settings = Settings(batch=8, fetch_timeout=0.2, ack_wait=0.6)
    async with running(holder, nats_server.url, settings) as rt:
        await wait_for(lambda: len(held) == 1)
        await asyncio.sleep(1.5)  # 2.5 ack_waits: only in-progress acks keep it ours
        assert len(held) == 1 and rt.held == 1
    assert rt.counters.released == 1
    # Released, not lost: the next instance gets it at once, no ack_wait to sit out.
    again = Collector(name="holder")
    async with running(again, nats_server.url, settings):
        await wait_for(lambda: len(again.events) == 1, limit=2)
    info = await stream.consumer_info(STREAM_NAME, "holder")
    assert info.num_ack_pending == 0


async def test_held_message_acked_later(nats_server: NatsServer, stream: JetStreamContext) -> None:
    later: list = []

    @consumer("later", filters=[events_filter(family="proc")])
    async def later_handler(batch: Batch) -> None:
        for delivery in batch:
            delivery.hold()
            later.append(delivery)

    await publish(stream, exec_event())
    async with running(later_handler, nats_server.url) as rt:
        await wait_for(lambda: len(later) == 1)
        info = await stream.consumer_info(STREAM_NAME, "later")
        assert info.num_ack_pending == 1
        await later[0].ack()
        assert rt.held == 0
        await wait_for(lambda: rt.counters.processed == 1)


async def test_stop_lets_in_flight_batches_finish(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    c = Collector()
    c.delay = 0.5
    await publish(stream, exec_event())
    async with running(c, nats_server.url) as rt:
        await wait_for(lambda: rt.counters.fetched == 1)
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
        await publish(stream, exec_event(comm="during"))
        await wait_for(lambda: len(ticks) >= 5 and len(ticker.events) == 1)
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
