"""The runtime hands alert maps and events to one consumer, and dead-letters at once on request."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Batch, Consumer
from snoopbus.consumers import dlq as dlq_headers
from snoopbus.proto import alert_subject, alerts_filter, encode_map, events_filter

from .test_consumer_runtime import FAST, dead_letters, exec_event, publish, running, stream

__all__ = ["stream"]  # the fixture, re-used


class Mixed(Consumer):
    """Events and alerts from one durable; refuses alerts titled "refuse" for good."""

    name = "mixed"
    filters = (events_filter(family="proc"), alerts_filter())

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.alerts: list[dict] = []

    async def handle(self, batch: Batch) -> None:
        for delivery in batch:
            if not delivery.is_alert:
                self.events.extend(delivery.events)
            elif delivery.events[0].get("title") == "refuse":
                await delivery.dead_letter("sink said 400: bad document")
            else:
                self.alerts.extend(delivery.events)


async def test_alert_maps_and_events_share_a_durable(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    mixed = Mixed()
    async with running(mixed, nats_server.url, FAST) as runtime:
        await publish(stream, exec_event(comm="a"))
        await stream.publish(alert_subject("h1", "high"), encode_map({"id": "al-1", "title": "x"}))
        await stream.publish(alert_subject("h1", "low"), encode_map({"title": "refuse"}))
        await stream.publish(alert_subject("h1", "low"), b"\x93\x01\x02\x03")  # not a map
        [broken, refused] = sorted(  # by kind: decode, rejected
            await dead_letters(stream, "mixed", 2), key=lambda m: m.headers[dlq_headers.KIND]
        )
        async with asyncio.timeout(10):
            while not (mixed.events and mixed.alerts):
                await asyncio.sleep(0.02)
    assert [e["proc"]["comm"] for e in mixed.events] == ["a"]
    assert mixed.alerts == [{"id": "al-1", "title": "x"}]
    assert broken.headers[dlq_headers.KIND] == "decode"
    # Refused once, dead-lettered at once: no redelivery spent on it.
    assert refused.headers[dlq_headers.KIND] == "rejected"
    assert refused.headers[dlq_headers.REASON] == "sink said 400: bad document"
    assert refused.headers[dlq_headers.ATTEMPTS] == "1"
    assert runtime.counters.dead_lettered == 2
