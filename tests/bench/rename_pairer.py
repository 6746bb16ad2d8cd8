"""Benchmark: renamed events per second through the rename pairer, and its memory.

    .venv/bin/python -m tests.bench.rename_pairer            # 1,000,000 halves, 1% unpaired
    .venv/bin/python -m tests.bench.rename_pairer --halves 20000

Starts its own nats-server (in a temporary directory), stores every half
first, batched as a collector would (one message per host and type, up to
100 halves), then starts `python -m snoopbus.consumers rename` as a separate
process and times it from start until every renamed event is stored. Peak
memory is that process's high-water RSS (VmHWM), read just before it stops.
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
from pathlib import Path

import nats
from nats.js import JetStreamContext

from snoopbus.collector.natsd import NatsServer
from snoopbus.proto import (
    SCHEMA_VERSION,
    STREAM_NAME,
    encode_batch,
    ensure_stream,
    event_subject,
    events_filter,
)

HOSTS = ("web-1", "web-2", "db-1", "cache-1")
PER_MESSAGE = 100


def half(kind: str, cookie: int, host: str) -> dict:
    return {
        "v": SCHEMA_VERSION, "id": f"b-{kind[6]}{cookie}", "ts": 1_700_000_000_000_000_000 + cookie,
        "host": host, "type": kind, "cookie": cookie,
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
    out: list[list[dict]] = []
    block = PER_MESSAGE * len(HOSTS)
    cookie = 0
    while cookie < pairs + lone:
        froms: dict[str, list[dict]] = {h: [] for h in HOSTS}
        tos: dict[str, list[dict]] = {h: [] for h in HOSTS}
        for c in range(cookie, min(cookie + block, pairs + lone)):
            host = HOSTS[c % len(HOSTS)]
            if c < pairs:
                froms[host].append(half("moved_from", c, host))
                tos[host].append(half("moved_to", c, host))
            else:  # lone halves, both kinds
                (froms if c % 2 else tos)[host].append(
                    half("moved_from" if c % 2 else "moved_to", c, host)
                )
        chunk = [m for m in (*froms.values(), *tos.values()) if m]
        rng.shuffle(chunk)  # either order, hosts interleaved; partners stay close
        out += chunk
        cookie += block
    return out, pairs, lone


async def count(js: JetStreamContext, type_: str) -> int:
    info = await js.stream_info(STREAM_NAME, subjects_filter=events_filter(type=type_))
    return sum((info.state.subjects or {}).values())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(halves: int, unpaired: float, window: float, workdir: Path) -> dict[str, float]:
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
        print(
            f"stored {halves:,} halves in {len(payloads):,} messages in {stored:.1f}s", flush=True
        )

        log = open(workdir / "pairer.log", "wb")
        pairer = subprocess.Popen(
            [sys.executable, "-m", "snoopbus.consumers", "rename", "--nats", server.url,
             "--window", str(window)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        start = time.perf_counter()
        renamed = 0
        while renamed < pairs:
            if pairer.poll() is not None:
                raise RuntimeError(f"pairer exited early; see {workdir / 'pairer.log'}")
            await asyncio.sleep(0.1)
            renamed = await count(js, "renamed")
        paired_in = time.perf_counter() - start
        while await count(js, "moved_in") + await count(js, "moved_out") < lone:
            await asyncio.sleep(0.1)
        rss = peak_rss_mb(pairer.pid)
        total = time.perf_counter() - start
        await nc.close()
        return {
            "halves": halves, "messages": len(payloads), "pairs": pairs, "lone": lone,
            "renamed": renamed, "seconds": paired_in, "total": total, "rss_mb": rss,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.rename_pairer")
    parser.add_argument("--halves", type=int, default=1_000_000, help="halves to pair")
    parser.add_argument("--unpaired", type=float, default=0.01, help="share without a partner")
    parser.add_argument("--window", type=float, default=2.0, help="pairer window, seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="snoopbus-bench-") as tmp:
        r = asyncio.run(run(args.halves, args.unpaired, args.window, Path(tmp)))
    print(
        f"rename pairer: {r['renamed']:,} renamed from {r['halves']:,} halves "
        f"({r['lone']:,} unpaired) in {r['seconds']:.1f}s -> "
        f"{r['renamed'] / r['seconds']:,.0f} renamed/s; "
        f"all {r['lone']:,} moved_in/out out by {r['total']:.1f}s; "
        f"peak RSS {r['rss_mb']:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
