"""Benchmark: the publisher's throughput (events acknowledged by JetStream per second).

    .venv/bin/python -m tests.bench.publish_rate [--events 400000] [--drain 1500]
    .venv/bin/python -m tests.bench.publish_rate --before DIR     # before/after, one run

No kernel: events as the collector builds them (tests/bench/forward.py's mix,
one subject per type) are submitted to a real Publisher, a reader drain's
worth (--drain) at a time, as fast as the loop allows, against its own
nats-server; it prints events/s until every one is acknowledged, messages
sent and events per message, and the loop's CPU per event. With
`--before DIR` the code in DIR (a checkout) runs the same, alternately with
this tree's, --rounds times; the best round of each is shown. With
`--paced RATE` it measures the flush policy's latency instead: a drain's
worth every millisecond at RATE events/s, submit -> a core subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import nats

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.loss import LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.proto import ensure_stream, event_subject, events_filter
from tests.bench.forward import code_path, event


async def run(total: int, drain: int) -> dict[str, Any]:
    events = [(event_subject("bench", e["type"]), e) for e in map(event, range(total))]
    with tempfile.TemporaryDirectory(prefix="snoopbus-pubrate-") as tmp:
        server = NatsServer(state_dir=Path(tmp) / "nats")
        url = server.start()
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await ensure_stream(js)
            pub = Publisher(js, LossCounters(), PublisherConfig(), nc=nc)
            task = asyncio.create_task(pub.run())
            cpu0, t0 = time.process_time(), time.perf_counter()
            for i in range(0, total, drain):
                pub.submit(events[i : i + drain])
                await asyncio.sleep(0)  # the loop's other work, as between two drains
            while pub.published_events < total:
                await asyncio.sleep(0.005)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            messages = pub.published_messages
            await pub.close(2.0)
            task.cancel()
        finally:
            await nc.close()
            server.stop()
    return {"events_s": total / wall, "cpu_us": cpu / total * 1e6, "messages": messages,
            "per_message": total / messages}


async def paced(rate: int, seconds: float) -> dict[str, Any]:
    """The flush policy alone: a drain's worth every millisecond (as the reader
    is woken) at `rate` events/s, each event's `ts` set as it is submitted;
    a core subscriber notes when each arrives. p50/p99/max in ms."""
    per_ms = max(1, rate // 1000)
    total = int(rate * seconds)
    events = [(event_subject("bench", e["type"]), e) for e in map(event, range(total))]
    got: list[float] = []
    messages = 0

    async def on_msg(msg: Any) -> None:
        nonlocal messages
        now = time.time_ns()
        messages += 1
        got.extend((now - e["ts"]) / 1e6 for e in msgpack.unpackb(msg.data))

    with tempfile.TemporaryDirectory(prefix="snoopbus-pubrate-") as tmp:
        server = NatsServer(state_dir=Path(tmp) / "nats")
        url = server.start()
        nc, sub_nc = await nats.connect(url), await nats.connect(url)
        try:
            await sub_nc.subscribe(events_filter(host="bench"), cb=on_msg)
            await sub_nc.flush()
            js = nc.jetstream()
            await ensure_stream(js)
            pub = Publisher(js, LossCounters(), PublisherConfig(), nc=nc)
            task = asyncio.create_task(pub.run())
            loop = asyncio.get_running_loop()
            start, cpu0 = loop.time(), time.process_time()
            for n, i in enumerate(range(0, total, per_ms)):
                await asyncio.sleep(max(0.0, start + n / 1000 - loop.time()))
                batch = events[i : i + per_ms]
                now = time.time_ns()
                for _, e in batch:
                    e["ts"] = now
                pub.submit(batch)
            while pub.published_events < total or len(got) < total:
                await asyncio.sleep(0.01)
            cpu = (time.process_time() - cpu0) / (loop.time() - start)
            await pub.close(2.0)
            task.cancel()
        finally:
            await nc.close()
            await sub_nc.close()
            server.stop()
    got.sort()
    return {"rate": rate, "p50": got[len(got) // 2], "p99": got[int(len(got) * 0.99)],
            "max": got[-1], "per_message": total / max(1, messages), "cpu": cpu}


def child(tree: Path | None, total: int, drain: int, work: Path,
          paced_rate: int = 0) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = code_path(tree, work) if tree else str(Path(__file__).parents[2])
    out = subprocess.run([sys.executable, "-m", "tests.bench.publish_rate", "--json", "--events",
                          str(total), "--drain", str(drain), "--paced", str(paced_rate)],
                         env=env, capture_output=True, text=True, timeout=900,
                         check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def paced_line(label: str, r: dict[str, Any]) -> str:
    return (f"{label:<7} {r['rate']:>9,} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['max']:>8.2f} "
            f"{r['per_message']:>7.1f} {r['cpu']:>6.0%}")


def line(label: str, r: dict[str, Any]) -> str:
    return (f"{label:<7} {r['events_s']:>12,.0f} {r['cpu_us']:>10.2f} {r['messages']:>9,} "
            f"{r['per_message']:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--drain", type=int, default=1500, help="events per submit")
    parser.add_argument("--before", type=Path, metavar="DIR")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paced", type=int, default=0, metavar="RATE",
                        help="instead: latency submit -> subscriber at RATE events/s "
                        "(the flush policy alone), for 5 s")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(asyncio.run(paced(args.paced, 5.0) if args.paced
                                     else run(args.events, args.drain))))
        return
    if args.paced:
        print(f"publisher, paced: submit -> core subscriber (ms), {args.paced:,} events/s, 5 s")
        print(f"{'':<7} {'events/s':>9} {'p50':>8} {'p99':>8} {'max':>8} {'ev/msg':>7} "
              f"{'CPU':>6}  (this process: publisher and subscriber)")
        with tempfile.TemporaryDirectory(prefix="snoopbus-pubrate-shim-") as tmp:
            for _ in range(args.rounds):
                for label, tree in (("before", args.before), ("after", None)):
                    if label == "before" and tree is None:
                        continue
                    r = child(tree.resolve() if tree else None, 0, 0, Path(tmp), args.paced)
                    print(paced_line(label, r), flush=True)
        return
    head = f"{'':<7} {'events/s':>12} {'µs/event':>10} {'messages':>9} {'ev/msg':>9}"
    if args.before is None:
        print(head)
        print(line("after", asyncio.run(run(args.events, args.drain))))
        return
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="snoopbus-pubrate-shim-") as tmp:
        for _ in range(args.rounds):
            for label, tree in (("before", args.before.resolve()), ("after", None)):
                r = child(tree, args.events, args.drain, Path(tmp))
                print(line(label, r), file=sys.stderr)
                if label not in best or r["events_s"] > best[label]["events_s"]:
                    best[label] = r
    print(f"publisher: {args.events:,} events, {args.drain} per submit, best of {args.rounds}")
    print(head)
    for label in ("before", "after"):
        print(line(label, best[label]))


if __name__ == "__main__":
    main()
