"""Soak: `snoopbus up` under a steady mixed load for a long time; does anything grow?

    .venv/bin/python -m tests.bench.soak [--duration 1h] [--rate 200] [--state-dir D]
                                         [--sample-every 10s] [--drain 5m] [--whole-host]
                                         [--stream-mb 256] [--samples FILE] [--report FILE]

Runs `snoopbus up` as a user does (its own nats-server on a free loopback
port, the collector, the rename, alert and archive consumers), with its
state folder, its /run descriptor (SNOOPBUS_RUN_DIR) and the load's folder
in one temporary folder, removed afterwards (a --state-dir given is kept).
The load (tests/bench/soak_load.py) makes execs and a compile-like build
(writes, renames into place and over, deletes) at --rate operations/s. By
default the collector's file events are limited to the load's folder
([collector] include_path: other users of this shared machine then do not
change the figures; execs stay host-wide); --whole-host watches everything.
The stream is capped at --stream-mb ([stream] max_mb; 0: `up`'s own choice
from the free disk): a host that runs for months sits at its limit, removing
the oldest events as new ones come, and the default (256 MB, reached in about
a quarter of an hour at the default rate) makes the hour measure that steady
state, nats-server's memory included, rather than a stream still filling.

Every --sample-every seconds while the load runs: RSS and CPU time of `up`,
nats-server, the collector and each consumer (their pids from up.json in the
state folder: a pid that changes is a restart), each durable's lag
(pending + unacknowledged), the stream's bytes and messages, the spill's
bytes. The soak's own ephemeral consumer counts the load's events on the
bus (file events under its folder, execs with its marker), and it listens
to the collector's loss reports. After the load: up to --drain for every
durable to catch up, then `up` is stopped with SIGINT.

Prints a table per process (RSS at start and end, slopes in MB/hour of its
floor, the lowest sample per window, over the first and last half after the
warm-up, CPU % of one core), per durable
(peak lag, lag after the drain, missed), the stream and spill, then verdict
lines (tests/bench/soak_trend.py says when each fails) and exits 1 when
any fails: memory growth that does not level off, lag that keeps growing
or does not drain, a child that died, or loss not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from snoopbus.app.leftovers import die_with_parent, read_record
from snoopbus.collector.stream_watch import folder_bytes, read_stream
from snoopbus.proto import (
    STREAM_NAME,
    DecodeError,
    NatsAuth,
    SchemaError,
    connect,
    decode_batch,
    decode_map,
    events_filter,
    local_stack,
    meta_filter,
    meta_subject,
    roles,
    stored_filters,
)
from snoopbus.proto.bus import last_stored
from snoopbus.proto.settings_file import UpSection
from tests.bench.soak_load import EVENTS_PER_OP
from tests.bench.soak_report import report
from tests.support.processes import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KINDS = frozenset(k for per in EVENTS_PER_OP.values() for k in per)
PROCESSES = ("up", "nats-server", "collector", *UpSection.consumers)
STARTUP = 120.0  # s for the stack to start and its collector to report ready


def duration(text: str) -> float:
    """"1h", "90m", "20s", "1h30m" or plain seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration such as 1h, 90m, 20s")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass
class Track:
    """One process name across restarts: RSS and anonymous RSS samples (s, MB),
    and CPU seconds."""

    name: str
    pids: list[int] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    anon: list[tuple[float, float]] = field(default_factory=list)
    cpu_done: float = 0.0  # CPU s of earlier pids, over the load
    cpu_first: float | None = None  # the current pid's CPU s at its first sample
    cpu_last: float = 0.0

    def sample(self, t: float, pid: int) -> None:
        got = proc_usage(pid)
        if got is None:
            return
        rss_mb, anon_mb, cpu = got
        if not self.pids or self.pids[-1] != pid:
            if self.pids and self.cpu_first is not None:
                self.cpu_done += self.cpu_last - self.cpu_first
            self.pids.append(pid)
            self.cpu_first = cpu
        self.cpu_last = cpu
        self.rss.append((t, rss_mb))
        self.anon.append((t, anon_mb))

    @property
    def restarts(self) -> int:
        return max(0, len(self.pids) - 1)

    def cpu_seconds(self) -> float:
        current = self.cpu_last - self.cpu_first if self.cpu_first is not None else 0.0
        return self.cpu_done + current


