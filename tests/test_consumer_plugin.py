"""A third-party plugin, really installed, found through its entry point and run."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import SCHEMA_VERSION, encode_batch, ensure_stream, event_subject

EXAMPLE = Path(__file__).parent / "plugin_example"
PY = sys.executable


def pip(*args: str) -> None:
    subprocess.run([PY, "-m", "pip", "-q", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path_factory.mktemp("plugin") / "plugin_example"
    shutil.copytree(EXAMPLE, src)
    try:
        # Builds in an isolated env (setuptools from PyPI), as a user's pip would.
        pip("install", "--no-deps", str(src))
    except subprocess.CalledProcessError:
        # Offline: the venv's own setuptools (needs `wheel` there).
        pip("install", "--no-deps", "--no-build-isolation", str(src))
    try:
        yield "exec-printer"
    finally:
        pip("uninstall", "-y", "snoopbus-example-plugin")


def consume(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "snoopbus.consumers", *args], capture_output=True, text=True, timeout=60
    )


def test_list_shows_builtins_and_the_plugin(example_plugin: str) -> None:
    out = consume("--list")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert "rename" in lines and example_plugin in lines
    assert "print every exec" in lines[example_plugin]
    assert "snoopbus-example-plugin 0.1.0" in lines[example_plugin]


def test_snoopbus_consume_lists_it_too(example_plugin: str) -> None:
    script = Path(PY).parent / "snoopbus"
    out = subprocess.run([script, "consume", "--list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert example_plugin in out.stdout


def test_an_unknown_name_is_a_clear_error() -> None:
    out = consume("no-such-consumer")
    assert out.returncode == 2
    assert "no consumer named 'no-such-consumer'" in out.stderr and "rename" in out.stderr


def test_no_server_is_a_clear_error() -> None:
    out = consume("rename", "--nats", "nats://127.0.0.1:1")
    assert out.returncode == 3  # exits.BUS
    assert "cannot connect to NATS at nats://127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr


async def test_the_plugin_runs_against_a_real_server(
    example_plugin: str, nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js)
    event = {
        "v": SCHEMA_VERSION, "id": "p-1", "ts": 1, "host": "web-1", "type": "exec",
        "proc": {"pid": 4242, "argv": ["ls", "-l", "/tmp"]},
    }  # fmt: skip
    await js.publish(event_subject("web-1", "exec"), encode_batch([event]))
    with open(tmp_path / "err.log", "wb") as err:
        proc = subprocess.Popen(
            [PY, "-m", "snoopbus.consumers", example_plugin, "--nats", nats_server.url],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line == "web-1 4242 ls -l /tmp\n"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert "processed=1" in (tmp_path / "err.log").read_text()
