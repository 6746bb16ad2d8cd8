"""The alert tests' host, their events on it, a watch on the alerts published,
and the alert consumer running in the test's process."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

from nats.aio.msg import Msg

from snoopbus.consumers import Runtime, Settings
from snoopbus.consumers.alert.consumer import AlertConsumer
from snoopbus.proto import decode_map
from tests.support import consumers, events

FAST = Settings(batch=64, fetch_timeout=0.2, concurrency=1, backoff=(0.05,))
HOST = "alert-test"

exec_event = partial(events.exec_event, host=HOST)
file_event = partial(events.file_event, host=HOST)


def running(consumer: AlertConsumer, url: str) -> AbstractAsyncContextManager[Runtime]:
    return consumers.running(consumer, url, FAST, stop_within=15)


class AlertWatch:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.alerts.append((msg.subject, decode_map(msg.data)))
        self._changed.set()

    async def wait(self, count: int, within: float = 10) -> list[tuple[str, dict[str, Any]]]:
        async with asyncio.timeout(within):
            while len(self.alerts) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.alerts

    async def quiet(self, seconds: float = 0.5) -> None:
        """Nothing more arrives for a while (for 'exactly these alerts')."""
        before = len(self.alerts)
        await asyncio.sleep(seconds)
        assert len(self.alerts) == before, self.alerts[before:]
