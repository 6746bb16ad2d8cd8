"""The consumer runtime: one connection, one durable pull consumer, bounded work.

Loop: fetch a batch (bounded by count and bytes: fetch.py) -> decode each
message (undecodable ones go to the dead-letter subject at once) -> hand the
rest to the consumer's handler in an asyncio-pool slot -> ack on success, nak
with back-off on failure, and dead-letter once a message has had
`max_attempts` deliveries.

The server-side `max_deliver` is one more than `max_attempts`: if a process
dies during a message's last attempt the server still delivers it once more,
and the runtime then dead-letters it unopened instead of it vanishing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncio_pool import AioPool
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from snoopbus.proto import (
    STREAM_NAME,
    DecodeError,
    NatsAuth,
    SchemaError,
    SubjectError,
    connect,
    decode_batch,
    decode_map,
    decode_records,
    ensure_stream,
    parse_subject,
)

from . import dlq
from .consumer import Consumer, Context
from .delivery import Batch, Delivery, State, is_alert_subject
from .fetch import Puller
from .settings import Settings

log = logging.getLogger(__name__)

LAG_INTERVAL = 5.0  # s between consumer_info calls for the lag figures


@dataclass
class Counters:
    """Per-consumer tallies, read by tests now and metrics exporters later."""

    fetched: int = 0  # messages received from the server
    processed: int = 0  # acked after the handler succeeded
    failed: int = 0  # handler failures, counted per message and attempt
    retried: int = 0  # nak'd for a later redelivery
    dead_lettered: int = 0
    skipped: int = 0  # belonged to another partition: acked unread
    released: int = 0  # held at shutdown and nak'd for whoever comes next
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)  # by kind
    # From the server's consumer_info, refreshed every LAG_INTERVAL s (None until then).
    pending: int | None = None  # in the stream, not yet delivered to this durable: the lag
    ack_pending: int | None = None


class Runtime:
    """Runs one consumer until `stop()` (or a signal, through `serve`)."""

    def __init__(
        self,
        consumer: Consumer,
        *,
        servers: str | list[str] | None = None,
        nc: Client | None = None,
        settings: Settings | None = None,
        auth: NatsAuth | None = None,
    ) -> None:
        if not consumer.name:
            raise ValueError(f"{type(consumer).__name__}: a consumer needs a name")
        if not consumer.filters:
            raise ValueError(f"consumer {consumer.name!r}: needs at least one subject filter")
        if servers is None and nc is None:
            raise ValueError("runtime: give servers to connect to, or a connected client")
        self.consumer = consumer
        self.settings = settings or consumer.settings
        self.name = consumer.name
        self.durable = self.settings.partition.durable(consumer.name)
        self.counters = Counters()
        self.ready = asyncio.Event()  # set once the durable is bound and setup ran
        self._servers = servers
        self._auth = auth  # None: SNOOPBUS_NATS_* (proto/bus.py)
        self._nc = nc
        self._js: JetStreamContext | None = None
        self._stop = asyncio.Event()
        self._held: dict[Delivery, float] = {}  # delivery -> last keep-alive
        self.puller: Puller | None = None  # once running: its `largest` batch in bytes

    def stop(self) -> None:
        """Stop fetching; in-flight batches finish, held messages are released."""
        self._stop.set()

    @property
    def held(self) -> int:
        return len(self._held)

    async def run(self) -> None:
        own = self._nc is None
        nc = self._nc or await connect(
            self._servers or [], name=f"snoopbus-{self.durable}", auth=self._auth
        )
        try:
            js = self._js = nc.jetstream()
            await ensure_stream(js)
            await js.add_consumer(STREAM_NAME, await self._keep_start(js, self._consumer_config()))
            puller = Puller(nc, js, STREAM_NAME, self.durable, batch=self.settings.batch,
                            max_bytes=self.settings.fetch_bytes)  # fmt: skip
            await puller.start()
            self.puller = puller
            await self.consumer.setup(Context(nc, js, self.durable, self.settings))
            self.ready.set()
            log.info("%s: consuming %s", self.durable, ", ".join(self.consumer.filters))
            pool = AioPool(size=self.settings.concurrency)
            keep_alive = asyncio.create_task(self._keep_alive())
            lag = asyncio.create_task(self._track_lag(js))
            try:
                await self._fetch_loop(puller, pool)
            finally:
                await pool.join()  # finish in-flight batches
                keep_alive.cancel()
                lag.cancel()
                await self.consumer.teardown()
                await self._release_held()
                await puller.stop()
        finally:
            if own and not nc.is_closed:
                await nc.drain()

    def _consumer_config(self) -> ConsumerConfig:
        s = self.settings
        filters = list(self.consumer.filters)
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.consumer.description or None,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=(
                DeliverPolicy.BY_START_TIME if s.start_time is not None
                else DeliverPolicy.NEW if s.deliver_new else DeliverPolicy.ALL
            ),
            opt_start_time=s.start_time,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
            ack_wait=s.ack_wait,
            max_deliver=s.max_attempts + 1,
            max_ack_pending=s.ack_pending_limit,
        )

    async def _keep_start(self, js: JetStreamContext, config: ConsumerConfig) -> ConsumerConfig:
        """A durable that exists keeps where it started (the server refuses to move
        it, and `--start 2h` means another time at each restart): --start is for a
        new durable."""
        try:
            info = await js.consumer_info(STREAM_NAME, self.durable)
        except NotFoundError:
            return config
        was = info.config
        if (was.deliver_policy, was.opt_start_time) != (config.deliver_policy,
                                                        config.opt_start_time):
            log.info("%s: the durable exists: it goes on from where it is (--start applies "
                     "to a new durable)", self.durable)  # fmt: skip
        config.deliver_policy, config.opt_start_time = was.deliver_policy, was.opt_start_time
        config.opt_start_seq = was.opt_start_seq
        return config

    async def _fetch_loop(self, puller: Puller, pool: AioPool) -> None:
        s = self.settings
        while not self._stop.is_set():
            msgs = await puller.fetch(s.fetch_timeout)  # bounded by count and bytes
            if not msgs:
                continue
            if self._stop.is_set():
                # Arrived after the stop: hand straight back, no delay.
                for msg in msgs:
                    await msg.nak()
                self.counters.released += len(msgs)
                break
            deliveries = await self._admit(msgs)
            if deliveries:
                await pool.spawn(self._handle(Batch(deliveries)))

    async def _admit(self, msgs: list[Msg]) -> list[Delivery]:
        """Decode what this instance should handle; dead-letter what cannot be."""
        s = self.settings
        out: list[Delivery] = []
        for msg in msgs:
            self.counters.fetched += 1
            if s.partition.count > 1 and not self._owns(msg.subject):
                await msg.ack()
                self.counters.skipped += 1
                continue
            attempts = msg.metadata.num_delivered
            if attempts > s.max_attempts:
                await self._dead_letter(
                    msg, "attempts",
                    f"attempts: delivered {attempts} times, limit {s.max_attempts} "
                    "(an earlier attempt never finished)",
                )  # fmt: skip
                continue
            try:
                out.append(self._decode(msg))
            except DecodeError as exc:  # a SchemaError too: test it first
                await self._dead_letter(msg, "decode", str(exc))
            except SchemaError as exc:
                await self._dead_letter(msg, "schema", str(exc))
        return out

    def _decode(self, msg: Msg) -> Delivery:
        """An event batch (as records when they are valid as sent: maps only
        when read); on an alert subject, the one alert map as a list."""
        if is_alert_subject(msg.subject):
            return Delivery(msg, [decode_map(msg.data)], self)  # type: ignore[list-item]
        records = decode_records(msg.data)
        if records is not None:
            return Delivery(msg, None, self, records)
        return Delivery(msg, decode_batch(msg.data, fast=False), self)

    def _owns(self, subject: str) -> bool:
        try:
            host = parse_subject(subject).host
        except SubjectError:
            host = None
        # Subjects without a host go to partition 0, so exactly one instance sees them.
        return self.settings.partition.owns(host) if host else self.settings.partition.index == 0

    async def _handle(self, batch: Batch) -> None:
        failure = await self._attempt(batch)
        if failure is None:
            return
        unsettled = [d for d in batch if not d.settled]
        if len(unsettled) == 1:
            await self.nak(unsettled[0], failure, None)
            return
        # One bad message must not drag its neighbours to the dead-letter
        # subject: retry them one at a time (handlers are at-least-once anyway).
        for delivery in unsettled:
            self._held.pop(delivery, None)
            delivery.state = State.OPEN
            failure = await self._attempt(Batch([delivery]))
            if failure is not None and not delivery.settled:
                await self.nak(delivery, failure, None)

    async def _attempt(self, batch: Batch) -> str | None:
        """Run the handler; ack what it left open. The failure reason, if it raised."""
        try:
            await self.consumer.handle(batch)
        except Exception as exc:
            reason = f"handler: {type(exc).__name__}: {exc}"
            log.warning("%s: %s", self.durable, reason, exc_info=True)
            return reason
        for delivery in batch:
            if delivery.state is State.OPEN:
                await self.ack(delivery)
        return None

    # -- Settler: what Delivery.ack/nak/hold call ---------------------------

    async def ack(self, delivery: Delivery) -> None:
        delivery.state = State.ACKED
        self._held.pop(delivery, None)
        await delivery.msg.ack()
        self.counters.processed += 1

    async def nak(self, delivery: Delivery, reason: str, delay: float | None) -> None:
        self._held.pop(delivery, None)
        self.counters.failed += 1
        attempt, limit = delivery.attempt, self.settings.max_attempts
        if attempt >= limit and not delivery.released:
            delivery.state = State.DEAD
            why = f"{reason} (attempt {attempt} of {limit})"
            await self._dead_letter(delivery.msg, "attempts", why)
            return
        delivery.state = State.NAKED
        await delivery.msg.nak(delay=self.settings.delay_after(attempt) if delay is None else delay)
        self.counters.retried += 1

    def hold(self, delivery: Delivery) -> None:
        delivery.state = State.HELD
        self._held[delivery] = time.monotonic()

    async def dead_letter(self, delivery: Delivery, kind: str, reason: str) -> None:
        if delivery.settled:
            return
        if delivery.released:  # no payload left to file: the server redelivers it whole
            log.error("%s: seq %d released by its handler, nak'd instead of dead-lettered: %s",
                      self.durable, delivery.stream_seq, reason)  # fmt: skip
            await self.nak(delivery, reason, None)
            return
        self._held.pop(delivery, None)
        delivery.state = State.DEAD
        self.counters.failed += 1
        await self._dead_letter(delivery.msg, kind, reason)

    # -----------------------------------------------------------------------

    async def _dead_letter(self, msg: Msg, kind: str, reason: str) -> None:
        assert self._js is not None
        meta = msg.metadata
        letter = dlq.DeadLetter(
            consumer=self.name, kind=kind, reason=reason, subject=msg.subject,
            payload=msg.data, stream_seq=meta.sequence.stream, attempts=meta.num_delivered,
        )  # fmt: skip
        try:
            await dlq.publish(self._js, letter)
        except Exception as exc:
            # Keep the message rather than lose it: it comes back after a delay.
            log.error("%s: could not dead-letter seq %d: %s", self.durable, letter.stream_seq, exc)
            await msg.nak(delay=self.settings.backoff[-1])
            return
        await msg.term()  # given up on: no redelivery
        self.counters.dead_lettered += 1
        self.counters.dead_letter_reasons[kind] += 1
        log.warning("%s: dead-lettered seq %d: %s", self.durable, letter.stream_seq, reason)

    async def _keep_alive(self) -> None:
        """Held messages would be redelivered after ack_wait: tell the server
        they are still being worked on."""
        period = self.settings.ack_wait / 3
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for delivery, since in list(self._held.items()):
                if now - since >= period and delivery.state is State.HELD:
                    await delivery.msg.in_progress()
                    self._held[delivery] = now

    async def _track_lag(self, js: JetStreamContext) -> None:
        """Lag for metrics and `up`: what the server still has for this durable."""
        while True:
            try:
                info = await js.consumer_info(STREAM_NAME, self.durable)
                self.counters.pending = info.num_pending
                self.counters.ack_pending = info.num_ack_pending
            except Exception as exc:  # a missed reading only: the next one comes
                log.debug("%s: consumer_info: %s", self.durable, exc)
            await asyncio.sleep(LAG_INTERVAL)

    async def _release_held(self) -> None:
        for delivery in list(self._held):
            if delivery.state is State.HELD:
                delivery.state = State.NAKED
                await delivery.msg.nak()
                self.counters.released += 1
        self._held.clear()


async def serve(
    consumer: Consumer,
    servers: str | list[str],
    *,
    settings: Settings | None = None,
    on_start: Callable[[Runtime], None] | None = None,
    auth: NatsAuth | None = None,
) -> Runtime:
    """Run until SIGINT or SIGTERM, then shut down gracefully. `on_start` sees
    the runtime before it connects (the metrics endpoint hooks in there)."""
    runtime = Runtime(consumer, servers=servers, settings=settings, auth=auth)
    if on_start is not None:
        on_start(runtime)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, runtime.stop)
    try:
        await runtime.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return runtime
