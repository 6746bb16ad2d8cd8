"""One sink's consumer: filter, batch, send with retries, then settle each message.

Settling, per NATS message (a message may carry many events):

- every item taken by the sink            -> ack
- some item refused for good              -> dead-letter, reason = the sink's answer
- some item not taken after `retries`     -> nak with a delay (JetStream keeps it)

While a batch is in the sink's hands its messages are held, so the runtime
keeps them alive past ack_wait. Memory: the runtime has at most
`concurrency` fetched batches in flight; of each, the worker renders one
request at a time, cut at the sink's `batch` items or `batch_bytes` bytes.
A sink that stays down sends everything back to JetStream with growing delays.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from snoopbus.proto.subjects import subject_leaf

from ..consumer import Consumer, Context
from ..delivery import Batch
from ..pairing import HALF_TYPES
from ..settings import Settings
from .alerts import AlertError, parse_alert
from .backoff import Gate
from .runtime import ForwardRuntime
from .sink import RENDER_ERRORS, Item, Permanent, Rendered, Sink, Transient, cannot_render

log = logging.getLogger(__name__)


def _types_named(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]

# Transient failures never dead-letter: the limit only stops a message that
# somehow fails forever from circulating for ever.
# A fetch is bounded by 1 MiB on the wire as well as 256 messages: decoded into
# maps, a full-sized batch of 100-event messages took ~60 MB, and four in
# flight put the forwarder past 300 MB RSS through a backlog (337 MB measured,
# tests.bench.forward --nats-events); sinks cut their own requests by bytes.
SINK_SETTINGS = Settings(batch=256, concurrency=4, max_attempts=100_000, ack_wait=30.0,
                         fetch_bytes=1 << 20)  # fmt: skip


@dataclass
class SinkStats:
    sent: int = 0  # items the sink took
    rejected: int = 0  # items the sink refused for good
    requests: int = 0  # calls to Sink.send
    failures: int = 0  # transient failures (each one backed off)
    acked: int = 0
    naked: int = 0
    dead_lettered: int = 0
    dropped: int = 0  # accepted, then dropped by the receiver unnamed (OTLP partial success)


class SinkWorker(Consumer):
    def __init__(self, sink: Sink, settings: Settings | None = None) -> None:
        spec = sink.spec
        self.sink = sink
        self.name = spec.consumer_name
        self.description = f"forward to {spec.scheme} ({spec.name})"
        self.types = spec.types
        self.filters = tuple(spec.subject_filters())
        base = settings or SINK_SETTINGS
        self.settings = replace(
            base, concurrency=spec.concurrency, deliver_new=spec.start_new or base.deliver_new
        )
        self.gate = Gate(spec.backoff)
        self.stats = SinkStats()
        self.runtime: ForwardRuntime | None = None
        self.closing = asyncio.Event()  # set by the runtime's stop()

    def choose_halves(self, pairer: str | None) -> None:
        """Rename halves (moved_from/moved_to) or not: a SIEM rule on file
        deletions would fire on every rename's moved_from. While a rename
        pairer's durable exists (`pairer`), it sends one `renamed` (or
        moved_in/moved_out) for every half, so the halves are left out unless
        `halves=1` or `include=` names them."""
        spec = self.sink.spec
        halves = set(HALF_TYPES) & spec.types
        named = set(_types_named(spec.options.get("include", "")))
        keep = spec.halves == "1" or (spec.halves == "auto" and (pairer is None or halves <= named))
        if keep or not halves or not (spec.types - halves or spec.alerts):
            return
        self.types = spec.types - halves
        self.filters = tuple(replace(spec, types=self.types).subject_filters())
        why = f"the rename pairer's durable {pairer} exists" if pairer else "halves=0"
        log.info("%s: %s: forwarding renamed, not moved_from/moved_to (halves=1 sends them too)",
                 self.name, why)  # fmt: skip

    async def setup(self, ctx: Context) -> None:
        await self.sink.open()

    async def teardown(self) -> None:
        await self.sink.close()

    async def handle(self, batch: Batch) -> None:
        items, refused = self._items(batch)
        retry: dict[int, str] = {}  # slot -> last answer: nak
        sink, scheme = self.sink, self.sink.spec.scheme
        count, limit = sink.batch_size, sink.batch_bytes
        chunk: list[Rendered] = []
        size = 0
        # Rendered lazily, a chunk at a time: memory is bounded by batch_bytes.
        for item in items:
            try:
                data = sink.render(item)
            except RENDER_ERRORS as exc:
                refused.setdefault(item.slot, f"{scheme}: {cannot_render(item, exc)}")
                self.stats.rejected += 1
                continue
            if chunk and (len(chunk) >= count or size + len(data) > limit):
                await self._flush(chunk, refused, retry)
                chunk, size = [], 0
            chunk.append((item, data))
            size += len(data)
        if chunk:
            await self._flush(chunk, refused, retry)
        await self._settle(batch, refused, retry)

    def _items(self, batch: Batch) -> tuple[list[Item], dict[int, str]]:
        """What this sink forwards from the batch; alerts it cannot read, by slot."""
        types = self.types
        items: list[Item] = []
        refused: dict[int, str] = {}  # slot -> answer: dead-letter
        for slot, delivery in enumerate(batch):
            delivery.hold()
            if delivery.is_alert:
                level = subject_leaf(delivery.subject)
                try:
                    alert = parse_alert(delivery.events[0], level)
                except AlertError as exc:
                    refused[slot] = str(exc)
                    continue
                items.append(Item("alert", alert, slot, delivery.subject))
                continue
            subject = delivery.subject
            items += [Item("event", e, slot, subject) for e in delivery.events
                      if e.get("type") in types]  # fmt: skip
        return items, refused

    async def _flush(
        self, chunk: list[Rendered], refused: dict[int, str], retry: dict[int, str]
    ) -> None:
        if self.closing.is_set() or (retry and self.gate.down):
            # The sink failed this round already: don't queue more tries behind it.
            for item, _ in chunk:
                retry.setdefault(item.slot, "sink down")
            return
        await self._send(chunk, refused, retry)

    async def _send(
        self, chunk: list[Rendered], refused: dict[int, str], retry: dict[int, str]
    ) -> None:
        spec = self.sink.spec
        pending = chunk
        last = "stopping"
        for attempt in range(1, spec.retries + 1):
            if not await self.gate.wait(self.closing):
                break  # stopping: hand the messages back now
            self.stats.requests += 1
            try:
                sent = await self.sink.send(pending)
            except Transient as exc:
                self.stats.failures += 1
                delay = self.gate.failed(exc.retry_after)
                n = self.gate.failures  # a long outage logs at failures 1, 2, 4, 8 ...
                log.log(
                    logging.WARNING if n & (n - 1) == 0 else logging.DEBUG,
                    "%s: %s (try %d of %d; next in %.2fs)",
                    self.name, exc.answer, attempt, spec.retries, delay,
                )  # fmt: skip
                last = exc.answer
                continue
            except Permanent as exc:
                self.gate.succeeded()  # it answered: it is up
                for item, _ in pending:
                    refused.setdefault(item.slot, f"{spec.scheme}: {exc.answer}")
                self.stats.rejected += len(pending)
                return
            self.gate.succeeded()
            for index, answer in sent.rejected.items():
                refused.setdefault(pending[index][0].slot, f"{spec.scheme}: {answer}")
            self.stats.rejected += len(sent.rejected)
            self.stats.sent += len(pending) - len(sent.rejected) - len(sent.retry)
            if sent.dropped:
                self.stats.dropped += sent.dropped
                log.warning("%s: the receiver dropped %d of %d items: %s",
                            self.name, sent.dropped, len(pending), sent.dropped_why)  # fmt: skip
            if not sent.retry:
                return
            last = "; ".join(sorted(set(sent.retry.values())))[:500]
            pending = [pending[i] for i in sorted(sent.retry)]
            self.stats.failures += 1
            self.gate.failed()
        for item, _ in pending:
            retry.setdefault(item.slot, last)

    async def _settle(self, batch: Batch, refused: dict[int, str], retry: dict[int, str]) -> None:
        assert self.runtime is not None, "a SinkWorker runs inside a ForwardRuntime"
        for slot, delivery in enumerate(batch):
            if slot in refused:
                self.stats.dead_lettered += 1
                await delivery.dead_letter(refused[slot])
            elif slot in retry:
                self.stats.naked += 1
                # Later redeliveries wait longer, up to the cap; the gate also
                # keeps this sink's other batches from trying sooner.
                delay = self.sink.spec.backoff.delay(max(self.gate.failures, delivery.attempt))
                if self.closing.is_set():
                    delay = 0  # whoever runs next may have a working sink
                await delivery.nak(f"{self.sink.spec.scheme}: {retry[slot]}", delay=delay)
            else:
                self.stats.acked += 1
                await delivery.ack()
