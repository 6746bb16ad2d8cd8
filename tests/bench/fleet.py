"""Benchmark: a fleet, simulated — the aggregate rate the scaled-out consumers keep up with.

    .venv/bin/python -m tests.bench.fleet                      # 200 hosts; 1, 2, 4 of each
    .venv/bin/python -m tests.bench.fleet --hosts 500 --seconds 30 --rates 5000,10000,20000

Starts a 3-node NATS cluster on loopback (three nats-servers routed to each
other, JetStream each with its own store in a temporary folder) and creates
the stream with `[stream] replicas` = 3. N hosts (tests/bench/fleet_load.py)
replay one recorded mix (execs, creates, writes, deletes, renames as
moved_from/moved_to pairs), each under its own name, batched per host and
type as a collector sends, at an aggregate rate. For 1, 2 and 4 instances of
each consumer group, spread over the three nodes:

- archive: one process per partition (`--partition I/N`, a durable and a
  folder each; `--roll-seconds` from `--archive-roll`, 10: its acks wait for
  the commit, so its lag holds a roll's worth of messages, and `--drain` must
  exceed it; a commit writes one file, every host in it);
- rename: one pairer per partition;
- alert: one alerter per partition (the default rules; host health off:
  simulated hosts send no heartbeats): a host's throttle windows and
  correlation groups live in one of them, so the alerts do not depend on N.

For each rate (`--rates`, ascending) it sends for `--seconds`, samples every
durable's lag (pending + unacked, in messages) each second, and then waits
up to `--drain` s for every durable to be empty. A group kept up when it was
empty again within that time; the search for an instance count stops at the
first rate a group (or the cluster, taking the publishes) could not keep up
with. Per step it prints the offered and achieved rates, each group's
intake during the load (events/s at or below the last sequence delivered
to the durable owning their host), its peak and end lag and its drain time,
and the CPU of every process over the step. After the last step of a count
it waits (up to `--catchup` s) until every group is empty and says when,
then stops the consumers and prints the exactly-once accounting: archive
rows against what was sent, renamed events (archived and in the stream)
against pairs, alerter messages processed against those their durables took,
alerts archived against alerts stored.

All of it shares this machine's CPUs: on 2 cores, 3 replicating servers, a
publisher and 3 x N consumers are CPU-bound long before the consumers are,
so more instances cannot grow the rate linearly here; the events per
CPU-second of each group are the figure that carries over to more cores.
Everything started is stopped by pid and its folder removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.alert.logsources import all_event_types
from snoopbus.consumers.settings import Partition
from snoopbus.proto import (
    STREAM_NAME,
    decode_batch,
    ensure_stream,
    events_filter,
    host_token,
    stored_filters,
)
from snoopbus.proto.msgid import ID_HEADER
from snoopbus.proto.stream_limits import StreamLimits
from tests.support.natsd import cluster_args
from tests.support.processes import free_port

from . import fleet_load
from .backlog import _cpu_s
from .fleet_load import FRAMES, RENAME_TYPES, Fleet, Sent, record

GROUPS = ("archive", "rename", "alert")
TAKES = {"rename": frozenset(RENAME_TYPES), "alert": frozenset(all_event_types())}  # else all
PUBLISH_ACK_S = 10.0  # a publish unanswered this long is sent again
KEPT_UP_PUBLISH = 0.9  # achieved/offered below this: the cluster did not take the load


# -- the cluster and the consumers --------------------------------------------------


@contextmanager
def cluster(work: Path, size: int = 3) -> Iterator[list[NatsServer]]:
    """`size` nats-servers routed to each other, stopped (by pid) on the way out."""
    routes = [free_port() for _ in range(size)]
    nodes = [NatsServer(work / f"nats-{i + 1}",
                        extra_args=cluster_args("fleet", f"nats-{i + 1}", routes[i], routes))
             for i in range(size)]  # fmt: skip
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def replicated_stream(js: JetStreamContext, replicas: int) -> None:
    """The stream, once the cluster has a JetStream meta leader to create it."""
    async with asyncio.timeout(60):
        while True:
            try:
                info = await ensure_stream(js, limits=StreamLimits(replicas=replicas))
                assert info.config.num_replicas == replicas
                return
            except (nats.errors.Error, OSError):
                await asyncio.sleep(0.5)


@dataclass
class Member:
    """One consumer process of a group."""

    group: str
    label: str
    durable: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] = field(init=False)  # started when made
    restarts: int = 0  # exited while starting (a busy cluster's API timing out) and started again

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)  # fmt: skip
        return self.proc


@dataclass
class Consumers:
    instances: int
    members: list[Member] = field(default_factory=list)
    archive_dirs: list[Path] = field(default_factory=list)

    def durables(self, group: str) -> list[str]:
        """In partition order (the index `Ledger.done` owns hosts by)."""
        return list(dict.fromkeys(m.durable for m in self.members if m.group == group))


def start_consumers(urls: list[str], n: int, work: Path, roll_s: float,
                    replicas: int) -> Consumers:  # fmt: skip
    """n of each group; process k talks to node k % len(urls)."""
    out = Consumers(n)
    # [stream] replicas as compose sets it: had a consumer to create the stream, the same
    env = {**os.environ, "SNOOPBUS_CONFIG": "", "SNOOPBUS_METRICS_PORT": "0",
           "SNOOPBUS_STREAM_REPLICAS": str(replicas)}
    for i in range(n):
        part = Partition(i, n)
        parted = ["--partition", str(part)] if n > 1 else []
        adir = work / f"archive-{n}" / f"p{i}"
        out.archive_dirs.append(adir)
        for group, durable, args in (
            ("archive", part.durable("archive"),
             ["archive", *parted, "--dir", str(adir), "--roll-seconds", f"{roll_s:g}"]),
            ("rename", part.durable("rename"), ["rename", *parted]),
            ("alert", part.durable("alert"), ["alert", *parted, "--no-host-health"]),
        ):  # fmt: skip
            label = f"{group}-{i}"
            log = work / f"{label}-of{n}.log"
            url = urls[len(out.members) % len(urls)]
            member = Member(group, label, durable,
                            [sys.executable, "-m", "snoopbus.consumers", *args, "--nats", url],
                            env, log)  # fmt: skip
            out.members.append(member)
    return out


async def consumers_ready(js: JetStreamContext, consumers: Consumers, within: float = 180,
                          restarts: int = 2) -> list[str]:  # fmt: skip
    """Until every process is pulling: each durable has as many waiting requests as
    processes share it. A process that exits meanwhile is started again (up to
    `restarts` times; a starved cluster's API can time out a consumer's first
    requests, which it does not retry); what was restarted, and why, is returned."""
    sharing = Counter(m.durable for m in consumers.members)
    notes: list[str] = []
    async with asyncio.timeout(within):
        while True:
            for m in consumers.members:
                if m.proc.poll() is not None:
                    last = m.log.read_text(errors="replace").strip().splitlines()[-1:]
                    if m.restarts >= restarts:
                        raise RuntimeError(f"{m.label} exited: {m.log.read_text()[-2000:]}")
                    m.restarts += 1
                    notes.append(f"{m.label} exited while starting ({''.join(last)[:120]}); "
                                 "started again")
                    m.start()
            waiting = {}
            for durable in sharing:
                try:
                    waiting[durable] = (await js.consumer_info(STREAM_NAME, durable)).num_waiting
                except nats.errors.Error:
                    waiting[durable] = 0
            if all((waiting[d] or 0) >= k for d, k in sharing.items()):
                return notes
            await asyncio.sleep(0.5)


async def stop_consumers(js: JetStreamContext, consumers: Consumers,
                         settle_s: float = 30.0) -> dict[str, int]:  # fmt: skip
    """Stops (SIGTERM by pid; SIGKILL after 30 s) the pairers and alerters first, whose
    last outputs (an alerter's folded summaries) the archive then stores, then the
    archive once it has those. Returns the messages each group's processes acked
    after handling, from their summary lines."""
    processed: Counter[str] = Counter()
    for groups in (("rename", "alert"), ("archive",)):
        members = [m for m in consumers.members if m.group in groups]
        if groups == ("archive",):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settle_s):
                    while any(lag for lag, _ in (await _lags(js, consumers, "archive")).values()):
                        await asyncio.sleep(0.25)
        for m in members:
            if m.proc.poll() is None:
                os.kill(m.proc.pid, signal.SIGTERM)
        for m in members:
            try:
                await asyncio.to_thread(m.proc.wait, 30)
            except subprocess.TimeoutExpired:
                os.kill(m.proc.pid, signal.SIGKILL)
                m.proc.wait()
            found = re.findall(r"stopped: processed=(\d+)", m.log.read_text(errors="replace"))
            processed[m.group] += int(found[-1]) if found else 0
    return dict(processed)


# -- one step: a rate for some seconds, then the drain ----------------------------


@dataclass(frozen=True)
class Load:
    hosts: int = 200
    seconds: float = 10.0  # of load per rate
    flush_s: float = 0.5  # each host sends what it has this often
    # After the load: a group empty again within this kept up. Three archive rolls:
    # its acks wait for the commit, so its lag drains 10-13 s after the load, and
    # now and then past 20 (its cause not pinned down).
    drain_s: float = 30.0
    replicas: int = 3  # of the stream ([stream] replicas)
    catchup_s: float = 180.0  # after the last step: until every group is empty, at most
    # The archiver acks once a file is committed, and commits a file per kind
    # and day: its roll trades lag (acks held) against files (and fsyncs) per s.
    archive_roll_s: float = 10.0


@dataclass
class GroupFigures:
    processed_eps: float = 0.0  # events of this step delivered to it, per s of load
    peak_lag: int = 0  # messages, the slowest durable of the group
    end_lag: int = 0  # at the end of the load
    drain_s: float | None = None  # after the load until empty; None: not within --drain
    cpu_s: float = 0.0
    events: int = 0  # events of this step its filter takes (input only)


@dataclass
class Step:
    offered: float
    achieved: float = 0.0
    events: int = 0
    messages: int = 0
    pairs: int = 0
    groups: dict[str, GroupFigures] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # label -> CPU s over the step
    sent_types: Counter[str] = field(default_factory=Counter)  # events sent, by type
    seconds: float = 0.0  # load plus drain
    resent: int = 0  # publishes sent again (no answer in PUBLISH_ACK_S, or refused)

    @property
    def kept_up(self) -> bool:
        return (self.achieved >= KEPT_UP_PUBLISH * self.offered
                and all(g.drain_s is not None for g in self.groups.values()))  # fmt: skip


class Ledger:
    """What one step sent, by stream sequence, to turn ack floors into events."""

    def __init__(self, names: list[str], consumers: Consumers) -> None:
        self.seqs: list[int] = []
        self.sent: list[Sent] = []
        self.owner = [_owner(host_token(h), consumers.instances) for h in names]

    def add(self, seq: int, sent: Sent) -> None:
        self.seqs.append(seq)
        self.sent.append(sent)

    def sort(self) -> None:
        order = sorted(range(len(self.seqs)), key=self.seqs.__getitem__)
        self.seqs = [self.seqs[i] for i in order]
        self.sent = [self.sent[i] for i in order]

    def done(self, group: str, floors: dict[str, int], consumers: Consumers) -> int:
        """Events of this step the group has taken in: at or below the last sequence
        delivered to the durable that owns their host (the archive acks only once a
        file is committed, so its ack floor trails by a roll)."""
        total = 0
        durables = consumers.durables(group)
        for p, durable in enumerate(durables):
            upto = bisect_right(self.seqs, floors.get(durable, 0))
            for s in self.sent[:upto]:
                if _takes(group, s) and (len(durables) == 1 or self.owner[s.host] == p):
                    total += s.events
        return total

    def events(self, group: str) -> int:
        return sum(s.events for s in self.sent if _takes(group, s))


def _owner(token: str, n: int) -> int:
    return next(i for i in range(n) if Partition(i, n).owns(token))


def _takes(group: str, s: Sent) -> bool:
    return s.type in TAKES[group] if group in TAKES else True


async def _lags(
    js: JetStreamContext, consumers: Consumers, group: str | None = None
) -> dict[str, tuple[int, int]]:
    """durable -> (pending + unacked messages, last stream sequence delivered to it)."""
    out = {}
    for durable in {m.durable for m in consumers.members if group in (None, m.group)}:
        info = await js.consumer_info(STREAM_NAME, durable)
        out[durable] = ((info.num_pending or 0) + (info.num_ack_pending or 0),
                        info.delivered.stream_seq if info.delivered else 0)  # fmt: skip
    return out


async def run_step(js: JetStreamContext, fleet: Fleet, consumers: Consumers,
                   servers: dict[str, int], rate: float, load: Load) -> Step:  # fmt: skip
    seconds, flush_s, drain_s = load.seconds, load.flush_s, load.drain_s
    pairs0 = fleet.pairs
    frames = list(fleet.frames(rate, seconds, flush_s, time.time_ns()))
    step = Step(offered=rate, pairs=fleet.pairs - pairs0)
    step.groups = {g: GroupFigures() for g in GROUPS}
    step.sent_types = Counter()
    for frame in frames:
        for sent in frame:
            step.sent_types[sent.type] += sent.events
    procs = ({m.label: m.proc.pid for m in consumers.members} | servers
             | {"publisher": os.getpid()})  # fmt: skip
    cpu0 = {label: _cpu_s(pid) for label, pid in procs.items()}
    ledger = Ledger(fleet.names, consumers)
    acks: list[tuple[asyncio.Future[Any], Sent]] = []
    frame_s = flush_s / FRAMES
    stop = asyncio.Event()
    sampling = asyncio.create_task(_sample(js, consumers, step, stop))  # beside the publisher
    t0 = time.perf_counter()
    for f, frame in enumerate(frames):
        delay = t0 + f * frame_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for sent in frame:
            ack = await js.publish_async(sent.subject, sent.payload,
                                         headers={ID_HEADER: sent.msg_id})
            acks.append((ack, sent))
    for seq, sent in await _settled(js, acks, step):
        ledger.add(seq, sent)
    load_s = time.perf_counter() - t0
    stop.set()
    await sampling
    ledger.sort()
    step.events, step.messages = sum(s.events for _, s in acks), len(acks)
    step.achieved = step.events / load_s
    lags = await _lags(js, consumers)
    floors = {d: seq for d, (_, seq) in lags.items()}
    for group, fig in step.groups.items():
        fig.events = ledger.events(group)
        fig.processed_eps = ledger.done(group, floors, consumers) / load_s
        fig.end_lag = max(lags[d][0] for d in consumers.durables(group))
        fig.peak_lag = max(fig.peak_lag, fig.end_lag)
    end = time.perf_counter()
    while time.perf_counter() - end < drain_s:
        lags = await _lags(js, consumers)
        for group, fig in step.groups.items():
            if fig.drain_s is None and all(lags[d][0] == 0 for d in consumers.durables(group)):
                fig.drain_s = time.perf_counter() - end
        if all(fig.drain_s is not None for fig in step.groups.values()):
            break
        await asyncio.sleep(0.25)
    step.seconds = time.perf_counter() - t0
    step.cpu = {label: _cpu_s(pid) - cpu0[label] for label, pid in procs.items()}
    for m in consumers.members:
        step.groups[m.group].cpu_s += step.cpu[m.label]
    return step


async def catch_up(js: JetStreamContext, consumers: Consumers, within: float) -> str:
    """Waits until every durable is empty (what the accounting needs), and says when."""
    start = time.perf_counter()
    lag = 0
    while time.perf_counter() - start < within:
        lag = sum(n for n, _ in (await _lags(js, consumers)).values())
        if not lag:
            return (f"{'':>19}   every group empty {time.perf_counter() - start:.0f} s "
                    "after the last load")
        await asyncio.sleep(0.5)
    return f"{'':>19}   still {lag:,} messages behind {within:.0f} s after the last load"


async def _sample(
    js: JetStreamContext, consumers: Consumers, step: Step, stop: asyncio.Event
) -> None:
    """Each second until `stop`: every group's peak lag. (Not cancelled: a
    cancellation inside a nats-py request can be lost, and the task lives on.)"""
    while not stop.is_set():
        try:
            lags = await _lags(js, consumers)
        except (nats.errors.Error, OSError):
            continue  # a busy cluster's slow answer: the next sample
        for group, fig in step.groups.items():
            fig.peak_lag = max([fig.peak_lag, *(lags[d][0] for d in consumers.durables(group))])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)


async def _settled(
    js: JetStreamContext, acks: list[tuple[asyncio.Future[Any], Sent]], step: Step
) -> list[tuple[int, Sent]]:
    """Each message's stream sequence. A publish left unanswered (a stream leader
    elected meanwhile on a starved cluster: the server drops it without a word) or
    refused is sent again with its message id, as a collector does: a copy that
    had landed is answered with its first sequence (the stream's dedup window)."""
    waiting = [f for f, _ in acks if not f.done()]
    if waiting:
        await asyncio.wait(waiting, timeout=PUBLISH_ACK_S)
    out = []
    for fut, sent in acks:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            out.append((fut.result().seq, sent))
            continue
        fut.cancel()
        step.resent += 1
        async with asyncio.timeout(120):
            while True:
                try:
                    ack = await js.publish(sent.subject, sent.payload, timeout=PUBLISH_ACK_S,
                                           headers={ID_HEADER: sent.msg_id})  # fmt: skip
                    break
                except (nats.errors.Error, OSError):
                    await asyncio.sleep(0.5)
        out.append((ack.seq, sent))
    return out


# -- the accounting: every event through every group exactly once ---------------


@dataclass
class Accounting:
    sent: Counter[str]  # events sent, by type
    pairs: int
    archived: Counter[str]  # archive rows, by type
    archived_ids: int  # distinct ids among them
    archived_alerts: int
    stream_event_messages: int  # of the types the alerters take
    stream_alerts: int
    alert_processed: int  # messages the alerters acked after handling, all instances
    stream_renamed: list[str] = field(default_factory=list)  # ids of renamed events stored
    replicas: int = 0  # of the stream: its config, and the servers holding it
    replicas_holding: int = 0
    archive_files: int = 0

    def problems(self) -> list[str]:
        """What is missing or doubled; empty when every group had each event once."""
        out = []
        for kind, n in sorted(self.sent.items()):
            if self.archived[kind] != n:
                out.append(f"archive: {self.archived[kind]} {kind} rows for {n} sent")
        if self.archived["renamed"] != self.pairs:
            out.append(f"rename: {self.archived['renamed']} renamed for {self.pairs} pairs")
        renamed = len(self.stream_renamed)
        if renamed != self.pairs or len(set(self.stream_renamed)) != renamed:
            out.append(f"rename: {renamed} renamed events in the stream "
                       f"({len(set(self.stream_renamed))} distinct) for {self.pairs} pairs")
        if self.archived["moved_out"] or self.archived["moved_in"]:
            out.append(f"rename: {self.archived['moved_out']} moved_out, "
                       f"{self.archived['moved_in']} moved_in (every half had a partner)")
        rows = sum(self.archived.values())
        if self.archived_ids != rows:
            out.append(f"archive: {rows - self.archived_ids} rows twice")
        if self.alert_processed != self.stream_event_messages:
            out.append(f"alert: {self.alert_processed} messages processed of "
                       f"{self.stream_event_messages} in the stream")
        if self.archived_alerts != self.stream_alerts:
            out.append(f"archive: {self.archived_alerts} alert rows of {self.stream_alerts}")
        return out

    def line(self) -> str:
        sent = sum(self.sent.values())
        problems = self.problems()
        rows = sum(self.archived.values())
        return (f"  accounting (stream on {self.replicas_holding} of 3 servers, R{self.replicas}):"
                f" {sent:,} events sent, archive holds {rows:,} rows ({self.archived['renamed']:,}"
                f" renamed for {self.pairs:,} pairs, {len(self.stream_renamed):,} in the stream;"
                f" {self.archive_files:,} files), "
                f"{self.archived_alerts:,} alerts of {self.stream_alerts:,}; alerters processed "
                f"{self.alert_processed:,} of {self.stream_event_messages:,} event messages: "
                + ("exactly once, complete" if not problems else "; ".join(problems)))


def archive_rows(dirs: list[Path], kind: str) -> tuple[Counter[str], int]:
    """(rows by type, distinct ids) over the archive folders' committed files."""
    import pyarrow.parquet as pq

    types: Counter[str] = Counter()
    ids: set[str] = set()
    for d in dirs:
        for path in sorted((d / kind).rglob("*.parquet")):
            table = pq.read_table(path, columns=["id", "type"] if kind == "events" else ["id"])
            ids.update(table.column("id").to_pylist())
            if kind == "events":
                types.update(table.column("type").to_pylist())
            else:
                types["alert"] += table.num_rows
    return types, len(ids)


async def account(js: JetStreamContext, consumers: Consumers, steps: list[Step],
                  processed: dict[str, int]) -> Accounting:  # fmt: skip
    info = await js.stream_info(STREAM_NAME, subjects_filter="snoopbus.>")
    subjects = info.state.subjects or {}
    archived, ids = archive_rows(consumers.archive_dirs, "events")
    alerts, _ = archive_rows(consumers.archive_dirs, "alerts")
    renamed = [e["id"] for e in await stored_events(
        js, events_filter(type="renamed"),
        sum(n for s, n in subjects.items() if s.endswith(".renamed")))]
    return Accounting(
        sent=sum((s.sent_types for s in steps), Counter()), pairs=sum(s.pairs for s in steps),
        archived=archived, archived_ids=ids, archived_alerts=alerts["alert"],
        stream_event_messages=sum(n for s, n in subjects.items() if s.startswith(
            "snoopbus.events.") and s.rsplit(".", 1)[1] in TAKES["alert"]),
        stream_alerts=sum(n for s, n in subjects.items() if s.startswith("snoopbus.alerts.")),
        alert_processed=processed.get("alert", 0), stream_renamed=renamed,
        replicas=info.config.num_replicas or 1,
        archive_files=sum(len(list(d.rglob("*.parquet"))) for d in consumers.archive_dirs),
        replicas_holding=1 + len(info.cluster.replicas or []) if info.cluster else 1,
    )  # fmt: skip


async def stored_events(js: JetStreamContext, subject: str, messages: int) -> list[dict[str, Any]]:
    """The events of the first `messages` messages stored under `subject`."""
    out: list[dict[str, Any]] = []
    if not messages:
        return out
    info = await js.add_consumer(STREAM_NAME, ConsumerConfig(
        filter_subjects=stored_filters(subject), ack_policy=AckPolicy.NONE, mem_storage=True,
        inactive_threshold=30))  # fmt: skip
    sub = await js.pull_subscribe_bind(consumer=info.name, stream=STREAM_NAME)
    try:
        async with asyncio.timeout(60):
            while messages:
                with contextlib.suppress(nats.errors.TimeoutError):
                    for msg in await sub.fetch(min(messages, 500), timeout=1):
                        out += decode_batch(msg.data)
                        messages -= 1
    finally:
        await sub.unsubscribe()
    return out


# -- the whole run ----------------------------------------------------------------


@dataclass
class InstanceRun:
    instances: int
    steps: list[Step]
    accounting: Accounting
    pids: list[int] = field(default_factory=list)  # every process it started

    @property
    def sustained(self) -> float:
        """The highest achieved rate at which every group kept up (0: none)."""
        return max((s.achieved for s in self.steps if s.kept_up), default=0.0)


async def simulate(
    work: Path, load: Load, instances: list[int], rates: list[float],
    recording: Path | None = None, out: Any = None,
) -> list[InstanceRun]:  # fmt: skip
    """The bench: prints to `out` (a file) as it goes when given."""
    if recording is None:
        recording = work / "recording.msgpack"
        record(recording)
    events = fleet_load.load(recording)
    runs: list[InstanceRun] = []
    with cluster(work) as nodes:
        urls = [node.url for node in nodes]
        servers = {f"nats-{i + 1}": node.process.pid for i, node in enumerate(nodes)
                   if node.process is not None}  # fmt: skip
        nc: Client = await nats.connect(urls, max_reconnect_attempts=-1)
        js = nc.jetstream()
        try:
            for n in instances:
                await replicated_stream(js, load.replicas)
                consumers = start_consumers(urls, n, work, load.archive_roll_s, load.replicas)
                steps: list[Step] = []
                try:
                    for note in await consumers_ready(js, consumers):
                        _print(out, f"  {note}")
                    fleet = Fleet(events, load.hosts)
                    _print(out, header(n, load))
                    for rate in rates:
                        steps.append(await run_step(js, fleet, consumers, servers, rate, load))
                        _print(out, row(steps[-1]))
                        _print(out, cpu_line(steps[-1]))
                        if not steps[-1].kept_up:
                            break
                    _print(out, await catch_up(js, consumers, load.catchup_s))
                finally:
                    processed = await stop_consumers(js, consumers)
                run = InstanceRun(n, steps, await account(js, consumers, steps, processed),
                                  [m.proc.pid for m in consumers.members] + [*servers.values()])
                _print(out, run.accounting.line())
                runs.append(run)
                await js.delete_stream(STREAM_NAME)  # the next count starts from nothing
                shutil.rmtree(work / f"archive-{n}", ignore_errors=True)
        finally:
            await nc.close()
    return runs


def _print(out: Any, text: str) -> None:
    if out is not None:
        print(text, file=out, flush=True)


def header(n: int, load: Load) -> str:
    parts = "one process" if n == 1 else f"{n} partitions"
    return (f"\n{n} instance(s) of each: archive {parts}, rename {parts}, alert {parts}; "
            f"{load.hosts} hosts, {load.seconds:g} s per rate, drained within "
            f"{load.drain_s:g} s = kept up\n"
            f"{'offered':>9} {'achieved':>9} | {'group':<7} {'events/s':>9} {'peak lag':>9} "
            f"{'end lag':>8} {'drained':>8} {'ev/CPU-s':>9} | kept up")


def row(step: Step) -> str:
    lines = []
    for i, (group, g) in enumerate(step.groups.items()):
        head = (f"{step.offered:>9,.0f} {step.achieved:>9,.0f}" if i == 0 else " " * 19)
        drained = f"{g.drain_s:.1f}s" if g.drain_s is not None else "no"
        per_cpu = g.events / g.cpu_s if g.cpu_s else 0.0
        tail = ("yes" if step.kept_up else "NO") if i == 0 else ""
        lines.append(f"{head} | {group:<7} {g.processed_eps:>9,.0f} {g.peak_lag:>9,} "
                     f"{g.end_lag:>8,} {drained:>8} {per_cpu:>9,.0f} | {tail}")
    return "\n".join(lines)


def cpu_line(step: Step) -> str:
    shown = ", ".join(f"{label} {100 * cpu / step.seconds:.0f}%"
                      for label, cpu in step.cpu.items())  # fmt: skip
    return (f"{'':>19}   CPU over {step.seconds:.0f} s (% of one core): {shown}; "
            f"{step.messages:,} messages, {step.events / max(step.messages, 1):.1f} events each"
            + (f", {step.resent:,} sent again" if step.resent else ""))


def summary(runs: list[InstanceRun]) -> str:
    base = runs[0].sustained if runs else 0.0
    lines = ["\nhighest aggregate rate every consumer kept up with (events/s):"]
    for run in runs:
        ratio = f" ({run.sustained / base:.2f}x)" if base else ""
        lines.append(f"  {run.instances} of each: {run.sustained:,.0f}{ratio}")
    lines.append(f"  on {os.cpu_count()} CPUs shared by everything above: scaling out "
                 "cannot grow this linearly here; ev/CPU-s is the per-core figure")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.fleet",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="load per rate")
    parser.add_argument("--rates", default="250,500,1000,2000,4000",
                        help="aggregate events/s to try, ascending (comma-separated)")
    parser.add_argument("--instances", default="1,2,4", help="of each consumer group")
    parser.add_argument("--archive-roll", type=float, default=10.0,
                        help="the archiver's --roll-seconds (keep it below --drain)")
    parser.add_argument("--drain", type=float, default=Load.drain_s,
                        help="s after the load within which every group must be empty")
    parser.add_argument("--flush-ms", type=float, default=500.0,
                        help="each host sends what it captured this often")
    parser.add_argument("--catchup", type=float, default=180.0,
                        help="s to wait for every group to empty after the last step, so that "
                        "the accounting covers everything sent")
    parser.add_argument("--replicas", type=int, default=3, help="of the stream (1 to 3)")
    parser.add_argument("--recording", type=Path, help="replay this recording (made if missing)")
    args = parser.parse_args(argv)
    load = Load(args.hosts, args.seconds, args.flush_ms / 1000, args.drain, args.replicas,
                args.catchup, args.archive_roll)
    rates = sorted(float(r) for r in args.rates.split(","))
    instances = [int(n) for n in args.instances.split(",")]
    if args.recording is not None and not args.recording.exists():
        record(args.recording)
    with tempfile.TemporaryDirectory(prefix="snoopbus-fleet-") as tmp:
        runs = asyncio.run(simulate(Path(tmp), load, instances, rates, args.recording, sys.stdout))
    print(summary(runs))
    return 0 if all(not r.accounting.problems() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
