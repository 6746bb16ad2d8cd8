"""Sigma correlation rules (correlate.py): event_count, value_count and temporal with
group-by and timespan, bounded state; and on the real kernel, "more than 20 files
renamed to *.locked by one process in 60 s" from real renames."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.alert import ruleset
from snoopbus.consumers.alert.alerts import build_correlation_alert
from snoopbus.consumers.alert.correlate import Correlator
from snoopbus.proto import alerts_filter, decode_map
from tests.conftest import RunningCollector, stop_process
from tests.test_alert_e2e import _wait_for_durable

S = 1_000_000_000
BASE = """
title: file renamed to .locked
name: locked_rename
id: 9c0f0000-0000-4000-8000-000000000001
logsource: {product: linux, category: file_event}
detection:
  sel: {TargetFilename|endswith: .locked}
  condition: sel
"""
RANSOM = BASE + """---
title: more than 20 files renamed to .locked by one process in 60 s
id: 9c0f0000-0000-4000-8000-000000000002
level: critical
correlation:
  type: event_count
  rules: [locked_rename]
  group-by: [ProcessId]
  timespan: 60s
  condition: {gt: 20}
"""
DISTINCT = BASE + """---
title: five distinct .locked names by one process in 10 s
id: 9c0f0000-0000-4000-8000-000000000003
correlation:
  type: value_count
  rules: [locked_rename]
  group-by: [ProcessId]
  timespan: 10s
  condition: {gte: 5, field: TargetFilename}
"""
TEMPORAL = BASE + """---
title: note dropped
name: note
id: 9c0f0000-0000-4000-8000-000000000004
logsource: {product: linux, category: file_event}
detection:
  sel: {TargetFilename|endswith: /HOW_TO_DECRYPT.txt}
  condition: sel
---
title: .locked files and a ransom note by one process within 30 s
id: 9c0f0000-0000-4000-8000-000000000005
correlation:
  type: temporal
  rules: [locked_rename, note]
  group-by: [ProcessId]
  timespan: 30s
  generate: true
"""


def load(tmp_path: Path, text: str) -> ruleset.RuleSet:
    (tmp_path / "r").mkdir(exist_ok=True)
    (tmp_path / "r" / "c.yml").write_text(text)
    return ruleset.build([tmp_path / "r"])


def rename(n: int, pid: int, ts: float, path: str | None = None) -> dict[str, Any]:
    return {"v": 1, "id": f"e{pid}-{n}", "ts": int(ts * S), "host": "h", "type": "moved_to",
            "proc": {"pid": pid, "exe": "/usr/bin/python3"},
            "file": {"path": path or f"/srv/f{n}.locked"}}  # fmt: skip


def run(rules: ruleset.RuleSet, events: list[dict[str, Any]], **kw: Any) -> list[Any]:
    correlator = Correlator(rules.report.correlations, **kw)
    return [f for e in events for h in rules.engine.match(e) for f in correlator.feed(h)]


def test_event_count_fires_once_past_the_threshold_per_group(tmp_path: Path) -> None:
    rules = load(tmp_path, RANSOM)
    assert [c.kind for c in rules.report.correlations] == ["event_count"]
    fired = run(rules, [rename(n, 7, 100 + n) for n in range(45)])
    assert [(f.count, f.group) for f in fired] == [(21, {"ProcessId": 7})] * 2  # 21, then 21 more
    assert fired[0].first_ts == 100 * S and fired[0].hit.event["id"] == "e7-20"
    alert = build_correlation_alert(fired[0])
    assert alert["id"] == "9c0f0000-0000-4000-8000-000000000002:e7-20"
    assert alert["level"] == "critical" and alert["correlation"]["count"] == 21
    assert alert["fields"] == {"ProcessId": 7}
    # 20 is not more than 20; 21 spread over more than 60 s; two processes, 15 each.
    assert not run(rules, [rename(n, 7, n) for n in range(20)])
    assert not run(rules, [rename(n, 7, n * 4) for n in range(21)])
    assert not run(rules, [rename(n, pid, n) for n in range(15) for pid in (7, 8)])


def test_base_rules_of_a_correlation_do_not_alert_on_their_own(tmp_path: Path) -> None:
    rules = load(tmp_path, RANSOM)
    correlator = Correlator(rules.report.correlations)
    assert correlator.silent == {"9c0f0000-0000-4000-8000-000000000001"}  # generate: false
    assert not Correlator(load(tmp_path, TEMPORAL).report.correlations).silent  # generate: true


def test_value_count_counts_distinct_values(tmp_path: Path) -> None:
    rules = load(tmp_path, DISTINCT)
    same = [rename(n, 7, n, "/srv/a.locked") for n in range(9)]
    assert not run(rules, same)  # one name nine times
    fired = run(rules, [rename(n, 7, n) for n in range(5)])
    assert [(f.count, f.group) for f in fired] == [(5, {"ProcessId": 7})]
    assert not run(rules, [rename(n, 7, n * 3) for n in range(5)])  # 12 s apart at the ends


def test_temporal_needs_every_base_rule_in_the_window(tmp_path: Path) -> None:
    rules = load(tmp_path, TEMPORAL)
    note = rename(99, 7, 120, "/home/u/HOW_TO_DECRYPT.txt")
    assert not run(rules, [rename(1, 7, 0), note])  # 120 s apart
    assert not run(rules, [rename(1, 7, 100), {**note, "proc": {"pid": 8}}])  # two processes
    fired = run(rules, [rename(1, 7, 100), note])
    assert [(f.count, f.group) for f in fired] == [(2, {"ProcessId": 7})]


def test_state_is_bounded(tmp_path: Path) -> None:
    rules = load(tmp_path, RANSOM)
    correlator = Correlator(rules.report.correlations, max_groups=100)
    for pid in range(1000):
        for h in rules.engine.match(rename(0, pid, pid)):
            correlator.feed(h)
    assert correlator.open_groups == 100 and correlator.evicted == 900
    [group] = [g for g in correlator.groups.values()]
    for g in group.values():
        assert len(g.times) <= 21


@pytest.mark.parametrize(("change", "reason"), [
    (("{gt: 20}", "{lt: 20}"), "condition lt"),
    (("type: event_count", "type: temporal_ordered"), "correlation type temporal_ordered"),
    (("[ProcessId]", "[LogonId]"), "unmapped: field 'LogonId'"),
    (("[locked_rename]", "[nosuch]"), "base rule 'nosuch' is not a rule of this file"),
])  # fmt: skip
def test_what_cannot_run_live_is_skipped_with_its_reason(
    tmp_path: Path, change: tuple[str, str], reason: str
) -> None:
    rules = load(tmp_path, RANSOM.replace(*change))
    assert not rules.report.correlations
    [skipped] = rules.report.skipped
    assert reason in skipped.reason and skipped.problem


# ---- the real kernel ----------------------------------------------------------

RENAMER = """
import os, sys
os.chdir(sys.argv[1])
for n in range(int(sys.argv[2])):
    open(f"f{n}", "w").close()
    os.rename(f"f{n}", f"f{n}.locked")
