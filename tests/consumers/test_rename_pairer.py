"""The rename pairer against a real nats-server: in process, and as a process we kill."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Partition, Runtime, Settings
from snoopbus.consumers.pairing import NS, PairTable
from snoopbus.consumers.rename import HALVES_ID, OUTPUT_TYPES, RenamePairer
from snoopbus.proto import (
    STREAM_NAME,
    decode_batch,
    events_filter,
    stored_filters,
)
from tests.support.events import publish, rename_half
from tests.support.waits import durable_pulled, durable_settled

FAST = Settings(batch=64, fetch_timeout=0.2, concurrency=1)
WINDOW = 0.4


BASE = 1_700_000_000 * NS  # event time of cookie 0


def half(kind: str, cookie: int, host: str = "h1", at: float | None = None) -> dict:
    """A half at `at` seconds of event time after BASE (default: 1 ms per cookie)."""
    ts = BASE + (cookie * NS // 1000 if at is None else round(at * NS))
    return rename_half(kind, cookie, host=host, ts=ts)


def pair(cookie: int, host: str = "h1") -> tuple[dict, dict]:
    return half("moved_from", cookie, host), half("moved_to", cookie, host)


async def outputs(js: JetStreamContext) -> list[tuple[dict, dict[str, str]]]:
    """Everything the pairer stored so far: (event, its message's headers)."""
    info = await js.add_consumer(
        STREAM_NAME,
        ConsumerConfig(
            filter_subjects=[f for t in OUTPUT_TYPES
                             for f in stored_filters(events_filter(type=t))],
            ack_policy=AckPolicy.NONE, inactive_threshold=5.0, mem_storage=True,
        ),
    )  # fmt: skip
    got: list[tuple[dict, dict[str, str]]] = []
    if info.num_pending:
        sub = await js.pull_subscribe_bind(consumer=info.name, stream=STREAM_NAME)
        read = 0
        while read < info.num_pending:
            for msg in await sub.fetch(1000, timeout=5):
                read += 1
                got += [(event, msg.headers or {}) for event in decode_batch(msg.data)]
        await sub.unsubscribe()
    await js.delete_consumer(STREAM_NAME, info.name)
    return got


async def wait_outputs(js: JetStreamContext, n: int, limit: float = 20) -> list[dict]:
    async with asyncio.timeout(limit):
        while len(got := await outputs(js)) < n:
            await asyncio.sleep(0.05)
    return [event for event, _ in got]


async def settled(js: JetStreamContext, durable: str = "rename", limit: float = 20) -> None:
    await durable_settled(js, durable, limit)


@asynccontextmanager
async def pairer(
    url: str, window: float = WINDOW, settings: Settings = FAST, **kw: int
) -> AsyncIterator[tuple[RenamePairer, Runtime]]:
    p = RenamePairer(window=window, settings=settings, **kw)
    runtime = Runtime(p, servers=url)
    task = asyncio.create_task(runtime.run())
    async with asyncio.timeout(10):
        await runtime.ready.wait()
    try:
        yield p, runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 10)


def by_type(events: list[dict]) -> Counter[str]:
    return Counter(e["type"] for e in events)


