"""The archive tests' and benchmark's in-process archiver, and reading back what it stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from nats.js import JetStreamContext

from snoopbus.consumers import Runtime, Settings
from snoopbus.consumers.archive.archiver import Archiver
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
