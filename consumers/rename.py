"""`snoopbus consume rename`: join moved_from/moved_to halves into `renamed`.

When a half gives up is decided by event time and each host's progress, not
by how long it sat here (consumers/pairing.py): a backlog read late gives the
same pairs as the live stream.

Exactly-once output, built from at-least-once parts:

- A half's message is held (not acked) until every half in it is resolved
  and the resulting events are stored; a crash or restart redelivers it.
- Outputs are batched, up to OUTPUT_BATCH per message, one message per host
  and output type for what one handled batch resolved. A message's
  `Nats-Msg-Id` derives from the ids of the outputs in it, which derive from
  the halves' ids; a publish that got no answer is sent again as it was
  (same id, same payload), so a copy that did land is dropped by the
  stream's dedup window.
- Each output message names the halves it resolves in a header. On start
  the pairer reads those headers back from everything stored after its
  durable's ack floor, so a redelivered half that was already resolved (its
  partner acked, or the output stored before a crash) is recognised instead
  of giving a second output or a false moved_out/moved_in.

Scale-out: `--partition I/N` runs partition I of N with its own durable;
a host's halves always land in one partition (see Settings.partition), so
no pair is ever split. Every partition reads all rename halves and acks other
partitions' messages unread, judged by the subject's host token alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, replace
from itertools import chain
from operator import attrgetter
from typing import Any, cast

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from snoopbus.proto import (
    STREAM_NAME,
    SubjectError,
    event_subject,
    events_filter,
    parse_subject,
    stored_filters,
)
from snoopbus.proto.msgid import ID_HEADER, derived_id
from snoopbus.proto.roles import RECALL_SUFFIX
from snoopbus.proto.subjects import subject_host

from .consumer import Consumer, Context
from .delivery import Batch, Delivery
from .gctune import tune_gc
from .pairing import FROM, TO, UNPAIRED, Outcome, PairStats, PairTable, encode_outputs
from .settings import Settings

log = logging.getLogger(__name__)

HALVES_ID = "Snoopbus-Rename-Halves"  # header: the ids of the halves a message resolves
# Headers of a pairer before outputs were batched (one output per message),
# still read back by the recall.
FROM_ID, TO_ID = "Snoopbus-Rename-From", "Snoopbus-Rename-To"
OUTPUT_TYPES = ("renamed", *UNPAIRED.values())
OUTPUT_BATCH = 500  # outputs per message at most
# Longest stretch of a batch's pairing without a look at the event loop (s).
YIELD_AFTER = 0.05
REPUBLISH = 3  # sends of an output message that got no answer before its halves go back
# Room a message takes beyond its payload and the halves header: subject, id, framing.
_ENVELOPE = 1024
_ID, _HALVES, _TOKEN, _MORE, _EVENT = (
    attrgetter(f) for f in ("id", "halves", "token", "more", "event")
)


@dataclass
class _Output:
    """One output message and the outcomes it settles once stored."""

    subject: str
    payload: bytes
    headers: dict[str, str]
    outcomes: list[Outcome]


class RenamePairer(Consumer):
    name = "rename"
    description = "join moved_from/moved_to halves into one renamed event"
    filters = (events_filter(type=FROM), events_filter(type=TO))
    # One batch at a time (pairing is CPU work); a short ack_wait so that a
    # crashed instance's held halves come back soon (held ones are kept alive).
    # Pairs what it just decoded, 32 KiB of payload at a time, while it is still
    # in the CPU's cache (Settings.handle_bytes): 0.81-0.84x the CPU per renamed
    # of whole fetches (tests/bench/rename_pairer.py).
    settings = Settings(concurrency=1, ack_wait=10.0, handle_bytes=32 << 10)

    def __init__(
        self, window: float = 2.0, max_pending: int = 100_000, settings: Settings | None = None,
        publish_timeout: float = 10.0, idle_after: float | None = None, gc_tuning: bool = False,
    ) -> None:  # fmt: skip
        base = settings or type(self).settings
        # Held messages count against max_ack_pending: room for a full table
        # plus the batches in flight.
        self.settings = replace(
            base, max_ack_pending=max_pending + 4 * base.batch * base.concurrency
        )
        self.table = PairTable(window, max_pending, idle_after=idle_after)
        self.publish_timeout = publish_timeout
        self.gc_tuning = gc_tuning  # process-wide (gctune.py): on when run as `consume rename`
        self.published = 0  # outputs stored
        self.deduplicated = 0  # outputs the stream had already (redelivery after a crash)
        self._open: dict[Delivery, int] = {}  # delivery -> its halves not yet resolved
        self._js: JetStreamContext | None = None
        self._nc: Client | None = None
        self._durable = ""
        self._subjects: dict[str, tuple[str, str] | None] = {}  # input -> (host token, type)
        self._outputs: dict[tuple[str, str], str] = {}  # (host token, type) -> its subject
        self._closing = asyncio.Event()
        self._handling = False  # a batch is being added to the table
        self._ticker: asyncio.Task[None] | None = None
        self._storing: set[asyncio.Task[None]] = set()  # publishes awaiting the server's ack

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--window", type=float, default=2.0, metavar="SECONDS",
            help="a half gives up once its host's events are this far past it, "
            "in event time (default: 2)",
        )  # fmt: skip
        parser.add_argument(
            "--idle-after", type=float, default=None, metavar="SECONDS",
            help="a half also gives up after this long with nothing left to read "
            "(a host gone quiet; default: 30, or 4 windows if longer)",
        )  # fmt: skip
        parser.add_argument(
            "--max-pending", type=int, default=100_000, metavar="N",
            help="halves kept waiting at most; past it the oldest give up (default: 100000)",
        )  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Consumer:
        return cls(window=args.window, max_pending=args.max_pending, settings=settings,
                   idle_after=args.idle_after, gc_tuning=True)  # fmt: skip

    @property
    def stats(self) -> PairStats:
        return self.table.stats

    async def setup(self, ctx: Context) -> None:
        if self.gc_tuning:
            tune_gc()  # a fetched batch makes thousands of short-lived objects
        self._js, self._nc, self._durable = ctx.js, ctx.nc, ctx.durable
        info = await ctx.js.consumer_info(STREAM_NAME, ctx.durable)
        if info.num_ack_pending:
            # A predecessor died holding halves; the server hands them out again
            # only after ack_wait. Until then a partner arriving now must wait
            # for its redelivered half, however far the stream moves on.
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
        table = self.table
        outcomes: list[Outcome] = []
        self._handling = True  # the expire loop waits: the batch's partners are not all in yet
        try:
            await self._add(batch, outcomes)
        finally:
            self._handling = False
        now = time.monotonic()
        # Caught up when the server had nothing more for this durable after the last one.
        table.tick(now, batch[-1].msg.metadata.num_pending == 0 if len(batch) else
                   table.caught_up)  # fmt: skip
        outcomes += table.expire(now)
        await self._emit(outcomes)

    async def _add(self, batch: Batch, outcomes: list[Outcome]) -> None:
        table = self.table
        looked = time.monotonic()
        for delivery in batch:
            if time.monotonic() - looked > YIELD_AFTER:
                # A batch of big messages can be seconds on a loaded host: let the
                # runtime keep held and waiting messages alive meanwhile, or the
                # server redelivers them past ack_wait and halves come twice.
                await asyncio.sleep(0)
                looked = time.monotonic()
            parts = self._input(delivery.subject)
            if parts is None:
                continue  # not a half's subject: left open, the runtime acks it
            host = parts[0]
            # The runtime's trust check made every event's host and type its subject's.
            halves = delivery.records if delivery.records is not None else delivery.events
            delivery.hold()
            self._open[delivery] = len(halves)
            table.add_many(outcomes, halves, delivery, host)
            # The table keeps what it needs (a waiting half's record): the
            # rest is freed now, still in the cache, not once the output is stored.
            delivery.release()

    def _input(self, subject: str) -> tuple[str, str] | None:
        """(host token, type) of a rename half's subject, else None."""
        try:
            return self._subjects[subject]
        except KeyError:
            pass
        try:
            parts = parse_subject(subject)
            got = (parts.host, parts.type) if parts.type in UNPAIRED and parts.host else None
        except SubjectError:
            got = None
        if len(self._subjects) < 65_536:
            self._subjects[subject] = got
        return got

    async def _expire_loop(self) -> None:
        """The quiet clock and the holds are wall-clock matters: look every
        quarter second, and ask the server every second whether anything is
        left to read (the last batch cannot tell once other partitions'
        messages, acked unread, were the last ones)."""
        period = min(0.25, self.table.idle_after / 4)
        asked = 0.0
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), period)
            except TimeoutError:
                if self._handling:
                    continue
                now = time.monotonic()
                caught_up = self.table.caught_up
                if len(self.table) and now - asked >= 1.0:
                    asked = now
                    caught_up = await self._caught_up(caught_up)
                self.table.tick(now, caught_up)
                await self._emit(self.table.expire(now))

    async def _caught_up(self, default: bool) -> bool:
        assert self._js is not None
        try:
            info: ConsumerInfo = await self._js.consumer_info(STREAM_NAME, self._durable)
        except Exception as exc:  # the next look asks again
            log.debug("rename: consumer info: %s", exc)
            return default
        return info.num_pending == 0

    async def _emit(self, outcomes: list[Outcome]) -> None:
        """Publish the outcomes, batched per subject; their halves are settled
        once the stream has them. The wait for the server's acks runs in a
        task, so the next batch is fetched and paired meanwhile; outstanding
        publishes are bounded by the JetStream context's publish_async_max_pending."""
        if not outcomes:
            return
        groups: dict[str, list[Outcome]] = {}
        duplicates = []
        last_host = last_type = ""
        group: list[Outcome] = []
        for outcome in outcomes:
            event = outcome.event
            if event is None:  # a duplicate: nothing to publish
                duplicates.append(outcome)
                continue
            # Runs of one host and type: the outcomes of one message's halves.
            host = outcome.halves[0].host
            kind = event.type if type(event) is not dict else event["type"]
            if host != last_host or kind != last_type:
                last_host, last_type = host, kind
                key = (host, kind)
                subject = self._outputs.get(key)
                if subject is None:
                    subject = self._outputs[key] = event_subject(*key)
                group = groups.setdefault(subject, [])
            group.append(outcome)
        await self._resolve(duplicates)
        for subject, group in groups.items():
            for start in range(0, len(group), OUTPUT_BATCH):
                chunk = group[start : start + OUTPUT_BATCH]
                try:
                    outputs = self._outputs_of(subject, chunk)
                except Exception:  # one output cannot be encoded (hostile nesting): each alone
                    outputs = []
                    for outcome in chunk:
                        try:
                            outputs += self._outputs_of(subject, [outcome])
                        except Exception as exc:
                            await self._give_back(outcome, f"encode: {type(exc).__name__}: {exc}")
                for outcome in chunk:  # encoded: freed now, while still in the cache
                    outcome.event = None
                for output in outputs:
                    task = asyncio.create_task(self._store(output))
                    self._storing.add(task)
                    task.add_done_callback(self._storing.discard)

    def _outputs_of(self, subject: str, outcomes: list[Outcome]) -> list[_Output]:
        """Messages of these outcomes, each within the server's max_payload."""
        events = list(map(_EVENT, outcomes))
        payload = encode_outputs(events)
        headers = output_headers(subject, outcomes, events)
        limit = (self._nc.max_payload if self._nc is not None else 0) or 1 << 20
        if len(outcomes) > 1 and len(payload) + len(headers[HALVES_ID]) + _ENVELOPE > limit:
            half = len(outcomes) // 2
            return [*self._outputs_of(subject, outcomes[:half]),
                    *self._outputs_of(subject, outcomes[half:])]  # fmt: skip
        return [_Output(subject, payload, headers, outcomes)]

    async def _store(self, output: _Output) -> None:
        """Publish until stored; an unanswered send goes again as it was (the
        stream drops a copy that landed by its id), a refusal gives the halves back."""
        assert self._js is not None
        reason = ""
        for _ in range(REPUBLISH):
            try:
                future = await self._js.publish_async(
                    output.subject, output.payload, headers=output.headers
                )
                ack = await asyncio.wait_for(future, self.publish_timeout)
            except APIError as exc:  # the server said no: it was not stored
                reason = f"publish: {exc}"
                break
            except Exception as exc:  # no answer, or not sent: send again
                reason = f"publish: {type(exc).__name__}: {exc}" if str(exc) else (
                    "publish: no ack from the server in time")  # fmt: skip
                if self._closing.is_set():
                    break
                continue
            self.published += len(output.outcomes)
            if ack.duplicate:
                self.deduplicated += len(output.outcomes)
            await self._resolve(output.outcomes)
            return
        for outcome in output.outcomes:
            await self._give_back(outcome, reason)

    async def _resolve(self, outcomes: list[Outcome]) -> None:
        """Their halves are settled: ack each delivery whose last half this was."""
        halves = list(chain.from_iterable(map(_HALVES, outcomes)))
        settled = Counter(map(_TOKEN, halves))
        for more in filter(None, map(_MORE, halves)):  # delivered more than once
            settled.update(more)
        open_ = self._open
        done: list[Delivery] = []
        for token, n in settled.items():
            delivery = cast(Delivery, token)  # the table's tokens: deliveries
            left = open_.get(delivery)
            if left is None:
                continue  # released or nak'd already; its redelivery carries on
            if left > n:
                open_[delivery] = left - n
            else:
                del open_[delivery]
                done.append(delivery)
        for delivery in done:
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
        created = await js.add_consumer(
            STREAM_NAME,
            ConsumerConfig(
                name=name,
                filter_subjects=[f for t in OUTPUT_TYPES for f in stored_filters(
                    events_filter(type=t), ctx.settings.partition.buckets)],
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
            pending = created.num_pending  # none: no fetch to wait out
            while pending:
                try:
                    msgs = await sub.fetch(1024, timeout=1.0)
                except TimeoutError:
                    break
                for msg in msgs:
                    pending = msg.metadata.num_pending
                    parts = parse_subject(msg.subject)
                    host = parts.host
                    if host is None or not ctx.settings.partition.owns(host, parts.stored):
                        continue
                    headers = msg.headers or {}
                    ids = headers.get(HALVES_ID, "").split()
                    ids += [i for i in (headers.get(FROM_ID), headers.get(TO_ID)) if i]
                    for half_id in ids:
                        self.table.mark_resolved(host, half_id)
                    recalled += len(ids)
            await sub.unsubscribe()
        finally:
            await js.delete_consumer(STREAM_NAME, name)
        if recalled:
            log.info("rename: recalled %d halves resolved before the last stop", recalled)


def output_headers(
    subject: str, outcomes: list[Outcome], events: list[Any] | None = None
) -> dict[str, str]:
    """The message's id, from its outputs' ids (one output: `<host>.rename:<its id>`,
    as before batching), and the ids of the halves it resolves (ids hold no spaces).
    `events`: the outcomes' events, when the caller has them listed already."""
    host = subject_host(subject)  # the output's subject host
    if events is None:
        events = list(map(_EVENT, outcomes))
    ids = ([e["id"] if type(e) is dict else e.id for e in events] if dict in set(map(type, events))
           else list(map(_ID, events)))  # fmt: skip
    if len(ids) == 1:
        key = ids[0]
    else:
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:40]
        key = f"batch:{len(ids)}:{digest}"
    halves = " ".join(map(_ID, chain.from_iterable(map(_HALVES, outcomes))))
    return {ID_HEADER: derived_id(host, "rename", key), HALVES_ID: halves}
