"""Benchmark: the archive under a steady trickle for minutes: does its RSS level off, and where?

    .venv/bin/python -m tests.bench.archive_steady [--duration 5m] [--rate 1000] [--hosts 1]
        [--roll-seconds 30] [--before main|DIR|''] [--variant 'LABEL:KEY=VAL,KEY=VAL' ...]

A stand-in for the hour-long soak (tests/bench/soak.py), where the archive
grew from 110 to ~310 MB: every archiver measured (`--before`'s code, this
branch, and this branch again under each `--variant`'s environment, e.g.
`sys:ARROW_DEFAULT_MEMORY_POOL=system`) runs at the same time as its own
process, with its own private nats-server, and one publisher sends each of
them the same messages at `--rate` events/s (collector-shaped: exec with
argv, file events over a pool of paths; one message per host and type every
`--flush` seconds, timestamps now). Every `--sample-every` seconds each one's
RSS and anonymous RSS (/proc/PID/status) is printed; at the end a table of
RSS after the first minute, the peak and the last sample, and CPU µs per
event (utime+stime over the whole run). Not pinned: the archivers share the
machine's CPUs alike; compare them with each other, within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.archive import layout
from snoopbus.proto import SCHEMA_VERSION, connect, encode_batch, ensure_stream, event_subject

from .backlog import CLOCK_TICKS, Tree
from .soak import duration as parse_duration

COMMS = ("bash", "python3", "cc1", "make", "git", "ld", "as", "sh")
FILE_TYPES = ("create", "modify", "close_write", "moved_from", "moved_to", "delete")


@dataclass
class Run:
    label: str
    tree: Tree
    env: dict[str, str]
    work: Path
    server: NatsServer | None = None
    proc: subprocess.Popen[bytes] | None = None
    nc: Client | None = None
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (s, rss, anon)
    cpu0: float = 0.0
    cpu_s: float = 0.0


class Load:
    """Collector-shaped events at a rate, for `hosts` hosts."""

    def __init__(self, hosts: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.hosts = [f"build-{i:03d}.example.com" for i in range(hosts)]
        self.paths = [f"/home/dev/proj/{d}/{i:05d}.{x}" for i in range(5_000)
                      for d, x in (("src", "c"),)] + [f"/tmp/cc{i:06x}.o" for i in range(5_000)]
        self.n = 0

    def event(self, host: str) -> dict[str, Any]:
        rng = self.rng
        self.n += 1
        pid = rng.randrange(1000, 60_000)
        comm = rng.choice(COMMS)
        # Every event with its process's argv and cwd, as the collector sends
        # them (~700 bytes an event on the wire, as in the soak).
        proc = {"pid": pid, "tid": pid, "ppid": pid - 1, "uid": 1000, "gid": 1000, "comm": comm,
                "exe": f"/usr/bin/{comm}", "cgroup": 4242, "cwd": "/home/dev/proj",
                "argv": [f"/usr/bin/{comm}", "-O2", "-c", rng.choice(self.paths), "-o",
                         f"/home/dev/proj/build/out{pid}.o"]}  # fmt: skip
        ev: dict[str, Any] = {"v": SCHEMA_VERSION, "id": f"i{os.getpid():x}-{self.n}",
                              "ts": time.time_ns(), "host": host, "proc": proc}  # fmt: skip
        if self.n % 10 == 0:
            ev["type"] = "exec"
        else:
            ev["type"] = rng.choice(FILE_TYPES)
            ev["file"] = {"path": rng.choice(self.paths), "flags": 0o100101, "mode": 0o644,
                          "inode": rng.randrange(1 << 20), "dev": 2049}  # fmt: skip
        return ev

    def batch(self, count: int, most: int) -> list[tuple[str, bytes]]:
        """`count` events as a collector sends them: a message per host and type,
        of at most `most` events (a collector at a few hundred events/s sends 1-2)."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        out = []
        for i in range(count):
            ev = self.event(self.hosts[i % len(self.hosts)])
            group = groups.setdefault((ev["host"], ev["type"]), [])
            group.append(ev)
            if len(group) >= most:
                out.append((event_subject(ev["host"], ev["type"]), encode_batch(group)))
                group.clear()
        out += [(event_subject(h, t), encode_batch(evs)) for (h, t), evs in groups.items() if evs]
        return out


def _status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def start(run: Run, roll_seconds: float) -> None:
    run.server = NatsServer(state_dir=run.work / "nats")
    run.server.start()
    run.nc = await connect(run.server.url, name="bench-steady")
    await ensure_stream(run.nc.jetstream())
    config = run.work / "empty.toml"
    config.write_text("")
    cmd = [sys.executable, "-m", "snoopbus.consumers", "--config", str(config), "--nats",
           run.server.url, "archive", "--dir", str(run.work / "archive"), "--no-alerts",
           "--roll-seconds", str(roll_seconds)]  # fmt: skip
    env = {**run.tree.env(), **run.env}
    with open(run.work / "archive.log", "wb") as log:
        run.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=run.work)  # fmt: skip


def stop(run: Run) -> None:
    if run.proc is not None and run.proc.poll() is None:
        os.kill(run.proc.pid, signal.SIGTERM)
        try:
            run.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
    if run.server is not None:
        run.server.stop()


