"""Retention removes what is past the age or size limit, and nothing else."""

from __future__ import annotations

import asyncio
import time
from datetime import date
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.archive import layout
from snoopbus.consumers.archive.columns import append_alert, append_event
from snoopbus.consumers.archive.layout import PartKey, day_of
from snoopbus.consumers.archive.retention import Retention
from snoopbus.consumers.archive.writer import Writer
from snoopbus.proto import ensure_stream
from tests.support.archive import archived_ids, archiver, settled
from tests.support.events import mixed_event, publish_grouped

DAY = 86_400 * 10**9
DAY0 = 1_763_683_200 * 10**9  # 2025-11-21T00:00:00Z


def populate(root: Path, days: int = 6, hosts: int = 2, files_per: int = 2) -> None:
    """`files_per` files per day and host, events and alerts, days DAY0 .. DAY0+days-1."""
    w = Writer(root)
    n = 0
    for _ in range(files_per):
        for d in range(days):
            for h in range(hosts):
                ev = mixed_event(n, host=f"h{h}", ts=DAY0 + d * DAY + n)
                append_event(w.window.buffer(PartKey("events", day_of(ev["ts"]), f"h{h}")), ev)
                n += 1
            alert_ts = DAY0 + d * DAY
            append_alert(
                w.window.buffer(PartKey("alerts", day_of(alert_ts), "h0")), {"x": 1},
                ts=alert_ts, host="h0", level="high", seq=n, alert_id=f"a{n}",
            )  # fmt: skip
        w.commit(w.take())
        time.sleep(0.002)  # distinct commit times: "oldest" is well defined


def dates(root: Path, kind: str = "events") -> list[str]:
    return sorted({f.date for f in layout.files(root, (kind,))})


def test_age_limit_removes_whole_old_days_of_both_kinds(tmp_path: Path) -> None:
    populate(tmp_path)
    old = {f.path for f in layout.files(tmp_path) if f.date < "2025-11-23"}
    removed = Retention(days=2).apply(tmp_path, today=date(2025, 11, 25))
    # Kept: the 25th and the two days before it (26th is "future" and kept too).
    assert dates(tmp_path) == ["2025-11-23", "2025-11-24", "2025-11-25", "2025-11-26"]
    assert dates(tmp_path, "alerts") == dates(tmp_path)
    assert old and set(removed) == old
    assert not (tmp_path / "events" / "date=2025-11-21").exists()  # empty folders go too
    assert Retention(days=2).apply(tmp_path, today=date(2025, 11, 25)) == []


def test_size_limit_removes_oldest_files_first(tmp_path: Path) -> None:
    populate(tmp_path)
    files = sorted(layout.files(tmp_path),
                   key=lambda f: (f.date, layout.commit_ns(f.path) or 0))  # fmt: skip
    total = sum(f.size for f in files)
    limit = total // 2
    removed = Retention(max_bytes=limit).apply(tmp_path)
    left = list(layout.files(tmp_path))
    assert sum(f.size for f in left) <= limit
    # Exactly the oldest prefix went, and not one file more than needed.
    assert removed == [f.path for f in files[: len(removed)]]
    assert sum(f.size for f in files[len(removed) - 1 :]) > limit


def test_no_limits_remove_nothing(tmp_path: Path) -> None:
    populate(tmp_path, days=2)
    n = len(list(layout.files(tmp_path)))
    assert Retention().apply(tmp_path) == []
    assert len(list(layout.files(tmp_path))) == n
    with pytest.raises(ValueError):
        Retention(days=-1)


async def test_archiver_applies_retention_while_running(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js)
    root = tmp_path / "archive"
    now = time.time_ns()
    old = [mixed_event(n, ts=now - 10 * DAY + n) for n in range(20)]
    new = [mixed_event(100 + n, ts=now + n) for n in range(20)]
    async with archiver(nats_server.url, root, retention=Retention(days=3),
                        retention_every=0.2):  # fmt: skip
        await publish_grouped(js, old + new)
        await settled(js)
        async with asyncio.timeout(10):
            while len(archived_ids(root)) != len(new):
                await asyncio.sleep(0.1)
    assert sorted(archived_ids(root)) == sorted(e["id"] for e in new)
    assert dates(root) == sorted({day_of(e["ts"]) for e in new})
