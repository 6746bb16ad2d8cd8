"""A collector that captures events and can publish none of them says so.

The real collector runs against a nats-server whose permissions deny it every
events subject (its reports are allowed): it captures, publishes nothing, and
within --stall-after seconds its heartbeats, `snoopbus doctor --nats` and its
metrics say `stalled`, while heartbeats keep coming. The denied events are
counted lost (publish_denied) once their retry budget is spent, and at stop
every captured event is accounted for: published, spilled or counted.
`up`'s view and plain output are checked on the same reports.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from snoopbus.app.live import LiveState
from snoopbus.app.natsd import NatsServer, config_args
from snoopbus.app.stack import watch_bus
from snoopbus.collector.loss import PUBLISH_DENIED
from snoopbus.proto import connect, decode_map, encode_map, meta_subject
from tests.conftest import free_port, start_collector, stop_process
from tests.test_metrics import get, samples
from tests.test_publish_errors import ADMIN, permissions_conf


def env_as(user: str, password: str) -> dict[str, str]:
    return {**os.environ, "SNOOPBUS_NATS_USER": user, "SNOOPBUS_NATS_PASSWORD": password}


@pytest.mark.kernel
async def test_a_collector_denied_its_events_is_reported_stalled_while_heartbeats_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = config_args(tmp_path / "nats.conf", permissions_conf("snoopbus.events.>"))
    server = NatsServer(state_dir=tmp_path / "nats", extra_args=conf)
    server.start()
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    nc = await connect(server.url, name="watch", auth=ADMIN)
    try:
        monkeypatch.setenv("SNOOPBUS_NATS_USER", "collector")  # what the collector runs as
        monkeypatch.setenv("SNOOPBUS_NATS_PASSWORD", "collector-pw")
        running = await start_collector(
            server.url, nc, tmp_path, "--include-path", str(work), "--stall-after", "2",
            "--heartbeat-interval", "0.5", "--metrics-port", str(port),
        )
        beats = await nc.subscribe(meta_subject(running.host, "heartbeat"))
        losses = await nc.subscribe(meta_subject(running.host, "loss"))
        statuses = await nc.subscribe(meta_subject(running.host, "status"))
        try:
            for i in range(50):
                (work / f"f{i}").touch()
            stalled: dict[str, Any] = {}
            async with asyncio.timeout(30):
                while not stalled.get("stalled"):
                    stalled = decode_map((await beats.next_msg(timeout=5)).data)
            # Heartbeats still arrive while it is stalled.
            later = [decode_map((await beats.next_msg(timeout=5)).data) for _ in range(3)]
            assert all(b["stalled"] and b["published"] == 0 for b in later), later
            assert "permissions violation" in stalled["last_error"]
            doctor = subprocess.run(
                [sys.executable, "-m", "snoopbus.app", "doctor", "--nats",
                 server.url, "--host", running.host],
                capture_output=True, text=True, timeout=120, env=env_as("admin", "admin-pw"))
            assert doctor.returncode == 0, doctor.stderr
            assert "  state: stalled" in doctor.stdout, doctor.stdout
            assert "events captured and none published for" in doctor.stdout
            assert "permissions violation for publish to" in doctor.stdout
            metrics = samples(get(f"http://127.0.0.1:{port}/metrics")[1])
            assert metrics[("snoopbus_collector_publish_stalled", ())] == 1.0
            assert metrics[("snoopbus_collector_publish_stalled_seconds", ())] > 2
            # Once the retry budget is spent the denied events are counted, and reported.
            reported: dict[str, Any] = {}
            async with asyncio.timeout(30):
                while not reported.get("dropped", {}).get(PUBLISH_DENIED):
                    reported = decode_map((await losses.next_msg(timeout=30)).data)
            metrics = samples(get(f"http://127.0.0.1:{port}/metrics")[1])
            lost = (("reason", PUBLISH_DENIED),)
            assert metrics[("snoopbus_collector_events_lost_total", lost)] > 0
        finally:
            code = stop_process(running.process)
        assert code == 0, running.log()
        final: dict[str, Any] = {}
        async with asyncio.timeout(20):
            while final.get("state") != "stopped":
                final = decode_map((await statuses.next_msg(timeout=20)).data)
        # Nothing unaccounted at stop: what was held went to the spill, the rest counted.
        assert final["published"] == 0 and final["captured"] >= 100
        assert final["captured"] == final["spilled"] + final["lost"], final
        print(f"\nSTALL denied events: stalled after {stalled['stalled_s']}s, "
              f"{len(later)} heartbeats while stalled, at stop captured={final['captured']} "
              f"= spilled {final['spilled']} + lost {final['lost']}")
    finally:
        await nc.close()
        server.stop()


def stalled_beat(host: str, stalled: bool) -> dict[str, Any]:
    return {"v": 1, "host": host, "ts": time.time_ns(), "published": 0, "stalled": stalled,
            "stalled_s": 75.0 if stalled else 0.0,
            "last_error": "permissions violation for publish to \x1b[31mx" if stalled else ""}


def test_the_live_view_shows_a_stall_and_its_end() -> None:
    view = LiveState(host="h", url="nats://x", state_dir="/s", started=0.0)
    view.on_meta("status", {"state": "ready", "startup_s": 1.0})
    view.on_meta("heartbeat", stalled_beat("h", True))
    console = Console(width=160, record=True, file=open(os.devnull, "w"))
    console.print(view.render(5.0))
    shown = console.export_text()
    console.file.close()
    assert "collector stalled: events captured and none published for 75s" in shown
    assert "\x1b" not in shown and "\\x1b" in shown  # the error text is escaped
    view.on_meta("heartbeat", stalled_beat("h", False))
    assert view.stall_line() is None


async def test_up_plain_output_says_when_the_collector_stalls_and_recovers(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    view = LiveState(host="h9", url=nats_server.url, state_dir="/s")
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_bus(nats_server.url, view, (), False, stop))
    pub = await connect(nats_server.url, name="fake-collector")
    try:
        async with asyncio.timeout(10):
            while True:  # until up's subscription is in place
                await pub.publish(meta_subject("h9", "heartbeat"),
                                  encode_map(stalled_beat("h9", True)))
                await asyncio.sleep(0.1)
                if view.stalled is not None:
                    break
        await pub.publish(meta_subject("h9", "heartbeat"), encode_map(stalled_beat("h9", False)))
        async with asyncio.timeout(10):
            while view.stalled is not None:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await watcher
        await pub.close()
    out = capsys.readouterr().out
    assert "snoopbus: collector stalled: events captured and none published for 75s" in out
    assert "snoopbus: collector publishing again on h9" in out
