"""Reads the kernel ring buffer on its own thread and hands over batches.

Waiting for the ring buffer blocks, so it must not run on the asyncio loop.
Each drain's records are copied out (collector/ringbuf.py), decoded and built
into events here, and the whole batch crosses to the loop in one
call_soon_threadsafe.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from snoopbus.collector.events import EventBuilder
from snoopbus.collector.records import RecordError, decode
from snoopbus.collector.ringbuf import RingBuffer
from snoopbus.proto import Event

log = logging.getLogger(__name__)

Batch = list[tuple[str, Event]]

# Bytes of records taken per drain: bounds one hand-over (~4k records)
# while a full ring buffer is worked off.
DRAIN_BYTES = 1 << 20


class RingReader:
    def __init__(
        self,
        ring: RingBuffer,
        builder: EventBuilder,
        deliver: Callable[[Batch], None],
        poll_ms: int = 50,
    ) -> None:
        self.ring = ring
        self._builder = builder
        self._deliver = deliver
        self._poll_s = poll_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ringbuf-reader", daemon=True)
        self.records = 0
        self.undecodable: Counter[str] = Counter()

    def start(self) -> None:
        self._thread.start()

    def _drain(self) -> int:
        raw = self.ring.drain(DRAIN_BYTES)
        if not raw:
            return 0
        self.records += len(raw)
        batch: Batch = []
        build_all = self._builder.build_all
        for buf in raw:
            try:
                batch.extend(build_all(decode(buf)))
            except RecordError as exc:
                self.undecodable[str(exc)] += 1
        if batch:
            self._deliver(batch)
        return len(raw)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                # The probes wake the reader only every few records (see emit()
                # in snoopbus.bpf.c): after a timeout, take what is there.
                self.ring.wait(self._poll_s)
                while self._drain() and not self._stop.is_set():
                    pass
            for _ in range(64):  # what arrived before stop, bounded: the probes still write
                if not self._drain():
                    break
        except Exception:  # never die silently: the collector watches this thread
            log.exception("ring buffer reader failed")
            raise

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
