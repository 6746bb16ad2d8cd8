"""Benchmark: events per second through the alerter with the whole shared corpus loaded.

    .venv/bin/python -m tests.bench.alerter                           # 1M events through NATS
    .venv/bin/python -m tests.bench.alerter --nats-events 10000000    # the issue's figure
    .venv/bin/python -m tests.bench.alerter --events 50000 --nats-events 0 --top 10

Loads the packaged default set plus the shared SigmaHQ Linux corpus
(../shared/sigma/rules beside the clone), builds a synthetic mix shaped like
a busy host (about 35% exec, 65% file events: create/modify/close_write/
delete/moved_to/attrib, over everyday programs and paths, with 1% attacks),
then measures:

1. through NATS (tests/bench/backlog.py): a private nats-server with
   `--nats-events` stored first (100 events per message, as a collector
   batches), then `snoopbus consume alert --rules default <corpus>` as its own
   process, pinned to one CPU, timed from its durable's creation (rules
   loaded) until nothing is pending or unacked: events/s, CPU µs per event and
   peak RSS; `--before`'s code (default main, from a temporary git worktree)
   first, on the same backlog;
2. in process (`--events`): Engine.match over the mix, in this process's CPU
   time, and per rule: each rule's compiled predicate alone over the records
   of its category, CPU ns per event, the slowest `--top`.

One run on a shared 2-core machine: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.loader import default_rules_dir, load_rules
from snoopbus.proto import (
    SCHEMA_VERSION,
    encode_batch,
    event_subject,
)
from tests.support import sigma_corpus

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

CORPUS = sigma_corpus.find() or sigma_corpus.BESIDE / "rules"
HOSTS = ("web-1", "web-2", "db-1")
PER_MESSAGE = 100

EVERYDAY = [
    (["/usr/bin/ls", "-la", "/var/www"], "/usr/bin/bash"),
    (["/usr/bin/grep", "-r", "TODO", "src"], "/usr/bin/bash"),
    (["/usr/bin/git", "status", "--porcelain"], "/usr/bin/zsh"),
    (["/usr/bin/python3", "manage.py", "runserver"], "/usr/bin/bash"),
    (["/usr/bin/cat", "/etc/hostname"], "/usr/bin/sh"),
    (["/usr/bin/sh", "-c", "date +%s > /run/last"], "/usr/sbin/cron"),
    (["/usr/bin/bash", "-c", "ps aux | grep nginx | wc -l"], "/usr/bin/bash"),
    (["/usr/bin/curl", "-s", "http://localhost:8080/health"], "/usr/bin/bash"),
    (["/usr/bin/tar", "czf", "/backup/www.tgz", "/var/www"], "/usr/bin/bash"),
    (["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/pg"], "/usr/lib/systemd/systemd"),
    (["/usr/bin/ssh", "deploy@10.0.0.5", "uptime"], "/usr/bin/bash"),
    (["/usr/bin/find", "/var/log", "-name", "*.gz", "-mtime", "+7"], "/usr/bin/bash"),
]  # fmt: skip
ATTACKS = [
    (["bash", "-c", "echo aWQK | base64 -d | sh"], "/usr/bin/bash"),
    (["/bin/sh", "-c", "id; uname -a"], "/usr/sbin/nginx"),
    (["/tmp/.x/kworker", "-o", "pool.minexmr.com:443"], "/usr/bin/bash"),
    (["chmod", "u+s", "/tmp/rootshell"], "/usr/bin/bash"),
]
FILE_PATHS = [
    "/var/www/html/index.php", "/home/dev/src/app.py", "/var/lib/postgresql/15/main/base/1/2619",
    "/tmp/pip-build-abc/setup.py", "/var/log/nginx/access.log", "/home/dev/.cache/x/y.json",
    "/var/cache/apt/pkgcache.bin", "/run/user/1000/bus",
]  # fmt: skip
ATTACK_PATHS = ["/etc/cron.d/backdoor", "/root/.ssh/authorized_keys", "/etc/sudoers.d/99"]
FILE_TYPES = ("create", "modify", "close_write", "close_write", "delete", "moved_to", "attrib")


def iter_events(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        attack = rng.random() < 0.01
        host = rng.choice(HOSTS)
        base = {"v": SCHEMA_VERSION, "id": f"bench{SLOT}{i}", "ts": 1_700_000_000_000_000_000 + i,
                "host": host}  # fmt: skip
        if rng.random() < 0.35:
            argv, parent = rng.choice(ATTACKS if attack else EVERYDAY)
            exe = argv[0] if argv[0].startswith("/") else f"/usr/bin/{argv[0]}"
            proc = {"pid": 1000 + i, "tid": 1000 + i, "ppid": 999, "uid": rng.choice((0, 1000)),
                    "gid": 0, "comm": exe.rsplit("/", 1)[-1][:15], "exe": exe, "argv": argv,
                    "cwd": "/home/dev", "parent_exe": parent, "parent_argv": [parent]}  # fmt: skip
            yield {**base, "type": "exec", "proc": proc}
        else:
            path = rng.choice(ATTACK_PATHS if attack else FILE_PATHS)
            type_ = rng.choice(FILE_TYPES)
            file: dict[str, Any] = {"path": path}
            if type_ == "attrib":
                file["mode"] = 0o4755 if attack else 0o644
            proc = {"pid": 2000, "tid": 2000, "ppid": 1, "uid": 0, "gid": 0,
                    "comm": "python3", "exe": "/usr/bin/python3", "argv": ["python3", "app.py"],
                    "cwd": "/srv"}  # fmt: skip
            yield {**base, "type": type_, "proc": proc, "file": file}


def make_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    return list(iter_events(n, seed))


def in_process(engine: Engine, events: list[dict[str, Any]]) -> tuple[float, int]:
    # CPU time of this process: on a shared machine, others' load counts less.
    start = time.process_time()
    hits = sum(len(engine.match(e)) for e in events)
    return len(events) / (time.process_time() - start), hits


def per_rule(engine: Engine, events: list[dict[str, Any]]) -> list[tuple[float, str, str]]:
    """(ns per event, category, title) for every rule, on its category's records."""
    from snoopbus.consumers.alert.logsources import EVENT_TYPES

    out = []
    for name, category in engine.categories.items():
        records = [category.record(e) for e in events if e["type"] in EVENT_TYPES[name]]
        if not records:
            continue
        for rule in category.rules:
            match = rule.match
            start = time.process_time_ns()
            for values, low in records:
                match(values, low)
            out.append(((time.process_time_ns() - start) / len(records), name, rule.title))
    return sorted(out, reverse=True)


