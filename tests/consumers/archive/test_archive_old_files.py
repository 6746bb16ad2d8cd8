"""An archive written before some fields had columns of their own, or before
a day's hosts shared a file (a folder per host), still reads: with both
engines, beside newer files, whichever file a scan meets first; and it is
recalled at start and retained like the new files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from snoopbus.consumers.archive import layout
from snoopbus.consumers.archive.columns import EVENT_SCHEMA, append_event, check_event, event_table
from snoopbus.consumers.archive.layout import PartKey
from snoopbus.consumers.archive.query import ArrowEngine, DuckDBEngine, Filters, run_query
from snoopbus.consumers.archive.retention import Retention
from snoopbus.consumers.archive.writer import Writer
from snoopbus.proto import host_token

ENGINES = [DuckDBEngine(), ArrowEngine()]
# Columns this branch added; files from before it hold these keys in `extra`.
NEW: dict[str, str] = {"file_host_path": "file.host_path", "file_closed_by": "file.closed_by"}


def closed_event(n: int) -> dict[str, Any]:
    return {
        "v": 1, "id": f"i-{n}", "ts": 1_763_776_800 * 10**9 + n, "host": "web1",
        "type": "close_write", "proc": {"pid": 100 + n, "comm": "sh"},
        "file": {"path": f"/c/{n}", "host_path": f"/var/lib/c/{n}", "closed_by": "exit"},
    }  # fmt: skip


def old_table(events: list[dict[str, Any]]) -> pa.Table:
    """The table as the archive wrote it before NEW were columns."""
    for ev in events:
        check_event(ev)
    table = event_table(events)
    extra = [json.dumps({label: ev["file"][label.split(".")[1]] for label in NEW.values()})
             for ev in events]  # fmt: skip
    drop = [c for c in table.column_names if c.removesuffix("_raw") in NEW]
    table = table.drop_columns(drop)
    return table.set_column(table.schema.get_field_index("extra"), "extra", pa.array(extra))


def write(root: Path, name: str, table: pa.Table, day: str) -> None:
    folder = root / "events" / f"date={day}" / "host=web1"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
@pytest.mark.parametrize("old_first", [True, False], ids=["old-first", "new-first"])
def test_old_files_read_beside_new_ones(engine: Any, old_first: bool, tmp_path: Path) -> None:
    old = [closed_event(n) for n in range(3)]
    new = [closed_event(n) for n in range(10, 13)]
    for ev in new:
        ev["ts"] += 86_400 * 10**9  # the next day's folder
    assert not set(NEW) & set(old_table(old).column_names)
    # The scan meets files in path order: the earlier day first.
    first, second = ("2025-11-22", "2025-11-23") if old_first else ("2025-11-23", "2025-11-22")
    write(tmp_path, "a.parquet", old_table(old), first)
    write(tmp_path, "b.parquet", event_table(new), second)
    rows = {r["id"]: r for r in run_query(tmp_path, Filters(), engine=engine)}
    assert len(rows) == 6
    for ev in old:
        row = rows[ev["id"]]
        assert all(row.get(column) is None for column in NEW), row
        assert json.loads(row["extra"]) == {"file.host_path": ev["file"]["host_path"],
                                            "file.closed_by": "exit"}  # fmt: skip
        assert row["file_path"] == ev["file"]["path"]
    for ev in new:
        row = rows[ev["id"]]
        assert row["file_host_path"] == ev["file"]["host_path"], row
        assert row["file_closed_by"] == "exit" and row["extra"] is None


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_host_folders_read_beside_files_of_every_host(engine: Any, tmp_path: Path) -> None:
    day = "2025-11-22"
    older = [closed_event(n) for n in range(3)]  # web1, in its own folder
    write(tmp_path, "01763776800000000000-0-1.parquet", event_table(older), day)
    w = Writer(tmp_path)
    newer = []
    for n, host in enumerate(["web2", "db.1", "web2"], start=10):
        ev = closed_event(n) | {"host": host}
        append_event(w.window.buffer(PartKey("events", day, host_token(host))), ev)
        newer.append(ev)
    w.commit(w.take())
    assert sorted((f.host or "-") for f in layout.files(tmp_path)) == ["-", "web1"]

    def hosts(f: Filters) -> dict[str, str]:
        return {r["id"]: r["host"] for r in run_query(tmp_path, f, engine=engine)}

    assert hosts(Filters()) == {ev["id"]: host_token(ev["host"]) for ev in older + newer}
    assert hosts(Filters(hosts=("web1",))) == {ev["id"]: "web1" for ev in older}
    assert hosts(Filters(hosts=("db.1",))) == {"i-11": "db_1"}
    assert set(hosts(Filters(hosts=("web1", "web2")))) == {"i-0", "i-1", "i-2", "i-10", "i-12"}
    # A restart remembers both layouts' ids under their hosts.
    again = Writer(tmp_path, horizon=10**9)
    again.recover()
    assert ("events", "web1", "i-0") in again.recent and ("events", "db_1", "i-11") in again.recent
    assert len(again.recent) == 6
    # Retention takes both by age.
    assert len(Retention(days=0).apply(tmp_path)) == 2
    assert not any((tmp_path / "events").iterdir())  # folders emptied go too


def test_new_columns_are_in_the_schema() -> None:
    assert set(NEW) <= set(EVENT_SCHEMA.names)
