"""Freed memory given back to the system now and then, not kept by malloc.

glibc's malloc keeps what is freed for reuse: in a long run the archiver's
heap grew to the highest it ever needed and stayed there (a soak at ~450
events/s: 250-275 MB RSS, of which malloc_trim gave back 103 MB at once).
`Trimmer.after_commit` calls malloc_trim(0) (every arena, free pages in the
middle too) and Arrow's pool's release_unused, at most once every `every`
seconds, in the commit's thread: a few ms to a few hundred on a big heap,
never per event. Where malloc_trim is missing (musl), only the pool's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable

import pyarrow as pa

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim  # ctypes releases the GIL for the call
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def release() -> int:
    """Give free memory back to the system now; bytes of RSS it gave back."""
    before = rss_bytes()
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)
    return max(0, before - rss_bytes())


class Trimmer:
    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._next = time.monotonic() + every
        self.released = 0  # bytes, all told

    def after_commit(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every
        gave = release()
        self.released += gave
        log.debug("archive: gave %.1f MB back to the system in %.0f ms", gave / 2**20,
                  (time.monotonic() - now) * 1e3)  # fmt: skip