def messages(events: Iterable[dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
    """As a collector batches: up to PER_MESSAGE events of one (host, type) per message."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in events:
        group = groups.setdefault((event["host"], event["type"]), [])
        group.append(event)
        if len(group) == PER_MESSAGE:
            yield event_subject(event["host"], event["type"]), encode_batch(group)
            group.clear()
    for (host, type_), group in groups.items():
        if group:
            yield event_subject(host, type_), encode_batch(group)


async def through_nats(total: int, trees: list[Tree], work: Path) -> list[Result]:
    """Each tree's alerter, as its own process, over the same stored backlog."""
    results = []
    distinct, copies = copies_of(total)
    total = distinct * copies
    backlog = relabelled(messages(iter_events(distinct)), copies)
    async with stored(work, backlog, total) as (js, url):
        for tree in trees:
            args = ["--rules", "default", str(CORPUS), "--throttle", "60"]
            r = await drain(js, url, tree, "alert", args, total, work, cpu=consumer_cpu())
            print(table([r], ""), flush=True)
            results.append(r)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.alerter")
    parser.add_argument("--events", type=int, default=50_000,
                        help="events matched in process (default 50k; 0 skips)")
    add_flags(parser, "alerter")
    parser.add_argument("--top", type=int, default=10, help="slowest rules to list")
    args = parser.parse_args(argv)
    if not CORPUS.is_dir():
        parser.error(sigma_corpus.MISSING)
    work = args.dir or Path(tempfile.mkdtemp(prefix="snoopbus-bench-alerter-"))
    trees = [Tree.current()]
    try:
        if args.nats_events:
            if args.before:
                trees.insert(0, Tree.checkout(args.before))
            results = asyncio.run(through_nats(args.nats_events, trees, work))
            print()
            print(table(results, f"alerter through NATS (default rules + SigmaHQ corpus), "
                                 f"{args.nats_events:,} events stored first, one process each, "
                                 "pinned to one CPU:"))  # fmt: skip
            print()
        if args.events:
            in_process_report(args.events, args.top)
    finally:
        for tree in trees:
            tree.remove()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def in_process_report(n: int, top: int) -> None:
    paths = [default_rules_dir(), CORPUS]
    start = time.perf_counter()
    report = load_rules(paths)
    load_s = time.perf_counter() - start
    engine = Engine(report.rules)
    events = make_events(n)
    mix = Counter(e["type"] for e in events)
    by_cat = Counter(r.category for r in report.rules)
    print(f"rules: {len(report.rules)} loaded ({', '.join(f'{k} {v}' for k, v in by_cat.items())}),"
          f" {len(report.skipped)} skipped, in {load_s:.2f}s")  # fmt: skip
    print(f"events: {len(events)}  ({', '.join(f'{k} {v}' for k, v in sorted(mix.items()))})")
    rate, hits = in_process(engine, events)
    rows = [("in process (Engine.match)", f"{rate:,.0f}", f"{hits} hits")]
    execs = [e for e in events if e["type"] == "exec"]
    exec_rate, _ = in_process(engine, execs)
    rows.append(("in process, exec events only", f"{exec_rate:,.0f}",
                 f"{by_cat['process_creation']} process_creation rules each"))  # fmt: skip
    print()
    print(f"{'path':<34} {'events/s':>10}  note")
    for name, value, note in rows:
        print(f"{name:<34} {value:>10}  {note}")
    print()
    print(f"slowest {top} rules (compiled predicate alone, on its category's records):")
    print(f"{'ns/event':>9}  {'category':<17} title")
    for ns, category, title in per_rule(engine, events)[:top]:
        print(f"{ns:>9.0f}  {category:<17} {title}")


if __name__ == "__main__":
    raise SystemExit(main())
