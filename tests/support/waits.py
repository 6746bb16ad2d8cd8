"""Waiting until something holds: a condition, or a durable consumer's state.

Each wait has a bound (`within`, seconds) so a test fails instead of hanging;
none is a timed assertion: a slow machine only waits longer before passing.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from snoopbus.proto import STREAM_NAME


async def until(cond: Callable[[], object], within: float = 20.0, what: str = "",
                every: float = 0.02) -> None:  # fmt: skip
    """Until `cond()` holds (counters and lists have no event to wait on)."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(every)


def until_sync(cond: Callable[[], object], within: float = 20.0, what: str = "",
               every: float = 0.02) -> None:  # fmt: skip
    """`until` for tests without an event loop."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(every)


async def durable_settled(js: JetStreamContext, durable: str, within: float = 20) -> None:
    """Until the durable has nothing pending and nothing unacked."""
    async with asyncio.timeout(within):
        while True:
            info = await js.consumer_info(STREAM_NAME, durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


async def durables_settled(js: JetStreamContext, within: float = 60) -> None:
    """Until every durable there is has handled and acked everything."""
    async with asyncio.timeout(within):
        while True:
            infos = await js.consumers_info(STREAM_NAME)
            durables = [i for i in infos if i.config.durable_name]
            if durables and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in durables):
                return
            await asyncio.sleep(0.1)


async def durable_pulled(js: JetStreamContext, durable: str, within: float = 20) -> None:
    """Until a process has bound `durable` (the consumer exists and a pull waits)."""
    async with asyncio.timeout(within):
        while True:
            try:
                if (await js.consumer_info(STREAM_NAME, durable)).num_waiting:
                    return
            except Exception:
                pass
            await asyncio.sleep(0.05)


async def durables_pulled(js: JetStreamContext, count: int = 1, within: float = 30) -> None:
    """Until `count` durables each have a pull waiting: every process is up (on a
    loaded machine one may take seconds to start, and would miss what it should see)."""
    async with asyncio.timeout(within):
        while True:
            infos = await js.consumers_info(STREAM_NAME)
            waiting = [i for i in infos if i.config.durable_name and i.num_waiting]
            if len(waiting) >= count:
                return
            await asyncio.sleep(0.05)


async def durable_exists(js: JetStreamContext, durable: str, proc: subprocess.Popen[bytes],
                         log_path: Path, within: float = 60) -> None:  # fmt: skip
    """Until `proc` has made its durable (its signal handlers are set by then)."""
    async with asyncio.timeout(within):
        while True:
            assert proc.poll() is None, f"{durable} died:\n{log_path.read_text()}"
            try:
                await js.consumer_info(STREAM_NAME, durable)
                return
            except NotFoundError:
                await asyncio.sleep(0.1)


async def read_until(stream: asyncio.StreamReader, text: str, within: float = 60) -> str:
    """What `stream` gave up to the line holding `text`."""
    seen = ""
    async with asyncio.timeout(within):
        while text not in seen:
            line = await stream.readline()
            assert line, f"stream closed before {text!r}; got:\n{seen}"
            seen += line.decode()
    return seen


async def log_line(path: Path, text: str, after: int = 0, within: float = 60,
                   proc: subprocess.Popen[bytes] | None = None) -> str:  # fmt: skip
    """The first line of the log at `path`, past byte `after`, holding `text`;
    the test fails at once if `proc` (the log's writer) exits first."""
    async with asyncio.timeout(within):
        while True:
            tail = path.read_bytes()[after:].decode(errors="replace") if path.exists() else ""
            for line in tail.splitlines():
                if text in line:
                    return line
            assert proc is None or proc.poll() is None, path.read_text(errors="replace")
            await asyncio.sleep(0.1)
