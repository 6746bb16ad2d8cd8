"""`snoopbus doctor --nats URL --host H`: what that host's collector last
reported, read back from the stream (a real nats-server, a real collector
with a ring buffer too small for its load and no fair shares, so there is
loss to show)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.doctor_bus import BusReport, render
from snoopbus.proto import decode_map, meta_subject
from tests.support.collector import start_collector
from tests.support.processes import SNOOPBUS, stop_process

pytestmark = pytest.mark.kernel

BURST = """
import os
for i in range(5000):
    fd = os.open("f", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.close(fd)
    os.unlink("f")
"""


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SNOOPBUS, "doctor", *args],
                          capture_output=True, text=True, timeout=120)


async def test_doctor_shows_the_last_reports_and_loss_of_a_host(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    # Fair shares off: the burst must overflow the ring, not be summarized.
    running = await start_collector(nats_server.url, nc, tmp_path, "--ringbuf-pages", "1",
                                    "--source-rate", "0", "--heartbeat-interval", "0.5")
    loss = await nc.subscribe(meta_subject(running.host, "loss"))
    await nc.flush()  # subscribed on the server before the burst makes its report
    try:
        await asyncio.to_thread(subprocess.run, [sys.executable, "-I", "-c", BURST],
                                cwd=tmp_path, check=True, timeout=120)
        reported = decode_map((await loss.next_msg(timeout=15)).data)
    finally:
        assert stop_process(running.process) == 0, running.log()
    out = doctor("--nats", nats_server.url, "--host", running.host)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"Collector on {running.host}, as reported on {nats_server.url}:" in text
    assert "  state: stopped" in text
    assert "kernel_ringbuf_full=" in text and "in the kernel, by type: " in text
    as_json = json.loads(doctor("--json", "--nats", nats_server.url, "--host",
                                running.host).stdout)
    reports = as_json["collector"]["reports"]
    assert reports["status"]["state"] == "stopped"
    assert reports["loss"]["total"] >= reported["total"] > 0
    assert as_json["checks"]  # the kernel report is still all there


def test_doctor_says_when_a_host_never_reported(nats_server: NatsServer) -> None:
    out = doctor("--nats", nats_server.url, "--host", "nobody-here")
    assert out.returncode == 0, out.stderr
    assert "no report from host 'nobody-here' in stream SNOOPBUS" in out.stdout


def test_doctor_with_nats_away_says_so_and_still_checks_the_kernel() -> None:
    out = doctor("--nats", "nats://127.0.0.1:1", "--host", "h")
    assert out.returncode == 0, out.stderr
    assert "could not ask NATS: " in out.stdout and "The collector can run here." in out.stdout


def test_render_prefers_the_newest_count() -> None:
    report = BusReport("h", "nats://x", {
        "status": {"ts": 1, "state": "ready"},
        "heartbeat": {"ts": 5, "published": 10, "lost": 2, "lost_by_type": {"create": 2}},
        "loss": {"ts": 7, "total": 3, "dropped": {"kernel_ringbuf_full": 3}},
    })
    text = "\n".join(render(report))
    assert "state: running (heartbeat)" in text and "published: 10" in text
    assert "lost: 3" in text and "by reason: kernel_ringbuf_full=3" in text
