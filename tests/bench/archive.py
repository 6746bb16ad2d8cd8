"""Benchmark: the archive — events/s archived, CPU per event, peak RSS, bytes/event, queries.

    .venv/bin/python -m tests.bench.archive              # 1M through NATS, 500k in process
    .venv/bin/python -m tests.bench.archive --events 0 --nats-events 10000000  # the issue's
    .venv/bin/python -m tests.bench.archive --before ''  # this branch only

Synthetic events shaped like a busy host (10% exec with argv, the rest file
events over a pool of paths, 4 hosts), spread evenly over one UTC day, then:

1. through NATS (tests/bench/backlog.py): a private nats-server with
   `--nats-events` stored first (100 events per message, as a collector
   batches), then `snoopbus consume archive` as its own process, pinned to one
   CPU, timed from its durable's creation until nothing is pending or unacked:
   events/s, CPU µs per event (its own user+system time) and peak RSS. The
   same backlog is then archived by `--before`'s code (default main, from a
   temporary git worktree, removed afterwards; or a folder holding an
   exported tree, `git archive main | tar -x -C DIR`), first, so both columns
   come from one run; every row is checked to be on disk;
2. write path, in process (`--events`): the archiver's reference row path
   (decode to records, dedup, columns per fetched batch; not the native
   decoder, which only step 1 measures) and commits (Parquet+zstd, temp,
   fsync, rename, dir fsync) in windows of `--roll-events`;
3. queries over the archive of step 2, each with DuckDB and with pyarrow:
   a point lookup (one exact path, whole archive), a narrow lookup (one pid in
   one minute) and a day's scan (a path glob no statistic can prune, over the
   whole day, so every row of the day is read).

One run on a shared 2-core machine: compare ratios, not absolutes; CPU per
event moves less than events/s when other processes share the core.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from snoopbus.consumers.archive import layout
from snoopbus.consumers.archive.columns import NS_PER_DAY, records_table
from snoopbus.consumers.archive.layout import PartKey, day_of
from snoopbus.consumers.archive.query import ArrowEngine, DuckDBEngine, Filters, run_query
from snoopbus.consumers.archive.writer import Key, Writer
from snoopbus.consumers.gctune import tune_gc
from snoopbus.proto import (
    SCHEMA_VERSION,
    decode_records,
    encode_batch,
    event_subject,
    host_token,
)

from .backlog import (
    SLOT,
    Result,
    Tree,
    add_flags,
    consumer_cpu,
    copies_of,
    drain,
    relabelled,
    stored,
    table,
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
        ev: dict[str, Any] = {"v": SCHEMA_VERSION, "id": f"{host}{SLOT}{n}",
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


def seen(w: Writer, key: Key) -> bool:
    """Whether the archive holds `key` already: window, commit in flight or on disk."""
    return w.window.has(*key) or key in w.recent or (
        w.inflight is not None and w.inflight.has(*key)
    )


def write_path(root: Path, total: int, roll: int) -> tuple[float, int]:
    """Seconds to archive `total` events from their payloads, and files written:
    the archiver's own row path (decode to records, dedup by id, columns a
    fetched batch at a time), without NATS."""
    tune_gc()  # as the archiver does in setup
    w = Writer(root)
    tokens = {h: host_token(h) for h in HOSTS}
    days: dict[int, str] = {}
    start = time.perf_counter()
    payloads = (payload for _, payload in messages(total, seed=1))
    # As the archiver: columns a fetched batch (about 90 messages) at a time.
    while batch := list(itertools.islice(payloads, 90)):
        groups: dict[PartKey, tuple[list[Any], list[str]]] = {}
        for payload in batch:
            records = decode_records(payload)
            assert records is not None
            for r in records:
                token = tokens[r.host]
                if seen(w, ("events", token, r.id)):
                    continue
                day = r.ts // NS_PER_DAY
                text = days.get(day) or days.setdefault(day, day_of(r.ts))
                rows, ids = groups.setdefault(PartKey("events", text, token), ([], []))
                rows.append(r)
                ids.append(r.id)
        for part, (rows, ids) in groups.items():
            w.window.buffer(part).add(records_table(rows), ids)  # type: ignore[union-attr]
            w.window.add_ids("events", part.host, ids)
            w.window.rows += len(ids)  # what Archiver._attach counts
        if w.window.rows >= roll:
            window = w.take()
            w.commit(window)
            w.committed(window)
    window = w.take()
    w.commit(window)
    return time.perf_counter() - start, w.files_written


def gen_time(total: int) -> float:
    """Seconds per event spent only making and encoding the synthetic events
    (subtracted from the write path's)."""
    start = time.perf_counter()
    for _ in messages(total, seed=1):
        pass
    return (time.perf_counter() - start) / total


def messages(total: int, seed: int = 2) -> Iterator[tuple[str, bytes]]:
    """The events as a collector sends them: 100 per message, one (host, type) each."""
    events = Events(total, seed=seed)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for n in range(total):
        ev = events.make(n)
        group = groups.setdefault((ev["host"], ev["type"]), [])
        group.append(ev)
        if len(group) == 100:
            yield event_subject(ev["host"], ev["type"]), encode_batch(group)
            group.clear()
    for (host, kind), group in groups.items():
        if group:
            yield event_subject(host, kind), encode_batch(group)


async def through_nats(total: int, work: Path, trees: list[Tree], roll: int) -> list[Result]:
    """Each tree's archiver, as its own process, over the same stored backlog."""
    results = []
    distinct, copies = copies_of(total)
    total = distinct * copies
    async with stored(work, relabelled(messages(distinct), copies), total) as (js, url):
        for i, tree in enumerate(trees):
            out = work / f"nats-archive-{i}"
            # Rolls by size; the last window waits 1 s, not the default 30 s.
            args = ["--dir", str(out), "--no-alerts", "--roll-events", str(roll),
                    "--roll-seconds", "1"]  # fmt: skip
            r = await drain(js, url, tree, "archive", args, total, work, cpu=consumer_cpu())
            rows = sum(pq.ParquetFile(f.path).metadata.num_rows for f in layout.files(out))
            if rows != total:
                raise SystemExit(f"archive ({tree.label}) wrote {rows:,} rows of {total:,}")
            print(table([r], ""), flush=True)
            shutil.rmtree(out, ignore_errors=True)
            results.append(r)
    return results


def timed(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=500_000,
                   help="events archived in process, then queried (default 500k; 0 skips)")
    add_flags(p, "archiver")
    p.add_argument("--roll-events", type=int, default=200_000, help="events per commit window")
    p.add_argument("--reuse", action="store_true",
                   help="with --dir: keep the archive already there, time the queries only")
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="snoopbus-bench-archive-"))
    root = work / "archive"
    trees = [Tree.current()]
    try:
        if args.nats_events and not args.reuse:
            if args.before:
                trees.insert(0, Tree.checkout(args.before))
            results = asyncio.run(through_nats(args.nats_events, work, trees, args.roll_events))
            print()
            print(table(results, f"archive through NATS, {args.nats_events:,} events stored "
                                 "first, one process each, pinned to one CPU:"))  # fmt: skip
            print()
        if not args.events:
            return
        events = Events(args.events)
        rows: list[tuple[str, str]] = [("events", f"{args.events:,}")]
        if not (args.reuse and args.dir and root.is_dir()):
            per_gen = gen_time(min(args.events, 50_000))
            seconds, files = write_path(root, args.events, args.roll_events)
            archived = seconds - per_gen * args.events
            rows += [
                ("write path: events/s (row building + commit)", f"{args.events / archived:,.0f}"),
                ("  (incl. making and encoding them)", f"{args.events / seconds:,.0f}"),
            ]
        size = sum(f.size for f in layout.files(root))
        files = len(list(layout.files(root)))
        rows.append(("files / bytes per event on disk", f"{files} / {size / args.events:.1f}"))
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
        rows.append(("peak RSS (this process)", f"{peak:,.0f} MB"))
        width = max(len(k) for k, _ in rows)
        print(f"{'measure':<{width}}  value")
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    finally:
        for tree in trees:
            tree.remove()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
