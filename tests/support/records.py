"""Kernel records as the probes write them, the builder that makes events of them,
and comparing what the native and Python builders make."""

from __future__ import annotations

import pytest

from snoopbus.collector import native
from snoopbus.collector import records as R
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.collector.reader import Batch
from snoopbus.proto import EncodeError, Event, encode_batch

needs_native = pytest.mark.skipif(native.MISSING is not None, reason=str(native.MISSING))


def header(kind: int, flags: int = 0) -> bytes:
    return R.HDR.pack(10, 7, 100, 101, 1, 1000, 1000, kind, flags, b"touch".ljust(16, b"\0"))


def builder() -> EventBuilder:
    cache = ProcCache()
    cache.put(100, ProcInfo("/usr/bin/mv", ["mv", "a", "b"], "/tmp"))
    return EventBuilder("h", "inst", cache)


def wire(batch: Batch) -> list[tuple[str, bytes | str]]:
    """A batch as it goes on the wire: each event's subject and payload."""
    return [(subject, payload(ev)) for subject, ev in batch]


def payload(ev: Event | bytes) -> bytes | str:
    try:
        return encode_batch([ev])
    except EncodeError as exc:  # a cookie over 2**63: both paths leave it to the publisher
        return f"refused: {exc}"
