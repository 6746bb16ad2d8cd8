"""systemd's notify protocol: READY=1 once the probes are loaded, WATCHDOG=1 while
the collector lives, STOPPING=1 at the end; received on a real datagram socket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.collector import sd_notify
from tests.conftest import start_collector, stop_process


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(0.2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield s


def received(s: socket.socket, until: float) -> list[str]:
    got = []
    while time.monotonic() < until:
        try:
            got.append(s.recv(4096).decode())
        except TimeoutError:
            pass
    return got


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify.notify("READY=1") is False


def test_the_watchdog_interval_is_half_of_watchdog_sec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sd_notify.watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sd_notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    monkeypatch.delenv("WATCHDOG_PID")
    assert sd_notify.watchdog_interval() is None


def test_a_message_reaches_the_socket(notify_socket: socket.socket) -> None:
    assert sd_notify.notify("STATUS=hello") is True
    assert notify_socket.recv(4096) == b"STATUS=hello"


@pytest.mark.kernel
async def test_the_collector_says_ready_feeds_the_watchdog_and_says_stopping(
    nats_server: NatsServer, nc: Client, tmp_path: Path, notify_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a ping every 0.5 s
    running = await start_collector(nats_server.url, nc, tmp_path)
    try:
        got = received(notify_socket, time.monotonic() + 3)
        assert got and got[0].startswith("READY=1\nSTATUS=probes loaded in"), got
        assert got.count("WATCHDOG=1") >= 3, got
    finally:
        code = stop_process(running.process)
    assert code == 0, running.log()
    assert "STOPPING=1" in received(notify_socket, time.monotonic() + 0.5)
