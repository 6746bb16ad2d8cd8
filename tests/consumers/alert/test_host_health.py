"""A silent host is noticed: the real collector SIGKILLed, or its network cut in a
namespace, and the alerter (`python -m snoopbus.consumers alert`) raises a
"snoopbus host silent" alert on the bus within --silent-after; `snoopbus fleet
--json` lists the host; a report after that brings the recovery note.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.alert.wire import decode_alert
from snoopbus.proto import alert_subject, alerts_filter, encode_map, meta_subject
from snoopbus.proto.build_info import version
from snoopbus.proto.bus import last_stored
from tests.support.collector import RunningCollector, start_collector
from tests.support.processes import SNOOPBUS, stop_process

pytestmark = pytest.mark.kernel

SILENT = 3.0  # --silent-after of the alerter under test
BEAT = "0.5"  # the collectors' --heartbeat-interval: well inside SILENT


class AlertWatch:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.alerts.append(decode_alert(msg.data))
        self._changed.set()

    def titled(self, title: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["rule"]["title"] == title]

    async def wait_for(self, title: str, within: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(within):
                while not self.titled(title):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            got = [a["rule"]["title"] for a in self.alerts]
            raise AssertionError(f"no {title!r} alert within {within}s; got {got}") from None
        return self.titled(title)[0]


@dataclass
class Alerter:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def start_alerter(url: str, tmp_path: Path, host: str) -> Alerter:
    log_path = tmp_path / "alerter.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snoopbus.consumers", "alert", "--nats", url,
             "--silent-after", str(SILENT), "--watch-host", host],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    alerter = Alerter(proc, log_path)
    async with asyncio.timeout(60):
        while "watching the collectors" not in alerter.log():
            if proc.poll() is not None:
                raise AssertionError(f"alerter exited with {proc.returncode}:\n{alerter.log()}")
            await asyncio.sleep(0.1)
    return alerter


async def watch_alerts(nc: Client, host: str) -> AlertWatch:
    watch = AlertWatch()
    await nc.subscribe(alerts_filter(host), cb=watch.on_msg)
    await nc.flush()
    return watch


async def first_heartbeat(nc: Client, host: str) -> None:
    sub = await nc.subscribe(meta_subject(host, "heartbeat"))
    try:
        await sub.next_msg(timeout=30)
    finally:
        await sub.unsubscribe()


def fleet_json(url: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*SNOOPBUS, "fleet", "--json", "--nats", url,
         "--silent-after", str(SILENT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def check_silent(alert: dict[str, Any], host: str) -> None:
    assert alert["host"] == host and alert["level"] == "high"
    assert alert["rule"]["id"] == "snoopbus-host-silent"
    assert alert["fields"]["silent_s"] >= SILENT
    assert alert["fields"]["version"] == version()


async def test_a_sigkilled_collector_is_noticed(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    running = await start_collector(nats_server.url, nc, tmp_path, "--heartbeat-interval", BEAT,
                                    "--spill-dir", str(tmp_path / "spill"))  # fmt: skip
    alerter: Alerter | None = None
    try:
        alerter = await start_alerter(nats_server.url, tmp_path, running.host)
        watch = await watch_alerts(nc, running.host)
        await first_heartbeat(nc, running.host)
        before = fleet_json(nats_server.url)
        (row,) = [r for r in before if r["host"] == running.host]
        assert row["state"] == "running" and row["version"] == version()
        assert row["last_heartbeat"] and row["last_event"] and isinstance(row["lost"], int)

        running.process.send_signal(signal.SIGKILL)  # no last status: it just stops
        running.process.wait()
        killed = time.monotonic()
        silent = await watch.wait_for("snoopbus host silent", within=SILENT + 15)
        print(f"\nsilent-host alert {time.monotonic() - killed:.1f}s after SIGKILL "
              f"(--silent-after {SILENT:g}s, heartbeat every {BEAT}s)")
        check_silent(silent, running.host)
        assert not watch.titled("snoopbus collector stopped")
        # Stored in the stream like any alert: what the archiver and forwarder read.
        stored = await last_stored(nc.jetstream(), alert_subject(running.host, "high"))
        assert stored is not None and decode_alert(stored.data or b"")["id"] == silent["id"]

        (row,) = [r for r in fleet_json(nats_server.url) if r["host"] == running.host]
        assert row["state"] == "silent"
        assert row["last_heartbeat"] == row["last_report"]

        # A report again (a collector of that host, restarted): the recovery note.
        beat = {"v": 1, "host": running.host, "instance": "again", "ts": time.time_ns(),
                "stalled": False, "lost": 0, "interval": 0.5, "version": version()}
        await nc.jetstream().publish(meta_subject(running.host, "heartbeat"), encode_map(beat))
        back = await watch.wait_for("snoopbus host reporting again", within=15)
        assert back["level"] == "low" and back["fields"]["recovered"] == ["silent"]
    finally:
        stop_process(running.process)
        if alerter is not None:
            assert stop_process(alerter.process) == 0, alerter.log()


# -- the network cut ----------------------------------------------------------------


@dataclass
class Netns:
    name: str
    inside: str  # the namespace's end of the veth pair
    outside: str
    address: str  # the host side's address: the server listens there

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A network namespace joined to this one by a veth pair on a random /30."""
    tag = secrets.token_hex(3)
    octet = 1 + secrets.randbelow(250)
    ns = Netns(f"sbh{tag}", f"sbh{tag}n", f"sbh{tag}h", f"10.213.{octet}.1")
    ns.ip("netns", "add", ns.name)
    try:
        ns.ip("link", "add", ns.outside, "type", "veth", "peer", "name", ns.inside,
              "netns", ns.name)  # fmt: skip
        ns.ip("addr", "add", f"{ns.address}/30", "dev", ns.outside)
        ns.ip("link", "set", ns.outside, "up")
        ns.ip("-n", ns.name, "addr", "add", f"10.213.{octet}.2/30", "dev", ns.inside)
        ns.ip("-n", ns.name, "link", "set", ns.inside, "up")
        ns.ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", ns.outside], capture_output=True, timeout=10)


