"""Alerts end to end on the real kernel: nats-server, the real collector, the
alerter as `python -m snoopbus.consumers alert`, and real commands.

Every command runs with its working directory in a fresh temporary directory;
the collector watches the whole machine, so only alerts whose event comes
from a process with that cwd count, and those must be exactly the expected.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.alert.consumer import AlertConsumer
from snoopbus.proto import STREAM_NAME, alerts_filter, decode_map
from tests import sigma_corpus
from tests.conftest import RunningCollector, stop_process

pytestmark = pytest.mark.kernel

# SigmaHQ's rules when a copy is found (tests/sigma_corpus.py); else the packaged set alone.
CORPUS = sigma_corpus.find()


class Alerts:
    def __init__(self, cwd: Path) -> None:
        self.cwd = str(cwd)
        self.mine: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        alert = decode_map(msg.data)
        if alert["event"].get("proc", {}).get("cwd") == self.cwd:
            self.mine.append(alert)
            self._changed.set()

    def seen(self) -> dict[str, set[str]]:
        """rule title -> the event types it fired on."""
        out: dict[str, set[str]] = {}
        for alert in self.mine:
            out.setdefault(alert["rule"]["title"], set()).add(alert["event"]["type"])
        return out

    async def wait_for(self, titles: set[str], within: float = 40) -> None:
        try:
            async with asyncio.timeout(within):
                while not titles <= set(self.seen()):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            missing = titles - set(self.seen())
            raise AssertionError(f"missing {missing}; got {self.seen()}") from None


@pytest.fixture
async def alerter(
    nats_server: NatsServer, nc: Client, collector: RunningCollector, tmp_path: Path
) -> AsyncIterator[Path]:
    """The alert consumer with the default set and the SigmaHQ corpus if found, as a process."""
    corpus = [str(CORPUS)] if CORPUS is not None else []
    log_path = tmp_path / "alerter.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # returns at once
            [sys.executable, "-m", "snoopbus.consumers", "alert", "--nats", nats_server.url,
             "--rules", "default", *corpus, "--throttle", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        await _wait_for_durable(nc, proc, log_path)
        yield log_path
    finally:
        code = stop_process(proc)
        assert code == 0, f"alerter exited with {code}:\n{log_path.read_text()}"


async def _wait_for_durable(nc: Client, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the alerter has bound its durable (its signal handlers are set by then)."""
    js = nc.jetstream()
    async with asyncio.timeout(60):
        while True:
            assert proc.poll() is None, f"alerter died:\n{log_path.read_text()}"
            try:
                await js.consumer_info(STREAM_NAME, AlertConsumer.name)
                return
            except NotFoundError:
                await asyncio.sleep(0.1)


async def run(cwd: Path, *argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd)
    assert await asyncio.wait_for(proc.wait(), 30) == 0, argv


async def test_attacks_raise_exactly_their_alerts_and_daily_work_none(
    nc: Client, collector: RunningCollector, alerter: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "home" / ".ssh").mkdir(parents=True)
    watch = Alerts(work)
    sub = await nc.subscribe(alerts_filter(host=collector.host), cb=watch.on_msg)
    tag = secrets.token_hex(4)
    # Dots in the names: cron and sudo ignore such files, should one outlive a crash.
    cron = Path(f"/etc/cron.d/snoopbus-test.{tag}")
    sudoers = Path(f"/etc/sudoers.d/snoopbus-test.{tag}")
    log = Path(f"/var/log/snoopbus-test.{tag}.log")
    nginx = work / "nginx"  # a web server by name: a copy of bash
    shutil.copy("/bin/bash", nginx)
    made_sudoers_d = not sudoers.parent.exists()  # no sudo here: make the dir, remove it after
    sudoers.parent.mkdir(mode=0o750, exist_ok=True)
    try:
        # Daily work: nothing may fire.
        await run(work, "ls", "-l")
        await run(work, "bash", "-c", "echo hello | tr a-z A-Z | cat")
        await run(work, sys.executable, "-c", "open('notes.txt', 'w').write('x')")
        await run(work, "chmod", "755", "notes.txt")
        # Attacks.
        await run(work, "bash", "-c", "echo ZWNobyBzbm9vcGJ1cw== | base64 -d | sh")
        await run(work, str(nginx), "-c", "/bin/sh -c 'echo pwned'; true")
        await run(work, sys.executable, "-c", f"""
import os
for path in ({str(cron)!r}, {str(sudoers)!r}, 'home/.ssh/authorized_keys'):
    with open(path, 'w') as f:
        f.write('# snoopbus test\\n')
open({str(log)!r}, 'w').close()
os.unlink({str(log)!r})
open('rootshell', 'w').close()
os.chmod('rootshell', 0o4755)
""")  # fmt: skip
        await run(work, "bash", "-c", "chown root notes.txt && chmod u+s notes.txt")
        expected = {
            # default set
            "Base64 Decoded and Executed": {"exec"},
            "Shell Spawned by a Web Server or Database": {"exec"},
            "Program Run from a World-Writable Temporary Directory": {"exec"},
            "Write to a Cron Directory or Crontab": {"create", "modify", "close_write"},
            "Sudoers Changed": {"create", "modify", "close_write"},
            "SSH Authorized Keys Changed": {"create", "modify", "close_write"},
            "Log File Deleted": {"delete"},
            "Setuid or Setgid Bit Set on a File": {"attrib"},
            "Chmod Setting the Setuid or Setgid Bit": {"exec"},
        }
        from_corpus = {
            "Linux Base64 Encoded Pipe to Shell": {"exec"},
            "Linux Shell Pipe to Shell": {"exec"},
            "Decode Base64 Encoded Text": {"exec"},
            "Potentially Suspicious Execution From Tmp Folder": {"exec"},  # the fake nginx
            "Shell Execution Of Process Located In Tmp Directory": {"exec"},  # its shell
            "New Cron File Created": {"create", "modify", "close_write"},
            "Persistence Via Sudoers.d Files": {"create", "modify", "close_write"},
            "Setuid and Setgid": {"exec"},
        }
        if CORPUS is not None:
            expected |= from_corpus
        else:
            print(f"\npackaged rules alone: {sigma_corpus.MISSING}")
        await watch.wait_for(set(expected))
        await asyncio.sleep(2)  # anything else would have come by now
        assert watch.seen() == expected, alerter.read_text()[-3000:]
    finally:
        await sub.unsubscribe()
        for path in (cron, sudoers, log):
            path.unlink(missing_ok=True)
        if made_sudoers_d:
            sudoers.parent.rmdir()
