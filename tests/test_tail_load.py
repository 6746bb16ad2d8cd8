"""`snoopbus tail` under load, with a reader slower than the events: it lags,
it does not lose; what the stream itself dropped before tail read it is said,
exactly. A real nats-server, a real tail process, a real pipe read slowly."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    STREAM_NAME,
    STREAM_SUBJECTS,
    encode_batch,
    ensure_stream,
    event_subject,
)

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]
PAUSE_S = 12.0  # the reader takes nothing this long: past the server's 10 s write deadline
_MISSED = re.compile(rb"\((\d+) in all\)")


def event(i: int, argv_bytes: int = 40) -> dict:
    return {"v": 1, "id": f"load-{i}", "ts": 1_700_000_000_000_000_000 + i, "host": "h1",
            "type": "exec", "proc": {"pid": 100 + i % 30000, "comm": "sh", "exe": "/bin/sh",
                                     "argv": ["sh", "-c", "x" * argv_bytes]}}  # fmt: skip


async def start_tail(url: str, js: JetStreamContext, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *SNOOPBUS, "tail", "--nats", url, "--json", "--no-alerts", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )  # fmt: skip
    async with asyncio.timeout(20):  # its consumer is on the server: it reads from here on
        while not any(c.name.startswith("tail-") for c in await js.consumers_info(STREAM_NAME)):
            await asyncio.sleep(0.05)
    return proc


async def publish(nc: Client, js: JetStreamContext, events: list[dict], per_msg: int) -> int:
    """As fast as the client goes (core publish: the stream stores it); the message count."""
    messages = 0
    for start in range(0, len(events), per_msg):
        await nc.publish(event_subject("h1", "exec"), encode_batch(events[start:start + per_msg]))
        messages += 1
        if messages % 1000 == 0:
            await nc.flush()
    await nc.flush()
    async with asyncio.timeout(30):  # every message stored before the reader wakes
        while (await js.stream_info(STREAM_NAME)).state.last_seq < messages:
            await asyncio.sleep(0.05)
    return messages


async def read_ids(
    proc: asyncio.subprocess.Process, ids: list[int], until: object, within: float
) -> None:
    """Event ids from tail's lines onto `ids` until `until()`; a clear failure after `within` s."""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(within):
            while not until():  # type: ignore[operator]
                line = await proc.stdout.readline()
                assert line, "tail closed its output"
                ids.append(int(json.loads(line)["id"].removeprefix("load-")))
    except TimeoutError:
        pytest.fail(f"tail printed {len(ids)} events and then nothing for {within}s "
                    f"(last id {ids[-1] if ids else None})")


async def stop(proc: asyncio.subprocess.Process, stderr: bool = True) -> bytes:
    """Terminate tail; its stderr, unless something else reads it."""
    if proc.returncode is None:
        proc.terminate()
    if not stderr:
        await asyncio.wait_for(proc.wait(), 30)
        return b""
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return err


async def test_a_slow_reader_misses_nothing(
    nats_server: NatsServer, nc: Client, js: JetStreamContext
) -> None:
    """20 MB published while tail's output is not read at all for longer than the
    server waits on a client that does not read: a core subscriber is cut off
    as a slow consumer here; tail gives every event, once, in order."""
    await ensure_stream(js)
    proc = await start_tail(nats_server.url, js)
    events = [event(i, argv_bytes=200) for i in range(80_000)]
    try:
        await publish(nc, js, events, per_msg=4)
        await asyncio.sleep(PAUSE_S)  # the reader is away; tail's pipe is full
        ids: list[int] = []
        await read_ids(proc, ids, lambda: len(ids) >= len(events), 60)
    finally:
        err = await stop(proc)
    assert ids == list(range(len(events))), "lost, repeated or out of order"
    assert b"missed" not in err and b"Traceback" not in err, err.decode(errors="replace")


async def test_what_the_stream_dropped_unread_is_counted_exactly(
    nats_server: NatsServer, nc: Client, js: JetStreamContext
) -> None:
    """The stream keeps 2,000 messages; 20,000 come while tail's reader is away.
    What tail prints and what it says it missed add up to what was published."""
    await js.add_stream(StreamConfig(name=STREAM_NAME, subjects=list(STREAM_SUBJECTS),
                                     max_msgs=2_000, storage=StorageType.FILE))  # fmt: skip
    proc = await start_tail(nats_server.url, js)
    assert proc.stderr is not None
    missed: list[int] = [0]

    async def watch_stderr() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            if m := _MISSED.search(line):
                missed[0] = int(m[1])

    errors = asyncio.create_task(watch_stderr())
    published = 20_000
    try:
        await publish(nc, js, [event(i) for i in range(published)], per_msg=1)
        await asyncio.sleep(2)  # the reader is away a while longer
        ids: list[int] = []
        await read_ids(proc, ids, lambda: ids and ids[-1] == published - 1, 60)
        async with asyncio.timeout(10):
            while len(ids) + missed[0] < published:  # the count comes with the jump
                await asyncio.sleep(0.05)
    finally:
        await stop(proc, stderr=False)
        await errors
    assert missed[0] > 0, "the reader was away: the stream must have dropped some"
    assert ids == sorted(set(ids)), "repeated or out of order"
    assert len(ids) + missed[0] == published, (len(ids), missed[0])
    # What it printed is what the stream still held when it got there: no hole after.
    assert ids[-(published - ids[-1] - 1) - 2_000:] == list(range(published - 2_000, published))


async def test_a_consumer_deleted_under_tail_is_recreated_where_it_was(
    nats_server: NatsServer, nc: Client, js: JetStreamContext
) -> None:
    """The server drops tail's consumer (tail stopped with Ctrl-Z past the inactivity
    limit, a server restart): tail makes a new one after its last message."""
    await ensure_stream(js)
    proc = await start_tail(nats_server.url, js)
    try:
        await publish(nc, js, [event(i) for i in range(500)], per_msg=5)
        ids: list[int] = []
        await read_ids(proc, ids, lambda: len(ids) >= 500, 30)
        [name] = [c.name for c in await js.consumers_info(STREAM_NAME)]
        await js.delete_consumer(STREAM_NAME, name)
        for i in range(500, 1000):
            await nc.publish(event_subject("h1", "exec"), encode_batch([event(i)]))
        await read_ids(proc, ids, lambda: len(ids) >= 1000, 30)
    finally:
        err = await stop(proc)
    assert ids == list(range(1000)), "lost, repeated or out of order"
    assert b"Traceback" not in err, err.decode(errors="replace")


@pytest.mark.parametrize("subject", [None, "other.>"])
async def test_nothing_to_follow_is_one_clear_line(
    nats_server: NatsServer, js: JetStreamContext, subject: str | None
) -> None:
    if subject:
        await ensure_stream(js)
    proc = await asyncio.create_subprocess_exec(
        *SNOOPBUS, "tail", "--nats", nats_server.url, *(["--subject", subject] if subject else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    text = err.decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith("snoopbus tail:")]
    assert "Traceback" not in text
    if subject:
        assert line.startswith("snoopbus tail: cannot follow other.> on stream SNOOPBUS: ")
    else:
        assert line == ("snoopbus tail: no JetStream stream SNOOPBUS on this server: the "
                        "collector (or `snoopbus up`) creates it when it first starts; start "
                        "one, or check --nats")  # fmt: skip
