"""Publishes events to JetStream in per-subject batches, without blocking the reader.

The reader thread hands batches to submit() on the event loop; submit only
appends to per-subject buffers (bounded: beyond the bound new events are
dropped and counted). A flush task turns buffers into messages of up to
`max_batch` events, each with a Nats-Msg-Id derived from its first event id,
and publishes them with many acks in flight. A failed publish is retried
with the same id, so JetStream's dedup window drops a copy that did land.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

from nats.js import JetStreamContext

from snoopbus.collector.loss import PUBLISH_BACKLOG, PUBLISH_FAILED, LossCounters
from snoopbus.proto import Event, encode_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublisherConfig:
    max_batch: int = 256  # events per NATS message
    flush_interval: float = 0.02  # s: latency bound for a partial batch
    max_inflight: int = 64  # messages awaiting a JetStream ack
    max_buffered: int = 200_000  # events held in memory before new ones are dropped
    ack_timeout: float = 5.0


class Publisher:
    def __init__(self, js: JetStreamContext, loss: LossCounters, config: PublisherConfig) -> None:
        self._js = js
        self._loss = loss
        self._cfg = config
        self._buffers: dict[str, list[Event]] = defaultdict(list)
        self._buffered = 0  # events in buffers and in flight
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.published_events = 0
        self.published_messages = 0

    @property
    def buffered(self) -> int:
        return self._buffered

    def submit(self, batch: list[tuple[str, Event]]) -> None:
        room = self._cfg.max_buffered - self._buffered
        if len(batch) > room:
            self._loss.add(PUBLISH_BACKLOG, len(batch) - max(room, 0))
            batch = batch[: max(room, 0)]
        for subject, event in batch:
            self._buffers[subject].append(event)
        self._buffered += len(batch)
        if any(len(b) >= self._cfg.max_batch for b in self._buffers.values()):
            self._wake.set()

    async def run(self) -> None:
        """Flushes until close(); call as a task."""
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._cfg.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        buffers, self._buffers = self._buffers, defaultdict(list)
        for subject, events in buffers.items():
            for i in range(0, len(events), self._cfg.max_batch):
                chunk = events[i : i + self._cfg.max_batch]
                await self._slots.acquire()  # backpressure: bounded acks in flight
                task = asyncio.create_task(self._publish(subject, chunk))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _publish(self, subject: str, events: list[Event]) -> None:
        payload = encode_batch(events)
        msg_id = f"{events[0]['id']}+{len(events)}"
        delay = 0.05
        try:
            while True:
                try:
                    await self._js.publish(
                        subject,
                        payload,
                        timeout=self._cfg.ack_timeout,
                        headers={"Nats-Msg-Id": msg_id},
                    )
                    self.published_events += len(events)
                    self.published_messages += 1
                    return
                except asyncio.CancelledError:
                    self._loss.add(PUBLISH_FAILED, len(events))
                    raise
                except Exception as exc:  # timeouts, no responders, disconnected
                    log.warning("publish to %s failed (%s); retrying in %.2fs", subject, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._buffered -= len(events)
            self._slots.release()

    async def close(self, grace: float = 10.0) -> None:
        """Publishes what is buffered, waiting up to `grace` seconds for acks."""
        self._closing = True
        self._wake.set()
        await self._flush()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
