"""The consumer runtime: one connection, one durable pull consumer, bounded work.

Loop: fetch a batch (bounded by count and bytes: fetch.py) -> decode each
message (undecodable ones go to the dead-letter subject at once, and so do
ones whose id, events or alert disagree with their subject: trust.py) -> hand the
rest to the consumer's handler in an asyncio-pool slot -> ack on success, nak
with back-off on failure, and dead-letter once a message has had
`max_attempts` deliveries.

The server-side `max_deliver` is one more than `max_attempts`: if a process
dies during a message's last attempt the server still delivers it once more,
and the runtime then dead-letters it unopened instead of it vanishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import nats.errors
from asyncio_pool import AioPool
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

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
    published_subject,
    stored_filters,
)
from snoopbus.proto.backoff import backoff_delay
from snoopbus.proto.msgid import ID_HEADER
from snoopbus.proto.stream_limits import MISSED_KEY, MissedCounter, StreamLimits, missed_of

from . import dlq, trust
from .consumer import Consumer, Context
from .delivery import Batch, Columns, Delivery, Span, State, is_alert_subject
from .fetch import Puller
from .settings import Settings

log = logging.getLogger(__name__)

LAG_INTERVAL = 5.0  # s between consumer_info calls for the lag figures
# Binding the durable: answers that may come right on a later try.
BIND_TRANSIENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                  ServiceUnavailableError)  # fmt: skip
BIND_ATTEMPTS = 9  # 0.5 s doubling to 10 s, jittered: 23-46 s of waits in all


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
    tick_failures: int = 0  # the consumer's tick() raised
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)  # by kind
    # From the server's consumer_info, refreshed every LAG_INTERVAL s (None until then).
    pending: int | None = None  # in the stream, not yet delivered to this durable: the lag
    ack_pending: int | None = None
    # Messages the stream removed (retention: age, bytes) before this durable got them;
    # exact when its filters take every message, else an upper bound (stream_limits.py).
    missed: int = 0


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
        stream_limits: StreamLimits | None = None,
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
        self._stream_limits = stream_limits  # None: the defaults (proto/stream_limits.py)
        self._nc = nc
        self._js: JetStreamContext | None = None
        self._stop = asyncio.Event()
        # Every delivery handed on and not yet settled (waiting for a handler's
        # slot, being handled, or held) -> when the server last heard of it: its
        # delivery, or the last in-progress ack (_keep_alive).
        self._unsettled: dict[Delivery, float] = {}
        # Fetched messages not admitted yet (a fetch's later parts, handle_bytes),
        # by id(msg) -> (msg, when the server last heard of it): kept alive too.
        self._waiting: dict[int, tuple[Msg, float]] = {}
        self.puller: Puller | None = None  # once running: its `largest` batch in bytes
        self._missed = MissedCounter()
        self._last_seq = 0  # highest stream sequence first delivered to this durable
        self._counting: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Stop fetching; in-flight batches finish, held messages are released."""
        self._stop.set()

    @property
    def held(self) -> int:
        return sum(1 for d in self._unsettled if d.state is State.HELD)

    async def run(self) -> None:
        own = self._nc is None
        nc = self._nc or await connect(
            self._servers or [], name=f"snoopbus-{self.durable}", auth=self._auth
        )
        try:
            js = self._js = nc.jetstream()
            await self._bind(js)
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
            ticks = asyncio.create_task(self._tick()) if self.consumer.tick_every > 0 else None
            try:
                await self._fetch_loop(puller, pool)
            finally:
                if ticks is not None:  # no tick after the stop: teardown comes next
                    ticks.cancel()
                    await asyncio.wait({ticks})
                await pool.join()  # finish in-flight batches
                keep_alive.cancel()
                lag.cancel()
                await self.consumer.teardown()
                await self._release_held()
                if self._counting is not None:
                    await asyncio.wait({self._counting}, timeout=2)
                await puller.stop()
        finally:
            if own and not nc.is_closed:
                await nc.drain()

    async def _bind(self, js: JetStreamContext) -> None:
        """The stream and this consumer's durable, made or found. A server still
        starting JetStream, or a cluster electing a leader or starved of CPU,
        answers late or with 503: tried again with back-off, BIND_ATTEMPTS times
        in all (23-46 s of waits), before the error ends the run."""
        for failures in range(1, BIND_ATTEMPTS + 1):
            try:
                await self._bind_once(js)
                return
            except BIND_TRANSIENT as exc:
                if failures == BIND_ATTEMPTS or self._stop.is_set():
                    raise
                delay = backoff_delay(failures, 0.5, 10.0, jitter=True)
                log.warning("%s: binding the durable failed (%s); trying again in %.1fs",
                            self.durable, exc or type(exc).__name__, delay)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)

    async def _bind_once(self, js: JetStreamContext) -> None:
        await ensure_stream(js, limits=self._stream_limits)
        prior = await self._prior(js)
        if prior is not None:
            self.counters.missed = self._missed.missed = missed_of(prior.config.metadata)
        config = self._consumer_config()  # after `missed`: it is kept in the metadata
        if prior is not None:
            config = self._keep_start(prior.config, config)
        info = await js.add_consumer(STREAM_NAME, config)
        delivered = info.delivered  # None if the server left it out
        self._last_seq = (delivered.stream_seq or 0) if delivered is not None else 0
        if prior is None:  # a new durable missed nothing that came before it
            first = (await js.stream_info(STREAM_NAME)).state.first_seq
            self._last_seq = max(self._last_seq, first - 1)

    def _consumer_config(self) -> ConsumerConfig:
        s = self.settings
        # The server sends this partition only its hosts' buckets (and what the
        # stream stored before it partitioned, which _admit sorts out).
        filters = [f for pub in self.consumer.filters
                   for f in stored_filters(pub, s.partition.buckets)]  # fmt: skip
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
            # Kept with the durable, so `up` and `doctor --nats` read it, and a restart goes on.
            metadata={MISSED_KEY: str(self._missed.missed)} if self._missed.missed else None,
        )

    async def _prior(self, js: JetStreamContext) -> ConsumerInfo | None:
        try:
            info: ConsumerInfo = await js.consumer_info(STREAM_NAME, self.durable)  # nats-py: Any
            return info
        except NotFoundError:
            return None

    def _keep_start(self, was: ConsumerConfig, config: ConsumerConfig) -> ConsumerConfig:
        """A durable that exists keeps where it started (the server refuses to move
        it, and `--start 2h` means another time at each restart): --start is for a
        new durable."""
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
            await self._hand_on(msgs, pool)

    async def _hand_on(self, msgs: list[Msg], pool: AioPool) -> None:
        """A fetch's messages to the handlers, a part (handle_bytes) at a time,
        each admitted (decoded) just before it is handled; the later parts' messages
        are kept alive while they wait."""
        parts = list(_parts(msgs, self.settings.handle_bytes))
        fetched = time.monotonic()
        for msg in msgs[len(parts[0]) :]:
            self._waiting[id(msg)] = (msg, fetched)
        try:
            for part in parts:
                for msg in part:
                    self._waiting.pop(id(msg), None)
                deliveries = await self._admit(part)
                now = time.monotonic()
                for delivery in deliveries:
                    self._unsettled[delivery] = now
                if deliveries:
                    await pool.spawn(self._handle(Batch(deliveries)))
        finally:
            for msg in msgs:  # a part not reached (the loop failed): no longer ours to keep
                self._waiting.pop(id(msg), None)

    async def _admit(self, msgs: list[Msg]) -> list[Delivery]:
        """Decode what this instance should handle; dead-letter what cannot be."""
        s = self.settings
        out: list[Delivery] = []
        columns, spans = self._batch_decode(msgs)
        for i, msg in enumerate(msgs):
            self.counters.fetched += 1
            if s.partition.count > 1 and not self._owns(msg.subject):
                await msg.ack()
                self.counters.skipped += 1
                continue
            attempts = msg.metadata.num_delivered
            if attempts == 1:
                self._note_seq(msg.metadata.sequence.stream)
            if attempts > s.max_attempts:
                await self._dead_letter(
                    msg, "attempts",
                    f"attempts: delivered {attempts} times, limit {s.max_attempts} "
                    "(an earlier attempt never finished)",
                )  # fmt: skip
                continue
            parts = trust.check_subject(msg.subject, msg.headers)
            if isinstance(parts, str):
                await self._dead_letter(msg, trust.KIND, parts)
                continue
            span = spans.get(i)
            if span is not None and trust.events_mismatch(parts, [span], False) is None:
                out.append(Delivery(msg, None, self, span=span, columns=columns))
                continue  # else the reference path, for its exact reason
            try:
                delivery = self._decode(msg)
                why = (trust.alert_mismatch(parts, delivery.events[0])
                       if parts.kind == "alerts" else
                       trust.events_mismatch(parts, delivery.records, False)
                       if delivery.records is not None else
                       trust.events_mismatch(parts, delivery.events, True))
                if why is not None:
                    await self._dead_letter(msg, trust.KIND, why)
                    continue
                out.append(delivery)
            except DecodeError as exc:  # a SchemaError too: test it first
                await self._dead_letter(msg, "decode", str(exc))
            except SchemaError as exc:
                await self._dead_letter(msg, "schema", str(exc))
        if self._missed.pending and (self._counting is None or self._counting.done()):
            self._counting = asyncio.create_task(self._count_missed())
        return out

    def _note_seq(self, seq: int) -> None:
        """A jump over stream sequences: filtered out, or removed by retention unread."""
        if seq > self._last_seq + 1:
            self._missed.skip(self._last_seq + 1, seq - 1)
        self._last_seq = max(self._last_seq, seq)

    async def _count_missed(self) -> None:
        assert self._js is not None
        try:
            first = (await self._js.stream_info(STREAM_NAME)).state.first_seq
        except Exception as exc:  # counted at the next jump
            log.debug("%s: stream_info: %s", self.durable, exc)
            return
        added = self._missed.count(first)
        if added:
            self.counters.missed = self._missed.missed
            try:
                await self._js.add_consumer(STREAM_NAME, self._consumer_config())
            except Exception as exc:  # the log and metrics still say it
                log.debug("%s: could not record missed in the durable: %s", self.durable, exc)
            log.warning("%s: %d messages were removed from the stream (retention limits) before "
                        "this consumer read them; %d in all", self.durable, added,
                        self._missed.missed)  # fmt: skip

    def _batch_decode(self, msgs: list[Msg]) -> tuple[Columns | None, dict[int, Span]]:
        """The consumer's own decoding of the batch's event payloads, if it has
        one: its columns, and the span of each message it took, by index. The
        payloads go in subject order, so one host's rows are adjacent."""
        decoder = self.consumer.batch_decoder
        if decoder is None:
            return None, {}
        owned = self.settings.partition.count == 1
        picked = [i for i, msg in enumerate(msgs) if not is_alert_subject(msg.subject)
                  and (owned or self._owns(msg.subject))]  # fmt: skip
        if not picked:
            return None, {}
        picked.sort(key=lambda i: msgs[i].subject)
        columns = decoder.decode([msgs[i].data for i in picked])
        return columns, {i: span for i, span in zip(picked, columns.spans, strict=True)
                         if span is not None}  # fmt: skip

    def _decode(self, msg: Msg) -> Delivery:
        """An event batch (as records when they are valid as sent: maps only
        when read); on an alert subject, the one alert map as a list."""
        if is_alert_subject(msg.subject):
            # events holds the one alert map on an alert subject: an alert is no Event.
            return Delivery(msg, [decode_map(msg.data)], self)  # type: ignore[list-item]  # alert
        records = decode_records(msg.data)
        if records is not None:
            return Delivery(msg, None, self, records)
        return Delivery(msg, decode_batch(msg.data, fast=False), self)

    def _owns(self, subject: str) -> bool:
        try:
            parts = parse_subject(subject)
        except SubjectError:
            return self.settings.partition.index == 0  # dead-lettered by one instance
        if parts.host is None:  # so that exactly one instance sees them
            return self.settings.partition.index == 0
        return self.settings.partition.owns(parts.host, parts.stored)

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
        self._unsettled.pop(delivery, None)
        await delivery.msg.ack()
        self.counters.processed += 1

    async def nak(self, delivery: Delivery, reason: str, delay: float | None) -> None:
        self._unsettled.pop(delivery, None)
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
        self._unsettled.setdefault(delivery, time.monotonic())

    async def dead_letter(self, delivery: Delivery, kind: str, reason: str) -> None:
        if delivery.settled:
            return
        if delivery.released:  # no payload left to file: the server redelivers it whole
            log.error("%s: seq %d released by its handler, nak'd instead of dead-lettered: %s",
                      self.durable, delivery.stream_seq, reason)  # fmt: skip
            await self.nak(delivery, reason, None)
            return
        self._unsettled.pop(delivery, None)
        delivery.state = State.DEAD
        self.counters.failed += 1
        await self._dead_letter(delivery.msg, kind, reason)

    # -----------------------------------------------------------------------

    async def _dead_letter(self, msg: Msg, kind: str, reason: str) -> None:
        assert self._js is not None
        meta = msg.metadata
        letter = dlq.DeadLetter(
            consumer=self.name, kind=kind, reason=reason, subject=published_subject(msg.subject),
            payload=msg.data, stream_seq=meta.sequence.stream, attempts=meta.num_delivered,
            original_id=(msg.headers or {}).get(ID_HEADER, ""),
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

    async def _tick(self) -> None:
        """The consumer's periodic hook; one that fails does not stop the next."""
        while True:
            await asyncio.sleep(self.consumer.tick_every)
            try:
                await self.consumer.tick()
            except Exception:
                self.counters.tick_failures += 1
                log.exception("%s: tick failed", self.durable)

    async def _keep_alive(self) -> None:
        """Unsettled messages would be redelivered after ack_wait, and then
        handled twice: tell the server they are still being worked on. Held
        ones, and as much those fetched but still waiting for a handler's slot
        (a slow batch before them), admitted or not yet (a fetch's later parts).
        Each hears from us by half its ack_wait."""
        period = self.settings.ack_wait / 3
        while True:
            await asyncio.sleep(period / 2)
            now = time.monotonic()
            for delivery, since in list(self._unsettled.items()):
                if now - since >= period and not delivery.settled:
                    await delivery.msg.in_progress()
                    self._unsettled[delivery] = now
            for key, (msg, since) in list(self._waiting.items()):
                if now - since >= period:
                    await msg.in_progress()
                    if key in self._waiting:  # not admitted meanwhile
                        self._waiting[key] = (msg, now)

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
        for delivery in list(self._unsettled):
            if delivery.state is State.HELD:
                delivery.state = State.NAKED
                await delivery.msg.nak()
                self.counters.released += 1
        self._unsettled.clear()


def _parts(msgs: list[Msg], limit: int | None) -> Iterator[list[Msg]]:
    """A fetch's messages in runs of at most `limit` payload bytes (at least one
    message each), in order; the whole fetch when there is no limit."""
    if limit is None:
        yield msgs
        return
    start, size = 0, 0
    for i, msg in enumerate(msgs):
        size += len(msg.data)
        if size >= limit:
            yield msgs[start : i + 1]
            start, size = i + 1, 0
    if start < len(msgs):
        yield msgs[start:]


async def serve(
    consumer: Consumer,
    servers: str | list[str],
    *,
    settings: Settings | None = None,
    on_start: Callable[[Runtime], None] | None = None,
    auth: NatsAuth | None = None,
    stream_limits: StreamLimits | None = None,
) -> Runtime:
    """Run until SIGINT or SIGTERM, then shut down gracefully; SIGHUP calls
    `consumer.reload()`. `on_start` sees the runtime before it connects (the
    metrics endpoint hooks in there)."""
    runtime = Runtime(consumer, servers=servers, settings=settings, auth=auth,
                      stream_limits=stream_limits)
    if on_start is not None:
        on_start(runtime)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, runtime.stop)
    before = signal.getsignal(signal.SIGHUP)
    loop.add_signal_handler(signal.SIGHUP, consumer.reload)
    if _early_hup[0]:  # while the consumer was being built (hold_sighup)
        _early_hup[0] = False
        loop.call_soon(consumer.reload)
    try:
        await runtime.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, before)
    return runtime


_early_hup = [False]  # process-wide, as signals are


def hold_sighup() -> None:
    """Until serve() takes it, a SIGHUP (`systemctl reload` while the consumer
    starts) is remembered and handed to Consumer.reload then; its default
    action would end the process."""

    def note(signum: int, frame: object) -> None:
        _early_hup[0] = True

    signal.signal(signal.SIGHUP, note)
