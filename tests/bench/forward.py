"""Benchmark: events per second the forwarder delivers, per sink, into local receivers.

    .venv/bin/python -m tests.bench.forward                 # 50,000 events per sink
    .venv/bin/python -m tests.bench.forward --events 10000 --sinks syslog,elastic
    git worktree add /tmp/fwd-before main
    .venv/bin/python -m tests.bench.forward --before /tmp/fwd-before   # before/after, one run

Starts its own nats-server and stores the events first (100 per message, as
a collector batches), then for each sink runs a forwarder (in this process)
with only that sink, from a fresh durable, and times it from start until
every message is acked, i.e. accepted by the receiver. Receivers: files for
the file sinks; an HTTP server (webhook and `_bulk`, the one the tests use)
in a separate process; one rsyslogd (imptcp, imudp, imtcp+gtls) writing to
a file. "received" counts what arrived (UDP may drop; the others must not).

"events/cpu-s" is events per second of the forwarder's own CPU time (this
process, every thread; the receivers and nats-server run in others): what
one core would sustain, and steadier than the wall clock on a shared
machine. With `--before DIR` each sink runs twice per round, the code in
DIR (a checkout of another commit: its proto/, collector/ and consumers/)
and this tree's, alternately in fresh processes under this harness, and the
table shows both, with the best round of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Runtime
from snoopbus.consumers.forward import Forwarder, parse_spec
from snoopbus.consumers.forward.worker import SINK_SETTINGS
from snoopbus.proto import encode_batch, ensure_stream, event_subject

from .backlog import SLOT, Tree, consumer_cpu, copies_of, drain, relabelled, stored, table

PER_MESSAGE = 100


def event(seq: int) -> dict:
    kind = ("exec", "open", "close_write", "exit")[seq % 4]
    e = {
        "v": 1, "id": f"bench{SLOT}{seq}", "ts": 1_763_776_800_000_000_000 + seq * 1000,
        "host": "bench-host", "type": kind,
        "proc": {"pid": 1000 + seq % 5000, "tid": 1000 + seq % 5000, "ppid": 1, "uid": 1000,
                 "gid": 1000, "comm": "python3", "exe": "/usr/bin/python3.11",
                 "argv": ["python3", "-m", "app.worker", f"--job={seq}"], "cwd": "/srv/app"},
    }  # fmt: skip
    if kind in ("open", "close_write"):
        e["file"] = {"path": f"/srv/app/data/{seq % 977}/part-{seq}.json", "inode": seq,
                     "mode": 0o100644, "flags": 0o101}  # fmt: skip
    if kind == "exit":
        e["exit_code"] = 0
    return e


def serve_http() -> None:
    """Child process: the tests' HTTP receiver; prints its port, runs until stdin closes."""
    from tests.support.forward import HttpReceiver

    async def main() -> None:
        rx = HttpReceiver()
        await rx.start()
        print(rx.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await rx.stop()

    asyncio.run(main())


@contextlib.contextmanager
def http_receiver_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.forward", "--serve-http"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


async def settle(path: Path, since: int, want: int, within: float = 30.0) -> int:
    """Lines added to `path` since `since`, once it stops growing (or has them all)."""
    deadline, last, still = time.monotonic() + within, -1, 0.0
    while time.monotonic() < deadline:
        n = count_lines(path) - since
        if n >= want:
            return n
        if n == last:
            still += 0.1
            if still >= 1.0:
                return n
        else:
            last, still = n, 0.0
        await asyncio.sleep(0.1)
    return count_lines(path) - since


async def run_sink(nc, url: str, messages: int) -> tuple[float, float]:
    spec = parse_spec(url, env=ENV)
    settings = replace(SINK_SETTINGS, fetch_timeout=0.2)
    # As `consume forward` runs it: collector tuned (a tree from before the option runs without).
    tuned = {"gc_tuning": True} if "gc_tuning" in inspect.signature(Forwarder).parameters else {}
    fwd = Forwarder([spec], settings=replace(Forwarder.settings, fetch_timeout=0.2),
                    sink_settings=settings, **tuned)  # fmt: skip
    runtime = Runtime(fwd, nc=nc)
    task = asyncio.create_task(runtime.run())
    await fwd.ready()
    start, cpu = time.monotonic(), time.process_time()
    worker = fwd.workers[0]
    while worker.stats.acked + worker.stats.dead_lettered < messages:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
    runtime.stop()
    await task
    if worker.stats.dead_lettered:
        raise SystemExit(f"{url}: {worker.stats.dead_lettered} messages dead-lettered")
    return elapsed, cpu


SINKS = ("jsonl+file", "ecs+file", "ocsf+file", "webhook+http", "ocsf+http", "elastic+http",
         "otlp+http", "splunk+http", "syslog+tcp", "syslog+tls", "syslog+udp",
         "cef+tcp")  # fmt: skip
ENV = {"SNOOPBUS_SPLUNK_TOKEN": "bench"}


def sink_url(name: str, work: Path, http_port: int, rsyslog: Any) -> tuple[str, Path | None]:
    """The --to URL for one benchmarked sink, and the file its output lands in."""
    fmt, transport = name.split("+")
    if transport == "file":
        return f"{name}://{work}/{fmt}.jsonl", work / f"{fmt}.jsonl"
    if transport == "http":
        path = {"webhook": "/hook", "ocsf": "/ocsf", "elastic": "/bench", "otlp": "/v1/logs",
                "splunk": "/services/collector/event"}[fmt]  # fmt: skip
        return f"{name}://127.0.0.1:{http_port}{path}", None
    port = {"tcp": rsyslog.tcp, "udp": rsyslog.udp, "tls": rsyslog.tls}[transport]
    ca = f"?ca={work / 'tls' / 'ca.pem'}" if transport == "tls" else ""
    return f"{name}://127.0.0.1:{port}{ca}", rsyslog.out


async def bench(total: int, only: set[str] | None, work: Path, as_json: bool = False) -> None:
    from tests.support.processes import free_port
    from tests.support.syslog import Rsyslog, make_certs

    server = NatsServer(state_dir=work / "nats")
    server.start()
    rsyslog: Rsyslog | None = None
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        events = [event(i) for i in range(total)]
        by_type: dict[str, list[dict]] = {}
        for e in events:
            by_type.setdefault(e["type"], []).append(e)
        futures = []
        for type_, group in by_type.items():
            for start in range(0, len(group), PER_MESSAGE):
                payload = encode_batch(group[start : start + PER_MESSAGE])
                futures.append(await js.publish_async(event_subject("bench-host", type_), payload))
        await asyncio.gather(*futures)
        messages = len(futures)

        names = [n for n in SINKS if not only or any(n.startswith(o) for o in only)]
        syslogs = [n for n in names if n.startswith(("syslog", "cef"))]
        if syslogs:  # only what the chosen sinks need: rsyslogd is slow to start TLS
            make_certs(work / "tls")
            rsyslog = Rsyslog(work, free_port(), free_port(socket.SOCK_DGRAM),
                              free_port() if "syslog+tls" in syslogs else None)  # fmt: skip
            rsyslog.start()
        needs_http = any(n.endswith("+http") for n in names)
        rows: list[tuple[str, float, float, int | str]] = []
        with contextlib.ExitStack() as stack:
            http_port = stack.enter_context(http_receiver_process()) if needs_http else 0
            for name in names:
                url, out = sink_url(name, work, http_port, rsyslog)
                before = count_lines(out) if out else 0
                try:
                    seconds, cpu = await run_sink(nc, url, messages)
                except Exception as exc:  # e.g. a sink the code under test does not have
                    print(f"  {name:<14} not run: {type(exc).__name__}: {exc}", file=sys.stderr)
                    continue
                received: int | str = "(acked)"
                if out is not None:
                    received = await settle(out, before, total)
                rows.append((name, seconds, cpu, received))
                print(f"  {name:<14} {total / seconds:>10,.0f} events/s", file=sys.stderr)
        await nc.close()
    finally:
        if rsyslog is not None:
            rsyslog.stop()
        server.stop()

    if as_json:
        print(json.dumps([{"sink": n, "seconds": s, "cpu": c, "received": r}
                          for n, s, c, r in rows]))  # fmt: skip
        return
    print(f"\nforward: {total:,} events ({messages} messages of {PER_MESSAGE}) per sink\n")
    print(f"{'sink':<14} {'seconds':>8} {'events/s':>10} {'events/cpu-s':>13} {'received':>10}")
    for name, seconds, cpu, received in rows:
        shown = f"{received:,}" if isinstance(received, int) else received
        print(f"{name:<14} {seconds:>8.2f} {total / seconds:>10,.0f} {total / cpu:>13,.0f} "
              f"{shown:>10}")  # fmt: skip


def backlog_messages(total: int) -> Any:
    """`total` events as a collector sends them: up to 100 of one type per message."""
    groups: dict[str, list[dict]] = {}
    for seq in range(total):
        e = event(seq)
        group = groups.setdefault(e["type"], [])
        group.append(e)
        if len(group) == PER_MESSAGE:
            yield event_subject("bench-host", e["type"]), encode_batch(group)
            group.clear()
    for type_, group in groups.items():
        if group:
            yield event_subject("bench-host", type_), encode_batch(group)


async def through_nats(total: int, only: set[str] | None, work: Path, trees: list[Tree]) -> None:
    """`snoopbus consume forward --to URL` as its own process, pinned to one CPU,
    through a backlog stored first (backlog.py): events/s, CPU per event, peak RSS."""
    names = [n for n in SINKS if not only or any(n.startswith(o) for o in only)]
    names = [n for n in names if n.endswith(("+file", "+http"))]  # rsyslogd: the in-process run
    distinct, copies = copies_of(total)
    total = distinct * copies
    os.environ.update(ENV)
    results = []
    with contextlib.ExitStack() as stack:
        http_port = stack.enter_context(http_receiver_process())
        backlog = relabelled(backlog_messages(distinct), copies)
        async with stored(work, backlog, total) as (js, nats):
            for name in names:
                url, out = sink_url(name, work, http_port, None)
                durable = parse_spec(url, env=ENV).consumer_name
                for tree in trees:
                    r = await drain(js, nats, tree, "forward", ["--to", url], total, work,
                                    cpu=consumer_cpu(), durable=durable)  # fmt: skip
                    r.label = f"{name} ({tree.label})" if len(trees) > 1 else name
                    print(table([r], ""), flush=True)
                    results.append(r)
                    if out is not None:
                        out.unlink(missing_ok=True)
    print(table(results, f"\nforward through NATS, {total:,} events stored first, "
                         "one process each, pinned to one CPU:", compare=False))  # fmt: skip


def code_path(tree: Path, work: Path) -> str:
    """A PYTHONPATH that imports snoopbus from `tree` (a checkout's proto/,
    collector/, consumers/) ahead of the editable install, and tests from here."""
    shim = work / f"shim-{abs(hash(str(tree)))}" / "snoopbus"
    shim.mkdir(parents=True, exist_ok=True)
    for part in ("proto", "collector", "consumers"):
        link = shim / part
        if not (tree / part).is_dir():
            raise SystemExit(f"--before {tree}: no {part}/ there (give a checkout)")
        if not link.is_symlink():
            link.symlink_to(tree / part)
    here = Path(__file__).resolve().parents[2]
    return f"{shim.parent}{os.pathsep}{here}"


def run_child(tree: Path | None, total: int, sink: str, work: Path) -> dict[str, Any] | None:
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = code_path(tree, work) if tree is not None else here
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.forward", "--events", str(total), "--sinks", sink,
         "--json"], env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        print(f"  {sink}: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    rows = [r for r in json.loads(proc.stdout.strip().splitlines()[-1]) if r["sink"] == sink]
    return rows[0] if rows else None


def compare(before: Path, total: int, only: set[str] | None, rounds: int, work: Path) -> None:
    names = [n for n in SINKS if not only or any(n.startswith(o) for o in only)]
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(rounds):
        for name in names:
            for label, tree in (("before", before), ("after", None)):
                row = run_child(tree, total, name, work)
                if row is None:
                    continue
                old = best.get((label, name))
                if old is None or row["cpu"] < old["cpu"]:
                    best[(label, name)] = row
                print(f"  {name:<14} {label:<6} {total / row['seconds']:>10,.0f} events/s "
                      f"{total / row['cpu']:>10,.0f} events/cpu-s", file=sys.stderr)  # fmt: skip
    print(f"\nforward: {total:,} events per sink, before = {before}, after = this tree, "
          f"best of {rounds}\n")  # fmt: skip
    print(f"{'sink':<14} {'before/s':>9} {'after/s':>9} {'before/cpu-s':>13} "
          f"{'after/cpu-s':>12} {'cpu ratio':>9} {'received':>9}")  # fmt: skip
    for name in names:
        b, a = best.get(("before", name)), best.get(("after", name))

        def rate(row: dict[str, Any] | None, key: str) -> str:
            return f"{total / row[key]:,.0f}" if row else "-"

        ratio = f"{b['cpu'] / a['cpu']:.1f}x" if a and b else "-"
        received = a["received"] if a else "-"
        shown = f"{received:,}" if isinstance(received, int) else received
        print(f"{name:<14} {rate(b, 'seconds'):>9} {rate(a, 'seconds'):>9} {rate(b, 'cpu'):>13} "
              f"{rate(a, 'cpu'):>12} {ratio:>9} {shown:>9}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--sinks", default="", help="comma-separated prefixes, e.g. syslog,elastic")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also run the code in DIR (a checkout) and print both")
    parser.add_argument("--rounds", type=int, default=1, help="with --before: rounds, best kept")
    parser.add_argument("--nats-events", type=int, default=0,
                        help="instead: `consume forward` as its own process through a backlog "
                        "of this many events (file and HTTP sinks; backlog.py)")  # fmt: skip
    parser.add_argument("--nats-before", default="", metavar="REF",
                        help="with --nats-events: also run this git revision's forwarder, "
                        "first, on the same backlog")  # fmt: skip
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-http", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_http:
        serve_http()
        return
    only = {s.strip() for s in args.sinks.split(",") if s.strip()} or None
    work = Path(tempfile.mkdtemp(prefix="snoopbus-bench-forward-"))
    trees: list[Tree] = []
    try:
        if args.nats_events:
            if args.nats_before:
                trees.append(Tree.checkout(args.nats_before))
            trees.append(Tree.current())
            asyncio.run(through_nats(args.nats_events, only, work, trees))
        elif args.before is not None:
            compare(args.before.resolve(), args.events, only, args.rounds, work)
        else:
            asyncio.run(bench(args.events, only, work, args.json))
    finally:
        for tree in trees:
            tree.remove()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
