"""Fault: the kernel ring buffer deliberately overrun (one 4 KiB page, a storm of
creates). Figure: creates delivered to the stream + summarized (over the
storm's fair share, `summary` events) + counted lost by the kernel == files
created, exactly.

The include-path filter is decided in the kernel before a record is written,
so only the storm's own creates can be delivered or counted. Longer runs:
`.venv/bin/python -m tests.bench.faults ringbuf --files 200000`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.faults import run_ringbuf_overrun

pytestmark = pytest.mark.kernel


async def test_ring_buffer_overrun_is_accounted_exactly(tmp_path: Path) -> None:
    fig = await run_ringbuf_overrun(tmp_path, files=20_000)
    print(f"\nFAULT ring buffer of 1 page, 20000 creates: {fig}")
    assert fig["lost_counted"] + fig["summarized"] > 0, "the storm did not overrun the ring buffer"
    assert fig["delivered"] + fig["summarized"] + fig["lost_counted"] == fig["generated"], fig
    assert fig["duplicated"] == 0 and fig["unattributed"] == 0
