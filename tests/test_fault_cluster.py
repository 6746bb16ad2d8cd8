"""Fault: a 3-node NATS cluster with the stream replicated 3 ways; the node the
publisher is connected to is SIGKILLed mid-stream. Figure: events published
vs events in the stream; zero lost, zero duplicated.

The collector's Publisher is driven directly with a steady synthetic flow
(the probes add nothing to what this fault tests). Longer runs:
`.venv/bin/python -m tests.bench.faults cluster --events 200000`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats

from snoopbus.app.natsd import NatsServer, cluster_args, free_port
from snoopbus.collector.loss import LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.proto import STREAM_NAME, connect, decode_batch, ensure_stream, event_subject

SUBJECT = event_subject("c1", "exec")


@contextmanager
def cluster(tmp_path: Path, size: int = 3) -> Iterator[list[NatsServer]]:
    routes = [free_port() for _ in range(size)]
    nodes = [
        NatsServer(tmp_path / f"n{i}", extra_args=cluster_args("snoop", f"n{i}", routes[i], routes))
        for i in range(size)
    ]
    try:
        for node in nodes:
            node.start()
            node.port = int(node.url.rsplit(":", 1)[1])
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def stream_ids(url: str) -> list[str]:
    """Every event id stored, message by message (a direct get per sequence)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    ids: list[str] = []
    try:
        info = await js.stream_info(STREAM_NAME)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(STREAM_NAME, seq)
            ids += [e["id"] for e in decode_batch(msg.data or b"")]
    finally:
        await nc.close()
    return ids


async def run_cluster_kill(tmp_path: Path, events: int, rate: float) -> dict[str, int]:
    with cluster(tmp_path) as nodes:
        urls = [n.url for n in nodes]
        nc = await connect(urls, name="pub", reconnect_time_wait=0.2, initial_attempts=10)
        js = nc.jetstream()
        async with asyncio.timeout(30):  # until the cluster has a JetStream meta leader
            while True:
                try:
                    await ensure_stream(js, replicas=3)
                    break
                except Exception:
                    await asyncio.sleep(0.5)
        loss = LossCounters()
        pub = Publisher(js, loss, PublisherConfig(max_batch=100, ack_timeout=2,
                                                  spill_dir=tmp_path / "spill"))
        task = asyncio.create_task(pub.run())
        victim = next(n for n in nodes if nc.connected_url and n.url.endswith(
            f":{nc.connected_url.port}"))
        chunk = 100
        for i in range(0, events, chunk):
            pub.submit([(SUBJECT, {"v": 1, "id": f"c-{j}", "ts": j, "host": "c1",
                                   "type": "exec"}) for j in range(i, min(i + chunk, events))])
            if i == events // 2:
                victim.stop(signal.SIGKILL)  # the node we publish through, mid-stream
            await asyncio.sleep(chunk / rate)
        await pub.close(grace=60)
        await task
        await nc.close()
        survivor = next(n for n in nodes if n is not victim)
        ids = await stream_ids(survivor.url)
        expected = {f"c-{j}" for j in range(events)}
        return {"published": events, "in_stream": len(set(ids) & expected),
                "lost": len(expected - set(ids)), "duplicated": len(ids) - len(set(ids)),
                "counted_lost": loss.total}


async def test_a_cluster_node_sigkilled_mid_stream_loses_nothing(tmp_path: Path) -> None:
    fig = await run_cluster_kill(tmp_path, events=10_000, rate=5_000)
    print(f"\nFAULT 3-node cluster, R3 stream, connected node SIGKILLed mid-stream: {fig}")
    assert fig["lost"] == 0 and fig["duplicated"] == 0 and fig["counted_lost"] == 0
