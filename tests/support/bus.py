"""Reading back what the stream holds: stored messages, their events, dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from snoopbus.proto import STREAM_NAME, decode_batch, dlq_subject, stored_filters


async def stored_messages(url: str, subject: str, within: float = 5) -> list[Msg]:
    """Every message the stream holds under `subject`, in order (read_stored)."""
    nc = await nats.connect(url)
    try:
        return await read_stored(nc, subject, within)
    finally:
        await nc.close()


async def read_stored(nc: Client, subject: str, within: float = 5) -> list[Msg]:
    """stored_messages on a connection of the caller's (one with credentials).
    Each message's num_pending says how many follow it; the consumer's own
    num_pending would not do, as it leaves out what the server already pushed
    to the client."""
    out: list[Msg] = []
    sub = await nc.jetstream().subscribe(stored_filters(subject)[0], ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=within)
            except nats.errors.TimeoutError:
                break  # nothing (more) stored
            out.append(msg)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


async def stream_events(url: str, subject: str) -> list[dict[str, Any]]:
    """Every event stored under `subject`, read back message by message."""
    return [ev for msg in await stored_messages(url, subject) for ev in decode_batch(msg.data)]


async def dead_letters(js: JetStreamContext, consumer: str, n: int,
                       within: float = 20) -> list[Msg]:  # fmt: skip
    """The first `n` dead letters `consumer` wrote, in order."""
    sub = await js.pull_subscribe(dlq_subject(consumer), stream=STREAM_NAME)
    got: list[Msg] = []
    try:
        async with asyncio.timeout(within):
            while len(got) < n:
                try:
                    got += await sub.fetch(n - len(got), timeout=1)
                except TimeoutError:
                    pass
    finally:
        await sub.unsubscribe()
    return got
