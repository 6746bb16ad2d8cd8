"""`snoopbus tail`: filters, colour on a terminal, JSON for pipes, alerts highlighted."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from functools import partial

from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.main import build_parser
from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.lines import colour_alert, colour_event, format_event
from snoopbus.consumers.tail import Match, subjects, use_colour
from snoopbus.proto import alert_subject, encode_batch, encode_map, ensure_stream, event_subject

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]
BASE = {"v": 1, "ts": 1_700_000_000_000_000_000, "host": "web1"}


def ev(i: int, type_: str, path: str = "", pid: int = 10, comm: str = "cp", **file: str) -> dict:
    out = {**BASE, "id": f"t-{i}", "type": type_, "proc": {"pid": pid, "comm": comm}}
    if path:
        out["file"] = {"path": path, **file}
    return out


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["tail", *argv])


def test_type_and_host_narrow_the_subscription() -> None:
    assert subjects(parse()) == ["snoopbus.events.*.*.*", "snoopbus.alerts.*.*"]
    args = parse("--type", "exec,delete", "--host", "web1", "--no-alerts")
    assert subjects(args) == ["snoopbus.events.web1.proc.exec", "snoopbus.events.web1.file.delete"]
    assert subjects(parse("--alerts", "--host", "a.b")) == ["snoopbus.alerts.a_b.*"]
    assert subjects(parse("--subject", "snoopbus.meta.>")) == ["snoopbus.meta.>"]


def test_path_pid_and_comm_filters() -> None:
    m = Match(paths=("/etc/*",), pids=frozenset({10}), comms=frozenset({"cp"}))
    assert m(ev(1, "create", "/etc/passwd"))
    assert not m(ev(2, "create", "/tmp/x"))
    assert not m(ev(3, "create", "/etc/x", pid=11))
    assert not m(ev(4, "create", "/etc/x", comm="vi"))
    assert m(ev(5, "renamed", "/tmp/new", old_path="/etc/old"))  # either name of a rename
    assert not Match(paths=("/etc/*",))(ev(6, "exec"))  # no path: no match
    assert Match()(ev(7, "exec"))


def test_colour_only_adds_escapes_around_the_type_and_arrow() -> None:
    e = ev(1, "renamed", "/b", old_path="/a")
    line = format_event(e)
    coloured = colour_event(line, e)
    assert "\x1b[1;36mrenamed" in coloured and "\x1b[1m→\x1b[0m" in coloured
    assert coloured.replace("\x1b[1;36m", "").replace("\x1b[1m", "").replace("\x1b[0m", "") == line
    alert = {"level": "critical"}
    assert colour_alert("x", alert) == "\x1b[1;97;41mx\x1b[0m"
    assert not use_colour("auto", as_json=True) and use_colour("always", as_json=False)


async def test_tail_filters_live_events_and_prints_alerts(
    nats_server: NatsServer, nc: Client, js: JetStreamContext
) -> None:
    await ensure_stream(js)  # tail reads the stream, as the collector creates it
    proc = await asyncio.create_subprocess_exec(
        *SNOOPBUS, "tail", "--nats", nats_server.url, "--json", "--path", "/etc/**",
        "--comm", "vi",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    wanted = ev(2, "modify", "/etc/ssh/sshd_config", comm="vi")
    alert = {"v": 1, "host": "web1", "ts": 1, "level": "high", "rule": {"title": "sshd config"},
             "event": wanted}  # fmt: skip
    try:
        lines: list[dict] = []
        async with asyncio.timeout(20):  # tail subscribes shortly after start: publish until seen
            while len(lines) < 2:
                batch = [ev(1, "modify", "/etc/hosts", comm="cp"), wanted,
                         ev(3, "modify", "/tmp/x", comm="vi")]  # fmt: skip
                await nc.publish(event_subject("web1", "modify"), encode_batch(batch))
                await nc.publish(alert_subject("web1", "high"), encode_map(alert))
                try:
                    while True:
                        line = await asyncio.wait_for(proc.stdout.readline(), 0.3)
                        lines.append(json.loads(line))
                except TimeoutError:
                    continue
    finally:
        proc.terminate()
        await proc.wait()
    assert {d.get("id") or d["rule"]["title"] for d in lines} == {"t-2", "sshd config"}


async def test_tail_on_a_terminal_is_coloured(
    nats_server: NatsServer, nc: Client, js: JetStreamContext
) -> None:
    await ensure_stream(js)
    tmux = shutil.which("tmux")
    assert tmux, "tmux is not installed (make test installs it)"
    sock = f"snoopbus-tail-{secrets.token_hex(4)}"
    cmd = " ".join([*SNOOPBUS, "tail", "--nats", nats_server.url])
    run = partial(subprocess.run, capture_output=True, text=True, timeout=10)
    run([tmux, "-L", sock, "new-session", "-d", "-x", "150", "-y", "20", "-s", "t", cmd])
    try:
        batch = [ev(1, "renamed", "/srv/b", old_path="/srv/a")]
        screen = ""
        async with asyncio.timeout(20):  # tail subscribes shortly after start
            while "/srv/a" not in screen:
                await nc.publish(event_subject("web1", "renamed"), encode_batch(batch))
                await asyncio.sleep(0.3)
                screen = run([tmux, "-L", sock, "capture-pane", "-e", "-p", "-t", "t"]).stdout
        line = next(ln for ln in screen.splitlines() if "/srv/a" in ln)
        assert "\x1b[" in line and "renamed" in line and "→" in line  # coloured, old → new
    finally:
        run([tmux, "-L", sock, "kill-server"])