print(os.getpid(), flush=True)
"""


@pytest.fixture
async def correlating_alerter(
    nats_server: NatsServer, nc: Client, collector: RunningCollector, tmp_path: Path
) -> AsyncIterator[Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ransom.yml").write_text(RANSOM)
    log_path = tmp_path / "alerter.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snoopbus.consumers", "alert", "--nats", nats_server.url,
             "--rules", str(rules)], stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        await _wait_for_durable(nc, proc, log_path)
        yield log_path
    finally:
        assert stop_process(proc) == 0, log_path.read_text()


@pytest.mark.kernel
async def test_real_renames_to_locked_by_one_process_fire_once(
    nats_server: NatsServer, nc: Client, collector: RunningCollector,
    correlating_alerter: Path, tmp_path: Path,
) -> None:
    got: list[dict[str, Any]] = []

    async def on_msg(msg: Any) -> None:
        got.append(decode_map(msg.data))

    sub = await nc.subscribe(alerts_filter(host=collector.host), cb=on_msg)
    await nc.flush()  # the server has our subscription before any alert can come
    pids = []
    for count in (25, 12):  # one process over the threshold, one under
        work = tmp_path / f"work{count}"
        work.mkdir()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RENAMER, str(work), str(count),
            stdout=asyncio.subprocess.PIPE)  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        pids.append(int(out))
    try:
        async with asyncio.timeout(40):
            while not any(a.get("correlation") for a in got):
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # nothing more may come
    except TimeoutError:
        from snoopbus.proto import decode_batch, event_subject
        from tests.conftest import stored_messages

        msgs = await stored_messages(nats_server.url, event_subject(collector.host, "moved_to"))
        events = [e for m in msgs for e in decode_batch(m.data)]
        mine = [(e["proc"].get("pid"), e["file"]["path"]) for e in events
                if str(tmp_path) in e.get("file", {}).get("path", "")]
        stored = await stored_messages(nats_server.url, "snoopbus.alerts.>")
        raise AssertionError(f"no correlation alert; pids {pids}; {len(stored)} alerts stored; "
                             f"got {len(got)}; moved_to here: {mine[-3:]}") from None
    finally:
        await sub.unsubscribe()
    mine = [a for a in got if (a.get("correlation") or {}).get("group", {}).get("ProcessId")
            in pids]  # fmt: skip
    assert len(mine) == 1, [a["correlation"] for a in mine]
    [alert] = mine
    assert alert["rule"]["title"] == "more than 20 files renamed to .locked by one process in 60 s"
    assert alert["correlation"]["group"] == {"ProcessId": pids[0]}
    assert alert["correlation"]["count"] == 21
    assert alert["event"]["file"]["path"].startswith(str(tmp_path / "work25"))
    # The base rule is generate: false: no alert of its own for any rename.
    assert not [a for a in got if a["rule"]["title"] == "file renamed to .locked"]
