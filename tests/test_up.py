"""`snoopbus up` as a user runs it: everything starts, events flow, Ctrl-C ends it all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import nats
import pytest

from snoopbus.proto import BusUnavailable, NatsAuth, connect, decode_batch, events_filter, exits
from tests.conftest import free_port

pytestmark = pytest.mark.kernel


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def read_until(stream: asyncio.StreamReader, text: str, within: float = 60) -> str:
    seen = ""
    async with asyncio.timeout(within):
        while text not in seen:
            line = await stream.readline()
            assert line, f"stream closed before {text!r}; got:\n{seen}"
            seen += line.decode()
    return seen


def free_ports(n: int) -> int:
    """The first of n consecutive free ports (up's metrics base and its children's)."""
    for _ in range(50):
        base = free_port()
        socks = [socket.socket() for _ in range(n)]
        try:
            for i, s in enumerate(socks):
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


async def commands_find_the_stack(port: int, host: str, state: Path) -> None:
    """Run as root with no flags, each command reaches this stack with its role;
    anyone else gets one line saying why not and what to do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOOPBUS_NATS_")}
    # --comm: on a busy host the whole machine's events would fill the pipe faster
    # than this loop reads it, and tail then blocks writing.
    tail = await asyncio.create_subprocess_exec(
        *SNOOPBUS, "tail", "--json", "--comm", "true", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert tail.stdout is not None
    marker = secrets.token_hex(4)
    seen = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60  # besides the timeout: 3.11's wait_for can swallow its cancel
    try:
        async with asyncio.timeout(60):
            while marker not in seen:
                assert loop.time() < deadline, "tail did not show the marker's exec"
                subprocess.run(["/bin/true", marker], check=True)
                with contextlib.suppress(TimeoutError):
                    seen += (await asyncio.wait_for(tail.stdout.readline(), 1)).decode()
    finally:
        tail.terminate()
        try:
            await asyncio.wait_for(tail.wait(), 20)
        except TimeoutError:
            tail.kill()
            await tail.wait()
    doctor = subprocess.run([*SNOOPBUS, "doctor", "--nats", "--host", host], env=env,
                            capture_output=True, text=True, timeout=120)
    assert f"Collector on {host}, as reported on nats://127.0.0.1:{port}" in doctor.stdout
    assert "could not ask NATS" not in doctor.stdout
    fleet = subprocess.run([*SNOOPBUS, "fleet", "--json"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert fleet.returncode == 0, fleet.stderr
    (row,) = [r for r in json.loads(fleet.stdout) if r["host"] == host]
    assert row["state"] == "running" and row["last_event"] and row["version"]
    shown = subprocess.run([*SNOOPBUS, "config", "show"], env=env, capture_output=True,
                           text=True, timeout=60).stdout
    assert f'url = "nats://127.0.0.1:{port}"  # local stack' in shown
    assert f'nkey = "{state / "auth" / "reader.nk"}"' in shown
    # A second alert consumer shares the durable, as the alert role.
    consume = await asyncio.create_subprocess_exec(
        *SNOOPBUS, "consume", "alert", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert consume.stderr is not None
    try:
        await read_until(consume.stderr, "alert: consuming")
    finally:
        consume.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(consume.wait(), 30) == 0
    for command in (["tail"], ["doctor", "--nats"], ["consume", "alert"], ["query"], ["fleet"]):
        out = subprocess.run([*NOBODY, *SNOOPBUS, *command], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == exits.PRIVILEGE, (command, out.stderr)
        [line] = out.stderr.strip().splitlines()
        assert f"run `sudo snoopbus {' '.join(command)}`" in line, line


async def test_up_runs_the_stack_restarts_a_dead_child_and_stops_cleanly(tmp_path: Path) -> None:
    port, host = free_port(), f"up{secrets.token_hex(3)}"
    metrics = free_ports(5)  # up, collector, rename, alert, archive
    # As a user runs it: no spill folder chosen, so up's own is used (not the harness's).
    env = {k: v for k, v in os.environ.items() if k != "SNOOPBUS_COLLECTOR_SPILL_DIR"}
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "snoopbus.app", "--log-format", "json", "up",
        "--state-dir", str(tmp_path / "state"), "--port", str(port), "--host", host,
        "--metrics-port", str(metrics),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    assert up.stdout is not None and up.stderr is not None
    try:
        await read_until(up.stdout, "started collector, rename, alert")
        assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700  # NATS store, archive, logs
        with pytest.raises(BusUnavailable, match="authorization violation"):  # none: refused
            await connect(f"nats://127.0.0.1:{port}", name="anyone", auth=NatsAuth())
        reader = tmp_path / "state" / "auth" / "reader.nk"
        nc = await nats.connect(f"nats://127.0.0.1:{port}", nkeys_seed=str(reader))
        got: list[dict] = []
        arrived = asyncio.Event()

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            got.extend(decode_batch(msg.data))
            arrived.set()

        await nc.subscribe(events_filter(host=host, type="exec"), cb=on_msg)
        marker = secrets.token_hex(4)
        async with asyncio.timeout(60):  # until the collector is up and sees our exec
            while not any(e["proc"].get("argv") == ["/bin/true", marker] for e in got):
                subprocess.run(["/bin/true", marker], check=True)
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), 1)
                except TimeoutError:
                    pass
        await nc.close()
        # Every process serves its metrics: up, the collector, each consumer.
        assert scrape(metrics + 1, "/healthz") == "ok\n"
        # "published" counts JetStream's acks, which may reach the collector
        # after the message reached our subscription.
        async with asyncio.timeout(20):
            while ('snoopbus_collector_events_published_total{type="exec"}'
                   not in scrape(metrics + 1)):
                await asyncio.sleep(0.2)
        async with asyncio.timeout(20):
            while 'snoopbus_consumer_lag_messages{consumer="rename"}' not in scrape(metrics + 2):
                await asyncio.sleep(0.2)
        assert 'snoopbus_up_child_running{child="rename"} 1.0' in scrape(metrics)
        await commands_find_the_stack(port, host, tmp_path / "state")

        kids = children(up.pid)
        [collector] = [k for k in kids if " collect " in cmdline(k)]
        assert f"--spill-dir {tmp_path / 'state' / 'spill'}" in cmdline(collector)
        [rename] = [k for k in kids if "consume rename" in cmdline(k)]
        os.kill(rename, signal.SIGKILL)
        await read_until(up.stderr, "rename exited with -9; restarting")
        async with asyncio.timeout(30):
            while not any("consume rename" in cmdline(k) for k in children(up.pid)):
                await asyncio.sleep(0.1)
        kids = children(up.pid)
        assert 'snoopbus_up_child_restarts_total{child="rename"} 1.0' in scrape(metrics)
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(up.wait(), 60)
    assert code == 0
    assert "snoopbus: stopped" in (await up.stdout.read()).decode()
    # Every child logged as `up` was told to (JSON), and Ctrl-C brought no
    # warnings (the live view's connection drained before nats-server stopped).
    logged = [ln for ln in (await up.stderr.read()).decode().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in logged if not ln.startswith("snoopbus: ")]
    assert records and {r["logger"].split(".")[1] for r in records} >= {"collector", "consumers"}
    bus = [r for r in records if r["logger"] == "snoopbus.proto.bus" and r["level"] != "info"]
    assert not bus, bus  # e.g. "snoopbus-up: disconnected; reconnecting"
    for pid in kids:  # collector, consumers and nats-server: all gone
        assert not Path(f"/proc/{pid}").exists()
    # Every child, the restarted pairer's recall included, did its work within its role.
    log = (tmp_path / "state" / "nats" / "nats-server.log").read_text()
    assert "Permissions Violation" not in log, log


def test_up_refuses_a_port_held_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "snoopbus.app", "up", "--state-dir",
             str(tmp_path), "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )
    assert out.returncode == 5  # exits.BUSY
    assert f"port {port} is in use" in out.stderr and "Traceback" not in out.stderr


async def test_a_closed_terminal_sighup_stops_every_child(tmp_path: Path) -> None:
    # The children run in sessions of their own: had `up` died of SIGHUP, they
    # would have kept running with nobody to stop them.
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "snoopbus.app", "up",
        "--state-dir", str(tmp_path / "state"), "--port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert up.stdout is not None
    kids: list[int] = []
    try:
        await read_until(up.stdout, "started collector")
        kids = children(up.pid)
        assert len(kids) >= 4  # nats-server, collector, consumers
    finally:
        up.send_signal(signal.SIGHUP)
        # Read on, as a terminal would, until `up` closes its output.
        rest = (await asyncio.wait_for(up.stdout.read(), 90)).decode()
        code = await asyncio.wait_for(up.wait(), 30)
    assert code == 0, rest
    assert "snoopbus: stopped" in rest
    assert [pid for pid in kids if Path(f"/proc/{pid}").exists()] == []