async def publish(runs: list[Run], load: Load, args: argparse.Namespace) -> int:
    """Send the load to every run's server; sample RSS along the way. Events sent."""
    rate, seconds, flush, sample_every = args.rate, args.duration, args.flush, args.sample_every
    sent = 0
    t0 = time.monotonic()
    next_sample = t0
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate) - sent
        if due > 0:
            msgs = load.batch(due, args.per_message)
            for run in runs:
                assert run.nc is not None
                js = run.nc.jetstream(publish_async_max_pending=4000)
                for subject, payload in msgs:
                    await js.publish_async(subject, payload)
            sent += due
        if now >= next_sample:
            next_sample += sample_every
            line = [f"{now - t0:6.0f}s {sent:>9,} events"]
            for run in runs:
                assert run.proc is not None
                if run.proc.poll() is not None:
                    raise SystemExit(f"{run.label} exited; see {run.work / 'archive.log'}")
                st = _status(run.proc.pid)
                run.samples.append((now - t0, st["VmRSS"], st["RssAnon"]))
                line.append(f"{run.label} {st['VmRSS']:4.0f}/{st['RssAnon']:4.0f}")
            print("  ".join(line) + "  (RSS/anon MB)", flush=True)
        await asyncio.sleep(flush)
    return sent


def commits(root: Path) -> str:
    """Files, commits (files named within 1 s of each other), and how long a
    commit took: from its first name (taken before encoding) to its last
    file's mtime (written and fsynced)."""
    named = sorted((layout.commit_ns(f.path) or 0, f.path.stat().st_mtime_ns)
                   for f in layout.files(root))  # fmt: skip
    spans: list[list[int]] = []
    for ns, mtime in named:
        if spans and ns - spans[-1][0] < 10**9:
            spans[-1][1] = max(spans[-1][1], mtime)
            spans[-1][2] += 1
        else:
            spans.append([ns, mtime, 1])
    took = sorted((end - start) / 1e9 for start, end, _ in spans) or [0.0]
    median = took[len(took) // 2]
    return (f"{len(named):,} files in {len(spans)} commits; a commit took {median:.2f}s "
            f"(median), {took[-1]:.2f}s at most")  # fmt: skip


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, pairs = text.partition(":")
    env = dict(p.split("=", 1) for p in pairs.split(",") if p)
    return label, env


async def run_all(runs: list[Run], args: argparse.Namespace) -> None:
    for run in runs:
        await start(run, args.roll_seconds)
    await asyncio.sleep(3)  # imports, durable
    for run in runs:
        assert run.proc is not None
        run.cpu0 = _cpu_s(run.proc.pid)
    sent = await publish(runs, Load(args.hosts), args)
    await asyncio.sleep(args.roll_seconds + 2)  # the last window committed
    for run in runs:
        assert run.proc is not None and run.nc is not None
        run.cpu_s = _cpu_s(run.proc.pid) - run.cpu0
        await run.nc.close()
        print(f"{run.label}: {commits(run.work / 'archive')}", flush=True)
    print()
    print(f"archive, steady {args.rate:,.0f} events/s for {args.duration:.0f}s over "
          f"{args.hosts} hosts, roll {args.roll_seconds:g}s; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    head = ("", "RSS@60s MB", "peak MB", "last MB", "anon last", "CPU µs/event")
    rows = [head]
    for run in runs:
        early = next((s for s in run.samples if s[0] >= 60), run.samples[-1])
        rows.append((run.label, f"{early[1]:.0f}", f"{max(s[1] for s in run.samples):.0f}",
                     f"{run.samples[-1][1]:.0f}", f"{run.samples[-1][2]:.0f}",
                     f"{run.cpu_s / sent * 1e6:.2f}"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:],
                                                                            strict=True)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=parse_duration, default=300.0)
    p.add_argument("--rate", type=float, default=1000.0, help="events/s (default 1000)")
    p.add_argument("--hosts", type=int, default=1)
    p.add_argument("--per-message", type=int, default=2,
                   help="events per message at most (default 2, as a collector at this rate)")
    p.add_argument("--flush", type=float, default=0.2, help="s between publishes (default 0.2)")
    p.add_argument("--roll-seconds", type=float, default=30.0)
    p.add_argument("--sample-every", type=parse_duration, default=10.0)
    p.add_argument("--before", default="main", metavar="REF",
                   help="also run this revision's (or folder's) archiver ('' for none)")
    p.add_argument("--variant", action="append", default=[], type=parse_variant,
                   metavar="LABEL:K=V,...", help="this branch again with this environment")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="snoopbus-bench-steady-"))
    trees = [Tree.checkout(args.before)] if args.before else []
    runs = [Run("before", trees[0], {}, base / "before")] if trees else []
    runs.append(Run("this", Tree.current(), {}, base / "this"))
    for label, env in args.variant:
        runs.append(Run(label, Tree.current(), env, base / label))
    for run in runs:
        run.work.mkdir()
    try:
        asyncio.run(run_all(runs, args))
    finally:
        for run in runs:
            stop(run)
        for tree in trees:
            tree.remove()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
