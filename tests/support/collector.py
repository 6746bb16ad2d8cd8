"""A real `snoopbus collect` started by a test, and a watch on what it publishes."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg

from snoopbus.proto import Event, decode_batch, meta_subject
from tests.support.processes import SNOOPBUS, stop_process


@dataclass
class RunningCollector:
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def start_collector(
    nats_url: str, nc: Client, tmp_path: Path, *extra: str, prefix: Sequence[str] = ()
) -> RunningCollector:
    """Starts `snoopbus collect` (after `prefix`: nsenter ...) and returns once it
    reports ready on the bus."""
    host = f"t{secrets.token_hex(4)}"
    ready = await nc.subscribe(meta_subject(host, "status"))
    log_path = tmp_path / f"collector-{host}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*prefix, *SNOOPBUS, "collect",
             "--nats", nats_url, "--host", host, *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )
    running = RunningCollector(host, proc, log_path)
    try:
        await ready.next_msg(timeout=60)
    except Exception:
        stop_process(proc)
        raise AssertionError(f"collector did not become ready:\n{running.log()}") from None
    finally:
        await ready.unsubscribe()
    return running


class EventWatch:
    """Collects every event published for one host, from the moment it is made."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.events.extend(decode_batch(msg.data))
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[Event], bool], count: int = 1, within: float = 15
    ) -> list[Event]:
        """The events matching `predicate`, once there are at least `count`."""
        async with asyncio.timeout(within):
            while True:
                found = [e for e in self.events if predicate(e)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()
