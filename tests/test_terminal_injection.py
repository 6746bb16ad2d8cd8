"""An unprivileged user names a program and a file with terminal escape
sequences, bidi overrides and rich markup, and runs it: through the kernel,
the collector and the bus, neither `snoopbus tail` (on a real terminal, and
into a pipe) nor `up`'s live view lets one of those bytes through, and the
names still read as what they are."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from snoopbus.app.live import LiveState
from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.printable import UNSAFE, printable
from snoopbus.proto import STREAM_NAME, decode_batch, events_filter
from tests.conftest import RunningCollector
from tests.test_printable import rendered

pytestmark = pytest.mark.kernel

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# The program's name: retitles the terminal, clears it. 15 bytes, so it is
# the process's whole comm too.
PROGRAM = "\x1b]2;pwned\x07\x1b[2JX"
# The file's name: markup, a bidi override ("exe.txt" reads as "txt.exe"),
# a colour, a retitle.
NAME = "[red]note\u202etxt.exe\x1b[31m\x1b]2;pwned\x07"


@pytest.fixture
def playground() -> Iterator[Path]:
    """A folder of nobody's own (pytest's tmp_path is root's and closed to others)."""
    where = Path(tempfile.mkdtemp(prefix="snoopbus-esc-", dir="/tmp"))
    shutil.chown(where, 65534, 65534)
    try:
        yield where
    finally:
        shutil.rmtree(where)


async def tail_consumers(js: JetStreamContext) -> int:
    return sum(1 for c in await js.consumers_info(STREAM_NAME) if c.name.startswith("tail-"))


async def test_escape_sequences_in_names_reach_no_terminal(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, collector: RunningCollector,
    playground: Path, tmp_path: Path,
) -> None:  # fmt: skip
    assert shutil.which("tmux"), "tmux is not installed (make test installs it)"
    raw: list[Msg] = []  # what `up` would be fed: the collector's messages as published

    async def keep(msg: Msg) -> None:
        raw.append(msg)

    sub = await nc.subscribe(events_filter(host=collector.host), cb=keep)

    def of_program() -> list[Msg]:
        return [m for m in raw if any(e.get("proc", {}).get("comm") == PROGRAM
                                      for e in decode_batch(m.data))]  # fmt: skip

    piped = tmp_path / "tail.out"
    with piped.open("wb") as out:
        pipe_tail = subprocess.Popen(
            [*SNOOPBUS, "tail", "--nats", nats_server.url, "--host", collector.host,
             "--comm", PROGRAM, "--no-alerts"], stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    sock = f"snoopbus-esc-{secrets.token_hex(4)}"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True,
                              timeout=10).stdout  # fmt: skip

    # The terminal's tail gets its --comm from the shell, as a user would type it.
    typed = " ".join([*SNOOPBUS, "tail", "--nats", nats_server.url, "--host", collector.host,
                      "--no-alerts", "--comm", "\"$(printf '\\033]2;pwned\\007\\033[2JX')\""])
    tmux("new-session", "-d", "-x", "250", "-y", "20", "-s", "t", typed)
    try:
        async with asyncio.timeout(20):  # both tails follow the stream
            while await tail_consumers(js) < 2:
                await asyncio.sleep(0.1)
        program, name = playground / PROGRAM, playground / NAME
        subprocess.run([*NOBODY, "sh", "-c", 'cp /usr/bin/touch "$1" && "$1" "$2"', "sh",
                        str(program), str(name)], check=True, timeout=30)  # fmt: skip
        async with asyncio.timeout(30):
            while len(piped.read_bytes().splitlines()) < 2 or printable(PROGRAM) not in tmux(
                "capture-pane", "-p", "-t", "t"
            ):
                await asyncio.sleep(0.2)
        screen = tmux("capture-pane", "-p", "-t", "t")
        title = tmux("display-message", "-p", "-t", "t", "#{pane_title}").strip()
        # The test's own subscription may be served after the tails' consumers.
        async with asyncio.timeout(15):
            while not of_program():
                await asyncio.sleep(0.1)
    finally:
        tmux("kill-server")
        pipe_tail.terminate()
        pipe_tail.wait(20)
        await sub.unsubscribe()

    # Into a pipe: not one unsafe character, and each name shown escaped.
    text = piped.read_bytes().decode("utf-8")
    assert not UNSAFE.search(text.replace("\n", "")), repr(text)
    exec_line = next(ln for ln in text.splitlines() if " exec " in ln)
    assert f"comm={printable(PROGRAM)}" in exec_line
    assert printable(str(program)) in exec_line and printable(NAME) in exec_line  # exe, argv
    assert any("create      pid=" in ln and printable(str(name)) in ln
               for ln in text.splitlines()), text  # fmt: skip
    # On a terminal: the title is not the attacker's, and the line reads as escaped.
    assert title != "pwned"
    assert f"comm={printable(PROGRAM)}" in screen and printable(str(name)) in screen, screen

    # up's live view, fed the collector's own messages of that program.
    state = LiveState(host=collector.host, url=nats_server.url, state_dir="/s", started=0.0)
    mine = of_program()
    assert mine, "the collector published nothing of that program"
    for m in mine:
        state.on_events(m.subject, m.data, now=9.5)
    shown = rendered(state)
    assert not UNSAFE.search(shown.replace("\n", "")), repr(shown)
    top = shown.split("top processes")[1]
    assert printable(PROGRAM) in top and printable(str(playground))[:20] in top