def proc_usage(pid: int) -> tuple[float, float, float] | None:
    """(RSS and its anonymous part in MB, user+system CPU seconds) of a live
    process; None if gone. Anonymous memory is what a leak grows: RSS also
    counts the file pages (libraries, mapped files) the process touched,
    which come and go with the page cache."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    a = re.search(r"^RssAnon:\s+(\d+) kB", status, re.M)
    if m is None or a is None:  # a zombie
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return int(m.group(1)) / 1024, int(a.group(1)) / 1024, cpu


@dataclass
class Bus:
    """What the soak reads on the bus: its load's events, loss reports, the stream."""

    folder: str
    marker: str
    delivered: Counter[str] = field(default_factory=Counter)
    loss_by_instance: dict[str, int] = field(default_factory=dict)
    counted_pending: int = 0  # the counting consumer's own backlog
    last_seq: int = 0  # the stream sequence of the last message counted
    count_restarts: list[str] = field(default_factory=list)  # why the count started over

    def count(self, data: bytes) -> None:
        try:
            events = decode_batch(data)
        except (DecodeError, SchemaError):
            return
        for e in events:
            kind = e.get("type")
            if kind not in KINDS:
                continue  # e.g. the pairer's renamed, or a mkdir
            if kind == "exec":
                argv = e.get("proc", {}).get("argv") or []
                if len(argv) > 1 and argv[1] == self.marker:
                    self.delivered[kind] += 1
            elif str(e.get("file", {}).get("path", "")).startswith(self.folder):
                self.delivered[kind] += 1

    def on_loss(self, data: bytes) -> None:
        try:
            body = decode_map(data)
        except (DecodeError, SchemaError):
            return
        instance = str(body.get("instance", ""))
        total = int(body.get("total", 0) or 0)
        self.loss_by_instance[instance] = max(total, self.loss_by_instance.get(instance, 0))

    @property
    def counted_lost(self) -> int:
        return sum(self.loss_by_instance.values())


class CountGap(RuntimeError):
    """The counting consumer skipped a delivery (one that arrived after its fetch ended)."""


