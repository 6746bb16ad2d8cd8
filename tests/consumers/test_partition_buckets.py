"""Partitions by host bucket, on a real nats-server.

The stream stores each subject with its host's bucket (the server's
partition()); a partitioned durable filters on its own buckets, so the server
sends it only its own hosts. A stream made before the buckets holds subjects
as published: ensure_stream adds the transform, and the partitions share that
backlog by the rule of its time, so nothing is handled twice or never.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig, SubjectTransform

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Runtime
from snoopbus.consumers.settings import Partition
from snoopbus.proto import (
    STREAM_NAME,
    STREAM_SUBJECTS,
    ensure_stream,
    events_filter,
    parse_subject,
    stored_filters,
)
from snoopbus.proto.subjects import BUCKETS, host_bucket
from tests.support.consumers import FAST, Collector, running
from tests.support.events import bare_exec, publish
from tests.support.waits import until

HOSTS = [f"node-{i}.example.com" for i in range(40)]


def token(host: str) -> str:
    return host.replace(".", "_")  # these names have no other character host_token changes


@asynccontextmanager
async def partitions(url: str, parts: Sequence[Partition], collectors: Sequence[Collector],
                     ) -> AsyncIterator[list[Runtime]]:  # fmt: skip
    """One runtime per partition, each running its collector."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running(c, url, replace(FAST, partition=p)))
               for p, c in zip(parts, collectors, strict=True)]


async def stored_subjects(js: JetStreamContext) -> dict[str, int]:
    info = await js.stream_info(STREAM_NAME, subjects_filter=">")
    return dict(info.state.subjects or {})


async def test_the_server_buckets_hosts_as_host_bucket_does(stream: JetStreamContext) -> None:
    for host in HOSTS:
        await publish(stream, bare_exec(host=host))
    subjects = await stored_subjects(stream)
    assert len(subjects) == len(HOSTS)
    for subject in subjects:
        parts = parse_subject(subject)  # refuses a bucket that is not host_bucket's
        assert parts.stored and subject.split(".")[2] == str(host_bucket(parts.host or ""))
    assert len({host_bucket(token(h)) for h in HOSTS}) > 1


async def test_partitions_receive_only_their_hosts(
    nats_server: NatsServer, stream: JetStreamContext
) -> None:
    n = 3
    collectors = [Collector() for _ in range(n)]
    parts = [Partition(i, n) for i in range(n)]
    async with partitions(nats_server.url, parts, collectors) as runtimes:
        for rnd in range(3):
            for host in HOSTS:
                await publish(stream, bare_exec(f"r{rnd}", host=host))
        await until(lambda: sum(len(c.events) for c in collectors) == 3 * len(HOSTS), 20)
    for part, c, r in zip(parts, collectors, runtimes, strict=True):
        mine = {token(h) for h in HOSTS if part.owns(token(h))}
        assert mine and {token(e["host"]) for e in c.events} == mine
        assert r.counters.skipped == 0 and r.counters.fetched == 3 * len(mine)
        assert set(part.buckets or ()) == {b for b in range(BUCKETS) if b % n == part.index}


async def test_a_stream_from_before_the_buckets_is_upgraded_and_shared_exactly_once(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    await js.add_stream(StreamConfig(name=STREAM_NAME, subjects=STREAM_SUBJECTS,
                                     storage=StorageType.FILE))  # an earlier snoopbus's
    for host in HOSTS:
        await publish(js, bare_exec("old", host=host))
    info = await ensure_stream(js)
    assert info.config.subject_transform is not None
    for host in HOSTS:
        await publish(js, bare_exec("new", host=host))
    subjects = await stored_subjects(js)
    assert Counter(parse_subject(s).stored for s in subjects) == {False: 40, True: 40}
    # Every reader of the stream finds both: a lookup by subject, a filter.
    assert len(stored_filters(events_filter())) == 2

    parts = [Partition(0, 2), Partition(1, 2)]
    collectors = [Collector(), Collector()]
    for part in parts:  # their durables as an earlier snoopbus made them: filters as published
        await js.add_consumer(STREAM_NAME, ConsumerConfig(
            durable_name=part.durable(collectors[0].name), ack_policy=AckPolicy.EXPLICIT,
            filter_subject=collectors[0].filters[0]))  # fmt: skip
    async with partitions(nats_server.url, parts, collectors) as runtimes:
        await until(lambda: sum(len(c.events) for c in collectors) == 2 * len(HOSTS), 20)
        await asyncio.sleep(0.5)  # anything handled twice would show by now
    handled = Counter((e["host"], e["proc"]["comm"]) for c in collectors for e in c.events)
    assert handled == Counter({(h, era): 1 for h in HOSTS for era in ("old", "new")})
    for part, c, r in zip(parts, collectors, runtimes, strict=True):
        old = {token(h) for h in HOSTS if zlib.crc32(token(h).encode()) % 2 == part.index}
        new = {token(h) for h in HOSTS if host_bucket(token(h)) % 2 == part.index}
        got = Counter(e["proc"]["comm"] for e in c.events)
        assert got == {"old": len(old), "new": len(new)}
        # The old messages reached both partitions (skipped by one), the new only their own.
        assert r.counters.skipped == len(HOSTS) - len(old)
        assert r.counters.fetched == len(HOSTS) + len(new)
        info = await js.consumer_info(STREAM_NAME, r.durable)
        assert info.config.filter_subjects == stored_filters(c.filters[0], part.buckets)


async def test_a_stream_with_another_transform_is_left_as_it_is_and_said(
    js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = SubjectTransform(src="snoopbus.events.>", dest="snoopbus.ev.>")
    await js.add_stream(StreamConfig(name=STREAM_NAME, subjects=STREAM_SUBJECTS,
                                     subject_transform=theirs))  # fmt: skip
    info = await ensure_stream(js)
    assert info.config.subject_transform == theirs
    assert "set the stream's subject_transform" in caplog.text
