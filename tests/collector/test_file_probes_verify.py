"""Every filter configuration changes the compiled program (-D switches), and
each must pass the verifier: a walk plus a name scan in one program once
exceeded its budget in just one combination. Both places for syscall
arguments (task storage, a map keyed by thread id) must work."""

from __future__ import annotations

import itertools
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snoopbus.collector import probes
from snoopbus.collector import records as R
from snoopbus.collector.filters import FilterConfig
from snoopbus.collector.ringbuf import RingBuffer

pytestmark = pytest.mark.kernel

PATHS = {
    "no paths": {},
    "exclude": {"exclude_paths": ("/tmp/x",)},
    "include+exclude": {"include_paths": ("/tmp",), "exclude_paths": ("/tmp/x",)},
}


@pytest.mark.parametrize(
    ("paths", "failed", "opens"),
    list(itertools.product(PATHS, (False, True), (False, True))),
)
def test_probes_load_in_every_configuration(paths: str, failed: bool, opens: bool) -> None:
    task = {"exclude_comms": ("x",), "exclude_uids": (4242,), "exclude_cgroups": (1,)}
    cfg = FilterConfig(include_failed=failed, open_events=opens, **PATHS[paths],  # type: ignore[arg-type]
                       **(task if failed else {}))  # type: ignore[arg-type]
    loaded = probes.load(probes.ProbeLimits(), cfg)
    try:
        # Loaded whole, not by a fallback: with a path filter on, the io_uring
        # name program once exceeded the verifier's budget, and the collector
        # ran without io_uring (and without task storage), logging a warning.
        assert loaded.uring == bool(probes.uring_offsets()["URING"])
        assert loaded.task_storage
    finally:
        loaded.close()


@pytest.mark.parametrize("task_storage", [True, False], ids=["task storage", "thread id map"])
def test_both_places_for_syscall_arguments_work(task_storage: bool, tmp_path: Path) -> None:
    """Syscall arguments wait for their exit in task storage where the kernel
    has it for tracing programs (5.11+), else in a map keyed by thread id:
    both variants pass the verifier and turn a child's file operations into
    records, read back from the ring buffer."""
    loaded = probes.load(probes.ProbeLimits(), FilterConfig(), task_storage=task_storage)
    try:
        ring = RingBuffer(loaded.bpf[b"events"].map_fd,
                          probes.ProbeLimits().ringbuf_pages * mmap.PAGESIZE)
        try:
            target = tmp_path / "made-by-child"
            subprocess.run([sys.executable, "-c", f"open({str(target)!r}, 'w').write('x')"],
                           check=True)
            wanted = {R.KIND_CREATE, R.KIND_MODIFY, R.KIND_CLOSE_WRITE}
            kinds: set[int] = set()
            deadline = time.monotonic() + 5
            while wanted - kinds and time.monotonic() < deadline:
                ring.wait(0.1)
                for buf in ring.drain():
                    rec = R.decode(buf)
                    if isinstance(rec, R.FileRecord) and rec.path == os.fsencode(target):
                        kinds.add(rec.hdr.kind)
            assert wanted <= kinds
        finally:
            ring.close()
    finally:
        loaded.close()
