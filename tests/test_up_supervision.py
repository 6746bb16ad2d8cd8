"""`up` dies, its children die with it; what a dead one left, the next one stops;
a hung child cannot keep Ctrl-C from stopping everything."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from snoopbus.app import leftovers
from snoopbus.proto import exits
from tests.conftest import free_port
from tests.test_up import read_until

pytestmark = pytest.mark.kernel


def marked(marker: str) -> list[int]:
    """Every live process whose command line names `marker` (a test's own state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd and leftovers.start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def end_marked(marker: str) -> None:
    """Cleanup: whatever of this test is still alive (found by its own folder)."""
    for pid in marked(marker):
        proc = leftovers.Proc.of("left", pid)
        if proc is not None:
            leftovers.end([proc], wait=2)


async def gone(marker: str, within: float) -> list[int]:
    """Waits until nothing names `marker`; what still does after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (alive := marked(marker)) and loop.time() < deadline:
        await asyncio.sleep(0.2)
    return alive


@asynccontextmanager
async def up(state: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "snoopbus.app", "up", "--live", "off",
        "--state-dir", str(state), "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_children_die_with_a_killed_up_at_any_moment(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rng = random.Random()
    try:
        for moment in (rng.uniform(0.3, 2.0), rng.uniform(2.0, 6.0), None):
            async with up(state, free_port()) as proc:
                assert proc.stdout is not None
                if moment is None:  # all running, the collector ready
                    await read_until(proc.stdout, "collector ready", within=120)
                else:
                    await asyncio.sleep(moment)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            # the server, the collector, the consumers: none outlives `up`
            assert await gone(str(state), within=30) == [], f"killed at {moment}"
    finally:
        end_marked(str(state))


async def test_the_next_up_stops_what_a_dead_one_left(tmp_path: Path) -> None:
    # A child that outlived its `up` (started before the death signal was asked
    # for, or by an older version): the record in the state folder names it.
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    dead_up = subprocess.Popen(["true"])
    dead_up.wait()
    try:
        (state / "up.json").write_text(json.dumps([
            ["up", dead_up.pid, 1],  # long gone
            ["collector", orphan.pid, leftovers.start_time(orphan.pid)],
        ]))  # fmt: skip
        with socket.socket() as held:  # up then stops at once: not a NATS server
            held.bind(("127.0.0.1", 0))
            held.listen()
            out = subprocess.run(
                [sys.executable, "-m", "snoopbus.app", "up", "--live", "off",
                 "--state-dir", str(state), "--port", str(held.getsockname()[1])],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        assert f"collector (pid {orphan.pid})" in out.stdout
        assert orphan.wait(10) == -signal.SIGTERM
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_a_live_up_of_the_same_folder_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    other = subprocess.Popen(["sleep", "300"])
    try:
        (state / "up.json").write_text(
            json.dumps([["up", other.pid, leftovers.start_time(other.pid)]])
        )
        out = subprocess.run(
            [sys.executable, "-m", "snoopbus.app", "up", "--live", "off",
             "--state-dir", str(state), "--port", str(free_port())],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == exits.BUSY
        assert f"another `snoopbus up` (pid {other.pid})" in out.stderr
        assert other.poll() is None  # refused, not killed
    finally:
        other.kill()
        other.wait()


def test_a_reused_pid_is_not_ours() -> None:
    me = leftovers.Proc.of("x", os.getpid())
    assert me is not None and me.alive()
    assert not leftovers.Proc("x", os.getpid(), me.start + 1).alive()


async def test_ctrl_c_stops_everything_even_with_a_hung_collector(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "snoopbus.toml"
    cfg.write_text("[up]\nstop_timeout = 4.0\n")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "snoopbus.app", "up", "--live", "off",
            "--config", str(cfg), "--state-dir", str(state), "--port", str(free_port()),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        await read_until(proc.stdout, "collector ready", within=120)
        [collector] = [p for p in marked(str(state)) if b" collect " in
                       Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")]
        os.kill(collector, signal.SIGSTOP)  # hangs: SIGTERM stays pending
        proc.send_signal(signal.SIGINT)
        # Bounded by stop_timeout (4 s) and the server's share; 60 s is only a
        # limit on waiting for a broken stop, not a measure of speed.
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 0
        assert await gone(str(state), within=5) == []
    finally:
        end_marked(str(state))
