"""The ring-buffer consumer (collector/ringbuf.py) against a real BPF ring buffer.

tests/bpf/ringbuf_feed.bpf.c writes numbered records of every size from 1 to
MAX_LEN bytes into a one-page ring buffer, one per getppid() of this process,
and reserves-then-discards every DISCARD_EVERY-th. Drained in small rounds,
records wrap past the end of the data area again and again.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snoopbus.collector.bcc_import import import_bcc
from snoopbus.collector.ringbuf import RingBuffer, RingBufferError

pytestmark = pytest.mark.kernel

FEED = Path(__file__).parent / "bpf" / "ringbuf_feed.bpf.c"
NR_GETPPID = 110  # x86-64
MAX_LEN = 256
DISCARD_EVERY = 7


def expected(n: int) -> bytes | None:
    if n % DISCARD_EVERY == DISCARD_EVERY - 1:
        return None
    size = (n * 37) % MAX_LEN + 1
    return bytes((n + i) & 0xFF for i in range(size))


@pytest.fixture(scope="module")
def feed() -> Iterator[Any]:
    bcc = import_bcc()
    flags = [f"-DTGID={os.getpid()}", f"-DNR_GETPPID={NR_GETPPID}", f"-DMAX_LEN={MAX_LEN}",
             f"-DDISCARD_EVERY={DISCARD_EVERY}", "-DPAGES=1"]
    bpf = bcc.BPF(text=FEED.read_bytes(), cflags=flags)
    try:
        yield bpf
    finally:
        bpf.cleanup()


def failed(bpf: Any) -> int:
    return sum(v.value for v in bpf[b"failed"].values())


def test_every_record_in_order_across_wraps_and_discards(feed: Any) -> None:
    ring = RingBuffer(feed[b"rb"].map_fd, mmap.PAGESIZE)
    try:
        start = feed[b"seq"][0].value
        got: list[bytes] = []
        for _ in range(300):  # ~10 records (~1.2 KiB) a round into 4 KiB
            for _ in range(10):
                os.getppid()
            got.extend(ring.drain())
        n_written = feed[b"seq"][0].value - start
        want = [e for n in range(start, start + n_written) if (e := expected(n)) is not None]
        assert failed(feed) == 0, "the ring buffer was full: the test drains too rarely"
        assert n_written == 3000
        assert len(got) == len(want)
        assert got == want
        cons, prod = ring.positions()
        assert cons == prod > 50 * mmap.PAGESIZE  # wrapped ~90 times, and all handed back
        assert ring.fill_ratio() == 0.0
    finally:
        ring.close()


def test_wait_wakes_on_a_record_and_drain_limit_leaves_the_rest(feed: Any) -> None:
    ring = RingBuffer(feed[b"rb"].map_fd, mmap.PAGESIZE)
    try:
        ring.drain()
        assert not ring.wait(0.05)  # nothing written: times out
        start = feed[b"seq"][0].value
        for _ in range(6):
            os.getppid()
        assert ring.wait(1.0)
        assert 0 < ring.fill_ratio() < 1
        first = ring.drain(limit=1)  # one record, whatever its size
        rest = ring.drain()
        want = [e for n in range(start, start + 6) if (e := expected(n)) is not None]
        assert [*first, *rest] == want and len(first) == 1
    finally:
        ring.close()


def test_a_size_that_is_not_a_power_of_two_is_refused() -> None:
    with pytest.raises(RingBufferError, match="power of two"):
        RingBuffer(-1, 3 * mmap.PAGESIZE)
