"""A commit of many partitions (a fleet: one file per host) writes its files
side by side; one that fails leaves nothing behind and keeps the whole window."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from snoopbus.consumers.archive import layout, writer
from snoopbus.consumers.archive.columns import EventBuffer, append_event
from snoopbus.consumers.archive.layout import PartKey
from snoopbus.consumers.archive.writer import Writer
from tests.support.archive import archived_ids
from tests.support.events import mixed_event

HOSTS = [f"host{i:03d}" for i in range(40)]


def fill(w: Writer) -> list[str]:
    ids = []
    for h in HOSTS:
        part = PartKey("events", "2026-12-07", h)
        buf = w.window.buffer(part)
        assert isinstance(buf, EventBuffer)
        for n in range(1, 4):
            ev = mixed_event(n, host=h)
            append_event(buf, ev)
            w.window.add_ids("events", h, [ev["id"]])
            w.window.rows += 1
            ids.append(ev["id"])
    return ids


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_one_failing_file_of_many_leaves_nothing_and_keeps_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "archive"
    w = Writer(root)
    ids = fill(w)
    real = layout.write_durable_temp

    def full_for_one(final: Path, data: bytes | memoryview, gid: int) -> Path:
        if "host=host017" in str(final):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(final, data, gid)

    monkeypatch.setattr(writer.layout, "write_durable_temp", full_for_one)
    window = w.take()
    with pytest.raises(OSError):
        w.commit(window)
    w.give_back(window)
    assert leftovers(root) == []  # no file renamed into place, no temporary left
    assert w.window.rows == 3 * len(HOSTS) and len(w.window.parts) == len(HOSTS)

    monkeypatch.setattr(writer.layout, "write_durable_temp", real)
    window = w.take()
    w.commit(window)
    w.committed(window)
    assert w.files_written == len(HOSTS)
    assert sorted(archived_ids(root)) == sorted(ids)
    assert not [p for p in leftovers(root) if p.name.startswith(".")]
