"""The ring-buffer consumer (collector/ringbuf.py) against a real BPF ring buffer.

tests/bpf/ringbuf_feed.bpf.c writes numbered records of every size from 1 to
MAX_LEN bytes into a one-page ring buffer, one per getppid() of this process,
and reserves-then-discards every DISCARD_EVERY-th. Drained in small rounds,
records wrap past the end of the data area again and again.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from snoopbus.collector.bcc_import import import_bcc
from snoopbus.collector.ringbuf import RingBuffer, RingBufferError
from tests.support.paths import TESTS

pytestmark = pytest.mark.kernel

FEED = TESTS / "bpf" / "ringbuf_feed.bpf.c"
NR_GETPPID = 110  # x86-64
MAX_LEN = 256
DISCARD_EVERY = 7


def expected(n: int) -> bytes | None:
    if n % DISCARD_EVERY == DISCARD_EVERY - 1:
        return None
    size = (n * 37) % MAX_LEN + 1
    return bytes((n + i) & 0xFF for i in range(size))


def load_feed(tgid: int, pages: int, discard_every: int = DISCARD_EVERY) -> Any:
    flags = [f"-DTGID={tgid}", f"-DNR_GETPPID={NR_GETPPID}", f"-DMAX_LEN={MAX_LEN}",
             f"-DDISCARD_EVERY={discard_every}", f"-DPAGES={pages}"]
    return import_bcc().BPF(text=FEED.read_bytes(), cflags=flags)


@pytest.fixture(scope="module")
def feed() -> Iterator[Any]:
    bpf = load_feed(os.getpid(), 1)
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


STORM = "import os, sys\nsys.stdin.readline()\nfor _ in range(%d):\n    os.getppid()\n"


def test_no_record_is_refused_while_a_drain_runs_beside_a_storm() -> None:
    """A child writes records as fast as it can on one CPU while the ring is
    drained on the other: the kernel refuses none, since the buffer (64 MiB)
    never fills. A consumer position written non-atomically reads as a full
    buffer for an instant, and shows here as refused records."""
    n = 1_000_000
    child = subprocess.Popen([sys.executable, "-I", "-c", STORM % n], stdin=subprocess.PIPE)
    try:
        bpf = load_feed(child.pid, 16384, discard_every=1 << 40)
        ring = RingBuffer(bpf[b"rb"].map_fd, 16384 * mmap.PAGESIZE)
        try:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
            got, deadline = 0, time.monotonic() + 120
            while (child.poll() is None or ring.fill_ratio() > 0) and time.monotonic() < deadline:
                ring.wait(0.01)
                got += len(ring.drain(256 << 10))
            assert child.wait(5) == 0
            assert bpf[b"seq"][0].value == n
            assert failed(bpf) == 0
            assert got == n
        finally:
            ring.close()
            bpf.cleanup()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdin is not None:
            child.stdin.close()