async def count_events(nc: Client, bus: Bus, host: str, stop: asyncio.Event) -> None:
    """Reads the load's events from the stream, every one stored, once, until `stop`.

    An ephemeral pull consumer without acks; a delivery it did not receive (a
    gap in its own sequence) or an error makes a new one start after the last
    stream sequence counted, so the count stays exact (bus.count_restarts).
    """
    js = nc.jetstream()
    while not stop.is_set():
        name = f"soak{secrets.token_hex(3)}"
        resume = bus.last_seq > 0
        cfg = ConsumerConfig(
            name=name, ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if resume else DeliverPolicy.ALL,
            opt_start_seq=bus.last_seq + 1 if resume else None,
            filter_subjects=[*stored_filters(events_filter(host=host, family="file")),
                             *stored_filters(events_filter(host=host, type="exec"))],
            inactive_threshold=600.0,
        )  # fmt: skip
        try:
            await js.add_consumer(STREAM_NAME, cfg)
            sub = await js.pull_subscribe_bind(name=name, stream=STREAM_NAME)
            try:
                await _count(js, sub, name, bus, stop)
            finally:
                with suppress(Exception):
                    await sub.unsubscribe()
                with suppress(Exception):
                    await js.delete_consumer(STREAM_NAME, name)
        except Exception as exc:  # any: start over after the last message counted
            bus.count_restarts.append(f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(1)


async def _count(js: Any, sub: Any, name: str, bus: Bus, stop: asyncio.Event) -> None:
    expected = 1  # the consumer's own sequence: contiguous over what it delivered
    while not stop.is_set():
        try:
            msgs = await sub.fetch(1000, timeout=1)
        except TimeoutError:
            msgs = []
        for msg in msgs:
            seq = msg.metadata.sequence
            if seq.consumer != expected:
                raise CountGap(f"consumer sequence {seq.consumer}, expected {expected}")
            bus.count(msg.data)
            bus.last_seq = seq.stream
            expected += 1
        if len(msgs) < 1000:
            with suppress(NotFoundError, TimeoutError):
                bus.counted_pending = (await js.consumer_info(STREAM_NAME, name)).num_pending or 0


def load_unprocessed(ci: ConsumerInfo, end_seq: int) -> int:
    """Messages a durable has not processed of those the stream held at `end_seq`:
    0 once its ack floor passed it, or nothing is pending or unacknowledged
    (a filtered durable's floor stays at the last message it matched)."""
    pending, unacked = ci.num_pending or 0, ci.num_ack_pending or 0
    if (ci.ack_floor is not None and (ci.ack_floor.stream_seq or 0) >= end_seq) or (
            pending == 0 and unacked == 0):
        return 0
    return pending + unacked


@dataclass
class StreamTrack:
    bytes: list[tuple[float, float]] = field(default_factory=list)  # (s, MB)
    messages: int = 0
    spill: list[tuple[float, float]] = field(default_factory=list)  # (s, MB)
    lag: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    loadavg: list[tuple[float, float]] = field(default_factory=list)  # the host's, 1 min
    failed_reads: list[str] = field(default_factory=list)  # samples the server did not answer


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="snoopbus-soak-"))
        self.state = Path(args.state_dir) if args.state_dir else self.base / "state"
        self.run_dir = self.base / "run"
        self.folder = self.base / "load"
        self.folder.mkdir()
        self.host = f"soak{secrets.token_hex(3)}"
        self.marker = f"soak-{secrets.token_hex(4)}"
        self.port = free_port()
        self.up: subprocess.Popen[bytes] | None = None
        self.load: subprocess.Popen[str] | None = None
        self.tracks = {name: Track(name) for name in (*PROCESSES, "load")}
        self.stream = StreamTrack()
        self.bus = Bus(str(self.folder) + "/", self.marker)
        self.after_drain: dict[str, int] = {}
        self.load_result: dict[str, Any] = {}
        self.load_seconds = 0.0

    def config(self) -> Path:
        path = self.base / "soak.toml"
        include = ("" if self.args.whole_host
                   else f"include_path = [{json.dumps(str(self.folder))}]\n")
        roll = self.args.archive_roll
        archive = f"\n[consumer.archive]\nroll_seconds = {roll:g}\n" if roll else ""
        stream = f"\n[stream]\nmax_mb = {self.args.stream_mb}\n"
        path.write_text(f"[collector]\n{include}{archive}{stream}")
        return path

    def start_up(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SNOOPBUS_NATS_", "SNOOPBUS_COLLECTOR_SPILL"))}
        env[local_stack.RUN_DIR_ENV] = str(self.run_dir)
        log = (self.base / "up.log").open("wb")
        with log:
            self.up = subprocess.Popen(
                [sys.executable, "-m", "snoopbus.app", "up", "--config",
                 str(self.config()), "--state-dir", str(self.state), "--port", str(self.port),
                 "--host", self.host, "--live", "off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=die_with_parent(),
            )  # fmt: skip

    def up_log(self) -> str:
        path = self.base / "up.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def connect(self) -> Client:
        deadline = time.monotonic() + STARTUP
        path = local_stack.descriptor_path({local_stack.RUN_DIR_ENV: str(self.run_dir)})
        while (stack := local_stack.read("soak", path)) is None:
            if (self.up is not None and self.up.poll() is not None) or time.monotonic() > deadline:
                raise SystemExit(f"soak: `up` did not start:\n{self.up_log()}")
            await asyncio.sleep(0.2)
        auth = NatsAuth(nkey=str(stack.seed("admin")), inbox_prefix=roles.inbox_prefix("admin"))
        nc = await connect(stack.url, name="snoopbus-soak", auth=auth)
        js = nc.jetstream()
        while True:  # until the collector says it is ready
            with suppress(TimeoutError):
                msg = await last_stored(js, meta_subject(self.host, "status"))
                if msg is not None and decode_map(msg.data).get("state") == "ready":
                    return nc
            if time.monotonic() > deadline:
                await nc.close()
                raise SystemExit(f"soak: the collector did not report ready:\n{self.up_log()}")
            await asyncio.sleep(0.5)

    def pids(self) -> dict[str, int]:
        found = {p.name: p.pid for p in read_record(self.state) if p.alive()}
        if self.load is not None and self.load.poll() is None:
            found["load"] = self.load.pid
        return found

    async def sample(self, nc: Client, t: float) -> None:
        for name, pid in self.pids().items():
            if name in self.tracks:
                self.tracks[name].sample(t, pid)
        self.stream.loadavg.append((t, os.getloadavg()[0]))
        try:
            view = await read_stream(nc.jetstream(), UpSection.consumers, warn_percent=80.0,
                                     state_dir=self.state)  # fmt: skip
        except (TimeoutError, NatsError) as exc:  # a busy server: this sample has no stream
            self.stream.failed_reads.append(f"{t:.0f}s: {type(exc).__name__}: {exc}"[:200])
            return
        self.stream.bytes.append((t, view.bytes / 2**20))
        self.stream.messages = view.messages
        self.stream.spill.append((t, folder_bytes(self.state / "spill") / 2**20))
        for name, (pending, unacked) in view.lag.items():
            self.stream.lag.setdefault(name, []).append((t, float(pending + unacked)))
        self.stream.missed = dict(view.missed)
        for w in view.warnings:
            if w not in self.stream.warnings:
                self.stream.warnings.append(w)

    def progress(self, t: float) -> str:
        rss = " ".join(f"{n}={tr.rss[-1][1]:.0f}" for n, tr in self.tracks.items() if tr.rss)
        lag = " ".join(f"{n}={int(s[-1][1])}" for n, s in self.stream.lag.items())
        stream = self.stream.bytes[-1][1] if self.stream.bytes else 0.0
        return (f"[{t:7.0f}s] RSS MB {rss} | lag {lag} | stream {stream:.0f} MB"
                f" | delivered {sum(self.bus.delivered.values())} | lost {self.bus.counted_lost}")

    async def run(self) -> int:
        self.start_up()
        nc = await self.connect()
        stop_counting = asyncio.Event()
        counter: asyncio.Task[None] | None = None
        try:
            await nc.subscribe(meta_filter(self.host, "loss"), cb=self._on_loss)
            counter = asyncio.create_task(count_events(nc, self.bus, self.host, stop_counting))
            await self.run_load(nc)
            await self.drain(nc)
        finally:
            stop_counting.set()
            if counter is not None:
                with suppress(Exception):
                    await asyncio.wait_for(counter, 10)
            with suppress(Exception):
                await nc.close()
            self.stop_up()
        results = self.results()
        if self.args.samples:
            Path(self.args.samples).write_text(json.dumps(results))
        failed, text = report(results)
        print(text, flush=True)
        return 1 if failed else 0

    async def _on_loss(self, msg: Msg) -> None:
        self.bus.on_loss(msg.data)

    async def run_load(self, nc: Client) -> None:
        args = self.args
        self.load = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.soak_load", str(self.folder),
             str(args.duration), str(args.rate), self.marker],
            stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent(),
        )  # fmt: skip
        start = time.monotonic()
        next_print = 0.0
        every = args.sample_every
        print(f"soak: `up` on port {self.port} (host {self.host}), load {args.rate:g} ops/s for "
              f"{args.duration:g}s in {self.folder}, sampling every {every:g}s", flush=True)
        while self.load.poll() is None:
            t = time.monotonic() - start
            await self.sample(nc, t)
            if t >= next_print:
                print(self.progress(t), flush=True)
                next_print = t + max(every, 60.0)
            await asyncio.sleep(max(0.0, every - (time.monotonic() - start - t)))
        self.load_seconds = time.monotonic() - start
        out, _ = self.load.communicate()
        if self.load.returncode != 0 or not out.strip():
            raise SystemExit(f"soak: the load generator failed ({self.load.returncode})")
        self.load_result = json.loads(out.strip().splitlines()[-1])

    async def drain(self, nc: Client) -> None:
        """Until every durable acknowledged all the stream held when the load
        stopped, and the soak's own count caught up, or --drain passed.

        (Pending + unacknowledged may never reach 0 on a live host: the archive
        holds what came since its last roll, execs and heartbeats keep coming.)
        """
        js = nc.jetstream()
        end_seq = (await js.stream_info(STREAM_NAME)).state.last_seq
        deadline = time.monotonic() + self.args.drain
        started = time.monotonic()
        while True:
            await asyncio.sleep(2)
            for name in UpSection.consumers:
                with suppress(NotFoundError, TimeoutError):
                    ci = await js.consumer_info(STREAM_NAME, name)
                    self.after_drain[name] = load_unprocessed(ci, end_seq)
            caught_up = not any(self.after_drain.values()) and self.bus.counted_pending == 0
            if caught_up or time.monotonic() > deadline:
                break
        view = await read_stream(js, UpSection.consumers, warn_percent=80.0)
        self.stream.missed = dict(view.missed)
        print(f"soak: drained in {time.monotonic() - started:.0f}s (messages of the load "
              f"not acknowledged: {self.after_drain})", flush=True)
        await asyncio.sleep(3)  # the last loss report (every 2 s when it changes)

    def stop_up(self) -> None:
        if self.load is not None and self.load.poll() is None:
            self.load.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.load.communicate(timeout=30)
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(60)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()

    def results(self) -> dict[str, Any]:
        """Everything the verdicts need, as JSON (--samples writes it, --report reads it)."""
        return {
            "rate": self.args.rate, "load_seconds": self.load_seconds, "load": self.load_result,
            "processes": {n: {"pids": t.pids, "rss_mb": t.rss, "anon_mb": t.anon,
                               "cpu_s": t.cpu_seconds()}
                          for n, t in self.tracks.items()},
            "stream_mb": self.stream.bytes, "messages": self.stream.messages,
            "spill_mb": self.stream.spill, "lag": self.stream.lag, "missed": self.stream.missed,
            "after_drain": self.after_drain, "warnings": self.stream.warnings,
            "loadavg": self.stream.loadavg, "cpus": os.cpu_count(),
            "failed_reads": self.stream.failed_reads,
            "delivered": dict(self.bus.delivered), "collector_lost": self.bus.counted_lost,
            "count_restarts": self.bus.count_restarts,
        }  # fmt: skip

    def cleanup(self) -> None:
        keep = self.state if self.args.state_dir else None
        for child in self.base.iterdir():
            if child != keep:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        if keep is None:
            shutil.rmtree(self.base, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.soak",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--duration", type=duration, default=3600.0, help="of the load (default 1h)")
    p.add_argument("--rate", type=float, default=200.0, help="load operations per second (200)")
    p.add_argument("--state-dir", default=None, help="up's state folder (default: a temporary one)")
    p.add_argument("--sample-every", type=duration, default=10.0, help="seconds (default 10)")
    p.add_argument("--drain", type=duration, default=300.0,
                   help="after the load, the longest wait for consumers to catch up (5m)")
    p.add_argument("--stream-mb", type=int, default=256, metavar="MB",
                   help="[stream] max_mb: the stream's cap (default 256; 0: up's own choice)")
    p.add_argument("--whole-host", action="store_true",
                   help="the collector watches every file, not only the load's folder")
    p.add_argument("--archive-roll", type=duration, default=None, metavar="S",
                   help="[consumer.archive] roll_seconds (default: the archive's own); the "
                   "drain waits for the archive's last roll")
    p.add_argument("--samples", default=None, metavar="FILE",
                   help="write every sample and count as JSON to FILE")
    p.add_argument("--report", default=None, metavar="FILE",
                   help="print the table and verdicts of a --samples FILE, and run nothing")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.sample_every <= 0:
        p.error("--rate, --duration and --sample-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report:
        failed, text = report(json.loads(Path(args.report).read_text()))
        print(text)
        return 1 if failed else 0
    if os.geteuid() != 0:
        sys.exit("soak: `snoopbus up` loads eBPF probes: run as root")
    soak = Soak(args)
    # SIGTERM as Ctrl-C: `up` and the load are stopped and the temporary folder goes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(soak.run())
    finally:
        soak.stop_up()
        soak.cleanup()


if __name__ == "__main__":
    sys.exit(main())

