"""SIGHUP reloads the alerter's rules (`systemctl reload`): `consume alert` as its own
process against a real nats-server, events published before, during and after.

No alert lost or sent twice for a rule in both sets (a core subscription sees
every publish, even one the stream would drop as a duplicate); the new rule's
alerts after the reload; a broken rule file keeps the old set, with one log
line naming the file and the reason; throttle windows survive the reload.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import alerts_filter, ensure_stream
from tests.conftest import stop_process
from tests.test_alert_consumer import HOST, AlertWatch, exec_event, publish

OLD_ID = "5e0b9d7a-0000-4000-8000-00000000a1d0"
NEW_ID = "5e0b9d7a-0000-4000-8000-00000000a1d1"
RULE = """
title: {title}
id: {id}
level: high
logsource: {{product: linux, category: process_creation}}
detection:
    # CommandLine too: the throttle keys on the fields its category's rules read.
    selection: {{Image|endswith: /{tool}, CommandLine|contains: ' --run='}}
    condition: selection
"""
OLD_RULE = RULE.format(title="old tool ran", id=OLD_ID, tool="old-tool")
NEW_RULE = RULE.format(title="new tool ran", id=NEW_ID, tool="new-tool")
BROKEN = "title: half written\nlogsource: {product: linux\n"
UNMAPPED = RULE.format(title="needs a logon", id="5e0b9d7a-0000-4000-8000-00000000a1d2",
                       tool="x").replace("Image|endswith: /x", "LogonId: 0")  # fmt: skip


async def log_line(path: Path, text: str, after: int = 0, within: float = 60) -> str:
    """The first line of the log, past byte `after`, holding `text`."""
    async with asyncio.timeout(within):
        while True:
            tail = path.read_bytes()[after:].decode(errors="replace")
            for line in tail.splitlines():
                if text in line:
                    return line
            await asyncio.sleep(0.1)


def tool_event(tool: str, n: int) -> dict[str, Any]:
    return exec_event([f"/usr/bin/{tool}", f"--run={n}"])


def ids_of(alerts: list[tuple[str, dict[str, Any]]], rule_id: str) -> Counter[str]:
    return Counter(a["id"] for _, a in alerts if a["rule"]["id"] == rule_id)


async def test_sighup_swaps_the_rules_without_losing_or_repeating_an_alert(
    tmp_path: Path, nats_server: NatsServer, nc: Client, js: JetStreamContext,
    spawn_consumer: Callable[..., subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    await ensure_stream(js)
    watch = AlertWatch()
    sub = await nc.subscribe(alerts_filter(host=HOST), cb=watch.on_msg)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "old.yml").write_text(OLD_RULE)
    proc = spawn_consumer("alert", "--rules", str(rules))  # throttle on: 60 s windows
    log = tmp_path / "alert-0.log"
    await log_line(log, "alert: consuming")
    assert "alert: 1 rules loaded, 0 skipped" in log.read_text()

    # The same command line before and after the reload: one window, one alert.
    repeat = exec_event(["/usr/bin/old-tool", "--run=same"])
    await publish(js, repeat)
    await watch.wait(1)

    # A stream of old-tool events; the new rule lands and SIGHUP comes mid-stream.
    old_events = [tool_event("old-tool", n) for n in range(300)]
    mark = log.stat().st_size
    for n, event in enumerate(old_events):
        await publish(js, event)
        if n == 100:
            (rules / "new.yml").write_text(NEW_RULE)
            proc.send_signal(signal.SIGHUP)
    line = await log_line(log, "alert: rules reloaded", mark)
    assert "2 rules (1 added, 0 removed), 0 skipped" in line, line
    new_events = [tool_event("new-tool", n) for n in range(50)]
    await publish(js, *new_events, exec_event(["/usr/bin/old-tool", "--run=same"]))
    try:
        await watch.wait(1 + len(old_events) + len(new_events), within=60)
    except TimeoutError:
        got = (ids_of(watch.alerts, OLD_ID).total(), ids_of(watch.alerts, NEW_ID).total())
        raise AssertionError(f"alerts (old rule, new rule): {got}") from None

    # A broken file, then one with an unmapped field: each refused, the old set kept.
    for name, text, reason in (("broken.yml", BROKEN, "cannot parse"),
                               ("unmapped.yml", UNMAPPED, "unmapped: field 'LogonId'")):
        (rules / name).write_text(text)
        mark = log.stat().st_size
        proc.send_signal(signal.SIGHUP)
        line = await log_line(log, "alert: reload refused", mark)
        assert "still matching the 2 rules loaded before" in line, line
        assert f"{rules / name}" in line and reason in line, line
        assert " ERROR " in line
        (rules / name).unlink()
    after = [tool_event("old-tool", 1000), tool_event("new-tool", 1000)]
    await publish(js, *after)
    await watch.wait(1 + len(old_events) + len(new_events) + 2)
    await watch.quiet(1.0)

    assert stop_process(proc, signal.SIGTERM) == 0, log.read_text()
    await asyncio.sleep(0.5)  # the shutdown summary, published before exit
    await sub.unsubscribe()
    alerts = watch.alerts
    old, new = ids_of(alerts, OLD_ID), ids_of(alerts, NEW_ID)
    assert all(n == 1 for n in (old + new).values()), (old + new).most_common(3)
    expected_old = {f"{OLD_ID}:{e['id']}" for e in [repeat, *old_events, after[0]]}
    folded = {i for i in old if i.endswith(":folded")}
    assert set(old) - folded == expected_old  # every old-tool event once, none lost
    assert {f"{NEW_ID}:{e['id']}" for e in [*new_events, after[1]]} == set(new)
    # The repeat after the reload was folded in the window opened before it.
    [summary] = [a for _, a in alerts if a.get("folded")]
    assert summary["count"] == 1
    assert summary["fields"]["CommandLine"] == "/usr/bin/old-tool --run=same"
    text = log.read_text()
    assert text.count("alert: rules reloaded") == 1 and text.count("reload refused") == 2


async def test_consumers_without_reload_take_sighup_and_go_on(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext,
    spawn_consumer: Callable[..., subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    """The unit template's ExecReload reaches every consumer: not one ends on it."""
    await ensure_stream(js)
    proc = spawn_consumer("rename")
    log = tmp_path / "rename-0.log"
    await log_line(log, "rename: consuming")
    proc.send_signal(signal.SIGHUP)
    await log_line(log, "rename: SIGHUP: nothing to reload")
    await asyncio.sleep(0.5)
    assert proc.poll() is None
    assert stop_process(proc, signal.SIGTERM) == 0