@pytest.fixture
async def veth_server(netns: Netns, tmp_path: Path) -> AsyncIterator[NatsServer]:
    """nats-server on the veth's host-side address: only the namespace reaches it."""
    server = NatsServer(state_dir=tmp_path / "nats", host=netns.address)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_collector_whose_network_is_cut_is_noticed(
    netns: Netns, veth_server: NatsServer, tmp_path: Path
) -> None:
    nc = await nats.connect(veth_server.url, max_reconnect_attempts=1)
    running: RunningCollector | None = None
    alerter: Alerter | None = None
    try:
        # The collector runs with the namespace's network (nsenter --net only: the
        # mounts stay the host's, so tracefs and BTF are where BCC looks).
        running = await start_collector(
            veth_server.url, nc, tmp_path, "--heartbeat-interval", BEAT,
            "--spill-dir", str(tmp_path / "spill"),
            prefix=["nsenter", f"--net=/run/netns/{netns.name}"],
        )  # fmt: skip
        alerter = await start_alerter(veth_server.url, tmp_path, running.host)
        watch = await watch_alerts(nc, running.host)
        await first_heartbeat(nc, running.host)

        netns.ip("-n", netns.name, "link", "set", netns.inside, "down")
        cut = time.monotonic()
        silent = await watch.wait_for("snoopbus host silent", within=SILENT + 15)
        print(f"\nsilent-host alert {time.monotonic() - cut:.1f}s after the link went down")
        check_silent(silent, running.host)
        assert running.process.poll() is None  # alive, just cut off
        (row,) = [r for r in fleet_json(veth_server.url) if r["host"] == running.host]
        assert row["state"] == "silent"

        netns.ip("-n", netns.name, "link", "set", netns.inside, "up")
        back = await watch.wait_for("snoopbus host reporting again", within=90)
        assert back["fields"]["recovered"] == ["silent"]
        assert back["fields"]["down_s"] >= SILENT
    finally:
        if running is not None:
            stop_process(running.process)
        if alerter is not None:
            assert stop_process(alerter.process) == 0, alerter.log()
        await nc.close()

