"""Reads the kernel ring buffer on its own thread and hands over batches.

BCC's poll blocks, so it must not run on the asyncio loop. Each poll's
records are copied, decoded and built into events here, and the whole batch
crosses to the loop in one call_soon_threadsafe.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from snoopbus.collector.events import EventBuilder
from snoopbus.collector.records import RecordError, decode
from snoopbus.proto import Event

log = logging.getLogger(__name__)

Batch = list[tuple[str, Event]]


class RingReader:
    def __init__(
        self,
        bpf: Any,
        builder: EventBuilder,
        deliver: Callable[[Batch], None],
        poll_ms: int = 50,
    ) -> None:
        self._bpf = bpf
        self._builder = builder
        self._deliver = deliver
        self._poll_ms = poll_ms
        self._raw: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ringbuf-reader", daemon=True)
        self.records = 0
        self.undecodable: Counter[str] = Counter()
        bpf[b"events"].open_ring_buffer(self._on_record)

    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        self._raw.append(ctypes.string_at(data, size))
        return 0

    def start(self) -> None:
        self._thread.start()

    def _drain(self) -> None:
        raw, self._raw = self._raw, []
        if not raw:
            return
        self.records += len(raw)
        batch: Batch = []
        for buf in raw:
            try:
                batch.extend(self._builder.build_all(decode(buf)))
            except RecordError as exc:
                self.undecodable[str(exc)] += 1
        if batch:
            self._deliver(batch)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._bpf.ring_buffer_poll(self._poll_ms)
                # The probes wake the reader only every few records (see emit()
                # in snoopbus.bpf.c): after a timeout, take what is there.
                self._bpf.ring_buffer_consume()
                self._drain()
            self._bpf.ring_buffer_consume()  # what arrived before stop
            self._drain()
        except Exception:  # never die silently: the collector watches this thread
            log.exception("ring buffer reader failed")
            raise

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
