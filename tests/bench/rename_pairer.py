"""Benchmark: renamed events per second through the rename pairer, and its memory.

    .venv/bin/python -m tests.bench.rename_pairer            # 1,000,000 halves, 1% unpaired
    .venv/bin/python -m tests.bench.rename_pairer --halves 20000 --before ''

For each revision (`--before`, default main, from a temporary git worktree;
then this branch), starts its own nats-server (in a temporary directory),
stores every half first, batched as a collector would (one message per host
and type, up to 100 halves), then starts `python -m snoopbus.consumers
rename` as a separate process pinned to one CPU and times it from the moment
its durable exists until every renamed event is stored. Halves carry event
times 1 ms apart (a backlog of minutes: 1M halves span about 8 minutes), and
the lone ones are spread through the stream, so the pairer must tell a lone
half from one whose partner is merely further on in the backlog: every
output is read back and checked (renamed once per pair, moved_out/moved_in
only for the lone halves, no output twice). Peak memory is the pairer's
high-water RSS (VmHWM), read just before it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    SCHEMA_VERSION,
    STREAM_NAME,
    decode_batch,
    encode_batch,
    ensure_stream,
    event_subject,
    events_filter,
    stored_filters,
)

from .backlog import Tree, _cpu_s, consumer_cpu

HOSTS = ("web-1", "web-2", "db-1", "cache-1")
PER_MESSAGE = 100
STEP_NS = 1_000_000  # event time between two renames
OUTPUT_TYPES = ("renamed", "moved_out", "moved_in")


def half(kind: str, cookie: int, host: str) -> dict:
    return {
        "v": SCHEMA_VERSION, "id": f"b-{kind[6]}{cookie}",
        "ts": 1_700_000_000_000_000_000 + cookie * STEP_NS, "host": host, "type": kind,
        "cookie": cookie,
        "file": {"path": f"/srv/data/{kind}/{cookie:08d}.tmp", "inode": cookie, "dev": 2049},
        "proc": {"pid": 4000 + cookie % 97, "tid": 4000 + cookie % 97, "ppid": 1, "uid": 0,
                 "gid": 0, "comm": "rsync", "exe": "/usr/bin/rsync", "cwd": "/srv"},
    }  # fmt: skip


def messages(halves: int, unpaired: float, seed: int = 1) -> tuple[list[list[dict]], int, int]:
    """Message payloads in publishing order; the number of pairs and of lone halves."""
    rng = random.Random(seed)
    lone = round(halves * unpaired)
    pairs = (halves - lone) // 2
    lone = halves - 2 * pairs
    total = pairs + lone
    lone_cookies = {int((i + 0.5) * total / lone) for i in range(lone)} if lone else set()
    assert len(lone_cookies) == lone
    out: list[list[dict]] = []
    block = PER_MESSAGE * len(HOSTS)
    for first in range(0, total, block):
        froms: dict[str, list[dict]] = {h: [] for h in HOSTS}
        tos: dict[str, list[dict]] = {h: [] for h in HOSTS}
        for c in range(first, min(first + block, total)):
            host = HOSTS[c % len(HOSTS)]
            if c not in lone_cookies:
                froms[host].append(half("moved_from", c, host))
                tos[host].append(half("moved_to", c, host))
            else:  # lone halves, both kinds
                (froms if c % 2 else tos)[host].append(
                    half("moved_from" if c % 2 else "moved_to", c, host)
                )
        chunk = [m for m in (*froms.values(), *tos.values()) if m]
        rng.shuffle(chunk)  # either order, hosts interleaved; partners stay close
        out += chunk
    return out, pairs, lone


@dataclass
class Tally:
    """Every output read back: by type, and ids seen more than once."""

    types: Counter[str] = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)
    twice: int = 0
    last_renamed: float = 0.0  # when the last renamed event was read

    def add(self, events: list[dict]) -> None:
        for event in events:
            if event["id"] in self.ids:
                self.twice += 1
            self.ids.add(event["id"])
            self.types[event["type"]] += 1
            if event["type"] == "renamed":
                self.last_renamed = time.perf_counter()

    @property
    def halves(self) -> int:
        return 2 * self.types["renamed"] + self.types["moved_out"] + self.types["moved_in"]


async def read_outputs(js: JetStreamContext, tally: Tally, stop: asyncio.Event) -> None:
    info = await js.add_consumer(
        STREAM_NAME,
        ConsumerConfig(filter_subjects=[f for t in OUTPUT_TYPES
                                        for f in stored_filters(events_filter(type=t))],
                       ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=60),
    )  # fmt: skip
    sub = await js.pull_subscribe_bind(consumer=info.name, stream=STREAM_NAME)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(1000, timeout=0.2)
        except TimeoutError:
            continue
        for msg in msgs:
            tally.add(decode_batch(msg.data))
    await sub.unsubscribe()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def takes_idle_after(tree: Tree) -> bool:
    return "--idle-after" in (tree.root / "consumers" / "rename.py").read_text()


async def run(
    tree: Tree, halves: int, unpaired: float, window: float, idle_after: float, workdir: Path
) -> dict[str, float]:
    server = NatsServer(state_dir=workdir / "nats")
    server.start()
    pairer: subprocess.Popen[bytes] | None = None
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream(publish_async_max_pending=2000)
        await ensure_stream(js)
        payloads, pairs, lone = messages(halves, unpaired)
        t0 = time.perf_counter()
        for events in payloads:
            first = events[0]
            await js.publish_async(
                event_subject(first["host"], first["type"]), encode_batch(events)
            )
        await js.publish_async_completed()
        stored = time.perf_counter() - t0
        print(f"[{tree.label}] stored {halves:,} halves in {len(payloads):,} messages "
              f"in {stored:.1f}s", flush=True)  # fmt: skip
        tally, stop = Tally(), asyncio.Event()
        reader = asyncio.create_task(read_outputs(js, tally, stop))
        args = ["rename", "--nats", server.url, "--window", str(window)]
        if takes_idle_after(tree):
            args += ["--idle-after", str(idle_after)]
        cpu = consumer_cpu()
        with open(workdir / f"pairer-{tree.label.replace('/', '_')}.log", "wb") as log:
            pairer = subprocess.Popen(
                [sys.executable, "-m", "snoopbus.consumers", *args], env=tree.env(),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
            )  # fmt: skip
        while True:  # timed from the moment its durable exists (start-up excluded)
            if pairer.poll() is not None:
                raise RuntimeError(f"pairer exited early; see {workdir}")
            try:
                await js.consumer_info(STREAM_NAME, "rename")
                break
            except NotFoundError:
                await asyncio.sleep(0.02)
        start, cpu0 = time.perf_counter(), _cpu_s(pairer.pid)
        while tally.halves < halves:
            if pairer.poll() is not None:
                raise RuntimeError(f"pairer exited early; see {workdir}")
            await asyncio.sleep(0.05)
        cpu_s = _cpu_s(pairer.pid) - cpu0  # until every half was out: less load-sensitive
        total = time.perf_counter() - start
        await asyncio.sleep(0.5)  # anything more would be an output twice
        stop.set()
        await reader
        rss = peak_rss_mb(pairer.pid)
        await nc.close()
        renamed = tally.types["renamed"]
        seconds = tally.last_renamed - start
        return {
            "halves": halves, "messages": len(payloads), "pairs": pairs, "lone": lone,
            "renamed": renamed, "seconds": seconds, "total": total, "rss_mb": rss,
            "unpaired": tally.types["moved_out"] + tally.types["moved_in"],
            "twice": tally.twice,
            "cpu_us": cpu_s / max(renamed, 1) * 1e6,
        }  # fmt: skip
    finally:
        if pairer is not None and pairer.poll() is None:
            os.kill(pairer.pid, signal.SIGTERM)
            try:
                pairer.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(pairer.pid, signal.SIGKILL)
                pairer.wait()
        server.stop()


def report(label: str, r: dict[str, float]) -> str:
    false = r["unpaired"] - r["lone"]
    return (
        f"rename pairer ({label}): {r['renamed']:,} renamed from {r['halves']:,} halves "
        f"({r['lone']:,} unpaired) in {r['seconds']:.1f}s -> "
        f"{r['renamed'] / r['seconds']:,.0f} renamed/s, {r['cpu_us']:.1f} CPU µs/renamed; "
        f"all {r['unpaired']:,} moved_in/out out by {r['total']:.1f}s "
        f"({false:,} false, {r['pairs'] - r['renamed']:,} pairs missed, "
        f"{r['twice']:,} outputs twice); peak RSS {r['rss_mb']:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.rename_pairer")
    parser.add_argument("--halves", type=int, default=1_000_000, help="halves to pair")
    parser.add_argument("--unpaired", type=float, default=0.01, help="share without a partner")
    parser.add_argument("--window", type=float, default=2.0, help="pairer window, seconds")
    parser.add_argument("--idle-after", type=float, default=5.0,
                        help="pairer --idle-after, seconds (revisions that have it)")
    parser.add_argument("--before", default="main", metavar="REF",
                        help="also run this git revision's pairer (or the code in this "
                        "directory) on the same halves, first (default main; '' for this "
                        "branch only)")  # fmt: skip
    args = parser.parse_args(argv)
    trees = [Tree.current()]
    results: list[tuple[str, dict[str, float]]] = []
    try:
        if args.before:
            trees.insert(0, Tree.checkout(args.before))
        for tree in trees:
            with tempfile.TemporaryDirectory(prefix="snoopbus-bench-") as tmp:
                r = asyncio.run(run(tree, args.halves, args.unpaired, args.window,
                                    args.idle_after, Path(tmp)))  # fmt: skip
            print(report(tree.label, r), flush=True)
            results.append((tree.label, r))
    finally:
        for tree in trees:
            tree.remove()
    if len(results) == 2:
        (a, ra), (b, rb) = results
        rate = [r["renamed"] / r["seconds"] for r in (ra, rb)]
        print(f"{b} / {a}: {rate[1] / rate[0]:.2f}x renamed/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
