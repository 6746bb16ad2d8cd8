"""The `snoopbus` command as a user meets it: help, and one clear line for bad input."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import encode_batch, ensure_stream, event_subject

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]


def run(
    *args: str, user: int | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run(
        [*prefix, *SNOOPBUS, *args], capture_output=True, text=True, timeout=timeout
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"nats://127.0.0.1:{port}"


@pytest.mark.parametrize("command", ["up", "collect", "tail", "consume", "doctor"])
def test_every_command_explains_itself(command: str) -> None:
    out = run(command, "--help")
    assert out.returncode == 0
    assert "usage: snoopbus" in out.stdout and command in out.stdout


@pytest.mark.parametrize("command", ["collect", "tail"])
def test_unreachable_nats_is_one_clear_line(command: str) -> None:
    url = closed_port_url()
    # collect waits for NATS unless told not to (tests/test_fault_nats_late.py)
    out = run(command, "--nats", url, *(["--require-nats"] if command == "collect" else []))
    assert out.returncode == 3  # exits.BUS
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    assert any(url in line and "snoopbus up" in line for line in lines), out.stderr


def test_collect_without_root_says_so() -> None:
    out = run("collect", "--nats", closed_port_url(), user=65534)
    assert out.returncode == 4  # exits.PRIVILEGE
    assert "must run as root" in out.stderr and "Traceback" not in out.stderr


def test_bad_limits_are_rejected_before_anything_starts() -> None:
    out = run("collect", "--argv-max", "1000")
    assert out.returncode == 2
    assert "argv_max must be a power of two" in out.stderr


async def test_tail_reports_a_malformed_message_and_keeps_going(
    nats_server: NatsServer, nc: Client, js: JetStreamContext
) -> None:
    await ensure_stream(js)  # tail reads the stream, as the collector creates it
    proc = await asyncio.create_subprocess_exec(
        *SNOOPBUS, "tail", "--nats", nats_server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        subject = event_subject("h1", "exec")
        good = {"v": 1, "id": "x-1", "ts": 1, "host": "h1", "type": "exec",
                "proc": {"pid": 5, "comm": "ok", "exe": "/bin/ok", "argv": ["ok"]}}
        assert proc.stdout is not None and proc.stderr is not None
        # tail subscribes shortly after start; publish until its first line shows up.
        async with asyncio.timeout(20):
            while True:
                await nc.publish(subject, b"\xc1 not msgpack")
                await nc.publish(subject, encode_batch([good]))
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), 0.3)
                    break
                except TimeoutError:
                    continue
        assert "exec" in line.decode() and "pid=5" in line.decode()
        async with asyncio.timeout(5):
            while b"undecodable message" not in (err := await proc.stderr.readline()):
                assert err, "tail closed stderr without reporting the bad message"
        assert b"not msgpack" in err
    finally:
        proc.terminate()
        await proc.wait()
    assert proc.returncode == 0
