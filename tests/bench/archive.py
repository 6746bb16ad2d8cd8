"""Benchmark: the archive — events/s archived, bytes/event on disk, query times.

    .venv/bin/python -m tests.bench.archive                      # 500,000 events
    .venv/bin/python -m tests.bench.archive --events 10000000    # the issue's figure

Synthetic events shaped like a busy host (10% exec with argv, the rest file
events over a pool of paths, 4 hosts), spread evenly over one UTC day, then:

1. write path, in process: the archiver's own row building (append_event,
   with its id check) and commits (Parquet+zstd, temp, fsync, rename, dir
   fsync) in windows of `--roll-events`; events/s and bytes/event on disk;
2. through NATS: a private nats-server, `--nats-events` stored first (100
   events per message, as a collector batches), then the Archiver in this
   process through the consumer runtime, timed until every message is acked;
3. queries over the archive of step 1, each with DuckDB and with pyarrow:
   a point lookup (one exact path, whole archive), a narrow lookup (one pid in
   one minute) and a day's scan (a path glob no statistic can prune, over the
   whole day, so every row of the day is read).

One run on a shared 2-core machine: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from snoopbus.collector.natsd import NatsServer
from snoopbus.consumers import Runtime, Settings
from snoopbus.consumers.archive import layout
from snoopbus.consumers.archive.archiver import Archiver, tune_gc
from snoopbus.consumers.archive.columns import NS_PER_DAY, append_event
from snoopbus.consumers.archive.layout import PartKey, day_of
from snoopbus.consumers.archive.query import ArrowEngine, DuckDBEngine, Filters, run_query
from snoopbus.consumers.archive.writer import Writer
from snoopbus.proto import (
    SCHEMA_VERSION,
    STREAM_NAME,
    connect,
    encode_batch,
    ensure_stream,
    event_subject,
    host_token,
)

DAY0 = 1_763_683_200 * 10**9  # 2025-11-21T00:00:00Z
HOSTS = ("web-1", "web-2", "db-1", "build.example.com")
COMMS = ("bash", "python3", "nginx", "postgres", "cc1", "make", "git", "sshd", "cron", "tar")
FILE_TYPES = ("open", "open", "open", "close_write", "create", "modify", "delete", "attrib")
DIRS = ("/var/log/nginx", "/srv/app/src", "/tmp", "/home/dev/project/build", "/etc",
        "/var/lib/postgresql/15/main/base", "/usr/lib/python3.11/site-packages/pkg")  # fmt: skip


class Events:
    """Event n of N, made on demand (10M never sit in memory at once)."""

    def __init__(self, total: int, seed: int = 1) -> None:
        self.total = total
        self.step = NS_PER_DAY // total
        rng = random.Random(seed)
        self.paths = [f"{rng.choice(DIRS)}/f{i:05d}.{rng.choice(('log', 'py', 'o', 'conf'))}"
                      for i in range(20_000)]  # fmt: skip
        self.rng = rng

    def make(self, n: int) -> dict[str, Any]:
        rng = self.rng
        pid = 1000 + (n * 7919) % 30_000
        comm = COMMS[pid % len(COMMS)]
        host = HOSTS[n % len(HOSTS)]
        proc = {"pid": pid, "tid": pid, "ppid": 1000 + (pid // 3) % 30_000, "uid": pid % 3 * 500,
                "gid": 0, "comm": comm, "exe": f"/usr/bin/{comm}", "cgroup": 4242}  # fmt: skip
        ev: dict[str, Any] = {"v": SCHEMA_VERSION, "id": f"{host}-b1-{n}",
                              "ts": DAY0 + n * self.step + rng.randrange(1000), "host": host,
                              "proc": proc}  # fmt: skip
        if n % 10 == 0:
            ev["type"] = "exec"
            proc["argv"] = [comm, "-c", f"job {n % 977}", self.paths[n % 20_000]]
            proc["cwd"] = "/srv/app"
        else:
            ev["type"] = FILE_TYPES[n % len(FILE_TYPES)]
            ev["file"] = {"path": self.paths[rng.randrange(20_000)], "flags": 0o100101,
                          "mode": 0o644, "inode": 100_000 + n % 500_000, "dev": 2049}  # fmt: skip
            ev["ret"] = 3
        return ev


def write_path(root: Path, events: Events, roll: int) -> tuple[float, int]:
    """Seconds to archive every event, and files written (the archiver's own row path)."""
    tune_gc()  # as the archiver does in setup
    w = Writer(root)
    keys: set[tuple[str, str, str]] = set()
    tokens = {h: host_token(h) for h in HOSTS}
    days: dict[int, str] = {}
    start = time.perf_counter()
    for n in range(events.total):
        ev = events.make(n)
        token = tokens[ev["host"]]
        key = ("events", token, ev["id"])
        if key in keys or key in w.recent:
            continue
        day = days.get(ev["ts"] // NS_PER_DAY) or days.setdefault(ev["ts"] // NS_PER_DAY,
                                                                   day_of(ev["ts"]))  # fmt: skip
        append_event(w.window.buffer(PartKey("events", day, token)), ev)
        keys.add(key)
        w.window.rows += 1  # what Archiver._attach counts
        if w.window.rows >= roll:
            window = w.take()
            window.keys = keys
            w.commit(window)
            w.committed(window)
            keys = set()
    window = w.take()
    w.commit(window)
    return time.perf_counter() - start, w.files_written


def gen_time(events: Events, sample: int) -> float:
    """Seconds per event spent only making the synthetic dicts (subtracted above)."""
    start = time.perf_counter()
    for n in range(sample):
        events.make(n)
    return (time.perf_counter() - start) / sample


async def through_nats(total: int, work: Path, roll: int) -> float:
    """Events/s from a pre-filled stream to acked Parquet, through the runtime."""
    events = Events(total, seed=2)
    server = NatsServer(state_dir=work / "nats")
    server.start()
    try:
        nc = await connect(server.url, name="bench-archive")
        js = nc.jetstream()
        await ensure_stream(js)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        pending = []
        for n in range(total):
            ev = events.make(n)
            group = groups.setdefault((ev["host"], ev["type"]), [])
            group.append(ev)
            if len(group) == 100:
                pending.append(await js.publish_async(
                    event_subject(ev["host"], ev["type"]), encode_batch(group)))  # fmt: skip
                groups[(ev["host"], ev["type"])] = []
                if len(pending) >= 500:
                    await asyncio.gather(*pending)
                    pending = []
        for (host, kind), group in groups.items():
            if group:
                subject = event_subject(host, kind)
                pending.append(await js.publish_async(subject, encode_batch(group)))
        await asyncio.gather(*pending)
        settings = Settings(batch=256, concurrency=1, max_ack_pending=50_000)
        archiver = Archiver(work / "nats-archive", roll_seconds=1, roll_events=roll, alerts=False,
                            settings=settings)  # fmt: skip
        runtime = Runtime(archiver, nc=nc, settings=settings)
        start = time.perf_counter()
        task = asyncio.create_task(runtime.run())
        while True:
            await asyncio.sleep(0.2)
            info = await js.consumer_info(STREAM_NAME, "archive")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
        elapsed = time.perf_counter() - start
        runtime.stop()
        await task
        await nc.close()
        assert archiver.writer.rows_written == total, archiver.writer.rows_written
        return total / elapsed
    finally:
        server.stop()


def timed(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=500_000, help="events archived (default 500k)")
    p.add_argument("--nats-events", type=int, default=100_000,
                   help="events through NATS for the end-to-end figure (default 100k; 0 skips)")
    p.add_argument("--roll-events", type=int, default=200_000, help="events per commit window")
    p.add_argument("--dir", type=Path, help="work here (kept); default: a temporary folder")
    p.add_argument("--reuse", action="store_true",
                   help="with --dir: keep the archive already there, time the queries only")
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="snoopbus-bench-archive-"))
    root = work / "archive"
    try:
        events = Events(args.events)
        rows: list[tuple[str, str]] = [("events", f"{args.events:,}")]
        if not (args.reuse and args.dir and root.is_dir()):
            per_gen = gen_time(events, min(args.events, 50_000))
            seconds, files = write_path(root, events, args.roll_events)
            archived = seconds - per_gen * args.events
            rows += [
                ("write path: events/s (row building + commit)", f"{args.events / archived:,.0f}"),
                ("  (incl. making the synthetic events)", f"{args.events / seconds:,.0f}"),
            ]
        size = sum(f.size for f in layout.files(root))
        files = len(list(layout.files(root)))
        rows.append(("files / bytes per event on disk", f"{files} / {size / args.events:.1f}"))
        if args.nats_events and not args.reuse:
            rate = asyncio.run(through_nats(args.nats_events, work, args.roll_events))
            rows.append((f"through NATS: events/s ({args.nats_events:,} events)", f"{rate:,.0f}"))
        probe = events.make(args.events // 2 + 1)
        while "file" not in probe:
            probe = events.make(probe["ts"] % 7 + args.events // 2 + 3)
        t = probe["ts"]
        queries = {
            "point lookup: one exact path, whole archive": Filters(path=probe["file"]["path"]),
            "narrow: one pid, one minute": Filters(
                pids=(probe["proc"]["pid"],), since=t - 30 * 10**9, until=t + 30 * 10**9),
            "day scan: path glob over the whole day": Filters(
                path="*/f01234.*", since=DAY0, until=DAY0 + NS_PER_DAY),
        }  # fmt: skip
        for label, f in queries.items():
            for engine in (DuckDBEngine(), ArrowEngine()):
                secs, found = timed(lambda f=f, e=engine: run_query(root, f, engine=e))
                rows.append(
                    (f"{label} [{engine.name}]", f"{secs * 1000:,.0f} ms ({len(found)} rows)")
                )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(("peak RSS", f"{peak:,.0f} MB"))
        width = max(len(k) for k, _ in rows)
        print(f"{'measure':<{width}}  value")
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
