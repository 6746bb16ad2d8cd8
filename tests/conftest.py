"""Test harness: a real nats-server on a free loopback port, per test.

Fixtures chain server -> client -> jetstream, as nats.py's own tests do.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import STREAM_NAME, Event, decode_batch, events_filter, meta_subject


def free_port() -> int:
    """A loopback TCP port free right now (for servers that cannot report the one they bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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



@dataclass
class RunningCollector:
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def start_collector(
    nats_url: str, nc: Client, tmp_path: Path, *extra: str, prefix: Sequence[str] = ()
) -> RunningCollector:
    """Starts `snoopbus collect` (after `prefix`: nsenter ...) and returns once it
    reports ready on the bus."""
    host = f"t{secrets.token_hex(4)}"
    ready = await nc.subscribe(meta_subject(host, "status"))
    log_path = tmp_path / f"collector-{host}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "snoopbus.app", "collect",
             "--nats", nats_url, "--host", host, *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )
    running = RunningCollector(host, proc, log_path)
    try:
        await ready.next_msg(timeout=60)
    except Exception:
        stop_process(proc)
        raise AssertionError(f"collector did not become ready:\n{running.log()}") from None
    finally:
        await ready.unsubscribe()
    return running


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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


class EventWatch:
    """Collects every event published for one host, from the moment it is made."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.events.extend(decode_batch(msg.data))
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[Event], bool], count: int = 1, within: float = 15
    ) -> list[Event]:
        """The events matching `predicate`, once there are at least `count`."""
        async with asyncio.timeout(within):
            while True:
                found = [e for e in self.events if predicate(e)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()


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


async def durable_settled(js: JetStreamContext, durable: str, within: float = 20) -> None:
    """Until the durable has nothing pending and nothing unacked."""
    async with asyncio.timeout(within):
        while True:
            info = await js.consumer_info(STREAM_NAME, durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


def start_consumer(url: str, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m snoopbus.consumers NAME ...` against `url`, its output in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "snoopbus.consumers", *args, "--nats", url],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


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


async def stored_messages(url: str, subject: str, within: float = 5) -> list[Msg]:
    """Every message the stream holds under `subject`, in order. Each message's
    num_pending says how many follow it; the consumer's own num_pending would
    not do, as it leaves out what the server already pushed to the client."""
    nc = await nats.connect(url)
    out: list[Msg] = []
    try:
        sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=within)
                except nats.errors.TimeoutError:
                    break  # nothing (more) stored
                out.append(msg)
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out
