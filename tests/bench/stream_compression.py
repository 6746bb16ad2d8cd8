"""Benchmark: stream storage with and without S2 compression ([stream] compression).

    .venv/bin/python -m tests.bench.stream_compression [--events 200000]

Starts its own nats-server and, for each compression and message size (events
per message: 1 as the publisher sends under light load, 16, 256 as under heavy
load), stores the same realistic events (one type per message, as the
collector batches them) into a fresh stream, then prints the bytes the stream
holds per event and the server's CPU time per event (from /proc, while it
stored them), side by side. `bytes/event` is the stream's own count (what
max_bytes is checked against: messages as sent, whatever the compression);
`disk/event` is what its store folder takes on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StoreCompression, StreamConfig

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.stream_watch import folder_bytes
from snoopbus.proto import encode_batch
from tests.bench.forward import event

INFLIGHT = 256


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def messages(total: int, per_message: int) -> list[tuple[str, bytes]]:
    by_type: dict[str, list[dict]] = {}
    out = []
    for seq in range(total):
        e = event(seq)
        batch = by_type.setdefault(e["type"], [])
        batch.append(e)
        if len(batch) == per_message:
            out.append((f"cmp.h.{e['type']}", encode_batch(batch)))
            batch.clear()
    out += [(f"cmp.h.{t}", encode_batch(b)) for t, b in by_type.items() if b]
    return out


async def store(url: str, pid: int, name: str, compression: StoreCompression,
                msgs: list[tuple[str, bytes]]) -> tuple[int, float, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], storage=StorageType.FILE,
                                     compression=compression))  # fmt: skip
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    pending: set[asyncio.Future] = set()
    for subject, payload in msgs:
        pending.add(asyncio.ensure_future(js.publish(f"{name}.{subject}", payload)))
        if len(pending) >= INFLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                d.result()
    await asyncio.gather(*pending)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    info = await js.stream_info(name)
    await nc.close()
    return info.state.bytes, cpu, wall


async def drop(url: str, name: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().delete_stream(name)
    await nc.close()


async def bench(total: int) -> None:
    with tempfile.TemporaryDirectory(prefix="snoopbus-cmp-") as work:
        server = NatsServer(state_dir=Path(work) / "nats")
        url = server.start()
        assert server.process is not None
        try:
            print(f"{total} events, one type per message; nats-server {url}")
            print(f"{'events/msg':>10} {'compression':>11} {'bytes/event':>12} {'disk/event':>12} "
                  f"{'server CPU µs/event':>20} {'events/s':>10}")
            for per in (1, 16, 256):
                msgs = messages(total // (16 if per == 1 else 1), per)
                n = sum(1 for _ in msgs) * per if per == 1 else total
                for comp in (StoreCompression.NONE, StoreCompression.S2):
                    name = f"CMP{per}{comp.value.upper()}"
                    size, cpu, wall = await store(url, server.process.pid, name, comp, msgs)
                    disk = folder_bytes(Path(work) / "nats" / "jetstream")
                    print(f"{per:>10} {comp.value:>11} {size / n:>12.1f} {disk / n:>12.1f} "
                          f"{cpu / n * 1e6:>20.2f} {n / wall:>10,.0f}", flush=True)
                    await drop(url, name)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    asyncio.run(bench(args.events))


if __name__ == "__main__":
    main()
