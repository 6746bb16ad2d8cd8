"""The archive tests' and benchmark's in-process archiver, and reading back what it stored."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from nats.js import JetStreamContext

from snoopbus.consumers import Runtime, Settings
from snoopbus.consumers.archive.archiver import Archiver
from snoopbus.consumers.archive.columns import check_event, event_table
from snoopbus.proto import text_from_kernel
from tests.bench.archive import Events
from tests.support.events import mixed_event
from tests.support.waits import durable_settled

FAST = Settings(batch=64, fetch_timeout=0.2, concurrency=1, max_attempts=2, backoff=(0.1,))


def archived_ids(root: Path, kind: str = "events") -> list[str]:
    base = root / kind
    if not any(base.rglob("*.parquet")):
        return []
    return ds.dataset(base, format="parquet").to_table(columns=["id"]).column("id").to_pylist()


async def settled(js: JetStreamContext, durable: str = "archive", limit: float = 20) -> None:
    """Until the archiver has handled and acked everything published."""
    await durable_settled(js, durable, limit)


@asynccontextmanager
async def archiver(url: str, root: Path, settings: Settings = FAST, **kw: Any,
                   ) -> AsyncIterator[tuple[Archiver, Runtime]]:  # fmt: skip
    kw.setdefault("roll_seconds", 0.3)
    kw.setdefault("gc_tuning", False)  # leave this pytest process's GC as it was
    a = Archiver(root, settings=settings, **kw)
    runtime = Runtime(a, servers=url, settings=settings)
    task = asyncio.create_task(runtime.run())
    async with asyncio.timeout(10):
        await runtime.ready.wait()
    try:
        yield a, runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 20)


def archived_rows(root: Path, kind: str = "events") -> list[dict[str, Any]]:
    """Every row as stored (ts as int ns: Python datetimes stop at µs)."""
    table = ds.dataset(root / kind, format="parquet", partitioning="hive").to_table()
    i = table.schema.get_field_index("ts")
    table = table.set_column(i, "ts", table.column("ts").cast(pa.int64()))
    return table.to_pylist()


# -- the corpus of the column tests ---------------------------------------------


def corpus() -> list[list[dict[str, Any]]]:
    """Message payloads' events: a busy host's mix, then every kind of odd one."""
    events = Events(2000, seed=4)
    batches = [[events.make(n) for n in range(i, i + 100)] for i in range(0, 2000, 100)]
    rng = random.Random(2)
    odd: list[dict[str, Any]] = []
    for n in range(60):
        ev = mixed_event(5000 + n, host=rng.choice(["h1", "web.2", "db-3"]), rng=rng)
        proc, file = ev["proc"], ev.get("file")
        pick = n % 10
        if pick == 0 and file:
            file.update(closed_by="exit", host_path="/var/lib/c/x", mnt_ns=4026532000)
        elif pick == 1:
            proc.update(argv_redacted=True, parent_exe="/bin/sh", parent_argv=["sh", "-c", "x"],
                        parent_argv_truncated=True, container="c0ffee")  # fmt: skip
        elif pick == 2 and file:
            file.update(path_truncated=True, old_path="/a", old_path_truncated=True)
        elif pick == 3:
            ev.update(type="exit", exit_code=137, signal=9)
            ev.pop("file", None)
        elif pick == 4:
            ev["future"] = {"nested": [1, "two"]}  # unknown: the reference path, kept in `extra`
        elif pick == 5 and file:
            file["path"] = text_from_kernel(b"/tmp/caf\xe9")  # bin on the wire: the reference path
        elif pick == 6:
            ev.pop("proc")
        elif pick == 7 and file:
            file.update(inode=2**64 - 1, dev=0, target="../t")  # unsigned columns: the whole range
        odd.append(ev)
    batches += [odd[i : i + 7] for i in range(0, len(odd), 7)]
    return batches


def reference_table(events: list[dict[str, Any]]) -> pa.Table:
    for ev in events:
        check_event(ev)
    return event_table(events)
