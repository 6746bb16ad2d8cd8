"""The native builder and the Python one make the same events from records the
real probes wrote: a child's file operations (names relative and with a
directory part, not UTF-8, renames, links, chmod, ...) read back from the
ring buffer and built by both (tests/collector/test_fastbuild.py does it over
generated records)."""

from __future__ import annotations

import mmap
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snoopbus.collector import probes
from snoopbus.collector import records as R
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.filters import FilterConfig
from snoopbus.collector.proc_cache import ProcCache
from snoopbus.collector.ringbuf import RingBuffer
from tests.support.records import needs_native, wire

pytestmark = [pytest.mark.kernel, needs_native]

WORK = """
import os
os.mkdir("d")
for i in range(20):
    with open(f"f{i}", "w") as f:
        f.write("x")
    os.rename(f"f{i}", f"g{i}")
    os.chmod(f"g{i}", 0o600)
    os.rename(f"g{i}", f"d/h{i}")
    os.link(f"d/h{i}", f"l{i}")
    os.unlink(f"l{i}")
    os.unlink(f"d/h{i}")
name = b"\\xff\\xfe-not-utf8"
open(name, "wb").close()
os.rename(name, b"\\xc3\\xa9t\\xc3\\xa9")
os.unlink(b"\\xc3\\xa9t\\xc3\\xa9")
os.symlink("target", "s")
os.unlink(os.path.abspath("s"))
os.rmdir("d")
print("done", flush=True)
"""


def test_real_records_make_the_same_events_both_ways(tmp_path: Path) -> None:
    loaded = probes.load(probes.ProbeLimits(), FilterConfig())
    try:
        ring = RingBuffer(loaded.bpf[b"events"].map_fd,
                          probes.ProbeLimits().ringbuf_pages * mmap.PAGESIZE)
        try:
            child = subprocess.Popen([sys.executable, "-c", WORK], cwd=tmp_path,
                                     stdout=subprocess.PIPE, text=True)
            out, _ = child.communicate(timeout=60)
            assert out.strip() == "done"
            raw: list[bytes] = []
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                ring.wait(0.1)
                raw += ring.drain()
        finally:
            ring.close()
    finally:
        loaded.close()
    mine = [buf for buf in raw if len(buf) >= R.HDR.size
            and R.HDR.unpack_from(buf)[2] == child.pid]
    fast = EventBuilder("h1", "inst", ProcCache())
    ref = EventBuilder("h1", "inst", ProcCache(), use_native=False)
    ref.clock_offset = fast.clock_offset
    got = fast.build_many(mine)
    want = [ev for buf in mine for ev in ref.build_raw(buf)]
    taken = sum(isinstance(e, bytes) for _, e in got)
    assert taken >= 100, f"only {taken} of {len(got)} events made natively"
    assert len(got) == len(want) > taken  # the names with a directory part: Python's
    assert wire(got) == wire(want)
