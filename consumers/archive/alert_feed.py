"""Alerts reach the archiver through a second durable of its own.

Workaround: the runtime decodes every message as an event batch and
dead-letters anything else, and an alert is one msgpack map. So the archiver
pulls `snoopbus.alerts.>` itself, with the same rules the runtime applies:
undecodable -> dead letter (kind "decode"), held deliveries kept alive with
in-progress acks, and released (nak) at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from snoopbus.consumers import dlq
from snoopbus.consumers.delivery import Delivery, State
from snoopbus.consumers.settings import Settings
from snoopbus.proto import STREAM_NAME, DecodeError, alerts_filter, decode_map, parse_subject

log = logging.getLogger(__name__)

AddAlert = Callable[[Delivery, dict[str, Any]], Awaitable[None]]


class AlertFeed:
    def __init__(
        self, js: JetStreamContext, consumer: str, durable: str, settings: Settings,
        add: AddAlert,
    ) -> None:  # fmt: skip
        self.js = js
        self.consumer = consumer  # names the dead-letter subject
        self.durable = durable
        self.settings = settings
        self._add = add
        self._held: dict[Delivery, float] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dead_lettered = 0

    async def start(self) -> None:
        s = self.settings
        await self.js.add_consumer(
            STREAM_NAME,
            ConsumerConfig(
                durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.NEW if s.deliver_new else DeliverPolicy.ALL,
                filter_subject=alerts_filter(), ack_wait=s.ack_wait,
                max_ack_pending=s.ack_pending_limit,
            ),
        )  # fmt: skip
        sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=STREAM_NAME)
        self._tasks = [
            asyncio.create_task(self._fetch_loop(sub)), asyncio.create_task(self._keep_alive())
        ]

    async def stop(self) -> None:
        """Stop fetching. Held deliveries stay held until `release()`."""
        self._stop.set()
        if self._tasks:
            await self._tasks[0]
            self._tasks[1].cancel()

    async def release(self) -> None:
        for delivery in list(self._held):
            if delivery.state is State.HELD:
                delivery.state = State.NAKED
                await delivery.msg.nak()
        self._held.clear()

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription) -> None:
        s = self.settings
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(s.batch, timeout=s.fetch_timeout)
            except TimeoutError:
                continue
            except Exception as exc:  # connection trouble: the client reconnects
                log.warning("archive: fetching alerts: %s", exc)
                await asyncio.sleep(s.fetch_timeout)
                continue
            for msg in msgs:
                if self._stop.is_set():
                    await msg.nak()
                    continue
                await self._admit(msg)
        await sub.unsubscribe()

    async def _admit(self, msg: Msg) -> None:
        s = self.settings
        host = parse_subject(msg.subject).host or ""
        if s.partition.count > 1 and not s.partition.owns(host):
            await msg.ack()
            return
        try:
            alert = decode_map(msg.data)
        except DecodeError as exc:
            await self._dead_letter(msg, "decode", str(exc))
            return
        delivery = Delivery(msg, [alert], self)  # type: ignore[list-item]
        try:
            await self._add(delivery, alert)
        except Exception as exc:
            await self._dead_letter(msg, "handler", f"handler: {type(exc).__name__}: {exc}")
            return
        if delivery.state is State.OPEN:
            await self.ack(delivery)

    async def _dead_letter(self, msg: Msg, kind: str, reason: str) -> None:
        meta = msg.metadata
        letter = dlq.DeadLetter(
            consumer=self.consumer, kind=kind, reason=reason, subject=msg.subject,
            payload=msg.data, stream_seq=meta.sequence.stream, attempts=meta.num_delivered,
        )  # fmt: skip
        try:
            await dlq.publish(self.js, letter)
        except Exception as exc:
            log.error("archive: could not dead-letter alert seq %d: %s", letter.stream_seq, exc)
            await msg.nak(delay=self.settings.backoff[-1])
            return
        await msg.term()
        self.dead_lettered += 1
        log.warning("archive: dead-lettered alert seq %d: %s", letter.stream_seq, reason)

    async def _keep_alive(self) -> None:
        period = self.settings.ack_wait / 3
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for delivery, since in list(self._held.items()):
                if now - since >= period and delivery.state is State.HELD:
                    await delivery.msg.in_progress()
                    self._held[delivery] = now

    # -- Settler -----------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        delivery.state = State.ACKED
        self._held.pop(delivery, None)
        await delivery.msg.ack()

    async def nak(self, delivery: Delivery, reason: str, delay: float | None) -> None:
        delivery.state = State.NAKED
        self._held.pop(delivery, None)
        await delivery.msg.nak(delay=self.settings.delay_after(delivery.attempt) if delay is None
                               else delay)

    def hold(self, delivery: Delivery) -> None:
        delivery.state = State.HELD
        self._held[delivery] = time.monotonic()
