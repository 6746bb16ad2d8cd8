"""A commit of a fleet's window writes one file per kind and day, every host's
rows in it; one file that fails leaves nothing behind and keeps the whole window."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from snoopbus.consumers.archive import layout, writer
from snoopbus.consumers.archive.columns import EventBuffer, append_event
from snoopbus.consumers.archive.layout import PartKey
from snoopbus.consumers.archive.writer import Writer
from tests.support.archive import archived_ids
from tests.support.events import mixed_event

HOSTS = [f"host{i:03d}" for i in range(40)]
DAYS = ["2026-12-06", "2026-12-07"]


def fill(w: Writer) -> list[tuple[str, str]]:
    """Three events per host and day; their (host token, id)."""
    ids = []
    for h in reversed(HOSTS):  # the window's order is not the file's
        for day in DAYS:
            buf = w.window.buffer(PartKey("events", day, h))
            assert isinstance(buf, EventBuffer)
            for n in range(1, 4):
                ev = mixed_event(n, host=h)
                ev["id"] = f"{day}-{ev['id']}"
                append_event(buf, ev)
                w.window.add_ids("events", h, [ev["id"]])
                w.window.rows += 1
                ids.append((h, ev["id"]))
    return ids


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_fleet_window_is_one_file_per_day_sorted_by_host(tmp_path: Path) -> None:
    w = Writer(tmp_path)
    ids = fill(w)
    window = w.take()
    w.commit(window)
    w.committed(window)
    stored = sorted(layout.files(tmp_path), key=lambda f: f.date)
    assert [(f.date, f.host, f.path.parent.name) for f in stored] == [
        (day, None, f"date={day}") for day in DAYS
    ]
    assert w.files_written == 2 and w.rows_written == len(ids)
    for f in stored:
        hosts = pq.read_table(f.path, columns=["host"]).column("host").to_pylist()
        assert hosts == [h for h in HOSTS for _ in range(3)]
    assert sorted(archived_ids(tmp_path)) == sorted(i for _, i in ids)
    # A restart recalls every id with its host, read from the host column.
    again = Writer(tmp_path)
    again.recover()
    assert len(again.recent) == len(ids)
    assert all(("events", h, i) in again.recent for h, i in ids)
    assert ("events", "host017", ids[0][1]) not in again.recent  # host039's id


def test_one_failing_file_of_two_leaves_nothing_and_keeps_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "archive"
    w = Writer(root)
    ids = fill(w)
    real = layout.write_durable_temp

    def full_for_one(final: Path, data: bytes | memoryview, gid: int) -> Path:
        if f"date={DAYS[1]}" in str(final):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(final, data, gid)

    monkeypatch.setattr(writer.layout, "write_durable_temp", full_for_one)
    window = w.take()
    with pytest.raises(OSError):
        w.commit(window)
    w.give_back(window)
    assert leftovers(root) == []  # no file renamed into place, no temporary left
    assert w.window.rows == 3 * len(HOSTS) * len(DAYS)
    assert len(w.window.parts) == len(HOSTS) * len(DAYS)

    monkeypatch.setattr(writer.layout, "write_durable_temp", real)
    window = w.take()
    w.commit(window)
    w.committed(window)
    assert w.files_written == len(DAYS)
    assert sorted(archived_ids(root)) == sorted(i for _, i in ids)
    assert not [p for p in leftovers(root) if p.name.startswith(".")]


def test_a_file_renamed_before_a_failure_is_not_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = Writer(tmp_path)
    ids = fill(w)
    for day in DAYS:  # folders made: the first fsync of the commit is after its renames
        layout.make_dirs(tmp_path / "events" / f"date={day}", w.gid)
    real = layout.fsync_dir

    def fails_once(path: Path) -> None:
        monkeypatch.setattr(writer.layout, "fsync_dir", real)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer.layout, "fsync_dir", fails_once)
    window = w.take()
    with pytest.raises(OSError):
        w.commit(window)  # both files renamed, the first folder's fsync failed
    w.give_back(window)
    assert w.window.rows == 0 and not w.window.parts
    assert w.files_written == 2 and w.rows_written == len(ids)
    assert all(("events", h, i) in w.recent for h, i in ids)
    assert sorted(archived_ids(tmp_path)) == sorted(i for _, i in ids)
    window = w.take()
    w.commit(window)  # the retry has nothing left to write
    assert len(list(layout.files(tmp_path))) == 2
