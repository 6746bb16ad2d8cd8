"""Benchmark: the publisher's throughput (events acknowledged by JetStream per second).

    .venv/bin/python -m tests.bench.publish_rate [--events 400000] [--drain 1500]
    .venv/bin/python -m tests.bench.publish_rate --before DIR     # before/after, one run

No kernel: events as the collector builds them (tests/bench/forward.py's mix,
one subject per type) are submitted to a real Publisher, a reader drain's
worth (--drain) at a time, as fast as the loop allows, against its own
nats-server; it prints events/s until every one is acknowledged, messages
sent and events per message, and the loop's CPU per event. With
`--before DIR` the code in DIR (a checkout) runs the same, alternately with
this tree's, --rounds times; the best round of each is shown.
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

import nats

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.loss import LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.proto import ensure_stream, event_subject
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


def child(tree: Path | None, total: int, drain: int, work: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = code_path(tree, work) if tree else str(Path(__file__).parents[2])
    out = subprocess.run([sys.executable, "-m", "tests.bench.publish_rate", "--json", "--events",
                          str(total), "--drain", str(drain)], env=env, capture_output=True,
                         text=True, timeout=900, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def line(label: str, r: dict[str, Any]) -> str:
    return (f"{label:<7} {r['events_s']:>12,.0f} {r['cpu_us']:>10.2f} {r['messages']:>9,} "
            f"{r['per_message']:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--drain", type=int, default=1500, help="events per submit")
    parser.add_argument("--before", type=Path, metavar="DIR")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(asyncio.run(run(args.events, args.drain))))
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