async def test_pairs_in_order_and_reversed(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    src, dst = pair(1)
    src2, dst2 = pair(2)
    async with pairer(nats_server.url) as (p, rt):
        await publish(stream, src)
        await publish(stream, dst)
        await publish(stream, dst2)  # the other way round
        await publish(stream, src2)
        got = await wait_outputs(stream, 2)
        await settled(stream)
    assert by_type(got) == {"renamed": 2}
    first = next(e for e in got if e["cookie"] == 1)
    assert first["file"] == {"path": "/moved_to/1", "old_path": "/moved_from/1"}
    assert first["proc"] == {"pid": 7, "comm": "mv"}
    assert first["id"] == "h1-moved_from-1+h1-moved_to-1"
    assert p.stats.paired == 2 and rt.counters.processed == 4


async def test_output_names_the_halves_it_resolves(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    async with pairer(nats_server.url):
        for event in pair(3):
            await publish(stream, event)
        await wait_outputs(stream, 1)
    ((_, headers),) = await outputs(stream)
    assert headers[HALVES_ID] == "h1-moved_from-3 h1-moved_to-3"
    assert headers["Nats-Msg-Id"] == "h1.rename:h1-moved_from-3+h1-moved_to-3"


async def test_interleaved_across_hosts_in_batches(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    hosts = ["a.example", "b.example", "c"]
    async with pairer(nats_server.url) as (p, _):
        # The same cookies on every host; halves batched per host and type.
        for host in hosts:
            await publish(stream, *(half("moved_to", c, host) for c in range(20)))
        for host in reversed(hosts):
            await publish(stream, *(half("moved_from", c, host) for c in range(20)))
        got = await wait_outputs(stream, 60)
        await settled(stream)
    assert by_type(got) == {"renamed": 60}
    assert all(e["file"]["path"] == f"/moved_to/{e['cookie']}" for e in got)
    assert sorted((e["host"], e["cookie"]) for e in got) == sorted(
        (h, c) for h in hosts for c in range(20)
    )
    assert p.stats.paired == 60


async def test_duplicate_deliveries_produce_one_output(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    src, dst = pair(4)
    async with pairer(nats_server.url) as (p, _):
        await publish(stream, src)
        await publish(stream, src)  # a second stream message, same half
        await publish(stream, dst)
        await wait_outputs(stream, 1)
        await publish(stream, dst)  # late duplicate, after the pair
        await settled(stream)
        await asyncio.sleep(WINDOW * 2)  # past the window: no false moved_in may follow
    got = [e for e, _ in await outputs(stream)]
    assert by_type(got) == {"renamed": 1}
    assert p.stats.duplicates == 2


async def test_a_lone_half_becomes_moved_out_or_moved_in(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    async with pairer(nats_server.url) as (p, rt):
        await publish(stream, half("moved_from", 5))
        await publish(stream, half("moved_to", 6))
        async with asyncio.timeout(10):
            while len(p.table) < 2:
                await asyncio.sleep(0.02)
        info = await stream.consumer_info(STREAM_NAME, "rename")
        # Their host's stream moves the window past them: a pair, 0.5 s later each time.
        for cookie in range(7, 7 + 10):
            for event in pair(cookie):
                event["ts"] += (cookie - 6) * NS // 2
                await publish(stream, event)
        got = await wait_outputs(stream, 12)
        await settled(stream)
    got = [e for e in got if e["type"] != "renamed"]
    assert by_type(got) == {"moved_out": 1, "moved_in": 1}
    out = next(e for e in got if e["type"] == "moved_out")
    assert out["file"]["path"] == "/moved_from/5" and out["id"] == "h1-moved_from-5+moved_out"
    assert p.stats.moved_out == p.stats.moved_in == 1
    assert info.num_ack_pending == 2  # held while they waited
    assert rt.counters.processed == 22  # and acked once they gave up


async def test_a_lone_half_waits_for_its_hosts_progress_not_the_clock(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    async with pairer(nats_server.url, window=WINDOW) as (p, _):
        await publish(stream, half("moved_from", 1, at=10))
        await publish(stream, *(half("moved_to", c, "other", at=60 + c / 100) for c in range(5)))
        await asyncio.sleep(WINDOW * 5)  # five windows by the wall clock; another host moved on
        assert await outputs(stream) == [] and len(p.table) == 6
        # Its own host 0.3 s on (less than the window), then past it.
        await publish(stream, half("moved_to", 2, at=10 + WINDOW * 0.75))
        await asyncio.sleep(WINDOW * 2)
        assert await outputs(stream) == []
        await publish(stream, half("moved_to", 3, at=10 + WINDOW))
        got = await wait_outputs(stream, 1)
    assert [(e["type"], e["cookie"]) for e in got] == [("moved_out", 1)]
    assert p.stats.quiet == 0  # by event time


async def test_a_host_gone_quiet_still_gets_its_last_halves_out(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    """Nothing more comes from the host: once the pairer has had nothing to
    read for idle_after seconds, the half gives up all the same."""
    idle = 1.5
    async with pairer(nats_server.url, window=WINDOW, idle_after=idle) as (p, _):
        for event in pair(1):
            await publish(stream, event)
        await publish(stream, half("moved_from", 2))
        got = await wait_outputs(stream, 1)
        assert by_type(got) == {"renamed": 1}
        started = asyncio.get_running_loop().time()
        got = await wait_outputs(stream, 2)
        waited = asyncio.get_running_loop().time() - started
        await settled(stream)
    assert by_type(got) == {"renamed": 1, "moved_out": 1}
    assert waited >= idle * 0.8, waited  # the quiet clock, not the window, let it go
    assert p.stats.quiet == 1 and len(p.table) == 0


async def test_a_backlog_of_minutes_gives_no_false_moved_out_or_moved_in(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    """Two minutes of renames from four hosts are stored before the pairer
    starts. One host's moved_to messages each reach the stream thousands of
    halves of other hosts after its moved_from (far more than a window's
    worth of reading), yet within its own stream they are adjacent. Lone
    halves are spread through all of it. Every pair must come out renamed
    exactly once, every lone half as moved_out/moved_in, nothing else."""
    rng = random.Random(15)
    busy = ["b1", "b2", "b3"]
    blocks, per_block, far_per_block = 12, 300, 20
    lone: set[tuple[str, int]] = set()
    pairs: set[tuple[str, int]] = set()
    stored: list[list[dict]] = []
    for b in range(blocks):
        at = b * 10.0  # a block every 10 s of event time: 2 minutes in all
        far_from, far_to = [], []
        for i in range(far_per_block):
            c = b * 1000 + i
            pairs.add(("far", c))
            far_from.append(half("moved_from", c, "far", at=at + i * 0.01))
            far_to.append(half("moved_to", c, "far", at=at + i * 0.01))
        stored.append(far_from)
        for host in busy:
            froms, tos = [], []
            for i in range(per_block):
                c = b * 1000 + i
                t = at + i * 0.02
                if rng.random() < 0.02:  # lone, either kind
                    lone.add((host, c))
                    (froms if c % 2 else tos).append(
                        half("moved_from" if c % 2 else "moved_to", c, host, at=t))
                else:
                    pairs.add((host, c))
                    froms.append(half("moved_from", c, host, at=t))
                    tos.append(half("moved_to", c, host, at=t))
            for k in range(0, per_block, 100):  # as a collector batches: both kinds close
                chunk = [m for m in (froms[k : k + 100], tos[k : k + 100]) if m]
                rng.shuffle(chunk)
                stored += chunk
        stored.append(far_to)  # 900 halves of other hosts after its partners
    lone.add(("far", 99_999))  # and one lone half of `far`, at the end of its stream
    stored.append([half("moved_from", 99_999, "far", at=blocks * 10.0)])
    for events in stored:
        await publish(stream, *events)
    halves = sum(len(m) for m in stored)
    # A short window by the wall clock too: reading this backlog takes longer.
    async with pairer(nats_server.url, window=0.3, idle_after=2.0) as (p, _):
        got = await wait_outputs(stream, len(pairs) + len(lone), limit=120)
        await settled(stream, limit=30)
        await asyncio.sleep(0.5)
        got = [e for e, _ in await outputs(stream)]
    renamed = Counter((e["host"], e["cookie"]) for e in got if e["type"] == "renamed")
    unpaired = Counter((e["host"], e["cookie"]) for e in got if e["type"] != "renamed")
    fig = {"halves": halves, "pairs": len(pairs), "lone": len(lone),
           "renamed": sum(renamed.values()), "unpaired": sum(unpaired.values()),
           "false_unpaired": sum(n for k, n in unpaired.items() if k not in lone)}  # fmt: skip
    print(f"\nBACKLOG rename pairer over 2 min of event time: {fig}")
    assert renamed == Counter(pairs)  # each pair once
    assert unpaired == Counter(lone)  # only the lone halves, each once
    assert len({e["id"] for e in got}) == len(got)
    assert p.stats.evicted == 0


async def test_a_flood_of_lone_halves_stays_bounded(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    async with pairer(nats_server.url, window=30, max_pending=50) as (p, _):
        for start in range(0, 500, 50):
            await publish(stream, *(half("moved_from", c) for c in range(start, start + 50)))
        got = await wait_outputs(stream, 450)
        assert len(p.table) == 50
    assert by_type(got) == {"moved_out": 450}
    assert p.stats.evicted == 450
    assert sorted(e["cookie"] for e in got) == list(range(450))  # the oldest gave up first


async def test_partitions_split_hosts_never_pairs(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    hosts = [f"host{i}" for i in range(8)]
    s0 = replace(FAST, partition=Partition(0, 2))
    s1 = replace(FAST, partition=Partition(1, 2))
    async with (
        pairer(nats_server.url, settings=s0) as (p0, r0),
        pairer(nats_server.url, settings=s1) as (p1, r1),
    ):
        for host in hosts:
            await publish(stream, *(half("moved_from", c, host) for c in range(10)))
            await publish(stream, *(half("moved_to", c, host) for c in range(10)))
        got = await wait_outputs(stream, 80)
        await settled(stream, "rename-p0of2")
        await settled(stream, "rename-p1of2")
    assert by_type(got) == {"renamed": 80}
    assert p0.stats.paired and p1.stats.paired
    assert p0.stats.paired + p1.stats.paired == 80
    # The server sent each partition its own hosts' messages only (two per host).
    for part, runtime in ((s0.partition, r0), (s1.partition, r1)):
        assert runtime.counters.skipped == 0
        assert runtime.counters.fetched == 2 * sum(part.owns(h) for h in hosts)


# -- the pairer as a process: SIGKILL and SIGTERM ----------------------------


@pytest.fixture
def spawn(spawn_consumer: Callable[..., subprocess.Popen]) -> Callable[..., subprocess.Popen]:
    return lambda *args: spawn_consumer("rename", "--batch", "64", *args)


async def test_sigkill_mid_stream_loses_no_half_and_duplicates_no_rename(
    nats_server: NatsServer, stream: JetStreamContext, spawn: Callable[..., subprocess.Popen]
) -> None:
    n, block = 3000, 150
    rng = random.Random(4)
    messages: list[list[dict]] = []
    for first_cookie in range(0, n, block):
        batch: list[list[dict]] = []
        for h in range(3):
            host = f"h{h}"
            froms = [c for c in range(first_cookie, first_cookie + block) if c % 3 == h]
            tos = froms[:]
            rng.shuffle(froms)
            rng.shuffle(tos)
            # Different message boundaries for the two kinds: a message's
            # partners are spread over several others, so one can be acked
            # while a message holding its partners is not.
            batch += [
                [half("moved_from", c, host) for c in froms[i : i + 7]] for i in range(0, 50, 7)
            ]
            batch += [
                [half("moved_to", c, host) for c in tos[i : i + 11]] for i in range(0, 50, 11)
            ]
        rng.shuffle(batch)  # partners stay near each other: well inside the window
        messages += batch
    args = ("--window", "1", "--ack-wait", "2")
    first = spawn(*args)
    await durable_pulled(stream, "rename")
    killed_at = None
    kills = before_kill = 0
    for i, events in enumerate(messages):
        await publish(stream, *events)
        if killed_at is None and i > len(messages) // 3:
            before_kill = len(await outputs(stream))
            if before_kill > 200:
                os.kill(first.pid, signal.SIGKILL)  # no chance to ack, release or flush
                first.wait()
                killed_at = i
                kills += 1
    assert killed_at is not None, "the pairer was never seen working"
    spawn(*args)
    got = await wait_outputs(stream, n, limit=60)
    await settled(stream, limit=30)
    got = [e for e, _ in await outputs(stream)]
    types = by_type(got)
    pairs = Counter(e["cookie"] for e in got if e["type"] == "renamed")
    fig = {"halves": sum(len(m) for m in messages), "kills": kills,
           "outputs_before_kill": before_kill, "outputs": len(got), "renamed": types["renamed"],
           "pairs_renamed": len(pairs), "unpaired": len(got) - types["renamed"],
           "duplicated": sum(v - 1 for v in pairs.values())}  # fmt: skip
    print(f"\nFAULT rename pairer SIGKILLed x{kills} mid-stream: {fig}")
    assert types == {"renamed": n}  # no false moved_in/moved_out either
    assert sorted(e["cookie"] for e in got) == list(range(n))


async def test_sigterm_releases_held_halves_for_the_next_run(
    nats_server: NatsServer,
    stream: JetStreamContext,
    spawn: Callable[..., subprocess.Popen],
    tmp_path: Path,
) -> None:
    proc = spawn("--window", "30")
    await durable_pulled(stream, "rename")
    await publish(stream, half("moved_from", 9))
    async with asyncio.timeout(10):
        while (await stream.consumer_info(STREAM_NAME, "rename")).num_ack_pending != 1:
            await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    # Nak'd, not acked: the server redelivers it to whoever pulls next.
    log = Path(tmp_path / "rename-0.log").read_text()
    assert "released=1" in log
    async with pairer(nats_server.url, window=30):
        await publish(stream, half("moved_to", 9))
        # Well inside the 10 s ack_wait: it was handed back, not timed out.
        got = await wait_outputs(stream, 1, limit=5)
        await settled(stream)
    assert by_type(got) == {"renamed": 1}


async def test_a_batch_paired_slowly_is_not_redelivered(
    nats_server: NatsServer, stream: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a host whose CPUs are all busy, pairing a batch can take longer than
    ack_wait: the held and waiting messages must still hear from the pairer
    meanwhile, or the server hands them out again and halves come twice."""
    for cookie in range(40):  # stored first: the pairer fetches full batches
        for event in pair(cookie):
            await publish(stream, event)
    add_many = PairTable.add_many

    def starved(*args: Any, **kw: Any) -> Any:
        time.sleep(0.06)  # a CPU-starved message: a batch of 64 takes ~4 ack_waits
        return add_many(*args, **kw)

    monkeypatch.setattr(PairTable, "add_many", starved)
    async with pairer(nats_server.url, settings=replace(FAST, ack_wait=1.0)) as (_, rt):
        got = await wait_outputs(stream, 40, limit=60)
        await settled(stream, limit=60)
    assert rt.counters.fetched == 80, "the server handed messages out again"
    assert by_type(got) == {"renamed": 40}
    assert rt.counters.processed == 80
