"""The archive's memory in a long run: a trickle's many small tables merged,
freed memory given back to the system (consumers/archive/memory.py)."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from snoopbus.consumers.archive import columns, memory
from snoopbus.consumers.archive.columns import EventBuffer, event_table
from tests.support.events import mixed_event

_ODD = "/tmp/caf" + b"\xe9\xff".decode("utf-8", "surrogateescape")


def small_tables(count: int, per: int = 3) -> list[tuple[pa.Table, list[str]]]:
    """`count` tables of `per` rows, as a trickle's fetches bring them; one
    event with a path that is not UTF-8 (a `_raw` column not all null)."""
    out = []
    rng = random.Random(5)
    for k in range(count):
        events = [mixed_event(k * per + i, rng=rng) for i in range(per)]
        if k == 7:
            events[1]["file"]["path"] = _ODD
        out.append((event_table(events), [e["id"] for e in events]))
    return out


def test_a_trickles_small_tables_are_merged_and_keep_every_row_in_order() -> None:
    tables = small_tables(100)
    buf = EventBuffer()
    for table, ids in tables:
        buf.add(table, ids)
    # 100 tables of 3 rows: three merged ones and the last 4 as they came.
    assert len(buf.tables) <= 100 // columns._MERGE_AT + columns._MERGE_AT
    assert len(buf.tables) < 10
    expected = pa.concat_tables([t for t, _ in tables])
    assert buf.table().to_pylist() == expected.to_pylist()
    assert buf.table().schema == expected.schema
    assert buf.ids() == [i for _, ids in tables for i in ids]
    assert buf.rows == 300
    # What the window counts is what the merged buffers hold, not 100 tables' worth.
    assert buf.nbytes < sum(t.nbytes for t, _ in tables) + 10 * columns._TABLE_COST


def test_merged_buffers_truncate_and_extend_by_rows() -> None:
    tables = small_tables(70)
    buf = EventBuffer()
    for table, ids in tables[:40]:
        buf.add(table, ids)
    other = EventBuffer()
    for table, ids in tables[40:]:
        other.add(table, ids)
    buf.extend(other)
    expected = pa.concat_tables([t for t, _ in tables])
    assert buf.table().to_pylist() == expected.to_pylist()
    buf.truncate(100)
    assert buf.rows == 100
    assert buf.table().to_pylist() == expected.slice(0, 100).to_pylist()
    for table, ids in tables[:40]:  # merging again after a truncate
        buf.add(table, ids)
    assert buf.table().to_pylist() == pa.concat_tables(
        [expected.slice(0, 100), *(t for t, _ in tables[:40])]
    ).to_pylist()


@pytest.mark.skipif(memory._TRIM is None, reason="no malloc_trim in this C library")
def test_release_gives_freed_heap_memory_back_to_the_system() -> None:
    memory.release()
    # 96 MiB in 64 KiB blocks (malloc's heap, under its mmap threshold), then a
    # block after them that stays: malloc alone keeps the 96 MiB once freed.
    blocks = [bytes(64 << 10) for _ in range(1536)]
    for b in blocks:
        assert len(b) == 64 << 10
    pin = bytes(4096)
    del blocks
    held = memory.rss_bytes()
    gave = memory.release()
    assert gave >= 48 << 20, f"gave back {gave >> 20} MiB of {held >> 20} MiB RSS"
    assert len(pin) == 4096


def test_the_trimmer_releases_at_most_once_per_period(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "release", lambda: calls.append(1) or 1 << 20)
    every_time = memory.Trimmer(every=0.0)
    for _ in range(3):
        every_time.after_commit()
    assert len(calls) == 3 and every_time.released == 3 << 20
    calls.clear()
    hourly = memory.Trimmer(every=3600.0)
    for _ in range(3):
        hourly.after_commit()
    assert calls == []
