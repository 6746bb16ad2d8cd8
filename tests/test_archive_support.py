"""Support for the archive tests and benchmark (no tests here): events, an in-process archiver."""

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
from snoopbus.proto import SCHEMA_VERSION, encode_batch, event_subject
from tests.conftest import durable_settled

FAST = Settings(batch=64, fetch_timeout=0.2, concurrency=1, max_attempts=2, backoff=(0.1,))
BASE_TS = 1_763_700_000 * 10**9  # 2025-11-21T04:40:00Z
FILE_TYPES = ("open", "create", "modify", "close_write", "delete")


def make_event(n: int, host: str = "h1", ts: int | None = None, rng: random.Random | None = None,
               ) -> dict[str, Any]:  # fmt: skip
    """Event number `n`: an exec every 10th, else a file event of pid 1000 + n % 50."""
    rng = rng or random.Random(n)
    pid = 1000 + n % 50
    ev: dict[str, Any] = {
        "v": SCHEMA_VERSION, "id": f"{host}-i1-{n}", "ts": BASE_TS + n * 1000 if ts is None else ts,
        "host": host,
        "proc": {"pid": pid, "tid": pid, "ppid": 1, "uid": 0, "gid": 0,
                 "comm": f"proc{pid % 7}", "exe": f"/usr/bin/proc{pid % 7}"},
    }  # fmt: skip
    if n % 10 == 0:
        ev["type"] = "exec"
        ev["proc"]["argv"] = [f"/usr/bin/proc{pid % 7}", "--n", str(n)]
        ev["proc"]["cwd"] = "/root"
    else:
        ev["type"] = FILE_TYPES[n % len(FILE_TYPES)]
        ev["file"] = {"path": f"/var/data/{rng.randrange(1000)}/f{n}.log", "flags": 577,
                      "mode": 0o644, "inode": 10_000 + n, "dev": 2049}  # fmt: skip
        ev["ret"] = 3
    return ev


async def publish_events(js: JetStreamContext, events: list[dict[str, Any]], per_msg: int = 7,
                         ) -> int:  # fmt: skip
    """Publish grouped by (host, type) as a collector would; the number of messages."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ev in events:
        groups.setdefault((ev["host"], ev["type"]), []).append(ev)
    sent = 0
    for (host, kind), evs in groups.items():
        for i in range(0, len(evs), per_msg):
            await js.publish(event_subject(host, kind), encode_batch(evs[i : i + per_msg]))
            sent += 1
    return sent


def archived_ids(root: Path, kind: str = "events") -> list[str]:
    base = root / kind
    if not any(base.rglob("*.parquet")):
        return []
    return ds.dataset(base, format="parquet").to_table(columns=["id"]).column("id").to_pylist()


async def settled(js: JetStreamContext, durable: str = "archive", limit: float = 20) -> None:
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
