"""Fixtures: a real nats-server on a free loopback port, per test, and the
processes started against it. What they use lives in tests/support.

Fixtures chain server -> client -> jetstream, as nats.py's own tests do.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import ensure_stream, events_filter
from tests.support.collector import EventWatch, RunningCollector, start_collector
from tests.support.processes import start_consumer, stop_process


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(state_dir=tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=1)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()



@pytest.fixture
async def stream(js: JetStreamContext) -> JetStreamContext:
    """`js` with the stream made."""
    await ensure_stream(js)
    return js


@pytest.fixture
async def collector(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> AsyncIterator[RunningCollector]:
    running = await start_collector(nats_server.url, nc, tmp_path)
    try:
        yield running
    finally:
        code = stop_process(running.process)
        assert code == 0, f"collector exited with {code}:\n{running.log()}"


@pytest.fixture
async def watch(nc: Client, collector: RunningCollector) -> AsyncIterator[EventWatch]:
    w = EventWatch()
    sub = await nc.subscribe(events_filter(host=collector.host), cb=w.on_msg)
    await nc.flush()  # the server has the subscription before the test acts
    try:
        yield w
    finally:
        await sub.unsubscribe()


@pytest.fixture(autouse=True, scope="session")
def _collector_spill_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Collectors started by tests spill under a temporary directory, not
    /var/lib/snoopbus/spill (SNOOPBUS_COLLECTOR_SPILL_DIR reaches every
    `snoopbus collect` the tests start, through the config's environment layer)."""
    name = "SNOOPBUS_COLLECTOR_SPILL_DIR"
    before = os.environ.get(name)
    os.environ.setdefault(name, str(tmp_path_factory.mktemp("spill")))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)


@pytest.fixture(autouse=True, scope="session")
def _stack_descriptor_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every `up` the tests start describes itself under a temporary folder, not
    /run/snoopbus (the machine's own stack, and other sessions' tests, use that)."""
    name = "SNOOPBUS_RUN_DIR"
    before = os.environ.get(name)
    os.environ[name] = str(tmp_path_factory.mktemp("run"))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@pytest.fixture
def spawn_consumer(
    tmp_path: Path, nats_server: NatsServer
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts consumer processes (NAME first) against the test's server; any still
    running at the end are SIGKILLed, as a crash would leave them."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{args[0]}-{len(started)}.log"
        started.append(start_consumer(nats_server.url, log, *args))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
