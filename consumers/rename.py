"""`snoopbus consume rename`: join moved_from/moved_to halves into `renamed`.

Exactly-once output, built from at-least-once parts:

- A half's message is held (not acked) until every half in it is resolved
  and the resulting events are stored; a crash or restart redelivers it.
- Output ids derive from the halves' ids and become the `Nats-Msg-Id`, so
  publishing the same outcome again is dropped by the stream's dedup window.
- Output carries the resolved halves' ids in headers. On start the pairer
  reads those headers back from everything stored after its durable's ack
  floor, so a redelivered half whose partner was already acked (the two sat
  in different messages) is recognised instead of becoming a false
  moved_out/moved_in.

Scale-out: `--partition I/N` runs partition I of N with its own durable;
a host's halves always land in one partition (see Settings.partition), so
no pair is ever split. Every partition reads all rename halves and acks other
partitions' messages unread, judged by the subject's host token alone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Hashable
from contextlib import suppress
from dataclasses import replace
from typing import cast

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from snoopbus.proto import (
    STREAM_NAME,
    encode_batch,
    event_subject,
    events_filter,
    host_token,
    parse_subject,
)
from snoopbus.proto.msgid import ID_HEADER, derived_id
from snoopbus.proto.roles import RECALL_SUFFIX

from .consumer import Consumer, Context
from .delivery import Batch, Delivery
from .pairing import FROM, HALF_TYPES, TO, UNPAIRED, Outcome, PairStats, PairTable
from .settings import Settings

log = logging.getLogger(__name__)

FROM_ID = "Snoopbus-Rename-From"  # header: id of the moved_from half an output resolves
TO_ID = "Snoopbus-Rename-To"  # header: id of the moved_to half an output resolves
OUTPUT_TYPES = ("renamed", *UNPAIRED.values())


class RenamePairer(Consumer):
    name = "rename"
    description = "join moved_from/moved_to halves into one renamed event"
    filters = (events_filter(type=FROM), events_filter(type=TO))
    # One batch at a time (pairing is CPU work); a short ack_wait so that a
    # crashed instance's held halves come back soon (held ones are kept alive).
    settings = Settings(concurrency=1, ack_wait=10.0)

    def __init__(
        self, window: float = 2.0, max_pending: int = 100_000, settings: Settings | None = None,
        publish_timeout: float = 10.0,
    ) -> None:  # fmt: skip
        base = settings or type(self).settings
        # Held messages count against max_ack_pending: room for a full table
        # plus the batches in flight.
        self.settings = replace(
            base, max_ack_pending=max_pending + 4 * base.batch * base.concurrency
        )
        self.table = PairTable(window, max_pending)
        self.publish_timeout = publish_timeout
        self.published = 0  # outputs stored
        self.deduplicated = 0  # outputs the stream had already (redelivery after a crash)
        self._open: dict[Delivery, int] = {}  # delivery -> its halves not yet resolved
        self._js: JetStreamContext | None = None
        self._closing = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._storing: set[asyncio.Task[None]] = set()  # publishes awaiting the server's ack

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--window", type=float, default=2.0, metavar="SECONDS",
            help="how long a half waits for its partner (default: 2)",
        )  # fmt: skip
        parser.add_argument(
            "--max-pending", type=int, default=100_000, metavar="N",
            help="halves kept waiting at most; past it the oldest give up (default: 100000)",
        )  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Consumer:
        return cls(window=args.window, max_pending=args.max_pending, settings=settings)

    @property
    def stats(self) -> PairStats:
        return self.table.stats

    async def setup(self, ctx: Context) -> None:
        self._js = ctx.js
        info = await ctx.js.consumer_info(STREAM_NAME, ctx.durable)
        if info.num_ack_pending:
            # A predecessor died holding halves; the server hands them out again
            # only after ack_wait. Until then a partner arriving now must wait
            # for its redelivered half rather than give up after the window.
            grace = ctx.settings.ack_wait + self.table.window
            self.table.hold_until = time.monotonic() + grace
            log.info(
                "rename: %d messages held by a previous run; halves wait %.1fs for them",
                info.num_ack_pending, grace,
            )  # fmt: skip
        await self._recall_resolved(ctx, info.ack_floor.stream_seq)
        self._ticker = asyncio.create_task(self._expire_loop())

    async def teardown(self) -> None:
        # Stop expiring; what is still pending stays unacked and is released
        # by the runtime, so whoever runs next pairs it.
        self._closing.set()
        if self._ticker is not None:
            await self._ticker
        while self._storing:  # settle what was published before the stop
            await asyncio.gather(*self._storing)

    async def handle(self, batch: Batch) -> None:
        now = time.monotonic()
        outcomes: list[Outcome] = []
        for delivery in batch:
            halves = [e for e in delivery.events if e["type"] in HALF_TYPES]
            if not halves:
                continue  # left open: the runtime acks it
            delivery.hold()
            self._open[delivery] = len(halves)
            for event in halves:
                outcomes.extend(self.table.add(event, delivery, now))
        await self._emit(outcomes)

    async def _expire_loop(self) -> None:
        period = min(0.25, self.table.window / 4)
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), period)
            except TimeoutError:
                await self._emit(self.table.expire(time.monotonic()))

    async def _emit(self, outcomes: list[Outcome]) -> None:
        """Publish each outcome; its halves are settled once the stream has it.

        The wait for the server's acks runs in a task, so the next batch is
        fetched and paired meanwhile; outstanding publishes are bounded by the
        JetStream context's publish_async_max_pending."""
        if not outcomes:
            return
        assert self._js is not None
        sent: list[tuple[Outcome, asyncio.Future]] = []
        for outcome in outcomes:
            if outcome.event is None:  # a duplicate: nothing to publish
                await self._resolve(outcome)
                continue
            event = outcome.event
            try:
                future = await self._js.publish_async(
                    event_subject(event["host"], event["type"]),
                    encode_batch([event]),
                    headers=output_headers(outcome),
                )
            except Exception as exc:
                await self._give_back(outcome, f"publish: {exc}")
                continue
            sent.append((outcome, future))
        if sent:
            task = asyncio.create_task(self._settle_when_stored(sent))
            self._storing.add(task)
            task.add_done_callback(self._storing.discard)

    async def _settle_when_stored(self, sent: list[tuple[Outcome, asyncio.Future]]) -> None:
        await asyncio.wait([f for _, f in sent], timeout=self.publish_timeout)
        for outcome, future in sent:
            if not future.done():
                future.cancel()
                await self._give_back(outcome, "publish: no ack from the server in time")
            elif future.exception() is not None:
                await self._give_back(outcome, f"publish: {future.exception()}")
            else:
                self.published += 1
                if future.result().duplicate:
                    self.deduplicated += 1
                await self._resolve(outcome)

    async def _resolve(self, outcome: Outcome) -> None:
        for half in outcome.halves:
            for token in half.tokens:
                await self._settle_one(token)

    async def _settle_one(self, token: Hashable) -> None:
        delivery = cast(Delivery, token)  # the table's tokens are our deliveries
        left = self._open.get(delivery)
        if left is None:
            return  # released or nak'd already; its redelivery carries on
        if left > 1:
            self._open[delivery] = left - 1
            return
        del self._open[delivery]
        await delivery.ack()

    async def _give_back(self, outcome: Outcome, reason: str) -> None:
        """Publishing failed: forget the outcome and redeliver its halves."""
        log.warning("rename: %s", reason)
        self.table.unresolve(outcome)
        for half in outcome.halves:
            for token in half.tokens:
                delivery = cast(Delivery, token)
                if self._open.pop(delivery, None) is not None:
                    await delivery.nak(reason)

    async def _recall_resolved(self, ctx: Context, floor: int) -> None:
        """Learn which halves our output already resolved after the ack floor."""
        js = ctx.js
        last = (await js.stream_info(STREAM_NAME)).state.last_seq
        if last <= floor:
            return
        # A fixed name: the role's permissions name it (proto/roles.py). One
        # left by a crash (it expires after 30 s idle) is replaced.
        name = f"{ctx.durable}{RECALL_SUFFIX}"
        with suppress(NotFoundError):
            await js.delete_consumer(STREAM_NAME, name)
        await js.add_consumer(
            STREAM_NAME,
            ConsumerConfig(
                name=name,
                filter_subjects=[events_filter(type=t) for t in OUTPUT_TYPES],
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=floor + 1,
                ack_policy=AckPolicy.NONE,
                headers_only=True,  # the ids are in the headers; skip the payloads
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        recalled = 0
        try:
            sub = await js.pull_subscribe_bind(consumer=name, stream=STREAM_NAME)
            pending = 1
            while pending:
                try:
                    msgs = await sub.fetch(1024, timeout=1.0)
                except TimeoutError:
                    break
                for msg in msgs:
                    pending = msg.metadata.num_pending
                    host = parse_subject(msg.subject).host
                    if host is None or not ctx.settings.partition.owns(host):
                        continue
                    for header in (FROM_ID, TO_ID):
                        half_id = (msg.headers or {}).get(header)
                        if half_id:
                            self.table.mark_resolved(host, half_id)
                            recalled += 1
            await sub.unsubscribe()
        finally:
            await js.delete_consumer(STREAM_NAME, name)
        if recalled:
            log.info("rename: recalled %d halves resolved before the last stop", recalled)


def output_headers(outcome: Outcome) -> dict[str, str]:
    event = outcome.event
    assert event is not None
    # The output's subject host (a collector's halves are on their own host's subjects).
    headers = {ID_HEADER: derived_id(host_token(event["host"]), "rename", event["id"])}
    for half in outcome.halves:
        headers[FROM_ID if half.event["type"] == FROM else TO_ID] = half.event["id"]
    return headers


# The entry point: `snoopbus consume rename`.
consumer = RenamePairer
