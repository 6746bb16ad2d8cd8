"""Prometheus /metrics and /healthz: the server, a consumer's figures, the collector's."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter

from snoopbus.app.natsd import NatsServer
from snoopbus.collector import loss, metrics
from snoopbus.collector.loss import LossCounters
from snoopbus.consumers import Batch, Runtime, Settings, consumer, runtime
from snoopbus.consumers.metrics import serve_consumer
from snoopbus.proto import encode_batch, event_subject, events_filter
from snoopbus.proto.metrics_server import MetricsError, MetricsServer, new_registry
from tests.support.collector import start_collector
from tests.support.metrics import get, samples
from tests.support.processes import SNOOPBUS, free_port, stop_process


def test_server_serves_metrics_and_health_and_refuses_a_taken_port() -> None:
    registry = CollectorRegistry()
    Counter("demo_things", "things", registry=registry).inc(3)
    healthy = [False]
    server = MetricsServer(registry, lambda: (healthy[0], "ok" if healthy[0] else "starting"))
    port = server.start(0)
    try:
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and samples(body)[("demo_things_total", ())] == 3
        assert get(f"http://127.0.0.1:{port}/healthz") == (503, "starting\n")
        healthy[0] = True
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
        with pytest.raises(MetricsError, match=f"metrics port {port} on 127.0.0.1 is in use"):
            MetricsServer(registry, lambda: (True, "ok")).start(port)
    finally:
        server.stop()


async def test_a_consumer_reports_processed_failed_dead_letters_and_lag(
    nats_server: NatsServer, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "LAG_INTERVAL", 0.1)

    @consumer("metered", filters=[events_filter(type="exec")])
    async def handle(batch: Batch) -> None:
        for d in batch:
            if d.events[0]["proc"]["comm"] == "bad":
                raise ValueError("bad event")

    settings = Settings(batch=8, fetch_timeout=0.2, backoff=(0.01,), max_attempts=2)
    rt = Runtime(handle, servers=nats_server.url, settings=settings)
    server = serve_consumer(rt, 0, "127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    assert get(f"{url}/healthz")[0] == 503  # not bound yet
    task = asyncio.create_task(rt.run())
    try:
        await asyncio.wait_for(rt.ready.wait(), 10)
        assert get(f"{url}/healthz") == (200, "ok\n")
        for i, comm in enumerate(["ok", "ok", "bad"]):
            event = {"v": 1, "id": f"m-{i}", "ts": 1, "host": "h1", "type": "exec",
                     "proc": {"pid": 1, "comm": comm}}  # fmt: skip
            await js.publish(event_subject("h1", "exec"), encode_batch([event]))
        async with asyncio.timeout(10):
            while rt.counters.dead_lettered < 1 or rt.counters.pending != 0:
                await asyncio.sleep(0.05)
        got = samples(get(f"{url}/metrics")[1])
        who = (("consumer", "metered"),)
        assert got[("snoopbus_consumer_messages_processed_total", who)] == 2
        assert got[("snoopbus_consumer_handler_failures_total", who)] == 2
        dead = (*who, ("kind", "attempts"))
        assert got[("snoopbus_consumer_messages_dead_lettered_total", dead)] == 1
        assert got[("snoopbus_consumer_lag_messages", who)] == 0
    finally:
        rt.stop()
        await task
        server.stop()


def test_alerts_are_counted_by_rule_id_not_title() -> None:
    from snoopbus.consumers.alert.consumer import AlertConsumer
    from snoopbus.consumers.alert.outputs import Output
    from snoopbus.consumers.metrics import ConsumerStats

    class Sent(Output):
        name = "sent"

        async def send(self, alerts: Any) -> None:
            pass

    alerter = AlertConsumer(["default"])
    alerter.outputs = [Sent()]
    # Two rules sharing a title stay apart; one rule's levels too.
    first = {"rule": {"id": "r-1", "title": "Exec from /tmp"}, "level": "high"}
    second = {"rule": {"id": "r-2", "title": "Exec from /tmp"}, "level": "high"}
    asyncio.run(alerter._send([first, first, second]))
    rt = Runtime(alerter, servers="nats://127.0.0.1:1")
    registry = CollectorRegistry()
    registry.register(ConsumerStats(rt))
    alerts = {(s.labels["rule_id"], s.labels["level"]): s.value
              for m in registry.collect() if m.name == "snoopbus_alerts" for s in m.samples
              if s.name == "snoopbus_alerts_total"}  # fmt: skip
    assert alerts == {("r-1", "high"): 2, ("r-2", "high"): 1}
    info = [s.labels for m in registry.collect() for s in m.samples
            if s.name == "snoopbus_alert_rule_info"]  # fmt: skip
    assert info == [{"rule_id": "r-1", "title": "Exec from /tmp"},
                    {"rule_id": "r-2", "title": "Exec from /tmp"}]  # fmt: skip


def test_every_registry_has_build_info_and_process_figures() -> None:
    registry = new_registry("consumer")
    server = MetricsServer(registry, lambda: (True, "ok"))
    port = server.start(0)
    try:
        got = samples(get(f"http://127.0.0.1:{port}/metrics")[1])
    finally:
        server.stop()
    [(labels, one)] = [(dict(k[1]), v) for k, v in got.items() if k[0] == "snoopbus_build_info"]
    assert one == 1 and labels["component"] == "consumer"
    assert labels["kernel"] == os.uname().release
    assert labels["python"] == platform.python_version()
    assert labels["version"] == metadata.version("snoopbus")
    assert got[("process_resident_memory_bytes", ())] > 1 << 20
    assert got[("process_open_fds", ())] >= 3


@pytest.mark.parametrize("command", [["collect"], ["consume", "rename"]])
def test_a_taken_metrics_port_is_one_line_and_a_non_zero_exit(
    nats_server: NatsServer, command: list[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [*SNOOPBUS, *command, "--nats", nats_server.url, "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 5 and "Traceback" not in out.stderr  # exits.BUSY
    [line] = [ln for ln in out.stderr.splitlines() if "metrics port" in ln]
    assert f"metrics port {port} on 127.0.0.1 is in use" in line and "--metrics-port" in line


@pytest.mark.kernel
async def test_the_collector_serves_its_counters(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    port = free_port()
    running = await start_collector(nats_server.url, nc, tmp_path, "--metrics-port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        assert get(f"{url}/healthz") == (200, "ok\n")
        async with asyncio.timeout(20):
            while True:
                subprocess.run(["/bin/true"], check=True)
                got = samples(get(f"{url}/metrics")[1])
                if got.get(("snoopbus_collector_events_published_total", (("type", "exec"),))):
                    break
                await asyncio.sleep(0.2)
        assert got[("snoopbus_collector_events_captured_total", (("type", "exec"),))] >= 1
        assert got[("snoopbus_collector_records_read_total", ())] >= 1
        assert got[("snoopbus_collector_ready", ())] == 1
        assert 0 <= got[("snoopbus_collector_ringbuf_fill_ratio", ())] < 1
        assert got[("snoopbus_collector_publish_latency_seconds_count", ())] >= 1
    finally:
        assert stop_process(running.process) == 0, running.log()


def test_every_loss_reason_is_exported_from_zero() -> None:
    """So that Prometheus' increase() sees a reason's first loss (SnoopbusEventsLost)."""
    reasons = {v for k, v in vars(loss).items() if k.isupper() and isinstance(v, str)}
    assert set(loss.REASONS) == reasons

    class Agent:
        reader = publisher = publishing = None
        loss = LossCounters()

    Agent.loss.add(loss.PUBLISH_DENIED, 3)
    [lost] = [f for f in metrics.CollectorStats(Agent()).collect()
              if f.name == "snoopbus_collector_events_lost"]
    by_reason = {s.labels["reason"]: s.value for s in lost.samples}
    assert by_reason == {**dict.fromkeys(loss.REASONS, 0), loss.PUBLISH_DENIED: 3}
