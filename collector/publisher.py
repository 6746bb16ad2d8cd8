"""Publishes events to JetStream in per-subject batches, without blocking the reader.

The ring-buffer reader hands batches to submit() (both run on the event
loop); submit only appends to per-subject buffers. Every `flush_interval` the buffers become
messages of up to `max_batch` events, each with a Nats-Msg-Id derived from its
first event id, and a sender publishes them with up to `max_inflight` acks
outstanding. A failed publish is retried with the same id, so JetStream's dedup
window drops a copy that did land.

When NATS is away or slow, events wait in memory up to `max_buffered`; past
that, new messages go to the spill on disk (collector/spill.py) up to
`spill_max_bytes`, and from then on every new message goes there too until it
has drained, so the stream gets events in the order they were read. Messages
are built once and never re-split: a replayed message keeps its id. What
finds both bounds full is dropped and counted (`publish_backlog`). At stop,
what NATS did not acknowledge within the grace period is spilled for the next
start (or counted as `publish_failed` without a spill).

A publisher may start before NATS is reachable (js=None): it buffers and
spills as in an outage and sends once attach() gives it a stream. Meta
reports (status, loss, heartbeat) take the same road, so a report made
during an outage arrives after it, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext

from snoopbus.collector.loss import (
    PUBLISH_BACKLOG,
    PUBLISH_FAILED,
    SPILL_IO_ERROR,
    SPILL_TORN,
    LossCounters,
)
from snoopbus.collector.spill import Spill, Spilled
from snoopbus.proto import Event, encode_batch

log = logging.getLogger(__name__)

DEFAULT_SPILL_DIR = Path("/var/lib/snoopbus/spill")


@dataclass(frozen=True)
class PublisherConfig:
    max_batch: int = 256  # events per NATS message
    flush_interval: float = 0.02  # s: latency bound for a partial batch
    max_inflight: int = 64  # messages awaiting a JetStream ack
    max_buffered: int = 200_000  # events held in memory before the spill (or loss)
    ack_timeout: float = 5.0
    spill_dir: Path | None = None  # None: no spill, memory only
    spill_max_bytes: int = 1 << 30


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    msg_id: str
    count: int
    payload: bytes
    spilled: Spilled | None = None  # read back from the spill: ack it there


class Publisher:
    def __init__(
        self, js: JetStreamContext | None, loss: LossCounters, config: PublisherConfig
    ) -> None:
        self._js: JetStreamContext = js  # type: ignore[assignment]  # None until attach()
        self._online = asyncio.Event()
        if js is not None:
            self._online.set()
        self._loss = loss
        self._cfg = config
        self._buffers: dict[str, list[Event]] = defaultdict(list)  # bound for memory
        self._overflow: dict[str, list[Event]] = defaultdict(list)  # bound for the spill
        self._overflow_n = 0
        self._queue: deque[Message] = deque()
        self._buffered = 0  # events in memory: buffers, queue and in flight
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_inflight)
        self._healthy = asyncio.Event()  # cleared while failed publishes are retried
        self._healthy.set()
        self._retry_lock = asyncio.Lock()
        self._failing = 0
        self._progress = asyncio.Event()  # set whenever a message is acknowledged
        self._inflight: dict[asyncio.Task[None], Message] = {}
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self.published_events = 0
        self.published_messages = 0
        self.spilled_total = 0  # events ever written to the spill
        self.spill: Spill | None = None
        if config.spill_dir is not None:
            self.spill = Spill(config.spill_dir, config.spill_max_bytes)
            self._loss.add(SPILL_TORN, self.spill.torn_events)

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def spilled(self) -> int:
        """Events waiting on disk (or about to be written there)."""
        return (self.spill.events if self.spill is not None else 0) + self._overflow_n

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def attach(self, js: JetStreamContext) -> None:
        """NATS became reachable and the stream exists: start sending."""
        self._js = js
        self._online.set()

    def _spilling(self) -> bool:
        return self.spill is not None and bool(self._overflow_n or self.spill.has_next())

    def submit_meta(self, subject: str, msg_id: str, payload: bytes) -> None:
        """One report (no events in it), behind what is already queued or spilled."""
        msg = Message(subject, msg_id, 0, payload)
        if self._spilling():
            self._flush()  # the overflow before it, so the spill keeps the order
            self._to_spill([msg])
        elif self.spill is None and self._buffered >= self._cfg.max_buffered:
            # memory full, no spill: events are being counted lost; counters are cumulative
            log.debug("no room for the %s report", subject)
            return
        else:
            self._queue.append(msg)
        self._ready.set()

    def submit(self, batch: list[tuple[str, Event]]) -> None:
        spilling = self._spilling()
        room = 0 if spilling else max(self._cfg.max_buffered - self._buffered, 0)
        for subject, event in batch[:room]:
            self._buffers[subject].append(event)
        kept = min(room, len(batch))
        self._buffered += kept
        rest = len(batch) - kept
        if rest and self.spill is None:
            self._loss.add(PUBLISH_BACKLOG, rest)
        elif rest:
            for subject, event in batch[kept:]:
                self._overflow[subject].append(event)
            self._overflow_n += rest
        if any(len(b) >= self._cfg.max_batch for b in self._buffers.values()):
            self._wake.set()

    async def run(self) -> None:
        """Flushes until close(); call as a task."""
        self._start_sender()
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._cfg.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            self._flush()

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())

    def _chunks(self, buffers: dict[str, list[Event]]) -> list[Message]:
        out = []
        for subject, events in buffers.items():
            for i in range(0, len(events), self._cfg.max_batch):
                chunk = events[i : i + self._cfg.max_batch]
                msg_id = f"{chunk[0]['id']}+{len(chunk)}"
                out.append(Message(subject, msg_id, len(chunk), encode_batch(chunk)))
        return out

    def _flush(self) -> None:
        """Buffers -> messages in the memory queue; overflow -> messages in the spill."""
        buffers, self._buffers = self._buffers, defaultdict(list)
        self._queue.extend(self._chunks(buffers))
        if self._overflow_n:
            overflow, self._overflow = self._overflow, defaultdict(list)
            self._overflow_n = 0
            self._to_spill(self._chunks(overflow))
        if self._queue or (self.spill is not None and self.spill.has_next()):
            self._ready.set()

    def _to_spill(self, messages: list[Message]) -> None:
        assert self.spill is not None
        for m in messages:
            try:
                if self.spill.append(m.subject, m.msg_id, m.count, m.payload):
                    self.spilled_total += m.count
                else:
                    self._loss.add(PUBLISH_BACKLOG, m.count)
            except OSError as exc:
                log.warning("could not write to the spill %s: %s", self.spill.dir, exc)
                self._loss.add(SPILL_IO_ERROR, m.count)

    def _next(self) -> Message | None:
        """The memory queue first: while the spill holds anything, nothing newer
        than it enters the queue, so this is the order events were read in."""
        if self._queue:
            return self._queue.popleft()
        if self.spill is not None:
            s = self.spill.next()
            if s is not None:
                return Message(s.subject, s.msg_id, s.count, s.payload, spilled=s)
        return None

    async def _send(self) -> None:
        while True:
            await self._slots.acquire()  # backpressure: bounded acks in flight
            await self._online.wait()
            await self._healthy.wait()
            msg = self._next()
            while msg is None:
                self._ready.clear()
                await self._ready.wait()
                msg = self._next()
            task = asyncio.create_task(self._publish(msg))
            self._inflight[task] = msg

    async def _publish(self, msg: Message) -> None:
        try:
            try:
                await self._js.publish(msg.subject, msg.payload, timeout=self._cfg.ack_timeout,
                                       headers={"Nats-Msg-Id": msg.msg_id})
            except Exception as exc:  # timeouts, no responders, disconnected
                log.warning("publish to %s failed (%s); retrying in order", msg.subject, exc)
                await self._retry(msg)
        finally:
            self._slots.release()
        # Acknowledged: only now does the message count as delivered.
        self._inflight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        self.published_events += msg.count
        self.published_messages += 1
        self._progress.set()
        if msg.spilled is not None:
            assert self.spill is not None
            self.spill.ack(msg.spilled)
        else:
            self._buffered -= msg.count

    async def _retry(self, msg: Message) -> None:
        """Retries one at a time, in the order they failed (which is the order they
        were sent: all wait the same ack timeout), and holds back new sends
        meanwhile, so an outage does not reorder the stream."""
        self._healthy.clear()
        self._failing += 1
        try:
            async with self._retry_lock:  # asyncio locks are FIFO
                delay = 0.05
                while True:
                    try:
                        await self._js.publish(
                            msg.subject, msg.payload, timeout=self._cfg.ack_timeout,
                            headers={"Nats-Msg-Id": msg.msg_id},
                        )
                        return
                    except Exception as exc:
                        log.debug("retry of %s failed (%s)", msg.msg_id, exc)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 1.0)
        finally:
            self._failing -= 1
            if not self._failing:
                self._healthy.set()

    def _drained(self) -> bool:
        spill_left = self.spill is not None and not self.spill.empty
        return not (self._queue or self._inflight or spill_left)

    async def drain(self, grace: float = 10.0) -> None:
        """Publishes what is buffered, waiting up to `grace` seconds for acks
        (none while NATS has never been reached: it all goes to the spill)."""
        self._flush()
        self._start_sender()  # this may come before run() had its first turn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (grace if self.online else 0)
        while not self._drained() and (left := deadline - loop.time()) > 0:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)

    async def close(self, grace: float = 10.0) -> None:
        """drain(grace), then what is left goes to the spill, or is counted as
        lost without one."""
        self._closing = True
        self._wake.set()
        await self.drain(grace)
        assert self._sender is not None
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        pending = dict(self._inflight)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Unacked: in flight first (older), then the queue. Spilled ones stay on disk.
        left = [m for m in pending.values() if m.spilled is None] + list(self._queue)
        self._queue.clear()
        self._inflight.clear()
        self._buffered = 0
        if self.spill is not None:
            if left:
                log.warning("stopping with %d events unacknowledged: kept in the spill %s",
                            sum(m.count for m in left), self.spill.dir)
            self._to_spill(left)
            self.spill.close()
        else:
            self._loss.add(PUBLISH_FAILED, sum(m.count for m in left))
