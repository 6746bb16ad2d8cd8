"""Isolation (issue 15): a flood cannot blind the collector.

A flooder (tests/bench/flood_load.c) runs as nobody on CPU 0 while a victim
(root) on CPU 1 makes a directory every 5 ms and runs /bin/true every 20 ms.
Every event of the victim is delivered, its execs and exits too; of the
flooder's, per type, delivered + coalesced (`count` beyond 1) + summarized +
counted lost (summary events) is what the flooder itself counted, exactly.
"""

from __future__ import annotations

import asyncio
import mmap
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.collector import probes
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache
from snoopbus.collector.ringbuf import RingBuffer
from snoopbus.collector.summary import SummaryDrain, read_overflow
from snoopbus.proto import Event, validate_event
from tests.bench.flood import (
    build,
    finish_flood,
    run_victim,
    settle,
    start_flood,
    stored_events,
    tally,
)
from tests.support.collector import start_collector
from tests.support.processes import stop_process

pytestmark = pytest.mark.kernel


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory nobody can reach (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="snoopbus-flood-test-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_fair_share_summarizes_the_excess_exactly(open_tmp: Path) -> None:
    """The probes alone, read here by a Python loop slower than the flooder, so
    the ring buffer fills and fair shares apply. The flooder's excess over
    1,000 records/s is summarized, counted per type; the victim (another
    source, well within its share) loses nothing."""
    exe = build(open_tmp)
    limits = probes.ProbeLimits(ringbuf_pages=256, source_rate=1000, source_burst_ms=100)
    loaded = probes.load(limits)
    ring = RingBuffer(loaded.bpf[b"events"].map_fd, limits.ringbuf_pages * mmap.PAGESIZE)
    consumed = loaded.consumer_position()
    builder = EventBuilder("flood-test", "i", ProcCache())
    events: list[Event] = []
    stop = threading.Event()

    def pump() -> None:
        while True:
            last = stop.is_set()
            select.select([ring.fileno()], [], [], 0.05)  # as the reader: data or the timer
            for buf in ring.drain():
                events.extend(ev for _, ev in builder.build_raw(buf))
            consumed(ring.positions()[0])
            if last:
                return

    reader = threading.Thread(target=pump)
    reader.start()
    try:
        flood_dir = open_tmp / "flood"
        flooder = start_flood(exe, flood_dir, "unique", 3.0)
        time.sleep(0.5)
        victim = run_victim(open_tmp / "victim", 1.5)
        flood = finish_flood(flooder, 60)
        time.sleep(0.5)
    finally:
        stop.set()
        reader.join()
        summaries, _ = SummaryDrain(builder).drain(read_overflow(loaded.bpf[b"overflow"]))
        ring.close()
        loaded.close()
    for _, ev in summaries:
        validate_event(ev)
    t = tally(events + [ev for _, ev in summaries], victim, flood_dir, exe)
    assert (t.mkdirs, t.execs, t.exits) == (len(victim["dirs"]), len(victim["kids"]),
                                            len(victim["kids"]))
    assert sum(t.summarized.values()) > 0, t
    for type_, generated in flood.generated.items():
        assert t.accounted(type_) == generated, (type_, t)


@pytest.mark.parametrize("mode", ["same", "unique", "children", "threads"])
async def test_a_flood_blinds_no_one_and_is_accounted_exactly(
    mode: str, nats_server: NatsServer, nc: Client, tmp_path: Path, open_tmp: Path
) -> None:
    exe = build(open_tmp)
    running = await start_collector(nats_server.url, nc, tmp_path)
    try:
        flood_dir = open_tmp / "flood"
        flooder = start_flood(exe, flood_dir, mode, 3.0)
        await asyncio.sleep(0.5)
        victim = await asyncio.to_thread(run_victim, open_tmp / "victim", 1.5)
        flood = await asyncio.to_thread(finish_flood, flooder, 60)
        await settle(nc.jetstream())
    finally:
        assert stop_process(running.process) == 0, running.log()
    events = await stored_events(nc.jetstream(), running.host)
    t = tally(events, victim, flood_dir, exe)
    # Exec and exit have a reserve in the ring buffer: never lost to file traffic;
    # the victim's files get through too: the flooder's are coalesced (one file)
    # or held to its fair share (unique names, children, threads: one source, uid
    # nobody), which leaves the ring buffer room for everyone else's.
    assert (t.execs, t.exits) == (len(victim["kids"]), len(victim["kids"])), t
    assert t.mkdirs == len(victim["dirs"]), t
    for type_, generated in flood.generated.items():
        assert t.accounted(type_) == generated, (type_, t)
    if mode in ("same", "threads"):  # one file: coalesced in the kernel, a few events with counts
        assert t.coalesced["close_write"] > t.delivered["close_write"], t


async def test_with_a_tiny_ring_buffer_loss_is_counted_per_process_and_execs_still_go(
    nats_server: NatsServer, nc: Client, tmp_path: Path, open_tmp: Path
) -> None:
    """A one-page ring buffer overflows under the flood: exec and exit
    records have their reserve in it and all arrive; what the ring had
    no room for is counted (summary `lost`, per process and type), and nothing
    is counted twice: the flooder's accounting holds exactly, what its fair
    share held back (summarized) and what the ring had no room for (lost)
    apart, with the ring always under pressure."""
    exe = build(open_tmp)
    running = await start_collector(nats_server.url, nc, tmp_path, "--ringbuf-pages", "1")
    try:
        flood_dir = open_tmp / "flood"
        flooder = start_flood(exe, flood_dir, "unique", 3.0)
        await asyncio.sleep(0.5)
        victim = await asyncio.to_thread(run_victim, open_tmp / "victim", 1.5)
        flood = await asyncio.to_thread(finish_flood, flooder, 60)
        await settle(nc.jetstream())
    finally:
        assert stop_process(running.process) == 0, running.log()
    events = await stored_events(nc.jetstream(), running.host)
    t = tally(events, victim, flood_dir, exe)
    assert (t.execs, t.exits) == (len(victim["kids"]), len(victim["kids"])), t
    assert sum(t.lost.values()) + sum(t.summarized.values()) > 0, t
    for type_, generated in flood.generated.items():
        assert t.accounted(type_) == generated, (type_, t)
