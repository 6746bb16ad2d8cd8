"""Reads the kernel ring buffer on the event loop and hands over batches.

The ring buffer's map fd is watched by the loop itself (add_reader): when
the kernel signals records, or every `poll_ms` in any case, a bounded drain's
records are copied out (collector/ringbuf.py), decoded and built into events,
and the whole batch goes to the publisher in one call. One thread does it
all: a reader thread beside the loop made both contend for the GIL.
Nothing here blocks: a drain is bounded, and a full one is followed by the
next at once, with the loop's other work in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from snoopbus.collector.events import EventBuilder
from snoopbus.collector.records import RecordError
from snoopbus.collector.ringbuf import RingBuffer
from snoopbus.collector.stagetrace import StageTrace
from snoopbus.proto import Event

log = logging.getLogger(__name__)

# An event is a map, or (the native builder's) its msgpack encoding.
Batch = list[tuple[str, Event | bytes]]

# Bytes of records taken per drain (~1,500 file records, a few ms of work):
# bounds how long the loop is held while a full ring buffer is worked off.
DRAIN_BYTES = 256 << 10


class RingReader:
    def __init__(
        self,
        ring: RingBuffer,
        builder: EventBuilder,
        deliver: Callable[[Batch], None],
        poll_ms: int = 10,  # bounds the wait of a quiet CPU's last records
        consumed: Callable[[int], None] | None = None,
        trace: StageTrace | None = None,
    ) -> None:
        self._trace = trace
        self.ring = ring
        # Told `ring`'s consumer position after each drain: the probes compare
        # it with what they wrote to keep room for exec and exit records
        # (bpf/snoopbus.bpf.c, ring_out): the collector must pass it.
        self._consumed = consumed
        self.builder = builder
        self._deliver = deliver
        self._poll_s = poll_ms / 1000
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._again: asyncio.Handle | None = None
        self.failure: BaseException | None = None
        self.records = 0
        self.undecodable: Counter[str] = Counter()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.ring.fileno(), self._ready)
        self._tick()

    def _tick(self) -> None:
        # The probes wake the reader only every few records (see emit() in
        # snoopbus.bpf.c): a quiet CPU's last records are taken on this timer.
        self._ready()
        if self._loop is not None and self.failure is None:
            self._timer = self._loop.call_later(self._poll_s, self._tick)

    def _ready(self) -> None:
        if self._again is not None or self.failure is not None:
            return  # a drain is already due
        try:
            # More waiting past what a drain takes: again, after the loop's other
            # work. (Not when it stopped at a record still being written.)
            more = self._drain() and self.ring.pending()
        except Exception as exc:  # never die silently: the collector checks `alive`
            log.exception("ring buffer reader failed")
            self.failure = exc
            self._detach()
            return
        if more and self._loop is not None:
            self._again = self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        self._again = None
        self._ready()

    def _drain(self) -> int:
        """One bounded drain; returns how many records it took."""
        read_ns = time.time_ns() if self._trace is not None else 0
        raw = self.ring.drain(DRAIN_BYTES)
        if self._consumed is not None:
            self._consumed(self.ring.positions()[0])
        if not raw:
            return 0
        self.records += len(raw)
        batch: Batch = self.builder.build_many(raw, self._build_one)
        if self._trace is not None:
            self._trace.drained(read_ns, time.time_ns())
        if batch:
            self._deliver(batch)
        return len(raw)

    def _build_one(self, buf: bytes) -> list[tuple[str, Event]]:
        """The Python builder's events of one record; a malformed one is counted."""
        try:
            return self.builder.build_raw(buf)
        except RecordError as exc:
            self.undecodable[str(exc)] += 1
            return []

    def _detach(self) -> None:
        if self._loop is None:
            return
        self._loop.remove_reader(self.ring.fileno())
        for handle in (self._timer, self._again):
            if handle is not None:
                handle.cancel()
        self._timer = self._again = None
        self._loop = None

    def stop(self) -> None:
        """Stops watching; takes what arrived before (bounded: the probes still write)."""
        self._detach()
        if self.failure is None:
            for _ in range(64):
                if not self._drain():
                    break

    @property
    def native(self) -> bool:
        """Whether the native builder makes the common file events."""
        return self.builder.native

    @property
    def alive(self) -> bool:
        return self.failure is None
