"""Longer fault runs than the test suite's, printing the same figures.

    .venv/bin/python -m tests.bench.faults nats-kill --files 20000 --kills 10   # root
    .venv/bin/python -m tests.bench.faults cluster --events 200000
    .venv/bin/python -m tests.bench.faults ringbuf --files 200000               # root
    .venv/bin/python -m tests.bench.faults consumers --events 20000 --kills 10
    .venv/bin/python -m tests.bench.faults fuzz --examples 20000

Each runs on loopback with its own nats-server(s) in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import connect, ensure_stream
from tests.test_fault_cluster import run_cluster_kill
from tests.test_fault_consumers import kill_mid_stream
from tests.test_fault_nats_kill import run_nats_kill
from tests.test_fault_ringbuf import run_ringbuf_overrun


async def consumers(tmp: Path, events: int, kills: int) -> dict[str, object]:
    server = NatsServer(tmp / "nats")
    server.start()
    try:
        nc = await connect(server.url, name="bench")
        js = nc.jetstream()
        await ensure_stream(js)
        out = tmp / "out.jsonl"
        mid = await kill_mid_stream(server.url, js, ["forward", "--to", f"jsonl+file://{out}"],
                                    tmp, events, kills)
        counts = Counter(json.loads(line)["id"] for line in out.read_text().splitlines())
        await nc.close()
        return {"consumer": "forward(jsonl)", "events": events, "kills": kills,
                "kills_mid_batch": mid, "forwarded": len(counts),
                "repeated_lines": sum(v - 1 for v in counts.values())}
    finally:
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="fault", required=True)
    k = sub.add_parser("nats-kill")
    k.add_argument("--files", type=int, default=20_000)
    k.add_argument("--rate", type=float, default=500)
    k.add_argument("--kills", type=int, default=10)
    k.add_argument("--down", type=float, default=1.5, help="seconds NATS stays down")
    c = sub.add_parser("cluster")
    c.add_argument("--events", type=int, default=200_000)
    c.add_argument("--rate", type=float, default=20_000)
    r = sub.add_parser("ringbuf")
    r.add_argument("--files", type=int, default=200_000)
    s = sub.add_parser("consumers")
    s.add_argument("--events", type=int, default=20_000)
    s.add_argument("--kills", type=int, default=10)
    f = sub.add_parser("fuzz")
    f.add_argument("--examples", type=int, default=20_000)
    args = p.parse_args()
    if args.fault == "fuzz":
        env = {**os.environ, "SNOOPBUS_FUZZ_EXAMPLES": str(args.examples)}
        return subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "tests/test_fuzz.py"],
                               env=env)
    with tempfile.TemporaryDirectory(prefix="snoopbus-faults-") as d:
        tmp = Path(d)
        if args.fault == "nats-kill":
            fig: dict[str, object] = asyncio.run(
                run_nats_kill(tmp, args.files, args.rate, args.kills, args.down))
        elif args.fault == "cluster":
            fig = asyncio.run(run_cluster_kill(tmp, args.events, args.rate))  # type: ignore[arg-type]
        elif args.fault == "ringbuf":
            fig = asyncio.run(run_ringbuf_overrun(tmp, args.files))  # type: ignore[arg-type]
        else:
            fig = asyncio.run(consumers(tmp, args.events, args.kills))
    print(f"FAULT {args.fault}: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
