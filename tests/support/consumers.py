"""A consumer running in the test's process against a real nats-server, and one
that records what it is given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from snoopbus.consumers import Batch, Consumer, Runtime, Settings
from snoopbus.proto import events_filter

FAST = Settings(batch=64, fetch_timeout=0.2, backoff=(0.05,), max_attempts=3)


@asynccontextmanager
async def running(c: Consumer, url: str, settings: Settings = FAST,
                  stop_within: float = 10) -> AsyncIterator[Runtime]:  # fmt: skip
    """`c` in a runtime of its own, ready (its durable bound) when this yields."""
    runtime = Runtime(c, servers=url, settings=settings)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        await task  # raises what went wrong
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, stop_within)


class Collector(Consumer):
    """Records every event; fails (raises) on those whose comm is in `poison`."""

    def __init__(self, name: str = "collect", poison: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.filters = (events_filter(family="proc"),)
        self.events: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.poison = poison
        self.delay = 0.0

    async def handle(self, batch: Batch) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        for event in batch.events:
            comm = event["proc"]["comm"]
            if comm in self.poison:
                self.attempts[comm] = self.attempts.get(comm, 0) + 1
                raise RuntimeError(f"cannot handle {comm}")
        self.events.extend(batch.events)
