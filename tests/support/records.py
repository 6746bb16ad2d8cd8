"""Kernel records as the probes write them, and the builder that makes events of them."""

from __future__ import annotations

from snoopbus.collector import records as R
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache, ProcInfo


def header(kind: int, flags: int = 0) -> bytes:
    return R.HDR.pack(10, 7, 100, 101, 1, 1000, 1000, kind, flags, b"touch".ljust(16, b"\0"))


def builder() -> EventBuilder:
    cache = ProcCache()
    cache.put(100, ProcInfo("/usr/bin/mv", ["mv", "a", "b"], "/tmp"))
    return EventBuilder("h", "inst", cache)
