"""The multi-host deployment on loopback: a 3-node NATS cluster with JetStream, a
stream replicated three times, the collector on one node, consumers on the others."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import APIError, ServiceUnavailableError

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import STREAM_NAME, decode_batch, ensure_stream, events_filter
from tests.conftest import start_collector, stop_process

pytestmark = pytest.mark.kernel


def free_ports(n: int) -> list[int]:
    """n distinct free ports (route ports cannot come from a ports file)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    routes = free_ports(3)
    nodes = []
    for i, port in enumerate(routes, start=1):
        others = ",".join(f"nats://127.0.0.1:{p}" for p in routes if p != port)
        nodes.append(NatsServer(
            state_dir=tmp_path / f"n{i}",
            extra_args=["--server_name", f"n{i}", "--cluster_name", "snoopbus",
                        "--cluster", f"nats://127.0.0.1:{port}", "--routes", others],
        ))  # fmt: skip
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
async def first(cluster: list[NatsServer]) -> AsyncIterator[Client]:
    nc = await nats.connect(cluster[0].url, max_reconnect_attempts=1)
    try:
        yield nc
    finally:
        await nc.close()


async def replicated_stream(nc: Client) -> None:
    """Create the stream with 3 replicas once the cluster has elected a meta leader."""
    js = nc.jetstream()
    async with asyncio.timeout(30):
        while True:
            try:
                info = await ensure_stream(js, replicas=3)
                break
            except (ServiceUnavailableError, APIError, TimeoutError, nats.errors.TimeoutError):
                await asyncio.sleep(0.3)  # no JetStream meta leader yet
    assert info.config.num_replicas == 3


async def test_events_flow_through_a_three_node_cluster(
    cluster: list[NatsServer], first: Client, tmp_path: Path
) -> None:
    await replicated_stream(first)
    collector = await start_collector(cluster[0].url, first, tmp_path)
    # The rename pairer on node 2; what it derives is read on node 3.
    log = (tmp_path / "rename.log").open("wb")
    rename = subprocess.Popen(
        [sys.executable, "-m", "snoopbus.app", "consume", "rename",
         "--nats", cluster[1].url],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    third = await nats.connect(cluster[2].url, max_reconnect_attempts=1)
    try:
        renamed: list[dict] = []
        got = asyncio.Event()

        async def on_renamed(msg: nats.aio.msg.Msg) -> None:
            renamed.extend(decode_batch(msg.data))
            got.set()

        await third.subscribe(events_filter(host=collector.host, type="renamed"), cb=on_renamed)
        work = tmp_path / "work"
        work.mkdir()
        old, new = work / "draft.txt", work / "final.txt"
        async with asyncio.timeout(60):  # until the pairer's durable is bound and has paired one
            while not any(e["file"].get("path") == str(new) for e in renamed):
                old.write_text("x")
                os.rename(old, new)
                got.clear()
                try:
                    await asyncio.wait_for(got.wait(), 1)
                except TimeoutError:
                    assert rename.poll() is None, (tmp_path / "rename.log").read_text()
        [pair] = [e for e in renamed if e["file"].get("path") == str(new)][:1]
        assert pair["file"]["old_path"] == str(old) and pair["host"] == collector.host
        # The stream is on all three nodes, and its replicas keep up.
        info = await third.jetstream().stream_info(STREAM_NAME)
        assert info.config.num_replicas == 3 and info.cluster is not None
        assert len(info.cluster.replicas or []) == 2 and info.state.messages > 0
    finally:
        await third.close()
        assert stop_process(rename) == 0, (tmp_path / "rename.log").read_text()
        log.close()
        assert stop_process(collector.process) == 0, collector.log()
