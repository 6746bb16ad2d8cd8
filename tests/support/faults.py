"""The fault scenarios the fault tests assert on and tests/bench/faults.py runs
longer: each starts what it needs on loopback and returns its figures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.loss import LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.proto import (
    STREAM_NAME,
    connect,
    decode_batch,
    decode_map,
    encode_batch,
    ensure_stream,
    event_subject,
    meta_subject,
)
from tests.support.bus import stream_events
from tests.support.collector import start_collector
from tests.support.events import TS, event
from tests.support.natsd import cluster_args
from tests.support.processes import free_port, start_consumer, stop_process
from tests.support.waits import durables_pulled, durables_settled

# -- a cluster node SIGKILLed mid-stream -------------------------------------------------

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


# -- a consumer SIGKILLed mid-batch ------------------------------------------------------

HOST = "fk"


def tmp_exec(n: int) -> dict[str, object]:
    """An exec that the default rule proc_exec_from_tmp alerts on."""
    proc = {"pid": 1000 + n, "comm": "x", "exe": f"/tmp/x{n}", "argv": [f"/tmp/x{n}"],
            "cwd": "/tmp"}
    return event("exec", id=f"fk-{n}", ts=TS + n, host=HOST, proc=proc, v=1)


async def batch_in_hand(js: JetStreamContext, limit: float = 2) -> int:
    """Waits (up to `limit`) until a durable holds delivered, unacked messages: 1 if seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        infos = await js.consumers_info(STREAM_NAME)
        if any(i.config.durable_name and i.num_ack_pending for i in infos):
            return 1
        await asyncio.sleep(0.002)
    return 0


async def kill_mid_stream(
    url: str, js: JetStreamContext, args: list[str], log_dir: Path, events: int, kills: int
) -> int:
    """Feeds `events` in messages of 10 while SIGKILLing the consumer `kills` times;
    returns how many kills landed while it held delivered, unacked messages."""

    def spawn(i: int) -> subprocess.Popen[bytes]:
        return start_consumer(url, log_dir / f"consumer-{i}.log", *args,
                              "--batch", "16", "--ack-wait", "2")

    proc = spawn(0)
    in_hand = 0
    try:
        await durables_pulled(js)
        messages = [[tmp_exec(n) for n in range(i, min(i + 10, events))]
                    for i in range(0, events, 10)]
        every = len(messages) // (kills + 1)
        for i, batch in enumerate(messages):
            await js.publish(event_subject(HOST, "exec"), encode_batch(batch))
            if i and i % every == 0 and i // every <= kills:
                in_hand += await batch_in_hand(js)  # then kill it: mid-batch
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc = spawn(i)
                await durables_pulled(js)
        await durables_settled(js)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert in_hand, "no kill landed while a batch was in hand"
        return in_hand
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- nats-server SIGKILLed under a collector ---------------------------------------------

WORKLOAD = """
import os, sys, time
n, rate = int(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
for i in range(n):
    fd = os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    ahead = start + (i + 1) / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
"""


async def run_nats_kill(tmp_path: Path, files: int, rate: float, kills: int,
                        down_s: float) -> dict[str, int]:
    """Runs the fault and returns its figure."""
    server = NatsServer(state_dir=tmp_path / "nats")
    server.start()
    server.port = int(server.url.rsplit(":", 1)[1])  # restarts come back on the same port
    work = tmp_path / "work"
    work.mkdir()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        running = await start_collector(
            server.url, nc, tmp_path, "--include-path", str(work),
            "--buffer-events", "300", "--spill-dir", str(tmp_path / "spill"),
        )
        status = await nc.subscribe(meta_subject(running.host, "status"))
        try:
            load = subprocess.Popen([sys.executable, "-I", "-c", WORKLOAD, str(files), str(rate)],
                                    cwd=work)
            period = files / rate / (kills + 1)
            for _ in range(kills):
                await asyncio.sleep(period - down_s)
                server.stop(signal.SIGKILL)
                await asyncio.sleep(down_s)
                server.start()
            await asyncio.to_thread(load.wait, 120)
            assert load.returncode == 0
            subject = event_subject(running.host, "create")
            async with asyncio.timeout(90):  # what waited in memory and the spill arrives
                while len(await stream_events(server.url, subject)) < files:
                    await asyncio.sleep(1)
        finally:
            code = stop_process(running.process)
        assert code == 0, running.log()
        final: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while final.get("state") != "stopped":
                final = decode_map((await status.next_msg(timeout=30)).data)
        events = await stream_events(server.url, subject)
        ids = [e["id"] for e in events]
        paths = {e["file"]["path"] for e in events}
        expected = {str(work / f"f{i}") for i in range(files)}
        return {
            "generated": files,
            "in_stream": len(paths & expected),
            "lost": len(expected - paths),
            "duplicated": len(ids) - len(set(ids)),
            "spilled": int(final.get("spilled_total", 0)),
            "collector_lost": int(final.get("lost", -1)),
            "left_on_disk": len(list((tmp_path / "spill").rglob("*.seg"))),
        }
    finally:
        await nc.close()
        server.stop()


# -- the kernel ring buffer overrun ------------------------------------------------------

STORM = """
import os, sys
for i in range(int(sys.argv[1])):
    os.close(os.open(f"f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
"""


async def run_ringbuf_overrun(tmp_path: Path, files: int) -> dict[str, int]:
    server = NatsServer(state_dir=tmp_path / "nats")
    server.start()
    work = tmp_path / "storm"
    work.mkdir()
    nc = await nats.connect(server.url)
    try:
        running = await start_collector(server.url, nc, tmp_path, "--include-path", str(work),
                                        "--ringbuf-pages", "1")
        status = await nc.subscribe(meta_subject(running.host, "status"))
        try:
            await asyncio.to_thread(subprocess.run, [sys.executable, "-I", "-c", STORM,
                                                     str(files)], cwd=work, check=True)
            await asyncio.sleep(1)  # the reader drains what the ring buffer holds
        finally:
            code = stop_process(running.process)
        assert code == 0, running.log()
        final: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while final.get("state") != "stopped":
                final = decode_map((await status.next_msg(timeout=30)).data)
        events = await stream_events(server.url, event_subject(running.host, "create"))
        paths = [e["file"]["path"] for e in events]
        lost = final["lost_by_type"]
        # What the storm's fair share held back: counted in `summary` events, not sent.
        summaries = await stream_events(server.url, event_subject(running.host, "summary"))
        return {
            "generated": files,
            "delivered": len(set(paths)),
            "summarized": sum(s["count"] for s in summaries if s["of"] == "create"),
            "lost_counted": int(lost.get("create", 0)),
            "duplicated": len(paths) - len(set(paths)),
            "unattributed": int(lost.get("any_file_event(inflight_map_full)", 0)),
        }
    finally:
        await nc.close()
        server.stop()
